"""Our hassil grammar -> a JSGF grammar for PocketSphinx (the benchmark's grammar-mode peer).

Written from the parsed templates, like assistant/grammar.py builds its graph, never by
expanding sentences: intents, lists and expansion rules each become one JSGF rule, so the
JSGF stays as small as the YAML. Only where templates glue fragments into one word
("light[s]", "x{name}") is that word expanded locally, because JSGF tokens are whole words.

PocketSphinx only decodes words its dictionary knows. ``missing_words`` lists the grammar
words its dictionary lacks, with pronunciations from our lexicon (CMU dictionary, compound
split, or spelling) so they can be added with ``Decoder.add_word``; a word neither knows is
a JsgfError that names it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hassil import (
    Alternative,
    Expression,
    Group,
    ListReference,
    Permutation,
    RangeSlotList,
    RuleReference,
    TextChunk,
    TextSlotList,
    WildcardSlotList,
)
from hassil import Sequence as Seq

from assistant import lexicon
from assistant.grammar import Grammar, _Repeat, range_numbers, spoken_words

MAX_LOCAL_EXPANSION = 20000  # strings of one glued word region ("x{list}y"); more is a bug
TOP_RULE = "command"


class JsgfError(ValueError):
    """The grammar cannot be written as JSGF (or a word has no pronunciation)."""


@dataclass
class Jsgf:
    text: str
    words: set[str]
    skipped: list[str] = field(default_factory=list)  # sentences left out (wildcards)


class _Wildcard(Exception):
    pass


_BREAK = object()  # a word break inside a flattened sequence
_TOKEN_OK = re.compile(r"^[a-z0-9']+$")


def _rule_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _token(word: str) -> str:
    # Plain words as they are; anything with other characters quoted (JSGF allows "...").
    return word if _TOKEN_OK.match(word) else '"' + word.replace('"', "") + '"'


class _Writer:
    def __init__(self, grammar: Grammar) -> None:
        self.g = grammar
        self.rules: dict[str, str] = {}  # name -> body, in definition order
        self.names: dict[int, str] = {}  # id(list or rule object) -> rule name
        self.words: set[str] = set()
        self.rule_stack: list[str] = []

    # -- rules for lists and expansion rules, defined once on first use

    def _fresh(self, base: str) -> str:
        """A new rule name (reserved at once, so recursion can't take it)."""
        name, n = _rule_name(base), 1
        while name in self.rules:  # same name, other data block: keep both apart
            n += 1
            name = f"{_rule_name(base)}_{n}"
        self.rules[name] = ""
        return name

    def _define(self, key: object, base: str, make: Callable[[], str]) -> str:
        if id(key) in self.names:
            return self.names[id(key)]
        name = self._fresh(base)
        self.names[id(key)] = name
        self.rules[name] = make() or "<NULL>"
        return name

    def list_rule(self, ref: ListReference, data: Any) -> str:
        slot_list = self.g.templates.slot_list(ref, data, f"list {{{ref.list_name}}}")
        if isinstance(slot_list, WildcardSlotList):
            raise _Wildcard(ref.list_name)

        def make() -> str:
            if isinstance(slot_list, RangeSlotList):
                spoken = dict.fromkeys(t for _, t in range_numbers(slot_list, ref.list_name))
                return self._alternatives([self._words(t) for t in spoken])
            assert isinstance(slot_list, TextSlotList)
            return self._alternatives([self.emit(v.text_in, data) for v in slot_list.values])

        return "<" + self._define(slot_list, f"list_{ref.list_name}", make) + ">"

    def rule_ref(self, name: str, data: Any) -> str:
        if name in self.rule_stack:
            raise JsgfError(f"expansion rules refer to themselves: <{name}>")
        body = self.g.templates.rule(name, data, f"rule <{name}>")
        self.rule_stack.append(name)
        try:
            if isinstance(body, _Repeat):  # our {repeat:, min:, max:} extension
                item = (
                    "<"
                    + self._define(
                        body.body,
                        f"rule_{name}_item",
                        lambda: self.emit(body.body.expression, data),
                    )
                    + ">"
                )

                def make() -> str:
                    parts = [item] * (body.min - 1)
                    if body.max is None:
                        # A right-recursive rule, not "<item>+": PocketSphinx builds the same
                        # language, but decodes AN4 ~3x faster (fewer null transitions).
                        if body.min == 1:  # this rule itself: item [<this rule>]
                            return f"{item} [<{self.names[id(body)]}>]"
                        loop = self._fresh(f"rule_{name}_loop")
                        self.rules[loop] = f"{item} [<{loop}>]"
                        return " ".join([*parts, f"<{loop}>"])
                    tail = ""
                    for _ in range(body.max - body.min):
                        tail = f"[{item}{' ' + tail if tail else ''}]"
                    return " ".join(p for p in [*parts, item, tail] if p)

                return "<" + self._define(body, f"rule_{name}", make) + ">"
            return (
                "<"
                + self._define(body, f"rule_{name}", lambda: self.emit(body.expression, data))
                + ">"
            )
        finally:
            self.rule_stack.pop()

    # -- expressions

    def _words(self, text: str) -> str:
        words = spoken_words(text)
        self.words.update(words)
        return " ".join(_token(w) for w in words)

    @staticmethod
    def _alternatives(items: list[str]) -> str:
        """ "(a | b)", or "[...]" when one of the items says nothing."""
        bodies = list(dict.fromkeys(i for i in items if i))
        if not bodies:
            return ""
        inner = bodies[0] if len(bodies) == 1 else "(" + " | ".join(bodies) + ")"
        return f"[{inner}]" if len(bodies) < len(items) and "" in items else inner

    def emit(self, expr: Expression, data: Any) -> str:
        """JSGF for an expression that starts and ends at word breaks ("" if it says nothing)."""
        if isinstance(expr, TextChunk):
            return self._words(expr.text)
        if isinstance(expr, Permutation):
            return self.emit(_permutations(expr), data)
        if isinstance(expr, Alternative):
            return self._alternatives([self.emit(item, data) for item in expr.items])
        if isinstance(expr, ListReference):
            return self.list_rule(expr, data)
        if isinstance(expr, RuleReference):
            return self.rule_ref(expr.rule_name, data)
        if isinstance(expr, Group):
            parts = [self._run(run, data) for run in _runs(_flatten(expr))]
            return " ".join(p for p in parts if p)
        raise JsgfError(f"unsupported template element {type(expr).__name__}")

    def _run(self, run: list[Any], data: Any) -> str:
        """One word region: plain text, one sub-expression, or glued parts (expanded here)."""
        if all(isinstance(p, str) for p in run):
            return self._words("".join(run))
        if len(run) == 1:
            return self.emit(run[0], data)
        texts = [""]
        for part in run:
            options = [part] if isinstance(part, str) else self._strings(part, data)
            texts = [a + b for a in texts for b in options]
            if len(texts) > MAX_LOCAL_EXPANSION:
                raise JsgfError("a word glued to a list or rule expands to too many forms")
        return self._alternatives([self._words(t) for t in dict.fromkeys(texts)])

    def _strings(self, expr: Expression, data: Any) -> list[str]:
        """Every text of a (small) expression: only for glued word regions."""
        if isinstance(expr, TextChunk):
            return [expr.text]
        if isinstance(expr, Permutation):
            return self._strings(_permutations(expr), data)
        if isinstance(expr, Alternative):
            return [s for item in expr.items for s in self._strings(item, data)]
        if isinstance(expr, Group):
            texts = [""]
            for item in expr.items:
                texts = [a + b for a in texts for b in self._strings(item, data)]
            return texts
        if isinstance(expr, ListReference):
            slot_list = self.g.templates.slot_list(expr, data, f"list {{{expr.list_name}}}")
            if isinstance(slot_list, WildcardSlotList):
                raise _Wildcard(expr.list_name)
            if isinstance(slot_list, RangeSlotList):
                return [f" {t} " for _, t in range_numbers(slot_list, expr.list_name)]
            assert isinstance(slot_list, TextSlotList)
            return [s for v in slot_list.values for s in self._strings(v.text_in, data)]
        if isinstance(expr, RuleReference):
            body = self.g.templates.rule(expr.rule_name, data, f"rule <{expr.rule_name}>")
            if isinstance(body, _Repeat):
                raise JsgfError(f"repeat rule <{expr.rule_name}> glued to a word")
            return self._strings(body.expression, data)
        raise JsgfError(f"unsupported template element {type(expr).__name__}")


def _permutations(perm: Permutation) -> Alternative:
    return Alternative(items=[Seq(items=list(p)) for p in itertools.permutations(perm.items)])


def _flatten(expr: Group) -> list[Any]:
    """A sequence as fragments (str), word breaks and sub-expressions, nested groups inlined."""
    out: list[Any] = []
    for item in expr.items:
        if isinstance(item, TextChunk):
            for piece in re.split(r"(\s+)", item.text):
                if piece:
                    out.append(_BREAK if piece.isspace() else piece)
        elif isinstance(item, Group) and not isinstance(item, Alternative | Permutation):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def _runs(parts: list[Any]) -> list[list[Any]]:
    """Split at word breaks: what stays together is one word (or one sub-expression)."""
    runs: list[list[Any]] = [[]]
    for part in parts:
        if part is _BREAK:
            runs.append([])
        else:
            runs[-1].append(part)
    return [r for r in runs if r]


def grammar_to_jsgf(grammar: Grammar, name: str = "commands") -> Jsgf:
    """One public rule ``<command>`` = any intent; one rule per intent, list and rule."""
    writer = _Writer(grammar)
    skipped: list[str] = []
    intent_rules: list[str] = []
    for intent_name, intent in grammar.intents.intents.items():
        sentences: list[str] = []
        for data in intent.data:
            for sentence in data.sentences:
                try:
                    body = writer.emit(sentence.expression, data)
                except _Wildcard as err:
                    skipped.append(f"{intent_name}: {sentence.text} (wildcard {{{err}}})")
                    continue
                if body:
                    sentences.append(body)
        if sentences:
            body = " | ".join(dict.fromkeys(sentences))
            rule = writer._define(intent, f"intent_{intent_name}", lambda b=body: b)
            intent_rules.append(f"<{rule}>")
    if not intent_rules:
        raise JsgfError("the grammar has no sentences that can be spoken")
    lines = ["#JSGF V1.0;", f"grammar {_rule_name(name)};", ""]
    lines.append(f"public <{TOP_RULE}> = " + " | ".join(intent_rules) + ";")
    lines += [f"<{rule}> = {body};" for rule, body in writer.rules.items()]
    return Jsgf("\n".join(lines) + "\n", writer.words, skipped)


def missing_words(
    words: Iterable[str], lookup: Callable[[str], str | None]
) -> dict[str, list[str]]:
    """Words the PocketSphinx dictionary (``lookup``: word -> phones or None) lacks, each with
    its pronunciations (PocketSphinx phone strings) from our lexicon."""
    missing: dict[str, list[str]] = {}
    for word in sorted(words):
        if lookup(word) is not None:
            continue
        try:
            prons = lexicon.pronunciations(word)
        except lexicon.UnknownWordError as err:
            raise JsgfError(
                f"word {word!r}: in neither PocketSphinx's dictionary nor our lexicon"
            ) from err
        missing[word] = [" ".join(p) for p in prons]
    return missing
