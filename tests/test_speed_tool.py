"""tools.speed times real recognitions, each with the grammar's text cache emptied first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from shared_data import needs_shared_data

from assistant.recognizer import DEFAULT_MODEL_DIR
from tools import speed
from tools.corpus import DEFAULT_DATA, load_audio, read_manifest


@needs_shared_data
def test_speed_reports_every_stage_for_every_recognition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = [c for c in read_manifest(DEFAULT_DATA) if c.corpus == "an4" and c.split == "test"]
    clips = sorted(clips, key=lambda c: c.seconds)  # the shortest two: both fit the 3 s graphs
    labels = {}
    for i, clip in enumerate(clips[:2]):
        sf.write(tmp_path / f"{i}.wav", load_audio(clip.path), 16000)
        labels[f"{i}.wav"] = clip.text
    (tmp_path / "labels.json").write_text(json.dumps(labels))

    from assistant.grammar import Grammar

    emptied = []
    forget = Grammar.forget_texts
    monkeypatch.setattr(Grammar, "forget_texts", lambda self: (emptied.append(1), forget(self)))
    report = speed.measure(DEFAULT_MODEL_DIR, tmp_path, repeat=2)
    assert report["utterances"] == 4
    assert len(emptied) == 4  # before each recognition: every one is a first hearing
    for stage in ("features", "encoder", "decoder", "total"):
        assert 0 < report[stage]["median"] <= report[stage]["p95"]
    assert report["total"]["median"] >= report["decoder"]["median"]
    # the sums are taken per recognition, so they lie between their parts and the total
    aim, first = report["features_encoder_decoder"], report["first_hearing"]
    assert report["decoder"]["median"] < aim["median"] <= first["median"]
    assert first["p95"] <= report["total"]["p95"]
    assert report["longer_bucket"] == 0  # short clips: every recognition in the 3 s graphs
    assert report["total_in_shortest_bucket"] == report["total"]
    assert (
        report["features_encoder_decoder_in_shortest_bucket"] == report["features_encoder_decoder"]
    )
    assert report["runtime"] in ("ai-edge-litert", "tflite-runtime", "tensorflow")


@needs_shared_data
def test_speed_times_several_bundles_on_the_same_clips(tmp_path: Path) -> None:
    import shutil

    clip = next(c for c in read_manifest(DEFAULT_DATA) if c.corpus == "an4" and c.split == "test")
    clips = tmp_path / "clips"
    clips.mkdir()
    sf.write(clips / "0.wav", load_audio(clip.path), 16000)
    (clips / "labels.json").write_text(json.dumps({"0.wav": clip.text}))
    other = tmp_path / "copy"
    shutil.copytree(DEFAULT_MODEL_DIR, other)
    reports = speed.measure_many([DEFAULT_MODEL_DIR, other], clips, repeat=2)
    first, second = reports[str(DEFAULT_MODEL_DIR)], reports[str(other)]
    assert first["utterances"] == second["utterances"] == 2
    assert "ratio_to_first" not in first
    for stage in ("decoder", "features_encoder_decoder", "total"):
        ratio = second["ratio_to_first"][stage]["median"]
        assert ratio == pytest.approx(second[stage]["median"] / first[stage]["median"])
