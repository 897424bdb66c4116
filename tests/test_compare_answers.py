"""Answers written clip by clip (tools.evaluate --answers) and two runs compared
(tools.compare_answers), on real recordings with the shipped bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import needs_shared_data

from assistant.recognizer import DEFAULT_MODEL_DIR
from tools.compare_answers import AnswersError, compare, main, read_answers
from tools.evaluate import main as evaluate_main

pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def answers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("answers") / "answers.jsonl"
    evaluate_main(
        ["--model", str(DEFAULT_MODEL_DIR), "--split", "dev", "--limit", "3"]
        + ["--answers", str(path)]
    )
    return path


def test_every_clip_evaluated_has_its_answer_in_the_file(answers_file: Path) -> None:
    lines = [json.loads(line) for line in answers_file.read_text().splitlines()]
    # Three clips of each set with dev clips (FSDD has no dev speaker), in order.
    assert [(a["set"], a["clip"]) for a in lines] == [
        (name, i) for name in ("speech_commands", "an4", "false_accepts") for i in range(3)
    ]
    for answer in lines:
        assert set(answer) == {"set", "clip", "text", "intent", "slots", "confidence"}
        assert 0.0 <= answer["confidence"] <= 1.0
        assert answer["intent"] is None or isinstance(answer["intent"], str)
    # What the recogniser heard: AN4's dev sentences are not empty.
    assert all(a["text"] for a in lines if a["set"] == "an4")


def test_a_run_against_itself_agrees_on_every_clip(answers_file: Path) -> None:
    answers = read_answers(answers_file)
    report = compare(answers, answers)
    for row in report.values():
        assert row["same_text"] == row["same_answer"] == row["same_decision"] == row["clips"]
        assert row["confidence_gap_max"] == 0.0
        assert row["differ"] == []


def test_a_clip_heard_otherwise_is_listed_with_both_answers(
    answers_file: Path, tmp_path: Path
) -> None:
    lines = [json.loads(line) for line in answers_file.read_text().splitlines()]
    changed = dict(lines[0], text="no", intent=None, slots={}, confidence=0.125)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(a) + "\n" for a in [changed, *lines[1:]]))
    report = compare(read_answers(answers_file), read_answers(other))
    row = report[lines[0]["set"]]
    assert row["same_text"] == row["clips"] - 1
    assert row["confidence_gap_max"] == pytest.approx(abs(lines[0]["confidence"] - 0.125))
    assert [d["clip"] for d in row["differ"]] == [0]
    assert "'no' -> rejected (0.125)" in row["differ"][0]["second"]
    out = tmp_path / "comparison.json"
    assert main([str(answers_file), str(other), "--out", str(out)]) == 0
    assert json.loads(out.read_text())[lines[0]["set"]]["differ"][0]["clip"] == 0


def test_files_that_answer_different_clips_are_refused(answers_file: Path, tmp_path: Path) -> None:
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(answers_file.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(AnswersError, match="different clips"):
        compare(read_answers(answers_file), read_answers(fewer))
    assert main([str(answers_file), str(fewer)]) == 2


def test_a_line_that_is_not_an_answer_names_its_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"set": "an4", "clip": 0}\n{not json\n')
    with pytest.raises(AnswersError, match=r"broken\.jsonl:2"):
        read_answers(broken)
