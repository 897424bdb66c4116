"""Training, export, evaluation and benchmarking tools (need the `train` extra)."""
