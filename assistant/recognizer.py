"""pcm -> Result: features, encoder, grammar-constrained beam search, CTC re-ranking,
calibrated confidence.

The attention decoder proposes an N-best list inside the grammar; the encoder's CTC head
scores each proposal too, and the two are combined (joint attention/CTC decoding, applied
to the N-best). Rejection compares the chosen grammar path with what the audio supports
without any grammar: the best free attention decode and the best CTC path. Speech the grammar
cannot explain (or noise) forces the grammar path far below those. A logistic calibrator
fitted by tools/ on held-out speakers turns these numbers into the probability that the
intent is right; below the bundle's threshold the intent is None. Answers near the bar are
heard again at other speeds first (recheck.py), where the bundle's calibration says so.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle, BundleError, load_bundle
from .ctc import CtcPrefixScorer, best_path_log_prob, best_path_tokens, ctc_log_likelihoods
from .decoder import (
    Hypothesis,
    confidence_features,
    constrained_and_free_search,
    constrained_search,
    forget_search_states,
    free_search,
)
from .edges import with_quiet_edges, without_long_room
from .edits import edit_distance
from .features import SAMPLE_RATE, log_mel_from_power, power_spectrum, to_float_pcm
from .grammar import Grammar, GrammarError, load_grammar
from .heap import return_freed_heap
from .lexicon import add_pronunciations, spellings_by_pronunciation
from .model import Encoded, TfliteModel
from .recheck import Recheck, change_speed
from .result import Meaning, Result
from .tonality import is_steady_tone

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "home"
MIN_SAMPLES = SAMPLE_RATE // 10  # 0.1 s: shorter than any word
CTC_WEIGHT = 0.5  # share of the CTC score in the N-best ranking
# The grammar search's cache of determinised states is let go between utterances past this
# many (~0.9 MB): it grows with every new command heard, ~0.27 kB a state, and one utterance
# with its second listen adds up to ~1000, so it stays under the next doubling of its table
# (4096 rows). Rebuilding costs the next few commands ~0.5 ms each
# (decoder.forget_search_states).
MAX_SEARCH_STATES = 3072
FEATURES = (
    "constrained_per_token",
    "free_per_token",
    "difference",
    "margin",
    "length",
    "ctc_gap",
    "meaning_margin",
    "ctc_disagreement",
    "ctc_length_ratio",
)
# Used until a bundle carries a fitted calibrator: rejects when the grammar path is much
# less likely than the unconstrained decodes.
DEFAULT_CALIBRATION: dict[str, Any] = {
    "features": list(FEATURES),
    "weights": [0.0, 0.0, -3.0, 0.3, 0.0, -2.0, 0.0, 0.0, 0.0],
    "bias": 3.0,
    "threshold": 0.5,
}


def _ctc_agreement(best: Hypothesis, heard_by_ctc: list[int]) -> dict[str, float]:
    """How far the grammar's answer lies from what the CTC head hears with no grammar: phone
    edits per answer token, and the answer's length against the CTC transcript's. A sentence
    outside the grammar, forced onto a short command, leaves many CTC phones unexplained;
    a right answer spells nearly what CTC heard. They tell non-commands from commands, not
    wrong commands from right ones (tools/NOTES.md, "CTC agreement", has the measurements)."""
    answer = best.labels
    return {
        "ctc_disagreement": edit_distance(heard_by_ctc, answer) / max(1, len(answer)),
        "ctc_length_ratio": len(answer) / max(1, len(heard_by_ctc)),
    }


@dataclass(frozen=True)
class FreeTranscript:
    text: str  # dictionary words; a word whose phones spell none is shown as [phones]
    phones: str  # the decoded phones, words separated by " | "


@lru_cache(maxsize=1)
def _spellings() -> dict[tuple[str, ...], list[str]]:
    return spellings_by_pronunciation()


def _max_steps(encoded: Encoded) -> int:
    """Decoder steps a search may take: about one token per 40 ms encoder step at most."""
    return encoded.steps + 8


@dataclass(frozen=True)
class Decoded:
    """The best grammar reading of an utterance before the accept/reject decision."""

    text: str
    intent: str | None
    slots: dict[str, Any]
    features: dict[str, float]
    timings: dict[str, float]
    cropped: bool = False  # longer than the model's longest input: only its start was heard


class Recognizer:
    def __init__(
        self, bundle: Bundle, model: TfliteModel, grammar: Grammar, beam: int | None = None
    ):
        self.bundle = bundle
        self.model = model
        self.grammar = grammar
        self.beam = min(beam or bundle.beam, bundle.beam)
        calibration = {**DEFAULT_CALIBRATION, **bundle.calibration}
        names = list(calibration["features"])
        unknown = set(names) - set(FEATURES)
        if unknown or len(names) != len(calibration["weights"]):
            raise BundleError(f"{bundle.path}: calibration features {sorted(unknown)} unknown")
        self.feature_names = names
        self.weights = np.array(calibration["weights"], np.float64)
        self.bias = float(calibration["bias"])
        self.threshold = float(calibration["threshold"])
        try:
            recheck = calibration.get("recheck")
            self.recheck = Recheck.from_dict(recheck) if recheck is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle.path}: calibration recheck unusable ({exc})") from exc
        self.ctc_weight = float(bundle.raw.get("decode", {}).get("ctc_weight", CTC_WEIGHT))
        # Audio cut mid-speech gets the lead-in and tail the model expects (edges.py);
        # tools turn it off to measure what it is worth.
        self.quiet_edges = True
        # More room around the words than the model learned with is cut back (edges.py).
        self.room_trimmed = True

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
        if bundle.lexicon is not None:
            try:
                add_pronunciations(json.loads(bundle.lexicon.read_text()))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise BundleError(f"{bundle.lexicon}: not a usable lexicon ({exc})") from exc
        grammar_path = Path(grammar) if grammar else bundle.grammar
        try:
            loaded = load_grammar(grammar_path, units=bundle.units)
        except GrammarError as exc:
            raise BundleError(f"grammar {grammar_path}: {exc}") from exc
        return cls(bundle, model, loaded, beam)

    @property
    def name(self) -> str:
        return self.bundle.label

    def confidence(self, features: dict[str, float]) -> float:
        x = np.array([features[name] for name in self.feature_names])
        z = float(self.weights @ x) + self.bias
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))))

    def recognize(self, pcm: np.ndarray) -> Result:
        """Mono 16 kHz audio (int16 or float) -> Result. Too-short or silent audio is rejected
        (intent None), never an exception."""
        t0 = time.perf_counter()
        decoded = self.decode(pcm)
        # "recheck": a second listen's decodes (recheck.py), 0 when none was needed
        timings = {**decoded.timings, "recheck": 0.0, "total": (time.perf_counter() - t0) * 1000}
        if decoded.intent is None or decoded.cropped:
            # A cropped recording holds more than one command's worth of audio: guessing an
            # intent from its first seconds would be a false accept.
            return Result(text=decoded.text, intent=None, confidence=0.0, timings=timings)
        confidence = self.confidence(decoded.features)
        if self.recheck is not None and self.recheck.needed(confidence):
            t_recheck = time.perf_counter()
            agreed = self.rehearings_agree(pcm, decoded, self.recheck.factors)
            confidence = self.recheck.confidence(agreed)
            timings["recheck"] = (time.perf_counter() - t_recheck) * 1000
            timings["total"] += timings["recheck"]
        if confidence < self.threshold:
            guess = Meaning(decoded.intent, decoded.slots)
            return Result(decoded.text, None, confidence=confidence, timings=timings, guess=guess)
        return Result(
            text=decoded.text,
            intent=decoded.intent,
            slots=decoded.slots,
            confidence=confidence,
            timings=timings,
        )

    def rehearings_agree(
        self, pcm: np.ndarray, decoded: Decoded, factors: tuple[float, ...]
    ) -> bool:
        """Whether the audio played at each speed factor is heard with the same intent and
        slots as ``decoded`` (recheck.py: a guess tends to change)."""
        audio = to_float_pcm(np.asarray(pcm)).reshape(-1)
        if self.room_trimmed:  # before a slowed command's middle is kept, below
            audio = without_long_room(audio, SAMPLE_RATE)
        # Slowed down, a command that fitted the shortest length bucket (3 s) may not: its
        # middle is kept, so that it is heard by the same graphs (their padding moves the
        # encoder's states, model.py) and needs no reload of the longer ones.
        params = self.bundle.features  # the most samples that the shortest bucket's frames hold
        shortest = params.win_length + (self.bundle.encoders[0].frames - 1) * params.hop_length
        for factor in factors:
            changed = change_speed(audio, factor)
            if audio.size <= shortest < changed.size:
                start = (changed.size - shortest) // 2
                changed = changed[start : start + shortest]
            if self.heard_meaning(changed) != (decoded.intent, decoded.slots):
                return False
        return True

    def heard_meaning(self, pcm: np.ndarray) -> tuple[str | None, dict[str, Any]] | None:
        """The intent and slots of the best grammar reading, as decode() would give them, and
        nothing else: what a rehearing compares. Its free decode, confidence features and CTC
        agreement are skipped (15.5 against 21.1 ms a rehearing on a slow CPU, 2026-12-06);
        the grammar search's rows of the step batch do not depend on the free decode's, so
        the reading is the same. None for audio too long to be one command."""
        feats = self._speech_features(pcm)
        if feats is None:
            return None, {}
        encoded = self._encode(feats)
        if encoded.cropped:
            return None
        hyps = constrained_search(
            self.model,
            self.grammar,
            beam=self.beam,
            max_steps=_max_steps(encoded),
            ctc=self._ctc_scorer(encoded),
            ctc_weight=self.ctc_weight,
        )
        found = self._first_meaning(hyps)
        return (found[1][1], found[1][2]) if found is not None else (None, {})

    def _first_meaning(self, hyps: list[Hypothesis]) -> tuple[int, tuple[str, str, dict]] | None:
        """The first hypothesis (best first) the grammar reads, and its (text, intent, slots)."""
        for i, hyp in enumerate(hyps):
            meaning = hyp.interpret(self.grammar)
            if meaning is not None:
                return i, meaning
        return None

    def settle(self) -> None:
        """Between utterances (the daemon, once a result is out): readies the model for the
        next command, most likely a short one (TfliteModel.settle). A BundleError here is
        the next short command's error too. The grammar search's cache of states is let
        go here too once it is large (MAX_SEARCH_STATES)."""
        self.model.settle()
        if forget_search_states(self.grammar.graph, MAX_SEARCH_STATES):
            return_freed_heap()

    def decode(self, pcm: np.ndarray) -> Decoded:
        """Best grammar reading and its confidence features (what tools/ calibrates on)."""
        t0 = time.perf_counter()
        feats = self._speech_features(pcm)
        if feats is None:
            return Decoded("", None, {}, {}, {"features": (time.perf_counter() - t0) * 1000})
        t_feat = time.perf_counter()
        encoded = self._encode(feats)
        t_enc = time.perf_counter()
        hyps, free = constrained_and_free_search(
            self.model,
            self.grammar,
            beam=self.beam,
            max_steps=_max_steps(encoded),
            ctc=self._ctc_scorer(encoded),
            ctc_weight=self.ctc_weight,
        )
        # The joint search already ranks by (1 - w) * attention + w * CTC, per token.
        ranked = hyps
        t_dec = time.perf_counter()
        # "interpret": the N-best list's meanings (word readings, hassil) and the confidence
        # features, the part that grows with the number of hypotheses the search finished.
        timings = {
            "features": (t_feat - t0) * 1000,
            "encoder": (t_enc - t_feat) * 1000,
            "decoder": (t_dec - t_enc) * 1000,
        }
        text, intent, slots, features = "", None, {}, {}
        found = self._first_meaning(ranked)
        if found is not None:
            i, (text, intent, slots) = found
            best = ranked[i]
            base = confidence_features(best, free, ranked[i + 1 :], self.grammar)
            ctc_best = best_path_log_prob(encoded.ctc_log_probs)
            features = {
                "constrained_per_token": base.constrained_per_token,
                "free_per_token": base.free_per_token,
                "difference": base.difference,
                "margin": base.margin,
                "length": float(base.length),
                "ctc_gap": (ctc_best - self._ctc_score(best, encoded.ctc_log_probs))
                / max(encoded.steps, 1),
                "meaning_margin": base.meaning_margin,
                **_ctc_agreement(best, best_path_tokens(encoded.ctc_log_probs)),
            }
        timings["interpret"] = (time.perf_counter() - t_dec) * 1000
        return Decoded(text, intent, slots, features, timings, encoded.cropped)

    def transcribe_free(self, pcm: np.ndarray) -> FreeTranscript:
        """What was said, with no grammar: the best phone sequence of well-formed words, each
        spelled as a dictionary word where its phones are one's pronunciation. Loads the CMU
        dictionary (~50 MB) on first use, so the daemon never calls this."""
        feats = self._speech_features(pcm)
        if feats is None:
            return FreeTranscript("", "")
        encoded = self._encode(feats)
        free = free_search(
            self.model,
            beam=self.model.batch_size,
            max_steps=_max_steps(encoded),
            phone_loop=True,
            ctc=self._ctc_scorer(encoded),
            ctc_weight=self.ctc_weight,
            units=self.bundle.units,
        )
        spellings = _spellings()
        words, phones = [], []
        for word in self.bundle.units.words(free.tokens):
            spelled = spellings.get(tuple(word))
            words.append(spelled[0] if spelled else f"[{' '.join(word)}]")
            phones.append(" ".join(word))
        return FreeTranscript(" ".join(words), " | ".join(phones))

    def _speech_features(self, pcm: np.ndarray) -> np.ndarray | None:
        """Log-mel features, or None for audio that holds no speech to decode: too short,
        digital silence, or a steady tone (a beep the model would read as a vowel)."""
        audio = to_float_pcm(np.asarray(pcm)).reshape(-1)
        if audio.size < MIN_SAMPLES or not np.any(audio):
            return None
        spectrum = power_spectrum(audio, self.bundle.features)
        if is_steady_tone(spectrum, self.bundle.features):
            log.debug("steady tone, not speech: rejected")
            return None
        # After the tone check: a lead-in of noise would hide the tone.
        fitted = without_long_room(audio, SAMPLE_RATE) if self.room_trimmed else audio
        if self.quiet_edges:
            longest = self.bundle.encoders[-1].frames * self.bundle.features.hop_length
            fitted = with_quiet_edges(fitted, SAMPLE_RATE, max_samples=longest)
        if fitted is not audio:
            # the first spectrum goes first: over a long command, both at once were ~1 MB of
            # a second listen's peak memory
            del spectrum
            spectrum = power_spectrum(fitted, self.bundle.features)
        return log_mel_from_power(spectrum, self.bundle.features)

    def _encode(self, feats: np.ndarray) -> Encoded:
        encoded = self.model.encode(feats)
        if encoded.cropped:
            log.warning(
                "%.1f s of audio is longer than one command (the model hears %.1f s): rejected;"
                " `assistant run --source FILE` splits a recording into utterances",
                len(feats) / 100,
                self.bundle.encoders[-1].frames / 100,
            )
        return encoded

    def _ctc_scorer(self, encoded: Encoded) -> CtcPrefixScorer | None:
        return CtcPrefixScorer(encoded.ctc_log_probs) if self.ctc_weight > 0 else None

    def _ctc_score(self, hyp: Hypothesis, ctc_log_probs: np.ndarray) -> float:
        """CTC log-likelihood of a hypothesis: the joint search computed it already, or
        here when it searched without CTC."""
        if hyp.ctc_log_prob is None:
            hyp.ctc_log_prob = float(ctc_log_likelihoods(ctc_log_probs, [hyp.labels])[0])
        return hyp.ctc_log_prob
