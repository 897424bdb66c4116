"""Typed MQTT messages: our ``assistant/<site>/...`` topics and the Hermes ones we speak.

Each message is a frozen dataclass that knows its topic and turns itself into the
JSON-ready dict that goes on the wire, so that the bus never builds payloads by hand.
Hermes payloads follow the documented camelCase schema of Snips/Rhasspy Hermes
(checked in the tests with the ``rhasspy-hermes`` classes' ``from_dict``).

Incoming ``say`` requests are parsed here too: :func:`parse_say` (our topic, JSON or
plain text) and :func:`parse_hermes_say` (``hermes/tts/say``). Both raise
:class:`SayPayloadError` with a readable reason for malformed payloads, cap the text
at :data:`MAX_SAY_CHARS` and strip control characters, so that nothing a stranger
publishes can crash the bus or feed the TTS engine garbage.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.result import Meaning, Result

MAX_SAY_CHARS = 1000
"""Longest text we hand to TTS; longer requests are cut (and a warning is logged)."""

MAX_PAYLOAD_BYTES = 64 * 1024
"""Larger ``say`` payloads are refused before parsing: no reply needs 64 KiB."""

TOPIC_FORBIDDEN = re.compile(r"[/+#\x00]")

JSONDict = dict[str, Any]


class SayPayloadError(ValueError):
    """A ``say`` payload that cannot be turned into a request (reason in the message)."""


def check_topic_level(name: str, what: str) -> str:
    """Return ``name`` if it is usable as one MQTT topic level, else raise naming ``what``."""
    if not name or TOPIC_FORBIDDEN.search(name):
        raise ValueError(f"{what} {name!r} must be non-empty and contain no '/', '+', '#'")
    return name


def to_jsonable(value: Any) -> Any:
    """JSON ``default=`` hook: numpy scalars and arrays, sets and tuples, else ``str``."""
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(payload: JSONDict) -> bytes:
    """Compact UTF-8 JSON, the single serialiser for everything we publish."""
    return json.dumps(
        payload, ensure_ascii=False, separators=(",", ":"), default=to_jsonable
    ).encode("utf-8")


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class Topics:
    """Our topics for one site: ``<prefix>/<site>/`` + transcript, status, say, said,
    utterance, answer."""

    site: str
    prefix: str = "assistant"

    def __post_init__(self) -> None:
        check_topic_level(self.site, "site")
        for level in self.prefix.split("/"):
            check_topic_level(level, "topic prefix level")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}"

    @property
    def transcript(self) -> str:
        return f"{self.base}/transcript"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def say(self) -> str:
        return f"{self.base}/say"

    @property
    def said(self) -> str:
        return f"{self.base}/said"

    @property
    def utterance(self) -> str:
        """Audio for recogniser workers, from a site run with ``--remote`` (remote.py)."""
        return f"{self.base}/utterance"

    @property
    def answer(self) -> str:
        """A worker's answer handed back to a ``--remote`` site that asks when unsure, for the
        site to publish (:class:`AnswerForSite`)."""
        return f"{self.base}/answer"


class HermesTopics:
    """The Hermes topics we publish or subscribe to."""

    TEXT_CAPTURED = "hermes/asr/textCaptured"
    INTENT_NOT_RECOGNIZED = "hermes/nlu/intentNotRecognized"
    TTS_SAY = "hermes/tts/say"
    TTS_SAY_FINISHED = "hermes/tts/sayFinished"

    @staticmethod
    def intent(intent_name: str) -> str:
        # A wildcard or separator in an intent name would publish elsewhere.
        return "hermes/intent/" + TOPIC_FORBIDDEN.sub("_", intent_name)


# ------------------------------------------------------------------- our messages


@dataclass(frozen=True)
class Transcript:
    """``<prefix>/<site>/transcript``: one per utterance the VAD passed (QoS 1)."""

    id: str
    site: str
    text: str
    intent: str | None
    slots: JSONDict
    confidence: float
    started: float
    ended: float
    latency_ms: float
    model: str
    # Only where the device asked "did you mean ...?" about this utterance (dialogue.py):
    # True when the user said yes (the intent is the one asked about), False when not.
    confirmed: bool | None = None

    @classmethod
    def from_result(
        cls,
        result: Result,
        *,
        site: str,
        utterance_id: str,
        started: float,
        ended: float,
        latency_ms: float,
        model: str,
        confirmed: bool | None = None,
    ) -> Transcript:
        return cls(
            id=utterance_id,
            site=site,
            text=result.text,
            intent=result.intent,
            slots=dict(result.slots),
            confidence=float(result.confidence),
            started=float(started),
            ended=float(ended),
            latency_ms=float(latency_ms),
            model=model,
            confirmed=confirmed,
        )

    @classmethod
    def from_dict(cls, data: JSONDict) -> Transcript:
        # A key the payload lacks is a TypeError, unless the field has a default.
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def to_dict(self) -> JSONDict:
        extra = {} if self.confirmed is None else {"confirmed": self.confirmed}
        return {
            "id": self.id,
            "site": self.site,
            "text": self.text,
            "intent": self.intent,
            "slots": self.slots,
            "confidence": self.confidence,
            "started": self.started,
            "ended": self.ended,
            "latency_ms": self.latency_ms,
            "model": self.model,
            **extra,
        }


@dataclass(frozen=True)
class AnswerForSite:
    """``<prefix>/<site>/answer`` (QoS 1): a recogniser worker's answer handed back to a
    ``--remote`` site that asks "did you mean ...?" when unsure (remote.py, dialogue.py),
    instead of the worker publishing its transcript. Two kinds: an answer under the bar but
    at least as sure as the site's ``ask_from`` (``guess`` set: the site may ask about it),
    and the answer to an utterance the site sent as the reply to its question (``reply`` in
    the utterance). The site publishes the transcript itself, so that the one asked about and
    its reply go out in the order of a site that recognises for itself. Only the site
    subscribes to it.

    The payload is the transcript's, plus ``"guess": {"intent", "slots"}`` for the first kind
    (``intent`` is then null): the reading the bar turned away.
    """

    transcript: Transcript
    guess: Meaning | None = None

    @classmethod
    def from_dict(cls, data: JSONDict) -> AnswerForSite:
        guess = data.get("guess")
        if guess is None:
            meaning = None
        elif not isinstance(guess, dict) or not isinstance(guess.get("intent"), str):
            raise ValueError("'guess' must be an object with an 'intent' string")
        elif not isinstance(guess.get("slots", {}), dict):
            raise ValueError("'guess.slots' must be an object")
        else:
            meaning = Meaning(guess["intent"], guess.get("slots", {}))
        fields = {k: v for k, v in data.items() if k != "guess"}
        return cls(Transcript.from_dict(fields), meaning)

    def to_dict(self) -> JSONDict:
        if self.guess is None:
            return self.transcript.to_dict()
        guess = {"intent": self.guess.intent, "slots": self.guess.slots}
        return {**self.transcript.to_dict(), "guess": guess}

    def result(self) -> Result:
        """The recogniser's answer as the worker had it."""
        t = self.transcript
        return Result(t.text, t.intent, dict(t.slots), t.confidence, guess=self.guess)


@dataclass(frozen=True)
class Status:
    """``<prefix>/<site>/status`` (retained). The last will is ``{"state": "offline"}``."""

    state: Literal["online", "offline"]
    site: str
    queued: int | None = None
    dropped: int | None = None
    delivered: int | None = None
    hermes: bool | None = None
    version: str | None = None

    def to_dict(self) -> JSONDict:
        # Absent facts are left out rather than sent as null: the will is just the state.
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class SayRequest:
    """A request to speak, from ``<prefix>/<site>/say`` or ``hermes/tts/say``.

    ``id`` is always set (generated when the sender gave none) and comes back in
    ``said``/``sayFinished``; ``source`` says which of the two replies is due.
    """

    text: str
    id: str
    site: str
    source: Literal["assistant", "hermes"] = "assistant"
    lang: str | None = None
    session_id: str | None = None
    volume: float | None = None
    truncated: bool = False


@dataclass(frozen=True)
class Said:
    """``<prefix>/<site>/said``: the reply to our own ``say`` once it was spoken."""

    id: str
    site: str

    def to_dict(self) -> JSONDict:
        return {"id": self.id, "site": self.site}


# --------------------------------------------------------------- hermes messages


@dataclass(frozen=True)
class AsrTextCaptured:
    """``hermes/asr/textCaptured``. ``seconds`` is the time recognition took."""

    text: str
    likelihood: float
    seconds: float
    site_id: str
    session_id: str | None = None

    topic = HermesTopics.TEXT_CAPTURED

    def to_dict(self) -> JSONDict:
        return {
            "text": self.text,
            "likelihood": self.likelihood,
            "seconds": self.seconds,
            "siteId": self.site_id,
            "sessionId": self.session_id,
            "wakewordId": None,
            "asrTokens": None,
            "lang": None,
        }


@dataclass(frozen=True)
class NluSlot:
    """One slot of an NluIntent: ``value`` is ``{"kind", "value"}`` as in Snips."""

    entity: str
    slot_name: str
    raw_value: str
    value: Any
    confidence: float
    range: tuple[int, int] | None = None

    @classmethod
    def from_value(cls, name: str, value: Any, *, text: str, confidence: float) -> NluSlot:
        raw = value if isinstance(value, str) else json.dumps(value, default=to_jsonable)
        where = text.lower().find(raw.lower()) if raw else -1
        span = (where, where + len(raw)) if where >= 0 else None
        return cls(name, name, raw, value, confidence, span)

    def to_dict(self) -> JSONDict:
        numeric = isinstance(self.value, (int, float)) and not isinstance(self.value, bool)
        out: JSONDict = {
            "entity": self.entity,
            "slotName": self.slot_name,
            "rawValue": self.raw_value,
            "value": {"kind": "Number" if numeric else "Custom", "value": self.value},
            "confidence": self.confidence,
        }
        if self.range is not None:
            start, end = self.range
            out["range"] = {"start": start, "end": end, "rawStart": start, "rawEnd": end}
        return out


@dataclass(frozen=True)
class NluIntent:
    """``hermes/intent/<intentName>``: a recognised command (sessionId = utterance id)."""

    input: str
    intent_name: str
    confidence_score: float
    site_id: str
    session_id: str | None
    id: str | None = None
    slots: tuple[NluSlot, ...] = field(default_factory=tuple)

    @property
    def topic(self) -> str:
        return HermesTopics.intent(self.intent_name)

    def to_dict(self) -> JSONDict:
        return {
            "input": self.input,
            "intent": {"intentName": self.intent_name, "confidenceScore": self.confidence_score},
            "siteId": self.site_id,
            "id": self.id,
            "slots": [slot.to_dict() for slot in self.slots],
            "sessionId": self.session_id,
            "customData": None,
            "asrTokens": None,
            "asrConfidence": self.confidence_score,
            "rawInput": self.input,
            "wakewordId": None,
            "lang": None,
        }


@dataclass(frozen=True)
class NluIntentNotRecognized:
    """``hermes/nlu/intentNotRecognized``: speech that matched no command."""

    input: str
    site_id: str
    session_id: str | None
    id: str | None = None

    topic = HermesTopics.INTENT_NOT_RECOGNIZED

    def to_dict(self) -> JSONDict:
        return {
            "input": self.input,
            "siteId": self.site_id,
            "id": self.id,
            "customData": None,
            "sessionId": self.session_id,
        }


@dataclass(frozen=True)
class TtsSayFinished:
    """``hermes/tts/sayFinished``: the reply to ``hermes/tts/say`` once spoken."""

    id: str | None
    site_id: str
    session_id: str | None = None

    topic = HermesTopics.TTS_SAY_FINISHED

    def to_dict(self) -> JSONDict:
        return {"id": self.id, "siteId": self.site_id, "sessionId": self.session_id}


def hermes_messages(transcript: Transcript) -> list[tuple[str, JSONDict]]:
    """The Hermes messages one transcript becomes, in publishing order.

    ``textCaptured`` always (when there was any text), then either
    ``hermes/intent/<name>`` or ``hermes/nlu/intentNotRecognized``.
    """
    t = transcript
    out: list[tuple[str, JSONDict]] = []
    if t.text:
        captured = AsrTextCaptured(t.text, t.confidence, t.latency_ms / 1000.0, t.site, t.id)
        out.append((captured.topic, captured.to_dict()))
    if t.intent is not None:
        slots = tuple(
            NluSlot.from_value(name, value, text=t.text, confidence=t.confidence)
            for name, value in t.slots.items()
        )
        intent = NluIntent(t.text, t.intent, t.confidence, t.site, t.id, t.id, slots)
        out.append((intent.topic, intent.to_dict()))
    else:
        rejected = NluIntentNotRecognized(t.text, t.site, t.id, t.id)
        out.append((rejected.topic, rejected.to_dict()))
    return out


# ------------------------------------------------------------------ say parsing

_CONTROL = re.compile(r"\s+")


def clean_say_text(text: str) -> tuple[str, bool]:
    """Strip control and format characters, squeeze whitespace, cap the length.

    Returns the cleaned text and whether it was cut at :data:`MAX_SAY_CHARS`.
    """
    kept = "".join(
        # Control, format, separator, surrogate, private-use and unassigned code points
        # are nothing a speech engine should be handed.
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") else ch
        for ch in text
    )
    kept = _CONTROL.sub(" ", kept).strip()
    if len(kept) <= MAX_SAY_CHARS:
        return kept, False
    return kept[:MAX_SAY_CHARS].rstrip(), True


def _decode(payload: bytes) -> str:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise SayPayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SayPayloadError(f"payload is not UTF-8 ({exc.reason})") from None


def _optional(data: JSONDict, key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise SayPayloadError(f"'{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _request(data: JSONDict, *, site: str, source: Literal["assistant", "hermes"]) -> SayRequest:
    text = data.get("text")
    if not isinstance(text, str):
        raise SayPayloadError(f"'text' must be a string, got {type(text).__name__}")
    cleaned, truncated = clean_say_text(text)
    if not cleaned:
        raise SayPayloadError("'text' is empty after removing control characters")
    req_id = _optional(data, "id", (str, int))
    volume = _optional(data, "volume", (int, float))
    if volume is not None and not (math.isfinite(volume) and 0.0 <= volume <= 1.0):
        raise SayPayloadError(f"'volume' must be within [0, 1], got {volume!r}")
    return SayRequest(
        text=cleaned,
        id=str(req_id) if req_id is not None else uuid.uuid4().hex,
        site=site,
        source=source,
        lang=_optional(data, "lang", str),
        session_id=_optional(data, "sessionId", str),
        volume=None if volume is None else float(volume),
        truncated=truncated,
    )


def parse_say(payload: bytes, *, site: str) -> SayRequest:
    """Parse ``<prefix>/<site>/say``: a JSON object ``{"text", "id"?}`` or plain text.

    Plain text is anything that is not JSON; a payload that starts like a JSON object
    or array but does not parse is refused (someone meant JSON and got it wrong).
    """
    text = _decode(payload)
    stripped = text.strip()
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):  # deeply nested arrays exhaust the parser
        if stripped[:1] in ("{", "["):
            raise SayPayloadError("payload looks like JSON but does not parse") from None
        data = {"text": text}
    if isinstance(data, list):
        raise SayPayloadError("payload must be a JSON object or text, got a JSON array")
    if isinstance(data, str):  # a JSON string literal: '"hello"'
        data = {"text": data}
    elif not isinstance(data, dict):
        data = {"text": stripped}  # "42" or "true" is plain text that happens to be JSON
    return _request(data, site=site, source="assistant")


def parse_hermes_say(payload: bytes, *, site: str) -> SayRequest | None:
    """Parse ``hermes/tts/say``; None when it is addressed to another site.

    A message without ``siteId`` is taken as addressed to every site, so that a plain
    ``mosquitto_pub -t hermes/tts/say -m '{"text": "hi"}'`` is spoken.
    """
    text = _decode(payload)  # its own errors (too big, not UTF-8) keep their reason
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise SayPayloadError("hermes/tts/say payload is not JSON") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise SayPayloadError(f"hermes/tts/say payload must be an object, got {kind}")
    target = _optional(data, "siteId", str)
    if target is not None and target != site:
        return None
    return _request(data, site=site, source="hermes")
