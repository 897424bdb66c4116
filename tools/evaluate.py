"""Evaluate a bundle on real voices it never heard (split=test), per corpus, and fit its
confidence calibrator on held-out *train* speakers (never on test).

    python -m tools.evaluate --model models/home [--data ../shared/data]
        [--channel narrow|trimmed|stream] [--against OTHER_BUNDLE] [--answers FILE.jsonl]

Sets and what counts as right:
- speech_commands: 10 keywords must give their intent; `_unknown_` words and `_silence_`
  must be rejected (12-class accuracy, as the corpus defines it).
- fsdd: the digit slot equals the label.
- an4: word error rate of the text, and sentence accuracy.
- false_accepts: noise windows (1-3 s of every noise file) and speechocean762 read
  sentences, against the bundle's own grammar: the share that yields an intent.

For sets of commands, `heard` is the share whose best reading had the right intent and slots
before the confidence bar decided (accepted, or rejected with that reading as its guess): it
tells what the model hears from what the bar lets through.

--channel narrow hears every clip as an 8 kHz microphone would pass it on (nothing above
4 kHz), through the same resampling the runtime applies to 8 kHz input. --channel trimmed
hears every clip cut tight to its speech (no quiet before or after), as FSDD's are.
--channel stream hears every clip as the daemon does: played between seconds of its own
room and cut out by the daemon's VAD, its pre-roll and hang-over included (tools.streamed);
a clip the VAD hears no speech in is heard as nothing.

--against scores a second bundle on the same clips and compares the two clip by clip: how
many each gets right that the other gets wrong, and the exact McNemar p-value of that split
(a two-sided binomial test on the clips where they differ). On a dev split of a few hundred
clips, a two-point gap may be noise or may be one model losing clips the other never does;
this tells which.

--answers writes what the recogniser answered to every clip (set, place in the set, text,
intent, slots, confidence), so that two runs of the same bundle, on two machines or two
runtimes, can be compared clip by clip (tools.compare_answers; tools/emulated_pi.sh).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from assistant.edits import edit_distance
from assistant.features import to_float_pcm
from assistant.grammar import normalise_text
from assistant.recognizer import Recognizer
from assistant.result import Meaning, Result
from tools.augment import MIC_8K_RATE, narrow_band, trim_to_speech
from tools.corpus import DEFAULT_DATA, Clip, is_dev_speaker, load_audio, load_noises, read_manifest
from tools.meaning import same_meaning
from tools.streamed import as_streamed

EVAL_GRAMMARS = Path(__file__).resolve().parent.parent / "models" / "eval"
SC = "speech_commands_v2_test"


@dataclass(frozen=True)
class Item:
    audio: np.ndarray
    expected_intent: str | None  # None: must be rejected
    expected_slots: dict
    text: str
    speaker: str = ""  # for the per-speaker breakdown; "" where there is none (noise)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference length)."""
    r = ref.split()
    return edit_distance(r, hyp.split()), len(r)


def _split(clips: list[Clip], split: str) -> list[Clip]:
    if split == "test":
        return [c for c in clips if c.split == "test"]
    return [c for c in clips if c.split == "train" and is_dev_speaker(c)]


def speech_commands_items(clips: list[Clip], split: str) -> Iterator[Item]:
    for c in _split([c for c in clips if c.corpus == SC], split):
        keyword = c.label not in ("_unknown_", "_silence_")
        yield Item(load_audio(c.path), c.label if keyword else None, {}, c.text, c.speaker)


def fsdd_items(clips: list[Clip], split: str) -> Iterator[Item]:
    for c in _split([c for c in clips if c.corpus == "fsdd"], split):
        yield Item(load_audio(c.path), "Digit", {"digit": c.label}, c.text, c.speaker)


def an4_items(clips: list[Clip], split: str) -> Iterator[Item]:
    for c in _split([c for c in clips if c.corpus == "an4" and c.text], split):
        yield Item(load_audio(c.path), "*", {}, c.text, c.speaker)


def false_accept_items(clips: list[Clip], split: str, data: Path) -> Iterator[Item]:
    if split == "test":
        rng = np.random.default_rng(7)
        for noise in load_noises(data):
            pos = 0
            while pos + 16000 <= noise.size:
                length = int(rng.uniform(1.0, 3.0) * 16000)
                yield Item(noise[pos : pos + length], None, {}, "")
                pos += length
    else:  # Speech Commands' own 1 s noise clips (train split) for calibration
        for c in [c for c in clips if c.label == "_silence_" and c.split == "train"][:150]:
            yield Item(load_audio(c.path), None, {}, "")
    sentences = _split([c for c in clips if c.corpus == "speechocean762"], split)
    for c in sentences[:: max(1, len(sentences) // 400)]:
        yield Item(load_audio(c.path), None, {}, c.text)


def _means(reading: Result | Meaning | None, item: Item) -> bool:
    """Whether a reading has the item's intent and slots."""
    return reading is not None and same_meaning(
        reading.intent, reading.slots, item.expected_intent, item.expected_slots, labelled_only=True
    )


def _heard_right(result: Result, item: Item) -> bool:
    """Whether the best reading was right, accepted or not: what the model heard, before the
    confidence bar decided. The gap to the accuracy is right answers the bar turned away,
    which only a lower bar or asking (tools.asking) wins back; a better model is needed
    for the rest."""
    return _means(result.reading, item)


def run_set(
    recognizer: Recognizer,
    items: list[Item],
    desc: str,
    rights: list[bool] | None = None,
    answers: list[dict] | None = None,
) -> dict:
    """Scores one set; each item's right or wrong is appended to ``rights`` when given, and
    what the recogniser answered to ``answers``."""
    correct = errors = words = accepted = 0
    commands = heard = wrong_accepted = must_reject = must_reject_accepted = 0
    times: list[float] = []
    # speaker -> [clips, right, word errors, words]
    speakers: dict[str, np.ndarray] = {}
    for item in tqdm(items, desc=desc, leave=False):
        t0 = time.perf_counter()
        result = recognizer.recognize(item.audio)
        times.append((time.perf_counter() - t0) * 1000)
        accepted += result.intent is not None
        if answers is not None:
            answers.append(
                {
                    "text": result.text,
                    "intent": result.intent,
                    "slots": result.slots,
                    "confidence": float(result.confidence),
                }
            )
        e = n = 0
        if item.expected_intent == "*":  # transcript task (AN4): score the words
            # The text is published for rejected utterances too, so it is what a listener
            # gets; acceptance is reported separately.
            hyp = normalise_text(result.text)
            e, n = word_errors(normalise_text(item.text), hyp)
            errors, words = errors + e, words + n
            right = e == 0
        elif item.expected_intent is None:
            right = result.intent is None
            must_reject += 1
            must_reject_accepted += not right
        else:
            right = _means(result, item)
            commands += 1
            wrong_accepted += result.intent is not None and not right  # acted on, wrongly
            heard += _heard_right(result, item)
        correct += right
        if rights is not None:
            rights.append(bool(right))
        if item.speaker:
            speakers.setdefault(item.speaker, np.zeros(4))[:] += (1, right, e, n)
    n = max(len(items), 1)
    out = {
        "clips": len(items),
        "accuracy": correct / n,
        "accepted": accepted / n,
        "ms_median": float(np.median(times)) if times else 0.0,
        "ms_p95": float(np.percentile(times, 95)) if times else 0.0,
    }
    if commands:  # a wrong command acted on: what a rejection would have spared
        out["wrong_accepted"] = wrong_accepted / commands
        out["heard"] = heard / commands
    if must_reject:
        out["must_reject_accepted"] = must_reject_accepted / must_reject
    if words:
        out["wer"] = errors / words
    if speakers:  # the word error rate for transcript sets, else the accuracy
        out["by_speaker"] = {
            spk: float(t[2] / max(t[3], 1) if words else t[1] / t[0])
            for spk, t in sorted(speakers.items())
        }
    return out


def load_sets(data: Path, split: str) -> dict[str, tuple[Path | None, list[Item]]]:
    clips = read_manifest(data)
    return {
        "speech_commands": (
            EVAL_GRAMMARS / "speech_commands.yaml",
            list(speech_commands_items(clips, split)),
        ),
        "fsdd": (EVAL_GRAMMARS / "fsdd.yaml", list(fsdd_items(clips, split))),
        "an4": (EVAL_GRAMMARS / "an4.yaml", list(an4_items(clips, split))),
        # Decoded with the bundle's own grammar (None): the commands a deployment listens for.
        "false_accepts": (None, list(false_accept_items(clips, split, data))),
    }


def _rounded(value: float | dict) -> float | dict:
    if isinstance(value, dict):
        return {k: round(v, 4) for k, v in value.items()}
    return round(value, 4)


CHANNELS = ("wide", "narrow", "trimmed", "stream")


def through_channel(items: list[Item], channel: str) -> list[Item]:
    if channel == "wide":
        return items
    if channel == "trimmed":
        return [replace(item, audio=trim_to_speech(to_float_pcm(item.audio))) for item in items]
    if channel == "stream":
        return [replace(item, audio=as_streamed(item.audio)) for item in items]
    return [replace(item, audio=narrow_band(item.audio, MIC_8K_RATE)) for item in items]


def paired(rights: list[bool], other_rights: list[bool]) -> dict:
    """Clip by clip: how many only the model and only the other get right, and the exact
    McNemar p-value (scipy's binomial test on the clips where they differ; 1 when none do)."""
    # Imported here: only --against needs scipy, which has no wheel for a 32-bit Pi.
    from scipy.stats import binomtest

    only_model = sum(a and not b for a, b in zip(rights, other_rights, strict=True))
    only_other = sum(b and not a for a, b in zip(rights, other_rights, strict=True))
    differ = only_model + only_other
    p = binomtest(only_model, differ, 0.5).pvalue if differ else 1.0
    return {
        "only_model": only_model,
        "only_against": only_other,
        "against_accuracy": sum(other_rights) / max(len(other_rights), 1),
        "mcnemar_p": float(p),
    }


def evaluate(
    model: Path,
    data: Path,
    split: str = "test",
    limit: int = 0,
    channel: str = "wide",
    against: Path | None = None,
    answers: list[dict] | None = None,
) -> dict[str, dict]:
    """Each set's metrics; each clip's answer, with its set's name and its place in the set,
    is appended to ``answers`` when given (``--answers``: tools.compare_answers reads them)."""
    results = {}
    for name, (grammar, items) in load_sets(data, split).items():
        if limit:
            items = items[:limit]
        items = through_channel(items, channel)
        recognizer = Recognizer.load(model, grammar=grammar)
        rights: list[bool] = []
        set_answers: list[dict] = []
        kept = set_answers if answers is not None else None  # collected only when asked for
        results[name] = run_set(recognizer, items, f"{name} ({split})", rights, kept)
        if answers is not None:
            answers.extend({"set": name, "clip": i, **a} for i, a in enumerate(set_answers))
        if name == "false_accepts":
            results[name]["rate"] = results[name]["accepted"]
        if against is not None and items:
            other = Recognizer.load(against, grammar=grammar)
            other_rights: list[bool] = []
            run_set(other, items, f"{name} ({split}, against)", other_rights)
            results[name]["paired"] = paired(rights, other_rights)
        print(name, json.dumps({k: _rounded(v) for k, v in results[name].items()}))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=["test", "dev"], default="test")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument(
        "--channel",
        choices=CHANNELS,
        default="wide",
        help="narrow: as through an 8 kHz mic; trimmed: every clip cut tight to its speech;"
        " stream: every clip cut from a stream by the daemon's VAD",
    )
    parser.add_argument(
        "--against", type=Path, help="another bundle, compared with --model clip by clip"
    )
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here")
    parser.add_argument(
        "--answers", type=Path, help="write every clip's answer here, one JSON object a line"
    )
    args = parser.parse_args(argv)
    answers: list[dict] | None = [] if args.answers else None
    results = evaluate(
        args.model, args.data, args.split, args.limit, args.channel, args.against, answers
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if answers is not None:
        args.answers.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))


if __name__ == "__main__":
    main()
