"""The recogniser's TFLite graphs behind one loader: encoders (one per length bucket) and the
decoder step, which implements decoder.StepModel for the beam search."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bundle import Bundle, BundleError, EncoderSpec
from .tflite import load_interpreter

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    steps: int  # real (unpadded) encoder steps
    ctc_log_probs: np.ndarray  # [steps, vocab + 1], last column = blank
    cropped: bool


def _by_name(details: list[dict], interpreter_file: str) -> dict[str, dict]:
    named = {}
    for d in details:
        # Names look like "serving_default_feats:0" or "StatefulPartitionedCall:1"
        # depending on the converter; keep both the raw and the short form.
        named[d["name"]] = d
        short = d["name"].split(":")[0].removeprefix("serving_default_")
        named[short] = d
    return named


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
        for spec, interpreter in self.encoders:
            inputs = interpreter.get_input_details()
            shape = tuple(inputs[0]["shape"])
            want = (1, spec.frames, self.bundle.features.n_mels)
            if len(inputs) != 1 or shape != want:
                raise BundleError(f"{spec.file}: input shape {shape}, manifest says {want}")
            outputs = {tuple(o["shape"]) for o in interpreter.get_output_details()}
            if (1, self.bundle.encoder_steps, self.bundle.enc_dim) not in outputs:
                raise BundleError(f"{spec.file}: outputs {sorted(outputs)} do not match manifest")
        self._step_in = self._classify_step_inputs()
        outs = self.step_interpreter.get_output_details()
        self._step_out = {}
        for o in outs:
            if tuple(o["shape"]) == (self.batch_size, self.vocab_size):
                self._step_out["log_probs"] = o["index"]
            elif tuple(o["shape"]) == (self.batch_size, self.state_size):
                self._step_out["state"] = o["index"]
        if len(self._step_out) != 2:
            raise BundleError(f"{self.bundle.decoder_step}: outputs do not match the manifest")

    def _classify_step_inputs(self) -> dict[str, int]:
        b, s, t = self.batch_size, self.state_size, self.bundle.encoder_steps
        wanted = {
            "tokens": (b,),
            "state": (b, s),
            "enc": (1, t, self.bundle.enc_dim),
            "keys": (1, t, s),
            "mask": (1, t),
        }
        found = {}
        for d in self.step_interpreter.get_input_details():
            for name, shape in wanted.items():
                if name not in found and tuple(d["shape"]) == shape and name in d["name"]:
                    found[name] = d["index"]
        if len(found) != len(wanted):
            raise BundleError(f"{self.bundle.decoder_step}: inputs do not match the manifest")
        return found

    def bucket_for(self, frames: int) -> tuple[EncoderSpec, Any]:
        for spec, interpreter in self.encoders:
            if frames <= spec.frames:
                return spec, interpreter
        return self.encoders[-1]

    def encode(self, feats: np.ndarray) -> Encoded:
        spec, interpreter = self.bucket_for(len(feats))
        cropped = len(feats) > spec.frames
        feats = feats[: spec.frames]
        padded = np.zeros((1, spec.frames, feats.shape[1]), np.float32)
        padded[0, : len(feats)] = feats
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], padded)
        interpreter.invoke()
        outputs = {}
        for o in interpreter.get_output_details():
            shape = tuple(o["shape"])
            if shape == (1, self.bundle.encoder_steps, self.bundle.enc_dim):
                outputs["enc"] = interpreter.get_tensor(o["index"])
            elif shape == (1, self.bundle.encoder_steps, self.state_size):
                outputs["keys"] = interpreter.get_tensor(o["index"])
            else:
                outputs["ctc"] = interpreter.get_tensor(o["index"])
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
