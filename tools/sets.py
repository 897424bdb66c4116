"""Labelled sets for the benchmark: the built-in test splits and any folder of recordings.

Built-in (test split of ``../shared/data``, speakers never used for training):
- ``speech_commands``: the 10 keywords are intents (models/eval/speech_commands.yaml);
  ``_unknown_`` words and ``_silence_`` must be rejected (intent None) to count as right.
- ``fsdd``: intent ``Digit`` with slot ``digit`` = the label "0".."9" (models/eval/fsdd.yaml).
- ``an4``: scored on text (sentence accuracy and word error rate; models/eval/an4.yaml);
  the 13 clips without a transcript are left out.

A folder of recordings: any soundfile-readable files (WAV, FLAC, Ogg) and ``labels.json``
beside them, mapping a file name (relative to the folder) to either
- ``{"intent": "HassTurnOn", "slots": {"name": "fan"}, "text": "turn on the fan"}``
  (``"intent": null`` = must be rejected; ``slots`` and ``text`` optional), or
- ``"turn on the fan"``: the transcript; the expected intent and slots are what our
  grammar matcher makes of it (no match = must be rejected).
Pass its grammar with ``--grammar``. Scoring is "intent" unless every label is text and
``--score text`` is given.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.grammar import Grammar, load_grammar, normalise_text
from tools.corpus import DEFAULT_DATA, read_manifest

ROOT = Path(__file__).resolve().parent.parent
EVAL_GRAMMARS = ROOT / "models" / "eval"
Scoring = Literal["intent", "text"]
BUILTIN = ("speech_commands", "fsdd", "an4")
LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class Item:
    id: str  # stable name: path relative to the data folder
    path: Path
    seconds: float
    text: str  # reference transcript, normalised ("" = nothing to say)
    intent: str | None  # expected intent; None = must be rejected
    slots: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # corpus label, for per-label breakdowns


@dataclass
class BenchSet:
    name: str
    grammar: Path
    scoring: Scoring
    items: list[Item]

    def subset(self, limit: int | None, seed: int = 0) -> BenchSet:
        """A fixed random subset (same seed, same clips), kept in corpus order."""
        if not limit or limit >= len(self.items):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.items)), limit))
        return BenchSet(self.name, self.grammar, self.scoring, [self.items[i] for i in keep])


def builtin_set(name: str, data_dir: Path = DEFAULT_DATA) -> BenchSet:
    corpus = {"speech_commands": "speech_commands_v2_test", "fsdd": "fsdd", "an4": "an4"}[name]
    grammar_path = EVAL_GRAMMARS / f"{name}.yaml"
    clips = [c for c in read_manifest(data_dir) if c.corpus == corpus and c.split == "test"]
    items = []
    if name == "speech_commands":
        keywords = set(load_grammar(grammar_path).intent_names)
        for c in clips:
            expected = c.label if c.label in keywords else None
            items.append(_item(c, data_dir, c.text, expected, {}))
    elif name == "fsdd":
        items = [_item(c, data_dir, c.text, "Digit", {"digit": c.label}) for c in clips]
    else:
        items = [_item(c, data_dir, c.text, None, {}) for c in clips if c.text]
    return BenchSet(name, grammar_path, "text" if name == "an4" else "intent", items)


def _item(clip: Any, data_dir: Path, text: str, intent: str | None, slots: dict) -> Item:
    return Item(
        id=str(clip.path.relative_to(data_dir)),
        path=clip.path,
        seconds=clip.seconds,
        text=normalise_text(text),
        intent=intent,
        slots=slots,
        label=clip.label,
    )


def folder_set(folder: Path, grammar_path: Path, scoring: Scoring | None = None) -> BenchSet:
    import soundfile as sf

    labels_path = folder / LABELS_FILE
    try:
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SystemExit(f"{labels_path}: cannot read the labels file: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise SystemExit(f"{labels_path}: not JSON: {err}") from err
    if not isinstance(labels, dict) or not labels:
        raise SystemExit(f"{labels_path}: expected an object mapping file names to labels")
    grammar: Grammar = load_grammar(grammar_path)
    all_text = all(isinstance(v, str) for v in labels.values())
    if scoring == "text" and not all_text and not all("text" in v for v in labels.values()):
        raise SystemExit(f"{labels_path}: --score text needs a transcript for every file")
    items = []
    for name, label in labels.items():
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"{labels_path}: {name!r}: no such file in {folder}")
        if isinstance(label, str):
            text, found = label, grammar.recognize_text(normalise_text(label))
            intent, slots = (found[0], found[1]) if found else (None, {})
        elif isinstance(label, dict) and "intent" in label:
            text, intent = str(label.get("text", "")), label["intent"]
            slots = dict(label.get("slots") or {})
        else:
            raise SystemExit(f"{labels_path}: {name!r}: expected a transcript or {{intent, ...}}")
        items.append(
            Item(
                name,
                path,
                sf.info(str(path)).duration,
                normalise_text(text),
                intent,
                slots,
                label=str(intent),
            )
        )
    return BenchSet(folder.name, grammar_path, scoring or "intent", items)


def load_set(
    name: str, grammar: Path | None, data_dir: Path = DEFAULT_DATA, scoring: Scoring | None = None
) -> BenchSet:
    """A built-in set by name (its eval grammar unless --grammar), or a folder + grammar."""
    if name in BUILTIN:
        found = builtin_set(name, data_dir)
        if grammar is not None:
            found.grammar = grammar
        if scoring is not None:
            found.scoring = scoring
        return found
    folder = Path(name)
    if not folder.is_dir():
        raise SystemExit(f"--set {name!r}: neither {', '.join(BUILTIN)} nor a folder")
    if grammar is None:
        raise SystemExit(f"--set {name}: a folder of recordings needs --grammar")
    return folder_set(folder, grammar, scoring)
