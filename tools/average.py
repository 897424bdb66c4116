"""Average checkpoints of one training run into one set of weights:

    python -m tools.average --out W.weights.h5 run/epoch10.weights.h5 run/epoch18.weights.h5

Points far apart along one learning-rate cycle lie in the same basin, and their mean sits in
a flatter part of it than either (stochastic weight averaging): the mean of epochs 10 and 18
of models/home version 2's run had a lower dev loss than either (tools/NOTES.md, "Known gaps
in full").
Checkpoints of *different* runs do not average well. Build a bundle from the mean with
`tools.build --init W --epochs 0 --init-knows-grammar`. The run's config.json is copied
beside the output, as tools.build --init expects, and provenance.json says what was
averaged (tools.build records it in the card).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tools.learn_units import UNITS_FILE
from tools.model import ModelConfig
from tools.train import build_model, mean_of_checkpoints

PROVENANCE = "provenance.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", type=Path, nargs="+", help="*.weights.h5 of one run")
    parser.add_argument("--out", type=Path, required=True, help="where the mean goes")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.checkpoints if not p.is_file()]
    if missing:
        raise SystemExit(f"no such checkpoint: {', '.join(missing)}")
    configs = {c for c in (p.parent / "config.json" for p in args.checkpoints) if c.exists()}
    if len({c.read_text() for c in configs}) > 1:
        raise SystemExit("the checkpoints come from models of different shapes (config.json)")
    source = next(iter(configs), None)
    config = ModelConfig(**json.loads(source.read_text())) if source else ModelConfig()
    mean_of_checkpoints(build_model(config), list(args.checkpoints), args.out)
    out_config = args.out.parent / "config.json"
    if source is not None and source.resolve() != out_config.resolve():
        shutil.copyfile(source, out_config)
        units = source.parent / UNITS_FILE  # phone pieces, if the run learned them
        if units.exists():
            shutil.copyfile(units, args.out.parent / UNITS_FILE)
    provenance = {"made_by": "tools.average", "mean_of": [str(p) for p in args.checkpoints]}
    (args.out.parent / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}")


if __name__ == "__main__":
    main()
