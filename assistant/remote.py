"""Utterances sent to recogniser workers: the message a site publishes, and its topics.

A site too weak to recognise (a Pi Zero) runs ``assistant run --remote``: its VAD hands each
utterance to the bus as an :class:`UtteranceMessage` on ``<prefix>/<site>/utterance`` (QoS 1,
through the same on-disk outbox as transcripts, so none is lost while the broker is away).
Recogniser workers elsewhere (``assistant worker``) share them through one MQTT v5 shared
subscription, ``$share/<group>/<prefix>/+/utterance``: the broker hands each utterance to
one member of the group. The worker publishes the transcript on the *site's* topics, the
same message a local recogniser would have published, so subscribers see no difference.

The payload is JSON, so that any MQTT client can produce or inspect one::

    {"id": "...", "site": "kitchen", "started": 1765000000.1, "ended": 1765000001.4,
     "wav": "<base64 of a WAV file>", "ask_from": 0.2, "reply": true}

``ask_from`` is there only when the site asks "did you mean ...?" about unsure answers
(``[confirm]``, dialogue.py): an answer turned away by the worker's bar but at least that sure
then goes back to the site alone, on ``<prefix>/<site>/answer``, and the site publishes the
transcript once the user has replied (hermes.AnswerForSite). ``reply`` (only when true) marks
the utterance that replies to such a question: its answer goes back to the site too, which
publishes it after the transcript it answers, in the order a local recogniser keeps.

A WAV file (rather than bare samples) says its own rate and channels, and one saved from a
message plays in any player. Workers accept any rate or channel count that soundfile reads
and convert it the way ``assistant transcribe`` converts files.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import threading
import time
import uuid
import wave
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from assistant.audio import SAMPLE_RATE, to_mono_16k
from assistant.hermes import check_topic_level, dumps

MAX_UTTERANCE_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Larger utterance payloads are refused before parsing (60 s of 16 kHz int16 is 2.6 MB)."""

DEFAULT_GROUP = "recognisers"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """``[worker]``: how ``assistant worker`` joins the recognisers' shared subscription."""

    group: str = DEFAULT_GROUP  # workers of one group share the load; another group hears all
    # None: "assistant-worker-<hostname>". Stable across restarts, so that the broker keeps
    # what it handed this worker (and what arrives while it is away) for its return.
    client_id: str | None = None
    session_expiry_s: int = 7 * 24 * 3600  # how long the broker keeps that for an absent worker

    def __post_init__(self) -> None:
        check_topic_level(self.group, "worker group")
        if self.client_id is not None:
            # It also names the worker's own status topic, <prefix>/<client_id>/status.
            check_topic_level(self.client_id, "worker client_id")
        if self.session_expiry_s < 0:
            raise ValueError("worker session_expiry_s must be >= 0")


class UtterancePayloadError(ValueError):
    """An utterance message that cannot be recognised (reason in the message)."""


def shared_utterance_topic(group: str, prefix: str = "assistant") -> str:
    """What workers subscribe to: every site's utterances, shared among ``group``."""
    check_topic_level(group, "worker group")
    return f"$share/{group}/{prefix}/+/utterance"


@dataclass(frozen=True)
class UtteranceMessage:
    """One utterance of one site: 16 kHz mono int16 samples and their wall-clock times."""

    id: str
    site: str
    started: float
    ended: float
    pcm: np.ndarray
    ask_from: float | None = None  # the site asks about answers this sure and under the bar
    reply: bool = False  # it replies to the site's question: its answer goes back to the site

    @classmethod
    def new(
        cls,
        site: str,
        started: float,
        ended: float,
        pcm: np.ndarray,
        ask_from: float | None = None,
        reply: bool = False,
    ) -> UtteranceMessage:
        pcm = np.asarray(pcm, dtype=np.int16)
        return cls(uuid.uuid4().hex, site, started, ended, pcm, ask_from, reply)

    def to_payload(self) -> bytes:
        # The standard library's wave, not soundfile: the site (a Pi Zero) then never loads
        # libsndfile (2.7 MB of its memory here), and 16-bit mono PCM is all it writes.
        wav = io.BytesIO()
        with wave.open(wav, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(np.asarray(self.pcm, dtype="<i2").tobytes())
        asking = {} if self.ask_from is None else {"ask_from": self.ask_from}
        if self.reply:
            asking["reply"] = True
        return dumps(
            {
                "id": self.id,
                "site": self.site,
                "started": self.started,
                "ended": self.ended,
                "wav": base64.b64encode(wav.getvalue()).decode("ascii"),
                **asking,
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> UtteranceMessage:
        """Parse and check a payload; UtterancePayloadError says what is wrong with it."""
        if len(payload) > MAX_UTTERANCE_PAYLOAD_BYTES:
            raise UtterancePayloadError(
                f"payload of {len(payload)} bytes is over the "
                f"{MAX_UTTERANCE_PAYLOAD_BYTES}-byte limit"
            )
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UtterancePayloadError(f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise UtterancePayloadError("not a JSON object")
        ident = _text(data, "id")
        site = _text(data, "site")
        try:
            check_topic_level(site, "site")
        except ValueError as exc:
            raise UtterancePayloadError(str(exc)) from None
        started, ended = _time(data, "started"), _time(data, "ended")
        ask_from = _share(data, "ask_from") if "ask_from" in data else None
        reply = data.get("reply", False)
        if not isinstance(reply, bool):
            raise UtterancePayloadError("'reply' must be true or false")
        pcm = _decode_wav(_text(data, "wav"))
        return cls(ident, site, started, ended, pcm, ask_from, reply)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise UtterancePayloadError(f"'{key}' must be a non-empty string")
    return value


def _time(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UtterancePayloadError(f"'{key}' must be a number (seconds since the epoch)")
    return float(value)


def _share(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UtterancePayloadError(f"'{key}' must be a number from 0 to 1")
    return float(value)


def _decode_wav(text: str) -> np.ndarray:
    import soundfile as sf

    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UtterancePayloadError(f"'wav' is not base64 ({exc})") from None
    try:
        audio, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise UtterancePayloadError(f"'wav' is not a readable audio file ({exc})") from None
    if len(audio) == 0:
        raise UtterancePayloadError("'wav' holds no audio")
    return to_mono_16k(audio, int(rate))


@dataclass
class _Pending:
    payload: bytes
    sent_at: float  # monotonic; moved on while the broker is unreachable
    tries: int = 1


class PendingUtterances:
    """What a ``--remote`` site sent and has not heard back, sent again until a worker answers.

    The broker alone cannot promise that a worker hears every utterance: an utterance
    published when no worker is subscribed goes nowhere, and Mosquitto 2.0.11 restores a
    worker's persisted session after a restart *without* its shared subscription, so until
    the worker reconnects the broker drops what the site delivers (seen in
    tests/test_remote.py). So the site keeps each utterance until its transcript comes back
    and sends it again (same id) after ``resend_after_s``, doubling, up to ``tries`` sends.
    The clock runs only while the site is connected. At most ``limit`` utterances are kept
    (a 3 s one is ~130 kB); older ones are no longer resent. Thread-safe.
    """

    def __init__(
        self,
        *,
        resend_after_s: float = 10.0,
        tries: int = 4,
        limit: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resend_after_s = resend_after_s
        self.tries = tries
        self.limit = limit
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._lock = threading.Lock()
        self.given_up = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def add(self, ident: str, payload: bytes) -> None:
        with self._lock:
            self._pending[ident] = _Pending(payload, self._clock())
            while len(self._pending) > self.limit:
                old, _ = self._pending.popitem(last=False)
                log.warning("utterance %s: still no transcript, no longer sent again", old)

    def answered(self, ident: str) -> bool:
        """True the first time a transcript for ``ident`` comes back (not for repeats, or
        for ids this site did not send)."""
        with self._lock:
            return self._pending.pop(ident, None) is not None

    def due(self, connected: bool) -> list[tuple[str, bytes]]:
        """The utterances to send again now; those out of tries are dropped (logged)."""
        now = self._clock()
        again: list[tuple[str, bytes]] = []
        with self._lock:
            for ident, pending in list(self._pending.items()):
                if not connected:  # nothing can come back while we cannot reach the broker
                    pending.sent_at = now
                    continue
                wait = self.resend_after_s * 2 ** (pending.tries - 1)
                if now - pending.sent_at < wait:
                    continue
                if pending.tries >= self.tries:
                    del self._pending[ident]
                    self.given_up += 1
                    log.error(
                        "utterance %s: no recogniser worker answered %d sends; given up",
                        ident,
                        pending.tries,
                    )
                    continue
                pending.tries += 1
                pending.sent_at = now
                again.append((ident, pending.payload))
        return again
