"""The recogniser's TFLite graphs behind one loader: encoders (one per length bucket) and the
decoder step, which implements decoder.StepModel for the beam search."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bundle import Bundle, BundleError
from .tflite import load_interpreter, named_io

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    steps: int  # real (unpadded) encoder steps
    ctc_log_probs: np.ndarray  # [steps, vocab + 1], last column = blank
    cropped: bool


class TfliteModel:
    """Runs one utterance: encode() once, then step() per token for a batch of hypotheses."""

    def __init__(self, bundle: Bundle, num_threads: int = 1):
        self.bundle = bundle
        self.batch_size = bundle.beam
        self.state_size = bundle.state_size
        self.vocab_size = len(bundle.tokens)
        self.encoders = [(spec, self._load(spec.file, num_threads)) for spec in bundle.encoders]
        self.step_interpreter = self._load(bundle.decoder_step, num_threads)
        self._check_shapes()
        self._start = np.zeros(self.state_size, np.float32)

    def _load(self, file: str, num_threads: int) -> Any:
        path = self.bundle.path / file
        try:
            return load_interpreter(path, num_threads)
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a usable TFLite model ({exc})") from exc

    def _check_shapes(self) -> None:
        """Every graph's inputs and outputs, by signature name, against the manifest."""
        b, s, t = self.batch_size, self.state_size, self.bundle.encoder_steps
        n_mels, enc_dim, vocab = self.bundle.features.n_mels, self.bundle.enc_dim, self.vocab_size
        self._enc_io = []
        for spec, interpreter in self.encoders:
            inputs, outputs = self._io(interpreter, spec.file)
            self._expect(spec.file, inputs, {"feats": (1, spec.frames, n_mels)}, "input shape")
            self._expect(
                spec.file,
                outputs,
                {"enc": (1, t, enc_dim), "keys": (1, t, s), "ctc": (1, spec.steps, vocab + 1)},
                "outputs",
            )
            self._enc_io.append(
                (inputs["feats"]["index"], {k: v["index"] for k, v in outputs.items()})
            )
        inputs, outputs = self._io(self.step_interpreter, self.bundle.decoder_step)
        self._expect(
            self.bundle.decoder_step,
            inputs,
            {
                "tokens": (b,),
                "state": (b, s),
                "enc": (1, t, enc_dim),
                "keys": (1, t, s),
                "mask": (1, t),
            },
            "inputs",
        )
        self._expect(
            self.bundle.decoder_step, outputs, {"log_probs": (b, vocab), "state": (b, s)}, "outputs"
        )
        self._step_in = {k: v["index"] for k, v in inputs.items()}
        self._step_out = {k: v["index"] for k, v in outputs.items()}

    @staticmethod
    def _io(interpreter: Any, file: str) -> tuple[dict[str, dict], dict[str, dict]]:
        try:
            return named_io(interpreter)
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{file}: graph has no usable signature ({exc})") from exc

    @staticmethod
    def _expect(file: str, found: dict[str, dict], wanted: dict[str, tuple], what: str) -> None:
        shapes = {name: tuple(int(x) for x in d["shape"]) for name, d in found.items()}
        if shapes != wanted:
            raise BundleError(
                f"{file}: {what} {sorted(shapes.items())} do not match the manifest "
                f"({sorted(wanted.items())})"
            )

    def bucket_index(self, frames: int) -> int:
        """The shortest encoder that holds the utterance (the longest crops it)."""
        for i, (spec, _) in enumerate(self.encoders):
            if frames <= spec.frames:
                return i
        return len(self.encoders) - 1

    def encode(self, feats: np.ndarray) -> Encoded:
        index = self.bucket_index(len(feats))
        spec, interpreter = self.encoders[index]
        feats_index, out_index = self._enc_io[index]
        cropped = len(feats) > spec.frames
        feats = feats[: spec.frames]
        padded = np.zeros((1, spec.frames, feats.shape[1]), np.float32)
        padded[0, : len(feats)] = feats
        interpreter.set_tensor(feats_index, padded)
        interpreter.invoke()
        outputs = {name: interpreter.get_tensor(i) for name, i in out_index.items()}
        steps = min((len(feats) + 3) // 4, spec.steps)
        mask = np.zeros((1, self.bundle.encoder_steps), np.float32)
        mask[0, :steps] = 1.0
        step = self.step_interpreter
        step.set_tensor(self._step_in["enc"], outputs["enc"])
        step.set_tensor(self._step_in["keys"], outputs["keys"])
        step.set_tensor(self._step_in["mask"], mask)
        return Encoded(steps=steps, ctc_log_probs=outputs["ctc"][0, :steps], cropped=cropped)

    # -- decoder.StepModel ---------------------------------------------------------------
    def start(self) -> np.ndarray:
        return self._start

    def step(self, tokens: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step = self.step_interpreter
        step.set_tensor(self._step_in["tokens"], tokens.astype(np.int32, copy=False))
        step.set_tensor(self._step_in["state"], states.astype(np.float32, copy=False))
        step.invoke()
        return step.get_tensor(self._step_out["log_probs"]), step.get_tensor(
            self._step_out["state"]
        )
