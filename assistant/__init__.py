"""Offline voice-command assistant: VAD -> GRU + attention recogniser -> MQTT."""

import os

# numpy's only big product at runtime is the log-mel filterbank (300 x 257 @ 257 x 40): too
# small to gain from BLAS threads, which spin against the TFLite thread and any other load on
# a Pi (measured here under load: features p95 33 ms with 2 threads, 7 ms with one). Set
# before any module of this package imports numpy; a value the user exported wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
