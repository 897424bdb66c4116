"""Shared fixtures: a real Mosquitto broker per test, and buses that are stopped after it.

``mosquitto_broker`` is a running broker on a free 127.0.0.1 port with a temporary
config (anonymous, no persistence). ``mosquitto_factory(extra_config=..., listener=...)``
makes brokers with more configuration (TLS, password files). Either can be stopped
(``.stop()``, or ``.kill()`` for SIGKILL) and started again on the same port to
simulate an outage. Tests that need them are skipped when mosquitto is missing.
``bus_factory(settings, ...)`` makes ``assistant.mqtt.Bus`` instances and stops them all
after the test. Plain MQTT helpers (subscriber, publisher, waits) are in mqtt_helpers.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # only for hints: tests without MQTT need not import the bus
    from assistant.hermes import SayRequest
    from assistant.mqtt import Bus, MqttSettings

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str | None:
    for name in MOSQUITTO_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """A mosquitto process with a fixed port across stop/start."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        extra_config: str = "",
        listener: str = "",
        persistence: bool = False,
    ) -> None:
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.workdir = workdir
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        # "listener PORT HOST" first, then whatever the test adds to that listener.
        self.config_path.write_text(
            f"per_listener_settings false\nlistener {self.port} {self.host}\n"
            f"{listener}\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {workdir}/\n"
            "log_dest stderr\nlog_type all\n"
            # As root, mosquitto drops to user "mosquitto", who cannot write our temp dir.
            f"{'user root' if os.geteuid() == 0 else ''}\n"
            f"{extra_config or 'allow_anonymous true'}\n",
            encoding="utf-8",
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        """Start (again) on the same port; waits until it accepts connections."""
        if self.running:
            return
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [self.binary, "-c", str(self.config_path)], stdout=log, stderr=log
                )
            if self._wait_listening(deadline):
                return
            # The port may still be held for a moment after a stop: retry until the deadline.
            self._proc.kill()
            self._proc.wait()
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start on {self.port}:\n{self.log()}")
            time.sleep(0.05)

    def _wait_listening(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.01)
        return False

    def stop(self) -> None:
        """Graceful stop (SIGTERM)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): clients see the TCP connection vanish."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.kill(self._proc.pid, sig)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


BrokerFactory = Callable[..., MosquittoBroker]


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """Make brokers: ``mosquitto_factory(extra_config=..., listener=..., persistence=...)``.

    ``listener`` lines configure the test listener (TLS files); ``extra_config`` replaces
    the default ``allow_anonymous true``; ``persistence`` keeps sessions across a
    graceful ``stop()``/``start()``; ``start=False`` returns it stopped.
    """
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed")
    made: list[MosquittoBroker] = []

    def make(
        *, extra_config: str = "", listener: str = "", persistence: bool = False, start: bool = True
    ) -> MosquittoBroker:
        broker = MosquittoBroker(
            binary,
            tmp_path_factory.mktemp("mosquitto"),
            extra_config=extra_config,
            listener=listener,
            persistence=persistence,
        )
        made.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in made:
        broker.kill()


@pytest.fixture
def mosquitto_broker(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    """A running anonymous broker: ``.host``, ``.port``, ``.stop()``, ``.start()``."""
    return mosquitto_factory()


@pytest.fixture
def bus_factory(tmp_path: Path) -> Iterator[Callable[..., Bus]]:
    """Make buses: ``bus_factory(settings, on_say=None, outbox=None, start=True)``.

    The outbox defaults to one file in ``tmp_path``; every bus made is stopped (without
    waiting to flush) when the test ends, whatever it asserted.
    """
    from assistant.mqtt import Bus

    made: list[Bus] = []

    def make(
        settings: MqttSettings,
        on_say: Callable[[SayRequest], None] | None = None,
        outbox: Path | None = None,
        start: bool = True,
    ) -> Bus:
        bus = Bus(settings, outbox or tmp_path / "outbox.sqlite", on_say or (lambda _r: None))
        made.append(bus)
        if start:
            bus.start()
        return bus

    yield make
    for bus in made:
        bus.stop(0)
