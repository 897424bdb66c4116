"""The model bundle: a folder with manifest.json, TFLite graphs, the grammar and CARD.md.

Every way a bundle can be wrong (missing or corrupt file, manifest from another version,
graphs whose shapes disagree with the manifest) becomes one BundleError with a message a
user can act on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .features import FeatureParams
from .units import Units, UnitsError

# 2: one decoder-step graph per encoder bucket, phone units.
# 3: one decoder-step graph may serve every bucket (its encoder steps are resized to each),
#    and the output units may be phone pieces ("merges").
# 4: one encoder graph may serve every bucket too (exported with open frames, sized to each
#    bucket's). Formats 2 and 3 still load.
MANIFEST_FORMAT = 4
READABLE_FORMATS = (2, 3, 4)


class BundleError(Exception):
    """A model bundle that cannot be used, with the reason."""


@dataclass(frozen=True)
class EncoderSpec:
    file: str  # since format 4 possibly one open-length graph for every bucket
    frames: int  # input feature frames (10 ms each)
    steps: int  # encoder output steps
    decoder_step: str  # the step graph that attends over these steps (or over any number)


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    version: str
    features: FeatureParams
    units: Units  # output units: phones, or phone pieces (assistant/units.py)
    encoders: tuple[EncoderSpec, ...]  # shortest first
    beam: int
    enc_dim: int
    state_size: int
    grammar: Path
    lexicon: Path | None  # pronunciations of the grammar's words, if shipped
    calibration: dict[str, Any]
    raw: dict[str, Any]
    # SHA-256 of each graph file as built (since session 28; older bundles have none).
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


def _require(manifest: dict, key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in manifest:
        raise BundleError(f"{where}: manifest has no '{key}'")
    value = manifest[key]
    if not isinstance(value, kind):
        raise BundleError(f"{where}: manifest '{key}' has the wrong type ({type(value).__name__})")
    return value


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, as the manifest's "sha256" lists it for each graph. tflite-runtime
    2.14 (32-bit Pi OS) does not verify a graph before reading it: a truncated one crashes the
    process (SIGSEGV), so the runtime checks each graph against its digest first."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(manifest: dict, where: Path) -> dict[str, str]:
    digests = manifest.get("sha256", {})
    if not isinstance(digests, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in digests.items()
    ):
        raise BundleError(f"{where}: manifest 'sha256' must map file names to digests")
    return digests


def load_bundle(path: Path) -> Bundle:
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise BundleError(f"{path}: no such model folder")
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a model bundle (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: must hold a JSON object")
    fmt = manifest.get("format")
    if fmt not in READABLE_FORMATS:
        raise BundleError(
            f"{manifest_path}: bundle format {fmt!r}, this version reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))} (rebuild it with python -m tools.build)"
        )
    tokens = _require(manifest, "tokens", list, manifest_path)
    merges = manifest.get("merges")
    try:
        if merges is not None and not isinstance(merges, list):
            raise UnitsError("'merges' must be a list of pairs")
        units = Units.from_manifest(tokens, merges)
    except (UnitsError, ValueError, TypeError) as exc:
        raise BundleError(f"{manifest_path}: bad output units: {exc}") from exc
    features = FeatureParams.from_dict(_require(manifest, "features", dict, manifest_path))
    if features.sample_rate != _require(manifest, "sample_rate", int, manifest_path):
        raise BundleError(f"{manifest_path}: sample_rate and features.sample_rate disagree")
    encoders = []
    for entry in _require(manifest, "encoders", list, manifest_path):
        try:
            encoders.append(
                EncoderSpec(
                    str(entry["file"]),
                    int(entry["frames"]),
                    int(entry["steps"]),
                    str(entry["decoder_step"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{manifest_path}: bad encoder entry {entry!r}") from exc
    if not encoders:
        raise BundleError(f"{manifest_path}: no encoders listed")
    beam = _require(manifest, "beam", int, manifest_path)
    grammar = path / str(_require(manifest, "grammar", str, manifest_path))
    for file in [f for e in encoders for f in (e.file, e.decoder_step)]:
        if not (path / file).is_file():
            raise BundleError(f"{path}: model file '{file}' is missing")
    if not grammar.is_file():
        raise BundleError(f"{path}: grammar file '{grammar.name}' is missing")
    return Bundle(
        path=path,
        name=str(manifest.get("name", path.name)),
        version=str(manifest.get("version", "0")),
        features=features,
        units=units,
        encoders=tuple(sorted(encoders, key=lambda e: e.frames)),
        beam=beam,
        enc_dim=int(_require(manifest, "enc_dim", int, manifest_path)),
        state_size=int(_require(manifest, "state_size", int, manifest_path)),
        grammar=grammar,
        lexicon=path / manifest["lexicon"] if manifest.get("lexicon") else None,
        calibration=dict(manifest.get("calibration", {})),
        raw=manifest,
        digests=_digests(manifest, manifest_path),
    )
