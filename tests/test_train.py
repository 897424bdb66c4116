"""tools.train's model options: a wider encoder and dropout from the command line, and a
resume that keeps the shape and dropout it started with."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from shared_data import needs_shared_data  # noqa: E402

from tools import prepare  # noqa: E402
from tools import train as train_tool  # noqa: E402
from tools.featcache import FeatureSet  # noqa: E402
from tools.model import ModelConfig  # noqa: E402

pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    prepare.main(["--cache", str(cache), "--limit", "6", "--variants", "1"])
    return cache


def run_cli(cache, out, *options):
    train_tool.main(
        ["--sets", str(cache / prepare.TRAIN), "--out", str(out), "--epochs", "1"]
        + ["--max-frames", "4000", *options]
    )


def test_the_encoder_width_comes_from_the_command_line(cache, tmp_path):
    run = tmp_path / "run"
    run_cli(cache, run, "--enc-units", "24", "--dec-units", "32")
    config = json.loads((run / "config.json").read_text())
    assert (config["enc_units"], config["dec_units"]) == (24, 32)
    assert (run / "ckpt.weights.h5").exists()


def test_a_resume_with_another_shape_is_refused(cache, tmp_path):
    """Loading weights of one width into another would fail deep inside Keras; the run says
    which shape it holds instead, and its checkpoint is left as it was."""
    run = tmp_path / "run"
    run_cli(cache, run, "--enc-units", "24", "--dec-units", "32")
    before = (run / "ckpt.weights.h5").read_bytes()
    with pytest.raises(SystemExit, match="another model shape"):
        run_cli(cache, run, "--epochs", "2", "--enc-units", "16", "--dec-units", "32")
    assert (run / "ckpt.weights.h5").read_bytes() == before


def test_dropout_comes_from_the_command_line_and_a_resume_keeps_it(cache, tmp_path):
    """--dropout is saved with the run; resuming with another rate is refused, as for a
    shape, so one run never mixes two recipes."""
    run = tmp_path / "run"
    run_cli(cache, run, "--enc-units", "16", "--dec-units", "32", "--dropout", "0.2")
    assert json.loads((run / "config.json").read_text())["dropout"] == 0.2
    with pytest.raises(SystemExit, match="another model shape or dropout"):
        run_cli(cache, run, "--epochs", "2", "--enc-units", "16", "--dec-units", "32")


@pytest.mark.parametrize("rate", ["1", "-0.1"])
def test_a_dropout_rate_outside_zero_to_one_is_a_usage_error(cache, tmp_path, capsys, rate):
    with pytest.raises(SystemExit):
        run_cli(cache, tmp_path / "run", "--dropout", rate)
    assert "--dropout must be at least 0 and below 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_bucket_padding_pads_batches_as_the_runtime_pads_utterances(cache):
    """--bucket-padding 1: every batch is as long as the runtime's bucket that holds its
    longest utterance (3 s, or 8 s beyond that); 0: 0-0.6 s past the longest, as before."""
    import numpy as np

    from tools.featcache import FeatureSet

    data = FeatureSet.load(cache / prepare.TRAIN)
    lengths = data.lengths()
    short = np.flatnonzero(lengths <= 300)[:3]
    long = np.flatnonzero(lengths > 300)[:1]
    rng = np.random.default_rng(0)
    assert train_tool.collate(data, short, rng, bucket_padding=1.0)[0].shape[1] == 300
    if len(long):
        assert train_tool.collate(data, long, rng, bucket_padding=1.0)[0].shape[1] == 800
    for _ in range(5):
        padded = train_tool.collate(data, short, rng)[0].shape[1]
        assert lengths[short].max() <= padded <= lengths[short].max() + 63
    frames = train_tool.collate(data, short, rng, bucket_padding=1.0)[1]
    np.testing.assert_array_equal(frames, lengths[short])  # the real lengths, for the masks


@pytest.mark.parametrize("share", ["1.5", "-0.1"])
def test_a_bucket_padding_share_outside_zero_to_one_is_a_usage_error(
    cache, tmp_path, capsys, share
):
    with pytest.raises(SystemExit):
        run_cli(cache, tmp_path / "run", "--bucket-padding", share)
    assert "--bucket-padding must be between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


SMALL = ("--enc-units", "16", "--dec-units", "32", "--threads", "1")


def test_a_resumed_run_goes_on_as_if_it_had_never_stopped(cache, tmp_path):
    """Two epochs in one go and one epoch plus a resume end at the same weights: the resume
    restores Adam's step count and moments, and draws the second epoch's own shuffle and
    augmentation, instead of restarting the optimizer and replaying epoch 1's draws."""
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    run_cli(cache, straight, "--epochs", "2", *SMALL)
    run_cli(cache, broken, "--epochs", "1", *SMALL)
    assert (broken / "optimizer.npz").exists()
    run_cli(cache, broken, "--epochs", "2", *SMALL)

    model = train_tool.build_model(ModelConfig(enc_units=16, dec_units=32))
    weights = []
    for run in (straight, broken):
        model.load_weights(run / "ckpt.weights.h5")
        weights.append([w.copy() for w in model.get_weights()])
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with np.load(broken / "optimizer.npz") as saved:
        steps = next(saved[name] for name in saved.files if name.endswith("iteration"))
    lengths = FeatureSet.load(cache / prepare.TRAIN).lengths()
    epoch_batches = [
        train_tool.make_batches(lengths, 4000, np.random.default_rng([0, epoch]))
        for epoch in (0, 1)
    ]  # each epoch's own draw, as train() makes it
    assert steps == sum(len(batches) for batches in epoch_batches)


def test_a_run_saved_before_optimizer_state_still_resumes(cache, tmp_path, capsys):
    """A checkpoint from before optimizer.npz existed resumes, and says Adam starts afresh."""
    run = tmp_path / "run"
    run_cli(cache, run, "--epochs", "1", *SMALL)
    (run / "optimizer.npz").unlink()
    run_cli(cache, run, "--epochs", "2", *SMALL)
    assert "resuming after epoch 1 (no optimizer state saved with it" in capsys.readouterr().out
    assert json.loads((run / "state.json").read_text()) == {"epoch": 2}


def test_an_edit_to_the_source_during_a_run_does_not_reach_it(cache, tmp_path, monkeypatch):
    """Autograph reads a step's source from disk when it first traces the step. The
    evaluation is traced before the first epoch, so lines added to tools/train.py while a
    run trains (here: at its first training batch) do not crash it at its first dev
    evaluation, as they did one run here. The run is a copy of the module, edited on disk."""
    copy = tmp_path / "train_copy.py"
    shutil.copyfile(train_tool.__file__, copy)
    spec = importlib.util.spec_from_file_location("train_copy", copy)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_copy", module)
    spec.loader.exec_module(module)
    collate, edited = module.collate, []

    def collate_then_edit(data, idx, rng, *rest):
        if rng is not None and not edited:  # the first training batch, not the evaluation
            copy.write_text("# a line added while the run trains\n" * 12 + copy.read_text())
            edited.append(True)
        return collate(data, idx, rng, *rest)

    monkeypatch.setattr(module, "collate", collate_then_edit)
    out, sets = tmp_path / "run", str(cache / prepare.TRAIN)
    module.main(
        ["--sets", sets, "--dev", sets, "--out", str(out), "--epochs", "1"]
        + ["--max-frames", "4000", *SMALL]
    )
    assert edited
    assert "dev_att" in (out / "history.csv").read_text()
