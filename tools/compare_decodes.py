"""Decode the same audio with two bundles and count where their answers differ: for a change
that should leave every answer as it was (tools.reexport), or to see where two models part.

Clips: a folder of WAVs with labels.json (the held-out TTS voices), clean and mixed with the
same seeded noise as tools.heldout at each SNR, and the dev speakers' real recordings, a few
per corpus, as recorded (never the test split).

    python -m tools.compare_decodes models/home /tmp/home-new --clips .cache/build-home2/heldout
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.recognizer import Recognizer
from tools.augment import mix_noise
from tools.corpus import DEFAULT_DATA, load_audio, load_noises, read_manifest, train_dev_test
from tools.heldout import SNRS, read_labels


def clip_sets(clips_dir: Path | None, data: Path, per_corpus: int) -> dict[str, list[np.ndarray]]:
    """Condition name -> audio: the held-out folder at each SNR, and real dev clips."""
    sets: dict[str, list[np.ndarray]] = {}
    if clips_dir is not None:
        audio = [load_audio(path) for path, _ in read_labels(clips_dir)]
        noises = load_noises(data)
        for snr in SNRS:
            rng = np.random.default_rng(0)  # as tools.heldout: each SNR's noise from seed 0
            sets["held-out " + ("clean" if snr is None else f"{snr:g} dB")] = [
                clip
                if snr is None
                else mix_noise(clip, noises[int(rng.integers(len(noises)))], snr, rng)
                for clip in audio
            ]
    if per_corpus:
        by_corpus: dict[str, list] = defaultdict(list)
        for clip in train_dev_test(read_manifest(data))[1]:
            if len(by_corpus[clip.corpus]) < per_corpus:
                by_corpus[clip.corpus].append(clip)
        for corpus, clips in sorted(by_corpus.items()):
            sets[f"dev {corpus}"] = [load_audio(clip.path) for clip in clips]
    return sets


def compare(first: Recognizer, second: Recognizer, audio: list[np.ndarray], name: str) -> dict:
    same_text = same_answer = 0
    largest_gap = 0.0
    for clip in tqdm(audio, desc=name, leave=False):
        a, b = first.recognize(clip), second.recognize(clip)
        same_text += a.text == b.text
        same_answer += (a.intent, a.slots) == (b.intent, b.slots)
        largest_gap = max(largest_gap, abs(a.confidence - b.confidence))
    return {
        "clips": len(audio),
        "same_text": same_text,
        "same_answer": same_answer,
        "largest_confidence_gap": round(largest_gap, 6),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--clips", type=Path, help="folder of WAVs with labels.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-corpus", type=int, default=50, help="dev clips per corpus")
    parser.add_argument("--out", type=Path, help="write the counts here as JSON")
    args = parser.parse_args(argv)
    first, second = Recognizer.load(args.first), Recognizer.load(args.second)
    report = {
        name: compare(first, second, audio, name)
        for name, audio in clip_sets(args.clips, args.data, args.per_corpus).items()
    }
    for name, counts in report.items():
        print(
            f"{name:24s} {counts['clips']:4d} clips: same text {counts['same_text']}, "
            f"same intent and slots {counts['same_answer']}, largest confidence gap "
            f"{counts['largest_confidence_gap']}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
