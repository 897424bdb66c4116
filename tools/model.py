"""The recogniser's network, defined once for training and for export.

Encoder: log-mel -> two stride-2 convolutions (4x fewer frames, 40 ms per step) -> projection
-> two bidirectional GRU layers. A CTC head on the encoder (training only) teaches it
alignments early. Decoder: GRU over previous tokens with Luong ("general") attention over the
encoder states; no input feeding, so teacher-forced training runs over all steps at once and
inference is one small graph per step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from assistant.lexicon import EOS, PAD, TOKENS
from assistant.units import WORD_START, Units

# Input frames (10 ms) the runtime pads an utterance to, the shortest that holds it: 3 s, 8 s.
LENGTH_BUCKETS = (300, 800)


@dataclass(frozen=True)
class ModelConfig:
    n_mels: int = 40
    conv_channels: int = 32
    proj_dim: int = 128
    enc_units: int = 96  # per direction
    enc_layers: int = 2
    embed_dim: int = 64
    dec_units: int = 160
    vocab_size: int = len(TOKENS)
    # Dropout while training only (on the projection, every encoder layer's states, the
    # decoder's token embeddings and its combined output); no weights, so a model trained with
    # it loads and exports exactly like one trained without.
    dropout: float = 0.0

    @property
    def enc_dim(self) -> int:
        return 2 * self.enc_units

    def to_dict(self) -> dict:
        return asdict(self)


class Recogniser(keras.Model):
    def __init__(self, config: ModelConfig, unroll: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        c = config
        self.conv1 = layers.Conv2D(c.conv_channels, 3, strides=2, padding="same", activation="relu")
        self.conv2 = layers.Conv2D(c.conv_channels, 3, strides=2, padding="same", activation="relu")
        self.proj = layers.Dense(c.proj_dim, activation="relu")
        self.enc_rnns = [
            layers.Bidirectional(layers.GRU(c.enc_units, return_sequences=True, unroll=unroll))
            for _ in range(c.enc_layers)
        ]
        self.ctc_head = layers.Dense(c.vocab_size + 1)  # last index = CTC blank
        self.attn_keys = layers.Dense(c.dec_units, use_bias=False)  # Luong "general" W
        self.embed = layers.Embedding(c.vocab_size, c.embed_dim)
        self.dec_cell = layers.GRUCell(c.dec_units)
        self.dec_rnn = layers.RNN(self.dec_cell, return_sequences=True)
        self.combine = layers.Dense(c.dec_units, activation="tanh")
        self.out = layers.Dense(c.vocab_size)
        self.drop = layers.Dropout(c.dropout)

    # -- encoder -------------------------------------------------------------------------
    def encode(self, feats, training=False, run_bigru=None):
        """feats [B, T, n_mels] -> (encoder states [B, T', enc_dim], keys [B, T', dec_units]).
        ``run_bigru(x, layer)``, when given, computes each bidirectional GRU layer in its place
        (the export's TFLite-friendly loop, tools/export.py); Keras runs them otherwise."""
        x = feats[..., None]
        x = self.conv1(x)
        x = self.conv2(x)
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], x.shape[2] * x.shape[3]])
        x = self.drop(self.proj(x), training=training)
        for rnn in self.enc_rnns:
            x = run_bigru(x, rnn) if run_bigru else rnn(x, training=training)
            x = self.drop(x, training=training)
        return x, self.attn_keys(x)

    # -- decoder -------------------------------------------------------------------------
    @staticmethod
    def attention_weights(dec_h, keys, enc_mask):
        """Each decoder state's weights over the encoder steps [B, U, T']: Luong scores
        against the keys, padding masked out, softmax over time."""
        scores = tf.einsum("buh,bth->but", dec_h, keys)
        scores += (1.0 - enc_mask[:, None, :]) * -1e9
        return tf.nn.softmax(scores, axis=-1)

    def attend(self, dec_h, enc, keys, enc_mask, training=False):
        """dec_h [B, U, H]; enc [B, T', D]; keys [B, T', H]; enc_mask [B, T'] (1 = real)."""
        weights = self.attention_weights(dec_h, keys, enc_mask)
        context = tf.einsum("but,btd->bud", weights, enc)
        combined = self.combine(tf.concat([dec_h, context], axis=-1))
        return self.out(self.drop(combined, training=training))

    def decode_teacher_forced(self, prev_tokens, enc, keys, enc_mask, training=False):
        embedded = self.drop(self.embed(prev_tokens), training=training)
        dec_h = self.dec_rnn(embedded, training=training)
        return self.attend(dec_h, enc, keys, enc_mask, training=training)

    def decode_step(self, tokens, state, enc, keys, enc_mask):
        """One step for a beam: tokens [B], state [B, H]; enc/keys/mask of batch 1 (shared).
        The beam's rows attend as the query steps of one utterance ([1, B, H]), not as B
        copies of it: the same numbers, and the step graph no longer copies the encoder
        states per row (0.35 -> 0.04 ms per invoke at 13 rows over 3 s, int8, one thread)."""
        h, _ = self.dec_cell(self.embed(tokens), [state])
        logits = self.attend(h[None], enc, keys, enc_mask)[0]
        return tf.nn.log_softmax(logits), h

    def encode_layers(self, feats, training=False):
        """encode's (states, keys) and the states of every GRU layer, first to top (what
        distillation reads, tools/train.py)."""
        layers_seen = []

        def run_bigru(x, rnn):
            layers_seen.append(rnn(x, training=training))
            return layers_seen[-1]

        enc, keys = self.encode(feats, training=training, run_bigru=run_bigru)
        return enc, keys, layers_seen

    def forward(self, inputs, training=False, layer=-1):
        """(attention logits, CTC logits, the states of encoder GRU layer ``layer``)."""
        feats, prev_tokens, enc_mask = inputs
        enc, keys, layers_seen = self.encode_layers(feats, training=training)
        logits = self.decode_teacher_forced(prev_tokens, enc, keys, enc_mask, training=training)
        return logits, self.ctc_head(enc), layers_seen[layer]

    def call(self, inputs, training=False):
        logits, ctc_logits, _ = self.forward(inputs, training=training)
        return logits, ctc_logits


def carry_over_to_units(source: Recogniser, target: Recogniser, units: Units) -> None:
    """Start a piece-unit model (``target``) from a trained phone model (``source``): every
    layer but the three that are sized by the vocabulary is copied; a piece's embedding and
    output weights start as the mean of its phones' (a word's first piece also has "|" in
    the mean), so the decoder begins from what it knew instead of from noise."""
    phones = Units.phones()

    def members(token: str) -> list[int]:
        if token in (PAD, EOS):
            return [phones.index[token]]
        ids = [phones.index[p] for p in token.lstrip(WORD_START).split()]
        return [phones.boundary_id, *ids] if token.startswith(WORD_START) else ids

    groups = [members(t) for t in units.tokens]
    for src_layer, dst_layer in zip(source.layers, target.layers, strict=True):
        if src_layer is source.embed:
            (table,) = src_layer.get_weights()
            dst_layer.set_weights([np.stack([table[g].mean(0) for g in groups])])
        elif src_layer is source.out or src_layer is source.ctc_head:
            kernel, bias = src_layer.get_weights()
            rows = groups + ([[len(phones.tokens)]] if src_layer is source.ctc_head else [])
            dst_layer.set_weights(
                [
                    np.stack([kernel[:, g].mean(1) for g in rows], axis=1),
                    np.array([bias[g].mean() for g in rows]),
                ]
            )
        else:
            dst_layer.set_weights(src_layer.get_weights())
