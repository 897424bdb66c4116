"""Config: TOML -> frozen settings; every error names the file, line and key; flags win."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from assistant.config import Config, ConfigError, load, parse_broker

EXAMPLE = Path(__file__).resolve().parents[1] / "systemd" / "assistant.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "assistant.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = Config()
    assert config.mqtt.host is None  # no broker: LocalBroker mode
    assert config.audio.source == "mic"
    assert "HassGetCurrentTime" in config.replies
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.audio.source = "x"  # type: ignore[misc]


def test_example_loads_and_every_commented_key_is_valid(tmp_path: Path) -> None:
    assert load(EXAMPLE) == dataclasses.replace(Config(), path=EXAMPLE)
    # Uncomment every `# key = value` line: the result must still load (keys exist, types fit).
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        match = re.match(r"#\s*([A-Za-z_]+\s*=.*)", line)
        lines.append(match.group(1) if match else line)
    text = "\n".join(lines)
    # Exclusive pairs in the example: keep one of each.
    text = text.replace('password = "secret"', "").replace("tls = false", "tls = true")
    text = text.replace("tls_insecure = false", "tls_insecure = true")
    config = load(write(tmp_path, text))
    assert config.mqtt.site == "kitchen" and config.mqtt.tls
    assert config.replies["HassTurnOn"] == "Turning on {name}"
    assert config.vad.hangover_ms == 600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[vad]\naggressiveness = "high"\n', r":2: vad.aggressiveness: expected integer"),
        ("[vad]\n\naggressiveness = 9\n", r":3: vad.aggressiveness: must be 0, 1, 2 or 3"),
        ("[mqtt]\nhost = 'h'\nport = 70000\n", r":3: mqtt.port: .*1..65535"),
        ("[audio]\nmicrophone = 'USB'\n", r":2: audio.microphone: unknown key"),
        ("[tts]\nvolume = 3.0\n", r":2: tts.volume: must be between"),
        ("colour = 'blue'\n", r":1?:? ?colour: unknown key"),
        ("[replies]\nHassTurnOn = 'Turning on {name!r}'\n", r":2: replies.HassTurnOn: bad"),
        ("[vad\n", r"invalid TOML.*line 1"),
        ("log_level = 'loud'\n", r"log_level: must be one of"),
        ("[tts]\nenabled = 1\n", r"tts.enabled: expected true/false"),
        ("[model]\nmin_confidence = 1.5\n", r":2: model.min_confidence: must be between 0 and 1"),
        ("[model]\nmin_confidence = 'high'\n", r":2: model.min_confidence: expected number"),
        ("[model]\nrecheck = 'no'\n", r":2: model.recheck: expected true/false"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert re.search(expected, message), message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "nope.toml")


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[audio]\nsource = 'mic'\n[mqtt]\nhost = 'broker.lan'\nsite = 'hall'\n"
        "[model]\ndir = '/opt/m'\nmin_confidence = 0.8\nrecheck = false\n",
    )
    config = load(path).with_overrides(
        source="x.wav", broker="127.0.0.1:1999", site="attic", model="/m2", realtime=True
    )
    assert config.audio.source == "x.wav" and config.audio.realtime
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.site) == ("127.0.0.1", 1999, "attic")
    assert config.model.dir == Path("/m2")
    assert config.model.min_confidence == 0.8  # --model replaces the folder, not the bar
    assert not config.model.recheck
    untouched = load(path).with_overrides()
    assert untouched.mqtt.host == "broker.lan" and untouched.mqtt.site == "hall"


def test_parse_broker() -> None:
    assert parse_broker("pi.local") == ("pi.local", 1883)
    assert parse_broker("[::1]:8883") == ("::1", 8883)
    with pytest.raises(ConfigError):
        parse_broker("host:0")


def test_state_dir_follows_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/assistant")
    assert Config().state_dir == Path("/var/lib/assistant")
