"""The shared speech data: manifest rows, audio loading, speaker-disjoint dev split."""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from assistant.features import SAMPLE_RATE

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass(frozen=True)
class Clip:
    path: Path
    corpus: str
    split: str
    speaker: str
    text: str
    label: str
    seconds: float

    @property
    def has_text(self) -> bool:
        # Rows with empty text are silence clips (label _silence_) or AN4 clips that lost
        # their transcript; only the former are usable ("nothing was said").
        return bool(self.text) or self.label == "_silence_"


def read_manifest(data_dir: Path = DEFAULT_DATA) -> list[Clip]:
    with open(data_dir / "manifest.csv", newline="") as f:
        return [
            Clip(
                path=data_dir / row["path"],
                corpus=row["corpus"],
                split=row["split"],
                speaker=row["speaker"],
                text=row["text"],
                label=row["label"],
                seconds=float(row["seconds"]),
            )
            for row in csv.DictReader(f)
        ]


def is_dev_speaker(clip: Clip, dev_share: float = 0.08) -> bool:
    """A stable, speaker-disjoint slice of the train split for tuning (hash of the speaker id;
    clips without a speaker id are hashed by file name)."""
    key = clip.speaker or clip.path.name
    return (zlib.crc32(key.encode()) % 1000) < dev_share * 1000


def train_dev_test(clips: Iterable[Clip]) -> tuple[list[Clip], list[Clip], list[Clip]]:
    train, dev, test = [], [], []
    for clip in clips:
        if not clip.has_text:
            continue
        if clip.split == "test":
            test.append(clip)
        elif is_dev_speaker(clip):
            dev.append(clip)
        else:
            train.append(clip)
    return train, dev, test


def load_audio(path: Path) -> np.ndarray:
    """Any soundfile-readable file -> float32 mono 16 kHz."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE)
    return audio.astype(np.float32)


def load_noises(data_dir: Path = DEFAULT_DATA) -> list[np.ndarray]:
    return [load_audio(p) for p in sorted((data_dir / "noise").glob("*.flac"))]


def require_noises(data_dir: Path = DEFAULT_DATA) -> list[np.ndarray]:
    """load_noises for tools that cannot run without noise: a clear exit when there is none."""
    noises = load_noises(data_dir)
    if not noises:
        raise SystemExit(f"no noise recordings in {data_dir / 'noise'} (*.flac): pass --data DIR")
    return noises
