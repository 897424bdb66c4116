"""Command grammars: Home Assistant sentence templates -> a phone-level decoding graph.

Grammars are hassil YAML (Home Assistant ``custom_sentences`` format): ``intents``,
``lists`` (values, ``in``/``out`` pairs, ranges), ``expansion_rules`` and the template syntax
``(a|b)``, ``[optional]``, ``{list}``, ``<rule>``, ``(a;b)``. The graph is built from the
*parsed* templates, never by expanding sentences, so its size grows with the template text
and not with the number of sentences it accepts.

Build in three stages:
1. chunk graph: an NFA whose arcs carry text fragments, word breaks (spaces) or nothing;
   templates glue fragments into words ("light[s]" -> "light" | "lights"); each sentence
   has states of its own, ending in a final state of its own,
2. word graph: fragments joined into whole words, epsilon-free,
3. token graph: each word arc becomes one phone chain per pronunciation, "|" between words,
   ``</s>`` into the single final state from states labelled with their sentence (its
   intent, and its fixed slots when it has no lists: ``Graph.sentences``).

Extension (documented in DESIGN): an expansion rule may be a mapping
``{repeat: "<template>", min: 1, max: 20}``: the template said ``min`` to ``max`` times
(``max`` omitted = no limit), built as a loop in the graph. hassil itself sees it as nested
optionals (up to ``max``, or ``UNBOUNDED_REPEAT_TEXT_LIMIT`` times), for sampling and for
``recognize_text``.

Wildcard lists (``wildcard: true``) can't be decoded from audio: by default they raise a
GrammarError naming them; ``load_grammar(..., skip_wildcards=True)`` skips those sentences
with a warning instead.

Context keys (``requires_context``/``excludes_context``) are dropped: the recogniser has no
device context, and every sentence the graph accepts must also be recognisable as text.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import random
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml
from hassil import (
    Alternative,
    Expression,
    Group,
    Intents,
    ListReference,
    Permutation,
    RangeSlotList,
    RuleReference,
    Sentence,
    SlotList,
    TextChunk,
    TextSlotList,
    WildcardSlotList,
    merge_dict,
    parse_sentence,
    recognize,
)
from hassil import Sequence as Seq
from hassil.numbers import get_rbnf_engine

from . import _searchc, lexicon
from .lexicon import EOS_ID
from .units import Units

_LOG = logging.getLogger(__name__)

MAX_RANGE_NUMBERS = 20000  # bigger ranges make the graph (and training) pointless
MAX_PERMUTATION_ITEMS = 6
UNBOUNDED_REPEAT_TEXT_LIMIT = 40  # text-side (hassil) cap for repeats without max
UNBOUNDED_REPEAT_SAMPLE_EXTRA = 9  # sampled lengths: min .. min+9 when max is unbounded
_PUNCT_ONLY = re.compile(r"^[^\w']+$")


RECOGNIZED_CACHE = 4096  # texts whose interpretation is kept, oldest dropped first
_NOT_SEEN = object()


class GrammarError(ValueError):
    """A user error in a grammar file; the message names what is wrong and where."""


# ---------------------------------------------------------------------------------------------
# Words


def spoken_words(text: str) -> list[str]:
    """Split text into the words the graph uses: lower case, hyphens split ("twenty-five" is
    two spoken words), punctuation-only pieces dropped."""
    words = []
    for piece in text.replace("-", " ").split():
        word = lexicon.normalise_word(piece)
        if word and not _PUNCT_ONLY.match(word):
            words.append(word)
    return words


def normalise_text(text: str) -> str:
    return " ".join(spoken_words(text))


# ---------------------------------------------------------------------------------------------
# The token graph (what the decoder walks)


def slot_key(slots: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Slot values in a comparable form: what tells two meanings of one intent apart."""
    return tuple(sorted((name, str(value)) for name, value in slots.items()))


class SentenceMeaning(NamedTuple):
    """What a template sentence can mean: its intent and, when it has no list references,
    its fixed slot values (``slot_key`` of the data block's slots; None when lists vary)."""

    intent: str
    fixed_slots: tuple[tuple[str, str], ...] | None


@dataclass(frozen=True, eq=False)  # identity hash: decoders cache per graph
class Graph:
    """Epsilon-free token automaton in CSR form.

    Arcs of state s are ``arc_start[s]:arc_start[s+1]``; each has a token, a next state and a
    word id (>= 0 on the first phone of a word, else -1). ``final`` has no arcs and is reached
    only by ``</s>``. ``end_sentence[s]`` is the template sentence (an index into
    ``sentences``) that ``</s>`` would end from state s, and -1 for states without a ``</s>``
    arc: every sentence ends in states of its own, so the states a token prefix reaches tell
    which intents (and, for sentences without lists, which meanings) it can be, without
    reading its words.
    """

    arc_start: np.ndarray  # int32 [n_states + 1]
    arc_token: np.ndarray  # int32 [n_arcs]
    arc_next: np.ndarray  # int32 [n_arcs]
    arc_word: np.ndarray  # int32 [n_arcs]
    words: tuple[str, ...]
    start: int
    final: int
    vocab_size: int = len(Units.phones().tokens)
    end_sentence: np.ndarray | None = None  # int16/32 [n_states]; None: graph without intents
    sentences: tuple[SentenceMeaning, ...] = ()

    @property
    def n_states(self) -> int:
        return len(self.arc_start) - 1

    @property
    def n_arcs(self) -> int:
        return len(self.arc_token)

    def arcs(self, state: int) -> range:
        return range(int(self.arc_start[state]), int(self.arc_start[state + 1]))

    def accepts(self, tokens: Sequence[int]) -> bool:
        states = {self.start}
        for tok in tokens:
            states = {
                int(self.arc_next[a])
                for s in states
                for a in self.arcs(s)
                if self.arc_token[a] == tok
            }
            if not states:
                return False
        return self.final in states

    def word_paths(self, tokens: Sequence[int], limit: int = 8) -> list[tuple[str, ...]]:
        """Word sequences of up to ``limit`` accepting paths that spell ``tokens`` (homophones
        such as "for"/"four" give several)."""
        # Depth first, arcs in order, a (state, position) that led nowhere remembered: in C
        # (_searchc.word_paths), where the Python walk took up to ~1.5 ms on long commands.
        paths = _searchc.word_paths(
            *(
                np.ascontiguousarray(a, np.int32)
                for a in (self.arc_start, self.arc_token, self.arc_next, self.arc_word)
            ),
            self.start,
            self.final,
            np.ascontiguousarray(tokens, np.int64),
            limit,
        )
        return list(dict.fromkeys(tuple(self.words[w] for w in path) for path in paths))

    def random_path(self, rng: random.Random, max_len: int = 400) -> list[int]:
        """A uniformly-branching random walk from start to final (for tests and debugging)."""
        tokens: list[int] = []
        state = self.start
        while state != self.final and len(tokens) < max_len:
            a = rng.choice(self.arcs(state))
            tokens.append(int(self.arc_token[a]))
            state = int(self.arc_next[a])
        return tokens


def phone_loop_graph(units: Units) -> Graph:
    """Any sequence of well-formed words made of any units: the free-decoding 'grammar'."""
    builder = _TokenGraphBuilder()
    begin, in_word, final = builder.new_state(), builder.new_state(), builder.new_state()
    starts = units.word_start_ids
    for tok in range(EOS_ID + 1, len(units.tokens)):
        if tok in starts:
            builder.add(begin, tok, in_word)
        if tok in starts or not units.has_boundary:
            builder.add(in_word, tok, in_word)
    if units.has_boundary:
        builder.add(in_word, units.boundary_id, begin)
    builder.add(in_word, EOS_ID, final)
    return builder.build((), begin, final, vocab_size=len(units.tokens))


def any_token_graph(vocab_size: int) -> Graph:
    """Every token (but <pad>) at every step: unconstrained decoding."""
    builder = _TokenGraphBuilder()
    state, final = builder.new_state(), builder.new_state()
    for tok in range(EOS_ID + 1, vocab_size):
        builder.add(state, tok, state)
    builder.add(state, EOS_ID, final)
    return builder.build((), state, final, vocab_size=vocab_size)


class _TokenGraphBuilder:
    # Arcs are collected in int32 arrays and trimmed with numpy, not in lists of Python ints
    # and sets: for the home grammar (~40k arcs) that is ~1 MB at its peak instead of ~11 MB,
    # which the daemon's heap would otherwise keep (fragmented) for the life of the process.
    def __init__(self) -> None:
        self.n_states = 0
        self.src = array("i")
        self.tok = array("i")
        self.dst = array("i")
        self.word = array("i")

    def new_state(self) -> int:
        self.n_states += 1
        return self.n_states - 1

    def add(self, src: int, tok: int, dst: int, word: int = -1) -> None:
        self.src.append(src)
        self.tok.append(tok)
        self.dst.append(dst)
        self.word.append(word)

    def _alive(self, src: np.ndarray, dst: np.ndarray, final: int) -> np.ndarray:
        """Which states reach the final state: a breadth-first search backwards along arcs."""
        by_dst = np.argsort(dst, kind="stable")
        preds = src[by_dst]
        bounds = np.searchsorted(dst[by_dst], np.arange(self.n_states + 1))
        alive = np.zeros(self.n_states, dtype=bool)
        alive[final] = True
        frontier = np.array([final])
        while frontier.size:
            lo, counts = bounds[frontier], bounds[frontier + 1] - bounds[frontier]
            # The predecessors of every frontier state: concatenated slices preds[lo:lo+count].
            offsets = np.cumsum(counts) - counts
            found = preds[np.repeat(lo - offsets, counts) + np.arange(counts.sum())]
            frontier = np.unique(found[~alive[found]])
            alive[frontier] = True
        return alive

    def build(
        self,
        words: tuple[str, ...],
        start: int,
        final: int,
        end_sentences: dict[int, int] | None = None,
        sentences: tuple[SentenceMeaning, ...] = (),
        vocab_size: int = Graph.vocab_size,
    ) -> Graph:
        src, tok, dst, word = (
            np.asarray(a, dtype=np.int32) for a in (self.src, self.tok, self.dst, self.word)
        )
        # Drop arcs into states from which the final state can't be reached (dead ends).
        alive = self._alive(src, dst, final)
        keep = alive[src] & alive[dst]
        src, tok, dst, word = src[keep], tok[keep], dst[keep], word[keep]
        order = np.argsort(src, kind="stable")
        counts = np.bincount(src, minlength=self.n_states)
        arc_start = np.zeros(self.n_states + 1, dtype=np.int32)
        np.cumsum(counts, out=arc_start[1:])
        end_sentence = None
        if end_sentences is not None:
            # One label per state stays resident in the daemon: int16 while it fits.
            dtype = np.int16 if len(sentences) < np.iinfo(np.int16).max else np.int32
            end_sentence = np.full(self.n_states, -1, dtype=dtype)
            end_sentence[list(end_sentences)] = list(end_sentences.values())
        return Graph(
            arc_start=arc_start,
            arc_token=tok[order],
            arc_next=dst[order],
            arc_word=word[order],
            words=words,
            start=start,
            final=final,
            vocab_size=vocab_size,
            end_sentence=end_sentence,
            sentences=sentences,
        )


# ---------------------------------------------------------------------------------------------
# Stage 1: templates -> chunk graph

_EPS, _SPACE = "", " "


@dataclass
class _Where:
    """Which intent/sentence/list is being built, for error messages."""

    intent: str = ""
    sentence: str = ""

    def __str__(self) -> str:
        return f"intent {self.intent!r}, sentence {self.sentence!r}"


@dataclass
class _Repeat:
    body: Sentence
    min: int
    max: int | None


@dataclass
class _ChunkGraph:
    arcs: list[list[tuple[str, int]]] = field(default_factory=list)  # label, next state
    finals: set[int] = field(default_factory=set)

    def new_state(self) -> int:
        self.arcs.append([])
        return len(self.arcs) - 1

    def add(self, src: int, label: str, dst: int) -> None:
        self.arcs[src].append((label, dst))

    def edge(self, src: int, label: str) -> int:
        dst = self.new_state()
        self.add(src, label, dst)
        return dst


class _Templates:
    """Parsed grammar: hassil Intents plus our repeat rules, with lookups that name errors."""

    def __init__(self, intents: Intents, repeats: dict[str, _Repeat]) -> None:
        self.intents = intents
        self.repeats = repeats

    def slot_list(self, ref: ListReference, data: Any, where: _Where) -> SlotList:
        if ref.is_inline_range:
            start, stop, step = ref.get_inline_range()  # type: ignore[misc]
            return RangeSlotList(name=ref.slot_name, start=start, stop=stop, step=step)
        found = data.slot_lists.get(ref.list_name) or self.intents.slot_lists.get(ref.list_name)
        if found is None:
            raise GrammarError(f"{where}: list {{{ref.list_name}}} is not defined under lists:")
        return found

    def rule(self, name: str, data: Any, where: _Where) -> Sentence | _Repeat:
        if name in self.repeats:
            return self.repeats[name]
        found = data.expansion_rules.get(name) or self.intents.expansion_rules.get(name)
        if found is None:
            raise GrammarError(f"{where}: rule <{name}> is not defined under expansion_rules:")
        return found


def range_numbers(slot_list: RangeSlotList, where: object) -> list[tuple[float, str]]:
    """(value, spoken text) of every number of a range list, all spellings (rbnf rulesets)."""
    numbers = list(slot_list.get_numbers())
    if len(numbers) > MAX_RANGE_NUMBERS:
        raise GrammarError(
            f"{where}: range list {{{slot_list.name}}} has {len(numbers)} numbers "
            f"(at most {MAX_RANGE_NUMBERS} can be spoken)"
        )
    if not slot_list.words:
        raise GrammarError(
            f"{where}: range list {{{slot_list.name}}} has words: false; digits cannot be spoken"
        )
    engine = get_rbnf_engine(slot_list.words_language or "en")
    out = []
    for number in numbers:
        spellings = engine.format_number(number).text_by_ruleset.values()
        out.extend((number, normalise_text(t)) for t in dict.fromkeys(spellings))
    return out


class _ChunkBuilder:
    """Walks hassil expressions and adds them to a chunk graph between two states."""

    def __init__(self, templates: _Templates, graph: _ChunkGraph) -> None:
        self.t = templates
        self.g = graph
        self.rule_stack: list[str] = []
        self.used_list = False  # whether a list reference was built (since last reset)

    def text(self, state: int, text: str) -> int:
        # Split on whitespace but keep it: spaces are word breaks, the rest are fragments.
        for piece in re.split(r"(\s+)", text):
            if piece:
                state = self.g.edge(state, _SPACE if piece.isspace() else piece)
        return state

    def build(self, expr: Expression, state: int, data: Any, where: _Where) -> int:
        if isinstance(expr, TextChunk):
            return self.text(state, expr.text)
        if isinstance(expr, Permutation):
            return self.build(_permutations(expr, where), state, data, where)
        if isinstance(expr, Alternative):
            end = self.g.new_state()
            for item in expr.items:
                self.g.add(self.build(item, state, data, where), _EPS, end)
            return end
        if isinstance(expr, Group):
            for item in expr.items:
                state = self.build(item, state, data, where)
            return state
        if isinstance(expr, ListReference):
            return self.slot(expr, state, data, where)
        if isinstance(expr, RuleReference):
            return self.rule(expr.rule_name, state, data, where)
        raise GrammarError(f"{where}: unsupported template element {type(expr).__name__}")

    def slot(self, ref: ListReference, state: int, data: Any, where: _Where) -> int:
        self.used_list = True
        slot_list = self.t.slot_list(ref, data, where)
        if isinstance(slot_list, WildcardSlotList):
            raise _WildcardError(ref.list_name)
        end = self.g.new_state()
        if isinstance(slot_list, RangeSlotList):
            for text in dict.fromkeys(t for _, t in range_numbers(slot_list, where)):
                # Spaces around: a number is whole words, as in the sampler.
                self.g.add(self.text(state, f" {text} "), _EPS, end)
        elif isinstance(slot_list, TextSlotList):
            if not slot_list.values:
                raise GrammarError(f"{where}: list {{{ref.list_name}}} has no values")
            for value in slot_list.values:
                self.g.add(self.build(value.text_in, state, data, where), _EPS, end)
        return end

    def rule(self, name: str, state: int, data: Any, where: _Where) -> int:
        if name in self.rule_stack:
            chain = " -> ".join(f"<{r}>" for r in [*self.rule_stack, name])
            raise GrammarError(f"{where}: expansion rules refer to themselves: {chain}")
        body = self.t.rule(name, data, where)
        self.rule_stack.append(name)
        try:
            if isinstance(body, _Repeat):
                return self.repeat(body, state, data, where)
            return self.build(body.expression, state, data, where)
        finally:
            self.rule_stack.pop()

    def repeat(self, rep: _Repeat, state: int, data: Any, where: _Where) -> int:
        # min copies in a row, then either (max - min) optional copies or a loop.
        for i in range(rep.min):
            if i:
                state = self.g.edge(state, _SPACE)
            state = self.build(rep.body.expression, state, data, where)
        if rep.max is None:
            loop_in = self.g.edge(state, _SPACE) if rep.min else state
            loop_out = self.build(rep.body.expression, loop_in, data, where)
            self.g.add(loop_out, _SPACE, loop_in)
            end = self.g.new_state()
            self.g.add(state, _EPS, end)
            self.g.add(loop_out, _EPS, end)
            return end
        end = self.g.new_state()
        self.g.add(state, _EPS, end)
        for i in range(rep.min, rep.max):
            if i:
                state = self.g.edge(state, _SPACE)
            state = self.build(rep.body.expression, state, data, where)
            self.g.add(state, _EPS, end)
        return end


class _WildcardError(Exception):
    def __init__(self, list_name: str) -> None:
        super().__init__(list_name)
        self.list_name = list_name


def _permutations(perm: Permutation, where: object) -> Alternative:
    if len(perm.items) > MAX_PERMUTATION_ITEMS:
        raise GrammarError(
            f"{where}: permutation (a;b;...) of {len(perm.items)} items is too large "
            f"(at most {MAX_PERMUTATION_ITEMS})"
        )
    return Alternative(items=[Seq(items=list(p)) for p in itertools.permutations(perm.items)])


# ---------------------------------------------------------------------------------------------
# Stage 2: chunk graph -> word graph (epsilon-free; arcs carry whole words)


@dataclass
class _WordGraph:
    arcs: dict[int, list[tuple[str, int]]]  # word-start state -> (word, next word-start state)
    start: int
    finals: set[int]


def _word_graph(chunks: _ChunkGraph, start: int) -> _WordGraph:
    """Join fragments between word breaks into words. From each word-start state, follow
    fragments and epsilons until a break: each (word, state after the break) is one arc.
    A word that runs into one of ``chunks.finals`` ends there (an arc to that final state)."""
    arcs: dict[int, list[tuple[str, int]]] = {}
    finals: set[int] = set()
    todo = [start]
    while todo:
        origin = todo.pop()
        if origin in arcs:
            continue
        out: dict[tuple[str, int], None] = {}
        seen: set[tuple[int, str]] = set()
        stack = [(origin, "")]
        while stack:
            state, word = stack.pop()
            if (state, word) in seen:
                continue
            seen.add((state, word))
            if state in chunks.finals:
                if spoken_words(word):
                    out[(word, state)] = None
                else:
                    finals.add(origin)
            for label, nxt in chunks.arcs[state]:
                if label == _SPACE and word and spoken_words(word):
                    out[(word, nxt)] = None
                elif label == _SPACE:  # nothing said yet (or only punctuation, e.g. "%")
                    stack.append((nxt, ""))
                elif label in (_SPACE, _EPS):
                    stack.append((nxt, word))
                else:
                    stack.append((nxt, word + label))
        arcs[origin] = list(out)
        # A word that ends exactly at a final state leaves us there: it has no arcs and
        # accepts (found as an origin whose walk meets a final state with nothing said).
        todo.extend(nxt for _, nxt in out if nxt not in arcs)
    return _WordGraph(arcs=arcs, start=start, finals=finals)


# ---------------------------------------------------------------------------------------------
# Stage 3: word graph -> token graph


def _token_graph(
    words: _WordGraph,
    where_of: dict[str, str],
    sentence_of: dict[int, int],
    sentences: tuple[SentenceMeaning, ...],
    units: Units,
) -> Graph:
    """Two token states per word state: ``begin`` (a word may start) and ``end`` (a word just
    ended: "|" to begin, or </s> when final). Word arcs become unit chains begin -> end.
    Units without "|" mark a word's first unit instead, so there ``end`` is ``begin``.
    ``sentence_of`` gives the sentence (index into ``sentences``) of each final word state."""
    builder = _TokenGraphBuilder()
    begin = {s: builder.new_state() for s in words.arcs}
    end: dict[int, int] = {}
    end_sentences: dict[int, int] = {}
    final = builder.new_state()
    vocab: dict[str, int] = {}

    def end_state(s: int) -> int:
        if s not in end:
            end[s] = builder.new_state() if units.has_boundary else begin[s]
            if words.arcs[s] and units.has_boundary:
                builder.add(end[s], units.boundary_id, begin[s])
            if s in words.finals:
                builder.add(end[s], EOS_ID, final)
                end_sentences[end[s]] = sentence_of[s]
        return end[s]

    for src, arcs in words.arcs.items():
        for word_text, dst in arcs:
            parts = spoken_words(word_text)
            for word in parts:
                _check_word(word, where_of)
            word_id = vocab.setdefault(" ".join(parts), len(vocab))
            _add_unit_chains(builder, begin[src], end_state(dst), parts, word_id, units)
    start, n_tokens = begin[words.start], len(units.tokens)
    return builder.build(tuple(vocab), start, final, end_sentences, sentences, n_tokens)


def _add_unit_chains(
    builder: _TokenGraphBuilder, src: int, dst: int, parts: list[str], word_id: int, units: Units
) -> None:
    """One chain per pronunciation; a hyphenated piece ("twenty-five") is several spoken
    words, spelled as lexicon.text_to_tokens spells the sampled text."""
    variants = [lexicon.pronunciations(p) for p in parts]
    for combo in itertools.product(*variants):
        tokens = units.spell(combo)
        state = src
        for i, tok in enumerate(tokens):
            nxt = dst if i == len(tokens) - 1 else builder.new_state()
            builder.add(state, tok, nxt, word_id if i == 0 else -1)
            state = nxt


def _check_word(word: str, where_of: dict[str, str]) -> None:
    try:
        lexicon.pronunciations(word)
    except lexicon.UnknownWordError as err:
        place = where_of.get(word, "the grammar")
        raise GrammarError(
            f"{place}: no pronunciation for word {word!r} (write numbers and symbols as words)"
        ) from err


# ---------------------------------------------------------------------------------------------
# Loading


class Sample(NamedTuple):
    intent: str
    text: str


@dataclass
class Grammar:
    graph: Graph
    intents: Intents
    language: str
    templates: _Templates
    skipped: list[str] = field(default_factory=list)  # sentences left out (wildcards)
    _recognized: dict[tuple[str, str | None], Any] = field(
        default_factory=dict, repr=False, compare=False
    )
    _one_intent: dict[str, Intents] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:  # the generated one prints the whole graph
        return f"Grammar({len(self.intents.intents)} intents, {len(self.vocabulary)} words)"

    @property
    def vocabulary(self) -> set[str]:
        return {w for word in self.graph.words for w in word.split()}

    @property
    def intent_names(self) -> list[str]:
        return list(self.intents.intents)

    def recognize_text(
        self, text: str, intent: str | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """Intent and slot values ({name: value}; list ``out`` values, range numbers). With
        ``intent``, only that intent's templates are matched: the decoder passes it when the
        graph says only that intent's sentences spell what it heard (hassil then tries a
        twentieth of the home grammar's templates)."""
        key = (text, intent)
        found = self._recognized.get(key, _NOT_SEEN)
        if found is _NOT_SEEN:
            # hassil takes ~0.3 ms a sentence, and the confidence margin interprets several
            # hypotheses per utterance; a home hears the same few commands over and over.
            while len(self._recognized) >= RECOGNIZED_CACHE:
                self._recognized.pop(next(iter(self._recognized)))
            found = self._recognized[key] = self._recognize(text, intent)
        return None if found is None else (found[0], dict(found[1]))

    def forget_texts(self) -> None:
        """Drop the interpretations kept by recognize_text (benchmarks time a cold cache)."""
        self._recognized.clear()

    def _recognize(self, text: str, intent: str | None) -> tuple[str, dict[str, Any]] | None:
        result = recognize(text, self._intents_of(intent), language=self.language)
        if result is None or result.intent is None:
            return None
        return result.intent.name, {name: e.value for name, e in result.entities.items()}

    def _intents_of(self, intent: str | None) -> Intents:
        """All the intents, or one of them with the same lists, rules and skip words."""
        if intent is None:
            return self.intents
        one = self._one_intent.get(intent)
        if one is None:
            one = self._one_intent[intent] = dataclasses.replace(
                self.intents, intents={intent: self.intents.intents[intent]}
            )
        return one

    def sentences_sample(self, n: int, seed: int = 0) -> list[Sample]:
        """``n`` random sentences (intent uniformly, then template, then each choice), in the
        graph's spelling (see spoken_words) so lexicon.text_to_tokens(text) is a graph path."""
        sampler = _Sampler(self.templates, random.Random(seed))
        blocks = self._blocks()
        out = []
        for _ in range(n):
            intent = sampler.rng.choice(list(blocks))
            data, sentence = sampler.rng.choice(blocks[intent])
            text = sampler.sample(sentence.expression, data)
            out.append(Sample(intent, normalise_text(text)))
        return out

    def expansion_count(self) -> float:
        """How many sentences the grammar accepts (inf with unbounded repeats)."""
        counter = _Counter(self.templates)
        return float(
            sum(
                counter.count(s.expression, data)
                for pairs in self._blocks().values()
                for data, s in pairs
            )
        )

    def _blocks(self) -> dict[str, list[tuple[Any, Sentence]]]:
        skipped = set(self.skipped)
        blocks: dict[str, list[tuple[Any, Sentence]]] = {}
        for name, intent in self.intents.intents.items():
            pairs = [
                (data, s)
                for data in intent.data
                for s in data.sentences
                if f"{name}: {s.text}" not in skipped
            ]
            if pairs:
                blocks[name] = pairs
        return blocks


def load_grammar(
    paths: str | Path | Iterable[str | Path],
    skip_wildcards: bool = False,
    units: Units | None = None,
) -> Grammar:
    """Load one or more hassil YAML files (merged like Home Assistant does) into a Grammar
    whose graph spells ``units`` (a bundle's; the phone set by default)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    raw: dict[str, Any] = {}
    for path in paths:
        merge_dict(raw, _read_yaml(Path(path)))
    return grammar_from_dict(raw, skip_wildcards=skip_wildcards, units=units)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as err:
        raise GrammarError(f"{path}: cannot read grammar: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise GrammarError(f"{path}: YAML syntax error: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("intents"), dict):
        raise GrammarError(f"{path}: expected a mapping with an 'intents:' mapping at the top")
    return doc


def grammar_from_dict(
    raw: dict[str, Any], skip_wildcards: bool = False, units: Units | None = None
) -> Grammar:
    raw = copy.deepcopy(raw)
    raw.setdefault("language", "en")
    repeats_raw = _split_repeat_rules(raw)
    _validate(raw)
    _drop_context(raw)
    try:
        intents = Intents.from_dict(raw)
    except Exception as err:  # hassil raises bare ValueError/AssertionError/KeyError
        raise GrammarError(f"invalid grammar: {type(err).__name__}: {err}") from err
    repeats = {
        name: _Repeat(_parse(body, f"rule <{name}>"), lo, hi)
        for name, (body, lo, hi) in repeats_raw.items()
    }
    templates = _Templates(intents, repeats)
    graph, skipped = _build_graph(templates, skip_wildcards, units or Units.phones())
    return Grammar(graph, intents, raw["language"], templates, skipped)


def _validate(raw: dict[str, Any]) -> None:
    """Parse every template once ourselves, so that a syntax error names its sentence."""
    for name, intent in raw["intents"].items():
        if not isinstance(intent, dict) or not isinstance(intent.get("data"), list):
            raise GrammarError(f"intent {name!r}: expected 'data:' with a list of blocks")
        for block in intent["data"]:
            sentences = block.get("sentences") if isinstance(block, dict) else None
            if not isinstance(sentences, list) or not sentences:
                raise GrammarError(f"intent {name!r}: each data block needs a 'sentences:' list")
            for text in sentences:
                if not isinstance(text, str):
                    raise GrammarError(f"intent {name!r}: sentence {text!r} is not a string")
                _parse(text, f"intent {name!r}")
    for rule, body in (raw.get("expansion_rules") or {}).items():
        if not isinstance(body, str):
            raise GrammarError(f"rule <{rule}>: expected a template string, got {body!r}")
        _parse(body, f"rule <{rule}>")
    for list_name, spec in (raw.get("lists") or {}).items():
        if not isinstance(spec, dict) or not ({"values", "range", "wildcard"} & set(spec)):
            raise GrammarError(f"list {{{list_name}}}: expected 'values:', 'range:' or 'wildcard:'")
        if "range" in spec:
            rng = spec["range"]
            if not isinstance(rng, dict) or "from" not in rng or "to" not in rng:
                raise GrammarError(f"list {{{list_name}}}: range needs 'from:' and 'to:'")
            if int(rng["from"]) > int(rng["to"]) or int(rng.get("step", 1)) <= 0:
                raise GrammarError(f"list {{{list_name}}}: empty range {rng}")
        for value in spec.get("values") or []:
            text = value.get("in") if isinstance(value, dict) else value
            if not isinstance(text, str):
                raise GrammarError(f"list {{{list_name}}}: value {value!r} needs a string 'in:'")
            _parse(text, f"list {{{list_name}}}")


def _parse(text: str, where: str) -> Sentence:
    try:
        return parse_sentence(text, keep_text=True)
    except Exception as err:  # hassil's ParseError and friends
        raise GrammarError(f"{where}: cannot parse template {text!r}: {err}") from err


def _split_repeat_rules(raw: dict[str, Any]) -> dict[str, tuple[str, int, int | None]]:
    """Take our ``{repeat:, min:, max:}`` rules out and give hassil nested optionals instead."""
    rules = dict(raw.get("expansion_rules") or {})
    repeats: dict[str, tuple[str, int, int | None]] = {}
    for name, body in rules.items():
        if not isinstance(body, dict):
            continue
        if not isinstance(body.get("repeat"), str):
            raise GrammarError(f"rule <{name}>: a mapping rule needs 'repeat: <template>'")
        lo, hi = int(body.get("min", 1)), body.get("max")
        hi = None if hi is None else int(hi)
        if lo < 1 or (hi is not None and hi < lo):
            raise GrammarError(f"rule <{name}>: need 1 <= min <= max, got {lo}..{hi}")
        repeats[name] = (body["repeat"], lo, hi)
        rules[name] = _nested_repeat_text(body["repeat"], lo, hi or UNBOUNDED_REPEAT_TEXT_LIMIT)
    if rules:
        raw["expansion_rules"] = rules
    return repeats


def _nested_repeat_text(body: str, lo: int, hi: int) -> str:
    # "x x [x [x]]": nested, not flat, optionals so that each text has one parse in hassil.
    text = ""
    for _ in range(hi - lo):
        text = f"[ ({body}){text}]"
    return " ".join(f"({body})" for _ in range(lo)) + text


def _drop_context(raw: dict[str, Any]) -> None:
    for intent in raw["intents"].values():
        intent["data"] = [
            {k: v for k, v in block.items() if k not in ("requires_context", "excludes_context")}
            for block in intent["data"]
        ]


def _build_graph(
    templates: _Templates, skip_wildcards: bool, units: Units
) -> tuple[Graph, list[str]]:
    chunks = _ChunkGraph()
    start = chunks.new_state()
    builder = _ChunkBuilder(templates, chunks)
    skipped: list[str] = []
    where_of: dict[str, str] = {}
    sentences: list[SentenceMeaning] = []
    sentence_of: dict[int, int] = {}  # chunk state -> index of its sentence in `sentences`
    for name, intent in templates.intents.intents.items():
        for data in intent.data:
            for sentence in data.sentences:
                where = _Where(name, sentence.text or "")
                first = len(chunks.arcs)
                builder.used_list = False
                try:
                    end = builder.build(sentence.expression, start, data, where)
                except _WildcardError as err:
                    if not skip_wildcards:
                        raise GrammarError(
                            f"{where}: list {{{err.list_name}}} is a wildcard; free text cannot "
                            "be decoded from audio (use a values list, or skip_wildcards)"
                        ) from None
                    _LOG.warning("skipping %s: wildcard list {%s}", where, err.list_name)
                    skipped.append(f"{name}: {sentence.text}")
                    continue
                # A final state per sentence (not one shared by all), so that the token
                # graph's states before </s> belong to one sentence and tell its intent.
                final = chunks.new_state()
                chunks.add(end, _EPS, final)
                chunks.finals.add(final)
                sentence_of.update(dict.fromkeys(range(first, len(chunks.arcs)), len(sentences)))
                fixed = slot_key(data.slots) if not builder.used_list else None
                sentences.append(SentenceMeaning(name, fixed))
                _note_words(chunks, first, where, where_of)
    total = sum(len(d.sentences) for i in templates.intents.intents.values() for d in i.data)
    if len(skipped) == total:
        raise GrammarError("the grammar has no sentences that can be spoken")
    words = _word_graph(chunks, start)
    return _token_graph(words, where_of, sentence_of, tuple(sentences), units), skipped


def _note_words(chunks: _ChunkGraph, first: int, where: _Where, where_of: dict[str, str]) -> None:
    """Remember which sentence first used each fragment, to name it in 'unknown word' errors."""
    for arcs in chunks.arcs[first:]:
        for label, _ in arcs:
            for word in spoken_words(label):
                where_of.setdefault(word, str(where))


# ---------------------------------------------------------------------------------------------
# Sampling and counting over the parsed templates (never expanding them)


class _Sampler:
    def __init__(self, templates: _Templates, rng: random.Random) -> None:
        self.t = templates
        self.rng = rng
        self._numbers: dict[int, list[tuple[float, str]]] = {}

    def sample(self, expr: Expression, data: Any) -> str:
        return "".join(self._walk(expr, data))

    def _walk(self, expr: Expression, data: Any) -> Iterator[str]:
        where = _Where()
        if isinstance(expr, TextChunk):
            yield expr.text
        elif isinstance(expr, Permutation):
            items = list(expr.items)
            self.rng.shuffle(items)
            for item in items:
                yield from self._walk(item, data)
        elif isinstance(expr, Alternative):
            yield from self._walk(self.rng.choice(expr.items), data)
        elif isinstance(expr, Group):
            for item in expr.items:
                yield from self._walk(item, data)
        elif isinstance(expr, ListReference):
            slot_list = self.t.slot_list(expr, data, where)
            if isinstance(slot_list, RangeSlotList):
                yield " " + self.rng.choice(self._range(slot_list))[1] + " "
            elif isinstance(slot_list, TextSlotList):
                yield from self._walk(self.rng.choice(slot_list.values).text_in, data)
        elif isinstance(expr, RuleReference):
            body = self.t.rule(expr.rule_name, data, where)
            if isinstance(body, _Repeat):
                hi = body.max or body.min + UNBOUNDED_REPEAT_SAMPLE_EXTRA
                for _ in range(self.rng.randint(body.min, hi)):
                    yield " "
                    yield from self._walk(body.body.expression, data)
                    yield " "
            else:
                yield from self._walk(body.expression, data)

    def _range(self, slot_list: RangeSlotList) -> list[tuple[float, str]]:
        key = id(slot_list)
        if key not in self._numbers:
            self._numbers[key] = range_numbers(slot_list, f"list {{{slot_list.name}}}")
        return self._numbers[key]


class _Counter:
    def __init__(self, templates: _Templates) -> None:
        self.t = templates

    def count(self, expr: Expression, data: Any) -> float:
        where = _Where()
        if isinstance(expr, TextChunk):
            return 1.0
        if isinstance(expr, Permutation):
            return math.factorial(len(expr.items)) * math.prod(
                self.count(i, data) for i in expr.items
            )
        if isinstance(expr, Alternative):
            return sum(self.count(i, data) for i in expr.items)
        if isinstance(expr, Group):
            return math.prod(self.count(i, data) for i in expr.items)
        if isinstance(expr, ListReference):
            slot_list = self.t.slot_list(expr, data, where)
            if isinstance(slot_list, RangeSlotList):
                return float(len(list(slot_list.get_numbers())))
            if isinstance(slot_list, TextSlotList):
                return sum(self.count(v.text_in, data) for v in slot_list.values)
            return 0.0
        if isinstance(expr, RuleReference):
            body = self.t.rule(expr.rule_name, data, where)
            if isinstance(body, _Repeat):
                if body.max is None:
                    return math.inf
                each = self.count(body.body.expression, data)
                return sum(each**k for k in range(body.min, body.max + 1))
            return self.count(body.expression, data)
        return 1.0
