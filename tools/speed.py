"""Time the recogniser on 3-second commands: features + encoder + constrained decode +
interpretation of the N-best list (meanings, confidence features).

    python -m tools.speed --model models/home [--clips .cache/build-home/heldout] [--repeat 3]

Each held-out command is placed in a 3 s window (silence around it), recognised ``repeat``
times on one thread, and the per-stage milliseconds are summarised (median, p95). Every
recognition starts with the grammar's cache of interpreted texts emptied, so each one costs
what a command heard for the first time costs. Between recognitions, untimed, the model
settles as the daemon lets it once a result is published (a command cut at the window's
edge gets a lead-in, goes over 3 s and uses the 8 s graphs; the next one finds the 3 s
graphs loaded again). The runtime that ran is reported, since x86 timings differ between
TFLite runtimes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from assistant.features import SAMPLE_RATE
from assistant.recognizer import Recognizer
from assistant.tflite import interpreter_class
from tools.corpus import load_audio
from tools.heldout import read_labels

ROOT = Path(__file__).resolve().parent.parent


def three_seconds(audio: np.ndarray) -> np.ndarray:
    window = np.zeros(3 * SAMPLE_RATE, np.float32)
    clip = audio[: window.size]
    start = (window.size - clip.size) // 2
    window[start : start + clip.size] = clip
    return window


def measure(model: Path, clips: Path, repeat: int) -> dict:
    recognizer = Recognizer.load(model, num_threads=1)
    audio = [three_seconds(load_audio(path)) for path, _ in read_labels(clips)]
    recognizer.recognize(audio[0])  # warm-up: graph caches, first allocations
    stages: dict[str, list[float]] = {}
    for _ in range(repeat):
        for clip in audio:
            recognizer.grammar.forget_texts()
            for stage, ms in recognizer.recognize(clip).timings.items():
                stages.setdefault(stage, []).append(ms)
            recognizer.settle()  # between utterances, untimed, as the daemon does
    return {
        "runtime": interpreter_class()[1],
        "utterances": len(audio) * repeat,
        **{
            stage: {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}
            for stage, v in stages.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "home")
    parser.add_argument("--clips", type=Path, default=ROOT / ".cache" / "build-home" / "heldout")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, args.clips, args.repeat), indent=2))


if __name__ == "__main__":
    main()
