"""Measure a bundle again with today's runtime: the same weights, graphs and calibration, its
figures and card brought up to date after a change to the runtime that moves its answers
(session 29's lead-in rule, assistant/edges.py). The float figures come from a float export
of its checkpoint, calibrated as the bundle is, as tools.build makes one.

    python -m tools.remeasure models/home --work .cache/build-home2 --eval-corpora \
        --why "the lead-in rule of session 29"

--work holds the held-out voices (`heldout/`, as tools.build made them) and gets the float
export (`float/`). Figures not measured again (the build's times, the training run) stay.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from assistant.bundle import BundleError, load_bundle
from tools.build import MEASURED, measure
from tools.corpus import DEFAULT_DATA
from tools.package import update_manifest, write_bundle
from tools.report import write_card


def remeasure(
    bundle_dir: Path, work: Path, data: Path, eval_corpora: bool, why: str, limit: int = 0
) -> dict:
    bundle = load_bundle(bundle_dir)  # a bundle that does not load is not measured
    checkpoint = bundle_dir / "checkpoint.weights.h5"
    if not checkpoint.exists():
        raise BundleError(f"{bundle_dir}: no checkpoint.weights.h5 for its float twin")
    manifest = bundle.raw
    float_dir = work / "float"
    write_bundle(
        checkpoint,
        float_dir,
        bundle_dir / manifest["grammar"],
        bundle.name,
        bundle.version,
        quantise=False,
        buckets=tuple(spec.frames for spec in bundle.encoders),
        training=manifest.get("training"),
        beam=bundle.beam,
    )
    update_manifest(float_dir, {"calibration": manifest["calibration"]})
    # The build's old figures of what measure() gives go, measured again or not.
    kept = {k: v for k, v in manifest.get("metrics", {}).items() if k not in MEASURED}
    metrics = {
        **kept,
        **measure(bundle_dir, float_dir, data, work / "heldout", eval_corpora, limit),
        "remeasured": {"date": datetime.date.today().isoformat(), "why": why},
    }
    update_manifest(bundle_dir, {"metrics": metrics})
    write_card(bundle_dir)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--eval-corpora", action="store_true", help="also the real test split")
    parser.add_argument("--why", required=True, help="what changed, for the card")
    parser.add_argument("--limit", type=int, default=0, help="tiny runs for tests")
    args = parser.parse_args(argv)
    remeasure(args.bundle, args.work, args.data, args.eval_corpora, args.why, args.limit)
    print(f"{args.bundle}: measured again; see its CARD.md")


if __name__ == "__main__":
    main()
