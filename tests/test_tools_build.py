"""tools/ end to end on a tiny scale: features of real clips, a training epoch, export to
TFLite, and the runtime loading and running the result. (CI never trains a real model.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from shared_data import needs_shared_data  # noqa: E402

from assistant.bundle import load_bundle  # noqa: E402
from assistant.features import log_mel  # noqa: E402
from assistant.recognizer import Recognizer  # noqa: E402
from tools import prepare  # noqa: E402
from tools.corpus import DEFAULT_DATA, load_audio, read_manifest  # noqa: E402
from tools.featcache import FeatureSet  # noqa: E402
from tools.model import ModelConfig  # noqa: E402
from tools.package import write_bundle  # noqa: E402
from tools.train import build_model, train  # noqa: E402

GRAMMAR = Path(__file__).resolve().parent.parent / "models" / "eval" / "speech_commands.yaml"
TINY = ModelConfig(
    conv_channels=4, proj_dim=16, enc_units=8, enc_layers=1, embed_dim=8, dec_units=16
)


@needs_shared_data
def test_tiny_build(tmp_path):
    cache = tmp_path / "cache"
    prepare.main(["--cache", str(cache), "--limit", "24", "--variants", "2"])
    run = tmp_path / "run"
    checkpoint = train(
        [cache / "real_train.npz"],
        cache / "real_dev.npz",
        run,
        epochs=2,
        lr=1e-3,
        max_frames=4000,
        config=TINY,
        threads=2,
        average=2,
    )
    assert (run / "history.csv").read_text().count("\n") == 3
    assert checkpoint == run / "averaged.weights.h5"
    epochs = [build_model(TINY) for _ in range(3)]
    for model, path in zip(epochs, ("epoch1", "epoch2", "averaged"), strict=True):
        model.load_weights(run / f"{path}.weights.h5")
    first, second, mean = (m.get_weights() for m in epochs)
    assert not np.allclose(first[0], second[0])  # the epochs differ; the mean lies between
    for a, b, m in zip(first, second, mean, strict=True):
        np.testing.assert_allclose(m, (a + b) / 2, rtol=1e-5, atol=1e-6)
    # tools.average: the same mean from any checkpoints of the run, with its config beside it.
    from tools import average

    soup = tmp_path / "soup" / "mean.weights.h5"
    average.main(
        [str(run / "epoch1.weights.h5"), str(run / "epoch2.weights.h5"), "--out", str(soup)]
    )
    assert (soup.parent / "config.json").read_text() == (run / "config.json").read_text()
    made_of = json.loads((soup.parent / "provenance.json").read_text())["mean_of"]
    assert made_of == [str(run / "epoch1.weights.h5"), str(run / "epoch2.weights.h5")]
    souped = build_model(TINY)
    souped.load_weights(soup)
    for s, m in zip(souped.get_weights(), mean, strict=True):
        np.testing.assert_array_equal(s, m)
    with pytest.raises(SystemExit, match="no such checkpoint"):
        average.main([str(run / "epoch9.weights.h5"), "--out", str(soup)])
    (tmp_path / "bundle").mkdir()  # a bundle there already, exported again by tools.reexport
    (tmp_path / "bundle" / "manifest.json").write_text(json.dumps({"reexported_from": "tiny -1"}))
    bundle_dir = write_bundle(
        checkpoint, tmp_path / "bundle", GRAMMAR, "tiny", "0", quantise=True, buckets=(100, 300)
    )
    bundle = load_bundle(bundle_dir)
    assert "reexported_from" not in bundle.raw  # the new graphs are not the old ones
    assert [e.frames for e in bundle.encoders] == [100, 300]
    # One encoder and one step graph serve both buckets, sized to each by the runtime.
    assert {(e.file, e.decoder_step) for e in bundle.encoders} == {
        ("encoder.tflite", "decoder-step.tflite")
    }
    assert sorted(p.name for p in bundle_dir.glob("*.tflite")) == [
        "decoder-step.tflite",
        "encoder.tflite",
    ]
    assert sorted(bundle.digests) == ["decoder-step.tflite", "encoder.tflite"]
    recognizer = Recognizer.load(bundle_dir)
    clip = next(c for c in read_manifest() if c.split == "test" and c.label == "yes")
    result = recognizer.recognize(load_audio(clip.path))
    assert 0.0 <= result.confidence <= 1.0
    assert log_mel(np.zeros(1600, np.float32)).shape == (8, 40)

    # Format 3 (an encoder graph of fixed size per bucket) still loads, and answers the same.
    from tools.export import BEAM, EncoderExport, StepExport, convert, load_trained

    model = load_trained(checkpoint, TINY)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for entry in manifest["encoders"]:
        encoder = EncoderExport(model, entry["frames"])
        entry["file"] = f"encoder-{entry['frames']}.tflite"
        (bundle_dir / entry["file"]).write_bytes(convert(encoder, encoder.encode, True))
    (bundle_dir / "encoder.tflite").unlink()
    manifest["format"] = 3
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    fixed = Recognizer.load(bundle_dir).recognize(load_audio(clip.path))
    assert (fixed.text, fixed.intent) == (result.text, result.intent)
    assert fixed.confidence == pytest.approx(result.confidence, abs=1e-5)

    # Format 2 (a step graph of fixed size per bucket too) still loads, and answers the same.
    for entry in manifest["encoders"]:
        step = StepExport(model, entry["steps"], BEAM + 1)
        entry["decoder_step"] = f"decoder-step-{entry['frames']}.tflite"
        (bundle_dir / entry["decoder_step"]).write_bytes(convert(step, step.step, True))
    (bundle_dir / "decoder-step.tflite").unlink()
    manifest["format"] = 2
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    old = Recognizer.load(bundle_dir)
    assert [e.decoder_step for e in old.bundle.encoders] == [
        "decoder-step-100.tflite",
        "decoder-step-300.tflite",
    ]
    again = old.recognize(load_audio(clip.path))
    assert (again.text, again.intent) == (result.text, result.intent)
    assert again.confidence == pytest.approx(result.confidence, abs=1e-5)


GARAGE = Path(__file__).resolve().parent.parent / "models" / "examples" / "garage.yaml"
HOME = Path(__file__).resolve().parent.parent / "models" / "home"


def test_weights_from_a_bundle_carry_its_training_to_the_card(tmp_path):
    from tools.build import init_provenance

    init = tmp_path / "home" / "checkpoint.weights.h5"
    init.parent.mkdir()
    init.write_bytes(b"")
    assert init_provenance(init) is None  # bare weights: nothing known
    shipped = json.loads((HOME / "manifest.json").read_text())
    (init.parent / "manifest.json").write_text(json.dumps(shipped))
    assert init_provenance(init) == {
        "bundle": f"home {shipped['version']}",
        "training": shipped["training"],
    }
    note = {"made_by": "tools.average", "mean_of": ["run/epoch10.weights.h5"]}
    (init.parent / "provenance.json").write_text(json.dumps(note))
    assert init_provenance(init) == note  # a mean's own note says more


@needs_shared_data
def test_calibration_only_build_decodes_the_new_grammar_with_the_same_weights(tmp_path):
    from tools import build
    from tools.voices import EspeakVoice

    out, init = tmp_path / "garage", tmp_path / "init"
    init.mkdir()
    for name in ("checkpoint.weights.h5", "config.json"):
        (init / name).write_bytes((HOME / name).read_bytes())
    provenance = {"made_by": "tools.average", "mean_of": ["run/epoch10.weights.h5"]}
    (init / "provenance.json").write_text(json.dumps(provenance))
    # No held-out or calibration speech (TTS of the grammar): the quickest path, for CI.
    build.main(
        ["--grammar", str(GARAGE), "--out", str(out), "--work", str(tmp_path / "work")]
        + ["--epochs", "0", "--heldout-count", "0", "--init", str(init / "checkpoint.weights.h5")]
        + ["--beam", "6"]
    )
    assert Recognizer.load(out).model.batch_size == 7  # the beam's rows + the free decode's
    assert "beam 6" in (out / "CARD.md").read_text()
    assert (out / "checkpoint.weights.h5").read_bytes() == (
        HOME / "checkpoint.weights.h5"
    ).read_bytes()
    assert (out / "grammar.yaml").read_text() == GARAGE.read_text()
    assert not (tmp_path / "work" / "synth.npz").exists()  # nothing to train on was made
    manifest = load_bundle(out).raw
    assert manifest["training"]["epochs"] == 0
    assert manifest["training"]["init_provenance"] == provenance  # where the weights came from
    # Calibrated without the corpora's commands, which these weights know as sentences.
    assert manifest["calibration"]["fitted_on"].startswith("dev non-commands + 200 synthetic")
    assert manifest["calibration"]["dev_wrong_accepted"] is None  # it saw no commands
    assert "training" not in manifest["metrics"]["build_steps_minutes"]
    card = (out / "CARD.md").read_text()
    assert "last build command" in card and "training.png" not in card
    assert "the training run it resumed" not in card
    speech = EspeakVoice("en-us").speak("open the garage door")
    decoded = Recognizer.load(out).decode(speech)
    assert (decoded.text, decoded.intent, decoded.slots["action"]) == (
        "open the garage door",
        "GarageDoor",
        "open",
    )


def test_calibration_only_build_needs_weights(tmp_path):
    from tools import build

    with pytest.raises(SystemExit, match="--init weights as they are"):
        build.main(
            ["--grammar", str(GARAGE), "--out", str(tmp_path / "x"), "--epochs", "0"]
            + ["--init", str(tmp_path / "missing.weights.h5")]
        )


def test_a_resumed_build_reports_the_whole_training_run(tmp_path):
    from tools.build import training_run
    from tools.report import write_card

    history = tmp_path / "history.csv"
    history.write_text("epoch,lr,seconds\n1,0.001,300.0\n2,0.001,330.0\n3,0.0005,270.0\n")
    run = training_run(history)
    assert run == {"epochs": 3, "minutes": 15.0}
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    steps = {"training": 0.1, "export": 0.2}
    manifest = {"name": "x", "version": "1", "grammar": "grammar.yaml"}
    manifest["metrics"] = {"build_minutes": 3.6, "build_steps_minutes": steps, "training_run": run}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    write_card(bundle)
    card = (bundle / "CARD.md").read_text()
    assert "- last build command: 3.6 min" in card
    assert "- the training run it resumed: 3 epochs, 15.0 min" in card


@pytest.mark.parametrize(
    ("epochs", "knows", "corpora"), [(3, False, True), (0, False, False), (0, True, True)]
)
def test_the_corpora_calibrate_only_weights_that_know_the_grammar(tmp_path, epochs, knows, corpora):
    import argparse

    from tools.build import calibration_clips

    args = argparse.Namespace(epochs=epochs, init_knows_grammar=knows)
    (tmp_path / "calib").mkdir()
    clips = calibration_clips(args, tmp_path / "calib")
    assert clips.corpora is corpora
    assert clips.own == tmp_path / "calib"
    assert calibration_clips(args, tmp_path / "none").own is None


@needs_shared_data
def test_a_narrowband_build_trains_on_the_narrowband_copies(tmp_path):
    """The whole build with training, at a tiny size: synthetic speech, real features with
    their narrowband copies, one epoch from the shipped weights, export and calibration."""
    from tools import build

    out, cache = tmp_path / "out", tmp_path / "cache"
    build.main(
        ["--grammar", str(GARAGE), "--out", str(out), "--work", str(tmp_path / "work")]
        + ["--cache", str(cache), "--epochs", "1", "--limit", "30", "--synth-count", "10"]
        + ["--heldout-count", "0", "--narrowband"]
    )
    narrow = FeatureSet.load(cache / prepare.TRAIN_NARROW)
    assert len(narrow) == 30 and (cache / prepare.DEV_NARROW).exists()
    manifest = load_bundle(out).raw
    assert "narrowband" in manifest["training"]["real"]
    assert manifest["training"]["epochs"] == 1
    history = (tmp_path / "work" / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header + the one epoch
    speech = load_audio(next(c for c in read_manifest() if c.label == "yes").path)
    assert 0.0 <= Recognizer.load(out).recognize(speech).confidence <= 1.0


@needs_shared_data
def test_tiny_build_with_phone_pieces(tmp_path):
    """Pieces learned from the targets, a phone model carried over to them, trained, packaged
    with its merges, and decoded by the runtime with the bundle's own units."""
    from assistant.units import Units
    from tools import learn_units
    from tools.model import carry_over_to_units

    cache = tmp_path / "cache"
    prepare.main(["--cache", str(cache), "--limit", "24", "--variants", "1"])
    units_file = tmp_path / "units.json"
    learn_units.main(
        ["--sets", str(cache / "real_train.npz"), "--merges", "20", "--out", str(units_file)]
    )
    units = learn_units.load(units_file)
    assert len(units.tokens) == len(Units.phones().tokens) - 1 + 39 + 20  # no "|", 39 "|X"

    phone_model = build_model(TINY)
    piece_config = ModelConfig(**{**TINY.to_dict(), "vocab_size": len(units.tokens)})
    piece_model = build_model(piece_config)
    carry_over_to_units(phone_model, piece_model, units)
    phones = Units.phones()
    table, piece_table = phone_model.embed.get_weights()[0], piece_model.embed.get_weights()[0]
    merged = units.tokens[-1]  # the last merge: a piece of 2+ phones
    members = [phones.index[p] for p in merged.lstrip("|").split()]
    if merged.startswith("|"):
        members.insert(0, phones.boundary_id)
    np.testing.assert_allclose(piece_table[-1], table[members].mean(0), rtol=1e-6)
    encoders = (phone_model.enc_rnns[0].get_weights(), piece_model.enc_rnns[0].get_weights())
    for a, b in zip(*encoders, strict=True):
        np.testing.assert_array_equal(a, b)

    phone_run = tmp_path / "phones"
    train([cache / "real_train.npz"], None, phone_run, 1, 1e-3, 4000, TINY, threads=2)
    run = tmp_path / "pieces"
    checkpoint = train(
        [cache / "real_train.npz"],
        cache / "real_dev.npz",
        run,
        epochs=1,
        lr=1e-3,
        max_frames=4000,
        config=TINY,
        threads=2,
        init=phone_run / "ckpt.weights.h5",
        units=units,
    )
    assert json.loads((run / "config.json").read_text())["vocab_size"] == len(units.tokens)
    assert learn_units.load(run / "units.json") == units
    # A piece model fine-tuned again (as tools.build does from the shipped checkpoint) keeps
    # the units that lie beside it.
    again = train(
        [cache / "real_train.npz"], None, tmp_path / "again", 1, 1e-3, 4000, TINY, init=checkpoint
    )
    assert learn_units.load(again.parent / "units.json") == units
    bundle_dir = write_bundle(checkpoint, tmp_path / "bundle", GRAMMAR, "tiny", "0", buckets=(100,))
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["merges"] == [list(m) for m in units.merges]
    recognizer = Recognizer.load(bundle_dir)
    assert recognizer.bundle.units == units
    assert recognizer.grammar.graph.vocab_size == len(units.tokens)
    clip = next(c for c in read_manifest() if c.split == "test" and c.label == "yes")
    result = recognizer.recognize(load_audio(clip.path))
    assert 0.0 <= result.confidence <= 1.0
    free = recognizer.transcribe_free(load_audio(clip.path))
    assert "|" not in free.phones.replace(" | ", " ")  # words read back as phones


@needs_shared_data
def test_remeasure_keeps_the_bundle_and_updates_its_figures(tmp_path):
    from tools.remeasure import remeasure

    bundle = tmp_path / "home"
    shutil.copytree(HOME, bundle)
    graphs = {p.name: p.read_bytes() for p in bundle.glob("*.tflite")}
    before = json.loads((bundle / "manifest.json").read_text())
    metrics = remeasure(
        bundle, tmp_path / "work", DEFAULT_DATA, True, "a change to the runtime", limit=3
    )
    assert {p.name: p.read_bytes() for p in bundle.glob("*.tflite")} == graphs
    after = load_bundle(bundle).raw
    assert after["calibration"] == before["calibration"]
    assert after["version"] == before["version"]
    assert metrics["test_int8"]["speech_commands"]["clips"] == 3  # measured now, not copied
    assert metrics["test_float"]["fsdd"]["clips"] == 3
    assert "heldout" not in metrics  # no held-out voices in --work: the old figures go too
    assert metrics["build_minutes"] == before["metrics"]["build_minutes"]
    assert metrics["remeasured"]["why"] == "a change to the runtime"
    card = (bundle / "CARD.md").read_text()
    assert "Measured again on" in card and "a change to the runtime" in card
