"""What asking "did you mean ...?" buys (assistant/dialogue.py, `[confirm]` in the config).

The bundle's held-out home commands (voices it never heard; clean and mixed with the shared
noises) are recognised as the daemon recognises them. An answer under the bar that
`[confirm] from_confidence` would ask about is then answered the way its speaker would
answer: a real "yes" recording where the answer asked about is right, a real "no" where it is
wrong (Speech Commands clips of the dev speakers, taken in turn), and that reply is recognised
with the bundle's own grammar, as the daemon hears it. The report gives, per condition and
per `from_confidence`, the commands acted on right and wrong, and how many were asked about;
and how many of the dev speakers' non-commands (noise) would have set off a question.

    python -m tools.asking --model models/home --clips .cache/build-home2/heldout

With `--corpora`, the real corpora of a split are scored the same way, each with its own
grammar as `tools.evaluate` does (`accuracy` counts a clip that must be rejected as right
when it is not acted on): Speech Commands keywords and FSDD digits. Their replies are still
heard with the bundle's grammar, as on a device whose grammar holds both the commands and a
yes and no. `--split test` is for the card, after every choice was made on dev:

    python -m tools.asking --model models/home --corpora --split test
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.dialogue import ConfirmSettings, Reply, reply_to_question, worth_asking
from assistant.recognizer import DEFAULT_MODEL_DIR, Recognizer
from assistant.result import Result
from tools.augment import mix_noise
from tools.corpus import DEFAULT_DATA, load_audio, load_noises, read_manifest
from tools.evaluate import Item, false_accept_items, load_sets, speech_commands_items
from tools.heldout import expected_meaning, read_labels
from tools.meaning import same_meaning

DEFAULT_CLIPS = Path(".cache/build-home2/heldout")
SNRS: tuple[float | None, ...] = (None, 12.0, 0.0)  # None = clean
FROM_CONFIDENCES = (0.1, 0.2, 0.3, 0.4)
CARD_FROM = 0.2  # the setting README suggests, measured for every bundle's card (tools.build)
# One intent and its slots per clip (AN4 is scored by its words, not by a meaning).
CORPORA = ("speech_commands", "fsdd")


@dataclass(frozen=True)
class Heard:
    result: Result
    right: bool  # the accepted intent, or the guess under the bar, has the expected meaning
    must_reject: bool = False  # not a command: right only when nothing is acted on


def _heard(result: Result, expected: tuple[str | None, dict]) -> Heard:
    meaning = result.reading
    right = meaning is not None and same_meaning(meaning.intent, meaning.slots, *expected)
    return Heard(result, right, must_reject=expected[0] is None)


def hear_commands(
    recognizer: Recognizer, folder: Path, noises: list[np.ndarray], snr: float | None
) -> list[Heard]:
    labelled = read_labels(folder)
    rng = np.random.default_rng(0)  # tools.heldout's seed: the same noise pieces
    heard = []
    for path, label in tqdm(labelled, desc=f"commands, SNR {snr}", leave=False):
        audio = load_audio(path)
        if snr is not None:
            audio = mix_noise(audio, noises[int(rng.integers(len(noises)))], snr, rng)
        heard.append(_heard(recognizer.recognize(audio), expected_meaning(recognizer, label)))
    return heard


def hear_corpus(model: Path, grammar: Path | None, items: list[Item], name: str) -> list[Heard]:
    recognizer = Recognizer.load(model, grammar=grammar)
    return [
        _heard(recognizer.recognize(item.audio), (item.expected_intent, item.expected_slots))
        for item in tqdm(items, desc=name, leave=False)
    ]


def hear_replies(recognizer: Recognizer, data: Path) -> dict[str, list[Reply]]:
    """How each dev speaker's "yes" and "no" is taken as a reply, in the manifest's order."""
    replies: dict[str, list[Reply]] = {"yes": [], "no": []}
    for item in speech_commands_items(read_manifest(data), "dev"):
        if item.expected_intent in replies:
            heard = recognizer.recognize(item.audio)
            replies[item.expected_intent].append(reply_to_question(heard))
    return replies


def outcome(
    heard: list[Heard], replies: dict[str, list[Reply]], settings: ConfirmSettings
) -> dict[str, float]:
    """Acted on right / wrong, asked about, and accuracy (acted on right, or not acted on
    where nothing should be), as shares of the clips."""
    right = wrong = asked = rejected_right = 0
    turn = {"yes": 0, "no": 0}
    for h in heard:
        acted = h.result.intent is not None
        if not acted and worth_asking(h.result, settings):
            asked += 1
            said = "yes" if h.right else "no"  # the speaker answers truthfully
            reply = replies[said][turn[said] % len(replies[said])]
            turn[said] += 1
            acted = reply is Reply.YES
        if acted:
            right += h.right
            wrong += not h.right
        else:
            rejected_right += h.must_reject
    n = max(len(heard), 1)
    return {
        "right": right / n,
        "wrong": wrong / n,
        "asked": asked / n,
        "accuracy": (right + rejected_right) / n,
    }


def _rows(heard: list[Heard], replies: dict[str, list[Reply]], froms: tuple[float, ...]) -> dict:
    rows = {"never": outcome(heard, replies, ConfirmSettings())}
    for low in froms:
        rows[f"from {low:g}"] = outcome(heard, replies, ConfirmSettings(low))
    return rows


def _reply_counts(replies: dict[str, list[Reply]]) -> dict:
    return {said: {r.value: got.count(r) for r in Reply} for said, got in replies.items()}


def measure(model: Path, clips: Path, data: Path, froms: tuple[float, ...]) -> dict:
    recognizer = Recognizer.load(model)
    replies = hear_replies(recognizer, data)
    noises = load_noises(data)
    report: dict = {"model": recognizer.name, "replies": _reply_counts(replies), "sets": {}}
    for snr in SNRS:
        heard = hear_commands(recognizer, clips, noises, snr)
        key = "held-out, clean" if snr is None else f"held-out, {snr:g} dB"
        report["sets"][key] = _rows(heard, replies, froms)
    non_commands = [
        recognizer.recognize(item.audio)
        for item in false_accept_items(read_manifest(data), "dev", data)
    ]
    report["non_commands"] = {
        "clips": len(non_commands),
        "acted_on": sum(r.intent is not None for r in non_commands),
        **{
            f"asked from {low:g}": sum(worth_asking(r, ConfirmSettings(low)) for r in non_commands)
            for low in froms
        },
    }
    return report


def measure_corpora(model: Path, data: Path, split: str, froms: tuple[float, ...]) -> dict:
    recognizer = Recognizer.load(model)
    replies = hear_replies(recognizer, data)
    report: dict = {"model": recognizer.name, "replies": _reply_counts(replies), "sets": {}}
    for name, (grammar, items) in load_sets(data, split).items():
        if name in CORPORA and items:  # FSDD has no dev speakers
            heard = hear_corpus(model, grammar, items, f"{name} ({split})")
            report["sets"][f"{name} ({split})"] = _rows(heard, replies, froms)
    return report


def print_report(report: dict) -> None:
    print(f"{report['model']}; replies heard: {report['replies']}")
    for name, rows in report["sets"].items():
        for setting, row in rows.items():
            print(
                f"{name:>24} {setting:>9}: acted on right {100 * row['right']:5.1f}%, "
                f"wrong {100 * row['wrong']:4.1f}%, asked about {100 * row['asked']:4.1f}%, "
                f"accuracy {100 * row['accuracy']:5.1f}%"
            )
    if "non_commands" in report:
        print(f"dev non-commands: {report['non_commands']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help="WAVs + labels.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--from", dest="froms", type=float, nargs="+", default=FROM_CONFIDENCES)
    parser.add_argument("--corpora", action="store_true", help="score the real corpora instead")
    parser.add_argument("--split", choices=["dev", "test"], default="dev", help="with --corpora")
    parser.add_argument("--out", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    froms = tuple(args.froms)
    if args.corpora:
        report = measure_corpora(args.model, args.data, args.split, froms)
    else:
        report = measure(args.model, args.clips, args.data, froms)
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
