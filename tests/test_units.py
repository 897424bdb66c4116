"""Output units: the phone set and learned phone pieces, in grammars and the search."""

from __future__ import annotations

import json
import random
import shutil
import textwrap
from pathlib import Path

import pytest
from fake_step_model import FakeStepModel

from assistant import lexicon
from assistant.bundle import BundleError, load_bundle
from assistant.decoder import constrained_search, free_search
from assistant.grammar import load_grammar
from assistant.lexicon import EOS_ID, TOKENS
from assistant.units import WORD_START, Units, UnitsError, learn_merges

GRAMMAR = """
language: en
intents:
  Light:
    data:
      - sentences:
          - "turn (on|off) [the] {name}"
          - "set {name} to {level} percent"
lists:
  name:
    values: [kitchen light, bedroom lamp, fan, twenty-five]
  level:
    range: {from: 0, to: 100}
"""

WORDS = ["turn", "on", "off", "the", "kitchen", "light", "lights", "set", "to", "percent"]


@pytest.fixture(scope="module")
def pieces() -> Units:
    weights = {lexicon.pronunciations(w)[0]: 10.0 for w in WORDS}
    return Units.pieces(learn_merges(weights, 40))


@pytest.fixture(scope="module")
def grammar_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("units") / "g.yaml"
    path.write_text(textwrap.dedent(GRAMMAR), encoding="utf-8")
    return path


def test_phone_set_spells_as_the_lexicon_does() -> None:
    phones = Units.phones()
    assert phones.tokens == TOKENS and phones.has_boundary
    text = "turn on the kitchen light"
    spelled = [lexicon.pronunciations(w)[0] for w in text.split()]
    assert [*phones.spell(spelled), EOS_ID] == lexicon.text_to_tokens(text)
    assert phones.words(lexicon.text_to_tokens(text)) == [list(p) for p in spelled]


def test_pieces_spell_fewer_tokens_and_read_back_the_same_phones(pieces: Units) -> None:
    phone_ids = lexicon.text_to_tokens("turn on the kitchen light please zebra")
    piece_ids = pieces.from_phone_ids(phone_ids)
    assert piece_ids[-1] == EOS_ID
    assert len(piece_ids) < len(phone_ids) * 0.7
    assert pieces.words(piece_ids) == Units.phones().words(phone_ids)
    # Every word starts with a marked piece, and only there: the boundary is in the units.
    starts = [pieces.tokens[t].startswith(WORD_START) for t in piece_ids[:-1]]
    assert sum(starts) == 7 and starts[0]
    assert not pieces.has_boundary


def test_any_word_can_be_spelled_even_with_no_merge_for_it(pieces: Units) -> None:
    rng = random.Random(0)
    for _ in range(50):
        phones = tuple(rng.choice(lexicon.PHONES) for _ in range(rng.randint(1, 8)))
        ids = pieces.spell([phones])
        assert pieces.words(ids) == [list(phones)]


def test_merges_are_learned_most_frequent_first() -> None:
    weights = {("K", "AE", "T"): 5.0, ("B", "AE", "T"): 3.0, ("AE", "T"): 1.0}
    merges = learn_merges(weights, 2)
    assert merges[0] == ("AE", "T")  # 9 in all, more than any word's first pair
    assert merges[1] == ("|K", "AE T")


def test_bad_unit_sets_are_refused(pieces: Units) -> None:
    with pytest.raises(UnitsError, match="not two units"):
        Units.pieces([("AH", "|N")])
    with pytest.raises(UnitsError, match="not two units"):
        Units.pieces([("XX", "N")])
    with pytest.raises(UnitsError, match="not the ones"):
        Units.from_manifest(list(TOKENS)[:-1], None)
    assert Units.from_manifest(list(pieces.tokens), pieces.merges) == pieces


def test_a_piece_grammar_accepts_the_pieces_of_its_sentences(
    grammar_path: Path, pieces: Units
) -> None:
    grammar = load_grammar(grammar_path, units=pieces)
    assert grammar.graph.vocab_size == len(pieces.tokens)
    for sample in load_grammar(grammar_path).sentences_sample(30, seed=1):
        ids = pieces.from_phone_ids(lexicon.text_to_tokens(sample.text))
        assert grammar.graph.accepts(ids), sample.text
        assert sample.text in [" ".join(w) for w in grammar.graph.word_paths(ids)]
    wrong = pieces.from_phone_ids(lexicon.text_to_tokens("turn on the bedroom light"))
    assert not grammar.graph.accepts(wrong)


def test_search_over_pieces_finds_the_sentence(grammar_path: Path, pieces: Units) -> None:
    grammar = load_grammar(grammar_path, units=pieces)
    text = "set kitchen light to forty two percent"
    target = pieces.from_phone_ids(lexicon.text_to_tokens(text))
    model = FakeStepModel(target, vocab_size=len(pieces.tokens))
    best = constrained_search(model, grammar, beam=8, max_steps=60)[0]
    assert list(best.tokens) == target
    assert best.interpret(grammar) == (text, "Light", {"name": "kitchen light", "level": 42})
    free = free_search(model, phone_loop=True, units=pieces)
    assert list(free.tokens) == target


def test_a_manifest_with_unknown_units_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(Path(__file__).parents[1] / "models" / "home", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["merges"] = [["AH", "|N"]]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bad output units"):
        load_bundle(bundle)
    manifest["merges"] = "AH N"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bad output units"):
        load_bundle(bundle)
