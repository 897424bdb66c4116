"""Write a model bundle folder (manifest.json, TFLite graphs, grammar) from a checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from assistant.bundle import MANIFEST_FORMAT
from assistant.features import FeatureParams
from assistant.grammar import load_grammar
from assistant.lexicon import lexicon_for
from tools import learn_units
from tools.export import BEAM, DEFAULT_BUCKETS, export
from tools.model import ModelConfig


def write_bundle(
    checkpoint: Path,
    out: Path,
    grammar: Path,
    name: str,
    version: str,
    quantise: bool = True,
    buckets: tuple[int, ...] = DEFAULT_BUCKETS,
    training: dict[str, Any] | None = None,
    beam: int = BEAM,
) -> Path:
    config_path = checkpoint.parent / "config.json"
    config = (
        ModelConfig(**json.loads(config_path.read_text()))
        if config_path.exists()
        else ModelConfig()
    )
    out.mkdir(parents=True, exist_ok=True)
    units = learn_units.units_beside(checkpoint)
    graphs = export(checkpoint, config, out, quantise=quantise, buckets=buckets, beam=beam)
    listed = {f for e in graphs["encoders"] for f in (e["file"], e["decoder_step"])}
    for stale in out.glob("*.tflite"):  # an earlier export's graphs (e.g. per-bucket steps)
        if stale.name not in listed:
            stale.unlink()
    if grammar.resolve() != (out / "grammar.yaml").resolve():
        shutil.copyfile(grammar, out / "grammar.yaml")
    write_lexicon(out)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "sample_rate": FeatureParams().sample_rate,
        "features": FeatureParams().to_dict(),
        "tokens": list(units.tokens),
        **({"merges": [list(m) for m in units.merges]} if units.merges else {}),
        "model": config.to_dict(),
        **graphs,
        "grammar": "grammar.yaml",
        "lexicon": "lexicon.json",
        "training": training or {},
        "calibration": {},
        "metrics": {},
    }
    # A new manifest, not merged into one already there: a bundle built again in its own
    # folder must not keep fields of the graphs it replaces (reexported_from, merges).
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def write_lexicon(bundle: Path) -> None:
    """lexicon.json: the grammar's words and their phones, so the runtime need not load the
    whole CMU dictionary."""
    words = load_grammar(bundle / "grammar.yaml").vocabulary
    (bundle / "lexicon.json").write_text(json.dumps(lexicon_for(words), indent=0) + "\n")


def update_manifest(bundle: Path, fields: dict[str, Any]) -> dict[str, Any]:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest.update(fields)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
