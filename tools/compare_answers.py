"""Compare two runs' answers clip by clip: the same bundle on two machines (an x86 host and
an arm64 userland, tools/emulated_pi.sh), two runtimes or two Python versions. Int8 kernels
may round differently from one CPU to another, and the confidence bar was fitted on one.

    python -m tools.evaluate --model models/home --answers x86.jsonl
    python -m tools.compare_answers x86.jsonl arm64.jsonl

Per set: clips, the same text, the same answer (intent and slots), the same decision
(accepted or rejected), and the largest and median gap in confidence; then the clips whose
answers differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


class AnswersError(ValueError):
    """The two files do not hold answers to the same clips."""


def read_answers(path: Path) -> dict[tuple[str, int], dict]:
    answers = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            answers[(str(record["set"]), int(record["clip"]))] = record
        except (ValueError, KeyError, TypeError) as exc:
            raise AnswersError(f"{path}:{number}: not an answer line ({exc})") from exc
    return answers


def compare(first: dict[tuple[str, int], dict], second: dict[tuple[str, int], dict]) -> dict:
    """Per set: counts of agreement and the confidence gaps; "differ" lists the clips whose
    text, answer or decision differ."""
    if first.keys() != second.keys():
        only = sorted(first.keys() ^ second.keys())[:5]
        raise AnswersError(f"the files answer different clips (e.g. {only})")
    by_set: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for key in sorted(first):
        by_set[key[0]].append((first[key], second[key]))
    report = {}
    for name, pairs in by_set.items():
        gaps = np.array([abs(a["confidence"] - b["confidence"]) for a, b in pairs])
        differ = [
            {"clip": a["clip"], "first": _brief(a), "second": _brief(b)}
            for a, b in pairs
            if a["text"] != b["text"] or _answer(a) != _answer(b)  # a decision is in the answer
        ]
        report[name] = {
            "clips": len(pairs),
            "same_text": sum(a["text"] == b["text"] for a, b in pairs),
            "same_answer": sum(_answer(a) == _answer(b) for a, b in pairs),
            "same_decision": sum((a["intent"] is None) == (b["intent"] is None) for a, b in pairs),
            "confidence_gap_max": float(gaps.max()),
            "confidence_gap_median": float(np.median(gaps)),
            "differ": differ,
        }
    return report


def _answer(record: dict) -> tuple:
    return record["intent"], json.dumps(record["slots"], sort_keys=True)


def _brief(record: dict) -> str:
    verdict = record["intent"] or "rejected"
    return f"{record['text']!r} -> {verdict} ({record['confidence']:.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("first", type=Path, help="answers of one run (tools.evaluate --answers)")
    parser.add_argument("second", type=Path, help="answers of the other run")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    try:
        report = compare(read_answers(args.first), read_answers(args.second))
    except (AnswersError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, row in report.items():
        counts = {k: v for k, v in row.items() if k != "differ"}
        print(name, json.dumps({k: round(v, 4) for k, v in counts.items()}))
        for clip in row["differ"]:
            print(f"  clip {clip['clip']}: {clip['first']}  |  {clip['second']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
