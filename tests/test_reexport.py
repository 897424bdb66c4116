"""tools.reexport writes a bundle's checkpoint out again with the current export, keeping
everything else; tools.compare_decodes shows whether its answers stayed the same."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("tensorflow")

from shared_data import needs_shared_data  # noqa: E402

from assistant.bundle import BundleError, load_bundle  # noqa: E402
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer  # noqa: E402
from tools import reexport  # noqa: E402
from tools.compare_decodes import compare  # noqa: E402
from tools.corpus import load_audio, read_manifest, train_dev_test  # noqa: E402


@needs_shared_data
def test_the_shipped_bundle_exported_again_answers_as_it_did(tmp_path):
    out = reexport.reexport(DEFAULT_MODEL_DIR, tmp_path / "again", "test")
    shipped, again = (
        json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text()),
        json.loads((out / "manifest.json").read_text()),
    )
    assert again["version"] == "test"
    assert again["reexported_from"] == f"home {shipped['version']}"
    for kept in ("calibration", "metrics", "tokens", "encoders", "beam", "training"):
        assert again[kept] == shipped[kept], kept
    assert (out / "grammar.yaml").read_bytes() == (DEFAULT_MODEL_DIR / "grammar.yaml").read_bytes()
    assert "tools.reexport" in (out / "CARD.md").read_text()
    dev = train_dev_test(read_manifest())[1]
    clips = [load_audio(c.path) for c in dev if c.corpus == "speech_commands_v2_test"][:8]
    counts = compare(Recognizer.load(DEFAULT_MODEL_DIR), Recognizer.load(out), clips, "dev")
    assert counts["same_text"] == counts["same_answer"] == len(clips)
    assert counts["largest_confidence_gap"] < 0.01


def test_reexport_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(SystemExit, match="new folder"):
        reexport.reexport(DEFAULT_MODEL_DIR, DEFAULT_MODEL_DIR, "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit, match="exists already"):
        reexport.reexport(DEFAULT_MODEL_DIR, tmp_path / "taken", "x")
    bare = tmp_path / "bare"
    shutil.copytree(DEFAULT_MODEL_DIR, bare, ignore=shutil.ignore_patterns("*.h5", "*.png"))
    with pytest.raises(BundleError, match="no checkpoint"):
        reexport.reexport(bare, tmp_path / "out", "x")
    with pytest.raises(SystemExit, match="no checkpoint"):
        reexport.main([str(bare), "--out", str(tmp_path / "out"), "--version", "x"])
    assert not (tmp_path / "out").exists()
    assert load_bundle(bare).version  # the bundle it was asked to export is untouched
