"""Build the feature cache of the real recordings: `python -m tools.prepare --data ../shared/data`.

Train (speakers not in dev) gets clean + augmented copies; dev gets clean copies only.
Test-split clips are never touched here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.corpus import DEFAULT_DATA, load_noises, read_manifest, train_dev_test
from tools.featcache import build

DEFAULT_CACHE = Path(".cache")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--variants", type=int, default=3, help="copies per train clip (1 clean)")
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--limit", type=int, default=0, help="only N clips (for quick tests)")
    args = parser.parse_args(argv)

    train, dev, _ = train_dev_test(read_manifest(args.data))
    train = [c for c in train if c.seconds <= args.max_seconds]
    dev = [c for c in dev if c.seconds <= args.max_seconds]
    if args.limit:
        train, dev = train[: args.limit], dev[: max(1, args.limit // 5)]
    noises = load_noises(args.data)
    print(f"train clips {len(train)}, dev clips {len(dev)}")
    build(train, args.variants, noises, desc="train features").save(args.cache / "real_train.npz")
    build(dev, 1, noises, desc="dev features").save(args.cache / "real_dev.npz")


if __name__ == "__main__":
    main()
