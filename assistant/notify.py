"""systemd notifications (sd_notify): READY, WATCHDOG, STOPPING, STATUS.

A thin wrapper over the `sdnotify` package: it is a no-op when NOTIFY_SOCKET is unset (not run
by systemd), so the daemon calls it unconditionally.
"""

from __future__ import annotations

import logging
import os

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        # sdnotify reads NOTIFY_SOCKET at construction time and handles abstract sockets ("@...").
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _send(self, message: str) -> None:
        if self._notifier is None:
            return
        self._notifier.notify(message)
        log.debug("sd_notify %s", message.replace("\n", " "))

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    # The watchdog is meant for one process: a child that inherited the environment must not pet.
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
        return None
    return seconds / 2 if seconds > 0 else None
