"""Offline voice-command assistant: VAD -> GRU + attention recogniser -> MQTT."""

__version__ = "0.1.0"
