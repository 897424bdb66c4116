"""Shared MQTT test helpers: a recording subscriber, a publisher, settings and waits.

Plain functions and classes, imported by the tests that talk to a real broker; the
fixtures that build on them (brokers, ``bus_factory``) live in conftest.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from assistant.mqtt import Bus, MqttSettings
from assistant.result import Result


class Subscriber:
    """A plain paho client that records what arrives (topic, payload, retained, time).

    It subscribes on every (re)connect, so it is subscribed again after a broker restart.
    ``subacks`` counts SUBACKs and ``sessions_present`` records the CONNACK flag of each
    connect, so a test can tell when it is back and whether the broker kept its session.
    ``ids`` holds the "id" of each transcript (a topic ending in /transcript) in arrival
    order, parsed as it arrives so that waiting on thousands of them stays cheap.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: list[str],
        *,
        client_id: str = "",
        clean: bool = True,
        tls_ca: Path | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self.ids: list[str] = []
        self.subacks = 0
        self.sessions_present: list[bool] = []
        self._topics = topics
        self._cond = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean
        )
        self.client.reconnect_delay_set(0.05, 0.2)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, 30)
        self.client.loop_start()
        assert self.wait_for(lambda: self.subacks >= 1), "subscriber did not get its SUBACK"

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, _r: Any, _p: Any) -> None:
        with self._cond:
            self.sessions_present.append(bool(flags.session_present))
        client.subscribe([(t, 1) for t in self._topics])

    def _on_subscribe(self, *_args: Any) -> None:
        with self._cond:
            self.subacks += 1
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain), time.monotonic()))
            if msg.topic.endswith("/transcript"):
                self.ids.append(json.loads(msg.payload)["id"])
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds; it is checked on every message and SUBACK."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def wait_ids(self, expected: list[str], timeout: float = 10.0) -> bool:
        return self.wait_for(lambda: set(expected) <= set(self.ids), timeout)

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        with self._cond:
            return [json.loads(p) for t, p, _, _ in self.messages if t == topic]

    def count(self, topic: str) -> int:
        with self._cond:
            return sum(1 for t, *_ in self.messages if t == topic)

    def settle(
        self, topic: str, count: int, timeout: float, quiet: float = 0.3
    ) -> list[dict[str, Any]]:
        """The payloads on ``topic`` once ``count`` arrived (or the timeout), and ``quiet``
        seconds later: a test that expects exactly ``count`` also sees any extra ones."""
        self.wait_for(lambda: self.count(topic) >= count, timeout)
        time.sleep(quiet)
        return self.payloads(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(host: str, port: int, *, unlimited: bool = False) -> paho.Client:
    """A connected paho client with its network loop running.

    ``unlimited`` lifts paho's in-flight and queue limits (0 means none), so a burst of
    publishes really goes out as a burst instead of being paced by paho.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2)
    if unlimited:
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    return client


def mqtt_settings(host: str, port: int, site: str, **overrides: Any) -> MqttSettings:
    """Bus settings with short back-offs and timeouts, so outages heal in a test's time."""
    values: dict[str, Any] = {
        "host": host,
        "port": port,
        "site": site,
        "reconnect_min_delay": 0.05,
        "reconnect_max_delay": 0.3,
        "connect_timeout": 2.0,
    }
    values.update(overrides)
    return MqttSettings(**values)


def publish_transcripts(
    bus: Bus, count: int, *, prefix: str = "u", start: int = 0, latency_ms: float = 42.0
) -> list[str]:
    """Publish ``count`` transcripts with ids ``{prefix}{n:05d}`` from ``start``; their ids."""
    ids = []
    for i in range(start, start + count):
        uid = f"{prefix}{i:05d}"
        now = time.time()
        bus.publish_transcript(
            Result(
                text=f"turn on light {i}",
                intent="HassTurnOn",
                slots={"name": f"light {i}"},
                confidence=0.9,
            ),
            utterance_id=uid,
            started=now - 1,
            ended=now,
            latency_ms=latency_ms,
            model="m",
        )
        ids.append(uid)
    return ids


def first_seen(ids: list[str]) -> list[str]:
    """Ids in the order they first arrived (at-least-once delivery may repeat some)."""
    return list(dict.fromkeys(ids))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` every 10 ms; one last check at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
