"""Hostile ``say`` payloads: hypothesis fuzzing of the parsers and the Bus, no shell, floods.

Nothing here is mocked. The parsers are called directly; the Bus is a real one (its dispatch
thread delivers to ``on_say``) fed through :meth:`Bus.handle_message`, the exact function
paho's ``on_message`` calls, or through a real Mosquitto for the flood. The shell check runs
real espeak-ng synthesis under a Python audit hook that sees every process spawn.
"""

from __future__ import annotations

import ast
import json
import queue
import shutil
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_helpers import publisher, wait_until

from assistant.hermes import (
    MAX_PAYLOAD_BYTES,
    MAX_SAY_CHARS,
    SayPayloadError,
    SayRequest,
    clean_say_text,
    parse_hermes_say,
    parse_say,
)
from assistant.mqtt import Bus, MqttSettings, free_port

ROOT = Path(__file__).resolve().parents[1]
SITE = "kitchen"
SAY = f"assistant/{SITE}/say"
HERMES_SAY = "hermes/tts/say"
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# What a spoken text may never contain: controls, format characters, line/paragraph separators.
FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}


# ------------------------------------------------------------------ strategies

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Text that stresses the cleaner: controls, format characters, separators, huge runs.
FRAGMENTS = ["\x00", "\x07", "\x1b[31m", "\u200b", "\u202e", "\u2028", "\ufeff", "\t\n\r", "  "]
nasty_text = st.lists(st.characters(codec="utf-8") | st.sampled_from(FRAGMENTS), max_size=200).map(
    "".join
) | st.builds(
    lambda ch, n: ch * n, st.sampled_from(["a", "é", "\x00", " ", "😀"]), st.integers(900, 70_000)
)
site_ids = st.none() | st.just(SITE) | st.text(max_size=12) | json_scalars


@st.composite
def say_objects(draw: st.DrawFn) -> dict[str, Any]:
    """JSON objects shaped like a say request, every field possibly of the wrong type."""
    obj: dict[str, Any] = {"text": draw(nasty_text | json_values)}
    for key, values in (
        ("id", st.text(max_size=20) | json_values),
        ("siteId", site_ids),
        ("volume", st.floats() | json_values),
        ("lang", st.text(max_size=5) | json_values),
        ("sessionId", st.text(max_size=20) | json_values),
    ):
        if draw(st.booleans()):
            obj[key] = draw(values)
    return obj


def encoded(obj: Any) -> bytes:
    # allow_nan: Python's json emits NaN/Infinity, and so might a careless publisher.
    return json.dumps(obj, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


payloads = (
    st.binary(max_size=400)
    | nasty_text.map(lambda t: t.encode("utf-8"))
    | json_values.map(encoded)
    | say_objects().map(encoded)
)


# --------------------------------------------------------------------- checks


def assert_clean(request: SayRequest) -> None:
    """The invariants every request handed to TTS must satisfy."""
    assert request.site == SITE
    assert 0 < len(request.text) <= MAX_SAY_CHARS
    assert request.text == request.text.strip()
    assert "  " not in request.text
    bad = {unicodedata.category(ch) for ch in request.text} & FORBIDDEN_CATEGORIES
    assert not bad, f"{bad} characters reached TTS: {request.text[:80]!r}"
    assert request.volume is None or 0.0 <= request.volume <= 1.0
    assert isinstance(request.id, str)  # the sender's own (even empty) or generated


def parse_or_none(parse: Callable[..., SayRequest | None], payload: bytes) -> SayRequest | None:
    """Run a parser; only SayPayloadError (a refusal with a reason) may come out."""
    try:
        return parse(payload, site=SITE)
    except SayPayloadError as exc:
        assert str(exc)  # the log line must say why
        return None


# ---------------------------------------------------------------- the parsers


@FUZZ
@given(text=nasty_text)
def test_clean_say_text_caps_and_strips(text: str) -> None:
    cleaned, truncated = clean_say_text(text)
    assert len(cleaned) <= MAX_SAY_CHARS
    assert not {unicodedata.category(ch) for ch in cleaned} & FORBIDDEN_CATEGORIES
    assert cleaned == cleaned.strip() and "  " not in cleaned
    if truncated:
        assert len(text) > MAX_SAY_CHARS
    assert clean_say_text(cleaned) == (cleaned, False)  # idempotent: nothing left to clean


@FUZZ
@given(payload=payloads)
def test_parse_say_refuses_or_returns_a_clean_request(payload: bytes) -> None:
    request = parse_or_none(parse_say, payload)
    if request is not None:
        assert_clean(request)
        assert request.source == "assistant"


@FUZZ
@given(payload=payloads)
def test_parse_hermes_say_refuses_or_returns_a_clean_request(payload: bytes) -> None:
    request = parse_or_none(parse_hermes_say, payload)
    if request is not None:
        assert_clean(request)
        assert request.source == "hermes"


@FUZZ
@given(obj=say_objects(), other=st.text(min_size=1, max_size=12).filter(lambda s: s != SITE))
def test_hermes_say_for_another_site_is_ignored(obj: dict[str, Any], other: str) -> None:
    obj["siteId"] = other
    assert parse_or_none(parse_hermes_say, encoded(obj)) is None


@FUZZ
@given(text=st.text(min_size=1, max_size=300), site=st.just(SITE) | st.none())
def test_valid_requests_keep_their_words(text: str, site: str | None) -> None:
    cleaned, _ = clean_say_text(text)
    body: dict[str, Any] = {"text": text, "id": "r1"}
    if site is not None:
        body["siteId"] = site
    for parse in (parse_say, parse_hermes_say):
        request = parse_or_none(parse, encoded(body))
        assert (request.text if request else "") == cleaned


def test_oversized_payloads_are_refused_before_parsing() -> None:
    huge = json.dumps({"text": "a" * MAX_PAYLOAD_BYTES}).encode()
    with pytest.raises(SayPayloadError, match="exceeds"):
        parse_say(huge, site=SITE)
    # Refused too, though its reason reads "not JSON" (parse_hermes_say re-labels it).
    with pytest.raises(SayPayloadError):
        parse_hermes_say(huge, site=SITE)


@pytest.mark.parametrize("payload", [b"[" * 5000, b'{"text":' * 5000, b'{"text": ' + b"[" * 5000])
def test_deeply_nested_json_is_a_payload_error(payload: bytes) -> None:
    for parse in (parse_say, parse_hermes_say):
        parse_or_none(parse, payload)


def test_lone_surrogates_do_not_reach_tts() -> None:
    request = parse_say(b'{"text": "hi \\ud800 there \\udfff"}', site=SITE)
    assert all(unicodedata.category(ch) != "Cs" for ch in request.text)


# ----------------------------------------------------- the Bus's on_message path


@pytest.fixture
def offline_bus(tmp_path: Path) -> Iterator[tuple[Bus, queue.Queue[SayRequest]]]:
    """A started Bus whose broker never answers: only its say-dispatch path is exercised."""
    got: queue.Queue[SayRequest] = queue.Queue()
    settings_ = MqttSettings(
        host="127.0.0.1", port=free_port(), site=SITE, reconnect_min_delay=5, reconnect_max_delay=5
    )
    bus = Bus(settings_, tmp_path / "outbox.sqlite", on_say=got.put)
    bus.start()
    yield bus, got
    bus.stop(0)


@FUZZ
@given(
    topic=st.sampled_from([SAY, HERMES_SAY, "assistant/other/say", "hermes/tts/sayFinished"]),
    payload=payloads,
)
def test_handle_message_never_raises_and_delivers_only_clean_requests(
    offline_bus: tuple[Bus, queue.Queue[SayRequest]], topic: str, payload: bytes
) -> None:
    bus, got = offline_bus
    parse = {SAY: parse_say, HERMES_SAY: parse_hermes_say}.get(topic)
    expected = parse_or_none(parse, payload) if parse else None
    bus.handle_message(topic, payload)  # must not raise, whatever arrives
    if expected is None:
        return
    request = got.get(timeout=5)
    assert_clean(request)
    assert request.text == expected.text


def test_handle_message_survives_payloads_that_break_the_parser(
    offline_bus: tuple[Bus, queue.Queue[SayRequest]],
) -> None:
    bus, got = offline_bus
    for payload in (b"[" * 5000, b'{"text":' * 5000, b"\xff" * 70_000):
        bus.handle_message(SAY, payload)
        bus.handle_message(HERMES_SAY, payload)
    bus.handle_message(SAY, b"still alive")
    assert got.get(timeout=5).text == "still alive"
    assert got.empty()


# ------------------------------------------------------------------- no shell


SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork")
_spawns: list[tuple[str, str]] = []
_watching = threading.Event()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Audit hooks cannot be removed: this one records only while a test watches.
    if _watching.is_set() and event.startswith(SPAWN_EVENTS):
        _spawns.append((event, repr(args)[:200]))


sys.addaudithook(_audit)


def _calls_in(path: Path) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


def test_no_shell_anywhere_in_the_runtime() -> None:
    """The daemon's own code never spawns through a shell."""
    offenders = []
    for path in sorted((ROOT / "assistant").glob("*.py")):
        for name, call in _calls_in(path):
            shell = any(
                k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                for k in call.keywords
            )
            if shell or name in (
                "os.system",
                "os.popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            ):
                offenders.append(f"{path.name}:{call.lineno} {name}")
    assert offenders == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
def test_hostile_say_text_reaches_espeak_without_any_process(tmp_path: Path) -> None:
    """Real synthesis of shell metacharacters: no process is spawned, no file is created."""
    from assistant.tts import Speaker, TtsSettings

    canary = tmp_path / "pwned"
    hostile = [
        f"$(touch {canary})",
        f"`touch {canary}`; touch {canary} && echo",
        f"'; touch {canary}; '\" | touch {canary} > /dev/null",
    ]
    speaker = Speaker(TtsSettings())
    _spawns.clear()
    _watching.set()
    try:
        for i, text in enumerate(hostile):
            request = parse_say(json.dumps({"text": text}).encode(), site=SITE)
            assert request.text == text  # metacharacters are words to speak, not stripped
            # Whether espeak makes audio of punctuation soup varies; what matters here is
            # that nothing is executed.
            speaker.say(request.text, wav_path=tmp_path / f"{i}.wav", timeout=30)
    finally:
        _watching.clear()
        speaker.close()
    assert _spawns == []
    assert not canary.exists()


# ---------------------------------------------------------------------- flood


def _settle(count: Callable[[], int], timeout: float, quiet: float = 1.0) -> int:
    """Wait until ``count()`` stops changing for ``quiet`` seconds (or the timeout)."""
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.05)
        if (now := count()) != last:
            last, since = now, time.monotonic()
    return last


def test_say_flood_does_not_stall_transcripts(mosquitto_broker: Any, tmp_path: Path) -> None:
    """2000 say requests in a burst: the bus stays up, transcripts keep flowing, order holds.

    Mosquitto caps the burst first (its per-client queue, ``max_queued_messages``), and the
    bus keeps only the newest SAY_QUEUE_LIMIT requests waiting, dropping (and counting) the
    oldest. What must hold: the network thread keeps delivering transcripts, and what is
    spoken is spoken once, in arrival order.
    """
    from assistant.result import Result

    spoken: list[str] = []

    def on_say(request: SayRequest) -> None:
        time.sleep(0.001)  # a (very) fast TTS
        spoken.append(request.id)

    settings_ = MqttSettings(
        host=mosquitto_broker.host,
        port=mosquitto_broker.port,
        site=SITE,
        hermes=False,
        reconnect_min_delay=0.05,
        reconnect_max_delay=0.3,
    )
    bus = Bus(settings_, tmp_path / "outbox.sqlite", on_say=on_say)
    bus.start()
    try:
        assert wait_until(lambda: bus.connected, 5)
        pub = publisher(mosquitto_broker.host, mosquitto_broker.port, unlimited=True)
        for i in range(2000):
            pub.publish(SAY, json.dumps({"text": f"flood {i}", "id": f"{i:04d}"}), qos=1)
        now = time.time()
        bus.publish_transcript(
            Result(text="on", intent="HassTurnOn", confidence=0.9),
            utterance_id="during-flood",
            started=now - 1,
            ended=now,
            latency_ms=1.0,
            model="m",
        )
        assert bus.flush(10), "a transcript waited behind the say flood"
        handled = _settle(lambda: len(spoken), timeout=30)
        assert bus.connected
        pub.disconnect()
        pub.loop_stop()
    finally:
        bus.stop(2)
    assert 1 <= handled <= 2000
    assert handled + bus.says_dropped <= 2000
    assert spoken == sorted(set(spoken))  # arrival order, each once (QoS 1, one session)


def test_say_burst_behind_a_busy_speaker_is_capped(mosquitto_broker: Any, tmp_path: Path) -> None:
    busy = threading.Event()
    release = threading.Event()
    handled: list[str] = []

    def on_say(request: SayRequest) -> None:
        busy.set()
        release.wait(30)  # the first request "speaks" while the burst arrives
        handled.append(request.id)

    settings_ = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port, site=SITE)
    bus = Bus(settings_, tmp_path / "outbox.sqlite", on_say=on_say)
    bus.start()
    try:
        assert wait_until(lambda: bus.connected, 5)
        pub = publisher(mosquitto_broker.host, mosquitto_broker.port, unlimited=True)
        pub.publish(SAY, b"first", qos=1).wait_for_publish(5)
        assert busy.wait(5)
        infos = [pub.publish(SAY, f"burst {i}".encode(), qos=1) for i in range(2000)]
        for info in infos:
            info.wait_for_publish(10)
        time.sleep(1.0)  # let the bus read the burst from its socket
        release.set()
        _settle(lambda: len(handled), timeout=20)
        pub.disconnect()
        pub.loop_stop()
    finally:
        release.set()
        bus.stop(1)
    # Some bound (drop, coalesce or rate-limit) must keep 2000 stale sentences from being spoken.
    assert len(handled) < 200, f"{len(handled)} say requests spoken after the burst"
