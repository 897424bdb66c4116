"""Grammar loading: graph built from templates accepts exactly the grammar's sentences."""

from __future__ import annotations

import random
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from assistant import lexicon
from assistant.grammar import Grammar, GrammarError, load_grammar

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
language: en
intents:
  HassTurnOn:
    data:
      - sentences:
          - "turn on [the] {area} light[s]"
          - "(switch|turn) [the] {name} on"
        slots: {domain: light}
  HassLightSet:
    data:
      - sentences:
          - "set [the] brightness to {brightness}[ percent]"
          - "dim (the lights;to {brightness})"
  HassStartTimer:
    data:
      - sentences: ["timer for {minutes} minute[s]", "timer for {half:minutes} an hour"]
  Spell:
    data:
      - sentences: ["spell <letters>"]
lists:
  area:
    values: [kitchen, living room, {in: "(lounge|sitting room)", out: living_room}]
  name:
    values: [lamp, {in: "ceiling light", out: light.ceiling}]
  brightness:
    range: {from: 0, to: 100}
  minutes:
    range: {from: 1, to: 90}
  half:
    values: [{in: half, out: 30}]
expansion_rules:
  letter: "(a|b|c)"
  letters: {repeat: "<letter>", min: 1}
"""


def write(tmp_path: Path, text: str, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Grammar:
    return load_grammar(write(tmp_path_factory.mktemp("g"), SMALL))


def words_in_graph(grammar: Grammar, text: str) -> bool:
    return grammar.graph.accepts(lexicon.text_to_tokens(text))


@pytest.mark.parametrize(
    "text",
    [
        "turn on the kitchen lights",
        "turn on living room light",
        "turn on the sitting room lights",
        "switch the ceiling light on",
        "set brightness to twenty five percent",
        "set the brightness to one hundred",
        "dim the lights to seven",
        "dim to seven the lights",  # (a;b) permutation
        "timer for half an hour",
        "spell a",
        "spell c a b b a c a b c",  # repeat rule: a loop in the graph
    ],
)
def test_grammar_sentences_are_in_graph(small: Grammar, text: str) -> None:
    assert words_in_graph(small, text)
    assert small.recognize_text(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "turn on the garage lights",  # not in the list
        "turn on the kitchen",  # incomplete
        "turn on the the kitchen lights",
        "set brightness to one hundred one",  # out of range
        "spell",  # repeat needs at least one
        "spell d",
        "kitchen",
    ],
)
def test_other_sentences_are_not(small: Grammar, text: str) -> None:
    assert not words_in_graph(small, text)


def test_sampled_sentences_are_in_graph_and_recognised(small: Grammar) -> None:
    for sample in small.sentences_sample(200, seed=1):
        assert words_in_graph(small, sample.text), sample
        found = small.recognize_text(sample.text)
        assert found is not None and found[0] == sample.intent, sample


def test_random_graph_paths_are_grammar_sentences(small: Grammar) -> None:
    rng = random.Random(0)
    for _ in range(200):
        tokens = small.graph.random_path(rng)
        readings = small.graph.word_paths(tokens)
        assert readings, tokens
        assert any(small.recognize_text(" ".join(r)) for r in readings), readings


def test_recognize_text_gives_slot_values(small: Grammar) -> None:
    assert small.recognize_text("turn on the lounge lights") == (
        "HassTurnOn",
        {"area": "living_room", "domain": "light"},
    )
    assert small.recognize_text("switch ceiling light on") == (
        "HassTurnOn",
        {"name": "light.ceiling", "domain": "light"},
    )
    assert small.recognize_text("set brightness to seventy three percent") == (
        "HassLightSet",
        {"brightness": 73},
    )
    assert small.recognize_text("timer for half an hour") == ("HassStartTimer", {"minutes": 30})
    assert small.recognize_text("make me a sandwich") is None


def test_recognize_text_remembers_answers_within_a_bound(
    small: Grammar, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = small.recognize_text("turn on the lounge lights")
    assert first is not None
    first[1]["area"] = "changed by a caller"  # a caller's change must not leak into the cache
    assert small.recognize_text("turn on the lounge lights") == (
        "HassTurnOn",
        {"area": "living_room", "domain": "light"},
    )
    monkeypatch.setattr("assistant.grammar.RECOGNIZED_CACHE", 3)
    small.forget_texts()
    texts = ["make me a sandwich", "timer for half an hour", "switch ceiling light on", "x y"]
    for text in texts:
        small.recognize_text(text)
    assert [text for text, _ in small._recognized] == texts[1:]  # the oldest went first
    assert small.recognize_text("make me a sandwich") is None
    small.forget_texts()
    assert not small._recognized
    assert small.recognize_text("timer for half an hour") == ("HassStartTimer", {"minutes": 30})


def test_homophones_keep_their_words(tmp_path: Path) -> None:
    g = load_grammar(
        write(
            tmp_path,
            'intents: {T: {data: [{sentences: ["wait for {n} minutes"]}]}}\n'
            "lists: {n: {range: {from: 1, to: 9}}}\n",
        )
    )
    tokens = lexicon.text_to_tokens("wait for four minutes")
    assert ("wait", "for", "four", "minutes") in g.graph.word_paths(tokens)
    assert g.recognize_text("wait for four minutes") == ("T", {"n": 4})


def test_vocabulary_and_count(small: Grammar) -> None:
    assert {"kitchen", "sitting", "lounge", "twenty", "percent"} <= small.vocabulary
    assert small.expansion_count() == float("inf")  # the letters loop


def test_big_grammar_loads_fast_and_is_small(tmp_path: Path) -> None:
    lists = {f"l{i}": [f"{w}" for w in WORDS[i * 10 : i * 10 + 10]] for i in range(7)}
    yaml_lists = "".join(f"  {k}: {{values: [{', '.join(v)}]}}\n" for k, v in lists.items())
    sentence = " ".join(f"{{l{i}}}" for i in range(7))
    text = f'intents: {{Big: {{data: [{{sentences: ["{sentence}"]}}]}}}}\nlists:\n{yaml_lists}'
    start = time.perf_counter()
    g = load_grammar(write(tmp_path, text))
    elapsed = time.perf_counter() - start
    assert g.expansion_count() == 1e7
    assert elapsed < 5.0, elapsed
    assert g.graph.n_arcs < 2000  # grows with the template, not the 10^7 sentences
    sample = g.sentences_sample(3, seed=2)[0]
    assert words_in_graph(g, sample.text)


WORDS = (
    "apple banana cherry grape lemon mango melon olive peach pear "
    "red green blue yellow purple orange pink brown black white "
    "cat dog horse mouse sheep goat cow duck frog bird "
    "table chair sofa bed desk shelf lamp door window floor "
    "north south east west up down left right in out "
    "one two three four five six seven eight nine ten "
    "monday tuesday wednesday thursday friday saturday sunday morning evening night"
).split()


def test_home_grammar_is_consistent() -> None:
    g = load_grammar(ROOT / "models/home/grammar.yaml")
    for sample in g.sentences_sample(150, seed=3):
        assert words_in_graph(g, sample.text), sample
        found = g.recognize_text(sample.text)
        assert found is not None and found[0] == sample.intent, sample
    assert g.recognize_text("set the bedroom temperature to twenty one degrees") == (
        "HassClimateSetTemperature",
        {"area": "bedroom", "temperature": 21},
    )


@pytest.mark.parametrize("name", ["speech_commands", "fsdd", "an4"])
def test_eval_grammars_load(name: str) -> None:
    g = load_grammar(ROOT / f"models/eval/{name}.yaml")
    assert g.graph.n_arcs > 0
    for sample in g.sentences_sample(30, seed=0):
        assert words_in_graph(g, sample.text), sample


def test_an4_spelling_is_a_loop() -> None:
    g = load_grammar(ROOT / "models/eval/an4.yaml")
    assert words_in_graph(g, "rubout " + " ".join("abcdefghijklmnopqrstuvwxyz" * 2) + " nine")
    assert g.recognize_text("erase z y g n p eight hundred and twenty three") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intents: [oops\n", "YAML syntax error"),
        ("intents: {A: {data: [{sentences: ['turn on (the light']}]}}\n", "intent 'A'"),
        ("intents: {A: {data: [{sentences: ['turn on {thing}']}]}}\n", "list {thing}"),
        ("intents: {A: {data: [{sentences: ['turn on <thing>']}]}}\n", "rule <thing>"),
        ("intents: {A: {data: [{sentences: ['set it to 25']}]}}\n", "'25'"),
        (
            "intents: {A: {data: [{sentences: ['play {song}']}]}}\n"
            "lists: {song: {wildcard: true}}\n",
            "wildcard",
        ),
        (
            "intents: {A: {data: [{sentences: ['<a>']}]}}\nexpansion_rules: {a: 'x <a>'}\n",
            "refer to themselves",
        ),
        ("intents: {A: {data: [{sentences: ['{n}']}]}}\nlists: {n: {range: {from: 5}}}\n", "{n}"),
        ("lists: {}\n", "intents"),
    ],
)
def test_errors_name_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(GrammarError) as info:
        load_grammar(write(tmp_path, text))
    assert expected in str(info.value)


def test_unknown_word_error_names_sentence(tmp_path: Path) -> None:
    with pytest.raises(GrammarError, match=r"intent 'A', sentence 'set it to 25'.*'25'"):
        load_grammar(write(tmp_path, "intents: {A: {data: [{sentences: ['set it to 25']}]}}\n"))


def test_wildcards_can_be_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "intents: {A: {data: [{sentences: ['play {song}', 'stop']}]}}\n"
        "lists: {song: {wildcard: true}}\n",
    )
    g = load_grammar(path, skip_wildcards=True)
    assert g.skipped == ["A: play {song}"]
    assert {s.text for s in g.sentences_sample(10)} == {"stop"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GrammarError, match="cannot read"):
        load_grammar(tmp_path / "nope.yaml")


def _reference_word_paths(graph, tokens: list[int], limit: int) -> list[tuple[str, ...]]:
    """The walk written plainly: every path that spells the tokens, arcs in order."""
    found: list[tuple[str, ...]] = []

    def walk(state: int, pos: int, words: tuple[str, ...]) -> None:
        if len(found) >= limit:
            return
        if pos == len(tokens):
            if state == graph.final:
                found.append(words)
            return
        for a in graph.arcs(state):
            if graph.arc_token[a] == tokens[pos]:
                w = int(graph.arc_word[a])
                walk(int(graph.arc_next[a]), pos + 1, words + ((graph.words[w],) if w >= 0 else ()))

    walk(graph.start, 0, ())
    return list(dict.fromkeys(found))


def test_the_compiled_walk_reads_what_a_plain_walk_reads(small: Grammar) -> None:
    # Homophones ("for"/"four") give several readings, a limit cuts them, and a token
    # sequence off the graph has none.
    rng = random.Random(3)
    graph = small.graph
    for _ in range(100):
        tokens = graph.random_path(rng)
        for limit in (1, 2, 8):
            assert graph.word_paths(tokens, limit) == _reference_word_paths(graph, tokens, limit)
        changed = list(tokens)
        changed[rng.randrange(len(changed))] = rng.randrange(2, graph.vocab_size)
        assert graph.word_paths(changed) == _reference_word_paths(graph, changed, 8)


def test_the_compiled_walk_refuses_a_graph_it_would_read_past() -> None:
    from assistant._searchc import word_paths

    def arcs(*values: list[int]) -> list[np.ndarray]:
        return [np.array(v, np.int32) for v in values]

    tokens = np.array([3], np.int64)
    assert word_paths(*arcs([0, 1, 1], [3], [1], [0]), 0, 1, tokens, 8) == [(0,)]
    with pytest.raises(ValueError, match="leads outside the graph"):
        word_paths(*arcs([0, 1, 1], [3], [5], [0]), 0, 1, tokens, 8)
    with pytest.raises(ValueError, match="outside the graph"):
        word_paths(*arcs([0, 9, 1], [3], [1], [0]), 0, 1, tokens, 8)
    with pytest.raises(ValueError, match="no CSR graph"):
        word_paths(*arcs([0, 1, 1], [3], [1], [0]), 0, 7, tokens, 8)  # no final state 7
    with pytest.raises(ValueError, match="tokens: expected int64"):
        word_paths(*arcs([0, 1, 1], [3], [1], [0]), 0, 1, tokens.astype(np.int32), 8)
