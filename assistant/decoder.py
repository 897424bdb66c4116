"""Beam search over the attention decoder, constrained by a grammar's token graph.

Beam entries are token prefixes: the decoder state depends only on the tokens fed, so two
grammar paths that spell the same phones (homophones, optional words that sound alike) share
one entry and one model row. Each entry carries the *set* of graph states its prefix reaches,
i.e. a state of the graph's determinisation, built lazily and cached per graph: after the
first utterances, a step is one compiled call (ctc.py, _ctcstep.c) and a few dict lookups.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .ctc import CtcPrefixScorer, CtcState
from .grammar import Graph, SentenceMeaning, any_token_graph, phone_loop_graph, slot_key
from .lexicon import EOS_ID, PAD_ID
from .units import Units

if TYPE_CHECKING:
    from .grammar import Grammar

NO_RIVAL_MARGIN = 10.0  # margin reported when no other intent survived the beam


class StepModel(Protocol):
    batch_size: int  # fixed batch of the decoder-step graph (= max beam); unused rows padded
    state_size: int
    vocab_size: int

    def start(self) -> np.ndarray:
        """Initial decoder state, shape [state_size]."""
        ...

    def step(self, tokens: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens int32 [batch_size], states float32 [batch_size, state_size] ->
        (log_probs float32 [batch_size, vocab_size], new_states [batch_size, state_size])."""
        ...


@dataclass
class Hypothesis:
    tokens: tuple[int, ...]  # ends with </s>
    log_prob: float  # sum over tokens, </s> included
    score: float  # length-normalised log-prob, what hypotheses are ranked by
    dfa_state: int = -1  # determinised graph state before </s>
    # the determinisation dfa_state belongs to (the search's): the cache may have let it go
    dfa: _LazyDfa | None = field(default=None, repr=False, compare=False)
    ctc_log_prob: float | None = None  # log P(tokens) under CTC, when the search used it
    graph: Graph | None = field(default=None, repr=False, compare=False)
    max_readings: int = 4
    _readings: tuple[tuple[str, ...], ...] | None = field(default=None, repr=False, compare=False)

    @property
    def readings(self) -> tuple[tuple[str, ...], ...]:
        """Word sequences of up to ``max_readings`` graph paths spelling these tokens
        (homophones give several); found on first use, not during the search."""
        if self._readings is None:
            paths = self.graph.word_paths(self.tokens, self.max_readings) if self.graph else []
            self._readings = tuple(paths)
        return self._readings

    @property
    def sole_intent(self) -> str | None:
        """The intent of this hypothesis when every grammar path spelling its tokens is a
        sentence of that one intent (read from the graph's states, no words needed), else
        None (several intents, or a graph without intents)."""
        intents = {meaning.intent for meaning in self._sentences()}
        return intents.pop() if len(intents) == 1 else None

    @property
    def sole_meaning(self) -> tuple[str, tuple[tuple[str, str], ...]] | None:
        """(intent, slot_key) when every path spelling these tokens is a sentence without
        lists and they all mean the same, else None (hassil must read the words)."""
        meanings = {(m.intent, m.fixed_slots) for m in self._sentences()}
        if len(meanings) != 1:
            return None
        intent, fixed = meanings.pop()
        return None if fixed is None else (intent, fixed)

    def _sentences(self) -> list[SentenceMeaning]:
        """The template sentences that end this hypothesis (empty when unknown)."""
        if self.graph is None or self.graph.end_sentence is None or self.dfa_state < 0:
            return []
        ids = (self.dfa or _dfa_for(self.graph)).end_sentences(self.dfa_state)
        return [self.graph.sentences[i] for i in ids]

    @property
    def labels(self) -> list[int]:
        """The phone tokens alone (no </s>, no padding): what CTC scores and spells."""
        return [t for t in self.tokens if t not in (EOS_ID, PAD_ID)]

    @property
    def words(self) -> tuple[str, ...]:
        return self.readings[0] if self.readings else ()

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def texts(self) -> list[str]:
        return [" ".join(r) for r in self.readings]

    def interpret(self, grammar: Grammar) -> tuple[str, str, dict[str, Any]] | None:
        """(text, intent, slots) of the first reading the grammar recognises. Where the
        graph names the intent (sole_intent), hassil matches only its templates. The first
        reading is tried before the others are looked for: it is nearly always the one, and
        making sure a long command has no other reading (homophones) is most of its walk."""
        intent = self.sole_intent
        if self._readings is None and self.graph is not None:
            first = self.graph.word_paths(self.tokens, 1)
            if first:
                found = grammar.recognize_text(" ".join(first[0]), intent)
                if found is not None:
                    return " ".join(first[0]), found[0], found[1]
        for text in self.texts:
            found = grammar.recognize_text(text, intent)
            if found is not None:
                return text, found[0], found[1]
        return None


@dataclass
class FreeResult:
    tokens: tuple[int, ...]
    log_prob: float

    @property
    def per_token(self) -> float:
        return self.log_prob / max(1, len(self.tokens))


# ---------------------------------------------------------------------------------------------
# Lazy determinisation


class _LazyDfa:
    """Subset construction on demand. State d is a set of graph states, kept as a sorted tuple
    (``sets[d]``; a tuple takes a fraction of a frozenset's memory); ``masks[d]`` is 0 for
    allowed tokens and -inf elsewhere; ``trans[d]`` maps token -> next d."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        # The arcs read through memoryviews: a Python int per read, where indexing the numpy
        # arrays makes a numpy scalar (expansion 2.7x faster, 2026-12-06).
        self._arc_start = memoryview(graph.arc_start)
        self._arc_token = memoryview(graph.arc_token)
        self._arc_next = memoryview(graph.arc_next)
        self.ids: dict[tuple[int, ...], int] = {}
        self.sets: list[tuple[int, ...]] = []
        self.trans: list[dict[int, int] | None] = []
        self.masks = np.zeros((0, graph.vocab_size), dtype=np.float32)
        self.start = self.state((graph.start,))
        self._end_sentences: dict[int, frozenset[int]] = {}

    def state(self, nfa_states: tuple[int, ...]) -> int:
        """The id of a set of graph states, given sorted."""
        found = self.ids.get(nfa_states)
        if found is not None:
            return found
        d = len(self.sets)
        self.ids[nfa_states] = d
        self.sets.append(nfa_states)
        self.trans.append(None)
        if d == len(self.masks):  # grow by doubling: one fancy-index per step reads them
            grown = np.full((max(16, 2 * d), self.graph.vocab_size), -np.inf, dtype=np.float32)
            grown[:d] = self.masks
            self.masks = grown
        return d

    def expand(self, d: int) -> dict[int, int]:
        known = self.trans[d]
        if known is not None:
            return known
        arc_start, arc_token, arc_next = self._arc_start, self._arc_token, self._arc_next
        by_token: dict[int, set[int]] = {}
        for s in self.sets[d]:
            for a in range(arc_start[s], arc_start[s + 1]):
                nexts = by_token.get(arc_token[a])
                if nexts is None:
                    by_token[arc_token[a]] = {arc_next[a]}
                else:
                    nexts.add(arc_next[a])
        trans = {tok: self.state(tuple(sorted(nxt))) for tok, nxt in by_token.items()}
        self.trans[d] = trans
        row = self.masks[d]  # -inf since its rows were grown; most states allow 1-2 tokens
        for tok in trans:
            row[tok] = 0.0
        return trans

    def end_sentences(self, d: int) -> frozenset[int]:
        """Template sentences (indices into graph.sentences) that </s> ends from d."""
        found = self._end_sentences.get(d)
        if found is None:
            assert self.graph.end_sentence is not None
            labels = self.graph.end_sentence[np.fromiter(self.sets[d], dtype=np.int64)]
            found = self._end_sentences[d] = frozenset(labels[labels >= 0].tolist())
        return found


_DFAS: weakref.WeakKeyDictionary[Graph, _LazyDfa] = weakref.WeakKeyDictionary()


def _dfa_for(graph: Graph) -> _LazyDfa:
    dfa = _DFAS.get(graph)
    if dfa is None:
        dfa = _DFAS[graph] = _LazyDfa(graph)
    return dfa


def forget_search_states(graph: Graph, above: int) -> bool:
    """Lets ``graph``'s determinisation go when it holds more than ``above`` states; it is
    built again as searches need it. A state costs ~0.7 kB (its tuple of graph states, its
    transitions and mask), and the states a daemon meets grow with every new command: with
    the home grammar, 10k states and 12 MB more after 500 different commands (2026-12-06)."""
    dfa = _DFAS.get(graph)
    if dfa is None or len(dfa.sets) <= above:
        return False
    del _DFAS[graph]
    return True


# ---------------------------------------------------------------------------------------------
# Search


@dataclass
class _Beam:
    prefixes: list[tuple[int, ...]]
    dstates: list[int]
    scores: np.ndarray  # float64 [n]: what prefixes are ranked by (joint with CTC if used)
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    att: np.ndarray = field(default_factory=lambda: np.zeros(0))  # attention log-prob [n]
    # last token of each prefix [n], -1 for the empty one
    last: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ctc: CtcState | None = None  # the prefixes' CTC paths, when the search uses CTC


@dataclass
class _Search:
    """One beam search's share of the step model's batch: rows offset .. offset + beam - 1."""

    dfa: _LazyDfa
    beam: int
    length_penalty: float
    offset: int
    live: _Beam
    finished: list[Hypothesis] = field(default_factory=list)
    done: bool = False


def _search_many(
    model: StepModel,
    searches: Sequence[tuple[Graph, int, float]],
    max_steps: int,
    ctc: CtcPrefixScorer | None = None,
    ctc_weight: float = 0.0,
) -> list[list[Hypothesis]]:
    """Runs beam searches over several graphs (graph, beam, length penalty) in lockstep, each
    in its own rows of one batch, so that one step-graph invoke serves them all: the grammar
    search and the free decode the confidence compares it with cost one invoke per step."""
    batch = model.batch_size
    start = np.asarray(model.start(), dtype=np.float32)
    running: list[_Search] = []
    offset = 0
    for graph, beam, length_penalty in searches:
        if offset >= batch:
            raise ValueError(f"searches need more rows than the step model's {batch}")
        beam = max(1, min(beam, batch - offset))
        dfa = _dfa_for(graph)
        dfa.expand(dfa.start)
        live = _Beam([()], [dfa.start], np.zeros(1), att=np.zeros(1), last=np.full(1, -1))
        if ctc is not None and beam > 1:  # beam 1 takes its one best token without CTC
            live.ctc = ctc.initial()
        running.append(_Search(dfa, beam, length_penalty, offset, live))
        offset += beam
    states = np.repeat(start[None], batch, axis=0)
    tokens = np.full(batch, PAD_ID, dtype=np.int32)
    for _ in range(max_steps):
        log_probs, new_states = model.step(tokens, states)
        rows = np.zeros(batch, dtype=np.int64)
        tokens[:] = PAD_ID
        for search in running:
            if search.done:
                continue
            live, dfa, at = search.live, search.dfa, search.offset
            n = len(live.prefixes)
            live = _select(
                log_probs[at : at + n],
                live,
                dfa,
                search.beam,
                search.finished,
                search.length_penalty,
                ctc,
                ctc_weight,
            )
            search.live = live
            # Stop once a finished hypothesis beats what any live one could reach by ending now.
            search.done = not live.prefixes or bool(
                search.finished
                and max(h.score for h in search.finished)
                > _best_possible(live, search.length_penalty)
            )
            if not search.done:
                rows[at : at + len(live.rows)] = at + live.rows
                tokens[at : at + len(live.last)] = live.last
        if all(search.done for search in running):
            break
        states = new_states[rows]
    for search in running:
        search.finished.sort(key=lambda h: h.score, reverse=True)
    return [search.finished for search in running]


@dataclass
class _Candidates:
    """Extensions of live prefixes (row, token), best first by ``score``: what the search ranks
    by; ``att`` is the attention log-prob, ``ctc`` the CTC prefix score when one is used."""

    rows: np.ndarray
    toks: np.ndarray
    score: np.ndarray
    att: np.ndarray
    ctc: np.ndarray | None = None
    # CTC state of the first ``beam`` candidates that are not </s>: those kept live
    ctc_state: CtcState | None = None


def _attention_candidates(total: np.ndarray, beam: int) -> _Candidates:
    """The 2 * beam best extensions overall: enough, since at most ``beam`` end per step."""
    vocab = total.shape[1]
    flat = total.ravel()
    k = min(2 * beam, flat.size)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.argsort(-flat[top], kind="stable")]
    top = top[np.isfinite(flat[top])]
    rows, toks = np.divmod(top, vocab)
    return _Candidates(rows, toks, flat[top], flat[top])


def _greedy_candidate(total: np.ndarray) -> _Candidates:
    """Beam 1 (the free decode beside the grammar search): the one best token of its one
    prefix (``total`` [V]). A CTC score cannot change a choice among one candidate, so it is
    not computed (it would only end the decode where CTC finds no alignment; the free decode
    reports attention scores)."""
    tok = int(total.argmax())
    score = total[tok : tok + 1]
    if not math.isfinite(score[0]):
        score = score[:0]
    rows, toks = (np.array([i][: len(score)], dtype=np.int64) for i in (0, tok))
    return _Candidates(rows, toks, score, score)


def _joint_candidates(
    log_probs: np.ndarray, live: _Beam, masks: np.ndarray, beam: int, ctc: CtcPrefixScorer,
    weight: float,
) -> _Candidates:  # fmt: skip
    """Ranked by (1 - w) * attention + w * CTC prefix score. The attention scores pre-select
    ``beam`` candidates per prefix (CtcPrefixScorer.select)."""
    assert live.ctc is not None
    step = ctc.select(
        log_probs, live.att, masks, live.dstates, live.ctc, live.last, beam, weight, EOS_ID
    )
    (rows, toks), (joint, att, ctc_score) = step.index, step.score
    return _Candidates(rows, toks, joint, att, ctc_score, step.kept)


def _select(
    log_probs: np.ndarray,
    live: _Beam,
    dfa: _LazyDfa,
    beam: int,
    finished: list[Hypothesis],
    length_penalty: float,
    ctc: CtcPrefixScorer | None = None,
    ctc_weight: float = 0.0,
) -> _Beam:
    """Best extensions of all live prefixes (by attention, or jointly with CTC): </s> ones are
    finished, the best ``beam`` others stay live. log_probs [n, V]: this step's attention
    log-probs of the live prefixes' next tokens."""
    if beam > 1 and ctc is not None:
        cand = _joint_candidates(log_probs, live, dfa.masks, beam, ctc, ctc_weight)
    elif beam == 1:  # one live prefix: its extensions' scores in all, -inf where forbidden
        # (att[:1], an array: a float64 scalar would make the sum float32 under numpy 1's
        # casting rules)
        cand = _greedy_candidate(live.att[:1] + log_probs[0] + dfa.masks[live.dstates[0]])
    else:
        total = live.att[:, None] + log_probs + dfa.masks[live.dstates]
        cand = _attention_candidates(total, beam)
    prefixes, dstates, kept = [], [], []
    for i, (row, tok) in enumerate(zip(cand.rows.tolist(), cand.toks.tolist(), strict=True)):
        if tok == EOS_ID:
            prefix = (*live.prefixes[row], tok)
            norm = float(cand.score[i]) / len(prefix) ** length_penalty
            ctc_log_prob = None if cand.ctc is None else float(cand.ctc[i])
            finished.append(
                Hypothesis(
                    prefix,
                    float(cand.att[i]),
                    norm,
                    dfa_state=live.dstates[row],
                    dfa=dfa,
                    ctc_log_prob=ctc_log_prob,
                )
            )
        elif len(prefixes) < beam:
            nxt = dfa.expand(live.dstates[row])[tok]
            dfa.expand(nxt)
            prefixes.append((*live.prefixes[row], tok))
            dstates.append(nxt)
            kept.append(i)
    kept_at = np.array(kept, dtype=np.int64)
    return _Beam(
        prefixes,
        dstates,
        cand.score[kept_at],
        cand.rows[kept_at],
        att=cand.att[kept_at],
        last=cand.toks[kept_at],
        # the joint step advanced the CTC state of just these: its first ``beam``
        # candidates that are not </s>, kept above in the same order
        ctc=cand.ctc_state,
    )


def _best_possible(live: _Beam, length_penalty: float) -> float:
    """Optimistic final score of the best live prefix if it ended at no cost on the next step.
    Not a strict bound (later confident tokens raise a per-token average), but once a
    finished hypothesis beats every live one by this measure, decoding on rarely helps.
    The search runs in lockstep, so every live prefix has the same length, and the beam
    keeps its prefixes best first, so the first scores highest."""
    return float(live.scores[0]) / (len(live.prefixes[0]) + 1) ** length_penalty


def constrained_search(
    model: StepModel,
    grammar: Grammar | Graph,
    beam: int = 8,
    max_steps: int = 80,
    length_penalty: float = 1.0,
    readings: int = 4,
    ctc: CtcPrefixScorer | None = None,
    ctc_weight: float = 0.0,
) -> list[Hypothesis]:
    """Hypotheses that the grammar accepts, best (length-normalised) first; empty if none
    finished within ``max_steps``. Each carries up to ``readings`` word readings. With a
    CTC scorer, prefixes are ranked by the joint attention/CTC score (``score``), while
    ``log_prob`` stays the attention log-prob."""
    graph = grammar if isinstance(grammar, Graph) else grammar.graph
    [hyps] = _search_many(model, [(graph, beam, length_penalty)], max_steps, ctc, ctc_weight)
    return _with_readings(hyps, graph, readings)


def _with_readings(hyps: list[Hypothesis], graph: Graph, readings: int) -> list[Hypothesis]:
    """Lets each hypothesis find its word readings in ``graph`` on first use."""
    for h in hyps:
        h.graph, h.max_readings = graph, readings
    return hyps


def constrained_and_free_search(
    model: StepModel,
    grammar: Grammar | Graph,
    beam: int = 8,
    max_steps: int = 80,
    readings: int = 4,
    ctc: CtcPrefixScorer | None = None,
    ctc_weight: float = 0.0,
) -> tuple[list[Hypothesis], FreeResult]:
    """constrained_search and a beam-1 free_search together, sharing each step invoke (the
    step model needs beam + 1 rows)."""
    graph = grammar if isinstance(grammar, Graph) else grammar.graph
    hyps, free = _search_many(
        model,
        [(graph, beam, 1.0), (_any_token_graph(graph.vocab_size), 1, 1.0)],
        max_steps,
        ctc,
        ctc_weight,
    )
    return _with_readings(hyps, graph, readings), _free_result(free)


def free_search(
    model: StepModel,
    beam: int = 4,
    max_steps: int = 80,
    phone_loop: bool = False,
    ctc: CtcPrefixScorer | None = None,
    ctc_weight: float = 0.0,
    units: Units | None = None,
) -> FreeResult:
    """Best sequence of ``units`` (the phone set by default) with no grammar (any tokens), or
    with ``phone_loop`` any well-formed words (</s> after a whole word). The yardstick the
    constrained result is compared with for confidence."""
    units = units or Units.phones()
    graph = _phone_loop_graph(units) if phone_loop else _any_token_graph(len(units.tokens))
    [hyps] = _search_many(model, [(graph, beam, 1.0)], max_steps, ctc, ctc_weight)
    return _free_result(hyps)


# Built once per unit set: the decoders cache their per-graph tables by graph identity.
_any_token_graph = lru_cache(maxsize=4)(any_token_graph)
_phone_loop_graph = lru_cache(maxsize=4)(phone_loop_graph)


def _free_result(hyps: list[Hypothesis]) -> FreeResult:
    if not hyps:
        return FreeResult((), -np.inf)
    return FreeResult(hyps[0].tokens, hyps[0].log_prob)


# ---------------------------------------------------------------------------------------------
# Confidence


@dataclass(frozen=True)
class ConfidenceFeatures:
    constrained_per_token: float  # log-prob per token of the best grammar hypothesis
    free_per_token: float  # log-prob per token of the unconstrained best
    difference: float  # free - constrained: how much the grammar had to force
    margin: float  # best score - score of the best hypothesis with another intent
    length: int  # tokens in the best hypothesis
    # best score - score of the best hypothesis with another meaning (intent or slot values):
    # "set brightness to nine" against "... ninety" is a rival the intent margin cannot see.
    meaning_margin: float = NO_RIVAL_MARGIN

    def as_array(self) -> np.ndarray:
        return np.array(
            [
                self.constrained_per_token,
                self.free_per_token,
                self.difference,
                self.margin,
                float(self.length),
            ],
            dtype=np.float32,
        )


def confidence_features(
    best: Hypothesis,
    free: FreeResult,
    others: Sequence[Hypothesis] = (),
    grammar: Grammar | None = None,
) -> ConfidenceFeatures:
    """Numbers for a calibrator. ``others`` are the remaining hypotheses (best first); with a
    grammar, the rival is the first of another intent, else the first with another text."""
    constrained = best.log_prob / max(1, len(best.tokens))
    free_pt = free.per_token if free.tokens else constrained
    return ConfidenceFeatures(
        constrained_per_token=constrained,
        free_per_token=free_pt,
        difference=free_pt - constrained,
        margin=_margin(best, others, grammar),
        length=len(best.tokens),
        meaning_margin=_margin(best, others, grammar, meaning=True),
    )


def _margin(
    best: Hypothesis,
    others: Sequence[Hypothesis],
    grammar: Grammar | None,
    meaning: bool = False,
) -> float:
    """Score gap to the first rival: another text without a grammar, else another intent (or
    with ``meaning``, another intent or slot values)."""

    def key(h: Hypothesis) -> Any:
        if grammar is None:
            return h.text
        # Most of an N-best list shares the best's intent ("... to twenty five degrees",
        # "... to twenty four degrees"), or its whole meaning ("what time is it", "what's
        # the time"): the graph names them without reading words or running hassil (~0.5 ms
        # a hypothesis), and the margins walk the list until one differs.
        sole = h.sole_meaning if meaning else h.sole_intent
        if sole is not None:
            return sole
        found = h.interpret(grammar)
        if found is None:
            return None
        if meaning:
            return found[1], slot_key(found[2])
        return found[1]

    mine = key(best)
    # Another intent is another meaning too: where the graph names a rival's intent, its slots
    # need no reading (hassil on a long command with numbers, ~0.5 ms a hypothesis).
    my_intent = mine[0] if meaning and grammar is not None and mine is not None else None
    for other in others:
        if other is best:
            continue
        rival_intent = other.sole_intent if my_intent is not None else None
        if (rival_intent is not None and rival_intent != my_intent) or key(other) != mine:
            return min(NO_RIVAL_MARGIN, best.score - other.score)
    return NO_RIVAL_MARGIN
