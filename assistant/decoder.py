"""Beam search over the attention decoder, constrained by a grammar's token graph.

Beam entries are token prefixes: the decoder state depends only on the tokens fed, so two
grammar paths that spell the same phones (homophones, optional words that sound alike) share
one entry and one model row. Each entry carries the *set* of graph states its prefix reaches,
i.e. a state of the graph's determinisation, built lazily and cached per graph. A step of a
search is one compiled call (``_searchc.search_step``), grammar states included.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import _searchc
from .ctc import CtcPrefixScorer
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
    """A graph's determinisation, built on demand (``_searchc.Determinized``: subset
    construction in C, where the search step expands the states it keeps). State d is a set
    of graph states; ``next_state(d, token)`` is where a token leads, -1 where the grammar
    forbids it."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        arcs = (graph.arc_start, graph.arc_token, graph.arc_next)
        self.states = _searchc.Determinized(
            *(np.ascontiguousarray(a, np.int32) for a in arcs), graph.vocab_size, graph.start
        )
        self.start = 0  # {graph.start}
        self._end_sentences: dict[int, frozenset[int]] = {}

    def __len__(self) -> int:
        return len(self.states)

    def expand(self, d: int) -> None:
        self.states.expand(d)

    def next_state(self, d: int, token: int) -> int:
        return self.states.next_state(d, token)

    def end_sentences(self, d: int) -> frozenset[int]:
        """Template sentences (indices into graph.sentences) that </s> ends from d."""
        found = self._end_sentences.get(d)
        if found is None:
            assert self.graph.end_sentence is not None
            labels = self.graph.end_sentence[np.array(self.states.states(d), dtype=np.int64)]
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
    built again as searches need it. A state costs ~0.27 kB (its graph states, its row of next
    states and its hash slots), and the states a daemon meets grow with every new command: with
    the home grammar, 10k states after 500 different commands (12 MB when they were Python
    objects, 2026-12-06)."""
    dfa = _DFAS.get(graph)
    if dfa is None or len(dfa) <= above:
        return False
    del _DFAS[graph]
    return True


# ---------------------------------------------------------------------------------------------
# Search


_MODES = {"joint": 0, "attention": 1, "greedy": 2}  # how _searchc.search_step ranks


class _Search:
    """One beam search's share of the step model's batch (rows offset .. offset + beam - 1)
    and the arrays its compiled steps read and write: the live beam, double-buffered by the
    step's parity; each step's kept prefixes (their row and token, read back to spell the
    finished ones); and the finished hypotheses."""

    def __init__(
        self,
        dfa: _LazyDfa,
        beam: int,
        length_penalty: float,
        offset: int,
        max_steps: int,
        ctc: CtcPrefixScorer | None,
        ctc_weight: float,
    ) -> None:
        self.dfa, self.beam, self.length_penalty, self.offset = dfa, beam, length_penalty, offset
        # beam 1 (the free decode) takes its one best token: a CTC score cannot change a
        # choice among one candidate
        self.ctc = ctc if beam > 1 else None
        self.ctc_weight = ctc_weight
        self.mode = _MODES["greedy" if beam == 1 else "joint" if self.ctc else "attention"]
        self.live_i = np.zeros((2, 2, beam), np.int64)  # grammar state, last token
        self.live_d = np.zeros((2, 2, beam))  # attention log-prob, score
        self.live_i[0, :, 0] = dfa.start, -1  # the empty prefix
        if self.ctc is not None:
            self.frames, self._width = self.ctc.sizes
            self.ctc_state = np.zeros((2, beam, 2 * self.frames + 1))
            self.ctc_state[0, 0] = self.ctc.initial().data[0]
            self.tables = self.ctc.tables
        else:  # sizes the step does not read
            self.frames, self._width = 1, 2
            self.ctc_state, self.tables = np.zeros(2 * beam), np.zeros(1)
        self.back = np.zeros((max_steps, 2, beam), np.int64)
        cap = max_steps * 2 * beam  # at most 2 * beam candidates a step finish
        self.fin_i = np.zeros((cap, 3), np.int64)  # step, row, grammar state
        self.fin_d = np.zeros((cap, 3))  # attention log-prob, score, CTC log-prob
        self.n_live, self.n_fin, self.done = 1, 0, False

    def step(self, step: int, log_probs: np.ndarray, rows: np.ndarray, tokens: np.ndarray):
        """Ranks this step's extensions, finishes the </s> ones, keeps the best others, and
        writes their rows and tokens for the next step."""
        self.n_live, self.n_fin, self.done = _searchc.search_step(
            self.mode, log_probs, self.offset, self.dfa.states, self.live_i, self.live_d,
            self.ctc_state, self.tables, self.frames, self._width, step, self.n_live,
            self.beam, float(self.length_penalty), float(self.ctc_weight), EOS_ID, self.back,
            self.fin_i, self.fin_d, self.n_fin, rows, tokens,
        )  # fmt: skip

    def finished(self) -> list[Hypothesis]:
        """The finished hypotheses, best first (ties in the order they finished)."""
        n = self.n_fin
        spelled = np.zeros((n, len(self.back) + 1), np.int64)
        _searchc.spell(self.back, self.beam, self.fin_i, n, EOS_ID, spelled)
        ctc_scored = self.mode == _MODES["joint"]
        hyps = [
            Hypothesis(
                tuple(tokens[: end + 1]),
                att,
                score,
                dfa_state=dstate,
                dfa=self.dfa,
                ctc_log_prob=ctc_log_prob if ctc_scored else None,
            )
            for tokens, (end, _, dstate), (att, score, ctc_log_prob) in zip(
                spelled.tolist(), self.fin_i[:n].tolist(), self.fin_d[:n].tolist(), strict=True
            )
        ]
        hyps.sort(key=lambda h: h.score, reverse=True)
        return hyps


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
        running.append(_Search(dfa, beam, length_penalty, offset, max_steps, ctc, ctc_weight))
        offset += beam
    states = np.repeat(start[None], batch, axis=0)
    tokens = np.full(batch, PAD_ID, dtype=np.int32)
    rows = np.zeros(batch, dtype=np.int64)
    for step in range(max_steps):
        log_probs, new_states = model.step(tokens, states)
        log_probs = np.ascontiguousarray(log_probs, dtype=np.float32)
        rows[:] = 0
        tokens[:] = PAD_ID
        for search in running:
            if not search.done:
                search.step(step, log_probs, rows, tokens)
        if all(search.done for search in running):
            break
        states = new_states[rows]
    return [search.finished() for search in running]


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
