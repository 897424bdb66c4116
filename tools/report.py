"""Plots (training curves, accuracy against SNR) and CARD.md for a bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on a Pi or in CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(history: Path, out: Path) -> None:
    rows = list(csv.DictReader(history.open()))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_att", "dev_att", "train_ctc", "dev_ctc"):
        if key in rows[0]:
            loss_ax.plot(epochs, [float(r[key]) for r in rows], label=key)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="losses")
    loss_ax.legend()
    for key in ("train_acc", "dev_acc"):
        if key in rows[0]:
            acc_ax.plot(epochs, [float(r[key]) for r in rows], label=key)
    acc_ax.set(xlabel="epoch", ylabel="token accuracy (teacher forced)", title="accuracy")
    acc_ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_snr(curves: dict[str, dict[str, dict]], out: Path, title: str) -> None:
    """curves: label -> {"clean": {"accuracy"}, "24 dB": ...}."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, by_snr in curves.items():
        keys = list(by_snr)
        ax.plot(keys, [by_snr[k]["accuracy"] for k in keys], marker="o", label=label)
    ax.set(
        xlabel="condition (noise SNR on speech energy)",
        ylabel="command accuracy",
        title=title,
        ylim=(0, 1.02),
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _wrong_answers_line(results: dict[str, dict]) -> str:
    """What the accuracy hides: of the answers not right, how many were acted on."""
    wrong = [
        f"{name} {_pct(r['wrong_accepted'])} of commands"
        for name, r in results.items()
        if "wrong_accepted" in r
    ]
    wrong += [
        f"{name} {_pct(r['must_reject_accepted'])} of the clips it must reject"
        for name, r in results.items()
        if "must_reject_accepted" in r and name != "false_accepts"
    ]
    return f"Accepted but wrong (int8): {', '.join(wrong)}." if wrong else ""


def _heard_line(results: dict[str, dict]) -> str:
    """What the model heard before the bar: the accuracy's gap to it is right answers the
    calibrator turned away (a lower bar or asking wins them back), the rest is the model."""
    heard = [f"{name} {_pct(r['heard'])}" for name, r in results.items() if "heard" in r]
    if not heard:
        return ""
    return (
        "Heard right before the confidence bar (int8; the best reading, accepted or not): "
        f"{', '.join(heard)} of commands."
    )


def _speaker_line(name: str, result: dict) -> str:
    """One line of a set's per-speaker results: each speaker where there are a few, else the
    spread."""
    by = result.get("by_speaker")
    if not by:
        return ""
    what = "word error rate" if "wer" in result else "accuracy"
    if len(by) <= 4:
        return f"- {name} ({what}): " + ", ".join(f"{k} {_pct(v)}" for k, v in by.items())
    values = sorted(by.values())
    return (
        f"- {name} ({what}), {len(values)} speakers: lowest {_pct(values[0])}, "
        f"median {_pct(float(np.median(values)))}, highest {_pct(values[-1])}"
    )


def _asking_lines(report: dict | None) -> list[str]:
    """The card's "Asking when unsure" section, from a tools.asking report."""
    if not report or not report.get("sets"):
        return []
    setting = next(k for k in next(iter(report["sets"].values())) if k != "never")
    replies = report["replies"]
    lines = [
        "",
        f"## Asking when unsure (`[confirm] from_confidence = {setting.split()[-1]}`)",
        "",
        "The held-out commands again, each answer under the bar and over the setting asked",
        '"Did you mean ...?" and replied to as its speaker would, with a real "yes" recording',
        'where it was right and a real "no" where it was wrong (dev speakers; heard as meant: '
        f"{replies['yes']['yes']} of {sum(replies['yes'].values())} yes, "
        f"{replies['no']['no']} of {sum(replies['no'].values())} no; "
        f"no taken as yes: {replies['no']['yes']}). `python -m tools.asking`.",
        "",
        "| condition | acted on right, never asking | asking | acted on wrong, never / asking"
        " | asked about |",
        "|---|---|---|---|---|",
    ]
    for condition, rows in report["sets"].items():
        never, ask = rows["never"], rows[setting]
        lines.append(
            f"| {condition} | {_pct(never['right'])} | {_pct(ask['right'])} | "
            f"{_pct(never['wrong'])} / {_pct(ask['wrong'])} | {_pct(ask['asked'])} |"
        )
    non = report.get("non_commands")
    if non:
        asked = next(v for k, v in non.items() if k.startswith("asked from"))
        lines += ["", f"Dev non-commands that would set off a question: {asked} of {non['clips']}."]
    return lines


def write_card(bundle: Path) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    metrics = m.get("metrics", {})
    sizes = {p.name: p.stat().st_size for p in sorted(bundle.glob("*.tflite"))}
    lines = [
        f"# Model card: {m['name']} {m['version']}",
        "",
        "GRU encoder + attention decoder over ARPAbet phonemes, decoding constrained by",
        f"`{m['grammar']}` (Home Assistant sentence templates), beam {m.get('beam')}. "
        f"Quantisation: {m.get('quantisation')}.",
        f"Graph files: {', '.join(f'{k} ({v / 1024:.0f} KiB)' for k, v in sizes.items())}; "
        f"total {sum(sizes.values()) / 1024 / 1024:.2f} MiB.",
    ]
    if m.get("reexported_from"):
        lines += [
            f"Graphs exported again from {m['reexported_from']}'s checkpoint "
            "(`python -m tools.reexport`); the results below were measured by its build.",
        ]
    again = metrics.get("remeasured")
    if again:
        lines += [
            f"Measured again on {again['date']} (`python -m tools.remeasure`) after "
            f"{again['why']}: same weights, graphs and calibration as built; the build's "
            "times below are the build's.",
        ]
    lines += [
        "",
        "## Training data",
        "",
        "```json",
        json.dumps(m.get("training", {}), indent=2),
        "```",
        "",
        "## Results on voices the model never heard (`split=test` of the shared data)",
        "",
        "Each corpus is decoded with a grammar that fits it (`models/eval/*.yaml`).",
        "",
    ]
    test_q, test_f = metrics.get("test_int8", {}), metrics.get("test_float", {})
    # The same clips through other channels (tools.evaluate --channel): as an 8 kHz
    # microphone passes them on, cut tight to their speech, and cut from a stream by the
    # daemon's VAD (what its users get). A column only where measured.
    channels = [
        (head, metrics[key])
        for key, head in (
            ("test_narrow_int8", "int8, 8 kHz mic"),
            ("test_trimmed_int8", "int8, trimmed"),
            ("test_stream_int8", "int8, as the daemon hears"),
        )
        if metrics.get(key)
    ]
    lines += [
        "| set | clips | int8 | float |"
        + "".join(f" {head} |" for head, _ in channels)
        + " measure |",
        "|---|---|---|---|" + "---|" * len(channels) + "---|",
    ]
    rows = [
        (
            "speech_commands",
            "accuracy",
            "12-class accuracy (10 keywords, unknown and silence rejected)",
        ),
        ("fsdd", "accuracy", "digit accuracy (recorded at 8 kHz)"),
        ("an4", "wer", "word error rate"),
        ("an4", "accuracy", "sentence accuracy"),
        ("false_accepts", "rate", "non-commands (noise, read sentences) given an intent"),
    ]
    for name, key, what in rows:
        q, f = test_q.get(name, {}), test_f.get(name, {})
        extra = "".join(f" {_pct(measured.get(name, {}).get(key))} |" for _, measured in channels)
        lines.append(
            f"| {name} | {q.get('clips', '')} | {_pct(q.get(key))} | {_pct(f.get(key))} |"
            f"{extra} {what} |"
        )
    for line in (_wrong_answers_line(test_q), _heard_line(test_q)):
        if line:
            lines += ["", line]
    spread = [
        _speaker_line(name, test_q.get(name, {})) for name in ("speech_commands", "fsdd", "an4")
    ]
    spread = [line for line in spread if line]
    if spread:
        lines += ["", "Per speaker (int8):", ""]
        lines += spread
    timing = test_q.get("speech_commands", {})
    if timing:
        lines += [
            "",
            f"Time per 1 s command (int8, one thread, {m.get('runtime', 'ai-edge-litert')}"
            + (f", {metrics['machine']}" if metrics.get("machine") else "")
            + f"): median {timing['ms_median']:.1f} ms, p95 {timing['ms_p95']:.1f} ms.",
        ]
    heldout = metrics.get("heldout", {})
    if heldout:
        lines += [
            "",
            "## The grammar's own commands, spoken by TTS voices held out of training",
            "",
            "| condition | accuracy (intent and slots) | accepted but wrong | exact text |",
            "|---|---|---|---|",
        ]
        for key, v in heldout.items():
            wrong = _pct(v["wrong_accepted"]) if "wrong_accepted" in v else "-"
            lines.append(f"| {key} | {_pct(v['accuracy'])} | {wrong} | {_pct(v['text_exact'])} |")
    lines += _asking_lines(metrics.get("asking"))
    cal = m.get("calibration", {})
    if cal:
        lines += [
            "",
            "## Confidence",
            "",
            f"Logistic calibrator fitted on {cal.get('fitted_on')}; "
            f"threshold {cal.get('threshold')}; "
            f"dev false accepts {_pct(cal.get('dev_false_accepts'))}, dev right answers accepted "
            f"{_pct(cal.get('dev_right_accepted'))}"
            + (
                f", dev commands accepted but wrong {_pct(cal['dev_wrong_accepted'])}."
                if cal.get("dev_wrong_accepted") is not None
                else "."
            ),
        ]
        recheck = cal.get("recheck")
        if recheck:
            lines += [
                "",
                f"Second listen (assistant/recheck.py): answers with a confidence from "
                f"{recheck['low']} to under {recheck['high']} are decoded again at speed "
                f"{' and '.join(f'x{f:g}' for f in recheck['factors'])}; kept at confidence "
                f"{recheck['agreed']} when every rehearing gives the same intent and slots, else "
                f"{recheck['disagreed']}. {_pct(recheck.get('dev_share'))} of the calibration "
                "clips were heard again.",
            ]
    build = metrics.get("build_minutes")
    if build:
        lines += ["", "## Build time (this 2-core machine)", ""]
        lines.append(f"- last build command: {build} min")
        steps = metrics.get("build_steps_minutes", {})
        lines += [f"  - {step}: {minutes} min" for step, minutes in steps.items()]
        run = metrics.get("training_run")
        if run and run["minutes"] > steps.get("training", 0.0) + 0.5:
            lines.append(
                f"- the training run it resumed: {run['epochs']} epochs, {run['minutes']} min"
                " (earlier invocations of the same command)"
            )
    plots = [
        f"`{name}` ({what})"
        for name, what in (("training.png", "curves"), ("snr.png", "accuracy against noise"))
        if (bundle / name).exists()
    ]
    lines += [""]
    if plots:
        lines.append(f"Plots: {', '.join(plots)}.")
    lines.append("Reproduce: see `build` in the manifest and README (`python -m tools.build`).")
    (bundle / "CARD.md").write_text("\n".join(lines) + "\n")
