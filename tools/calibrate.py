"""Fit a bundle's confidence calibrator on held-out *train* speakers (the dev split).

For every dev clip the recogniser's best grammar path is labelled right (intent, slots, or
AN4 words all correct) or wrong (wrong command, out-of-grammar speech, noise). A logistic
regression on the decoder's confidence features then gives P(right); the threshold is the
one that maximises dev accuracy while keeping false accepts on non-commands at or under 1%.
Synthetic tones, beeps, sweeps and clicks (tools.nonspeech) join the non-commands: the real
data holds none, and a grammar decoder reads a steady tone as some command. Every clip is
also decoded mixed with noise (0-18 dB SNR), so that the bar suits a noisy kitchen too.

Logistic regression on the decoder's few confidence features is 20 lines of numpy: not
worth scikit-learn as a training dependency.

Then the second listen (assistant/recheck.py): every clip is also decoded at the recheck's
speed factors, and a band of confidences around the bar is chosen, with the confidence its
answers get when the rehearings agree or not, if one makes dev accuracy better under the same
1% false-accept limit.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.grammar import normalise_text
from assistant.recheck import SPEED_FACTORS, Recheck
from assistant.recognizer import FEATURES, Recognizer
from tools.augment import mix_noise
from tools.corpus import DEFAULT_DATA, load_audio, load_noises
from tools.evaluate import Item, load_sets
from tools.heldout import expected_meaning, read_labels
from tools.meaning import same_meaning
from tools.nonspeech import sounds
from tools.package import update_manifest

FEATURE_NAMES = list(FEATURES)
NONSPEECH_SET = "non-speech sounds"
# ~200 clips at ~40 ms a decode: under 10 s more calibration, enough to cover every kind of
# sound at many pitches and levels.
NONSPEECH_CLIPS = 200
# Every calibration clip is also decoded in noise (a noise file of the shared data at one of
# these SNRs): a deployment hears kitchens and televisions, and a calibrator fitted on clean
# speech alone learns a bar that turns right answers in noise away.
NOISY_SNRS = (0.0, 6.0, 12.0, 18.0)
NOISE_SEED = 20261121  # not the evaluation's seeds, so no clip meets the same noise piece


def is_right(item: Item, intent: str | None, text: str, slots: dict) -> bool:
    if intent is None or item.expected_intent is None:
        return False
    if item.expected_intent == "*":
        return normalise_text(text) == normalise_text(item.text)
    return same_meaning(
        intent, slots, item.expected_intent, item.expected_slots, labelled_only=True
    )


def grammar_items(model: Path, folder: Path) -> list[Item]:
    """The bundle's own commands (a folder of WAVs + labels.json, synthetic speech of voices
    other than the held-out test voices), so the calibrator also knows this grammar."""
    recognizer = Recognizer.load(model)
    items = []
    for path, label in read_labels(folder):
        intent, slots = expected_meaning(recognizer, label)
        items.append(Item(load_audio(path), intent, slots, label["text"]))
    return items


def nonspeech_items(count: int) -> list[Item]:
    """Synthetic non-speech sounds, every one a non-command (expected intent None)."""
    return [Item(s.audio, None, {}, "") for s in sounds(count)]


@dataclass(frozen=True)
class Clips:
    """What a calibrator is fitted on, besides the dev split's non-commands.

    own: WAVs + labels.json of the bundle's own commands (synthetic, training voices).
    nonspeech: how many synthetic non-speech sounds join the non-commands.
    corpora: the dev corpora's commands (keywords, digits, letters); leave them out for
        weights never trained on the bundle's grammar (see ``calibrate``).
    noisy: decode every clip a second time mixed with a noise file (NOISY_SNRS).
    """

    own: Path | None = None
    nonspeech: int = NONSPEECH_CLIPS
    corpora: bool = True
    noisy: bool = True
    recheck: bool = True  # also decode every clip at the recheck's speeds, to fit one

    def describe(self) -> str:
        text = "dev split (held-out train speakers)" if self.corpora else "dev non-commands"
        if self.own is not None and (self.own / "labels.json").exists():
            text += " + the grammar's own commands (synthetic, training voices)"
        if self.nonspeech > 0:
            text += f" + {self.nonspeech} synthetic non-speech sounds"
        if self.noisy:
            text += f", each clean and in noise ({min(NOISY_SNRS):g}-{max(NOISY_SNRS):g} dB SNR)"
        return text


def collect(
    model: Path, data: Path, clips: Clips = Clips()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, right/wrong labels, whether the clip was a non-command, and whether the
    clip played at the recheck's speeds was heard the same (all False without ``recheck``)."""
    feats, labels, negative, agreed = [], [], [], []
    noises = load_noises(data) if clips.noisy else []
    rng = np.random.default_rng(NOISE_SEED)
    sets = load_sets(data, "dev")
    if not clips.corpora:
        sets = {name: s for name, s in sets.items() if name == "false_accepts"}
    if clips.own is not None and (clips.own / "labels.json").exists():
        sets["own grammar"] = (None, grammar_items(model, clips.own))
    if clips.nonspeech > 0:  # decoded with the bundle's own grammar: what a deployment hears
        sets[NONSPEECH_SET] = (None, nonspeech_items(clips.nonspeech))
    for name, (grammar, items) in sets.items():
        if not items:
            continue
        recognizer = Recognizer.load(model, grammar=grammar)
        runs = [(name, iter(items))]
        if noises:
            runs.append((f"{name} in noise", in_noise(items, noises, rng)))
        for desc, stream in runs:
            for item in tqdm(stream, desc=f"calibration: {desc}", total=len(items), leave=False):
                decoded = recognizer.decode(item.audio)
                if decoded.intent is None:
                    continue
                feats.append([decoded.features[feature] for feature in FEATURE_NAMES])
                labels.append(is_right(item, decoded.intent, decoded.text, decoded.slots))
                negative.append(item.expected_intent is None)
                agreed.append(
                    clips.recheck
                    and recognizer.rehearings_agree(item.audio, decoded, SPEED_FACTORS)
                )
    return (
        np.array(feats),
        np.array(labels, float),
        np.array(negative, bool),
        np.array(agreed, bool),
    )


def in_noise(
    items: list[Item], noises: list[np.ndarray], rng: np.random.Generator
) -> Iterator[Item]:
    """Each item mixed with a random piece of a random noise file at one of NOISY_SNRS
    (lazily: the noisy audio of a whole dev split would not fit a small machine)."""
    for item in items:
        noise = noises[int(rng.integers(len(noises)))]
        audio = mix_noise(item.audio, noise, float(rng.choice(NOISY_SNRS)), rng)
        yield replace(item, audio=audio)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 3000
) -> tuple[np.ndarray, float]:
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):  # plain gradient descent: convex, small, converges fast
        p = 1 / (1 + np.exp(-(z @ w + b)))
        w -= 0.5 * (z.T @ (p - y) / len(y) + l2 * w)
        b -= 0.5 * float(np.mean(p - y))
    # Fold the standardisation into the weights so the runtime needs none.
    return w / std, b - float(np.sum(w * mean / std))


def _accuracy(accept: np.ndarray, right: np.ndarray) -> float:
    return float(np.mean(np.where(accept, right, ~right.astype(bool))))


def choose_threshold(
    p: np.ndarray, right: np.ndarray, negative: np.ndarray, max_fa: float = 0.01
) -> float:
    best, best_acc = 0.5, -1.0
    for t in np.linspace(0.05, 0.95, 91):
        accept = p >= t
        fa = accept[negative].mean() if negative.any() else 0.0
        acc = _accuracy(accept, right)
        if fa <= max_fa and acc > best_acc:
            best, best_acc = float(t), float(acc)
    return best


RECHECK_EDGES = np.round(np.linspace(0.05, 0.95, 19), 2)


def choose_recheck(
    p: np.ndarray,
    right: np.ndarray,
    negative: np.ndarray,
    agreed: np.ndarray,
    threshold: float,
    max_fa: float = 0.01,
) -> Recheck | None:
    """The band [low, high) around ``threshold`` whose answers are decoded again, and the
    confidence an answer there gets when its rehearings agree or not (the share of such
    calibration answers that were right): the band that makes accuracy best with false
    accepts at or under ``max_fa``, the narrowest (fewest rechecks) of equals. None when no
    band beats the bar alone."""
    best: Recheck | None = None
    best_key = (_accuracy(p >= threshold, right), 0.0)
    for low in RECHECK_EDGES[RECHECK_EDGES <= threshold]:
        for high in RECHECK_EDGES[RECHECK_EDGES > threshold]:
            band = (p >= low) & (p < high)
            if not band.any():
                continue
            rates = [
                float(right[band & (agreed == a)].mean()) if (band & (agreed == a)).any() else 0.0
                for a in (True, False)
            ]
            recheck = Recheck(float(low), float(high), round(rates[0], 4), round(rates[1], 4))
            accept = rechecked_confidences(recheck, p, agreed)[0] >= threshold
            if negative.any() and accept[negative].mean() > max_fa:
                continue
            key = (_accuracy(accept, right), -float(band.mean()))
            if key > best_key:
                best_key, best = key, recheck
    return best


def rechecked_confidences(
    recheck: Recheck, p: np.ndarray, agreed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The confidences the runtime ends with under ``recheck`` (Recognizer.recognize), and
    which of the clips it heard again."""
    band = (p >= recheck.low) & (p < recheck.high)
    return np.where(band, np.where(agreed, recheck.agreed, recheck.disagreed), p), band


def calibrate(model: Path, data: Path, clips: Clips = Clips()) -> dict:
    """Fit and store the bundle's calibrator. ``Clips(corpora=False)`` is for weights never
    trained on the bundle's grammar: their attention decoder has learned the training
    sentences as a language model and scores a new grammar's right answers low, so commands
    of the corpora (grammars it knows) would teach the calibrator the wrong scale."""
    x, y, negative, agreed = collect(model, data, clips)
    w, b = fit_logistic(x, y)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    threshold = choose_threshold(p, y, negative)
    recheck = choose_recheck(p, y, negative, agreed, threshold) if clips.recheck else None
    rechecked = np.zeros(len(p), bool)
    if recheck is not None:
        p, rechecked = rechecked_confidences(recheck, p, agreed)
    accept = p >= threshold
    summary = {
        "features": FEATURE_NAMES,
        "weights": [round(float(v), 5) for v in w],
        "bias": round(float(b), 5),
        "threshold": round(threshold, 3),
        "fitted_on": f"{clips.describe()}, {len(y)} clips",
        "dev_false_accepts": round(float(accept[negative].mean()), 4) if negative.any() else None,
        "dev_right_accepted": round(float(accept[y > 0].mean()), 4) if (y > 0).any() else None,
        # Commands heard wrong and still accepted, per command decoded: what a lower bar costs.
        "dev_wrong_accepted": (
            round(float((accept & (y == 0))[~negative].mean()), 4) if (~negative).any() else None
        ),
    }
    if recheck is not None:  # and the share of calibration clips heard again
        summary["recheck"] = {**recheck.to_dict(), "dev_share": round(float(rechecked.mean()), 4)}
    update_manifest(model, {"calibration": summary})
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--own", type=Path, help="WAVs + labels.json of the bundle's grammar")
    parser.add_argument(
        "--no-corpora",
        action="store_true",
        help="leave the dev corpora's commands out (weights never trained on this grammar)",
    )
    parser.add_argument(
        "--nonspeech",
        type=int,
        default=NONSPEECH_CLIPS,
        help=f"synthetic non-speech negatives (tones, beeps, clicks; default {NONSPEECH_CLIPS})",
    )
    parser.add_argument(
        "--clean-only", action="store_true", help="no noisy copies of the calibration clips"
    )
    parser.add_argument(
        "--no-recheck", action="store_true", help="fit no second listen (assistant/recheck.py)"
    )
    args = parser.parse_args(argv)
    clips = Clips(
        args.own, args.nonspeech, not args.no_corpora, not args.clean_only, not args.no_recheck
    )
    print(calibrate(args.model, args.data, clips))


if __name__ == "__main__":
    main()
