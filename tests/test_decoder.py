"""Constrained beam search against a deterministic fake decoder step."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fake_step_model import FakeStepModel

from assistant import lexicon
from assistant.decoder import (
    NO_RIVAL_MARGIN,
    Hypothesis,
    _dfa_for,
    confidence_features,
    constrained_and_free_search,
    constrained_search,
    forget_search_states,
    free_search,
)
from assistant.grammar import Grammar, Graph, grammar_from_dict, load_grammar, slot_key
from assistant.lexicon import EOS_ID, TOKEN_INDEX, WORD_BOUNDARY_ID

ROOT = Path(__file__).resolve().parents[1]
HOME = """
language: en
intents:
  HassTurnOn:
    data: [{sentences: ["turn on [the] {area} light[s]", "turn on [the] {name}"]}]
  HassTurnOff:
    data: [{sentences: ["turn off [the] {area} light[s]", "turn off [the] {name}"]}]
  HassStartTimer:
    data: [{sentences: ["set a timer for {minutes} minute[s]"]}]
lists:
  area: {values: [kitchen, living room, bedroom]}
  name: {values: [lamp, fan, {in: "(tv|television)", out: tv}]}
  minutes: {range: {from: 1, to: 60}}
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Grammar:
    path = tmp_path_factory.mktemp("g") / "home.yaml"
    path.write_text(textwrap.dedent(HOME), encoding="utf-8")
    return load_grammar(path)


def run(grammar: Grammar, text: str, **model_args: object) -> list[Hypothesis]:
    model = FakeStepModel(lexicon.text_to_tokens(text), **model_args)  # type: ignore[arg-type]
    return constrained_search(model, grammar, beam=8, max_steps=60)


@pytest.mark.parametrize(
    "text",
    ["turn on the kitchen lights", "turn off fan", "set a timer for twenty five minutes"],
)
def test_finds_the_sentence_the_model_prefers(home: Grammar, text: str) -> None:
    hyps = run(home, text)
    assert hyps[0].text == text
    assert hyps[0].tokens == tuple(lexicon.text_to_tokens(text))
    assert hyps[0].interpret(home)[1] in {"HassTurnOn", "HassTurnOff", "HassStartTimer"}
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_every_hypothesis_is_in_the_grammar(home: Grammar) -> None:
    hyps = run(home, "turn on the kitchen lights")
    for h in hyps:
        assert home.graph.accepts(h.tokens)
        assert h.tokens[-1] == EOS_ID and h.readings
        assert home.recognize_text(h.text) is not None


def test_rejects_paths_outside_the_grammar(home: Grammar) -> None:
    # The model prefers "garage" to "kitchen" (an out-of-grammar phone at the area's start):
    # free decoding follows it, the grammar does not.
    target = lexicon.text_to_tokens("turn on the kitchen lights")
    pos = target.index(TOKEN_INDEX["K"], 6)
    model = FakeStepModel(target, distractors={pos: TOKEN_INDEX["G"]})
    free = free_search(model, beam=4, max_steps=60)
    assert free.tokens[pos] == TOKEN_INDEX["G"]
    hyps = constrained_search(FakeStepModel(target, distractors={pos: TOKEN_INDEX["G"]}), home)
    assert hyps[0].text == "turn on the kitchen lights"
    feats = confidence_features(hyps[0], free, hyps[1:], home)
    assert feats.difference > 0.0  # the grammar had to override the model
    assert feats.free_per_token > feats.constrained_per_token


def test_confidence_margin_to_other_intent(home: Grammar) -> None:
    hyps = run(home, "turn on the lamp")
    free = free_search(FakeStepModel(lexicon.text_to_tokens("turn on the lamp")))
    feats = confidence_features(hyps[0], free, hyps[1:], home)
    assert 0.0 < feats.margin <= NO_RIVAL_MARGIN
    assert abs(feats.difference) < 1e-6  # the model's favourite is in the grammar
    assert feats.as_array().shape == (5,)


def test_meaning_margin_sees_a_rival_with_other_slot_values() -> None:
    # "nine" and "ninety" give the same intent: the intent margin finds no rival, the
    # meaning margin does (a slot misheard is as wrong as an intent misheard).
    g = grammar_from_dict(
        {
            "intents": {"SetLevel": {"data": [{"sentences": ["set level to {level}"]}]}},
            "lists": {"level": {"values": ["nine", "ninety"]}},
        }
    )
    best, rival = (
        Hypothesis(tuple(lexicon.text_to_tokens(text)), -2.0, score, graph=g.graph)
        for text, score in (("set level to nine", -0.1), ("set level to ninety", -0.4))
    )
    assert (best.text, rival.text) == ("set level to nine", "set level to ninety")
    free = free_search(FakeStepModel(lexicon.text_to_tokens("set level to nine")))
    feats = confidence_features(best, free, [rival], g)
    assert feats.margin == NO_RIVAL_MARGIN
    assert feats.meaning_margin == pytest.approx(0.3)


def _finished(graph: Graph, text: str, score: float = -0.1) -> Hypothesis:
    """A finished hypothesis for ``text``, as the search leaves it (DFA state before </s>)."""
    tokens = tuple(lexicon.text_to_tokens(text))
    dfa = _dfa_for(graph)
    d = dfa.start
    for tok in tokens[:-1]:
        d = dfa.next_state(d, tok)
    return Hypothesis(tokens, -2.0, score, dfa_state=d, graph=graph)


def test_the_graph_names_the_intent_hassil_finds() -> None:
    home = load_grammar(ROOT / "models" / "home" / "grammar.yaml")
    named = whole = 0
    for sample in home.sentences_sample(300, seed=3):
        hyp = _finished(home.graph, sample.text)
        found = hyp.interpret(home)
        assert found is not None
        if hyp.sole_intent is not None:
            named += 1
            assert hyp.sole_intent == found[1] == sample.intent, sample.text
        if hyp.sole_meaning is not None:  # a sentence without lists: its slots are fixed
            whole += 1
            assert hyp.sole_meaning == (found[1], slot_key(found[2])), sample.text
    assert named >= 290  # only sentences that two intents share are left to hassil
    assert 30 <= whole < named  # sentences with lists need hassil for their slot values


@pytest.mark.parametrize(
    "grammar_file",
    [
        "home/grammar.yaml",
        "eval/an4.yaml",
        "eval/fsdd.yaml",
        "eval/speech_commands.yaml",
        "examples/garage.yaml",
    ],
)
def test_hassil_told_the_graphs_intent_reads_the_same_slots(grammar_file: str) -> None:
    # Where the graph names the intent, interpret matches only its templates: for every
    # sampled sentence of every shipped grammar that must give what all the templates give.
    grammar = load_grammar(ROOT / "models" / grammar_file)
    told = 0
    for sample in grammar.sentences_sample(200, seed=5):
        intent = _finished(grammar.graph, sample.text).sole_intent
        if intent is not None:
            told += 1
            everything = grammar.recognize_text(sample.text)
            assert grammar.recognize_text(sample.text, intent) == everything, sample.text
    assert told >= 100  # most of them (AN4 spells letters that several intents share)


def test_a_sentence_of_two_intents_is_left_to_hassil() -> None:
    g = grammar_from_dict(
        {
            "intents": {
                "Stop": {"data": [{"sentences": ["stop", "stop the music"]}]},
                "Cancel": {"data": [{"sentences": ["stop", "cancel [that]"]}]},
            }
        }
    )
    assert _finished(g.graph, "stop").sole_intent is None
    assert _finished(g.graph, "stop").sole_meaning is None
    assert _finished(g.graph, "stop the music").sole_intent == "Stop"
    assert _finished(g.graph, "stop the music").sole_meaning == ("Stop", ())
    assert _finished(g.graph, "cancel that").sole_intent == "Cancel"
    # Without its DFA state (made by hand, not by the search) a hypothesis names nothing.
    assert (
        Hypothesis(_finished(g.graph, "cancel").tokens, -1.0, -0.1, graph=g.graph).sole_intent
        is None
    )


def test_intent_margin_is_the_same_from_the_graph_or_from_hassil(home: Grammar) -> None:
    texts = ["turn on the lamp", "turn on the fan", "turn off the lamp", "turn on bedroom light"]
    hyps = [_finished(home.graph, t, -0.1 * (i + 1)) for i, t in enumerate(texts)]
    free = free_search(FakeStepModel(lexicon.text_to_tokens(texts[0])))
    fast = confidence_features(hyps[0], free, hyps[1:], home)
    assert all(h.sole_intent for h in hyps)
    blind = [Hypothesis(h.tokens, h.log_prob, h.score, graph=h.graph) for h in hyps]
    slow = confidence_features(blind[0], free, blind[1:], home)  # no DFA states: hassil
    assert fast == slow
    assert fast.margin == pytest.approx(0.2)  # "turn off the lamp" is the first rival
    assert fast.meaning_margin == pytest.approx(0.1)


def test_meaning_margin_is_the_same_from_the_graph_or_from_hassil() -> None:
    g = grammar_from_dict(
        {
            "intents": {
                "GetTime": {"data": [{"sentences": ["what time is it", "what's the time"]}]},
                "Volume": {
                    "data": [
                        {"sentences": ["louder [please]"], "slots": {"step": "up"}},
                        {"sentences": ["volume {step}"]},
                    ]
                },
            },
            "lists": {"step": {"values": ["up", "down"]}},
        }
    )
    texts = ["what time is it", "what's the time", "louder please", "volume up", "volume down"]
    hyps = [_finished(g.graph, t, -0.1 * (i + 1)) for i, t in enumerate(texts)]
    assert [h.sole_meaning for h in hyps] == [
        ("GetTime", ()),
        ("GetTime", ()),
        ("Volume", (("step", "up"),)),
        None,  # a list gives its value: hassil reads it
        None,
    ]
    blind = [Hypothesis(h.tokens, h.log_prob, h.score, graph=h.graph) for h in hyps]
    free = free_search(FakeStepModel(lexicon.text_to_tokens(texts[0])))
    for i in (0, 2):
        fast = confidence_features(hyps[i], free, hyps[i + 1 :], g)
        assert fast == confidence_features(blind[i], free, blind[i + 1 :], g)
    assert confidence_features(hyps[0], free, hyps[1:], g).meaning_margin == pytest.approx(0.2)
    # "louder please" and "volume up" mean the same: the rival is "volume down".
    assert confidence_features(hyps[2], free, hyps[3:], g).meaning_margin == pytest.approx(0.2)


def test_a_rival_of_another_intent_is_one_without_reading_its_slots(monkeypatch) -> None:
    # "volume up" fills a list, so its meaning needs hassil; but the graph names its intent,
    # which is not the best's, so it is the meaning margin's rival as it stands.
    g = grammar_from_dict(
        {
            "intents": {
                "GetTime": {"data": [{"sentences": ["what time is it"]}]},
                "Volume": {"data": [{"sentences": ["volume {step}"]}]},
            },
            "lists": {"step": {"values": ["up", "down"]}},
        }
    )
    best, rival = _finished(g.graph, "what time is it", -0.1), _finished(g.graph, "volume up", -0.4)
    read = []
    recognize_text = g.recognize_text
    monkeypatch.setattr(g, "recognize_text", lambda *a: read.append(a[0]) or recognize_text(*a))
    free = free_search(FakeStepModel(lexicon.text_to_tokens("what time is it")))
    feats = confidence_features(best, free, [rival], g)
    assert feats.meaning_margin == pytest.approx(0.3) == feats.margin
    assert read == []


def test_homophones_share_one_beam_entry() -> None:
    g = grammar_from_dict(
        {"intents": {"A": {"data": [{"sentences": ["(for|four) (to|two|too)"]}]}}}
    )
    hyps = constrained_search(FakeStepModel(lexicon.text_to_tokens("four two")), g)
    token_seqs = [h.tokens for h in hyps]
    assert len(token_seqs) == len(set(token_seqs))
    best = hyps[0]
    assert len(best.readings) >= 4  # one token sequence, several word readings
    assert "four two" in best.texts and len(set(best.texts)) == len(best.texts)


def test_phone_loop_free_search_is_well_formed() -> None:
    target = lexicon.text_to_tokens("hello world")
    result = free_search(FakeStepModel(target), phone_loop=True)
    assert list(result.tokens) == target
    assert result.tokens[0] > WORD_BOUNDARY_ID
    assert result.tokens[-1] == EOS_ID


def test_row_padding_and_small_batch(home: Grammar) -> None:
    hyps = run(home, "turn off the bedroom light", batch_size=3)
    assert hyps[0].text == "turn off the bedroom light"


@pytest.mark.parametrize("text", ["turn on the kitchen lights", "turn off the fan please"])
def test_fused_search_equals_the_two_searches_apart(home: Grammar, text: str) -> None:
    # One batch holds the grammar beam and the free decode; rows must not leak between them
    # (the fake model punishes a row fed another row's tokens or state).
    target = lexicon.text_to_tokens(text)
    apart = FakeStepModel(target, batch_size=9)
    hyps = constrained_search(apart, home, beam=8, max_steps=60)
    free = free_search(apart, beam=1, max_steps=60)
    fused = FakeStepModel(target, batch_size=9)
    fused_hyps, fused_free = constrained_and_free_search(fused, home, beam=8, max_steps=60)
    assert [(h.tokens, h.score) for h in fused_hyps] == [(h.tokens, h.score) for h in hyps]
    assert (fused_free.tokens, fused_free.log_prob) == (free.tokens, free.log_prob)
    assert list(fused_free.tokens) == target
    assert fused.calls < apart.calls  # one invoke per step serves both


def test_fused_search_needs_a_row_for_the_free_decode(home: Grammar) -> None:
    model = FakeStepModel(lexicon.text_to_tokens("turn off fan"), batch_size=8)
    with pytest.raises(ValueError, match="more rows"):
        constrained_and_free_search(model, home, beam=8, max_steps=60)


def test_max_steps_too_small_gives_nothing(home: Grammar) -> None:
    model = FakeStepModel(lexicon.text_to_tokens("turn on the kitchen lights"))
    assert constrained_search(model, home, max_steps=5) == []


class ConstantModel(FakeStepModel):
    """Fixed-cost model step: lets the test measure the search's own Python time."""

    def step(self, tokens: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        pos = states[:, 0].astype(int)
        logits = self._table[np.minimum(pos, len(self.target) - 1)]
        return logits, states + np.array([1.0, 0.0], dtype=np.float32)

    def prepare(self) -> None:
        table = np.full((len(self.target), self.vocab_size), -8.0, dtype=np.float32)
        table[np.arange(len(self.target)), self.target] = -0.01
        self._table = table


def _decode_time(grammar: Grammar, text: str) -> tuple[float, int]:
    model = ConstantModel(lexicon.text_to_tokens(text))
    model.prepare()
    constrained_search(model, grammar)  # warm the lazy determinisation cache
    model.calls = 0
    start = time.perf_counter()
    hyps = constrained_search(model, grammar)
    elapsed = time.perf_counter() - start
    assert hyps[0].text == text
    return elapsed, model.calls


def test_decode_cost_does_not_grow_with_sentence_count(tmp_path: Path, home: Grammar) -> None:
    words = "red green blue cyan pink gold grey white black brown".split()
    lists = {f"l{i}": {"values": [f"{w}" for w in words]} for i in range(7)}
    big = grammar_from_dict(
        {
            "intents": {
                "Big": {"data": [{"sentences": [" ".join(f"{{l{i}}}" for i in range(7))]}]}
            },
            "lists": lists,
        }
    )
    assert big.expansion_count() == 1e7
    big_time, big_steps = _decode_time(big, "red blue pink gold grey white cyan")
    small_time, small_steps = _decode_time(home, "set a timer for twenty five minutes")
    per_step_big, per_step_small = big_time / big_steps, small_time / small_steps
    print(
        f"search time per step: big {per_step_big * 1e3:.3f} ms, "
        f"small {per_step_small * 1e3:.3f} ms"
    )
    assert per_step_big < 1e-3 and per_step_small < 1e-3  # 25 steps -> a few ms in all


def test_a_large_search_cache_is_let_go_and_its_results_still_read(home: Grammar) -> None:
    # A daemon meets new grammar states with every new command; past a size the cache of
    # determinised states is dropped between utterances. Hypotheses already found keep
    # reading their sentences from the states they were found in.
    hyps = run(home, "turn on the kitchen lights")
    best = hyps[0]
    before = (best.sole_intent, best.sole_meaning, best.interpret(home))
    states = len(_dfa_for(home.graph))
    assert states > 10
    assert not forget_search_states(home.graph, above=states)  # not past the limit: kept
    assert forget_search_states(home.graph, above=states - 1)
    assert len(_dfa_for(home.graph)) == 1  # a fresh cache, built again on demand
    best._readings = None
    assert (best.sole_intent, best.sole_meaning, best.interpret(home)) == before
    again = run(home, "turn on the kitchen lights")
    assert [h.tokens for h in again] == [h.tokens for h in hyps]


def test_the_beam_keeps_its_prefixes_best_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stopping rule reads the best live prefix as the first one: every beam the joint
    # search keeps must be ordered by score.
    from assistant import decoder
    from assistant.ctc import CtcPrefixScorer

    home = load_grammar(ROOT / "models" / "home" / "grammar.yaml")
    target = lexicon.text_to_tokens("set a timer for twenty five minutes")
    logits = np.random.default_rng(11).normal(size=(60, len(lexicon.TOKENS) + 1))
    ctc = CtcPrefixScorer(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    beams = []
    step = decoder._Search.step

    def recording(search: decoder._Search, at: int, *args: np.ndarray) -> None:
        step(search, at, *args)
        if search.beam > 1:  # the live scores just written
            beams.append(search.live_d[1 - at % 2, 1, : search.n_live].copy())

    monkeypatch.setattr(decoder._Search, "step", recording)
    hyps, _ = constrained_and_free_search(
        FakeStepModel(target, batch_size=9), home, beam=8, max_steps=60, ctc=ctc, ctc_weight=0.5
    )
    assert hyps and len(beams) > 20
    assert any(len(b) > 1 for b in beams)
    for b in beams:
        assert np.all(np.diff(b) <= 0)


def test_greedy_free_decode_is_the_same_with_and_without_ctc() -> None:
    # At beam 1 a CTC score cannot change the choice among one candidate, so the free decode
    # skips it: the tokens and their attention log-prob are those of the plain greedy decode.
    from assistant.ctc import CtcPrefixScorer

    target = lexicon.text_to_tokens("turn off the fan please")
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(60, len(lexicon.TOKENS) + 1))
    ctc = CtcPrefixScorer(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    plain = free_search(FakeStepModel(target), beam=1, max_steps=60)
    joint = free_search(FakeStepModel(target), beam=1, max_steps=60, ctc=ctc, ctc_weight=0.5)
    assert list(joint.tokens) == list(plain.tokens) == target
    assert joint.log_prob == plain.log_prob


@pytest.mark.parametrize("allowed_per_prefix", [3, 30])
def test_a_joint_step_ranks_each_prefixs_top_k_by_attention_jointly(
    allowed_per_prefix: int,
) -> None:
    # Grammars mostly allow fewer tokens than the beam after a prefix (all are candidates);
    # at a word start they may allow more, and then only the beam's best by attention are.
    # The best 2 * beam candidates: the </s> ones finish, the first `beam` others stay live.

    from assistant.ctc import CtcPrefixScorer
    from assistant.decoder import _Search

    rng = np.random.default_rng(7)
    n, vocab, beam, weight = 4, len(lexicon.TOKENS), 6, 0.3
    logits = rng.normal(size=(4, vocab + 1))  # few frames: </s> can be likely
    ctc = CtcPrefixScorer(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    last = np.array([5, 9, 5, 12])
    state = ctc.advance(ctc.initial(), [-1], np.zeros(n), last)
    # The step's log-probs, each prefix's own, and each prefix's grammar state: graph state g
    # allows its chosen tokens, each a loop back to g, and the start leads to g by token g + 2
    # (the determinisation's state g + 1 is then {g}).
    log_probs = rng.normal(size=(n, vocab)).astype(np.float32) - 3
    # prefix 1 may end, and the attention is sure enough that it does, whatever CTC says
    log_probs[1, EOS_ID] = 2.0
    prefix_att = rng.normal(size=n) - 5
    allowed = np.zeros((n, vocab), bool)
    for g in range(n):
        allowed[g, rng.choice(np.arange(2, vocab), allowed_per_prefix, replace=False)] = True
    allowed[1, EOS_ID] = True
    arcs = [[(int(t), g) for t in np.flatnonzero(allowed[g])] for g in range(n)]
    arcs.append([(g + 2, g) for g in range(n)])  # the start, graph state n
    tokens_, nexts = zip(*(arc for state in arcs for arc in state), strict=True)
    graph = Graph(
        arc_start=np.cumsum([0] + [len(state) for state in arcs]).astype(np.int32),
        arc_token=np.array(tokens_, np.int32),
        arc_next=np.array(nexts, np.int32),
        arc_word=np.full(len(tokens_), -1, np.int32),
        words=(),
        start=n,
        final=n,
        vocab_size=vocab,
    )
    dfa = _dfa_for(graph)
    grammar_states = [2, 1, 3, 0]  # each prefix's
    dstates = [dfa.next_state(dfa.start, g + 2) for g in grammar_states]
    for d in dstates:
        dfa.expand(d)  # as the search leaves its live prefixes' states
    allowed = allowed[grammar_states]
    search = _Search(dfa, beam, 1.0, 0, 10, ctc, weight)  # type: ignore[arg-type]
    search.live_i[0, :, :n] = dstates, last
    search.live_d[0, 0, :n] = prefix_att
    search.ctc_state[0, :n] = state.data
    search.n_live = n
    # the step graph's batch holds the beam's rows; the live prefixes are its first n
    rows, tokens = np.zeros(beam, np.int64), np.zeros(beam, np.int32)
    batch = np.concatenate([log_probs, np.zeros((beam - n, vocab), np.float32)])
    search.step(0, batch, rows, tokens)
    total = np.where(allowed, prefix_att[:, None] + log_probs, -np.inf)

    # Reference: each prefix's best `beam` tokens by attention, scored one by one.
    expected = []
    for row in range(n):
        for tok in np.argsort(-total[row])[: min(beam, allowed[row].sum())]:
            if tok == EOS_ID:
                ctc_score = ctc.final(state[[row]])[0]
            else:
                ctc_score = ctc.prefix_scores(state, last, [row], [tok])[0]
            joint = (1 - weight) * total[row, tok] + weight * ctc_score
            expected.append((joint, row, int(tok)))
    expected.sort(reverse=True)
    expected = expected[: 2 * beam]
    ended = [(j, r) for j, r, t in expected if t == EOS_ID]
    kept = [(j, r, t) for j, r, t in expected if t != EOS_ID][:beam]
    assert search.n_fin == len(ended) == 1
    assert search.fin_i[: search.n_fin, 1].tolist() == [r for _, r in ended]
    # at step 0 a finished hypothesis is one token long: its score is the joint score
    np.testing.assert_allclose(search.fin_d[: search.n_fin, 1], [j for j, _ in ended], rtol=1e-12)
    assert search.n_live == len(kept)
    assert search.back[0, 0, : len(kept)].tolist() == [r for _, r, _ in kept]
    assert search.back[0, 1, : len(kept)].tolist() == [t for _, _, t in kept]
    np.testing.assert_allclose(
        search.live_d[1, 1, : len(kept)], [j for j, _, _ in kept], rtol=1e-12
    )
    # the next step's inputs: each kept prefix's row and its new token
    assert rows.tolist()[: len(kept)] == [r for _, r, _ in kept]
    assert tokens.tolist()[: len(kept)] == [t for _, _, t in kept]
    # The prefixes the beam keeps come advanced.
    advanced = ctc.advance(state, last, [r for _, r, _ in kept], [t for _, _, t in kept])
    np.testing.assert_array_equal(search.ctc_state[1, : len(kept)], advanced.data)


def test_the_compiled_search_step_refuses_arrays_that_do_not_fit(home: Grammar) -> None:
    # A wrong call is a ValueError naming what is wrong, never a read past the end of an array.
    from assistant import _searchc
    from assistant.decoder import _Search

    dfa = _dfa_for(home.graph)
    dfa.expand(dfa.start)
    search = _Search(dfa, 4, 1.0, 0, 10, None, 0.0)
    vocab = home.graph.vocab_size
    log_probs = np.zeros((4, vocab), np.float32)
    states = dfa.states
    rows, tokens = np.zeros(4, np.int64), np.zeros(4, np.int32)

    def call(**changed: object) -> None:
        args = dict(
            mode=1, log_probs=log_probs, at=0, dfa=states, live_i=search.live_i,
            live_d=search.live_d, ctc_state=search.ctc_state, tables=search.tables, T=1, W=2,
            step=0, n_live=1, beam=4, length_penalty=1.0, weight=0.0, eos=EOS_ID,
            back=search.back, fin_i=search.fin_i, fin_d=search.fin_d, n_fin=0, rows=rows,
            tokens=tokens,
        )  # fmt: skip
        args.update(changed)
        _searchc.search_step(*args.values())

    call()  # as the search calls it
    with pytest.raises(TypeError, match="must be a Determinized"):
        call(dfa=dfa)
    with pytest.raises(ValueError, match="log_probs: expected float32"):
        call(log_probs=log_probs.astype(np.float64))
    with pytest.raises(ValueError, match="do not fit"):
        call(log_probs=log_probs[:, :-1].copy())
    with pytest.raises(ValueError, match="do not fit"):
        call(at=1)  # the beam's rows past the batch
    with pytest.raises(ValueError, match="do not fit"):
        call(step=10)  # past the steps `back` has room for
    with pytest.raises(ValueError, match="bad sizes"):
        call(n_live=5)  # more live prefixes than the beam
    search.live_i[0, 0, 0] = len(dfa)  # no such state
    with pytest.raises(ValueError, match="grammar state is unknown or not expanded"):
        call()
    unexpanded = next(d for d in range(len(dfa)) if not states.expanded(d))
    search.live_i[0, 0, 0] = unexpanded
    with pytest.raises(ValueError, match="grammar state is unknown or not expanded"):
        call()
    out = np.zeros((1, 11), np.int64)
    with pytest.raises(ValueError, match="a step outside back"):
        _searchc.spell(search.back, 4, np.array([[10, 0, 0]], np.int64), 1, EOS_ID, out)
    with pytest.raises(ValueError, match="a row outside the beam"):
        _searchc.spell(search.back, 4, np.array([[2, 7, 0]], np.int64), 1, EOS_ID, out)


def test_the_determinisation_follows_the_graph() -> None:
    # Each determinised state stands for the set of graph states its tokens reach, found here
    # again by walking the graph's arcs directly.
    home = load_grammar(ROOT / "models" / "home" / "grammar.yaml")
    graph = home.graph
    dfa = _dfa_for(graph)
    for sample in home.sentences_sample(200, seed=5):
        d, states = dfa.start, {graph.start}
        for tok in lexicon.text_to_tokens(sample.text)[:-1]:
            allowed = {int(graph.arc_token[a]) for s in states for a in graph.arcs(s)}
            forbidden = next(t for t in range(graph.vocab_size) if t not in allowed)
            assert dfa.next_state(d, forbidden) == -1
            d = dfa.next_state(d, tok)
            states = {int(graph.arc_next[a]) for s in states for a in graph.arcs(s)
                      if graph.arc_token[a] == tok}  # fmt: skip
            assert d >= 0 and dfa.states.states(d) == tuple(sorted(states))
        assert dfa.next_state(d, EOS_ID) >= 0  # a whole sentence may end


def test_a_graph_that_is_no_graph_is_refused() -> None:
    from assistant._searchc import Determinized

    def arcs(*values: list[int]) -> list[np.ndarray]:
        return [np.array(v, np.int32) for v in values]

    Determinized(*arcs([0, 1, 1], [3], [1]), 5, 0)  # 0 -(3)-> 1
    with pytest.raises(ValueError, match="leads outside the graph"):
        Determinized(*arcs([0, 1, 1], [3], [2]), 5, 0)
    with pytest.raises(ValueError, match="leads outside the graph"):
        Determinized(*arcs([0, 1, 1], [7], [1]), 5, 0)  # a token past the vocabulary
    with pytest.raises(ValueError, match="arc_start goes down"):
        Determinized(*arcs([0, 2, 1], [3], [1]), 5, 0)
    with pytest.raises(ValueError, match="no CSR graph"):
        Determinized(*arcs([0, 1, 2], [3], [1]), 5, 0)  # more arcs than there are
    with pytest.raises(ValueError, match="no CSR graph"):
        Determinized(*arcs([0, 1, 1], [3], [1]), 5, 2)  # no start state 2
    with pytest.raises(ValueError, match="arc_start: expected int32"):
        Determinized(np.array([0, 1, 1], np.int64), *arcs([3], [1]), 5, 0)
    dfa = Determinized(*arcs([0, 1, 1], [3], [1]), 5, 0)
    with pytest.raises(IndexError, match="no state 1"):
        dfa.expand(1)  # not reached yet
    assert dfa.next_state(0, 3) == 1 and dfa.next_state(0, 2) == -1
    assert dfa.states(1) == (1,) and not dfa.expanded(1)
