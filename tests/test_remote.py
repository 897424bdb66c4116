"""Sites that send utterances to recogniser workers (``run --remote``, ``assistant worker``).

The message codec is checked on its own; the rest runs real processes against a real
Mosquitto with the shipped model and real test-split recordings: a site publishes, workers
share the utterances through an MQTT v5 shared subscription, a subscriber checks that every
utterance came back as the transcript a local recogniser gives, once, on the site's topic.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mqtt_helpers import Subscriber, publisher, wait_until
from shared_data import needs_shared_data
from test_daemon import commands, segment, session_wav

from assistant.config import ConfigError, load
from assistant.remote import (
    PendingUtterances,
    UtteranceMessage,
    UtterancePayloadError,
    WorkerSettings,
    shared_utterance_topic,
)

ROOT = Path(__file__).resolve().parents[1]
SITE = "porch"
TRANSCRIPT = f"assistant/{SITE}/transcript"

# -- the message ------------------------------------------------------------------------


def test_utterance_message_round_trip() -> None:
    pcm = (np.sin(np.arange(16000) / 5) * 8000).astype(np.int16)
    message = UtteranceMessage.new(SITE, 100.0, 101.0, pcm)
    back = UtteranceMessage.from_payload(message.to_payload())
    assert (back.id, back.site, back.started, back.ended) == (message.id, SITE, 100.0, 101.0)
    assert back.pcm.dtype == np.int16 and np.array_equal(back.pcm, pcm)


def test_a_site_that_asks_says_so_in_its_utterances() -> None:
    pcm = np.zeros(1600, np.int16)
    plain = json.loads(UtteranceMessage.new(SITE, 1.0, 2.0, pcm).to_payload())
    assert "ask_from" not in plain  # a site that never asks sends what it always sent
    assert "reply" not in plain
    asking = UtteranceMessage.new(SITE, 1.0, 2.0, pcm, ask_from=0.2, reply=True)
    back = UtteranceMessage.from_payload(asking.to_payload())
    assert back.ask_from == 0.2 and back.reply is True


def _payload(**fields: object) -> bytes:
    wav = io.BytesIO()
    sf.write(wav, np.zeros(1600, dtype=np.int16), 16000, format="WAV")
    data: dict[str, object] = {
        "id": "u1",
        "site": SITE,
        "started": 1.0,
        "ended": 2.0,
        "wav": base64.b64encode(wav.getvalue()).decode(),
    }
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def test_other_rates_and_stereo_are_converted_like_files() -> None:
    wav = io.BytesIO()
    stereo = np.stack([np.linspace(-0.5, 0.5, 48000)] * 2, axis=1)
    sf.write(wav, stereo, 48000, format="WAV", subtype="PCM_16")
    message = UtteranceMessage.from_payload(_payload(wav=base64.b64encode(wav.getvalue()).decode()))
    assert message.pcm.dtype == np.int16 and abs(len(message.pcm) - 16000) <= 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_payload(id=None), "'id' must be a non-empty string"),
        (_payload(site="a/b"), "must be non-empty and contain no '/'"),
        (_payload(started="yesterday"), "'started' must be a number"),
        (_payload(ended=True), "'ended' must be a number"),
        (_payload(wav="***"), "'wav' is not base64"),
        (_payload(wav=base64.b64encode(b"RIFF and then nonsense").decode()), "not a readable"),
        (b"x" * (5 * 1024 * 1024), "over the"),
        (_payload(ask_from=1.5), "'ask_from' must be a number from 0 to 1"),
        (_payload(ask_from="often"), "'ask_from' must be a number from 0 to 1"),
        (_payload(reply="yes"), "'reply' must be true or false"),
    ],
)
def test_malformed_utterances_say_what_is_wrong(payload: bytes, reason: str) -> None:
    with pytest.raises(UtterancePayloadError, match=reason):
        UtteranceMessage.from_payload(payload)


def test_an_empty_wav_is_refused() -> None:
    wav = io.BytesIO()
    sf.write(wav, np.zeros(0, dtype=np.int16), 16000, format="WAV")
    with pytest.raises(UtterancePayloadError, match="holds no audio"):
        UtteranceMessage.from_payload(_payload(wav=base64.b64encode(wav.getvalue()).decode()))


def test_answers_handed_back_reach_the_site_and_malformed_ones_are_dropped(
    tmp_path: Path, mosquitto_broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's answers for the asking site (one under the bar with its guess, one a reply)
    go to that site's ``answer`` topic; its bus hands them over, and logs and ignores what it
    cannot read."""
    from mqtt_helpers import mqtt_settings

    from assistant.hermes import AnswerForSite, Transcript
    from assistant.mqtt import Bus
    from assistant.result import Meaning

    host, port = mosquitto_broker.host, mosquitto_broker.port
    got: list[AnswerForSite] = []
    site = Bus(mqtt_settings(host, port, SITE), tmp_path / "site.sqlite", None, None, got.append)
    worker = Bus(mqtt_settings(host, port, "worker-u"), tmp_path / "worker.sqlite", None)
    transcript = Transcript("u9", SITE, "turn on the hall light", None, {}, 0.4, 1, 2, 80, "m")
    unsure = AnswerForSite(transcript, Meaning("HassTurnOn", {"area": "hall"}))
    yes = Transcript("u10", SITE, "yes", "Yes", {}, 0.99, 3, 4, 60, "m")
    bad_guess = json.dumps({**transcript.to_dict(), "guess": "HassTurnOn"}).encode()
    try:
        site.start()
        worker.start()
        assert wait_until(lambda: site.connected and worker.connected, 10)
        time.sleep(0.3)  # the site's subscription
        client = publisher(host, port)
        for bad in (b"not json", b'{"id": "u8"}', bad_guess):
            client.publish(f"assistant/{SITE}/answer", bad, qos=1).wait_for_publish(5)
        client.disconnect()
        with caplog.at_level("WARNING", logger="assistant.mqtt"):
            worker.publish_for_site(unsure)
            worker.publish_for_site(AnswerForSite(yes))
            assert wait_until(lambda: len(got) == 2, 10)
    finally:
        worker.stop(5)
        site.stop(0)
    assert got == [unsure, AnswerForSite(yes)]
    assert got[0].result().intent is None and got[0].result().guess == unsure.guess
    assert got[1].result().intent == "Yes" and "guess" not in got[1].to_dict()
    assert caplog.text.count(f"ignored a malformed message on assistant/{SITE}/answer") == 3
    assert "'guess' must be an object" in caplog.text


def test_a_worker_without_a_yes_intent_publishes_what_it_hears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A site asks, but a worker whose grammar has no Yes intent (here the bundle decoding
    FSDD's digits) publishes its transcripts itself, and says why once per site."""
    from assistant.config import Config
    from assistant.recognizer import Recognizer
    from assistant.result import Meaning, Result
    from assistant.worker import Worker

    unsure = Result("turn on the light", None, {}, 0.4, guess=Meaning("HassTurnOn", {}))
    asking = UtteranceMessage.new(SITE, 1.0, 2.0, np.zeros(160, np.int16), ask_from=0.2)
    not_asking = dataclasses.replace(asking, ask_from=None)
    worker = Worker(Config(state_dir=tmp_path))
    worker.recognizer = Recognizer.load(ROOT / "models" / "home")
    assert worker._site_asks_about(asking, unsure)
    assert not worker._site_asks_about(not_asking, unsure)
    assert not worker._site_asks_about(asking, dataclasses.replace(unsure, confidence=0.1))
    home = ROOT / "models" / "home"
    worker.recognizer = Recognizer.load(home, grammar=ROOT / "models" / "eval" / "fsdd.yaml")
    with caplog.at_level("WARNING", logger="assistant.worker"):
        assert not worker._site_asks_about(asking, unsure)
        assert not worker._site_asks_about(asking, unsure)
    assert caplog.text.count("has no Yes intent to answer with") == 1


def test_worker_settings_and_config(tmp_path: Path) -> None:
    assert shared_utterance_topic("recognisers") == "$share/recognisers/assistant/+/utterance"
    with pytest.raises(ValueError, match="worker group"):
        WorkerSettings(group="a/b")
    path = tmp_path / "assistant.toml"
    path.write_text('[model]\nremote = true\n[worker]\ngroup = "attic"\nclient_id = "w7"\n')
    config = load(path)
    assert config.model.remote and config.worker == WorkerSettings("attic", "w7")
    path.write_text("[worker]\nsession_expiry_s = -1\n")
    with pytest.raises(ConfigError, match=r"assistant.toml:2: worker.session_expiry_s"):
        load(path)


def test_pending_utterances_are_sent_again_until_answered() -> None:
    now = [0.0]
    pending = PendingUtterances(resend_after_s=10, tries=3, limit=2, clock=lambda: now[0])
    pending.add("a", b"A")
    now[0] = 9.9
    assert pending.due(connected=True) == []
    now[0] = 10.0
    assert pending.due(connected=True) == [("a", b"A")]  # second send
    now[0] = 25.0
    assert pending.due(connected=False) == []  # the clock stops while the broker is away
    now[0] = 44.9
    assert pending.due(connected=True) == []  # 20 s (doubled) from 25
    now[0] = 45.0
    assert pending.due(connected=True) == [("a", b"A")]  # third and last send
    now[0] = 200.0
    assert pending.due(connected=True) == [] and pending.given_up == 1 and len(pending) == 0
    pending.add("b", b"B")
    pending.add("c", b"C")
    pending.add("d", b"D")  # over the limit: "b" is no longer kept
    assert pending.answered("c") and not pending.answered("c") and not pending.answered("b")
    assert len(pending) == 1


# -- sites and workers over a real broker --------------------------------------------------


def _environ(state: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    environ.update(STATE_DIRECTORY=str(state), PYTHONUNBUFFERED="1")
    return environ


class WorkerProcess:
    """``assistant worker`` with its own client id and state folder; its log in a file."""

    def __init__(
        self, tmp_path: Path, broker: str, client_id: str, mqtt: str = "", model: str = ""
    ) -> None:
        self.client_id = client_id
        self.state = tmp_path / client_id
        self.state.mkdir(exist_ok=True)
        self.config = self.state / "worker.toml"
        self.config.write_text(
            f'[worker]\nclient_id = "{client_id}"\n[mqtt]\n{mqtt}\n[model]\n{model}\n'
        )
        self.broker = broker
        self.log = self.state / "worker.log"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.log.write_text("")
        args = ["worker", "--config", str(self.config), "--broker", self.broker]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "--log-level", "info", *args],
            cwd=ROOT,
            env=_environ(self.state),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            text=True,
        )
        assert wait_until(lambda: "subscribed to" in self.text() or not self.alive, 60)
        assert self.alive, self.text()[-3000:]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text()

    def handled(self) -> int:
        return self.text().count(f"INFO assistant.worker: {SITE} ")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(30)


def cli(state: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``assistant ARGS`` to its end, its state in ``state``: output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", "--log-level", "info", *args],
        cwd=ROOT,
        env=_environ(state),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_site(wav: Path, broker: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["run", "--source", str(wav), "--broker", broker, "--site", SITE, "--remote", *extra]
    return cli(tmp_path / "site", *args)


@pytest.fixture(scope="module")
def recognizer():
    from assistant.daemon import load_recognizer

    return load_recognizer()


@needs_shared_data
def test_two_workers_share_a_sites_utterances(tmp_path: Path, mosquitto_broker, recognizer):
    wav = session_wav(tmp_path, [pcm for _, pcm in commands(6)])
    # What a site recognising for itself publishes for the same file, in order.
    expected = [recognizer.recognize(u.pcm).text for u in segment(wav)]
    assert len(expected) == 6
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    workers = [WorkerProcess(tmp_path, broker, f"worker-{n}") for n in (1, 2)]
    try:
        for worker in workers:
            worker.start()
        # A missing model on the site proves that the site loads none.
        site = run_site(wav, broker, tmp_path, "--model", str(tmp_path / "no-model-here"))
        assert site.returncode == 0, site.stderr[-3000:]
        got = sub.settle(TRANSCRIPT, len(expected), 60, quiet=1.0)
        assert [w.handled() for w in workers] == [3, 3]  # the broker deals them in turn
    finally:
        codes = [w.stop() for w in workers if w.alive]
        sub.close()
    assert codes == [0, 0]
    got.sort(key=lambda m: m["started"])
    assert [m["text"] for m in got] == expected
    sent = [line.split("utterance ")[1].split()[0] for line in site.stderr.splitlines()
            if "sent to the recogniser workers" in line]  # fmt: skip
    assert sorted(m["id"] for m in got) == sorted(sent)
    assert all(m["site"] == SITE and m["model"] == recognizer.name for m in got)


@needs_shared_data
def test_utterances_wait_for_a_killed_worker(tmp_path: Path, mosquitto_broker, recognizer):
    """A worker killed outright (no goodbye) keeps its session on the broker: what the site
    sends meanwhile is handed to it when it returns, nothing lost. (The site waits for the
    answers before it exits, and sends each utterance again meanwhile.)"""
    wav = session_wav(tmp_path, [pcm for _, pcm in commands(4)])
    expected = [recognizer.recognize(u.pcm).text for u in segment(wav)]
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    worker = WorkerProcess(tmp_path, broker, "worker-k")
    try:
        worker.start()
        worker.stop(signal.SIGKILL)
        site = run_site(wav, broker, tmp_path)
        assert site.returncode == 0, site.stderr[-3000:]
        time.sleep(0.5)
        assert sub.count(TRANSCRIPT) == 0
        worker.start()
        got = sub.settle(TRANSCRIPT, len(expected), 60, quiet=1.0)
    finally:
        if worker.alive:
            worker.stop()
        sub.close()
    # The site, stopping with no answer, sent each utterance again: at least once, by id.
    got = sorted({m["id"]: m for m in got}.values(), key=lambda m: m["started"])
    assert [m["text"] for m in got] == expected


@needs_shared_data
def test_a_malformed_utterance_is_dropped_and_the_next_one_heard(
    tmp_path: Path, mosquitto_broker, recognizer
) -> None:
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    # The worker's own status goes to a topic named after it, never to a site's.
    status = "assistant/worker-m/status"
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT, status])
    worker = WorkerProcess(tmp_path, broker, "worker-m")
    _, pcm = commands(1)[0]
    good = UtteranceMessage.new(SITE, time.time() - 1, time.time(), pcm)
    client = publisher(mosquitto_broker.host, mosquitto_broker.port)
    try:
        worker.start()
        for payload in (b"not json", _payload(site="elsewhere"), good.to_payload()):
            client.publish(f"assistant/{SITE}/utterance", payload, qos=1).wait_for_publish(5)
        got = sub.settle(TRANSCRIPT, 1, 60, quiet=1.0)
        assert worker.alive
    finally:
        client.disconnect()
        client.loop_stop()
        if worker.alive:
            worker.stop()
        sub.close()
    assert [m["id"] for m in got] == [good.id]
    assert got[0]["text"] == recognizer.recognize(pcm).text
    log = worker.text()
    assert "dropped a malformed utterance on assistant/porch/utterance: not JSON" in log
    assert "its site 'elsewhere' is not the topic's 'porch'" in log
    assert "Traceback" not in log
    assert [m["state"] for m in sub.payloads(status)] == ["online", "offline"]


def test_a_worker_without_a_broker_says_so(tmp_path: Path) -> None:
    done = cli(tmp_path, "worker")
    assert done.returncode != 0
    assert "a worker needs the broker its sites publish to" in done.stderr
    assert "Traceback" not in done.stderr


@needs_shared_data
def test_a_remote_site_speaks_the_replies_to_its_commands(
    tmp_path: Path, mosquitto_broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's four commands from a microphone (the hardware is faked: it plays the demo
    recording), recognised by a worker process; the site hears its transcripts back and
    speaks the one configured reply ("what time is it"), once."""
    import threading

    from assistant import daemon as daemon_mod
    from assistant.audio import read_audio
    from assistant.config import Config

    spoken: list[str] = []

    class Loudspeaker:  # the speaker hardware: records what it was asked to say
        def __init__(self, *_args: object) -> None:
            pass

        def say_async(self, text: str, callback: object = None) -> None:
            spoken.append(text)

        def say(self, text: str, **_kwargs: object) -> bool:
            spoken.append(text)
            return True

        def close(self) -> None:
            pass

    class DemoMic:
        """A microphone hearing the demo recording, then silence until stopped."""

        name = "mic:demo"
        live = True

        def __init__(self) -> None:
            self.stopped = threading.Event()

        def frames(self):
            pcm = read_audio(ROOT / "models" / "home" / "demo.wav")
            for at in range(0, len(pcm) - 479, 480):
                yield pcm[at : at + 480]
            while not self.stopped.wait(0.03):
                yield np.zeros(480, np.int16)

        def stop(self) -> None:
            self.stopped.set()

    monkeypatch.setattr(daemon_mod, "Speaker", Loudspeaker)
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    worker = WorkerProcess(tmp_path, broker, "worker-r")
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    config = Config(state_dir=tmp_path / "site").with_overrides(
        broker=broker, site=SITE, remote=True
    )
    daemon = daemon_mod.Daemon(config, source=DemoMic())
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    try:
        worker.start()
        thread.start()
        got = sub.settle(TRANSCRIPT, 4, 60, quiet=1.0)
        assert wait_until(lambda: len(spoken) >= 1, 10)
        time.sleep(0.5)
    finally:
        daemon.request_stop()
        thread.join(30)
        if worker.alive:
            worker.stop()
        sub.close()
    assert exit_codes == [0]
    got.sort(key=lambda m: m["started"])
    assert len(got) == 4 and got[1]["intent"] == "HassGetCurrentTime", got
    assert len(spoken) == 1 and spoken[0].startswith("It is "), spoken


def test_a_remote_site_without_a_broker_says_so(tmp_path: Path) -> None:
    done = cli(tmp_path, "run", "--remote", "--source", "-", stdin="")
    assert done.returncode != 0
    assert "--remote needs the broker the recogniser workers use" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_knows_a_remote_site_loads_no_model(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[model]\nremote = true\ndir = "/nowhere"\n[audio]\nsource = "-"\n')
    done = cli(tmp_path, "check", "--config", str(config))
    assert "model:   OK   none here: recogniser workers hear assistant/" in done.stdout
    assert "remote:  FAIL remote = true needs the workers' broker" in done.stdout
    assert done.returncode != 0


@needs_shared_data
def test_utterances_survive_a_broker_restart(tmp_path: Path, mosquitto_factory, recognizer):
    """The broker goes away while a running site hears four commands: they wait in the
    site's outbox. When it is back, the site may deliver them before the worker has
    reconnected, and Mosquitto 2.0.11 restores the worker's session without its shared
    subscription, so the broker drops them; the site sends again what got no transcript,
    and every command comes back."""
    broker = mosquitto_factory(persistence=True)
    address = f"{broker.host}:{broker.port}"
    wav = session_wav(tmp_path, [pcm for _, pcm in commands(4)])
    expected = [recognizer.recognize(u.pcm).text for u in segment(wav)]
    pcm, _ = sf.read(wav, dtype="int16")
    # The worker comes back 4 s after the broker, the site at once: the site delivers first.
    slow = "reconnect_min_delay = 4.0\nreconnect_max_delay = 4.0"
    worker = WorkerProcess(tmp_path, address, "worker-o", mqtt=slow)
    site_log = tmp_path / "site.log"
    site_config = tmp_path / "site.toml"
    site_config.write_text("[mqtt]\nreconnect_min_delay = 0.1\nreconnect_max_delay = 0.3\n")
    args = ["run", "--config", str(site_config), "--source", "-", "--broker", address]
    args += ["--site", SITE, "--remote"]
    site = subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", "--log-level", "info", *args],
        cwd=ROOT,
        env=_environ(tmp_path / "site"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=site_log.open("w"),
    )
    assert site.stdin is not None
    sub = None
    try:
        worker.start()
        assert wait_until(lambda: "mqtt: connected" in site_log.read_text(), 60)
        broker.stop()
        site.stdin.write(pcm.tobytes())
        site.stdin.flush()
        assert wait_until(lambda: site_log.read_text().count("sent to the recogniser") == 4, 60)
        broker.start()
        sub = Subscriber(broker.host, broker.port, [TRANSCRIPT])
        assert sub.wait_for(lambda: len(set(sub.ids)) >= len(expected), 90), site_log.read_text()
        site.stdin.close()
        assert site.wait(60) == 0
    finally:
        if site.poll() is None:
            site.kill()
        if worker.alive:
            worker.stop()
    got = list({m["id"]: m for m in sub.payloads(TRANSCRIPT)}.values())
    sub.close()
    got.sort(key=lambda m: m["started"])
    assert [m["text"] for m in got] == expected
    assert "lost the broker" in worker.text()
    print(site_log.read_text().count("no transcript yet, sent again"), "utterance(s) sent again")


def test_check_a_worker_needs_a_broker_not_a_microphone(tmp_path: Path, mosquitto_broker) -> None:
    def check(*extra: str) -> subprocess.CompletedProcess:
        return cli(tmp_path, "check", "--worker", *extra)

    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    good = check("--broker", broker)
    assert good.returncode == 0, good.stdout
    assert "worker:  OK   shares $share/recognisers/assistant/+/utterance" in good.stdout
    assert "audio:" not in good.stdout
    bad = check()
    assert bad.returncode != 0
    assert "worker:  FAIL a worker needs the sites' broker" in bad.stdout


@needs_shared_data
def test_a_reload_turns_a_running_site_remote(tmp_path: Path, mosquitto_broker) -> None:
    """SIGHUP with `[model] remote = true`: the site stops recognising and sends the rest
    of its commands to a worker; every command still comes back as a transcript."""
    from test_daemon import NotifySocket, run_daemon

    clips = commands(6)
    wav = session_wav(tmp_path, [pcm for _, pcm in clips])
    broker = f"{mosquitto_broker.host}:{mosquitto_broker.port}"
    worker = WorkerProcess(tmp_path, broker, "worker-h")
    config = tmp_path / "site.toml"
    local = f"[mqtt]\nhost = '{mosquitto_broker.host}'\nport = {mosquitto_broker.port}\n"
    local += f"site = '{SITE}'\n[audio]\nsource = '{wav}'\nrealtime = true\n"
    config.write_text(local)
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        worker.start()
        proc = run_daemon(["--config", str(config)], tmp_path, notify)
        assert sub.wait_for(lambda: len(sub.ids) >= 2, 60)
        config.write_text(local + "[model]\nremote = true\n")
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=120)
        got = sub.settle(TRANSCRIPT, len(clips), 30, quiet=1.0)
    finally:
        notify.close()
        if worker.alive:
            worker.stop()
        sub.close()
    assert proc.returncode == 0, err[-3000:]
    assert "model reloaded: recogniser workers" in err
    assert len({m["id"] for m in got}) == len(clips)
    assert 1 <= worker.handled() <= len(clips) - 2
