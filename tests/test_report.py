"""The model card: what a bundle's measurements look like to its user."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")  # the card's plots: a training extra

from assistant.recognizer import DEFAULT_MODEL_DIR
from tools.report import write_card


def _card_with(tmp_path: Path, extra_metrics: dict) -> str:
    shutil.copyfile(DEFAULT_MODEL_DIR / "manifest.json", tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["metrics"].update(extra_metrics)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    write_card(tmp_path)
    return (tmp_path / "CARD.md").read_text()


def test_the_card_shows_the_8_khz_column_when_it_was_measured(tmp_path: Path) -> None:
    narrow = {
        "speech_commands": {"clips": 823, "accuracy": 0.9012},
        "fsdd": {"clips": 1000, "accuracy": 0.7},
        "an4": {"clips": 130, "accuracy": 0.4, "wer": 0.2345},
        "false_accepts": {"clips": 616, "rate": 0.0016},
    }
    card = _card_with(
        tmp_path, {"test_narrow_int8": narrow, "test_trimmed_int8": {}, "test_stream_int8": {}}
    )
    header = next(line for line in card.splitlines() if line.startswith("| set |"))
    assert header == "| set | clips | int8 | float | int8, 8 kHz mic | measure |"
    sc_row = next(line for line in card.splitlines() if line.startswith("| speech_commands |"))
    assert "90.1%" in sc_row and sc_row.count("|") == header.count("|")
    assert "23.4%" in next(line for line in card.splitlines() if "word error rate" in line)


def test_without_the_channel_measures_the_table_has_no_empty_column(tmp_path: Path) -> None:
    card = _card_with(
        tmp_path, {"test_narrow_int8": {}, "test_trimmed_int8": {}, "test_stream_int8": {}}
    )
    header = next(line for line in card.splitlines() if line.startswith("| set |"))
    assert header == "| set | clips | int8 | float | measure |"


def test_the_card_shows_each_measured_channel_in_its_own_column(tmp_path: Path) -> None:
    narrow = {"speech_commands": {"clips": 823, "accuracy": 0.9012}}
    trimmed = {"speech_commands": {"clips": 823, "accuracy": 0.8512}}
    card = _card_with(
        tmp_path,
        {"test_narrow_int8": narrow, "test_trimmed_int8": trimmed, "test_stream_int8": {}},
    )
    header = next(line for line in card.splitlines() if line.startswith("| set |"))
    assert header == "| set | clips | int8 | float | int8, 8 kHz mic | int8, trimmed | measure |"
    sc_row = next(line for line in card.splitlines() if line.startswith("| speech_commands |"))
    assert sc_row.index("90.1%") < sc_row.index("85.1%")
    assert sc_row.count("|") == header.count("|")


def test_the_card_shows_what_the_daemon_hears_beside_the_clips_as_recorded(tmp_path: Path) -> None:
    stream = {"speech_commands": {"clips": 823, "accuracy": 0.8912}, "an4": {"wer": 0.2101}}
    card = _card_with(
        tmp_path, {"test_narrow_int8": {}, "test_trimmed_int8": {}, "test_stream_int8": stream}
    )
    header = next(line for line in card.splitlines() if line.startswith("| set |"))
    assert header == "| set | clips | int8 | float | int8, as the daemon hears | measure |"
    sc_row = next(line for line in card.splitlines() if line.startswith("| speech_commands |"))
    assert "89.1%" in sc_row and sc_row.count("|") == header.count("|")
    assert "21.0%" in next(line for line in card.splitlines() if "word error rate" in line)


def test_the_card_shows_wrong_answers_accepted_beside_right_ones(tmp_path: Path) -> None:
    heldout = {
        "clean": {"clips": 200, "accuracy": 0.735, "wrong_accepted": 0.05, "text_exact": 0.775},
        "0 dB": {"clips": 200, "accuracy": 0.46, "text_exact": 0.51},  # measured before the column
    }
    card = _card_with(tmp_path, {"heldout": heldout}).splitlines()
    assert "| condition | accuracy (intent and slots) | accepted but wrong | exact text |" in card
    assert "| clean | 73.5% | 5.0% | 77.5% |" in card
    assert "| 0 dB | 46.0% | - | 51.0% |" in card


def test_the_confidence_section_says_how_many_wrong_commands_pass_the_bar(tmp_path: Path) -> None:
    shutil.copyfile(DEFAULT_MODEL_DIR / "manifest.json", tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["calibration"]["dev_wrong_accepted"] = 0.0412
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    write_card(tmp_path)
    assert "dev commands accepted but wrong 4.1%." in (tmp_path / "CARD.md").read_text()


def test_the_confidence_section_gives_the_second_listens_band(tmp_path: Path) -> None:
    shutil.copyfile(DEFAULT_MODEL_DIR / "manifest.json", tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["calibration"]["recheck"] = {
        "low": 0.5,
        "high": 0.85,
        "agreed": 0.8059,
        "disagreed": 0.3704,
        "factors": [0.95, 1.05],
        "dev_share": 0.0968,
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    write_card(tmp_path)
    card = (tmp_path / "CARD.md").read_text()
    assert "from 0.5 to under 0.85 are decoded again at speed x0.95 and x1.05" in card
    assert "kept at confidence 0.8059 when every rehearing" in card
    assert "9.7% of the calibration clips were heard again" in card


def test_the_card_says_how_many_wrong_answers_were_acted_on(tmp_path: Path) -> None:
    test = {
        "speech_commands": {
            "clips": 823,
            "accuracy": 0.934,
            "wrong_accepted": 0.047,
            "heard": 0.95,
            "must_reject_accepted": 0.045,
            "ms_median": 8.0,
            "ms_p95": 10.2,
        },
        "fsdd": {"clips": 1000, "accuracy": 0.77, "wrong_accepted": 0.126, "heard": 0.877},
        "false_accepts": {"clips": 616, "rate": 0.0016, "must_reject_accepted": 0.0016},
    }
    card = _card_with(tmp_path, {"test_int8": test}).splitlines()
    assert (
        "Accepted but wrong (int8): speech_commands 4.7% of commands, fsdd 12.6% of commands, "
        "speech_commands 4.5% of the clips it must reject." in card
    )
    assert (
        "Heard right before the confidence bar (int8; the best reading, accepted or not): "
        "speech_commands 95.0%, fsdd 87.7% of commands." in card
    )


def test_the_cards_timing_names_the_machine_it_was_taken_on(tmp_path: Path) -> None:
    test = {"speech_commands": {"clips": 823, "accuracy": 0.934, "ms_median": 9.5, "ms_p95": 10.9}}
    card = _card_with(tmp_path, {"test_int8": test, "machine": "AMD EPYC, 2 cores"})
    assert "one thread, ai-edge-litert, AMD EPYC, 2 cores): median 9.5 ms, p95 10.9 ms." in card
    # a build from before the machine was recorded
    older = _card_with(tmp_path, {"test_int8": test, "machine": None})
    assert "(int8, one thread, ai-edge-litert): median 9.5 ms" in older


def test_the_card_says_what_asking_when_unsure_buys(tmp_path: Path) -> None:
    row = {"right": 0.73, "wrong": 0.03, "asked": 0.0, "accuracy": 0.73}
    asked = {"right": 0.84, "wrong": 0.03, "asked": 0.145, "accuracy": 0.84}
    report = {  # the shape tools.asking.measure gives
        "model": "home-2.12",
        "replies": {
            "yes": {"yes": 36, "no": 0, "other": 1},
            "no": {"yes": 0, "no": 31, "other": 0},
        },
        "sets": {"held-out, clean": {"never": row, "from 0.2": asked}},
        "non_commands": {"clips": 270, "acted_on": 1, "asked from 0.2": 2},
    }
    card = _card_with(tmp_path, {"asking": report})
    assert "## Asking when unsure (`[confirm] from_confidence = 0.2`)" in card
    assert "36 of 37 yes, 31 of 31 no; no taken as yes: 0" in card
    assert "| held-out, clean | 73.0% | 84.0% | 3.0% / 3.0% | 14.5% |" in card
    assert "Dev non-commands that would set off a question: 2 of 270." in card
    assert "Asking when unsure" not in _card_with(tmp_path, {"asking": None})
