"""Benchmark our recogniser against its peers on exactly the same clips, in one run.

    python -m tools.bench --set speech_commands fsdd an4 --model models/NAME
    python -m tools.bench --set my_recordings/ --grammar my.yaml --model models/NAME

For every set: the clean clips plus copies mixed with the noise files of ``--data``/noise at
each ``--snr`` (fixed seed; SNR on speech energy, tools/augment.py), made once and read by
every engine. Each engine runs in its own process (one thread, OMP/MKL at 1) so that its peak
memory is its own. Prints one table per set and writes, under ``--out``:
``<set>/<engine>.jsonl`` (every answer), ``<set>/summary.json``, ``<set>/accuracy_vs_snr.png``
and ``RESULTS.md`` (the tables, date, machine and command: the README's results section).

Scoring (tools/sets.py): "intent" sets count a clip right when the intent and every labelled
slot are right (a clip that must be rejected is right when rejected); "text" sets (AN4)
count whole-sentence matches. Word error rate is over clips whose reference is something
to say (for intent sets: those that must be accepted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tools.corpus import DEFAULT_DATA, load_audio, load_noises
from tools.machine import machine
from tools.meaning import same_meaning
from tools.peers import ENGINES, Hyp, make_engine, single_thread_env, text_variants
from tools.sets import BenchSet, Item, load_set

DEFAULT_SNRS = (24.0, 18.0, 12.0, 6.0, 0.0)
CLEAN = "clean"


def condition_name(snr: float | None) -> str:
    return CLEAN if snr is None else f"{snr:g} dB"


# ---------------------------------------------------------------------------------------------
# Audio for every (condition, clip), written once, read clip by clip by every engine


@dataclass
class Utterance:
    condition: str
    item: int  # index into the set's items
    offset: int  # in samples, into audio.bin
    samples: int


def make_audio(
    bench: BenchSet, snrs: list[float], seed: int, data_dir: Path, folder: Path
) -> list[Utterance]:
    from tqdm import tqdm

    from tools.augment import mix_noise

    noises = load_noises(data_dir) if snrs else []
    if snrs and not noises:
        raise SystemExit(f"no noise files (*.flac) in {data_dir / 'noise'}")
    folder.mkdir(parents=True, exist_ok=True)
    utterances: list[Utterance] = []
    offset = 0
    with open(folder / "audio.bin", "wb") as out:
        for index, item in enumerate(tqdm(bench.items, desc=f"{bench.name}: audio", unit="clip")):
            clean = load_audio(item.path)
            for k, snr in enumerate([None, *snrs]):
                if snr is None:
                    audio = clean
                else:  # the same clip gets the same noise, whatever subset or engines run
                    rng = np.random.default_rng([seed, zlib.crc32(item.id.encode()), k])
                    audio = mix_noise(clean, noises[int(rng.integers(len(noises)))], snr, rng)
                pcm = _to_int16(audio)
                out.write(pcm.tobytes())
                utterances.append(Utterance(condition_name(snr), index, offset, pcm.size))
                offset += pcm.size
    return utterances


def _to_int16(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.999:  # scale a loud mix down rather than clip it
        audio = audio * (0.999 / peak)
    return np.round(audio * 32767).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# One engine in its own process


def run_worker(job_path: Path, engine_name: str) -> None:
    from tqdm import tqdm

    job = json.loads(job_path.read_text())
    folder = job_path.parent
    baseline = _max_rss_bytes()
    engine = make_engine(
        engine_name,
        Path(job["grammar"]),
        Path(job["model"]) if job["model"] else None,
        job["whisper_beam"],
    )
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    utterances = [Utterance(**u) for u in job["utterances"]]
    with (
        open(folder / "audio.bin", "rb") as audio,
        open(folder / f"{engine_name}.jsonl", "w") as out,
    ):
        engine.transcribe(_read(audio, utterances[0]))  # warm-up, not timed
        for utt in tqdm(utterances, desc=f"{job['set']}: {engine_name}", unit="utt"):
            pcm = _read(audio, utt)
            wall, cpu = time.perf_counter(), time.process_time()
            hyp = engine.transcribe(pcm)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            row = {
                "condition": utt.condition,
                "item": utt.item,
                **asdict(hyp),
                "ms": wall * 1000,
                "cpu_ms": cpu * 1000,
            }
            out.write(json.dumps(row) + "\n")
    meta = {
        "engine": engine_name,
        "description": engine.description,
        "peak_rss_bytes": _max_rss_bytes(),
        "baseline_rss_bytes": baseline,
        "load_s": load_s,
        "model_size_bytes": engine.model_size_bytes,
        "added_words": getattr(engine, "added_words", {}),
    }
    (folder / f"{engine_name}.meta.json").write_text(json.dumps(meta, indent=1))


def _read(audio: Any, utt: Utterance) -> np.ndarray:
    audio.seek(utt.offset * 2)
    return np.frombuffer(audio.read(utt.samples * 2), dtype=np.int16)


def _max_rss_bytes() -> int:
    """Peak resident memory of this process. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across
    exec, so a child of a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # elsewhere: the best we have (bytes on macOS, KiB on Linux)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def run_engine(folder: Path, engine_name: str) -> bool:
    cmd = [
        sys.executable,
        "-m",
        "tools.bench",
        "--worker",
        engine_name,
        "--job",
        str(folder / "job.json"),
    ]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(cmd, env=single_thread_env(), cwd=root)
    if done.returncode != 0:
        print(
            f"error: engine {engine_name} failed (exit {done.returncode}); see above",
            file=sys.stderr,
        )
    return done.returncode == 0


# ---------------------------------------------------------------------------------------------
# Scoring


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def best_reading(ref: str, text: str) -> tuple[str, int]:
    """The reading of a transcript (digits read out) closest to the reference."""
    ref_words = ref.split()
    options = [(v, edit_distance(ref_words, v.split())) for v in text_variants(text) or [""]]
    return min(options, key=lambda o: o[1])


def is_right(bench: BenchSet, item: Item, hyp: Hyp) -> bool:
    if bench.scoring == "text":
        return best_reading(item.text, hyp.text)[1] == 0
    return same_meaning(hyp.intent, hyp.slots, item.intent, item.slots, labelled_only=True)


def wer_eligible(bench: BenchSet, item: Item) -> bool:
    return bool(item.text) and (bench.scoring == "text" or item.intent is not None)


def score(bench: BenchSet, rows: list[dict], meta: dict, conditions: list[str]) -> dict:
    by_cond: dict[str, dict[str, float]] = {}
    for cond in conditions:
        mine = [r for r in rows if r["condition"] == cond]
        right = [
            is_right(bench, bench.items[r["item"]], Hyp(r["text"], r["intent"], r["slots"]))
            for r in mine
        ]
        errors = words = 0
        for r in mine:
            item = bench.items[r["item"]]
            if wer_eligible(bench, item):
                errors += best_reading(item.text, r["text"])[1]
                words += len(item.text.split())
        by_cond[cond] = {
            "accuracy": float(np.mean(right)) if right else float("nan"),
            "wer": errors / words if words else float("nan"),
            "n": len(mine),
        }
    ms = np.array([r["ms"] for r in rows])
    audio_s = sum(bench.items[r["item"]].seconds for r in rows)
    return {
        **meta,
        "conditions": by_cond,
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "median_cpu_ms": float(np.median([r["cpu_ms"] for r in rows])),
        "rtf": float(ms.sum() / 1000 / audio_s) if audio_s else float("nan"),
        "utterances": len(rows),
    }


# ---------------------------------------------------------------------------------------------
# Tables and plots


def _pct(x: float) -> str:
    return "-" if x != x else f"{100 * x:.1f}"


def _ratio(a: float, b: float) -> str:
    if a != a or b != b:
        return "-"
    return "inf" if b == 0 else f"{a / b:.2f}x"


def tables(bench: BenchSet, results: dict[str, dict], conditions: list[str]) -> str:
    measure = "sentence acc" if bench.scoring == "text" else "command acc"
    worst = conditions[-1]
    lines = [
        f"| engine | {measure} clean % | {measure} {worst} % | WER clean % | median ms | "
        "p95 ms | median CPU ms | RTF | peak RSS MB | model MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        c = r["conditions"]
        lines.append(
            f"| {r['description']} | {_pct(c[CLEAN]['accuracy'])} | {_pct(c[worst]['accuracy'])}"
            f" | {_pct(c[CLEAN]['wer'])} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['median_cpu_ms']:.1f} | "
            f"{r['rtf']:.3f} | {r['peak_rss_bytes'] / 2**20:.0f} | "
            f"{r['model_size_bytes'] / 2**20:.1f} |"
        )
    baseline = min(r["baseline_rss_bytes"] for r in results.values()) / 2**20
    lines += [
        "",
        f"ms: wall clock per utterance over all conditions (CPU ms: the process's CPU "
        f"time). Peak RSS: the engine's whole process; Python with numpy alone is "
        f"{baseline:.0f} MB.",
    ]
    head = "| engine | " + " | ".join(conditions) + " |"
    rule = "|---|" + "---:|" * len(conditions)
    lines += ["", f"{measure} (%) per noise condition:", "", head, rule]
    for r in results.values():
        lines.append(
            f"| {r['engine']} | "
            + " | ".join(_pct(r["conditions"][c]["accuracy"]) for c in conditions)
            + " |"
        )
    lines += ["", "word error rate (%) per noise condition:", "", head, rule]
    for r in results.values():
        lines.append(
            f"| {r['engine']} | "
            + " | ".join(_pct(r["conditions"][c]["wer"]) for c in conditions)
            + " |"
        )
    if "ours" in results:
        ours = results["ours"]
        lines += [
            "",
            f"ours / peer: {measure} ratio per condition, and speed-up (peer median ms"
            " / our median ms):",
            "",
            "| peer | " + " | ".join(conditions) + " | speed |",
            "|---|" + "---:|" * (len(conditions) + 1),
        ]
        for name, r in results.items():
            if name == "ours":
                continue
            accs = [
                _ratio(ours["conditions"][c]["accuracy"], r["conditions"][c]["accuracy"])
                for c in conditions
            ]
            speed = _ratio(r["median_ms"], ours["median_ms"])
            lines.append(f"| {name} | " + " | ".join(accs) + f" | {speed} |")
    return "\n".join(lines)


def plot(bench: BenchSet, results: dict[str, dict], conditions: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(reversed(conditions))  # hardest (0 dB) on the left, clean on the right
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results.values():
        ax.plot(
            order,
            [100 * r["conditions"][c]["accuracy"] for c in order],
            marker="o",
            label=r["engine"],
        )
    n = next(iter(results.values()))["conditions"][CLEAN]["n"]
    ax.set_xlabel("SNR (noise on speech energy)")
    ax.set_ylabel(("sentence" if bench.scoring == "text" else "command") + " accuracy (%)")
    ax.set_title(f"{bench.name} test ({n} clips)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def bench_set(
    bench: BenchSet, engines: list[str], args: argparse.Namespace, snrs: list[float]
) -> tuple[dict[str, dict], list[str], bool]:
    folder = args.out / bench.name
    utterances = make_audio(bench, snrs, args.seed, args.data, folder)
    job = {
        "set": bench.name,
        "grammar": str(bench.grammar.resolve()),
        "model": str(args.model.resolve()) if args.model else None,
        "whisper_beam": args.whisper_beam,
        "utterances": [asdict(u) for u in utterances],
    }
    (folder / "job.json").write_text(json.dumps(job))
    conditions = [condition_name(s) for s in [None, *snrs]]
    results: dict[str, dict] = {}
    ok = True
    for name in engines:
        if not run_engine(folder, name):
            ok = False
            continue
        rows = [json.loads(line) for line in open(folder / f"{name}.jsonl")]
        meta = json.loads((folder / f"{name}.meta.json").read_text())
        results[name] = score(bench, rows, meta, conditions)
    (folder / "audio.bin").unlink(missing_ok=True)  # regenerated each run; big
    summary = {
        "set": bench.name,
        "clips": len(bench.items),
        "scoring": bench.scoring,
        "grammar": str(bench.grammar),
        "results": results,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    if results:
        plot(bench, results, conditions, folder / "accuracy_vs_snr.png")
    return results, conditions, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=["speech_commands", "fsdd", "an4"],
        help="built-in set names and/or folders with labels.json",
    )
    parser.add_argument("--grammar", type=Path, help="grammar (required for a folder)")
    parser.add_argument("--model", type=Path, help="our model bundle (engine 'ours')")
    parser.add_argument(
        "--engines",
        default=None,
        help=f"comma list of {','.join(ENGINES)} (default: all; ours with --model)",
    )
    parser.add_argument(
        "--snr",
        default=",".join(f"{s:g}" for s in DEFAULT_SNRS),
        help="noisy copies at these SNRs (dB), or 'none' for clean only",
    )
    parser.add_argument("--limit", type=int, help="a fixed random subset of N clips per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", choices=("intent", "text"), help="override the scoring")
    parser.add_argument("--whisper-beam", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.job, args.worker)
        return 0

    if args.engines:
        engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    else:
        engines = [e for e in ENGINES if e != "ours" or args.model]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    if "ours" in engines and not args.model:
        parser.error("engine 'ours' needs --model DIR")
    snrs = [] if args.snr.strip().lower() == "none" else [float(s) for s in args.snr.split(",")]
    snrs = sorted(snrs, reverse=True)

    command = "python -m tools.bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    report = [
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {machine()}. "
        "Every engine on one thread, in its own process.",
        "",
        f"Command: `{command}`",
        "",
    ]
    all_ok = True
    for name in args.set:
        bench = load_set(name, args.grammar, args.data, args.score).subset(args.limit, args.seed)
        results, conditions, ok = bench_set(bench, engines, args, snrs)
        all_ok &= ok
        if not results:
            continue
        text = tables(bench, results, conditions)
        title = (
            f"### {bench.name}: {len(bench.items)} test clips x {len(conditions)} "
            f"conditions, grammar `{bench.grammar.name}`"
        )
        print(f"\n{title}\n\n{text}\n")
        report += [title, "", text, "", f"![accuracy vs SNR]({bench.name}/accuracy_vs_snr.png)", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULTS.md").write_text("\n".join(report))
    print(f"wrote {args.out / 'RESULTS.md'}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
