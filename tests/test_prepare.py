"""tools.prepare builds the four feature files of the real recordings and keeps those that
are already there."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_data import needs_shared_data

from tools import prepare
from tools.featcache import FeatureSet

pytestmark = needs_shared_data


def test_prepare_writes_train_dev_and_narrowband_sets_then_keeps_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--cache", str(tmp_path), "--limit", "10", "--variants", "2", "--narrow-copies", "1"]
    prepare.main(args)
    names = (prepare.TRAIN, prepare.DEV, prepare.TRAIN_NARROW, prepare.DEV_NARROW)
    sets = {name: FeatureSet.load(tmp_path / name) for name in names}
    assert len(sets[prepare.TRAIN]) == 20  # clean + 1 augmented copy of 10 clips
    assert len(sets[prepare.TRAIN_NARROW]) == 10  # one narrowband copy each
    assert len(sets[prepare.DEV]) == len(sets[prepare.DEV_NARROW]) == 2
    assert sets[prepare.TRAIN_NARROW].texts == sets[prepare.TRAIN].texts[:10]

    before = {name: (tmp_path / name).stat().st_mtime_ns for name in names}
    capsys.readouterr()
    prepare.main(args)
    assert "--force rebuilds it" in capsys.readouterr().out
    assert before == {name: (tmp_path / name).stat().st_mtime_ns for name in names}


def test_without_narrow_copies_only_the_wideband_sets_are_built(tmp_path: Path) -> None:
    prepare.main(["--cache", str(tmp_path), "--limit", "5", "--variants", "1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [prepare.DEV, prepare.TRAIN]
