"""Export a bundle's own checkpoint again with the current tools/export.py, into a copy of the
bundle that keeps its calibration, metrics, grammar and card: for a change to how the graphs
are built that should leave every answer as it was (versions 2.6-2.9 were such changes).
Whether it did is for the caller to show, e.g. with tools.compare_decodes.

    python -m tools.reexport models/home --out /tmp/home-new --version 2.9
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from assistant.bundle import MANIFEST_FORMAT, BundleError, load_bundle
from tools.export import export
from tools.model import ModelConfig
from tools.package import update_manifest
from tools.report import write_card


def reexport(bundle_dir: Path, out: Path, version: str) -> Path:
    bundle = load_bundle(bundle_dir)  # a bundle that does not load is not exported again
    checkpoint = bundle_dir / "checkpoint.weights.h5"
    if not checkpoint.exists():
        raise BundleError(f"{bundle_dir}: no checkpoint.weights.h5 to export again")
    if out.resolve() == bundle_dir.resolve():
        raise SystemExit("--out must be a new folder: the bundle it is made from stays as it is")
    if out.exists():
        raise SystemExit(f"{out} exists already")
    shutil.copytree(bundle_dir, out, ignore=shutil.ignore_patterns("*.tflite"))
    config = ModelConfig(**json.loads((bundle_dir / "config.json").read_text()))
    quantise = "int8" in json.loads((bundle_dir / "manifest.json").read_text())["quantisation"]
    graphs = export(
        checkpoint,
        config,
        out,
        quantise=quantise,
        buckets=tuple(spec.frames for spec in bundle.encoders),
        beam=bundle.beam,
    )
    update_manifest(
        out,
        {
            "format": MANIFEST_FORMAT,
            "version": version,
            **graphs,
            "reexported_from": f"{bundle_dir.name} {bundle.version}",
        },
    )
    load_bundle(out)
    write_card(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--version", required=True, help="the new bundle's version")
    args = parser.parse_args(argv)
    try:
        out = reexport(args.bundle, args.out, args.version)
    except BundleError as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
