"""Synthetic training speech: grammar sentences spoken by every offline TTS voice, perturbed.

    python -m tools.synth --grammar models/home/grammar.yaml --count 4000 \\
        --out .cache/synth_home.npz [--variants K] [--workers 2] [--exclude 'piper:*,flite:rms']
    python -m tools.synth --grammar models/home/grammar.yaml --count 200 --clean \\
        --voices 'piper:*,flite:rms' --wav-dir .cache/synth_heldout

Sentences are spread evenly across intents; voices are taken round-robin over speaker groups
(the 12 espeak variants of one accent count as one group, so espeak does not drown the
others) and at random within a group. Each clip gets:
  - tempo 0.85-1.15 and, where the engine has it, a native pitch change (espeak, flite, pico);
  - a vocal-tract/pitch shift by resampling (x0.9-1.1), with the engine's own speed set to
    compensate so that tempo and vocal tract vary independently;
  - a simulated shoebox room (RT60 0.2-0.8 s) for ~40% of clips, from a bank of room impulse
    responses made once per run with pyroomacoustics (one RIR costs up to ~1 s, a convolution
    milliseconds);
  - leading/trailing silence, shared noise at SNR 0-25 dB for ~80% of clips, random gain.
With --clean only the engine-native tempo/pitch change and the silence padding are applied
(held-out benchmark sets, to which a caller adds noise at the SNRs it wants).
The same --seed gives the same clips, whatever the workers' order: every choice of a clip
comes from its own seed, the noise that piper and hibari sample included (engine_seed).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
from scipy.signal import fftconvolve
from tqdm import tqdm

from assistant.features import SAMPLE_RATE, log_mel
from assistant.grammar import Grammar, Sample, load_grammar
from tools import augment
from tools.corpus import DEFAULT_DATA, load_noises
from tools.featcache import FeatureSet, targets
from tools.voices import Voice, available_voices, select

log = logging.getLogger("tools.synth")

REVERB_TAIL_S = 0.3


@dataclass(frozen=True)
class AugmentConfig:
    clean: bool = False
    tempo: tuple[float, float] = (0.85, 1.15)
    vocal_tract: tuple[float, float] = (0.9, 1.1)
    pitch: tuple[float, float] = (0.8, 1.25)
    noise_p: float = 0.8
    snr_db: tuple[float, float] = (0.0, 25.0)
    room_p: float = 0.4


class Job(NamedTuple):
    index: int
    text: str
    voice: Voice
    seed: int


class Result(NamedTuple):
    index: int
    audio: np.ndarray | None  # None when the voice failed
    error: str = ""


@dataclass
class _WorkerState:
    config: AugmentConfig = field(default_factory=AugmentConfig)
    noises: list[np.ndarray] = field(default_factory=list)
    rirs: list[np.ndarray] = field(default_factory=list)


_STATE = _WorkerState()


# ---------------------------------------------------------------------------------------------
# Sentences and voices


def pick_sentences(grammar: Grammar, n: int, seed: int) -> list[Sample]:
    """``n`` sentences, intents taking turns (sentences_sample draws intents at random, so a
    3x oversample is regrouped per intent and dealt round-robin), in shuffled order."""
    rng = random.Random(seed)
    by_intent: dict[str, list[Sample]] = defaultdict(list)
    for sample in grammar.sentences_sample(3 * n + 10 * len(grammar.intent_names), seed):
        by_intent[str(sample.intent)].append(sample)
    queues = list(by_intent.values())
    out: list[Sample] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop())
    rng.shuffle(out)
    return out


def assign_voices(n: int, voices: list[Voice], seed: int) -> list[Voice]:
    """Round-robin over speaker groups (in a shuffled order), a random voice within each."""
    rng = random.Random(seed + 1)
    groups: dict[str, list[Voice]] = defaultdict(list)
    for voice in voices:
        groups[voice.group].append(voice)
    order = sorted(groups)
    rng.shuffle(order)
    return [rng.choice(groups[order[i % len(order)]]) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Rooms


def make_rir(seed: int) -> np.ndarray:
    """Impulse response of a random shoebox room (RT60 0.2-0.8 s), starting at the direct
    path (so labels keep their timing) and peak-normalised."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    while True:
        dims = np.array([rng.uniform(3, 9), rng.uniform(2.5, 7), rng.uniform(2.4, 3.5)])
        rt60 = rng.uniform(0.2, 0.8)
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # room too large for so short an RT60
            continue
        break
    room = pra.ShoeBox(
        dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order
    )
    room.add_source(rng.uniform(0.5, dims - 0.5))
    room.add_microphone(rng.uniform(0.5, dims - 0.5))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float32)
    rir = rir[max(0, int(np.argmax(np.abs(rir))) - 8) :]
    return rir / float(np.abs(rir).max())


def reverb(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    wet = fftconvolve(audio, rir)[: audio.size + int(REVERB_TAIL_S * SAMPLE_RATE)]
    return (wet * (np.abs(audio).max() / (np.abs(wet).max() + 1e-9))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# One clip


def engine_seed(rng: np.random.Generator) -> int:
    """The seed of a clip's TTS noise (piper, hibari), from the clip's generator without
    drawing from it (a spawned child), so that the clip's other choices stay as they were."""
    return int(rng.spawn(1)[0].integers(2**31))


def render(
    text: str,
    voice: Voice,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    noises: list[np.ndarray],
    rirs: list[np.ndarray],
) -> np.ndarray:
    seed = engine_seed(rng)
    if cfg.clean:
        speed, pitch = rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
        audio = voice.speak(text, speed=speed, pitch=pitch, seed=seed)
        audio = augment.pad_silence(audio, rng)
        return (audio * min(1.0, 0.9 / (np.abs(audio).max() + 1e-9))).astype(np.float32)
    tempo = rng.uniform(*cfg.tempo)
    tract = rng.uniform(*cfg.vocal_tract)
    # Resampling by ``tract`` also speeds up by ``tract``: ask the engine for tempo / tract.
    audio = voice.speak(text, speed=tempo / tract, pitch=rng.uniform(*cfg.pitch), seed=seed)
    audio = augment.change_speed(audio, tract)
    if rirs and rng.random() < cfg.room_p:
        audio = reverb(audio, rirs[int(rng.integers(len(rirs)))])
    audio = augment.pad_silence(audio, rng)
    if noises and rng.random() < cfg.noise_p:
        noise = noises[int(rng.integers(len(noises)))]
        audio = augment.mix_noise(audio, noise, float(rng.uniform(*cfg.snr_db)), rng)
    return augment.random_gain(audio, rng)


def _init_worker(state: _WorkerState) -> None:
    global _STATE
    _STATE = state
    logging.basicConfig(level=logging.WARNING)


def _work(job: Job) -> Result:
    rng = np.random.default_rng(job.seed)
    try:
        audio = render(job.text, job.voice, rng, _STATE.config, _STATE.noises, _STATE.rirs)
    except Exception as err:  # noqa: BLE001 - one bad clip must not stop a 20-minute run
        return Result(job.index, None, f"{job.voice.name}: {err}")
    return Result(job.index, audio)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class SynthOutput:
    features: FeatureSet | None
    voices: list[str]  # voice name per kept clip
    failed: list[str]


def synthesize(
    samples: list[Sample],
    voices: list[Voice],
    *,
    variants: int = 1,
    config: AugmentConfig = AugmentConfig(),
    noises: list[np.ndarray] | None = None,
    rooms: int = 48,
    workers: int = 2,
    seed: int = 0,
    features: bool = True,
    wav_dir: Path | None = None,
) -> SynthOutput:
    """Speak each sample ``variants`` times (same voice, fresh perturbation) and return
    log-mel features (and/or write WAVs plus labels.json into ``wav_dir``)."""
    if not voices:
        raise ValueError("no TTS voice available")
    chosen = assign_voices(len(samples), voices, seed)
    jobs = [
        Job(v * len(samples) + i, s.text, chosen[i], seed * 1_000_003 + v * len(samples) + i)
        for v in range(variants)
        for i, s in enumerate(samples)
    ]
    rirs: list[np.ndarray] = []
    if not config.clean and config.room_p > 0 and rooms > 0:
        seeds = [seed * 7919 + r for r in range(rooms)]
        rirs = _map(make_rir, seeds, workers, "rooms")
    state = _WorkerState(config, [] if config.clean else list(noises or []), rirs)
    if workers <= 0:  # in this process: tests, debugging
        _init_worker(state)
        results = tqdm(map(_work, jobs), total=len(jobs), desc="synth")
        return _collect(results, jobs, samples, features, wav_dir)
    ctx = mp.get_context("spawn")  # onnxruntime (piper, hibari) is not fork-safe
    with ctx.Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
        results = tqdm(pool.imap(_work, jobs, chunksize=4), total=len(jobs), desc="synth")
        return _collect(results, jobs, samples, features, wav_dir)


def _map(
    fn: Callable[[int], np.ndarray], items: list[int], workers: int, desc: str
) -> list[np.ndarray]:
    if workers <= 0:
        return [fn(i) for i in tqdm(items, desc=desc)]
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(fn, items), total=len(items), desc=desc))


def _collect(
    results: object, jobs: list[Job], samples: list[Sample], features: bool, wav_dir: Path | None
) -> SynthOutput:
    feats: list[np.ndarray] = []
    kept: list[Job] = []
    failed: list[str] = []
    labels: dict[str, dict[str, str]] = {}
    if wav_dir:
        wav_dir.mkdir(parents=True, exist_ok=True)
    for result in results:  # type: ignore[attr-defined]
        job = jobs[result.index]
        if result.audio is None:
            failed.append(result.error)
            continue
        kept.append(job)
        if features:
            feats.append(log_mel(result.audio).astype(np.float16))
        if wav_dir:
            name = f"{job.index:05d}_{job.voice.name.replace(':', '_').replace('+', '_')}.wav"
            sf.write(wav_dir / name, np.clip(result.audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            intent = samples[job.index % len(samples)].intent
            labels[name] = {"text": job.text, "intent": str(intent), "voice": job.voice.name}
    if wav_dir:
        (wav_dir / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    for error in failed[:10]:
        log.warning("clip failed: %s", error)
    feature_set = None
    if features and kept:
        feature_set = FeatureSet(
            feats=np.concatenate(feats),
            offsets=np.cumsum([0] + [len(f) for f in feats]),
            tokens=[targets(j.text) for j in kept],
            texts=[j.text for j in kept],
            corpora=[f"synth:{j.voice.name}" for j in kept],
        )
    return SynthOutput(feature_set, [j.voice.name for j in kept], failed)


def _patterns(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grammar", type=Path, nargs="+", required=True)
    parser.add_argument("--count", type=int, default=4000, help="sentences to speak")
    parser.add_argument("--out", type=Path, help="FeatureSet .npz to write")
    parser.add_argument("--wav-dir", type=Path, help="also write 16 kHz WAVs + labels.json here")
    parser.add_argument("--variants", type=int, default=1, help="perturbed copies per sentence")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes (0: all in this process)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--voices",
        help="only these voices: comma-separated globs on name or group, e.g. 'piper:*,flite:rms'",
    )
    parser.add_argument(
        "--exclude", help="leave out these voices (same syntax), e.g. the held-out ones"
    )
    parser.add_argument("--clean", action="store_true", help="no rooms/noise/resampling/gain")
    parser.add_argument("--rooms", type=int, default=48, help="room impulse responses to draw")
    parser.add_argument(
        "--noise-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="data folder whose noise/*.flac is mixed in",
    )
    parser.add_argument("--list-voices", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    voices = select(available_voices(probe=True), _patterns(args.voices), _patterns(args.exclude))
    log.info(
        "%d voices in %d groups: %s",
        len(voices),
        len({v.group for v in voices}),
        ", ".join(sorted({v.group for v in voices})),
    )
    if args.list_voices:
        print("\n".join(v.name for v in voices))
        return
    if not args.out and not args.wav_dir:
        parser.error("give --out and/or --wav-dir")
    samples = pick_sentences(load_grammar(args.grammar), args.count, args.seed)
    noises = [] if args.clean else load_noises(args.noise_dir)
    output = synthesize(
        samples,
        voices,
        variants=args.variants,
        config=AugmentConfig(clean=args.clean),
        noises=noises,
        rooms=args.rooms,
        workers=args.workers,
        seed=args.seed,
        features=args.out is not None,
        wav_dir=args.wav_dir,
    )
    if args.out and output.features is not None:
        output.features.save(args.out)
        log.info(
            "wrote %s: %d clips, %.0f s of audio",
            args.out,
            len(output.features),
            output.features.offsets[-1] / 100,
        )
    for name, n in sorted(Counter(output.voices).items()):
        log.info("  %-30s %d", name, n)
    if output.failed:
        log.warning("%d clips failed", len(output.failed))


if __name__ == "__main__":
    main()
