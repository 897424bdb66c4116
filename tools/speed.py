"""Time the recogniser on 3-second commands: features + encoder + constrained decode +
interpretation of the N-best list (meanings, confidence features).

    python -m tools.speed --model models/home [OTHER_BUNDLE...] [--clips DIR] [--repeat 3]

Each held-out command is placed in a 3 s window (silence around it), recognised ``repeat``
times on one thread, and the per-stage milliseconds are summarised (median, p95), with
features + encoder + decoder (``features_encoder_decoder``: what the speed aim counts) and
the first hearing before any second listen (``first_hearing``) summed per recognition. Every
recognition starts with the grammar's cache of interpreted texts emptied, so each one costs
what a command heard for the first time costs. Between recognitions, untimed, the model
settles as the daemon lets it once a result is published (a command cut at the window's
edge gets a lead-in, goes over 3 s and uses the 8 s graphs; the next one finds the 3 s
graphs loaded again). The runtime that ran is reported, since x86 timings differ between
TFLite runtimes. Several bundles are timed interleaved, clip by clip, so that they share
the machine's load, and each is also given as a ratio to the first.
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
AIM_STAGES = "features_encoder_decoder"
FIRST_HEARING = "first_hearing"  # total less the second listen


def three_seconds(audio: np.ndarray) -> np.ndarray:
    window = np.zeros(3 * SAMPLE_RATE, np.float32)
    clip = audio[: window.size]
    start = (window.size - clip.size) // 2
    window[start : start + clip.size] = clip
    return window


def measure(model: Path, clips: Path, repeat: int) -> dict:
    return measure_many([model], clips, repeat)[str(model)]


def measure_many(models: list[Path], clips: Path, repeat: int) -> dict[str, dict]:
    recognizers = [Recognizer.load(model, num_threads=1) for model in models]
    audio = [three_seconds(load_audio(path)) for path, _ in read_labels(clips)]
    stages: list[dict[str, list[float]]] = [{} for _ in models]
    # per model and recognition: whether it ran in the shortest bucket (the 3 s graphs)
    shortest: list[list[bool]] = [[] for _ in models]
    for recognizer in recognizers:
        recognizer.recognize(audio[0])  # warm-up: graph caches, first allocations
    for _ in range(repeat):
        for clip in audio:
            for recognizer, timings, short in zip(recognizers, stages, shortest, strict=True):
                recognizer.grammar.forget_texts()
                stage_ms = recognizer.recognize(clip).timings
                for stage, ms in stage_ms.items():
                    timings.setdefault(stage, []).append(ms)
                # What the speed aim counts (features + encoder + constrained decode),
                # and the first hearing before any second listen, per recognition.
                timings.setdefault(AIM_STAGES, []).append(
                    stage_ms["features"] + stage_ms["encoder"] + stage_ms["decoder"]
                )
                timings.setdefault(FIRST_HEARING, []).append(
                    stage_ms["total"] - stage_ms.get("recheck", 0.0)
                )
                short.append(
                    recognizer.model.resident() == [recognizer.model.buckets[0].spec.frames]
                )
                recognizer.settle()  # between utterances, untimed, as the daemon does
    reports = {}
    for model, timings, short in zip(models, stages, shortest, strict=True):
        report: dict = {"runtime": interpreter_class()[1], "utterances": len(audio) * repeat}
        for stage, values in timings.items():
            report[stage] = _summary(values)
        # Commands cut at the window's edge get a lead-in, go past 3 s and load the longer
        # bucket's graphs (one bucket is resident at a time): their share, and the totals of
        # the recognitions that stayed in the 3 s graphs.
        report["longer_bucket"] = short.count(False)
        for stage in ("total", AIM_STAGES):
            in_short = [ms for ms, s in zip(timings[stage], short, strict=True) if s]
            if in_short:
                report[f"{stage}_in_shortest_bucket"] = _summary(in_short)
        if reports:  # the same clips, interleaved with the first model's
            first = next(iter(reports.values()))
            report["ratio_to_first"] = {
                stage: {k: report[stage][k] / first[stage][k] for k in ("median", "p95")}
                for stage in ("decoder", AIM_STAGES, "total")
            }
        reports[str(model)] = report
    return reports


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, nargs="+", default=[ROOT / "models" / "home"])
    parser.add_argument("--clips", type=Path, default=ROOT / ".cache" / "build-home" / "heldout")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    reports = measure_many(args.model, args.clips, args.repeat)
    print(json.dumps(reports[str(args.model[0])] if len(reports) == 1 else reports, indent=2))


if __name__ == "__main__":
    main()
