"""Train the recogniser: `python -m tools.train --sets .cache/real_train.npz --out runs/x`.

Joint attention (label-smoothed cross-entropy, teacher forcing) + CTC loss, SpecAugment,
length-bucketed batches, a checkpoint after every epoch (training resumes from it, with the
optimizer's state and the epoch's own shuffle, as if it had never stopped), and a CSV of the
training curve for plots. A resumed run redraws its dropout masks (TensorFlow's own random
state is not saved), so it matches an unbroken run exactly only without dropout.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from assistant.lexicon import PAD_ID
from assistant.model import subsampled_length
from assistant.units import Units
from tools import learn_units
from tools.featcache import FeatureSet
from tools.model import LENGTH_BUCKETS, ModelConfig, Recogniser, carry_over_to_units
from tools.teacher import DistillTargets, load_targets

CTC_WEIGHT = 0.3
LABEL_SMOOTHING = 0.1


def make_batches(
    lengths: np.ndarray, max_frames: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Groups of similar length whose padded size stays under max_frames."""
    order = np.argsort(lengths + rng.uniform(0, 30, size=lengths.shape))
    batches, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, lengths[i])
        if current and longest_if_added * (len(current) + 1) > max_frames:
            batches.append(np.array(current))
            current, longest_if_added = [], lengths[i]
        current.append(i)
        longest = longest_if_added
    if current:
        batches.append(np.array(current))
    rng.shuffle(batches)
    return batches


# Share of utterances whose upper mel bands are blanked, as if recorded at 8 kHz or through a
# cheap microphone; after the per-utterance mean subtraction a band with no energy is ~0.
BAND_LIMIT_P = 0.15


def spec_augment(feats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    feats = feats.copy()
    t, f = feats.shape
    if rng.random() < BAND_LIMIT_P:
        feats[:, int(rng.integers(int(f * 0.65), int(f * 0.85))) :] = 0.0
    for _ in range(2):
        width = int(rng.integers(0, 8))
        start = int(rng.integers(0, f - width + 1))
        feats[:, start : start + width] = 0.0
    for _ in range(max(1, t // 100)):
        width = int(rng.integers(0, min(20, max(1, t // 5))))
        start = int(rng.integers(0, t - width + 1))
        feats[start : start + width, :] = 0.0
    return feats


def collate(
    data: FeatureSet,
    idx: np.ndarray,
    rng: np.random.Generator | None,
    targets: DistillTargets | None = None,
    bucket_padding: float = 0.0,
) -> tuple[np.ndarray, ...]:
    """(features, frames, previous tokens, tokens, token counts), and with ``targets`` the
    distillation targets and their mask at the encoder's steps. A share ``bucket_padding``
    of batches is padded as the runtime pads an utterance, to the length bucket that holds
    it, the rest by 0-0.6 s."""
    feats = [data.item(i) for i in idx]
    if rng is not None:
        feats = [spec_augment(f, rng) for f in feats]
    # Extra padding at the end, as the runtime pads to a fixed bucket length: the encoder's
    # backward GRUs start from it, and how much there is moves their states.
    longest = max(len(f) for f in feats)
    if rng is not None and bucket_padding > 0 and rng.random() < bucket_padding:
        t_max = next((b for b in LENGTH_BUCKETS if b >= longest), longest)
    else:
        t_max = longest + (int(rng.integers(0, 60)) if rng is not None else 0)
    t_max += (-t_max) % 4
    x = np.zeros((len(idx), t_max, feats[0].shape[1]), np.float32)
    for row, f in enumerate(feats):
        x[row, : len(f)] = f
    frames = np.array([len(f) for f in feats], np.int32)
    toks = [data.tokens[i] for i in idx]
    u_max = max(len(t) for t in toks)
    y = np.full((len(idx), u_max), PAD_ID, np.int32)
    for row, t in enumerate(toks):
        y[row, : len(t)] = t
    prev = np.concatenate([np.full((len(idx), 1), PAD_ID, np.int32), y[:, :-1]], axis=1)
    y_len = np.array([len(t) for t in toks], np.int32)
    if targets is None:
        return x, frames, prev, y, y_len
    return (x, frames, prev, y, y_len, *targets.batch(idx, int(subsampled_length(t_max))))


class Trainer:
    """Optimises the joint loss. With ``distill_dims``, a linear head (training only, never
    exported) maps the encoder states to tools.teacher's targets, and ``distill_weight``
    times its mean squared error joins the loss."""

    def __init__(
        self,
        model: Recogniser,
        lr: float,
        distill_dims: int = 0,
        distill_weight: float = 0.0,
        distill_layer: int = -1,
    ):
        self.model = model
        self.optimizer = tf.keras.optimizers.Adam(learning_rate=lr, clipnorm=5.0)
        self.lr = self.optimizer.learning_rate
        self.distill_weight = distill_weight
        self.distill_layer = distill_layer  # which encoder GRU layer's states (-1: the top)
        self.head: keras.layers.Dense | None = None
        if distill_dims:
            self.head = keras.layers.Dense(distill_dims)
            self.head.build((None, None, model.config.enc_dim))

    def save_optimizer(self, path: Path) -> None:
        """Adam's step count and moments, so that a resumed run goes on where it stopped.
        Without them Adam restarts, and its first steps are then ~lr * sign(gradient) on
        every weight: a jolt at every resume of a run that spans sessions."""
        arrays = {f"{i}:{v.path}": v.numpy() for i, v in enumerate(self.optimizer.variables)}
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **arrays)
        partial.replace(path)

    def restore_optimizer(self, path: Path) -> bool:
        """Loads what save_optimizer wrote; False (nothing changed) when there is none or it
        belongs to other variables."""
        if not path.exists():
            return False
        self.optimizer.build(self.variables)
        with np.load(path) as saved:
            names = sorted(saved.files, key=lambda key: int(key.split(":", 1)[0]))
            arrays = [saved[name] for name in names]
        variables = self.optimizer.variables
        if len(arrays) != len(variables) or any(
            a.shape != tuple(v.shape) for a, v in zip(arrays, variables, strict=True)
        ):
            return False
        for variable, array in zip(variables, arrays, strict=True):
            variable.assign(array)
        return True

    @property
    def variables(self) -> list:
        extra = self.head.trainable_variables if self.head is not None else []
        return [*self.model.trainable_variables, *extra]

    def losses(self, x, frames, prev, y, y_len, training, z=None, z_mask=None):
        enc_len = subsampled_length(frames)
        t_enc = subsampled_length(tf.shape(x)[1])
        enc_mask = tf.sequence_mask(enc_len, t_enc, dtype=tf.float32)
        logits, ctc_logits, states = self.model.forward(
            (x, prev, enc_mask), training=training, layer=self.distill_layer
        )
        dec_mask = tf.sequence_mask(y_len, tf.shape(y)[1], dtype=tf.float32)
        onehot = tf.one_hot(y, self.model.config.vocab_size)
        smooth = onehot * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / self.model.config.vocab_size
        ce = tf.nn.softmax_cross_entropy_with_logits(smooth, logits)
        att_loss = tf.reduce_sum(ce * dec_mask) / tf.reduce_sum(dec_mask)
        # CTC targets: the phones without the end token.
        ctc_len = y_len - 1
        ctc_labels = tf.where(tf.sequence_mask(ctc_len, tf.shape(y)[1]), y, 0)
        ctc = tf.nn.ctc_loss(
            ctc_labels, ctc_logits, ctc_len, enc_len, logits_time_major=False, blank_index=-1
        )
        ctc_loss = tf.reduce_mean(ctc / tf.cast(tf.maximum(ctc_len, 1), tf.float32))
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32)
        acc = tf.reduce_sum(correct * dec_mask) / tf.reduce_sum(dec_mask)
        distill = tf.constant(0.0)
        if self.head is not None and z is not None:
            error = tf.reduce_mean(tf.square(self.head(states) - z), axis=-1)
            distill = tf.reduce_sum(error * z_mask) / tf.maximum(tf.reduce_sum(z_mask), 1.0)
        return att_loss, ctc_loss, acc, distill

    @tf.function(reduce_retracing=True)
    def train_step(self, x, frames, prev, y, y_len, z=None, z_mask=None):
        with tf.GradientTape() as tape:
            att, ctc, acc, distill = self.losses(x, frames, prev, y, y_len, True, z, z_mask)
            loss = (1 - CTC_WEIGHT) * att + CTC_WEIGHT * ctc + self.distill_weight * distill
        variables = self.variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return att, ctc, acc, distill

    @tf.function(reduce_retracing=True)
    def eval_step(self, x, frames, prev, y, y_len):
        return self.losses(x, frames, prev, y, y_len, training=False)[:3]

    def fit_head(self, data: FeatureSet, targets: DistillTargets, max_frames: int) -> float:
        """Starts the distillation head at the least-squares map from the encoder's states as
        they are to the targets (a few hundred utterances), so that fine-tuning a trained
        model begins with the gradient of what the encoder lacks, not of a random head."""
        assert self.head is not None
        rng = np.random.default_rng(1)
        chosen = rng.permutation(np.flatnonzero(targets.present))[:600]
        inputs, wanted = [], []
        for idx in make_batches(data.lengths()[chosen], max_frames, rng):
            x, _, _, _, _, z, z_mask = collate(data, chosen[idx], None, targets)
            states = self.model.encode_layers(x)[2][self.distill_layer]
            keep = z_mask.astype(bool)
            inputs.append(states.numpy()[keep])
            wanted.append(z[keep])
        a, b = np.concatenate(inputs), np.concatenate(wanted)
        a1 = np.concatenate([a, np.ones((len(a), 1), np.float32)], axis=1)
        solution = np.linalg.solve(a1.T @ a1 + 1e-2 * np.eye(a1.shape[1]), a1.T @ b)
        self.head.set_weights([solution[:-1].astype(np.float32), solution[-1].astype(np.float32)])
        return float(np.mean((a1 @ solution - b) ** 2))


def build_model(config: ModelConfig, unroll: bool = False) -> Recogniser:
    model = Recogniser(config, unroll=unroll)
    x = np.zeros((1, 40, config.n_mels), np.float32)
    model((x, np.zeros((1, 3), np.int32), np.ones((1, 10), np.float32)))
    return model


def evaluate(trainer: Trainer, data: FeatureSet, max_frames: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    totals = np.zeros(3)
    count = 0
    for idx in make_batches(data.lengths(), max_frames, rng):
        att, ctc, acc = trainer.eval_step(*collate(data, idx, None))
        totals += np.array([float(att), float(ctc), float(acc)]) * len(idx)
        count += len(idx)
    return tuple(totals / max(count, 1))


def train(
    sets: list[Path],
    dev: Path | None,
    out: Path,
    epochs: int,
    lr: float,
    max_frames: int,
    config: ModelConfig,
    seed: int = 0,
    threads: int = 2,
    init: Path | None = None,
    average: int = 1,
    units: Units | None = None,
    distill: float = 0.0,
    distill_layer: int = -1,
    bucket_padding: float = 0.0,
) -> Path:
    """Trains (or resumes) a model. Its output units are ``units``, else those of ``init`` (a
    units.json beside it), else phones; a phone model's ``init`` is carried over to phone
    pieces (tools.model.carry_over_to_units). Targets are cached as phones and converted.
    ``distill`` > 0 adds that weight of tools.teacher's distillation loss (the sets that have
    targets beside them)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran in this process: keep its thread pools
        pass
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)  # the same first weights for the same seed
    parts = [FeatureSet.load(p) for p in sets]
    data = FeatureSet.concat(parts)
    targets = load_targets(sets, [p.lengths() for p in parts]) if distill > 0 else None
    if distill > 0 and targets is None:
        raise SystemExit("--distill needs targets beside a set: run python -m tools.teacher")
    dev_data = FeatureSet.load(dev) if dev else None
    init_units = learn_units.units_beside(init) if init is not None else Units.phones()
    units = units or init_units
    if units != init_units and not init_units.has_boundary:
        raise SystemExit(f"{init}: a model of other phone pieces; start from a phone model")
    if not units.has_boundary:
        config = replace(config, vocab_size=len(units.tokens))
        for feature_set in [data] + ([dev_data] if dev_data is not None else []):
            feature_set.tokens = [
                np.array(units.from_phone_ids(t), np.int32) for t in feature_set.tokens
            ]
        learn_units.save(units, out / learn_units.UNITS_FILE)
    model = build_model(config)
    trainer = Trainer(model, lr, targets.dims if targets else 0, distill, distill_layer)
    head_path = out / "distill_head.npz"
    ckpt_path, state_path = out / "ckpt.weights.h5", out / "state.json"
    optimizer_path = out / "optimizer.npz"
    start_epoch = 0
    if ckpt_path.exists() and state_path.exists():
        config_path = out / "config.json"
        saved_config = json.loads(config_path.read_text()) if config_path.exists() else None
        # Through ModelConfig, so a folder written before a field existed reads its default.
        if saved_config is not None and ModelConfig(**saved_config) != config:
            raise SystemExit(
                f"{out}: holds a run of another model shape or dropout ({saved_config}); "
                "resume it with the same options or train into a new folder"
            )
        model.load_weights(ckpt_path)
        start_epoch = json.loads(state_path.read_text())["epoch"]
        restored = trainer.restore_optimizer(optimizer_path)
        print(
            f"resuming after epoch {start_epoch}"
            + ("" if restored else " (no optimizer state saved with it: Adam starts afresh)")
        )
        if trainer.head is not None and head_path.exists():
            with np.load(head_path) as saved:
                trainer.head.set_weights([saved["kernel"], saved["bias"]])
    elif init is not None and units != init_units:
        phone_model = build_model(replace(config, vocab_size=len(init_units.tokens)))
        phone_model.load_weights(init)
        carry_over_to_units(phone_model, model, units)
        print(f"starting from {init}, carried over to {len(units.tokens)} units")
    elif init is not None:
        model.load_weights(init)  # fine-tune from a pretrained model (e.g. a shipped bundle)
        print(f"starting from {init}")
    if targets is not None and trainer.head is not None and not head_path.exists():
        error = trainer.fit_head(data, targets, max_frames)
        print(f"distillation head fitted: mean squared error {error:.3f}")
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    history = out / "history.csv"
    print(f"{len(data)} training utterances, {model.count_params()} parameters")
    if dev_data is not None:
        # Trace the evaluation now: autograph reads this file's source when it first traces a
        # step, so an edit made while a long run trains would otherwise crash it at the end
        # of its first epoch (train_step is traced by the first batch, just below).
        first = make_batches(dev_data.lengths(), max_frames, np.random.default_rng(0))[0]
        trainer.eval_step(*collate(dev_data, first, None))
    for epoch in range(start_epoch, epochs):
        # Each epoch's shuffle and augmentation from its own seed: a resumed run draws what
        # an unbroken one would have, not epoch 1's draws again.
        rng = np.random.default_rng([seed, epoch])
        progress = epoch / max(epochs - 1, 1)
        # Two warm-up epochs from scratch; none when fine-tuning trained weights.
        warm = 1.0 if init is not None else min(1.0, (epoch + 1) / 2)
        trainer.lr.assign(lr * warm * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress))))
        batches = make_batches(data.lengths(), max_frames, rng)
        sums, n, t0 = np.zeros(4), 0, time.time()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}")
        for idx in bar:
            measured = trainer.train_step(*collate(data, idx, rng, targets, bucket_padding))
            sums += np.array([float(v) for v in measured]) * len(idx)
            n += len(idx)
            bar.set_postfix(
                att=f"{sums[0] / n:.3f}", ctc=f"{sums[1] / n:.3f}", acc=f"{sums[2] / n:.3f}"
            )
        row = {
            "epoch": epoch + 1,
            "lr": float(trainer.lr.numpy()),
            "seconds": round(time.time() - t0, 1),
            "train_att": sums[0] / n,
            "train_ctc": sums[1] / n,
            "train_acc": sums[2] / n,
        }
        if targets is not None:
            row["train_distill"] = sums[3] / n
        if dev_data is not None:
            row.update(
                zip(
                    ("dev_att", "dev_ctc", "dev_acc"),
                    evaluate(trainer, dev_data, max_frames),
                    strict=True,
                )
            )
        print(json.dumps(row))
        new_file = not history.exists()
        with open(history, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        model.save_weights(ckpt_path)
        trainer.save_optimizer(optimizer_path)
        if trainer.head is not None:
            kernel, bias = trainer.head.get_weights()
            np.savez(head_path, kernel=kernel, bias=bias)
        if average > 1:  # keep the epochs that will be averaged
            shutil.copyfile(ckpt_path, out / f"epoch{epoch + 1}.weights.h5")
            (out / f"epoch{epoch + 1 - average}.weights.h5").unlink(missing_ok=True)
        state_path.write_text(json.dumps({"epoch": epoch + 1}))
    if average <= 1:
        return ckpt_path
    averaged = average_checkpoints(model, out, epochs, average)
    if dev_data is not None:
        dev = evaluate(trainer, dev_data, max_frames)
        names = ("dev_att", "dev_ctc", "dev_acc")
        print("averaged: " + json.dumps(dict(zip(names, dev, strict=True))))
    return averaged


def average_checkpoints(model: Recogniser, out: Path, last_epoch: int, count: int) -> Path:
    """The mean of the last ``count`` epochs' weights: a flatter optimum than any one of
    them, usually a little better on unseen speakers, at no cost at runtime."""
    paths = [out / f"epoch{e}.weights.h5" for e in range(last_epoch - count + 1, last_epoch + 1)]
    paths = [p for p in paths if p.exists()]
    if not paths:
        return out / "ckpt.weights.h5"
    averaged = mean_of_checkpoints(model, paths, out / "averaged.weights.h5")
    print(f"averaged epochs {', '.join(p.stem.split('.')[0] for p in paths)} into {averaged}")
    return averaged


def mean_of_checkpoints(model: Recogniser, paths: list[Path], out: Path) -> Path:
    """Saves the element-wise mean of the weights in ``paths`` (same architecture) to ``out``."""
    total = None
    for path in paths:
        model.load_weights(path)
        weights = [w.astype(np.float64) for w in model.get_weights()]
        total = weights if total is None else [a + b for a, b in zip(total, weights, strict=True)]
    assert total is not None
    model.set_weights([w / len(paths) for w in total])
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=Path, nargs="+", required=True)
    parser.add_argument("--dev", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-frames", type=int, default=12000, help="padded frames per batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, help="weights to start from (fine-tuning)")
    parser.add_argument("--average", type=int, default=1, help="average the last N epochs")
    parser.add_argument("--units", type=Path, help="phone-piece units (tools.learn_units)")
    defaults = ModelConfig()
    parser.add_argument(
        "--enc-units",
        type=int,
        default=defaults.enc_units,
        help="encoder GRU units per direction (a wider model must be trained from scratch)",
    )
    parser.add_argument("--dec-units", type=int, default=defaults.dec_units)
    parser.add_argument(
        "--dropout",
        type=float,
        default=defaults.dropout,
        help="dropout while training (encoder states, decoder embeddings and output)",
    )
    parser.add_argument(
        "--distill", type=float, default=0.0, help="weight of the tools.teacher targets' loss"
    )
    parser.add_argument(
        "--distill-layer",
        type=int,
        default=-1,
        help="encoder GRU layer whose states learn the targets (0: the first; -1: the top)",
    )
    parser.add_argument(
        "--bucket-padding",
        type=float,
        default=0.0,
        help="share of batches padded to the runtime's length bucket (3 s, 8 s), not 0-0.6 s",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.bucket_padding <= 1.0:
        parser.error(f"--bucket-padding must be between 0 and 1, not {args.bucket_padding}")
    if not 0.0 <= args.dropout < 1.0:
        parser.error(f"--dropout must be at least 0 and below 1, not {args.dropout}")
    train(
        args.sets,
        args.dev,
        args.out,
        args.epochs,
        args.lr,
        args.max_frames,
        replace(defaults, enc_units=args.enc_units, dec_units=args.dec_units, dropout=args.dropout),
        threads=args.threads,
        init=args.init,
        average=args.average,
        units=learn_units.load(args.units) if args.units else None,
        distill=args.distill,
        distill_layer=args.distill_layer,
        bucket_padding=args.bucket_padding,
    )


if __name__ == "__main__":
    main()
