"""The recogniser's TFLite graphs behind one loader: encoders (one per length bucket) and the
decoder step, which implements decoder.StepModel for the beam search.

Every bucket's graphs are checked at load, but only one bucket is resident at a time: the
shortest (which holds any command of up to 3 s) while commands are short. A long utterance
lets it go and loads the longer bucket; settle(), which the daemon calls once a result is
published, swaps back, so the next short command does not wait for it (~5 ms here).
Each bucket's interpreters hold a few MB of arenas and packed weights, so the daemon never
carries two: its peak is the largest bucket, not their sum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle, BundleError, EncoderSpec, file_digest
from .heap import return_freed_heap
from .tflite import (
    UNVERIFYING_RUNTIME,
    crash_on_load,
    interpreter_class,
    load_interpreter,
    named_io,
)

log = logging.getLogger(__name__)


def subsampled_length(frames):
    """Encoder steps for a number of feature frames (the network's two 'same'-padded stride-2
    convolutions, tools/model.py); ints or tensors."""
    return (frames + 3) // 4


@dataclass
class Encoded:
    steps: int  # real (unpadded) encoder steps
    ctc_log_probs: np.ndarray  # [steps, vocab + 1], last column = blank
    cropped: bool


@dataclass
class _Bucket:
    """One input length: its encoder graph and the decoder step that attends over its output."""

    spec: EncoderSpec
    encoder: Any  # None while not resident (see the module's docstring)
    step: Any
    feats_in: int  # tensor indices, by signature name
    enc_out: dict[str, int]
    step_in: dict[str, int]
    step_out: dict[str, int]


class TfliteModel:
    """Runs one utterance: encode() once, then step() per token for a batch of hypotheses."""

    def __init__(self, bundle: Bundle, num_threads: int = 1):
        self.bundle = bundle
        # The grammar's beam plus one row for the free decode that confidence compares with.
        self.batch_size = bundle.beam + 1
        self.state_size = bundle.state_size
        self.vocab_size = len(bundle.units.tokens)
        self.num_threads = num_threads
        self._verified: dict[str, tuple[int, int, int]] = {}  # file -> stat when its digest held
        # Every graph is checked, one bucket resident at a time and the shortest last, so that
        # the start-up peak is the largest bucket, not all of them together.
        self.buckets = [self._open_checked(spec) for spec in bundle.encoders[1:]]
        self.buckets.insert(0, self._open(bundle.encoders[0]))
        self._active = self.buckets[0]
        self._start = np.zeros(self.state_size, np.float32)

    def _open(self, spec: EncoderSpec) -> _Bucket:
        encoder = self._load(spec.file, self.num_threads)
        step = self._load(spec.decoder_step, self.num_threads)
        if self._fit_open_axis(encoder, spec.file, ("feats",), spec.frames, "frames"):
            self._run_on_silence(encoder, spec.file)
        self._fit_open_axis(step, spec.decoder_step, ("enc", "keys", "mask"), spec.steps, "steps")
        return self._bucket(spec, encoder, step)

    def _fit_open_axis(
        self, graph: Any, file: str, names: tuple[str, ...], length: int, unit: str
    ) -> bool:
        """Sizes the inputs ``names`` of a graph exported with an open axis 1 to this bucket's
        ``length`` (one file serves every bucket: a step graph's encoder steps since format 3,
        an encoder's frames since format 4); whether it did. One of fixed size is left for
        _bucket to check."""
        inputs, _ = self._io(graph, file)
        if any(name not in inputs for name in names):
            return False  # _bucket names what is missing
        resized = False
        for name in names:
            shape = [int(x) for x in inputs[name].get("shape_signature", inputs[name]["shape"])]
            if len(shape) >= 2 and shape[1] == -1:
                shape[1] = length
                graph.resize_tensor_input(inputs[name]["index"], shape)
                resized = True
        if resized:
            try:
                graph.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise BundleError(f"{file}: cannot size it to {length} {unit}") from exc
        return resized

    def _run_on_silence(self, encoder: Any, file: str) -> None:
        """An open encoder's outputs (its GRU loop's) have their shapes only once it has run;
        _bucket then checks them."""
        details = self._io(encoder, file)[0]["feats"]
        encoder.set_tensor(details["index"], np.zeros(details["shape"], np.float32))
        try:
            encoder.invoke()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{file}: does not run at its bucket's length ({exc})") from exc

    def _open_checked(self, spec: EncoderSpec) -> _Bucket:
        """A bucket checked, then let go (loaded again when an utterance needs it)."""
        bucket = self._open(spec)
        self._release(bucket)
        return bucket

    @staticmethod
    def _release(bucket: _Bucket) -> None:
        bucket.encoder = bucket.step = None
        return_freed_heap()

    def resident(self) -> list[int]:
        """Input frames of the buckets whose graphs are loaded now."""
        return [b.spec.frames for b in self.buckets if b.encoder is not None]

    def _ready(self, index: int) -> _Bucket:
        """Bucket ``index`` with its graphs loaded; the bucket used before is let go first."""
        bucket = self.buckets[index]
        if self._active is not bucket:
            self._release(self._active)
        if bucket.encoder is None:
            # Checked again as at load: a file changed since then fails with a BundleError,
            # and the bucket's tensor indices are those of the file as it is now.
            bucket = self.buckets[index] = self._open(bucket.spec)
        return bucket

    def _load(self, file: str, num_threads: int) -> Any:
        path = self.bundle.path / file
        self._check_digest(file, path)
        try:
            return load_interpreter(path, num_threads)
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a usable TFLite model ({exc})") from exc

    def _check_digest(self, file: str, path: Path) -> None:
        """The graph is the one the bundle was built with (bundle.file_digest says why). A file
        checked before is hashed again only if it changed (a bucket is loaded again and again).
        A bundle built before graphs had digests (2026-12-07) is loaded in a child process
        first under a runtime that would crash on a damaged graph."""
        expected = self.bundle.digests.get(file)
        try:
            info = path.stat()
            seen = (info.st_ino, info.st_size, info.st_mtime_ns)
            if self._verified.get(file) == seen:
                return
            if expected is None:
                self._probe(path)
            elif file_digest(path) != expected:
                raise BundleError(
                    f"{path}: not a usable TFLite model (its SHA-256 is not the manifest's: "
                    "damaged, or changed since the bundle was built)"
                )
        except OSError as exc:
            raise BundleError(f"{path}: cannot read it ({exc.strerror})") from exc
        self._verified[file] = seen

    @staticmethod
    def _probe(path: Path) -> None:
        runtime = interpreter_class()[1]
        if runtime != UNVERIFYING_RUNTIME:
            return  # it raises on a damaged graph, which _load reports
        log.info("%s: no digest in the manifest; loading it in a child process first", path)
        crash = crash_on_load(path, runtime)
        if crash is not None:
            raise BundleError(
                f"{path}: not a usable TFLite model ({runtime} crashed reading it: {crash}; "
                "damaged, or not a TFLite graph)"
            )

    def _bucket(self, spec: EncoderSpec, encoder: Any, step: Any) -> _Bucket:
        """Checks both graphs' inputs and outputs, by signature name, against the manifest."""
        b, s, t = self.batch_size, self.state_size, spec.steps
        n_mels, enc_dim, vocab = self.bundle.features.n_mels, self.bundle.enc_dim, self.vocab_size
        enc_in, enc_out = self._io(encoder, spec.file)
        self._expect(spec.file, enc_in, {"feats": (1, spec.frames, n_mels)}, "input shape")
        self._expect(
            spec.file,
            enc_out,
            {"enc": (1, t, enc_dim), "keys": (1, t, s), "ctc": (1, t, vocab + 1)},
            "outputs",
        )
        step_in, step_out = self._io(step, spec.decoder_step)
        self._expect(
            spec.decoder_step,
            step_in,
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
            spec.decoder_step, step_out, {"log_probs": (b, vocab), "state": (b, s)}, "outputs"
        )
        return _Bucket(
            spec,
            encoder,
            step,
            enc_in["feats"]["index"],
            {k: v["index"] for k, v in enc_out.items()},
            {k: v["index"] for k, v in step_in.items()},
            {k: v["index"] for k, v in step_out.items()},
        )

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

    def settle(self) -> None:
        """Between utterances: the shortest bucket resident again, warmed up, and a longer
        one used last let go. Most commands are short, and the first invoke of freshly
        loaded graphs costs more than later ones: both are paid here, off the latency path."""
        shortest = self.buckets[0]
        if self._active is shortest and shortest.encoder is not None:
            return
        shortest = self._ready(0)
        self._active = shortest
        silence = np.zeros((1, shortest.spec.frames, self.bundle.features.n_mels), np.float32)
        shortest.encoder.set_tensor(shortest.feats_in, silence)
        shortest.encoder.invoke()  # the first invoke of a new interpreter sets up its delegate

    def bucket_index(self, frames: int) -> int:
        """The shortest encoder that holds the utterance (the longest crops it)."""
        for i, bucket in enumerate(self.buckets):
            if frames <= bucket.spec.frames:
                return i
        return len(self.buckets) - 1

    def encode(self, feats: np.ndarray) -> Encoded:
        """Runs the encoder and points the decoder step at its output for step()."""
        bucket = self._ready(self.bucket_index(len(feats)))
        spec = bucket.spec
        cropped = len(feats) > spec.frames
        feats = feats[: spec.frames]
        padded = np.zeros((1, spec.frames, feats.shape[1]), np.float32)
        padded[0, : len(feats)] = feats
        bucket.encoder.set_tensor(bucket.feats_in, padded)
        bucket.encoder.invoke()
        outputs = {name: bucket.encoder.get_tensor(i) for name, i in bucket.enc_out.items()}
        steps = min(subsampled_length(len(feats)), spec.steps)
        mask = np.zeros((1, spec.steps), np.float32)
        mask[0, :steps] = 1.0
        bucket.step.set_tensor(bucket.step_in["enc"], outputs["enc"])
        bucket.step.set_tensor(bucket.step_in["keys"], outputs["keys"])
        bucket.step.set_tensor(bucket.step_in["mask"], mask)
        self._active = bucket
        return Encoded(steps=steps, ctc_log_probs=outputs["ctc"][0, :steps], cropped=cropped)

    # -- decoder.StepModel ---------------------------------------------------------------
    def start(self) -> np.ndarray:
        return self._start

    def step(self, tokens: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bucket = self._active
        bucket.step.set_tensor(bucket.step_in["tokens"], tokens.astype(np.int32, copy=False))
        bucket.step.set_tensor(bucket.step_in["state"], states.astype(np.float32, copy=False))
        bucket.step.invoke()
        return bucket.step.get_tensor(bucket.step_out["log_probs"]), bucket.step.get_tensor(
            bucket.step_out["state"]
        )
