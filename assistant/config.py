"""One TOML file -> frozen settings. Every error names the file, the line and the key.

Sections: [audio], [vad], [model], [mqtt], [tts], [worker], [confirm], [replies] and top-level
`state_dir` and `log_level`. Every key is optional; a missing file section means the embedded
defaults, so a fresh machine runs with no file at all. Command-line flags override the file
(`with_overrides`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .dialogue import ConfirmSettings
from .mqtt import MqttSettings
from .remote import WorkerSettings
from .tts import TtsSettings
from .vad import VadSettings

DEFAULT_CONFIG_PATHS = (Path("/etc/assistant/assistant.toml"),)
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A user-readable configuration problem."""


@dataclass(frozen=True)
class AudioSettings:
    source: str = "mic"  # "mic", "-" (raw s16le 16 kHz mono on stdin) or a file path
    device: str | int | None = None  # input device name (substring) or index; None: default
    frame_ms: int = 30
    realtime: bool = False  # pace file sources at real time


@dataclass(frozen=True)
class ModelSettings:
    dir: Path | None = None  # None: the bundled default model
    # The confidence an intent needs to be published (below it: intent null), in place of the
    # bundle's own bar (fitted for the most right answers at 1% false accepts). A device that
    # would rather be asked again than act on a wrong command sets it higher (README).
    min_confidence: float | None = None
    # Hear answers near the bar again at other speeds before acting on them (recheck.py),
    # where the bundle was fitted for it: fewer wrong commands acted on, for two more decodes
    # of ~1 command in 10. A device too slow for those turns it off.
    recheck: bool = True
    # The model runs on recogniser workers elsewhere (`assistant worker`): this site only
    # sends its utterances (remote.py), for a Pi too weak to recognise, and loads no model.
    remote: bool = False

    def validate(self) -> list[tuple[str, str]]:
        """(key, problem) pairs; empty when valid."""
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            return [("min_confidence", "must be between 0 and 1")]
        return []


# Replies spoken after a recognised command; `{slot}` is filled from the result's slots.
# Time and date are answered out of the box (see tts.py); other intents only when configured.
DEFAULT_REPLIES: dict[str, str] = {
    "HassGetCurrentTime": "It is {time}",
    "HassGetCurrentDate": "Today is {date}",
}


@dataclass(frozen=True)
class Config:
    audio: AudioSettings = field(default_factory=AudioSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    confirm: ConfirmSettings = field(default_factory=ConfirmSettings)
    replies: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType(dict(DEFAULT_REPLIES))
    )
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    log_level: str = "info"
    path: Path | None = None  # the file it came from, if any

    def with_overrides(
        self,
        *,
        source: str | None = None,
        broker: str | None = None,
        site: str | None = None,
        model: Path | str | None = None,
        realtime: bool | None = None,
        remote: bool | None = None,
        group: str | None = None,
    ) -> Config:
        """Command-line flags win over the file."""
        config = self
        audio = config.audio
        if source is not None:
            audio = dataclasses.replace(audio, source=source)
        if realtime:
            audio = dataclasses.replace(audio, realtime=True)
        mqtt = config.mqtt
        if broker is not None:
            host, port = parse_broker(broker)
            mqtt = dataclasses.replace(mqtt, host=host, port=port)
        if site is not None:
            mqtt = dataclasses.replace(mqtt, site=site)
        model_settings = config.model
        if model is not None:
            model_settings = dataclasses.replace(model_settings, dir=Path(model))
        if remote:
            model_settings = dataclasses.replace(model_settings, remote=True)
        worker = config.worker
        if group is not None:
            try:
                worker = dataclasses.replace(worker, group=group)
            except ValueError as exc:
                raise ConfigError(f"--group: {exc}") from None
        return dataclasses.replace(
            config, audio=audio, mqtt=mqtt, model=model_settings, worker=worker
        )


def default_state_dir() -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY; by hand, follow the XDG layout.
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "assistant"


def parse_broker(text: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT` or `[IPv6]:PORT` -> (host, port)."""
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<host>[^:]+)(?::(?P<port>\d+))?", text
    )
    if not match:
        raise ConfigError(f"--broker {text!r}: expected HOST:PORT")
    host = match["v6"] or match["host"]
    port = int(match["p6"] or match["port"] or 1883)
    if not 0 < port < 65536:
        raise ConfigError(f"--broker {text!r}: port must be 1..65535")
    return host, port


_SECTIONS: dict[str, type] = {
    "audio": AudioSettings,
    "vad": VadSettings,
    "model": ModelSettings,
    "mqtt": MqttSettings,
    "tts": TtsSettings,
    "worker": WorkerSettings,
    "confirm": ConfirmSettings,
}


def load(path: Path | str | None) -> Config:
    """Read `path` (None: the first of DEFAULT_CONFIG_PATHS that exists, else defaults)."""
    if path is None:
        for candidate in DEFAULT_CONFIG_PATHS:
            if candidate.exists():
                return load(candidate)
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return _build(data, _Locator(path, text))


class _Locator:
    """Finds the line of `section.key` in the TOML text so that errors can point at it."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self._lines = text.splitlines()

    def line(self, section: str | None, key: str | None = None) -> int | None:
        current: str | None = None
        for number, raw in enumerate(self._lines, start=1):
            line = raw.strip()
            header = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?", line)
            if header:
                current = header.group(1)
                if key is None and current == section:
                    return number
                continue
            if key is not None and current == section:
                if re.match(rf'("{re.escape(key)}"|{re.escape(key)})\s*=', line):
                    return number
        return None

    def error(self, section: str | None, key: str | None, problem: str) -> ConfigError:
        dotted = ".".join(part for part in (section, key) if part)
        number = self.line(section, key)
        where = f"{self.path}:{number}" if number else str(self.path)
        return ConfigError(f"{where}: {dotted}: {problem}")


def _build(data: dict[str, Any], where: _Locator) -> Config:
    values: dict[str, Any] = {"path": where.path}
    for key, value in data.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise where.error(None, key, "must be a table ([{key}])")
            values[key] = _section(key, _SECTIONS[key], value, where)
        elif key == "replies":
            values[key] = _replies(value, where)
        elif key == "state_dir":
            values[key] = Path(_expect(str, value, where, None, key)).expanduser()
        elif key == "log_level":
            level = _expect(str, value, where, None, key).lower()
            if level not in LOG_LEVELS:
                raise where.error(None, key, f"must be one of {', '.join(LOG_LEVELS)}")
            values[key] = level
        else:
            known = ", ".join([*_SECTIONS, "replies", "state_dir", "log_level"])
            raise where.error(None, key, f"unknown key (known: {known})")
    return Config(**values)


def _replies(value: Any, where: _Locator) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise where.error(None, "replies", "must be a table of intent = template")
    replies = dict(DEFAULT_REPLIES)
    for intent, template in value.items():
        template = _expect(str, template, where, "replies", intent)
        try:
            _check_template(template)
        except ValueError as exc:
            raise where.error("replies", intent, f"bad template: {exc}") from None
        replies[intent] = template
    return types.MappingProxyType(replies)


def _check_template(template: str) -> None:
    import string

    # Plain {slot} only: attribute access or conversions would let a template poke at objects.
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"placeholder {{{name}}} must be a plain slot name")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} may not have a format spec or conversion")


def _section(name: str, cls: type, table: dict[str, Any], where: _Locator) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    kwargs = {}
    for key, value in table.items():
        if key not in known:
            raise where.error(name, key, f"unknown key (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(hints[key], value, where, name, key)
    try:
        settings = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        # The settings' own checks name the key in words ("mqtt port must be ..."): point at it.
        message = str(exc)
        key = next((k for k in table if re.search(rf"\b{re.escape(k)}\b", message)), None)
        raise where.error(name, key, message) from None
    validate = getattr(settings, "validate", None)
    if callable(validate):
        for key, problem in validate():
            raise where.error(name, key, problem)
    return settings


def _coerce(hint: Any, value: Any, where: _Locator, section: str, key: str) -> Any:
    """Check a TOML value against a dataclass field's type (bool is not an int here)."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    for option in options:
        if option is type(None):
            continue  # TOML has no null: "absent" is how a user says None
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if option is Path and isinstance(value, str):
            return Path(value).expanduser()
    wanted = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise where.error(section, key, f"expected {wanted}, got {_type_name(type(value))} {value!r}")


def _expect(kind: type, value: Any, where: _Locator, section: str | None, key: str) -> Any:
    if not isinstance(value, kind):
        raise where.error(section, key, f"expected {_type_name(kind)}, got {value!r}")
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(kind: Any) -> str:
    return {
        bool: "true/false",
        int: "integer",
        float: "number",
        str: "string",
        Path: "path string",
        dict: "table",
        list: "array",
    }.get(kind, getattr(kind, "__name__", str(kind)))
