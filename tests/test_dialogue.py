"""Asking "did you mean ...?" about unsure answers (assistant/dialogue.py, the daemon's
question): the rules, and the daemon end to end against a real Mosquitto, with the shipped
model, the demo recording and replies spoken by espeak-ng. Only the hardware is faked: the
microphone plays the audio, and the loudspeaker records what it was asked to say."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from mqtt_helpers import Subscriber

from assistant import daemon as daemon_mod
from assistant.audio import read_audio
from assistant.config import Config, ConfigError, ModelSettings, load
from assistant.dialogue import (
    ConfirmSettings,
    Reply,
    as_confirmed,
    question_for,
    reply_to_question,
    worth_asking,
)
from assistant.result import Meaning, Result
from tools.streamed import room_of

ROOT = Path(__file__).resolve().parents[1]
SITE = "hall"
TRANSCRIPT = f"assistant/{SITE}/transcript"
HANDED_BACK = f"assistant/{SITE}/answer"
ASK_FROM = ConfirmSettings(from_confidence=0.2)
ASK_WITHIN_2_S = ConfirmSettings(from_confidence=0.2, wait_s=2.0)
FRAME = 480  # 30 ms at 16 kHz, the VAD's frame


def unsure(confidence: float, intent: str = "HassTurnOn") -> Result:
    slots = {"area": "kitchen", "domain": "light"}
    return Result("turn on the kitchen light", None, {}, confidence, guess=Meaning(intent, slots))


def test_only_answers_under_the_bar_and_over_the_floor_are_asked_about() -> None:
    assert worth_asking(unsure(0.3), ASK_FROM)
    assert worth_asking(unsure(0.2), ASK_FROM)
    assert not worth_asking(unsure(0.19), ASK_FROM)
    assert not worth_asking(unsure(0.3), ConfirmSettings())  # off unless configured
    accepted = Result("turn on the kitchen light", "HassTurnOn", {}, 0.9)
    assert not worth_asking(accepted, ASK_FROM)
    assert not worth_asking(Result("", None, {}, 0.0), ASK_FROM)  # nothing heard
    # "Did you mean: yes?" would be answered by the same word it asks about.
    assert not worth_asking(unsure(0.4, "Yes"), ASK_FROM)
    assert not worth_asking(unsure(0.4, "No"), ASK_FROM)


def test_the_question_and_the_confirmed_answer() -> None:
    result = unsure(0.3)
    assert question_for(result, ASK_FROM) == "Did you mean: turn on the kitchen light?"
    confirmed = as_confirmed(result)
    assert (confirmed.intent, confirmed.slots) == ("HassTurnOn", result.guess.slots)
    assert confirmed.confidence == 0.3 and confirmed.guess is None


def test_replies_are_read_from_the_grammars_yes_and_no() -> None:
    assert reply_to_question(Result("yes", "Yes", {}, 0.99)) is Reply.YES
    assert reply_to_question(Result("no", "No", {}, 0.99)) is Reply.NO
    assert reply_to_question(Result("never mind", "HassNevermind", {}, 0.9)) is Reply.NO
    assert reply_to_question(Result("stop", "HassTurnOff", {}, 0.9)) is Reply.OTHER
    # A "yes" the recogniser is unsure of does not confirm anything.
    assert reply_to_question(Result("yes", None, {}, 0.3, guess=Meaning("Yes"))) is Reply.OTHER


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("from_confidence = 1.5", "confirm.from_confidence: must be between 0 and 1"),
        ('question = "Really {intent}?"', "confirm.question: may hold no placeholder but {text}"),
        ('question = "Really {text?"', "confirm.question: bad template"),
        ("wait_s = 0", "confirm.wait_s: must be between 0.5 and 60 seconds"),
        ("ask = true", "confirm.ask: unknown key"),
    ],
)
def test_a_broken_confirm_section_is_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "assistant.toml"
    path.write_text(f"[confirm]\n{body}\n")
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("?", r"\?")):
        load(path)


def test_a_confirm_section_is_read(tmp_path: Path) -> None:
    path = tmp_path / "assistant.toml"
    path.write_text('[confirm]\nfrom_confidence = 0.25\nquestion = "Say yes for {text}"\n')
    settings = load(path).confirm
    assert settings == ConfirmSettings(0.25, "Say yes for {text}", 5.0) and settings.enabled
    assert not Config().confirm.enabled  # off by default


# ------------------------------------------------------------------ the daemon, end to end


# A device that would rather ask than act on a wrong answer raises the bar; here above any
# confidence the demo command below gets (0.81 at most, README "How sure before acting"),
# so that it is always asked about, whichever way this machine's int8 rounding goes.
BAR = 0.95


@pytest.fixture(scope="module")
def unsure_command() -> np.ndarray:
    """The demo's third command, "set the bedroom lamp to fifty percent"."""
    pcm = read_audio(ROOT / "models" / "home" / "demo.wav")
    return pcm[int(7.0 * 16000) : int(11.6 * 16000)]


@pytest.fixture(scope="module")
def spoken_word() -> dict[str, np.ndarray]:
    from tools.voices import available_voices

    voice = next(v for v in available_voices() if v.name.startswith("espeak:"))
    return {w: (voice.speak(w) * 20000).astype(np.int16) for w in ("yes", "no")}


class Loudspeaker:
    """The speaker hardware: records what it is asked to say."""

    def __init__(self, *_args: object) -> None:
        self.said: list[str] = []
        self.asked = threading.Event()

    def say(self, text: str, **_kwargs: object) -> bool:
        self.said.append(text)
        self.asked.set()
        return True

    def say_async(self, text: str, callback: object = None) -> None:
        self.say(text)

    def close(self) -> None:
        pass


class Microphone:
    """Plays a command, waits for the loudspeaker's question, then plays the reply (if any);
    then the room until stopped. The room is the command's own (tools.streamed.room_of): a
    real microphone never hears digital silence, and the demo's tap noise starting out of it
    would be an onset that the VAD may cut as an utterance of its own."""

    name = "mic:fake"
    live = True

    def __init__(self, command: np.ndarray, reply: np.ndarray | None, speaker: Loudspeaker):
        self.command, self.reply, self.speaker = command, reply, speaker
        self.stopped = threading.Event()
        room = room_of(command.astype(np.float32) / 32768, 16000)
        self.room = np.clip(np.rint(room * 32768), -32768, 32767).astype(np.int16)
        self.room_at = 0

    def _silence(self, seconds: float):
        for _ in range(int(seconds / 0.03)):
            if self.stopped.wait(0.03):
                return
            self.room_at = (self.room_at + FRAME) % (self.room.size - self.room.size % FRAME)
            yield self.room[self.room_at : self.room_at + FRAME]

    def _play(self, pcm: np.ndarray):
        pcm = np.concatenate([pcm, np.zeros(-pcm.size % FRAME, np.int16)])
        for at in range(0, pcm.size, FRAME):
            yield pcm[at : at + FRAME]

    def frames(self):
        yield from self._silence(0.3)
        yield from self._play(self.command)
        while not self.speaker.asked.is_set() and not self.stopped.is_set():
            yield from self._silence(0.03)
        if self.reply is not None:
            yield from self._silence(0.3)
            yield from self._play(self.reply)
        while not self.stopped.is_set():
            yield from self._silence(0.03)

    def stop(self) -> None:
        self.stopped.set()


def run_dialogue(
    tmp_path: Path,
    broker,
    command: np.ndarray,
    reply: np.ndarray | None,
    expected: int,
    confirm: ConfirmSettings = ASK_WITHIN_2_S,
    remote: bool = False,
    stop_when_asked: bool = False,
) -> tuple[list[dict], list[str], list[str], Loudspeaker]:
    """The daemon hears ``command`` (then ``reply``) from its microphone; with ``remote`` it
    is a ``--remote`` site, and an ``assistant worker`` process with the bar recognises.
    ``stop_when_asked``: the service is stopped (SIGTERM's path) once the question is out."""
    from test_remote import WorkerProcess

    speaker = Loudspeaker()
    sub = Subscriber(broker.host, broker.port, [TRANSCRIPT, "hermes/intent/#", HANDED_BACK])
    model = ModelSettings(min_confidence=BAR)
    config = Config(state_dir=tmp_path / "state", model=model, confirm=confirm)
    address = f"{broker.host}:{broker.port}"
    config = config.with_overrides(broker=address, site=SITE, remote=remote)
    worker = WorkerProcess(tmp_path, address, "worker-q", model=f"min_confidence = {BAR}")
    if remote:
        worker.start()
    daemon = daemon_mod.Daemon(config, source=Microphone(command, reply, speaker), speaker=speaker)
    exit_codes: list[int] = []
    thread = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
    thread.start()
    try:
        if stop_when_asked:
            assert speaker.asked.wait(60)
            daemon.request_stop()
        got = sub.settle(TRANSCRIPT, expected, 60, quiet=1.0)
    finally:
        daemon.request_stop()
        thread.join(60)
        if worker.alive:
            worker.stop()
        sub.close()
    assert exit_codes == [0]
    # The answer asked about, and the reply's, go from the worker to the site alone, and only
    # when the site asks; the site publishes them.
    handed_back = sum(topic == HANDED_BACK for topic, *_ in sub.messages)
    asks = remote and confirm.enabled
    assert handed_back == (asks + (asks and reply is not None and not stop_when_asked))
    intents = [topic for topic, *_ in sub.messages if topic.startswith("hermes/intent/")]
    arrival = [json.loads(p)["id"] for t, p, *_ in sub.messages if t == TRANSCRIPT]
    return got, intents, arrival, speaker


@pytest.mark.parametrize("remote", [False, True], ids=["here", "remote"])
def test_yes_acts_on_the_answer_asked_about(
    tmp_path: Path,
    mosquitto_broker,
    unsure_command,
    spoken_word,
    remote: bool,
) -> None:
    """Remote: a worker recognises both utterances and hands both back (the command unsure,
    then the reply), and the site asks and publishes them in the order a local site does."""
    got, intents, _, speaker = run_dialogue(
        tmp_path,
        mosquitto_broker,
        unsure_command,
        spoken_word["yes"],
        2,
        remote=remote,
    )
    command, reply = sorted(got, key=lambda m: m["started"])
    assert speaker.said == [f"Did you mean: {command['text']}?"]
    assert command["text"] == "set the bedroom light to fifty percent"
    assert command["intent"] == "HassLightSet" and command["confirmed"] is True
    assert command["slots"] == {"area": "bedroom", "brightness": 50, "domain": "light"}
    assert command["confidence"] < BAR  # the recogniser's own, under the bar
    assert reply["intent"] == "Yes" and "confirmed" not in reply
    assert "guess" not in command
    assert intents == ["hermes/intent/HassLightSet", "hermes/intent/Yes"]  # in that order


@pytest.mark.parametrize("remote", [False, True], ids=["here", "remote"])
def test_no_drops_the_answer_asked_about(
    tmp_path: Path,
    mosquitto_broker,
    unsure_command,
    spoken_word,
    remote: bool,
) -> None:
    got, intents, arrival, _ = run_dialogue(
        tmp_path,
        mosquitto_broker,
        unsure_command,
        spoken_word["no"],
        2,
        remote=remote,
    )
    command, reply = sorted(got, key=lambda m: m["started"])
    assert command["intent"] is None and command["confirmed"] is False
    assert command["text"] == "set the bedroom light to fifty percent"
    assert reply["intent"] == "No"
    assert arrival == [command["id"], reply["id"]]  # in the order they were said
    assert intents == ["hermes/intent/No"]


@pytest.mark.parametrize("remote", [False, True], ids=["here", "remote"])
def test_no_reply_in_time_drops_it_and_loses_nothing(
    tmp_path: Path,
    mosquitto_broker,
    unsure_command,
    remote: bool,
) -> None:
    confirm = ConfirmSettings(from_confidence=0.2, wait_s=1.0)
    started = time.monotonic()
    got, intents, _, speaker = run_dialogue(
        tmp_path, mosquitto_broker, unsure_command, None, 1, confirm, remote
    )
    assert len(speaker.said) == 1
    (command,) = got
    assert command["intent"] is None and command["confirmed"] is False
    assert command["latency_ms"] >= 1000  # it waited for the reply
    assert intents == [] and time.monotonic() - started < 60


@pytest.mark.parametrize("remote", [False, True], ids=["here", "remote"])
def test_without_a_confirm_section_nothing_is_asked(
    tmp_path: Path,
    mosquitto_broker,
    unsure_command,
    remote: bool,
) -> None:
    got, _, _, speaker = run_dialogue(
        tmp_path,
        mosquitto_broker,
        unsure_command,
        None,
        1,
        ConfirmSettings(),
        remote,
    )
    assert speaker.said == []
    (command,) = got
    assert command["intent"] is None and "confirmed" not in command


@pytest.mark.parametrize("remote", [False, True], ids=["here", "remote"])
def test_stopping_while_a_question_waits_loses_nothing(
    tmp_path: Path, mosquitto_broker, unsure_command, remote: bool
) -> None:
    """Stopped while it waits for a reply (30 s), the daemon publishes the answer asked about
    unconfirmed before it exits, not after the wait."""
    confirm = ConfirmSettings(from_confidence=0.2, wait_s=30.0)
    started = time.monotonic()
    got, intents, _, speaker = run_dialogue(
        tmp_path, mosquitto_broker, unsure_command, None, 1, confirm, remote, stop_when_asked=True
    )
    assert len(speaker.said) == 1
    (command,) = got
    assert command["intent"] is None and command["confirmed"] is False
    assert intents == [] and time.monotonic() - started < 30


def test_the_measurement_answers_as_the_speaker_would() -> None:
    """tools.asking: a right answer asked about gets a "yes" recording, a wrong one a "no",
    each taken in turn and counted as the recogniser heard it."""
    from tools.asking import Heard, outcome

    heard = [
        Heard(Result("turn on the light", "HassTurnOn", {}, 0.9), right=True),
        Heard(Result("turn off the light", "HassTurnOff", {}, 0.8), right=False),
        Heard(unsure(0.5), right=True),  # asked: "yes" heard as Yes
        Heard(unsure(0.4), right=True),  # asked: this "yes" was not heard as an answer
        Heard(unsure(0.3), right=False),  # asked: "no" heard as No
        Heard(unsure(0.1), right=True),  # under from_confidence: not asked
    ]
    replies = {"yes": [Reply.YES, Reply.OTHER], "no": [Reply.NO]}
    never = outcome(heard, replies, ConfirmSettings())
    assert never == {"right": 1 / 6, "wrong": 1 / 6, "asked": 0, "accuracy": 1 / 6}
    asking = outcome(heard, replies, ASK_FROM)
    assert asking == {"right": 2 / 6, "wrong": 1 / 6, "asked": 3 / 6, "accuracy": 2 / 6}
    # A "no" misheard as Yes acts on the wrong answer: counted against asking.
    misheard = {"yes": [Reply.YES], "no": [Reply.YES]}
    asking = outcome(heard, misheard, ASK_FROM)
    assert asking == {"right": 3 / 6, "wrong": 2 / 6, "asked": 3 / 6, "accuracy": 3 / 6}
    # Silence or an unknown word (must be rejected) is right when nothing is acted on, asked
    # about or not: its speaker says no.
    noise = [Heard(unsure(0.3), right=False, must_reject=True), Heard(unsure(0.1), False, True)]
    assert outcome(noise, replies, ASK_FROM)["accuracy"] == 1.0
    assert outcome(noise, misheard, ASK_FROM)["accuracy"] == 0.5


def test_a_recording_is_never_asked_about_and_the_log_says_why(
    tmp_path: Path, mosquitto_broker, caplog: pytest.LogCaptureFixture
) -> None:
    """`assistant run --source FILE` with [confirm] set: nobody is there to answer, so the
    demo's unsure answers go out rejected at once, as without [confirm]."""
    config = Config(state_dir=tmp_path / "state", confirm=ASK_FROM).with_overrides(
        source=str(ROOT / "models" / "home" / "demo.wav"),
        broker=f"{mosquitto_broker.host}:{mosquitto_broker.port}",
        site=SITE,
    )
    sub = Subscriber(mosquitto_broker.host, mosquitto_broker.port, [TRANSCRIPT])
    exit_codes: list[int] = []
    # In a thread, as the other tests here: on the main thread run() would take SIGTERM over
    # for the rest of the test session (a pool's workers, forked later, would ignore it).
    daemon = daemon_mod.Daemon(config)
    with caplog.at_level("INFO", logger="assistant.daemon"):
        thread = threading.Thread(target=lambda: exit_codes.append(daemon.run()))
        thread.start()
        thread.join(60)
    assert exit_codes == [0]
    got = sub.settle(TRANSCRIPT, 4, 10)
    sub.close()
    assert "no question will be asked: " in caplog.text and "is not a microphone" in caplog.text
    assert [m["intent"] for m in got] == [None, "HassGetCurrentTime", None, None]
    assert all("confirmed" not in m for m in got)


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (
            '[audio]\nsource = "-"\n',
            "confirm: FAIL [confirm] set, but no question will be asked: "
            "the audio source is not a microphone",
        ),
        (
            "[tts]\nenabled = false\n",
            "confirm: FAIL [confirm] set, but no question will be asked: speech is off",
        ),
        ("", "confirm: OK   asks about answers from confidence 0.20 up to 0.57"),
        (
            '[model]\nremote = true\n[mqtt]\nhost = "127.0.0.1"\n',
            "confirm: OK   asks about answers from confidence 0.20 up to the workers' bar",
        ),
    ],
)
def test_check_says_whether_questions_can_be_asked(tmp_path: Path, extra: str, line: str) -> None:
    from test_remote import cli

    config = tmp_path / "assistant.toml"
    config.write_text(f"[confirm]\nfrom_confidence = 0.2\n{extra}")
    done = cli(tmp_path, "check", "--config", str(config))
    assert line in done.stdout, done.stdout
