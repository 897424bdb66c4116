"""Build the feature cache of the real recordings: `python -m tools.prepare --data ../shared/data`.

Train (speakers not in dev) gets clean + augmented copies; dev gets clean copies. With
--narrow-copies N, train also gets N augmented copies through a narrowband channel (8 kHz
microphones; FSDD's recordings are such) and dev a clean narrowband copy. With
--stream-copies N, train also gets N augmented copies as the daemon's VAD cuts them from a
stream (tools.streamed) and dev a clean one. Test-split clips are never touched here.
Files already in the cache are kept unless --force.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tools.corpus import DEFAULT_DATA, Clip, load_noises, read_manifest, train_dev_test
from tools.featcache import FeatureSet, build

DEFAULT_CACHE = Path(".cache")
TRAIN, DEV = "real_train.npz", "real_dev.npz"
TRAIN_NARROW, DEV_NARROW = "real_train_narrow.npz", "real_dev_narrow.npz"
TRAIN_STREAM, DEV_STREAM = "real_train_stream.npz", "real_dev_stream.npz"


def clip_lists(
    data: Path, max_seconds: float = 8.0, limit: int = 0
) -> tuple[list[Clip], list[Clip]]:
    """The train and dev clips that the cache holds, in its order (tools.teacher reads the
    same lists)."""
    train, dev, _ = train_dev_test(read_manifest(data))
    train = [c for c in train if c.seconds <= max_seconds]
    dev = [c for c in dev if c.seconds <= max_seconds]
    if limit:
        train, dev = train[:limit], dev[: max(1, limit // 5)]
    return train, dev


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--variants", type=int, default=3, help="copies per train clip (1 clean)")
    parser.add_argument(
        "--narrow-copies", type=int, default=0, help="narrowband augmented copies per train clip"
    )
    parser.add_argument(
        "--stream-copies",
        type=int,
        default=0,
        help="augmented copies per train clip as the daemon's VAD cuts them from a stream",
    )
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--limit", type=int, default=0, help="only N clips (for quick tests)")
    parser.add_argument("--force", action="store_true", help="rebuild files already there")
    args = parser.parse_args(argv)

    train, dev = clip_lists(args.data, args.max_seconds, args.limit)
    noises = load_noises(args.data)
    print(f"train clips {len(train)}, dev clips {len(dev)}")
    jobs: dict[str, Callable[[], FeatureSet]] = {
        TRAIN: lambda: build(train, args.variants, noises, desc="train features"),
        DEV: lambda: build(dev, 1, noises, desc="dev features"),
    }
    # Each channel: augmented train copies (variants 1 on) and a clean dev copy through it.
    channels = (
        ("narrowband", args.narrow_copies, TRAIN_NARROW, DEV_NARROW, {"narrow": True}),
        ("streamed", args.stream_copies, TRAIN_STREAM, DEV_STREAM, {"streamed": True}),
    )
    for channel, copies, train_file, dev_file, flag in channels:
        if copies > 0:
            train_desc, dev_desc = f"{channel} train features", f"{channel} dev features"
            jobs[train_file] = partial(
                build, train, 1 + copies, noises, desc=train_desc, first_variant=1, **flag
            )
            jobs[dev_file] = partial(build, dev, 1, noises, desc=dev_desc, **flag)
    for name, make in jobs.items():
        path = args.cache / name
        if path.exists() and not args.force:
            print(f"{path} is there (--force rebuilds it)")
            continue
        make().save(path)


if __name__ == "__main__":
    main()
