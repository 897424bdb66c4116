"""The recogniser's answer for one utterance: what every consumer (CLI, MQTT) gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Meaning:
    """What an answer means: its intent and slot values."""

    intent: str
    slots: dict[str, Any] = field(default_factory=dict)


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
