"""Feature sets on disk: log-mel of each clip (clean and augmented copies) plus token targets.

Features are computed once per variant with assistant.features.log_mel (the runtime's own
function) and stored as one flat float16 array with offsets, so an epoch reads no audio.
"""

from __future__ import annotations

import multiprocessing as mp
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.features import log_mel
from assistant.lexicon import EOS_ID, text_to_tokens
from tools import augment
from tools.corpus import Clip, load_audio
from tools.streamed import as_streamed


@dataclass
class FeatureSet:
    feats: np.ndarray  # [total_frames, n_mels] float16
    offsets: np.ndarray  # [n + 1]
    tokens: list[np.ndarray]
    texts: list[str]
    corpora: list[str]

    def __len__(self) -> int:
        return len(self.tokens)

    def item(self, i: int) -> np.ndarray:
        return self.feats[self.offsets[i] : self.offsets[i + 1]].astype(np.float32)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tok_offsets = np.cumsum([0] + [len(t) for t in self.tokens])
        np.savez(
            path,
            feats=self.feats,
            offsets=self.offsets,
            tokens=np.concatenate(self.tokens).astype(np.int16),
            tok_offsets=tok_offsets,
            texts=np.array(self.texts),
            corpora=np.array(self.corpora),
        )

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        z = np.load(path)
        tok, to = z["tokens"], z["tok_offsets"]
        return cls(
            feats=z["feats"],
            offsets=z["offsets"],
            tokens=[tok[to[i] : to[i + 1]].astype(np.int32) for i in range(len(to) - 1)],
            texts=list(z["texts"]),
            corpora=list(z["corpora"]),
        )

    @classmethod
    def concat(cls, sets: list[FeatureSet]) -> FeatureSet:
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for s in sets:
            offsets.append(s.offsets[1:] + base)
            base += int(s.offsets[-1])
        return cls(
            feats=np.concatenate([s.feats for s in sets]),
            offsets=np.concatenate(offsets),
            tokens=[t for s in sets for t in s.tokens],
            texts=[t for s in sets for t in s.texts],
            corpora=[c for s in sets for c in s.corpora],
        )


def targets(text: str) -> np.ndarray:
    return np.array(text_to_tokens(text) if text else [EOS_ID], dtype=np.int32)


_NOISES: list[np.ndarray] = []


def init_worker(noises: list[np.ndarray]) -> None:
    _NOISES[:] = noises


def _variant(audio: np.ndarray, variant: int, seed: int, narrow: bool = False) -> np.ndarray:
    """Variant 0 is the clean clip; others get speed, gain, silence padding and noise.

    ``narrow``: the clip also passes through a narrowband channel (8 kHz for the clean variant,
    3.5-5.5 kHz Nyquist for the others), after the noise, as a real channel would carry both.
    """
    if variant == 0:
        return augment.narrow_band(audio, augment.MIC_8K_RATE) if narrow else audio
    rng = np.random.default_rng(seed)
    audio = augment.change_speed(audio, float(rng.choice([0.85, 0.9, 0.95, 1.05, 1.1, 1.15])))
    audio = augment.pad_silence(audio, rng)
    if _NOISES and rng.random() < 0.8:
        noise = _NOISES[int(rng.integers(len(_NOISES)))]
        audio = augment.mix_noise(audio, noise, float(rng.uniform(0, 25)), rng)
    if narrow:
        audio = augment.narrow_band(audio, float(rng.uniform(*augment.NARROW_RATES)))
        # A faint broadband floor above the cut-off, as codecs and cheap converters leave
        # (FSDD's top bands sit 1-3 nats above the log floor, not on it).
        floor = rng.standard_normal(audio.size).astype(np.float32)
        audio = augment.mix_noise(audio, floor, float(rng.uniform(30, 70)), rng)
    return augment.random_gain(audio, rng)


# (audio path, variant, seed, narrow, streamed)
Job = tuple[str, int, int, bool, bool]


def variant_jobs(
    clips: list[Clip],
    variants: int,
    narrow: bool = False,
    first_variant: int = 0,
    streamed: bool = False,
) -> list[Job]:
    """The copies a feature set holds, in its order: variants ``first_variant`` ..
    ``variants - 1`` of every clip. tools.teacher walks the same list, so that its targets
    line up with the features item by item. ``streamed``: each copy as the daemon's VAD cuts
    it from a stream (tools.streamed), after its augmentation."""
    # crc32, not hash(): str hashes change with every process (PYTHONHASHSEED), and a feature
    # cache rebuilt from the same data should hold the same augmented copies.
    channel = (":narrow" if narrow else "") + (":streamed" if streamed else "")
    return [
        (
            str(c.path),
            v,
            zlib.crc32(f"{'/'.join(c.path.parts[-3:])}:{v}{channel}".encode()),
            narrow,
            streamed,
        )
        for v in range(first_variant, variants)
        for c in clips
    ]


def variant_audio(job: Job) -> np.ndarray:
    """The audio of one copy (in a worker that ran init_worker with the noises)."""
    path, variant, seed, narrow, streamed = job
    audio = _variant(load_audio(Path(path)), variant, seed, narrow)
    if streamed:
        cut = as_streamed(audio)
        # A copy the VAD hears no speech in stays as it was: its words are still its target.
        return cut if cut.size else audio
    return audio


def _features(job: Job) -> np.ndarray:
    return log_mel(variant_audio(job)).astype(np.float16)


def build(
    clips: list[Clip],
    variants: int,
    noises: list[np.ndarray],
    workers: int = 2,
    desc: str = "features",
    narrow: bool = False,
    first_variant: int = 0,
    streamed: bool = False,
) -> FeatureSet:
    """Variants ``first_variant`` .. ``variants - 1`` of each clip (0 is the clean one)."""
    jobs = variant_jobs(clips, variants, narrow, first_variant, streamed)
    with mp.Pool(workers, initializer=init_worker, initargs=(noises,)) as pool:
        feats = list(tqdm(pool.imap(_features, jobs, chunksize=32), total=len(jobs), desc=desc))
    offsets = np.cumsum([0] + [len(f) for f in feats])
    copies = variants - first_variant
    toks = [targets(c.text) for c in clips] * copies
    return FeatureSet(
        feats=np.concatenate(feats),
        offsets=offsets,
        tokens=toks,
        texts=[c.text for c in clips] * copies,
        corpora=[c.corpus for c in clips] * copies,
    )
