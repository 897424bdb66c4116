"""Asking before acting on an answer the recogniser is unsure of: "Did you mean: ...?"

An answer whose confidence falls short of the bar is not acted on, and the user has to say
the whole command again. Yet many such answers are right. A device that asks about those, and
acts on the answer only when the user says yes, turns a repeated command into one word; the
wrong ones get a "no" and are dropped, as they would have been. Asking from 0.2, the 200 home
commands spoken by voices the model never heard were acted on right 84% of the time instead of
73%, and wrong 3% as before, for a question about 14.5% of them (`tools.asking`; README,
"Asking when unsure").

These are the rules; the daemon speaks the question and hears the reply. The reply is heard
with the bundle's own grammar, whose "Yes" and "No" intents answer it; anything else (another
command, noise, silence until ``wait_s`` has passed) leaves the question unanswered, so the
answer asked about is not acted on.
"""

from __future__ import annotations

import dataclasses
import enum
import string
from collections.abc import Iterable
from dataclasses import dataclass

from .result import Result

YES_INTENTS = frozenset({"Yes"})
# "cancel" and "never mind" answer a question as well as "no" does.
NO_INTENTS = frozenset({"No", "HassNevermind"})


@dataclass(frozen=True)
class ConfirmSettings:
    # Ask about answers with at least this confidence and under the bar; unset: never ask.
    from_confidence: float | None = None
    question: str = "Did you mean: {text}?"  # {text}: the sentence as heard
    wait_s: float = 5.0  # how long after the question a reply may begin

    def validate(self) -> list[tuple[str, str]]:
        """(key, problem) pairs; empty when valid."""
        problems = []
        if self.from_confidence is not None and not 0.0 <= self.from_confidence <= 1.0:
            problems.append(("from_confidence", "must be between 0 and 1"))
        if not 0.5 <= self.wait_s <= 60.0:
            problems.append(("wait_s", "must be between 0.5 and 60 seconds"))
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(self.question) if name}
        except ValueError as exc:
            problems.append(("question", f"bad template: {exc}"))
        else:
            if names - {"text"}:
                problems.append(("question", "may hold no placeholder but {text}"))
        return problems

    @property
    def enabled(self) -> bool:
        return self.from_confidence is not None


class Reply(enum.Enum):
    YES = "yes"
    NO = "no"
    OTHER = "other"  # not an answer: another command, or nothing understood


def why_never_asked(
    *, speech_on: bool, microphone: bool, intent_names: Iterable[str] | None
) -> str | None:
    """Why a device set to ask could never be answered; None when it can be.
    ``intent_names`` None: a ``--remote`` site, whose workers check their own grammar."""
    if not speech_on:
        return "speech is off ([tts] enabled = false)"
    if not microphone:
        return "the audio source is not a microphone: nobody can answer"
    if intent_names is not None and YES_INTENTS.isdisjoint(intent_names):
        return "the grammar has no Yes intent to answer with"
    return None


def worth_asking(result: Result, settings: ConfirmSettings) -> bool:
    """An answer turned away by the bar, but sure enough to ask about. Questions about
    "yes" or "no" themselves are not asked: their answer would read the same."""
    return (
        settings.from_confidence is not None
        and result.intent is None
        and result.guess is not None
        and result.confidence >= settings.from_confidence
        and result.guess.intent not in YES_INTENTS | NO_INTENTS
    )


def question_for(result: Result, settings: ConfirmSettings) -> str:
    return settings.question.format(text=result.text)


def reply_to_question(reply: Result) -> Reply:
    if reply.intent in YES_INTENTS:
        return Reply.YES
    if reply.intent in NO_INTENTS:
        return Reply.NO
    return Reply.OTHER


def as_confirmed(result: Result) -> Result:
    """The answer asked about, acted on: its guess becomes its intent and slots. Its
    confidence stays the recogniser's; the transcript says it was confirmed."""
    assert result.guess is not None
    return dataclasses.replace(
        result, intent=result.guess.intent, slots=dict(result.guess.slots), guess=None
    )
