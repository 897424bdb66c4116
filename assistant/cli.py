"""`assistant`: the command line (the only place that parses arguments).

User errors (a bad config, an unreadable file, a missing model) are one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import audio as audio_mod
from .config import Config, ConfigError, ModelSettings, load
from .remote import shared_utterance_topic

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

log = logging.getLogger("assistant")


def _error(message: str) -> None:
    print(f"assistant: {message}", file=sys.stderr)


def _setup_logging(level: str) -> None:
    # Under systemd the journal adds timestamps; by hand, add our own.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("INVOCATION_ID"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def _load_config(args: argparse.Namespace) -> Config:
    config = load(args.config)
    return config.with_overrides(
        source=getattr(args, "source", None),
        broker=getattr(args, "broker", None),
        site=getattr(args, "site", None),
        model=getattr(args, "model", None),
        realtime=getattr(args, "realtime", None),
        remote=getattr(args, "remote", None),
        group=getattr(args, "group", None),
    )


# ----------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon, DaemonError
    from .heap import limit_heap_growth

    limit_heap_growth()
    config = _load_config(args)
    _setup_logging(args.log_level or config.log_level)
    overrides = {
        "source": args.source,
        "broker": args.broker,
        "site": args.site,
        "model": args.model,
        "realtime": args.realtime,
        "remote": args.remote,
    }
    try:
        return Daemon(config, config_path=args.config, overrides=overrides).run()
    except DaemonError as exc:
        _error(str(exc))
        return EXIT_FAILED


def cmd_worker(args: argparse.Namespace) -> int:
    from .heap import limit_heap_growth
    from .worker import Worker, WorkerError

    limit_heap_growth()
    config = _load_config(args)
    _setup_logging(args.log_level or config.log_level)
    try:
        return Worker(config).run()
    except WorkerError as exc:
        _error(str(exc))
        return EXIT_FAILED


# ----------------------------------------------------------------------- transcribe


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .daemon import DaemonError, load_recognizer

    _setup_logging(args.log_level or "warning")
    settings = ModelSettings(args.model, args.min_confidence, recheck=not args.no_recheck)
    for key, problem in settings.validate():
        _error(f"--{key.replace('_', '-')} {problem}")
        return EXIT_USAGE
    try:
        recognizer = load_recognizer(settings)
    except DaemonError as exc:
        _error(str(exc))
        return EXIT_FAILED
    status = EXIT_OK
    for name in args.files:
        try:
            pcm = audio_mod.read_audio(name)
        except audio_mod.AudioError as exc:
            _error(str(exc))
            status = EXIT_FAILED
            continue
        started = time.perf_counter()
        if args.free:
            free = recognizer.transcribe_free(pcm)
            ms = round((time.perf_counter() - started) * 1000.0, 1)
            if args.json:
                record = {"file": name, "text": free.text, "phones": free.phones, "ms": ms}
                print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                print(f"{name}: {free.text!r} ({free.phones}; {ms:.0f} ms)", flush=True)
            continue
        result = recognizer.recognize(pcm)
        ms = round((time.perf_counter() - started) * 1000.0, 1)
        if args.json:
            record = {
                "file": name,
                "text": result.text,
                "intent": result.intent,
                "slots": result.slots,
                "confidence": round(float(result.confidence), 4),
                "ms": ms,
            }
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(
                f"{name}: {result.text!r} -> {result.verdict()}"
                f" ({result.confidence:.2f}, {ms:.0f} ms)",
                flush=True,
            )
    return status


# ----------------------------------------------------------------------------- say


def cmd_say(args: argparse.Namespace) -> int:
    from .tts import Speaker

    config = _load_config(args)
    _setup_logging(args.log_level or "warning")
    speaker = Speaker(config.tts)
    try:
        wav = Path(args.wav) if args.wav else None
        if speaker.say(" ".join(args.text), wav_path=wav):
            return EXIT_OK
        _error("could not speak (see the warning above); try --wav FILE to save it instead")
        return EXIT_FAILED
    finally:
        speaker.close()


# ------------------------------------------------------------------------- devices


def cmd_devices(args: argparse.Namespace) -> int:
    try:
        devices = audio_mod.list_devices()
    except audio_mod.AudioError as exc:
        _error(str(exc))
        return EXIT_FAILED
    if not devices:
        print("no audio input devices found")
        return EXIT_OK
    for info in devices:
        print(info)
    return EXIT_OK


# --------------------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    from .daemon import DaemonError, load_recognizer

    _setup_logging(args.log_level or "error")
    failures = 0

    def verdict(what: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"{what + ':':<8} {'OK  ' if ok else 'FAIL'} {detail}", flush=True)

    try:
        config = _load_config(args)
        verdict("config", True, str(config.path) if config.path else "built-in defaults")
    except ConfigError as exc:
        verdict("config", False, str(exc))
        config = Config()

    recognizer = None
    if config.model.remote:
        verdict("model", True, f"none here: recogniser workers hear {config.mqtt.topics.utterance}")
    else:
        try:
            recognizer = load_recognizer(config.model)
            verdict("model", True, recognizer.name)
        except DaemonError as exc:
            verdict("model", False, str(exc))
    if config.model.remote and not config.mqtt.host:
        verdict("remote", False, "remote = true needs the workers' broker: set [mqtt] host")
    if config.confirm.enabled and not args.worker and (recognizer or config.model.remote):
        _check_confirm(config, recognizer, verdict)
    if args.worker:
        # A recogniser worker has no microphone; what it needs is a broker to share.
        if config.mqtt.host:
            topic = shared_utterance_topic(config.worker.group, config.mqtt.topic_prefix)
            verdict("worker", True, f"shares {topic}")
        else:
            verdict("worker", False, "a worker needs the sites' broker: set [mqtt] host")
    else:
        _check_audio(config, verdict)
    ok, detail = _check_broker(config)
    verdict("broker", ok, detail)
    return EXIT_OK if failures == 0 else EXIT_FAILED


def _check_confirm(
    config: Config, recognizer: Any, verdict: Callable[[str, bool, str], None]
) -> None:
    from .dialogue import why_never_asked

    why_not = why_never_asked(
        speech_on=config.tts.enabled,
        microphone=config.audio.source == "mic",
        # --remote: the workers' grammar decides, and they say so in their log
        intent_names=recognizer.grammar.intent_names if recognizer else None,
    )
    if why_not:
        verdict("confirm", False, f"[confirm] set, but no question will be asked: {why_not}")
    else:
        low = config.confirm.from_confidence
        bar = f"{recognizer.threshold:.2f}" if recognizer else "the workers' bar"
        verdict("confirm", True, f"asks about answers from confidence {low:.2f} up to {bar}")


def _check_audio(config: Config, verdict: Callable[[str, bool, str], None]) -> None:
    source = config.audio.source
    try:
        if source == "mic":
            device = audio_mod.resolve_device(config.audio.device, audio_mod.list_devices())
            verdict("audio", True, f"microphone {device}")
        elif source == "-":
            verdict("audio", True, "raw s16le 16 kHz mono on stdin")
        else:
            audio_mod.FileSource(source)
            verdict("audio", True, f"file {source}")
    except audio_mod.AudioError as exc:
        verdict("audio", False, str(exc))


def _check_broker(config: Config) -> tuple[bool, str]:
    from .mqtt import probe_broker

    return probe_broker(config.mqtt)


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant", description="Offline voice commands for the Raspberry Pi."
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override log level"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="TOML config (default /etc/assistant/…)")

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)
    run.add_argument("--source", help="mic, - (raw s16le 16 kHz mono on stdin) or an audio file")
    run.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker")
    run.add_argument("--site", help="site name in MQTT topics (default: hostname)")
    run.add_argument("--model", type=Path, metavar="DIR", help="model bundle directory")
    run.add_argument(
        "--realtime", action="store_true", default=None, help="pace file sources at real time"
    )
    run.add_argument(
        "--remote",
        action="store_true",
        default=None,
        help="send utterances to recogniser workers (assistant worker) instead of recognising",
    )
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser(
        "worker", help="recognise the utterances of sites run with --remote (shared over MQTT)"
    )
    with_config(worker)
    worker.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker the sites publish to")
    worker.add_argument("--model", type=Path, metavar="DIR", help="model bundle directory")
    worker.add_argument("--group", help="shared subscription group (default: recognisers)")
    worker.set_defaults(func=cmd_worker)

    transcribe = sub.add_parser("transcribe", help="recognise audio files")
    transcribe.add_argument("--model", type=Path, metavar="DIR", help="model bundle directory")
    transcribe.add_argument("--json", action="store_true", help="one JSON object per line")
    transcribe.add_argument(
        "--min-confidence",
        type=float,
        metavar="P",
        help="confidence an intent needs (default: the bundle's own bar)",
    )
    transcribe.add_argument(
        "--no-recheck",
        action="store_true",
        help="act on the first hearing alone: no second listen of answers near the bar",
    )
    transcribe.add_argument(
        "--free",
        action="store_true",
        help="no grammar: dictionary words (or [phones]) of whatever was said",
    )
    transcribe.add_argument("files", nargs="+", metavar="FILE")
    transcribe.set_defaults(func=cmd_transcribe)

    say = sub.add_parser("say", help="speak a sentence")
    with_config(say)
    say.add_argument("--wav", metavar="FILE", help="save to a WAV file instead of playing")
    say.add_argument("text", nargs="+")
    say.set_defaults(func=cmd_say)

    devices = sub.add_parser("devices", help="list audio input devices")
    devices.set_defaults(func=cmd_devices)

    check = sub.add_parser("check", help="check config, model, audio device and broker")
    with_config(check)
    check.add_argument("--model", type=Path, metavar="DIR", help="model bundle directory")
    check.add_argument("--broker", metavar="HOST:PORT", help="MQTT broker")
    check.add_argument(
        "--worker", action="store_true", help="check a recogniser worker (no audio device)"
    )
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
