"""pcm -> Result: features, encoder, grammar-constrained beam search, calibrated confidence.

Rejection compares the best grammar path with the best unconstrained decode of the same audio:
speech the grammar cannot explain (or noise) forces the constrained path far below the free
one. A logistic calibrator fitted by tools/ on held-out speakers turns those numbers into a
probability that the intent is right; below the bundle's threshold the intent is None.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .bundle import Bundle, BundleError, load_bundle
from .decoder import ConfidenceFeatures, confidence_features, constrained_search, free_search
from .features import SAMPLE_RATE, log_mel, to_float_pcm
from .grammar import Grammar, GrammarError, load_grammar
from .model import TfliteModel
from .result import Result

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "home"
MIN_SAMPLES = SAMPLE_RATE // 10  # 0.1 s: shorter than any word
# Used until a bundle carries a fitted calibrator: rejects when the grammar path is more than
# about 0.5 nats per token below the free decode.
DEFAULT_CALIBRATION = {
    "features": ["constrained_per_token", "free_per_token", "difference", "margin", "length"],
    "weights": [0.0, 0.0, -6.0, 0.3, 0.0],
    "bias": 3.0,
    "threshold": 0.5,
}


class Recognizer:
    def __init__(
        self, bundle: Bundle, model: TfliteModel, grammar: Grammar, beam: int | None = None
    ):
        self.bundle = bundle
        self.model = model
        self.grammar = grammar
        self.beam = min(beam or bundle.beam, bundle.beam)
        calibration = {**DEFAULT_CALIBRATION, **bundle.calibration}
        self.weights = np.array(calibration["weights"], np.float32)
        self.bias = float(calibration["bias"])
        self.threshold = float(calibration["threshold"])

    @classmethod
    def load(
        cls,
        model_dir: Path = DEFAULT_MODEL_DIR,
        grammar: Path | None = None,
        beam: int | None = None,
        num_threads: int = 1,
    ) -> Recognizer:
        """Load a bundle (and optionally another grammar than the bundle's own).
        Raises BundleError with a readable reason for any broken bundle or grammar."""
        bundle = load_bundle(Path(model_dir))
        model = TfliteModel(bundle, num_threads=num_threads)
        grammar_path = Path(grammar) if grammar else bundle.grammar
        try:
            loaded = load_grammar(grammar_path)
        except GrammarError as exc:
            raise BundleError(f"grammar {grammar_path}: {exc}") from exc
        return cls(bundle, model, loaded, beam)

    @property
    def name(self) -> str:
        return self.bundle.label

    def confidence(self, features: ConfidenceFeatures) -> float:
        z = float(self.weights @ features.as_array()) + self.bias
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))))

    def recognize(self, pcm: np.ndarray) -> Result:
        """Mono 16 kHz audio (int16 or float) -> Result. Too-short or silent audio is rejected
        (intent None), never an exception."""
        t0 = time.perf_counter()
        audio = to_float_pcm(np.asarray(pcm)).reshape(-1)
        if audio.size < MIN_SAMPLES or not np.any(audio):
            return Result(text="", intent=None, timings={"total": _ms(t0)})
        feats = log_mel(audio, self.bundle.features)
        t_feat = time.perf_counter()
        encoded = self.model.encode(feats)
        if encoded.cropped:
            log.warning(
                "utterance of %.1f s cropped to the model's longest input (%.1f s)",
                audio.size / SAMPLE_RATE,
                self.bundle.encoders[-1].frames / 100,
            )
        t_enc = time.perf_counter()
        max_steps = encoded.steps + 8  # attention emits at most ~1 token per 40 ms step
        hyps = constrained_search(self.model, self.grammar, beam=self.beam, max_steps=max_steps)
        free = free_search(self.model, beam=1, max_steps=max_steps)
        t_dec = time.perf_counter()
        timings = {
            "features": (t_feat - t0) * 1000,
            "encoder": (t_enc - t_feat) * 1000,
            "decoder": (t_dec - t_enc) * 1000,
        }
        for i, best in enumerate(hyps):
            meaning = best.interpret(self.grammar)
            if meaning is None:
                continue
            text, intent, slots = meaning
            features = confidence_features(best, free, hyps[i + 1 :], self.grammar)
            confidence = self.confidence(features)
            timings["total"] = _ms(t0)
            if confidence < self.threshold:
                return Result(
                    text=text, intent=None, slots={}, confidence=confidence, timings=timings
                )
            return Result(
                text=text, intent=intent, slots=slots, confidence=confidence, timings=timings
            )
        timings["total"] = _ms(t0)
        return Result(text="", intent=None, confidence=0.0, timings=timings)

    def features_of(
        self, pcm: np.ndarray
    ) -> tuple[str | None, str, dict, ConfidenceFeatures | None]:
        """(intent, text, slots, confidence features) of the best grammar path without the
        rejection step: what tools/ fits the calibrator on."""
        audio = to_float_pcm(np.asarray(pcm)).reshape(-1)
        if audio.size < MIN_SAMPLES or not np.any(audio):
            return None, "", {}, None
        encoded = self.model.encode(log_mel(audio, self.bundle.features))
        max_steps = encoded.steps + 8
        hyps = constrained_search(self.model, self.grammar, beam=self.beam, max_steps=max_steps)
        free = free_search(self.model, beam=1, max_steps=max_steps)
        for i, best in enumerate(hyps):
            meaning = best.interpret(self.grammar)
            if meaning is not None:
                text, intent, slots = meaning
                return (
                    intent,
                    text,
                    slots,
                    confidence_features(best, free, hyps[i + 1 :], self.grammar),
                )
        return None, "", {}, None


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
