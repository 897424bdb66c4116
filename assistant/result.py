"""The recogniser's answer for one utterance: what every consumer (CLI, MQTT) gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _slot_text(value: Any) -> str:
    if isinstance(value, dict):  # hassil's range and list values
        return str(value.get("value", value.get("text", value)))
    return str(value)


@dataclass(frozen=True)
class Meaning:
    """What an answer means: its intent and slot values."""

    intent: str
    slots: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        """One line for people: 'HassTurnOn area=kitchen name=light'."""
        return " ".join([self.intent, *(f"{k}={_slot_text(v)}" for k, v in self.slots.items())])


@dataclass(frozen=True)
class Result:
    """Recognition of one utterance.

    ``intent`` is None when the utterance was rejected (out of grammar, noise);
    ``text`` may then be empty. ``confidence`` is a calibrated probability in [0, 1]
    that the intent and slots are right. ``timings`` holds milliseconds per stage.
    ``guess`` is the best reading of an utterance whose confidence fell short of the bar
    (``intent`` None): what a device may ask about ("did you mean ...?", dialogue.py).
    """

    text: str
    intent: str | None
    slots: dict[str, Any] = field(default_factory=dict)
    confidence: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    guess: Meaning | None = None

    @property
    def accepted(self) -> bool:
        return self.intent is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reading(self) -> Meaning | None:
        """The best reading, accepted or not: the answer acted on, else the guess under the
        bar (None when nothing in the grammar was heard)."""
        return Meaning(self.intent, self.slots) if self.intent is not None else self.guess

    def verdict(self) -> str:
        """What was done, for people reading a log or the command line: the intent and its
        slots, or "rejected", with what an answer under the bar was heard as, so that a
        reader can tell a command heard right but not sure enough from one not heard."""
        if self.intent is not None:
            return str(self.reading)
        if self.guess is not None:
            return f"rejected, not sure enough of {self.guess}"
        return "rejected"
