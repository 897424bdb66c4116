"""The daemon: audio -> Segmenter -> Recognizer -> Bus, and the service lifecycle around it.

Threads, one job each:
  audio      reads frames, runs the VAD, queues utterances (never waits for recognition, so a
             slow Pi drops no microphone samples while it recognises);
  recognise  turns utterances into Results, publishes them, queues spoken replies; asks
             "did you mean ...?" about unsure answers where configured (dialogue.py);
             with --remote it sends the utterances to the workers instead, and handles
             the answers they send back (queued by the bus's network thread);
  tts        (tts.Speaker) speaks replies and MQTT "say" requests, muting the microphone;
  main       signals, sd_notify (READY, WATCHDOG while the audio loop is alive, STOPPING),
             SIGHUP reload, shutdown.
SIGTERM stops the source, finishes the utterance in flight, flushes the outbox and exits 0.
A file source behaves the same at its end of file.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import audio as audio_mod
from . import dialogue
from .config import Config, ConfigError, ModelSettings, load
from .hermes import AnswerForSite, Transcript
from .mqtt import BrokerUnavailable, Bus, BusConfigError
from .notify import Notifier, watchdog_interval
from .remote import PendingUtterances, UtteranceMessage
from .result import Result
from .tts import MicGate, Speaker, render_reply
from .vad import Segmenter, Utterance

log = logging.getLogger(__name__)

_END = object()
FLUSH_TIMEOUT_S = 10.0
AUDIO_STALL_S = 5.0  # no frame (or back-off tick) for this long: the audio loop is stuck
RECOGNISE_STALL_S = 60.0  # one utterance taking this long: the recogniser is stuck
QUEUE_LIMIT = 32  # utterances waiting for recognition; beyond that the oldest are dropped
REMOTE_DRAIN_S = 15.0  # --remote, on stopping: how long to wait for the workers' transcripts
QUESTION_POLL_S = 0.05  # past a question's deadline, while a reply begun in time is still heard
# --remote: how long a reply sent to the workers may take to come back before the question
# is dropped unanswered (a worker answers in well under a second when one is there).
REMOTE_REPLY_WAIT_S = 10.0


class DaemonError(Exception):
    """A user-readable reason the daemon cannot start."""


def load_recognizer(settings: ModelSettings | None = None) -> Any:
    from .bundle import BundleError
    from .recognizer import DEFAULT_MODEL_DIR, Recognizer

    settings = settings or ModelSettings()
    path = Path(settings.dir) if settings.dir is not None else Path(DEFAULT_MODEL_DIR)
    try:
        recognizer = Recognizer.load(path)
    except BundleError as exc:
        raise DaemonError(f"model {path}: {exc}") from None
    if settings.min_confidence is not None:
        log.info(
            "intents need confidence %.2f (the bundle's own bar: %.2f)",
            settings.min_confidence,
            recognizer.threshold,
        )
        recognizer.threshold = settings.min_confidence
    if not settings.recheck:
        recognizer.recheck = None
    return recognizer


@dataclasses.dataclass(frozen=True)
class _Heard:
    """What a transcript says besides the answer: which utterance, when, by which model."""

    utterance_id: str
    started: float  # wall clock
    ended: float
    closed_at: float  # time.monotonic() when the VAD closed it: latency counts from there
    model: str

    @classmethod
    def from_transcript(cls, transcript: Transcript) -> _Heard:
        """A worker's transcript (--remote); its end is on the wall clock."""
        closed_at = time.monotonic() - max(0.0, time.time() - transcript.ended)
        t = transcript
        return cls(t.id, t.started, t.ended, closed_at, t.model)


@dataclasses.dataclass(frozen=True)
class _Question:
    """An answer asked about ("did you mean ...?"): its transcript waits for the reply."""

    result: Result
    heard: _Heard
    asked_at: float  # time.monotonic() when the question had been spoken
    deadline: float  # time.monotonic() by which a reply must have begun
    # --remote: the utterance sent to the workers as the reply, and when to stop waiting
    # for their answer to it.
    reply_id: str | None = None
    answer_by: float = 0.0

    def answers(self, utterance: Utterance) -> bool:
        """Only what was said after the question, beginning in time, can answer it."""
        return self.asked_at <= utterance.opened_at < self.deadline


@dataclasses.dataclass(frozen=True)
class _WorkerAnswer:
    """--remote: a worker's answer to one of our utterances: a transcript it published, or
    one it handed back for us to publish (``handed_back``: an answer under the bar that we
    may ask about, its ``guess`` set, or the answer to a reply to our question)."""

    answer: AnswerForSite
    handed_back: bool = False


def _describe(item: Utterance | _WorkerAnswer) -> str:
    """The recognise thread's work item, for the log."""
    if isinstance(item, _WorkerAnswer):
        return f"the workers' answer to utterance {item.answer.transcript.id}"
    return f"utterance at {item.start_s:.2f} s"


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        overrides: dict[str, Any] | None = None,
        source: audio_mod.Source | None = None,
        notifier: Notifier | None = None,
        speaker: Any = None,
    ) -> None:
        """``source`` and ``speaker`` stand in for the microphone and the loudspeaker where
        there is no such hardware (tests, tools.bench_asking)."""
        self.config = config
        self._config_path = config_path
        self._overrides = overrides or {}
        self._notifier = notifier or Notifier()
        self._source_override = source
        self._speaker_override = speaker
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._utterances: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._heartbeat = time.monotonic()
        self._recognising_since: float | None = None
        self._bus_lock = threading.Lock()
        self._pending_segmenter: Segmenter | None = None
        # --remote: utterances sent whose transcript has not come back (resent; replies)
        self.pending = PendingUtterances()
        self._t0 = time.time()  # wall clock of stream time 0
        self.published = 0
        self.gate = MicGate(config.tts.mute_tail_ms / 1000)
        self.speaker: Speaker | None = None
        self.recognizer: Any = None
        self.bus: Any = None
        self.source: audio_mod.Source | None = None
        self._question: _Question | None = None  # the recognise thread's alone
        self._hearing_since: float | None = None  # set by the audio thread: speech began then
        self._can_ask = False  # a question can be heard and answered here (_plan_asking)

    # -- lifecycle -----------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        # The audio loop stops at the next point where no utterance is in progress; the
        # supervisor stops the source outright if that takes longer than an utterance can last.
        self._stop.set()

    def request_reload(self, *_: Any) -> None:
        self._reload.set()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT or the end of a file source; the process exit status."""
        self._start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGHUP, self.request_reload)
        audio_thread = threading.Thread(target=self._audio_loop, name="audio", daemon=True)
        recognise_thread = threading.Thread(
            target=self._recognise_loop, name="recognise", daemon=True
        )
        recognise_thread.start()
        # The stall limit counts from here: loading the model and reaching the broker can
        # outlast it on a slow Pi, before the audio loop has had a frame to wait for.
        self._beat()
        audio_thread.start()
        self._notifier.ready(f"listening on {self.source.name}")  # type: ignore[union-attr]
        log.info("ready: %s -> %s", self.source.name, self._recognised_by)  # type: ignore[union-attr]
        self._supervise(audio_thread)
        # Drain: the audio loop has flushed the segmenter; let recognition finish.
        self._notifier.stopping()
        audio_thread.join(FLUSH_TIMEOUT_S)
        recognise_thread.join(FLUSH_TIMEOUT_S + RECOGNISE_STALL_S + REMOTE_DRAIN_S)
        return self._shutdown()

    def _start(self) -> None:
        config = self.config
        # --remote: recogniser workers hear this site's utterances; no model is loaded here.
        if config.model.remote and not config.mqtt.host:
            # A private broker or stdout would swallow the utterances: no worker is there.
            raise DaemonError(
                "--remote needs the broker the recogniser workers use: set [mqtt] host "
                "or --broker HOST:PORT"
            )
        self.recognizer = None if config.model.remote else load_recognizer(config.model)
        self.source = self._source_override or self._open_source(config)
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.speaker = self._speaker_override
        if self.speaker is None and config.tts.enabled:
            self.speaker = Speaker(config.tts, self.gate)
        self.bus = self._make_bus(config)
        try:
            self.bus.start()
        except (BusConfigError, BrokerUnavailable) as exc:
            raise DaemonError(str(exc)) from None
        self._plan_asking()

    def _plan_asking(self) -> None:
        """Whether questions can be asked and answered here (at start and on reload), and
        the log line that says so."""
        settings = self.config.confirm
        self._can_ask = False
        if not settings.enabled:
            return
        why_not = dialogue.why_never_asked(
            speech_on=self.speaker is not None,
            microphone=self.source is not None and self.source.live,
            # --remote: the workers' grammar, which they check (worker.py)
            intent_names=self.recognizer.grammar.intent_names if self.recognizer else None,
        )
        self._can_ask = why_not is None
        if why_not:
            log.warning("[confirm] set, but no question will be asked: %s", why_not)
        else:
            bar = f"{self.recognizer.threshold:.2f}" if self.recognizer else "the workers'"
            log.info(
                "asking %r about answers from confidence %.2f up to the bar (%s)",
                settings.question,
                settings.from_confidence,
                bar,
            )

    @property
    def _recognised_by(self) -> str:
        if self.recognizer is None:
            return f"recogniser workers ({self.config.mqtt.topics.utterance})"
        return str(self.recognizer.name)

    def _open_source(self, config: Config) -> audio_mod.Source:
        try:
            return audio_mod.open_source(
                config.audio.source,
                frame_ms=config.vad.frame_ms,
                realtime=config.audio.realtime,
                device=config.audio.device,
                on_wait=self._beat,
            )
        except audio_mod.AudioError as exc:
            raise DaemonError(str(exc)) from None

    def _make_bus(self, config: Config) -> Any:
        # --remote: the workers' transcripts come back on our topic, for the spoken replies,
        # and the answers they hand back to us, for the questions.
        remote = config.model.remote
        return Bus(
            config.mqtt,
            config.state_dir / "outbox.sqlite3",
            on_say=self._on_say,
            on_transcript=self._on_worker_transcript if remote else None,
            on_answer_for_site=self._on_answer_for_site if remote else None,
        )

    def _shutdown(self) -> int:
        ok = True
        with self._bus_lock:
            if self.bus is not None:
                ok = self.bus.stop(FLUSH_TIMEOUT_S)
        if not ok:
            log.warning("outbox not fully delivered; it is kept on disk for the next start")
        if self.speaker is not None:
            self.speaker.close()
        sent = "utterance(s) to the workers" if self.recognizer is None else "transcript(s)"
        log.info("stopped after %d %s", self.published, sent)
        return 0

    # -- main thread: watchdog and reload --------------------------------------------

    def _beat(self) -> None:
        self._heartbeat = time.monotonic()

    def healthy(self) -> bool:
        now = time.monotonic()
        if now - self._heartbeat > AUDIO_STALL_S:
            return False
        since = self._recognising_since
        return since is None or now - since < RECOGNISE_STALL_S

    def _supervise(self, audio_thread: threading.Thread) -> None:
        interval = watchdog_interval()
        next_pet = 0.0
        was_healthy = True
        stop_deadline: float | None = None
        while audio_thread.is_alive():
            if self._stop.is_set() and stop_deadline is None:
                log.info("stopping: finishing the utterance in flight")
                self._notifier.stopping()
                stop_deadline = time.monotonic() + self.config.vad.max_utterance_ms / 1000 + 1
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                self.source.stop()  # type: ignore[union-attr]
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            healthy = self.healthy()
            if healthy != was_healthy:
                if healthy:
                    log.info("audio loop alive again")
                else:
                    log.error("audio loop stalled: no longer petting the watchdog")
                was_healthy = healthy
            if interval and healthy and time.monotonic() >= next_pet:
                self._notifier.watchdog()
                next_pet = time.monotonic() + interval
            self._send_again()
            audio_thread.join(min(0.5, interval or 0.5))

    def _send_again(self) -> None:
        """--remote: utterances no worker answered in time go out again (remote.py)."""
        if self.recognizer is not None:
            return
        with self._bus_lock:
            for ident, payload in self.pending.due(self.bus.connected):
                log.warning("utterance %s: no transcript yet, sent again", ident)
                self.bus.publish_utterance(payload)

    def _await_workers(self) -> None:
        """--remote, stopping (recognise thread): give the workers a while to answer (and
        resend) what is out, and handle their answers."""
        deadline = time.monotonic() + REMOTE_DRAIN_S
        while len(self.pending) and self.bus.connected and time.monotonic() < deadline:
            self._send_again()
            try:
                item = self._utterances.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, _WorkerAnswer):
                self._heard_by_worker(item)
        if left := len(self.pending):
            log.warning("%d utterance(s) not answered by a worker before stopping", left)
        while True:  # answers taken off the pending list just before it emptied
            try:
                item = self._utterances.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _WorkerAnswer):
                self._heard_by_worker(item)

    def _do_reload(self) -> None:
        path = self._config_path or self.config.path
        self._notifier.reloading()
        try:
            new = load(path).with_overrides(**self._overrides)
        except ConfigError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            self._notifier.ready("reload failed; running on the previous config")
            return
        old = self.config
        if new.audio != old.audio or new.state_dir != old.state_dir:
            log.warning("audio and state_dir changes take effect after a restart")
            new = dataclasses.replace(new, audio=old.audio, state_dir=old.state_dir)
        if new.model.remote and not new.mqtt.host:
            log.error("reload kept the old model: remote = true needs [mqtt] host")
            new = dataclasses.replace(new, model=old.model)
        if new.model != old.model:
            try:
                self.recognizer = None if new.model.remote else load_recognizer(new.model)
                log.info("model reloaded: %s", self._recognised_by)
            except DaemonError as exc:
                log.error("reload kept the old model: %s", exc)
                new = dataclasses.replace(new, model=old.model)
        if new.vad != old.vad:
            self._pending_segmenter = Segmenter(new.vad)
        if new.tts != old.tts and self.speaker is not None:
            self.speaker.update(new.tts)
        # A site turned --remote (or back) needs its transcripts subscribed (or not).
        if new.mqtt != old.mqtt or new.model.remote != old.model.remote:
            with self._bus_lock:
                self.bus.stop(FLUSH_TIMEOUT_S)
                self.bus = self._make_bus(new)
                self.bus.start()
        logging.getLogger().setLevel(new.log_level.upper())
        self.config = new
        self._plan_asking()
        log.info("configuration reloaded from %s", path or "defaults")
        self._notifier.ready("configuration reloaded")

    # -- audio thread ------------------------------------------------------------------

    def _audio_loop(self) -> None:
        assert self.source is not None
        segmenter = Segmenter(self.config.vad)
        self._t0 = time.time()
        try:
            for frame in self.source.frames():
                self._beat()
                if self._stop.is_set() and not segmenter.active:
                    break
                if self._pending_segmenter is not None and not segmenter.active:
                    segmenter, self._pending_segmenter = self._pending_segmenter, None
                    log.info("VAD settings applied")
                if self.gate.muted:
                    segmenter.skip(frame.size)  # our own voice: never listen to it
                    self._hearing_since = None
                    continue
                utterance = segmenter.feed(frame)
                self._hearing_since = segmenter.opened_at
                if utterance is not None:
                    self._enqueue(utterance)
            self.source.stop()
        except audio_mod.AudioError as exc:
            log.error("audio source failed: %s", exc)
        except Exception:
            log.exception("audio loop crashed")
            raise
        finally:
            last = segmenter.flush()
            if last is not None:
                self._enqueue(last)
            self._utterances.put(_END)

    def _enqueue(self, item: Utterance | _WorkerAnswer) -> None:
        try:
            self._utterances.put_nowait(item)
        except queue.Full:
            # Recognition cannot keep up (it should on any Pi): drop the oldest, not the audio.
            dropped = self._utterances.get_nowait()
            log.error("recogniser behind: dropped %s", _describe(dropped))
            self._utterances.put_nowait(item)

    # -- recognise thread ----------------------------------------------------------------

    def _recognise_loop(self) -> None:
        while True:
            item = self._next_utterance()
            if item is None:
                continue
            if item is _END:
                self._can_ask = False  # stopping: nobody is listening for a reply now
                if self.recognizer is None:
                    self._await_workers()  # a reply among them still settles the question
                self._settle_question(dialogue.Reply.OTHER)  # its transcript goes out
                return
            self._recognising_since = time.monotonic()
            try:
                if isinstance(item, _WorkerAnswer):
                    self._heard_by_worker(item)
                else:
                    self._handle(item)
            except Exception:  # noqa: BLE001 - one bad utterance must not end the service
                log.exception("failed to handle %s", _describe(item))
            finally:
                self._recognising_since = None

    def _next_utterance(self) -> Any:
        """The next queued utterance (or _END); None when a question's wait ran out first."""
        question = self._question
        if question is None:
            return self._utterances.get()
        sent = question.reply_id is not None  # --remote: the reply is with the workers
        try:
            until = question.answer_by if sent else question.deadline
            wait = max(until - time.monotonic(), QUESTION_POLL_S)
            return self._utterances.get(timeout=wait)
        except queue.Empty:
            if sent:
                if time.monotonic() >= question.answer_by:
                    log.warning("no worker answered the reply %s in time", question.reply_id)
                    self._settle_question(dialogue.Reply.OTHER)
                return None
            began = self._hearing_since
            if began is None or began >= question.deadline:
                self._settle_question(dialogue.Reply.OTHER)  # no reply in time
            return None  # else a reply begun in time is still being heard

    def _handle(self, utterance: Utterance) -> None:
        recognizer = self.recognizer
        if recognizer is None:
            self._send_to_workers(utterance)
            return
        try:
            result = recognizer.recognize(utterance.pcm)
        except Exception:  # noqa: BLE001 - publish a rejection so subscribers stay in step
            log.exception("recognition failed for utterance at %.2f s", utterance.start_s)
            result = Result(text="", intent=None)
        question = self._question
        if question is not None:
            answers = question.answers(utterance)
            self._settle_question(
                dialogue.reply_to_question(result) if answers else dialogue.Reply.OTHER
            )
        heard = _Heard(
            uuid.uuid4().hex,
            self._t0 + utterance.start_s,
            self._t0 + utterance.end_s,
            utterance.closed_at,
            recognizer.name,
        )
        if self._may_ask(result):
            self._ask(result, heard)
        else:
            self._publish(result, heard)
            self._reply(result)
        try:
            recognizer.settle()  # after publishing: off the latency path
        except Exception as exc:  # noqa: BLE001 - the next utterance reports it again
            log.error("model not ready for the next utterance: %s", exc)

    def _publish(self, result: Result, heard: _Heard, confirmed: bool | None = None) -> None:
        latency_ms = (time.monotonic() - heard.closed_at) * 1000.0
        with self._bus_lock:
            self.bus.publish_transcript(
                result,
                utterance_id=heard.utterance_id,
                started=heard.started,
                ended=heard.ended,
                latency_ms=round(latency_ms, 1),
                model=heard.model,
                confirmed=confirmed,
            )
        self.published += 1
        log.info(
            "%.2f-%.2f s: %r -> %s (confidence %.2f, latency %.0f ms)%s",
            heard.started - self._t0,
            heard.ended - self._t0,
            result.text,
            result.verdict(),
            result.confidence,
            latency_ms,
            "" if confirmed is None else f" confirmed={confirmed}",
        )

    # -- asking "did you mean ...?" (dialogue.py) -----------------------------------------

    def _may_ask(self, result: Result) -> bool:
        """Worth asking, and someone can hear the question and answer it (_plan_asking,
        at start and on reload)."""
        return self._can_ask and dialogue.worth_asking(result, self.config.confirm)

    def _ask(self, result: Result, heard: _Heard) -> None:
        question = dialogue.question_for(result, self.config.confirm)
        log.info(
            "%.2f-%.2f s: %r confidence=%.2f: asking %r",
            heard.started - self._t0,
            heard.ended - self._t0,
            result.text,
            result.confidence,
            question,
        )
        assert self.speaker is not None
        if not self.speaker.say(question):  # the microphone is muted meanwhile
            log.warning("the question could not be spoken: %r not acted on", result.text)
            self._publish(result, heard, confirmed=False)
            return
        asked_at = time.monotonic()
        deadline = asked_at + self.config.confirm.wait_s
        self._question = _Question(result, heard, asked_at, deadline)

    def _settle_question(self, reply: dialogue.Reply) -> None:
        """Publish the transcript that waited for the reply: acted on only after a yes."""
        question, self._question = self._question, None
        if question is None:
            return
        yes = reply is dialogue.Reply.YES
        result = dialogue.as_confirmed(question.result) if yes else question.result
        try:
            self._publish(result, question.heard, confirmed=yes)
        except Exception:  # noqa: BLE001 - one bad utterance must not end the service
            log.exception("failed to publish the transcript asked about")
            return
        if yes:
            self._reply(result)

    def _send_to_workers(self, utterance: Utterance) -> None:
        # Asking: the workers hand our unsure answers back (worker.py) instead of publishing
        # them, and the reply's answer too, so that we publish both in a local site's order.
        ask_from = self.config.confirm.from_confidence if self._can_ask else None
        question = self._question
        if question is not None and question.reply_id is not None:
            question = None  # its reply is already with the workers
        reply = question is not None and question.answers(utterance)
        message = UtteranceMessage.new(
            self.config.mqtt.site,
            self._t0 + utterance.start_s,
            self._t0 + utterance.end_s,
            utterance.pcm,
            ask_from,
            reply,
        )
        payload = message.to_payload()
        self.pending.add(message.id, payload)
        with self._bus_lock:
            self.bus.publish_utterance(payload)
        self.published += 1
        log.info(
            "%.2f-%.2f s: utterance %s sent to the recogniser workers%s",
            utterance.start_s,
            utterance.end_s,
            message.id,
            " (the reply)" if reply else "",
        )
        if question is None:
            return
        if reply:  # its answer will settle the question
            answer_by = time.monotonic() + REMOTE_REPLY_WAIT_S
            self._question = dataclasses.replace(question, reply_id=message.id, answer_by=answer_by)
        elif utterance.opened_at >= question.deadline:
            self._settle_question(dialogue.Reply.OTHER)  # no reply in time

    def _heard_by_worker(self, item: _WorkerAnswer) -> None:
        """--remote: a worker's answer to one of our utterances. A reply settles the
        question it answers; an answer handed back is asked about (an unsure one) or
        published here; each gets its spoken reply as a local answer does."""
        transcript, result = item.answer.transcript, item.answer.result()
        log.info(
            "utterance %s heard by a worker: %r -> %s (confidence %.2f)%s",
            transcript.id,
            transcript.text,
            result.verdict(),
            transcript.confidence,
            " (handed back)" if item.handed_back else "",
        )
        question = self._question
        if question is not None and question.reply_id == transcript.id:
            self._settle_question(dialogue.reply_to_question(result))
        if not item.handed_back:  # the worker published it
            self._reply(result)
            return
        heard = _Heard.from_transcript(transcript)
        # One question at a time; and asking may have been turned off since it was sent.
        if self._question is None and self._may_ask(result):
            self._ask(result, heard)
            return
        self._publish(result, heard)
        self._reply(result)

    def _reply(self, result: Result) -> None:
        reply = render_reply(result, self.config.replies)
        if reply and self.speaker is not None and self.source is not None and self.source.live:
            self.speaker.say_async(reply)

    # -- bus callbacks (MQTT network thread) -----------------------------------------------

    def _on_worker_transcript(self, transcript: Transcript) -> None:
        # Ours and the first copy only: delivery is at least once, an utterance may have been
        # sent twice, and other programs may publish on the topic too. The recognise thread
        # handles it, in order with the questions it may settle.
        if self.pending.answered(transcript.id):
            self._enqueue(_WorkerAnswer(AnswerForSite(transcript)))

    def _on_answer_for_site(self, answer: AnswerForSite) -> None:
        if self.pending.answered(answer.transcript.id):
            self._enqueue(_WorkerAnswer(answer, handed_back=True))

    def _on_say(self, request: Any) -> None:
        # Called on the bus's say thread, one request at a time: speaking here serialises them.
        if self.speaker is None:
            log.info("say request ignored (tts disabled): %r", request.text)
        else:
            self.speaker.say(request.text)
        # "said" is sent even when nothing could be played: the request was handled.
        with self._bus_lock:
            self.bus.publish_said(request)
