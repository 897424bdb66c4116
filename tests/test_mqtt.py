"""The MQTT bus against a real Mosquitto: delivery, outages, restarts, say, Hermes, TLS, auth."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from mqtt_helpers import (
    Subscriber,
    first_seen,
    mqtt_settings,
    publish_transcripts,
    publisher,
    wait_until,
)
from paho.mqtt.enums import CallbackAPIVersion

from assistant import mqtt as mqtt_module
from assistant.hermes import (
    MAX_SAY_CHARS,
    SayPayloadError,
    SayRequest,
    Transcript,
    hermes_messages,
    parse_hermes_say,
    parse_say,
)
from assistant.mqtt import Bus, BusConfigError, MqttSettings, probe_broker

REPO = Path(__file__).resolve().parents[1]
SITE = "test"


# ------------------------------------------------------------------- helpers


def settings_for(broker: Any, **overrides: Any) -> MqttSettings:
    return mqtt_settings(broker.host, broker.port, SITE, **overrides)


def assert_in_order(received: list[str], expected: list[str]) -> None:
    """Every id arrived; first arrivals are in publishing order; repeats are resends."""
    assert first_seen(received) == expected
    assert set(received) == set(expected)


TRANSCRIPT = f"assistant/{SITE}/transcript"
STATUS = f"assistant/{SITE}/status"


# -------------------------------------------------------------- unit: parsing


def test_settings_validate_and_hide_password(tmp_path: Path) -> None:
    s = MqttSettings(host="h", username="u", password="s3cret-pw", site="kitchen")
    assert "s3cret-pw" not in repr(s)
    with pytest.raises(ValueError, match="username"):
        MqttSettings(host="h", password="x")
    with pytest.raises(ValueError, match="site"):
        MqttSettings(host="h", site="a/b")
    with pytest.raises(ValueError, match="tls"):
        MqttSettings(host="h", ca_file=Path("ca.pem"))
    missing = MqttSettings(host="h", username="u", password_file=tmp_path / "nope")
    with pytest.raises(BusConfigError, match="password_file"):
        missing.read_password()
    (tmp_path / "pw").write_text("hunter2\n")
    assert MqttSettings(host="h", username="u", password_file=tmp_path / "pw").read_password() == (
        "hunter2"
    )


def test_parse_say_accepts_json_plain_text_and_cleans() -> None:
    req = parse_say(b'{"text": "hello", "id": "a1"}', site=SITE)
    assert (req.text, req.id, req.source, req.site) == ("hello", "a1", "assistant", SITE)
    assert parse_say(b"turn it up", site=SITE).text == "turn it up"
    assert parse_say(b'"quoted"', site=SITE).text == "quoted"
    assert parse_say(b"42", site=SITE).text == "42"
    assert parse_say(b"plain", site=SITE).id  # an id is generated for the reply
    assert parse_say("bell\x07 and\x00 nul\u200b\nnext".encode(), site=SITE).text == (
        "bell and nul next"
    )
    long = parse_say(json.dumps({"text": "a" * 5000}).encode(), site=SITE)
    assert len(long.text) == MAX_SAY_CHARS and long.truncated


@pytest.mark.parametrize(
    "payload",
    [
        b'{"text": "unterminated',
        b"[1, 2]",
        b'{"text": 5}',
        b'{"id": "x"}',
        b'{"text": "hi", "id": [1]}',
        b'{"text": "hi", "volume": 7}',
        b'{"text": "\\u0000\\u0007"}',
        b"\xff\xfe\xfd",
        b"",
        b"x" * 100_000,
    ],
)
def test_parse_say_refuses_malformed(payload: bytes) -> None:
    with pytest.raises(SayPayloadError):
        parse_say(payload, site=SITE)


def test_parse_hermes_say_site_filter() -> None:
    assert parse_hermes_say(b'{"text": "hi", "siteId": "other"}', site=SITE) is None
    req = parse_hermes_say(b'{"text": "hi", "siteId": "test", "id": "h", "lang": "en"}', site=SITE)
    assert req is not None and (req.source, req.id, req.lang) == ("hermes", "h", "en")
    assert parse_hermes_say(b'{"text": "everyone"}', site=SITE) is not None
    with pytest.raises(SayPayloadError):
        parse_hermes_say(b"plain text", site=SITE)


def test_hermes_payloads_parse_with_rhasspy_hermes() -> None:
    asr = pytest.importorskip("rhasspyhermes.asr")
    nlu = pytest.importorskip("rhasspyhermes.nlu")
    tts = pytest.importorskip("rhasspyhermes.tts")
    accepted = Transcript(
        "u1", SITE, "set kitchen light to 50", "HassLightSet",
        {"name": "kitchen light", "brightness": 50}, 0.87, 1.0, 2.0, 120.0, "home",
    )  # fmt: skip
    (t1, captured), (t2, intent) = hermes_messages(accepted)
    assert (t1, t2) == ("hermes/asr/textCaptured", "hermes/intent/HassLightSet")
    parsed = asr.AsrTextCaptured.from_dict(captured)
    assert (parsed.text, parsed.site_id, parsed.session_id) == (accepted.text, SITE, "u1")
    assert parsed.seconds == pytest.approx(0.12)
    nlu_intent = nlu.NluIntent.from_dict(intent)
    assert nlu_intent.intent.intent_name == "HassLightSet"
    assert nlu_intent.intent.confidence_score == pytest.approx(0.87)
    assert nlu_intent.site_id == SITE and nlu_intent.session_id == "u1"
    slots = {s.slot_name: s for s in nlu_intent.slots}
    assert slots["brightness"].value == {"kind": "Number", "value": 50}
    assert slots["name"].value["value"] == "kitchen light"
    assert slots["name"].range is not None and slots["name"].start == 4
    assert nlu_intent.to_rhasspy_dict()["slots"]["brightness"] == 50

    rejected = Transcript("u2", SITE, "blah", None, {}, 0.1, 1.0, 2.0, 80.0, "home")
    (_, _), (t3, not_recognized) = hermes_messages(rejected)
    assert t3 == "hermes/nlu/intentNotRecognized"
    nr = nlu.NluIntentNotRecognized.from_dict(not_recognized)
    assert (nr.input, nr.site_id, nr.session_id) == ("blah", SITE, "u2")

    silent = Transcript("u3", SITE, "", None, {}, 0.0, 1.0, 2.0, 80.0, "home")
    assert [t for t, _ in hermes_messages(silent)] == ["hermes/nlu/intentNotRecognized"]

    say = tts.TtsSay(text="hello there", site_id=SITE, id="r1", lang="en").to_dict()
    req = parse_hermes_say(json.dumps(say).encode(), site=SITE)
    assert req is not None and (req.text, req.id, req.source) == ("hello there", "r1", "hermes")


# ------------------------------------------------------- broker: delivery


def test_transcripts_arrive_in_order_once_each(
    mosquitto_broker: Any, bus_factory: Callable[..., Bus]
) -> None:
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT, "hermes/#"])
    bus = bus_factory(settings_for(mosquitto_broker))
    assert wait_until(lambda: bus.connected)

    # Latency of one transcript, publish_transcript() call to subscriber's on_message.
    latencies = []
    for i in range(20):
        before = len(sub.messages)
        t0 = time.monotonic()
        publish_transcripts(bus, 1, start=1000 + i)
        assert sub.wait_for(lambda b=before: len(sub.messages) > b)
        latencies.append((sub.messages[before][3] - t0) * 1000)
    latencies.sort()
    print(f"\ndelivery latency ms: median {latencies[10]:.1f} max {latencies[-1]:.1f}")

    ids = publish_transcripts(bus, 100)
    assert bus.flush(10)
    assert sub.wait_for(lambda: sub.count(TRANSCRIPT) == 120)
    received = [p["id"] for p in sub.payloads(TRANSCRIPT)][20:]
    assert received == ids  # in order, exactly once, with a healthy connection
    first = sub.payloads(TRANSCRIPT)[20]
    assert set(first) == {
        "id", "site", "text", "intent", "slots", "confidence",
        "started", "ended", "latency_ms", "model",
    }  # fmt: skip
    assert first["site"] == SITE and first["slots"] == {"name": "light 0"}
    assert sub.wait_for(lambda: sub.count("hermes/intent/HassTurnOn") == 120)
    assert sub.count("hermes/asr/textCaptured") == 120
    assert bus.delivered == 360  # each transcript is 3 messages with Hermes on
    assert bus.queued == 0 and bus.dropped == 0
    sub.close()


def test_broker_outage_mid_stream_loses_nothing(
    mosquitto_factory: Callable[..., Any], bus_factory: Callable[..., Bus]
) -> None:
    broker = mosquitto_factory(persistence=True)
    # A persistent session: the broker keeps our QoS 1 messages for the subscriber.
    sub = Subscriber(broker.host, broker.port, [TRANSCRIPT], client_id="sub-outage", clean=False)
    bus = bus_factory(settings_for(broker, hermes=False))
    assert wait_until(lambda: bus.connected)
    ids: list[str] = []

    def speak() -> None:  # a steady stream of utterances, one every 5 ms
        for i in range(80):
            ids.extend(publish_transcripts(bus, 1, start=i))
            time.sleep(0.005)

    talker = threading.Thread(target=speak)
    talker.start()
    assert sub.wait_for(lambda: sub.count(TRANSCRIPT) >= 10)
    broker.stop()  # mid-stream
    assert wait_until(lambda: not bus.connected)
    assert wait_until(lambda: bus.queued > 5)  # the stream goes on into the outbox
    broker.start()
    talker.join()
    assert len(ids) == 80
    assert bus.flush(10), f"still queued: {bus.queued}, last error {bus.last_error}"
    assert sub.wait_for(lambda: len({p["id"] for p in sub.payloads(TRANSCRIPT)}) == 80, 10)
    assert_in_order([p["id"] for p in sub.payloads(TRANSCRIPT)], ids)
    sub.close()


def test_flapping_broker_loses_nothing(
    mosquitto_factory: Callable[..., Any], bus_factory: Callable[..., Bus]
) -> None:
    """The broker goes down and up every second or so while utterances keep coming: every
    transcript arrives, first arrivals in order."""
    broker = mosquitto_factory(persistence=True)
    sub = Subscriber(broker.host, broker.port, [TRANSCRIPT], client_id="sub-flap", clean=False)
    bus = bus_factory(settings_for(broker, hermes=False))
    assert wait_until(lambda: bus.connected)
    ids: list[str] = []
    stop_talking = threading.Event()

    def speak() -> None:  # one utterance every 20 ms for as long as the broker flaps
        i = 0
        while not stop_talking.is_set():
            ids.extend(publish_transcripts(bus, 1, start=i))
            i += 1
            time.sleep(0.02)

    talker = threading.Thread(target=speak)
    talker.start()
    try:
        for _ in range(4):  # four outages of ~1 s, with ~1 s up in between
            time.sleep(1.0)
            broker.stop()
            time.sleep(1.0)
            broker.start()
    finally:
        stop_talking.set()
        talker.join()
    assert len(ids) > 100
    assert bus.flush(15), f"still queued: {bus.queued}, last error {bus.last_error}"
    assert sub.wait_for(lambda: len({p["id"] for p in sub.payloads(TRANSCRIPT)}) == len(ids), 15)
    assert_in_order([p["id"] for p in sub.payloads(TRANSCRIPT)], ids)
    sub.close()


PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from assistant.mqtt import Bus, MqttSettings
    from assistant.result import Result

    host, port, outbox, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], \\
        int(sys.argv[4]), sys.argv[5]
    settings = MqttSettings(host=host, port=port, site="test", reconnect_min_delay=0.05,
                            reconnect_max_delay=0.2, hermes=False)
    bus = Bus(settings, Path(outbox), lambda r: None)
    bus.start()
    if mode == "connect":
        while not bus.connected:
            time.sleep(0.01)
    for i in range(count):
        bus.publish_transcript(Result("t %d" % i, "I", {}, 0.5), utterance_id="k%03d" % i,
                               started=0.0, ended=1.0, latency_ms=1.0, model="m")
    print("ready", flush=True)
    time.sleep(60)
    """
)


def spawn_publisher(tmp_path: Path, broker: Any, outbox: Path, count: int, mode: str) -> Any:
    script = tmp_path / "publisher.py"
    script.write_text(PUBLISHER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), broker.host, str(broker.port), str(outbox), str(count), mode],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the script prints or dies
    assert line.strip() == b"ready", line
    return proc


def test_killed_daemon_delivers_its_queue_after_restart(
    tmp_path: Path, mosquitto_factory: Callable[..., Any], bus_factory: Callable[..., Bus]
) -> None:
    broker = mosquitto_factory(start=False)  # broker down while the daemon runs
    outbox = tmp_path / "killed.sqlite"
    proc = spawn_publisher(tmp_path, broker, outbox, 25, "offline")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)

    broker.start()
    sub = Subscriber(broker.host, broker.port, [TRANSCRIPT])
    # Counted before the bus starts: once started it delivers to the live broker at once.
    bus = bus_factory(settings_for(broker, hermes=False), outbox=outbox, start=False)
    assert bus.queued == 25  # survived SIGKILL
    bus.start()
    assert bus.flush(10)
    assert sub.wait_for(lambda: sub.count(TRANSCRIPT) >= 25)
    assert [p["id"] for p in sub.payloads(TRANSCRIPT)] == [f"k{i:03d}" for i in range(25)]
    sub.close()


def test_retained_status_and_last_will(
    tmp_path: Path, mosquitto_broker: Any, bus_factory: Callable[..., Bus]
) -> None:
    proc = spawn_publisher(tmp_path, mosquitto_broker, tmp_path / "will.sqlite", 0, "connect")
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [STATUS])
    assert sub.wait_for(lambda: sub.count(STATUS) >= 1)
    topic, payload, retained, _ = sub.messages[0]
    online = json.loads(payload)
    assert retained and online["state"] == "online" and online["site"] == SITE
    assert {"queued", "dropped", "version"} <= set(online)

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    assert sub.wait_for(lambda: sub.count(STATUS) >= 2, 5), "no last will"
    assert sub.payloads(STATUS)[-1]["state"] == "offline"
    sub.close()
    late = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [STATUS])
    assert late.wait_for(lambda: late.count(STATUS) >= 1)
    assert late.messages[0][2] and json.loads(late.messages[0][1])["state"] == "offline"
    late.close()

    # A clean stop says "offline" itself (the broker sends no will then).
    bus = bus_factory(settings_for(mosquitto_broker))
    watch = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [STATUS])
    assert watch.wait_for(lambda: any(p["state"] == "online" for p in watch.payloads(STATUS)))
    assert bus.stop(2)
    assert watch.wait_for(lambda: watch.payloads(STATUS)[-1]["state"] == "offline")
    watch.close()


def test_dropped_messages_reported_on_status(
    mosquitto_factory: Callable[..., Any], bus_factory: Callable[..., Bus]
) -> None:
    broker = mosquitto_factory()
    bus = bus_factory(settings_for(broker, hermes=False, outbox_max_messages=5), start=False)
    ids = publish_transcripts(bus, 8)  # queued before the bus ever connects
    assert bus.dropped == 3
    sub = Subscriber(broker.host, broker.port, [TRANSCRIPT, STATUS])
    bus.start()
    assert bus.flush(10)
    assert sub.wait_for(lambda: sub.count(TRANSCRIPT) == 5)
    assert [p["id"] for p in sub.payloads(TRANSCRIPT)] == ids[3:]  # oldest dropped
    assert sub.wait_for(lambda: any(p.get("dropped") == 3 for p in sub.payloads(STATUS)))
    sub.close()


def test_drain_1000_queued_after_reconnect(
    mosquitto_factory: Callable[..., Any], bus_factory: Callable[..., Bus]
) -> None:
    broker = mosquitto_factory(persistence=True)
    sub = Subscriber(broker.host, broker.port, [TRANSCRIPT], client_id="sub-drain", clean=False)
    bus = bus_factory(settings_for(broker))  # Hermes on: 3 messages per transcript
    assert wait_until(lambda: bus.connected, 5)
    broker.stop()
    assert wait_until(lambda: not bus.connected, 5)
    t0 = time.perf_counter()
    ids = publish_transcripts(bus, 1000)
    enqueue_ms = (time.perf_counter() - t0) * 1000 / 1000
    broker.start()
    assert wait_until(lambda: bus.connected, 5)
    t1 = time.perf_counter()
    assert bus.flush(30)
    drain_s = time.perf_counter() - t1
    assert sub.wait_for(lambda: sub.count(TRANSCRIPT) >= 1000, 10)
    assert [p["id"] for p in sub.payloads(TRANSCRIPT)] == ids
    print(f"\nenqueue {enqueue_ms:.2f} ms/transcript; drained 1000 (3000 msgs) in {drain_s:.2f} s")
    sub.close()


# ------------------------------------------------------------------ say side


def test_say_requests_reach_the_callback(
    mosquitto_broker: Any, bus_factory: Callable[..., Bus], caplog: pytest.LogCaptureFixture
) -> None:
    tts = pytest.importorskip("rhasspyhermes.tts")
    got: queue.Queue[SayRequest] = queue.Queue()
    bus = bus_factory(settings_for(mosquitto_broker), on_say=got.put)
    assert wait_until(lambda: bus.connected)
    sub = Subscriber(
        mosquitto_broker.host,
        mosquitto_broker.port,
        [f"assistant/{SITE}/said", "hermes/tts/sayFinished"],
    )
    pub = publisher(mosquitto_broker.host, mosquitto_broker.port)
    say = f"assistant/{SITE}/say"
    sent = [
        (say, b'{"text": "hello", "id": "a1"}'),
        (say, b"{broken json"),
        (say, b'{"text": 5}'),
        (say, b"\xff\xfe"),
        (say, b"x" * 200_000),
        ("hermes/tts/say", json.dumps(tts.TtsSay("elsewhere", site_id="other").to_dict())),
        ("hermes/tts/say", b"not json"),
        (say, b"plain\x07 text\x00"),
        ("hermes/tts/say", json.dumps(tts.TtsSay("hermes hi", site_id=SITE, id="h1").to_dict())),
        (say, json.dumps({"text": "y" * 3000, "id": "long"}).encode()),
        (say, b"done"),
    ]
    with caplog.at_level(logging.WARNING, logger="assistant.mqtt"):
        for topic, payload in sent:
            pub.publish(topic, payload, qos=1).wait_for_publish(2)
        requests = [got.get(timeout=5) for _ in range(5)]
    assert [r.text[:10] for r in requests] == ["hello", "plain text", "hermes hi", "y" * 10, "done"]
    assert [r.source for r in requests] == ["assistant", "assistant", "hermes", "assistant"] + [
        "assistant"
    ]
    assert len(requests[3].text) == MAX_SAY_CHARS
    assert got.empty()  # the other site's and the malformed ones were ignored
    assert caplog.text.count("ignored a malformed message") == 5
    assert "was cut" in caplog.text
    assert bus.connected  # nothing broke the network thread

    bus.publish_said(requests[0])
    bus.publish_said(requests[2])
    assert sub.wait_for(lambda: len(sub.messages) == 2)
    assert sub.payloads(f"assistant/{SITE}/said") == [{"id": "a1", "site": SITE}]
    finished = tts.TtsSayFinished.from_dict(sub.payloads("hermes/tts/sayFinished")[0])
    assert (finished.id, finished.site_id) == ("h1", SITE)
    pub.disconnect()
    pub.loop_stop()
    sub.close()


def test_slow_or_failing_say_handler_does_not_block_transcripts(
    mosquitto_broker: Any, bus_factory: Callable[..., Bus]
) -> None:
    release = threading.Event()

    def on_say(request: SayRequest) -> None:
        release.wait(5)
        raise RuntimeError("TTS engine exploded")

    bus = bus_factory(settings_for(mosquitto_broker, hermes=False), on_say=on_say)
    assert wait_until(lambda: bus.connected)
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto_broker.host, mosquitto_broker.port)
    pub.publish(f"assistant/{SITE}/say", b"speak slowly", qos=0)
    pub.disconnect()
    publish_transcripts(bus, 3)
    assert bus.flush(5) and sub.wait_for(lambda: sub.count(TRANSCRIPT) == 3)
    release.set()
    sub.close()


# ------------------------------------------------------------ TLS and auth


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    d = tmp_path_factory.mktemp("tls")
    for name in ("ca", "wrong-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}", cwd=d,
        )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d,
    )  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d,
    )  # fmt: skip
    return {p.stem: p for p in d.glob("*.pem")} | {"server_key": d / "server.key"}


def test_tls_verifies_the_broker(
    tls_files: dict[str, Path],
    mosquitto_factory: Callable[..., Any],
    bus_factory: Callable[..., Bus],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = mosquitto_factory(
        listener=(
            f"cafile {tls_files['ca']}\ncertfile {tls_files['server']}\n"
            f"keyfile {tls_files['server_key']}"
        )
    )
    sub = Subscriber(broker.host, broker.port, [TRANSCRIPT], tls_ca=tls_files["ca"])
    good = settings_for(broker, tls=True, ca_file=tls_files["ca"], hermes=False)
    bus = bus_factory(good)
    publish_transcripts(bus, 3)
    assert bus.flush(5), bus.last_error
    assert sub.wait_for(lambda: sub.count(TRANSCRIPT) == 3)
    assert probe_broker(good)[0]
    sub.close()

    bad = settings_for(broker, tls=True, ca_file=tls_files["wrong-ca"], hermes=False)
    with caplog.at_level(logging.WARNING, logger="assistant.mqtt"):
        wrong = bus_factory(bad, outbox=tmp_path / "wrong.sqlite")
        assert wait_until(lambda: wrong.last_error is not None)
    assert not wrong.connected
    assert "TLS certificate of 127.0.0.1" in wrong.last_error and "not trusted" in wrong.last_error
    assert "TLS certificate" in caplog.text
    assert caplog.text.count("not trusted") == 1  # said once, not at every retry
    ok, verdict = probe_broker(bad)
    assert not ok and "not trusted" in verdict

    plain = settings_for(broker, hermes=False)  # TLS port, plain client
    ok, verdict = probe_broker(plain, timeout=1.0)
    assert not ok


def test_username_password_file(
    tmp_path: Path, mosquitto_factory: Callable[..., Any], bus_factory: Callable[..., Bus],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "pi", "correct horse"],
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip
    broker = mosquitto_factory(extra_config=f"allow_anonymous false\npassword_file {passwd}")
    (tmp_path / "pw").write_text("correct horse\n")
    (tmp_path / "bad").write_text("wrong battery\n")
    with caplog.at_level(logging.DEBUG, logger="assistant"):
        bus = bus_factory(
            settings_for(broker, username="pi", password_file=tmp_path / "pw", hermes=False)
        )
        assert wait_until(lambda: bus.connected), bus.last_error
        denied = bus_factory(
            settings_for(broker, username="pi", password_file=tmp_path / "bad"),
            outbox=tmp_path / "denied.sqlite",
        )
        assert wait_until(lambda: denied.last_error is not None)
    assert "refused" in denied.last_error and "username and password" in denied.last_error
    assert not denied.connected
    assert "correct horse" not in caplog.text and "wrong battery" not in caplog.text


# ------------------------------------------------------------- no broker set


def test_no_broker_starts_a_private_mosquitto(
    mosquitto_broker: Any,  # only to skip when mosquitto is missing
    bus_factory: Callable[..., Bus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="assistant.mqtt"):
        bus = bus_factory(MqttSettings(host=None, site=SITE))
    assert bus.mode == "local-broker" and bus.endpoint is not None
    host, port = bus.endpoint
    assert f"no broker configured: started a private Mosquitto on 127.0.0.1:{port}" in caplog.text
    sub = Subscriber(host, port, [TRANSCRIPT])
    publish_transcripts(bus, 2)
    assert bus.flush(5) and sub.wait_for(lambda: sub.count(TRANSCRIPT) == 2)
    sub.close()
    bus.stop(1)
    assert not wait_until(lambda: _port_open(host, port), 0.3)


def _port_open(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def test_no_broker_and_no_mosquitto_prints_to_stdout(
    monkeypatch: pytest.MonkeyPatch,
    bus_factory: Callable[..., Bus],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(mqtt_module, "find_mosquitto", lambda: None)
    with caplog.at_level(logging.WARNING, logger="assistant.mqtt"):
        bus = bus_factory(MqttSettings(host="", site=SITE))
    assert bus.mode == "stdout" and "printed to stdout" in caplog.text
    ids = publish_transcripts(bus, 3)
    assert bus.flush(5)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == ids
