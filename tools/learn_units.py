"""Learn phone-piece output units: `python -m tools.learn_units --sets S.npz... --out units.json`.

Byte-pair merges over the words of the training transcripts (the feature sets' phone
targets, so the train split only). Each distinct word counts by the square root of how often
it occurs: the grammar's own words are said thousands of times in the synthetic set and
would otherwise take most merges as whole-word units that no other grammar reuses.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from assistant.units import Units, learn_merges
from tools.featcache import FeatureSet

DEFAULT_MERGES = 128
UNITS_FILE = "units.json"  # beside a checkpoint whose model outputs phone pieces


def word_weights(sets: list[FeatureSet]) -> dict[tuple[str, ...], float]:
    counts: Counter[tuple[str, ...]] = Counter()
    phones = Units.phones()
    for data in sets:
        for targets in data.tokens:
            counts.update(tuple(w) for w in phones.words(targets))
    return {word: math.sqrt(n) for word, n in counts.items()}


def save(units: Units, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ",\n".join(json.dumps(list(m)) for m in units.merges)
    path.write_text('{"merges": [\n' + lines + "\n]}\n")


def load(path: Path) -> Units:
    return Units.pieces(json.loads(path.read_text())["merges"])


def units_beside(checkpoint: Path) -> Units:
    """The output units of a checkpoint: phone pieces when a units file lies beside it."""
    path = checkpoint.parent / UNITS_FILE
    return load(path) if path.exists() else Units.phones()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=Path, nargs="+", required=True)
    parser.add_argument("--merges", type=int, default=DEFAULT_MERGES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sets = [FeatureSet.load(p) for p in args.sets]
    units = Units.pieces(learn_merges(word_weights(sets), args.merges))
    save(units, args.out)
    pieces = sum(len(units.from_phone_ids(t)) for s in sets for t in s.tokens)
    phones = sum(len(t) for s in sets for t in s.tokens)
    print(f"{len(units.tokens)} units; {pieces / phones:.3f} tokens per phone token")


if __name__ == "__main__":
    main()
