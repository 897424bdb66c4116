"""Recogniser worker: ``assistant worker`` recognises utterances that other sites send.

Sites run with ``--remote`` publish their utterances (remote.py). Workers on stronger
machines share them through one MQTT v5 shared subscription: the broker hands each one to
one worker of the group. The worker publishes the transcript on the *site's* topics
(``<prefix>/<site>/transcript`` and the Hermes messages with the site's siteId), with the
utterance's id, so that subscribers cannot tell it from a site that recognises for itself.

Nothing is lost on the way:

* the worker acknowledges an utterance (manual PUBACK) only once its transcript is in the
  worker's own on-disk outbox, so a worker killed mid-utterance gets it again;
* its session is persistent (``clean_start=False``, a session expiry, a client id stable
  across restarts), so what the broker handed it, and what arrives for it while it is away,
  waits on the broker for its return. Run each worker with its own stable ``client_id``.

A site that asks "did you mean ...?" about unsure answers says so in its utterances
(``ask_from``): an answer the worker's bar turns away, but at least that sure, goes back to
that site alone on ``<prefix>/<site>/answer`` (hermes.AnswerForSite), and the site publishes
the transcript once the user has replied. So does the answer to the reply itself (``reply``
in its utterance), which the site publishes after the transcript it answers. A worker whose
grammar has no ``Yes`` intent to answer with publishes every transcript itself.

Delivery is at least once: a transcript may arrive twice with the same ``id``. A malformed
utterance is logged with the reason and acknowledged (dropped): no retry can mend it.

Threads: paho's network thread (reconnects on its own) queues incoming utterances; the
main thread recognises them one at a time, pets the systemd watchdog, and stops on SIGTERM.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import dialogue
from .config import Config
from .daemon import FLUSH_TIMEOUT_S, DaemonError, load_recognizer
from .hermes import AnswerForSite, Transcript
from .mqtt import Bus, BusConfigError
from .notify import Notifier, watchdog_interval
from .remote import UtteranceMessage, UtterancePayloadError, shared_utterance_topic
from .result import Result

log = logging.getLogger(__name__)

# Utterances the broker hands over before we acknowledge one (MQTT v5 Receive Maximum): what
# waits here unacknowledged is bounded, and the rest waits on the broker.
RECEIVE_MAXIMUM = 8


class WorkerError(Exception):
    """A user-readable reason the worker cannot start."""


@dataclass(frozen=True)
class _Received:
    topic: str
    payload: bytes
    mid: int
    connection: int  # which connection it came on: an ack is only valid on that one


class Worker:
    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self._notifier = notifier or Notifier()
        self._stop = threading.Event()
        self._received: queue.Queue[_Received] = queue.Queue()
        self._connection = 0  # bumped on every CONNACK
        self.recognizer: Any = None
        self.bus: Bus | None = None
        self.handled = 0
        self._client: paho.Client | None = None
        self._told_cannot_ask: set[str] = set()  # sites told why their questions are not
        settings = config.worker
        self.client_id = settings.client_id or f"assistant-worker-{socket.gethostname()}"
        self.topic = shared_utterance_topic(settings.group, config.mqtt.topic_prefix)

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def run(self) -> int:
        self._start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self._notifier.ready(f"recognising {self.topic}")
        log.info("ready: %s -> %s (client id %s)", self.topic, self.recognizer.name, self.client_id)
        interval = watchdog_interval()
        try:
            while not self._stop.is_set():
                if interval:
                    self._notifier.watchdog()
                try:
                    item = self._received.get(timeout=min(0.5, interval or 0.5))
                except queue.Empty:
                    continue
                self._handle(item)
        finally:
            self._shutdown()
        return 0

    # -- lifecycle ---------------------------------------------------------------

    def _start(self) -> None:
        config = self.config
        if not config.mqtt.host:
            raise WorkerError(
                "a worker needs the broker its sites publish to: set [mqtt] host "
                "or --broker HOST:PORT"
            )
        try:
            self.recognizer = load_recognizer(config.model)
        except DaemonError as exc:
            raise WorkerError(str(exc)) from None
        config.state_dir.mkdir(parents=True, exist_ok=True)
        # Transcripts go out through a Bus of their own: outbox, reconnects, status. Its status
        # topic is named after the worker, not the hostname, which a site on this machine
        # uses for its own (the worker's "offline" would otherwise mark the site offline).
        bus_settings = dataclasses.replace(config.mqtt, site=self.client_id, client_id=None)
        self.bus = Bus(bus_settings, config.state_dir / "worker-outbox.sqlite3", on_say=None)
        try:
            self.bus.start()
            self._client = self._consumer()
        except BusConfigError as exc:
            raise WorkerError(str(exc)) from None

    def _consumer(self) -> paho.Client:
        """The connection that receives utterances: persistent, acknowledging by hand."""
        mqtt = self.config.mqtt
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5
        )
        client.manual_ack_set(True)
        client.connect_timeout = mqtt.connect_timeout
        # paho sleeps these (floats work though its hints say int); the settings ensure > 0.
        client.reconnect_delay_set(mqtt.reconnect_min_delay, mqtt.reconnect_max_delay)  # type: ignore[arg-type]
        if mqtt.username:
            client.username_pw_set(mqtt.username, mqtt.read_password())
        context = mqtt.ssl_context()
        if context is not None:
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.config.worker.session_expiry_s
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        client.connect_async(
            mqtt.host, mqtt.port, mqtt.keepalive, clean_start=False, properties=properties
        )
        client.loop_start()  # its thread connects, and reconnects, with back-off
        return client

    def _shutdown(self) -> None:
        # Utterances received but not recognised stay unacknowledged: the broker keeps them
        # in this worker's session and hands them over again when it returns.
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self.bus is not None and not self.bus.stop(FLUSH_TIMEOUT_S):
            log.warning("outbox not fully delivered; it is kept on disk for the next start")
        log.info("stopped after %d utterance(s)", self.handled)

    # -- paho's thread --------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt: the broker refused the worker: %s", reason)
            return
        self._connection += 1
        client.subscribe(self.topic, qos=1)  # kept by the session too; renewing is harmless
        log.info("mqtt: worker connected to %s:%d", self.config.mqtt.host, self.config.mqtt.port)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.error("mqtt: the broker refused the subscription %s: %s", self.topic, refused[0])
        else:
            log.info("mqtt: subscribed to %s", self.topic)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._stop.is_set():
            log.warning("mqtt: worker lost the broker (%s); reconnecting", reason)

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        self._received.put(_Received(message.topic, message.payload, message.mid, self._connection))

    # -- main thread ------------------------------------------------------------------

    def _handle(self, item: _Received) -> None:
        try:
            utterance = UtteranceMessage.from_payload(item.payload)
            topic_site = item.topic.split("/")[-2]
            if utterance.site != topic_site:
                raise UtterancePayloadError(
                    f"its site {utterance.site!r} is not the topic's {topic_site!r}"
                )
        except UtterancePayloadError as exc:
            log.warning("dropped a malformed utterance on %s: %s", item.topic, exc)
            self._ack(item)
            return
        try:
            result = self.recognizer.recognize(utterance.pcm)
        except Exception:  # noqa: BLE001 - publish a rejection so subscribers stay in step
            log.exception("recognition failed for utterance %s", utterance.id)
            result = Result(text="", intent=None)
        assert self.bus is not None
        latency_ms = max(0.0, (time.time() - utterance.ended) * 1000.0)
        transcript = Transcript.from_result(
            result,
            site=utterance.site,
            utterance_id=utterance.id,
            started=utterance.started,
            ended=utterance.ended,
            latency_ms=round(latency_ms, 1),
            model=self.recognizer.name,
        )
        if utterance.reply or self._site_asks_about(utterance, result):
            self.bus.publish_for_site(AnswerForSite(transcript, result.guess))
        else:
            self.bus.publish(transcript)
        self._ack(item)  # only now: the transcript is on disk
        self.handled += 1
        log.info(
            "%s %s: %r -> %s (confidence %.2f)",
            utterance.site,
            utterance.id,
            result.text,
            result.verdict(),
            result.confidence,
        )
        try:
            self.recognizer.settle()
        except Exception as exc:  # noqa: BLE001 - the next utterance reports it again
            log.error("model not ready for the next utterance: %s", exc)

    def _site_asks_about(self, utterance: UtteranceMessage, result: Result) -> bool:
        """The site asks about answers this unsure, and a Yes in our grammar can answer."""
        settings = dialogue.ConfirmSettings(from_confidence=utterance.ask_from)
        if not dialogue.worth_asking(result, settings):
            return False
        if dialogue.YES_INTENTS.isdisjoint(self.recognizer.grammar.intent_names):
            if utterance.site not in self._told_cannot_ask:
                self._told_cannot_ask.add(utterance.site)
                log.warning(
                    "%s asks about unsure answers, but %s has no Yes intent to answer with: "
                    "its transcripts go out as they are",
                    utterance.site,
                    self.recognizer.name,
                )
            return False
        return True

    def _ack(self, item: _Received) -> None:
        # A message id is only meaningful on the connection it came on; after a reconnect
        # the broker sends the message again, and this ack would hit another message.
        if self._client is not None and item.connection == self._connection:
            self._client.ack(item.mid, 1)
