"""The bus: transcripts out over MQTT (through the on-disk outbox), ``say`` requests in.

Topics (``Topics`` in :mod:`assistant.hermes`), prefix ``assistant/<site>``:

* ``.../transcript`` QoS 1, one per utterance (see :class:`assistant.hermes.Transcript`);
* ``.../utterance`` and ``.../answer``, QoS 1: between a ``--remote`` site and its
  recogniser workers (remote.py, :class:`assistant.hermes.AnswerForSite`);
* ``.../status`` retained: ``{"state": "online", "queued", "dropped", ...}`` on every
  connect and when the outbox drops messages; last will ``{"state": "offline"}``,
  also published on a clean stop;
* ``.../say`` subscribed (JSON ``{"text", "id"?}`` or plain text) -> ``on_say``;
  :meth:`Bus.publish_said` answers on ``.../said`` ``{"id"}``;
* Hermes, unless ``hermes=False``: ``hermes/asr/textCaptured`` and
  ``hermes/intent/<name>`` or ``hermes/nlu/intentNotRecognized`` per transcript;
  ``hermes/tts/say`` for our siteId -> ``on_say``, answered by ``hermes/tts/sayFinished``.

Delivery. :meth:`Bus.publish_transcript` only writes to the outbox (sqlite, fsynced)
and wakes the network thread; it never waits for the network. The network thread
publishes the oldest messages with QoS 1, at most :data:`WINDOW` unacknowledged at a
time, and deletes each from the outbox on its PUBACK. After a lost connection it
reconnects with exponential back-off (``reconnect_min_delay`` doubling up to
``reconnect_max_delay``, with jitter) on a fresh client and starts again from the
oldest unacknowledged message. Order is kept; delivery is *at least once* (a message
whose PUBACK was lost is sent again), so consumers dedupe by ``id``.

Threads. One network thread owns the paho client (paho's external-loop API:
``socket()``, ``loop_read()``, ``loop_write()``, ``loop_misc()``), so there is no
locking around paho. ``on_say`` runs on a separate dispatch thread, one request at a
time in arrival order, so a handler that speaks for ten seconds delays neither the
transcripts nor the keep-alive. Nothing a publisher sends can raise out of a callback.

No broker configured. With ``host`` empty the product still runs on a fresh machine:
if a ``mosquitto`` binary is found, :class:`LocalBroker` starts a private one on a free
loopback port and the log says ``no broker configured: started a private Mosquitto on
127.0.0.1:PORT``; other programs on this machine can subscribe there. Without the
binary, the bus says so on the log and prints each transcript as one JSON line on
stdout instead (``Bus.mode`` is then ``"stdout"``).

Secrets. The password (or ``password_file``, read at :meth:`Bus.start`) is never
logged and is left out of ``repr(settings)``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from assistant import __version__
from assistant.hermes import (
    AnswerForSite,
    HermesTopics,
    Said,
    SayPayloadError,
    SayRequest,
    Status,
    Topics,
    Transcript,
    TtsSayFinished,
    check_topic_level,
    dumps,
    hermes_messages,
    parse_hermes_say,
    parse_say,
)
from assistant.outbox import DEFAULT_MAX_MESSAGES, Outbox
from assistant.result import Result

__all__ = [
    "Bus",
    "BusConfigError",
    "BrokerUnavailable",
    "LocalBroker",
    "MqttSettings",
    "SayRequest",
    "WINDOW",
    "find_mosquitto",
    "probe_broker",
]

log = logging.getLogger(__name__)
SAY_QUEUE_LIMIT = 16  # say requests waiting to be spoken; older ones are dropped beyond this

WINDOW = 16
"""Most QoS 1 messages in flight at once: pipelining without unbounded resends."""

Mode = Literal["broker", "local-broker", "stdout"]


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class MqttSettings:
    """How to reach the broker. ``host`` None or empty means "no broker configured"."""

    host: str | None = None
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None  # None with tls: the system's trusted CAs
    cert_file: Path | None = None  # client certificate, for brokers that ask for one
    key_file: Path | None = None
    tls_insecure: bool = False  # skip certificate and host name checks (testing only)
    client_id: str | None = None  # None: "assistant-<site>-<random>", unique per process
    keepalive: int = 30
    hermes: bool = True
    site: str = field(default_factory=socket.gethostname)
    topic_prefix: str = "assistant"
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 10.0  # a restarted home broker is found within ~10 s
    connect_timeout: float = 5.0
    outbox_max_messages: int = DEFAULT_MAX_MESSAGES

    def __post_init__(self) -> None:
        check_topic_level(self.site, "mqtt site")
        for level in self.topic_prefix.split("/"):
            check_topic_level(level, "mqtt topic_prefix")
        if self.topic_prefix.startswith("$"):
            raise ValueError("mqtt topic_prefix must not start with '$' (broker topics)")
        if not 0 < self.port < 65536:
            raise ValueError(f"mqtt port must be 1..65535, got {self.port}")
        if self.keepalive < 5:
            raise ValueError(f"mqtt keepalive must be >= 5 seconds, got {self.keepalive}")
        if self.password is not None and self.password_file is not None:
            raise ValueError("mqtt password and password_file are exclusive: set one")
        if (self.password is not None or self.password_file) and not self.username:
            raise ValueError("mqtt password needs a username")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("mqtt cert_file and key_file go together: set both or neither")
        if not self.tls and (self.ca_file or self.cert_file or self.tls_insecure):
            raise ValueError("mqtt ca_file/cert_file/tls_insecure need tls = true")
        if not 0 < self.reconnect_min_delay <= self.reconnect_max_delay:
            raise ValueError("mqtt reconnect delays need 0 < reconnect_min_delay <= max")
        if self.outbox_max_messages < 1:
            raise ValueError("mqtt outbox_max_messages must be >= 1")

    @property
    def topics(self) -> Topics:
        return Topics(self.site, self.topic_prefix)

    def read_password(self) -> str | None:
        """The password, from the file when one is named (first line, no newline)."""
        if self.password_file is None:
            return self.password
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise BusConfigError(
                f"mqtt password_file {self.password_file} cannot be read: {exc.strerror}"
            ) from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise BusConfigError(f"mqtt password_file {self.password_file} is empty")
        return lines[0]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context, built once; file problems name the setting at fault."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise BusConfigError(f"mqtt ca_file {self.ca_file} cannot be loaded: {exc}") from None
        if self.ca_file:
            # Python 3.13 turned on strict RFC 5280 checks, which refuse a CA certificate with
            # no key usage extension: the CA that Mosquitto's own TLS guide (and Debian's
            # openssl.cnf v3_ca) makes. A broker that worked on Bookworm's 3.11 must still
            # work on Trixie's 3.13; the chain and the host name are verified as before.
            ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
        if self.cert_file:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise BusConfigError(
                    f"mqtt cert_file {self.cert_file} / key_file {self.key_file} "
                    f"cannot be loaded: {exc}"
                ) from None
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class BusConfigError(ValueError):
    """The MQTT settings cannot work (unreadable password file, bad certificate...)."""


class BrokerUnavailable(RuntimeError):
    """A private Mosquitto could not be started."""


# ---------------------------------------------------------------- local broker


def find_mosquitto() -> str | None:
    """The mosquitto binary: on PATH, else in the sbin folders that PATH often lacks."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"):
        candidate = Path(folder, "mosquitto")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the caller must retry if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None) -> bool:
    """True once ``host:port`` accepts connections; False on timeout or if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class LocalBroker:
    """A private Mosquitto on a free loopback port, for machines with no broker configured.

    Anonymous, no persistence, bound to 127.0.0.1 only: nothing outside this machine
    can reach it. Its log goes to ``log_path`` (in a temporary folder removed by
    :meth:`stop`).
    """

    def __init__(self, binary: str, host: str = "127.0.0.1") -> None:
        self.binary = binary
        self.host = host
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def log_path(self) -> Path | None:
        return self._dir / "mosquitto.log" if self._dir else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="assistant-mosquitto-"))
        conf = self._dir / "mosquitto.conf"
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = free_port(self.host)
            conf.write_text(
                f"listener {port} {self.host}\nallow_anonymous true\n"
                "persistence false\nlog_dest stderr\n",
                encoding="utf-8",
            )
            with open(self._dir / "mosquitto.log", "ab") as log_file:
                proc = subprocess.Popen(
                    [self.binary, "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,  # a Ctrl-C for the daemon is handled by the daemon
                )
            if wait_for_port(self.host, port, timeout, proc):
                self._proc, self.port = proc, port
                return
            proc.kill()
            proc.wait()
        tail = (self._dir / "mosquitto.log").read_text(errors="replace")[-500:]
        self.stop()
        raise BrokerUnavailable(f"{self.binary} did not start listening: {tail.strip()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# ------------------------------------------------------------------------ helpers


def _describe_connect_error(exc: BaseException, host: str, port: int) -> str:
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of {where} not trusted: {exc.verify_message} "
            "(check mqtt ca_file, or that host matches the certificate)"
        )
    if isinstance(exc, ssl.CertificateError):
        return f"TLS certificate of {where} does not match the host name: {exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed: {exc.reason or exc} (is it a TLS port?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {where} refused (is the broker running?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve mqtt host {host!r}: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return f"connection to {where} timed out"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"cannot connect to {where}: {exc!r}"


def _describe_refusal(reason: object) -> str:
    text = str(reason)
    hint = ""
    if "authori" in text.lower() or "password" in text.lower():
        hint = " (check mqtt username and password)"
    return f"broker refused the connection: {text}{hint}"


@dataclass
class _Session:
    """State of one connection; a reconnect starts a new one from the outbox's head."""

    client: paho.Client
    connack: bool | None = None  # None: waiting, True: accepted, False: refused
    inflight: dict[int, int] = field(default_factory=dict)  # mid -> outbox seq
    acked: list[int] = field(default_factory=list)  # seqs whose PUBACK came
    last_sent: int = 0  # highest seq handed to paho on this connection
    announced: bool = False  # status + subscriptions done
    goodbye_mid: int | None = None


# ---------------------------------------------------------------------------- bus


class Bus:
    """Publishes transcripts (never losing one) and delivers ``say`` requests.

    ``on_say`` is called on the bus's dispatch thread, one request at a time; it may
    block (speak) and should call :meth:`publish_said` when done. Its exceptions are
    logged, never propagated. With ``on_say`` None the bus subscribes to nothing.
    ``on_transcript`` (a site run with ``--remote``) subscribes to the site's own transcripts,
    which recogniser workers publish, and is called on the network thread for each: it
    must return quickly. ``on_answer_for_site`` (the same sites) does the same for the
    answers the workers hand back for the site to publish itself (hermes.AnswerForSite).
    """

    def __init__(
        self,
        settings: MqttSettings,
        outbox_path: Path,
        on_say: Callable[[SayRequest], None] | None,
        on_transcript: Callable[[Transcript], None] | None = None,
        on_answer_for_site: Callable[[AnswerForSite], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._on_say = on_say
        self._on_transcript = on_transcript
        self._on_answer_for_site = on_answer_for_site
        self._outbox = Outbox(Path(outbox_path), max_messages=settings.outbox_max_messages)
        self._client_id = settings.client_id or f"assistant-{settings.site}-{uuid.uuid4().hex[:8]}"
        self._mode: Mode | None = None
        self._endpoint: tuple[str, int] | None = None
        self._local: LocalBroker | None = None
        self._password: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._stop = threading.Event()
        # Its own generator for reconnect jitter: the host process's global random state is
        # not ours to advance from a background thread.
        self._jitter = random.Random()
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._drained = threading.Condition()
        self._thread: threading.Thread | None = None
        self._say_queue: queue.Queue[SayRequest | None] = queue.Queue()
        self.says_dropped = 0
        self._say_thread: threading.Thread | None = None
        self._connected = False
        self._delivered = 0
        self._reported_dropped = -1
        self._last_error: str | None = None
        self._stdout_lock = threading.Lock()

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True while a broker accepted our connection (always False in stdout mode)."""
        return self._connected

    @property
    def queued(self) -> int:
        """Messages waiting in the outbox (including those in flight)."""
        return len(self._outbox)

    @property
    def delivered(self) -> int:
        """Messages acknowledged by the broker (or printed) since :meth:`start`."""
        return self._delivered

    @property
    def dropped(self) -> int:
        """Messages the full outbox discarded, oldest first, over its lifetime."""
        return self._outbox.dropped

    @property
    def mode(self) -> Mode | None:
        """``broker``, ``local-broker`` or ``stdout`` once started."""
        return self._mode

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """Where we connect (the private broker's address in ``local-broker`` mode)."""
        return self._endpoint

    @property
    def _where(self) -> str:
        return f"{self._endpoint[0]}:{self._endpoint[1]}" if self._endpoint else "?"

    @property
    def last_error(self) -> str | None:
        """The latest connection problem, in words (None once connected)."""
        return self._last_error

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Read secrets, pick the mode, start the threads. Returns without waiting."""
        if self._thread is not None:
            raise RuntimeError("Bus.start() called twice")
        s = self.settings
        if s.host:
            self._password = s.read_password()
            self._ssl = s.ssl_context()
            self._mode, self._endpoint = "broker", (s.host, s.port)
        else:
            self._start_without_broker()
        self._say_thread = threading.Thread(target=self._dispatch_says, name="bus-say", daemon=True)
        self._say_thread.start()
        target = self._run_stdout if self._mode == "stdout" else self._run_mqtt
        self._thread = threading.Thread(target=target, name="bus-net", daemon=True)
        self._thread.start()

    def _start_without_broker(self) -> None:
        binary = find_mosquitto()
        if binary is not None:
            local = LocalBroker(binary)
            try:
                local.start()
            except (BrokerUnavailable, OSError) as exc:
                log.error("no broker configured and the private Mosquitto failed: %s", exc)
            else:
                self._local = local
                self._mode, self._endpoint = "local-broker", (local.host, local.port or 0)
                log.warning(
                    "no broker configured: started a private Mosquitto on %s:%d "
                    "(set [mqtt] host to use a shared broker)",
                    local.host,
                    local.port,
                )
                return
        self._mode = "stdout"
        log.warning(
            "no broker configured and no usable mosquitto: transcripts are printed to "
            "stdout as JSON lines (install mosquitto or set [mqtt] host)"
        )

    def stop(self, flush_timeout: float) -> bool:
        """Deliver what is queued (up to ``flush_timeout`` s), say goodbye, stop.

        Returns True when nothing was left undelivered; what is left stays in the
        outbox for the next start. Safe to call twice.
        """
        if self._closed:
            return self.queued == 0
        flushed = self.flush(flush_timeout) if self._thread is not None else self.queued == 0
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._say_thread is not None:
            self._say_queue.put(None)
            self._say_thread.join(timeout=1.0)  # may be mid-sentence; it is a daemon thread
        self._closed = True
        self._outbox.close()
        if self._local is not None:
            self._local.stop()
        self._wake_r.close()
        self._wake_w.close()
        return flushed

    def flush(self, timeout: float) -> bool:
        """Wait until every queued message was acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while len(self._outbox) > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(min(remaining, 0.2))
        return True

    # ------------------------------------------------------------- publishing

    def publish_transcript(
        self,
        result: Result,
        *,
        utterance_id: str,
        started: float,
        ended: float,
        latency_ms: float,
        model: str,
        confirmed: bool | None = None,
    ) -> None:
        """Queue one transcript of this bus's site (and its Hermes messages) on disk; returns
        at once. ``confirmed``: whether the user said yes to "did you mean ...?" about it
        (dialogue.py); None where nobody was asked."""
        transcript = Transcript.from_result(
            result,
            site=self.settings.site,
            utterance_id=utterance_id,
            started=started,
            ended=ended,
            latency_ms=latency_ms,
            model=model,
            confirmed=confirmed,
        )
        self.publish(transcript)

    def publish(self, transcript: Transcript) -> None:
        """Queue a transcript already built (and its Hermes messages) on disk, on the topic
        of its own site (a recogniser worker answers for the site whose utterance it was
        handed); returns at once."""
        site = transcript.site
        topics = self.topics if site == self.settings.site else Topics(site, self.topics.prefix)
        items = [(topics.transcript, dumps(transcript.to_dict()))]
        if self.settings.hermes:
            # The Hermes copies are a courtesy: if one cannot be built (an odd intent name or
            # slot value), the transcript itself must still go out.
            try:
                items += [(t, dumps(payload)) for t, payload in hermes_messages(transcript)]
            except (TypeError, ValueError, AttributeError) as exc:
                log.error("Hermes messages for %s not sent: %s", transcript.id, exc)
        self._enqueue(items)

    def publish_utterance(self, payload: bytes) -> None:
        """Queue one utterance for the recogniser workers (``--remote``), the payload of an
        :class:`assistant.remote.UtteranceMessage`; returns at once."""
        self._enqueue([(self.topics.utterance, payload)])

    def publish_for_site(self, answer: AnswerForSite) -> None:
        """Queue an answer for the site to publish itself (a recogniser worker: an answer
        under the bar the site asks about, or the reply to its question); returns at once."""
        topics = Topics(answer.transcript.site, self.topics.prefix)
        self._enqueue([(topics.answer, dumps(answer.to_dict()))])

    def publish_said(self, request: SayRequest) -> None:
        """Tell the requester that ``request`` was spoken (``said`` or ``sayFinished``)."""
        if request.source == "hermes":
            reply = TtsSayFinished(request.id, request.site, request.session_id)
            self._enqueue([(reply.topic, dumps(reply.to_dict()))])
        else:
            said = Said(request.id, request.site)
            self._enqueue([(self.topics.said, dumps(said.to_dict()))])

    def _enqueue(self, items: list[tuple[str, bytes]]) -> None:
        if self._closed:
            raise RuntimeError("the bus is stopped")
        self._outbox.put_many(items)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a full pipe already means "wake up"

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _acked(self, seqs: list[int]) -> None:
        self._outbox.ack(seqs)
        self._delivered += len(seqs)
        with self._drained:
            self._drained.notify_all()

    # --------------------------------------------------------------- say side

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Route one incoming message; logs and swallows anything malformed."""
        if topic == self.topics.transcript and self._on_transcript is not None:
            self._handle_transcript(payload)
            return
        if topic == self.topics.answer and self._on_answer_for_site is not None:
            self._handle_answer_for_site(payload)
            return
        try:
            if topic == self.topics.say:
                request: SayRequest | None = parse_say(payload, site=self.settings.site)
            elif topic == HermesTopics.TTS_SAY and self.settings.hermes:
                request = parse_hermes_say(payload, site=self.settings.site)
                if request is None:
                    log.debug("ignored %s for another siteId", topic)
                    return
            else:
                return
        except SayPayloadError as exc:
            log.warning("ignored a malformed message on %s: %s", topic, exc)
            return
        except Exception:  # a bug here must not kill paho's loop
            log.exception("failed to handle a message on %s", topic)
            return
        if request is None:
            return
        if request.truncated:
            log.warning("say request %s was longer than allowed and was cut", request.id)
        # A flood of say requests must not keep the assistant talking (and its microphone
        # muted) for hours: keep the newest few, drop the oldest, and count what was dropped.
        while self._say_queue.qsize() >= SAY_QUEUE_LIMIT:
            try:
                dropped = self._say_queue.get_nowait()
            except queue.Empty:
                break
            if dropped is None:  # the stop marker stays
                self._say_queue.put(None)
                return
            self.says_dropped += 1
            log.warning("too many say requests: dropped %r", dropped.text[:40])
        self._say_queue.put(request)

    def _handle_transcript(self, payload: bytes) -> None:
        assert self._on_transcript is not None
        try:
            transcript = Transcript.from_dict(json.loads(payload))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignored a malformed message on %s: %s", self.topics.transcript, exc)
            return
        try:
            self._on_transcript(transcript)
        except Exception:  # a bug here must not kill paho's loop
            log.exception("failed to handle transcript %s", transcript.id)

    def _handle_answer_for_site(self, payload: bytes) -> None:
        assert self._on_answer_for_site is not None
        try:
            answer = AnswerForSite.from_dict(json.loads(payload))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignored a malformed message on %s: %s", self.topics.answer, exc)
            return
        try:
            self._on_answer_for_site(answer)
        except Exception:  # a bug here must not kill paho's loop
            log.exception("failed to handle the answer %s", answer.transcript.id)

    def _dispatch_says(self) -> None:
        while (request := self._say_queue.get()) is not None:
            if self._on_say is None:
                continue
            try:
                self._on_say(request)
            except Exception:
                log.exception("on_say failed for request %s", request.id)

    # ------------------------------------------------------------ stdout mode

    def _run_stdout(self) -> None:
        while True:
            batch = self._outbox.peek(0, 64)
            for message in batch:
                if message.topic == self.topics.transcript:
                    with self._stdout_lock:
                        sys.stdout.write(message.payload.decode("utf-8") + "\n")
                        sys.stdout.flush()
            if batch:
                self._acked([m.seq for m in batch])
                continue
            if self._stop.is_set():
                return
            select.select([self._wake_r], [], [], 1.0)
            self._drain_wake()

    # -------------------------------------------------------------- MQTT mode

    def _run_mqtt(self) -> None:
        delay = self.settings.reconnect_min_delay
        while not self._stop.is_set():
            accepted = False
            try:
                session = self._connect()
                if session is not None:
                    accepted = self._serve(session)
            except Exception:  # never let a bug end delivery for good
                log.exception("MQTT connection loop failed; reconnecting")
            self._connected = False
            if accepted:
                delay = self.settings.reconnect_min_delay
            if self._stop.is_set():
                return
            self._stop.wait(delay * self._jitter.uniform(0.8, 1.2))
            delay = min(delay * 2, self.settings.reconnect_max_delay)

    def _new_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=True,  # stale "say" requests must not be replayed after an outage
            protocol=paho.MQTTv311,
        )
        client.connect_timeout = s.connect_timeout
        client.max_inflight_messages_set(WINDOW)
        will = Status("offline", s.site).to_dict()
        client.will_set(self.topics.status, dumps(will), qos=1, retain=True)
        if s.username and self._mode == "broker":
            client.username_pw_set(s.username, self._password)
        if self._ssl is not None and self._mode == "broker":
            client.tls_set_context(self._ssl)
        return client

    def _note_error(self, message: str) -> None:
        # The same failure every back-off step would flood the journal: say it once.
        if message != self._last_error:
            log.warning("mqtt: %s; retrying with back-off", message)
        else:
            log.debug("mqtt: %s", message)
        self._last_error = message

    def _connect(self) -> _Session | None:
        assert self._endpoint is not None
        host, port = self._endpoint
        client = self._new_client()
        session = _Session(client)

        def on_connect(_c, _u, _flags, reason, _props) -> None:
            session.connack = not reason.is_failure
            if reason.is_failure:
                self._note_error(_describe_refusal(reason))

        def on_publish(_c, _u, mid, _reason, _props) -> None:
            if mid == session.goodbye_mid:
                session.goodbye_mid = None
                return
            seq = session.inflight.pop(mid, None)
            if seq is not None:
                session.acked.append(seq)

        def on_message(_c, _u, message: paho.MQTTMessage) -> None:
            self.handle_message(message.topic, message.payload)

        client.on_connect = on_connect
        client.on_publish = on_publish
        client.on_message = on_message
        try:
            client.connect(host, port, self.settings.keepalive)
        except Exception as exc:  # OSError, ssl errors, ValueError from paho
            self._note_error(_describe_connect_error(exc, host, port))
            return None
        return session

    def _announce(self, session: _Session) -> None:
        """After CONNACK: subscribe, publish our status."""
        client = session.client
        if self._on_say is not None:  # None: a publisher only (a recogniser worker)
            subs = [(self.topics.say, 1)]
            if self.settings.hermes:
                subs.append((HermesTopics.TTS_SAY, 1))
            client.subscribe(subs)
        if self._on_transcript is not None:
            client.subscribe(self.topics.transcript, qos=1)
        if self._on_answer_for_site is not None:
            client.subscribe(self.topics.answer, qos=1)
        self._publish_status(client)
        session.announced = True
        again = " again" if self._last_error is not None else ""
        log.info("mqtt: connected to %s%s (%d queued)", self._where, again, len(self._outbox))
        self._last_error = None
        self._connected = True

    def _publish_status(self, client: paho.Client) -> None:
        dropped = self._outbox.dropped
        status = Status(
            "online",
            self.settings.site,
            queued=len(self._outbox),
            dropped=dropped,
            delivered=self._delivered,
            hermes=self.settings.hermes,
            version=__version__,
        )
        client.publish(self.topics.status, dumps(status.to_dict()), qos=1, retain=True)
        self._reported_dropped = dropped

    def _pump(self, session: _Session) -> None:
        room = WINDOW - len(session.inflight)
        if room <= 0:
            return
        for message in self._outbox.peek(session.last_sent, room):
            info = session.client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # connection going away: the next session resends from the outbox
            session.inflight[info.mid] = message.seq
            session.last_sent = message.seq

    def _serve(self, session: _Session) -> bool:
        """Run one connection until it drops or we stop. True if the broker accepted it."""
        client = session.client
        connack_deadline = time.monotonic() + self.settings.connect_timeout
        goodbye_deadline: float | None = None
        while True:
            if session.connack is False:
                return False
            if session.connack is None and time.monotonic() > connack_deadline:
                self._note_error("no answer (CONNACK) from the broker")
                client.disconnect()
                return False
            if session.acked:
                acked, session.acked = session.acked, []
                self._acked(acked)
            if session.connack and not session.announced:
                self._announce(session)
            if self._stop.is_set():
                if goodbye_deadline is None:
                    goodbye_deadline = time.monotonic() + 1.0
                    self._say_goodbye(session)
                if session.goodbye_mid is None or time.monotonic() > goodbye_deadline:
                    client.disconnect()
                    return bool(session.connack)
            elif session.connack:
                if self._outbox.dropped != self._reported_dropped:
                    self._publish_status(client)
                self._pump(session)
            sock = client.socket()
            if sock is None:
                return bool(session.connack)
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            readable, writable, _ = select.select(
                [sock, self._wake_r],
                [sock] if client.want_write() else [],
                [],
                0.0 if pending else 1.0,
            )
            if self._wake_r in readable:
                self._drain_wake()
            if sock in readable or pending:
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return self._lost(session)
            if sock in writable:
                if client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return self._lost(session)
            if client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return self._lost(session)

    def _lost(self, session: _Session) -> bool:
        if session.acked:
            acked, session.acked = session.acked, []
            self._acked(acked)
        if session.connack:
            self._note_error(f"lost the connection to {self._where}")
        return bool(session.connack)

    def _say_goodbye(self, session: _Session) -> None:
        """On a clean stop, publish the offline status ourselves (no will is sent then)."""
        if not session.connack:
            return
        payload = dumps(Status("offline", self.settings.site).to_dict())
        info = session.client.publish(self.topics.status, payload, qos=1, retain=True)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            session.goodbye_mid = info.mid  # on_publish clears it at the PUBACK


def probe_broker(settings: MqttSettings, timeout: float = 3.0) -> tuple[bool, str]:
    """Try one connection with these settings: (ok, verdict in words). For ``check``."""
    if not settings.host:
        binary = find_mosquitto()
        if binary:
            return True, f"no broker configured: a private Mosquitto ({binary}) will be started"
        return True, "no broker configured and no mosquitto: transcripts go to stdout"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"assistant-check-{os.getpid()}")
    client.connect_timeout = timeout
    result: dict[str, object] = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: result.setdefault("reason", reason)
    try:
        if settings.username:
            client.username_pw_set(settings.username, settings.read_password())
        ctx = settings.ssl_context()
        if ctx is not None:
            client.tls_set_context(ctx)
        client.connect(settings.host, settings.port, settings.keepalive)
    except BusConfigError as exc:
        return False, str(exc)
    except Exception as exc:
        return False, _describe_connect_error(exc, settings.host, settings.port)
    deadline = time.monotonic() + timeout
    try:
        while "reason" not in result and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
    finally:
        client.disconnect()
    reason = result.get("reason")
    if reason is None:
        return False, f"no answer (CONNACK) from {settings.host}:{settings.port}"
    if getattr(reason, "is_failure", False):
        return False, _describe_refusal(reason)
    return True, f"connected to {settings.host}:{settings.port}"
