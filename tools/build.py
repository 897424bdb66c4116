"""One command from a grammar to a complete bundle:

    python -m tools.build --grammar my_commands.yaml --out models/mine

Steps (each shows progress; finished steps are reused when the command is run again):
  1. synthetic speech of the grammar's sentences from the offline TTS voices (tools.synth),
     leaving some voices out for an honest held-out test;
  2. features of the real recordings, train split only (tools.prepare);
  3. training: fine-tunes the shipped home model's weights (--init) on real + synthetic
     speech, or trains from scratch with --init none; with --epochs 0 the --init weights are
     used as they are (a calibration-only build in minutes; steps 1-3 are skipped);
  4. export to TFLite, int8 weights (the bundle) and float (for comparison);
  5. confidence calibration on held-out train speakers (tools.calibrate);
  6. evaluation: held-out voices clean and in noise, and the real test split per corpus;
  7. plots (training.png, snr.png) and CARD.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tools import asking, learn_units, prepare, synth
from tools.average import PROVENANCE
from tools.calibrate import Clips, calibrate
from tools.corpus import DEFAULT_DATA, load_noises
from tools.evaluate import evaluate
from tools.export import BEAM
from tools.heldout import accuracy_by_snr
from tools.machine import machine
from tools.model import ModelConfig
from tools.package import update_manifest, write_bundle
from tools.report import plot_snr, plot_training, write_card
from tools.train import train

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INIT = ROOT / "models" / "home" / "checkpoint.weights.h5"
HELDOUT_VOICES = "piper:*,flite:rms"


class Steps:
    """Prints each step's heading and keeps how long each took, for the model card."""

    def __init__(self) -> None:
        self.minutes: dict[str, float] = {}
        self._current: str | None = None
        self._started = time.time()

    def __call__(self, name: str) -> None:
        self.finish()
        print(f"\n== {name}", flush=True)
        self._current, self._started = name, time.time()

    def finish(self) -> dict[str, float]:
        if self._current is not None:
            self.minutes[self._current] = round((time.time() - self._started) / 60, 1)
            self._current = None
        return self.minutes


def training_run(history: Path) -> dict[str, float]:
    """Epochs and minutes of the whole training run, from its history: a resumed build's own
    training step takes seconds, which must not pass for the cost of the model."""
    with history.open() as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    return {"epochs": len(seconds), "minutes": round(sum(seconds) / 60, 1)}


def init_provenance(init: Path) -> dict | None:
    """Where --init weights came from, for the card: the note tools.average leaves beside a
    mean, or, for a bundle's own checkpoint, that bundle's name, version and training (a
    calibration-only build would otherwise show only "epochs": 0)."""
    note = init.parent / PROVENANCE
    if note.exists():
        return json.loads(note.read_text())
    manifest = init.parent / "manifest.json"
    if init.name == "checkpoint.weights.h5" and manifest.exists():
        bundle = json.loads(manifest.read_text())
        return {
            "bundle": f"{bundle.get('name')} {bundle.get('version')}",
            "training": bundle.get("training"),
        }
    return None


def calibration_clips(args: argparse.Namespace, calib_dir: Path) -> Clips:
    """The dev corpora's commands teach the calibrator only for weights trained on this
    grammar: trained here, or --init-knows-grammar (see tools.calibrate.calibrate)."""
    own = calib_dir if calib_dir.exists() else None
    return Clips(own, corpora=args.epochs > 0 or args.init_knows_grammar)


def build(args: argparse.Namespace) -> Path:
    started = time.time()
    step = Steps()
    work: Path = args.work or ROOT / ".cache" / f"build-{args.out.name}"
    work.mkdir(parents=True, exist_ok=True)
    cache: Path = args.cache
    synth_set, heldout_dir = work / "synth.npz", work / "heldout"
    grammar = [str(g) for g in args.grammar]

    init = None if str(args.init) == "none" or not Path(args.init).exists() else Path(args.init)
    if args.epochs == 0 and init is None:
        raise SystemExit(f"--epochs 0 uses the --init weights as they are: {args.init} not found")
    if args.epochs > 0 and args.synth_count and not synth_set.exists():
        step("synthetic speech")
        synth.main(
            [
                "--grammar",
                *grammar,
                "--count",
                str(args.synth_count),
                "--out",
                str(synth_set),
                "--exclude",
                HELDOUT_VOICES,
                "--workers",
                str(args.workers),
            ]
        )
    if args.heldout_count and not (heldout_dir / "labels.json").exists():
        step("held-out voices")
        synth.main(
            [
                "--grammar",
                *grammar,
                "--count",
                str(args.heldout_count),
                "--clean",
                "--voices",
                HELDOUT_VOICES,
                "--wav-dir",
                str(heldout_dir),
                "--seed",
                "1",
                "--workers",
                str(args.workers),
            ]
        )
    real_train, real_dev = cache / prepare.TRAIN, cache / prepare.DEV
    real_narrow = cache / prepare.TRAIN_NARROW
    needed = [real_train] + ([real_narrow] if args.narrowband else [])
    if args.epochs > 0 and not all(path.exists() for path in needed):
        step("features of the real recordings")
        prepare.main(
            ["--data", str(args.data), "--cache", str(cache)]
            + (["--limit", str(args.limit)] if args.limit else [])
            + (["--narrow-copies", "1"] if args.narrowband else [])
        )

    run = work / "run"
    if args.epochs > 0:
        step("training")
        sets = needed + ([synth_set] if synth_set.exists() else []) + list(args.extra_sets)
        checkpoint = train(
            sets,
            real_dev,
            run,
            args.epochs,
            args.lr,
            12000,
            ModelConfig(),
            init=init,
            threads=args.workers,
            average=args.average,
            units=learn_units.load(args.units) if args.units else None,
        )
    else:
        assert init is not None
        checkpoint = init  # its config.json lies beside it, as a training run's does

    step("export")
    training_info = {
        "real": "train split of ../shared/data (speech_commands, an4, speechocean762, "
        "wake_word_benchmark, fsdd), 3 copies each (clean + speed/noise/gain)"
        + (", and one more through a narrowband (3.5-5.5 kHz) channel" if args.narrowband else ""),
        "synthetic": f"{args.synth_count if args.epochs else 0} grammar sentences, TTS voices"
        f" except {HELDOUT_VOICES}",
        "extra_sets": [s.name for s in args.extra_sets],
        "init": str(init.relative_to(ROOT)) if init and init.is_relative_to(ROOT) else str(init),
        "epochs": args.epochs,
        "averaged_epochs": args.average,
    }
    provenance = init_provenance(init) if init is not None else None
    if provenance is not None:
        training_info["init_provenance"] = provenance
    grammar_file = Path(args.grammar[0])
    float_dir = work / "float"
    for out, quantise in ((args.out, True), (float_dir, False)):
        write_bundle(
            checkpoint,
            out,
            grammar_file,
            args.out.name,
            args.version,
            quantise=quantise,
            training=training_info,
            beam=args.beam,
        )
    if checkpoint.resolve() != (args.out / "checkpoint.weights.h5").resolve():
        shutil.copyfile(checkpoint, args.out / "checkpoint.weights.h5")
        shutil.copyfile(checkpoint.parent / "config.json", args.out / "config.json")
        if (checkpoint.parent / learn_units.UNITS_FILE).exists():
            shutil.copyfile(
                checkpoint.parent / learn_units.UNITS_FILE, args.out / learn_units.UNITS_FILE
            )
    if (run / "history.csv").exists():
        plot_training(run / "history.csv", args.out / "training.png")

    calib_dir = work / "calib"
    if args.heldout_count and not (calib_dir / "labels.json").exists():
        step("calibration speech (training voices, new sentences)")
        synth.main(
            [
                "--grammar",
                *grammar,
                "--count",
                "300",
                "--wav-dir",
                str(calib_dir),
                "--exclude",
                HELDOUT_VOICES,
                "--seed",
                "2",
                "--workers",
                str(args.workers),
            ]
        )
    step("calibration")  # what it is fitted on: the card's "Confidence" (Clips.describe)
    calibration = calibrate(args.out, args.data, calibration_clips(args, calib_dir))
    update_manifest(float_dir, {"calibration": calibration})

    metrics = measure(
        args.out, float_dir, args.data, heldout_dir, args.eval_corpora, args.limit, step
    )
    metrics["build_minutes"] = round((time.time() - started) / 60, 1)
    metrics["build_steps_minutes"] = step.finish()
    if (run / "history.csv").exists():  # all epochs, also those of an earlier, resumed run
        metrics["training_run"] = training_run(run / "history.csv")
    update_manifest(
        args.out,
        {
            "metrics": metrics,
            "runtime": "ai-edge-litert",
            "build": " ".join(["python -m tools.build", *args.argv]),
        },
    )
    write_card(args.out)
    print(f"\nbundle written to {args.out} in {metrics['build_minutes']} minutes")
    return args.out


# The metrics measure() gives (tools.remeasure drops a bundle's old ones of these).
MEASURED = (
    "heldout",
    "heldout_float",
    "test_int8",
    "test_float",
    "test_narrow_int8",
    "test_trimmed_int8",
    "test_stream_int8",
    "asking",
    "machine",
)


def measure(
    bundle: Path,
    float_dir: Path,
    data: Path,
    heldout_dir: Path,
    eval_corpora: bool,
    limit: int = 0,
    step: Callable[[str], None] = lambda name: print(f"\n== {name}", flush=True),
) -> dict:
    """The card's figures for an int8 bundle and its float twin (calibrated alike): the
    held-out voices clean and in noise (with snr.png) and what asking about unsure answers
    buys there (tools.asking), and with ``eval_corpora`` the real test split per corpus,
    also through an 8 kHz channel, cut tight to the speech, and cut from a stream by the
    daemon's VAD."""
    metrics: dict = {}
    if heldout_dir.exists():
        step("held-out voices, clean and in noise")
        noises = load_noises(data)
        metrics["heldout"] = accuracy_by_snr(bundle, heldout_dir, noises)
        float_heldout = accuracy_by_snr(float_dir, heldout_dir, noises)
        plot_snr(
            {"int8": metrics["heldout"], "float": float_heldout},
            bundle / "snr.png",
            f"{bundle.name}: held-out TTS voices",
        )
        metrics["heldout_float"] = float_heldout
        step("asking when unsure: held-out voices, real yes and no replies")
        metrics["asking"] = asking.measure(bundle, heldout_dir, data, (asking.CARD_FROM,))
    if eval_corpora:
        step("real test split, per corpus")
        metrics["test_int8"] = evaluate(bundle, data, "test", limit)
        metrics["test_float"] = evaluate(float_dir, data, "test", limit)
        step("real test split through an 8 kHz channel")
        metrics["test_narrow_int8"] = evaluate(bundle, data, "test", limit, "narrow")
        step("real test split cut tight to the speech")
        metrics["test_trimmed_int8"] = evaluate(bundle, data, "test", limit, "trimmed")
        step("real test split as the daemon hears it (cut from a stream by its VAD)")
        metrics["test_stream_int8"] = evaluate(bundle, data, "test", limit, "stream")
    metrics["machine"] = machine()  # where the timings above were taken
    return metrics


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grammar", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--init", default=str(DEFAULT_INIT), help="weights to fine-tune, or 'none'")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--average", type=int, default=1, help="average the last N epochs")
    parser.add_argument("--synth-count", type=int, default=3000)
    parser.add_argument("--heldout-count", type=int, default=200)
    parser.add_argument(
        "--extra-sets",
        type=Path,
        nargs="*",
        default=[],
        help="more feature sets to train on (tools.synth output, e.g. other grammars' speech)",
    )
    parser.add_argument(
        "--eval-corpora", action="store_true", help="also score the real test split"
    )
    parser.add_argument(
        "--beam", type=int, default=BEAM, help=f"grammar hypotheses per step (default {BEAM})"
    )
    parser.add_argument(
        "--init-knows-grammar",
        action="store_true",
        help="with --epochs 0: the --init weights were trained on this grammar (e.g. a"
        " tools.average of its own run), so calibrate on the dev corpora too, as after training",
    )
    parser.add_argument(
        "--narrowband",
        action="store_true",
        help="also train on a narrowband (8 kHz-like) copy of every real recording",
    )
    parser.add_argument(
        "--units",
        type=Path,
        help="train phone-piece output units (a tools.learn_units file) instead of phones",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="tiny runs for tests")
    args = parser.parse_args(argv)
    missing = [str(s) for s in args.extra_sets if not s.is_file()]
    if missing:
        parser.error(f"--extra-sets: no such file: {', '.join(missing)}")
    args.argv = argv
    build(args)


if __name__ == "__main__":
    main()
