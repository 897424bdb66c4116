"""Score a bundle on a folder of WAVs with labels.json (file -> {"text", "intent"?, "slots"?}
or file -> text), clean and mixed with noise at several SNRs: the grammar's own commands,
spoken by voices held out of training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.grammar import normalise_text
from assistant.recognizer import Recognizer
from tools.augment import mix_noise
from tools.corpus import load_audio
from tools.meaning import same_meaning

SNRS: tuple[float | None, ...] = (None, 24.0, 18.0, 12.0, 6.0, 0.0)  # None = clean


def read_labels(folder: Path) -> list[tuple[Path, dict]]:
    labels = json.loads((folder / "labels.json").read_text())
    items = []
    for name, label in sorted(labels.items()):
        items.append((folder / name, label if isinstance(label, dict) else {"text": label}))
    return items


def expected_meaning(recognizer: Recognizer, label: dict) -> tuple[str | None, dict]:
    if "intent" in label and "slots" in label:
        return label["intent"], label["slots"]
    found = recognizer.grammar.recognize_text(label["text"])
    return (found[0], found[1]) if found else (label.get("intent"), {})


def accuracy_by_snr(
    model: Path,
    folder: Path,
    noises: list[np.ndarray],
    grammar: Path | None = None,
    snrs: tuple[float | None, ...] = SNRS,
    seed: int = 0,
) -> dict[str, dict]:
    recognizer = Recognizer.load(model, grammar=grammar)
    items = read_labels(folder)
    audio = [load_audio(path) for path, _ in items]
    expected = [expected_meaning(recognizer, label) for _, label in items]
    results: dict[str, dict] = {}
    for snr in snrs:
        rng = np.random.default_rng(seed)
        right = exact = wrong = 0
        for clip, (_, label), (intent, slots) in tqdm(
            list(zip(audio, items, expected, strict=True)), desc=f"held-out, SNR {snr}", leave=False
        ):
            if snr is not None:
                clip = mix_noise(clip, noises[int(rng.integers(len(noises)))], snr, rng)
            result = recognizer.recognize(clip)
            ok = same_meaning(result.intent, result.slots, intent, slots)
            right += ok
            wrong += result.intent is not None and not ok  # acted on, wrongly
            exact += normalise_text(result.text) == normalise_text(label["text"])
        key = "clean" if snr is None else f"{snr:g} dB"
        results[key] = {
            "clips": len(items),
            "accuracy": right / max(len(items), 1),
            "wrong_accepted": wrong / max(len(items), 1),
            "text_exact": exact / max(len(items), 1),
        }
        print(f"held-out {key}: {results[key]}")
    return results
