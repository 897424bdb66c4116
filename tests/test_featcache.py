"""The feature cache: augmented copies are the same however often it is rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from shared_data import needs_shared_data

from assistant.features import num_frames
from tools.corpus import DEFAULT_DATA, read_manifest

ROOT = Path(__file__).resolve().parent.parent

BUILD = """
import sys
from pathlib import Path
from tools.corpus import load_noises, read_manifest
from tools.featcache import build
data = Path(sys.argv[1])
clips = [c for c in read_manifest(data) if c.corpus == "fsdd" and c.split == "train"][:3]
build(clips, 2, load_noises(data), workers=1).save(Path(sys.argv[2]))
"""


@needs_shared_data
def test_a_rebuilt_cache_holds_the_same_augmented_copies(tmp_path: Path) -> None:
    assert read_manifest(DEFAULT_DATA)  # the real recordings, not a stand-in
    outs = []
    for hash_seed in ("1", "2"):  # str hashes differ between these two processes
        out = tmp_path / f"set{hash_seed}.npz"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", BUILD, str(DEFAULT_DATA), str(out)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        outs.append(np.load(out))
    first, second = outs
    assert first["feats"].shape == second["feats"].shape
    np.testing.assert_array_equal(first["feats"], second["feats"])
    # The augmented copy (variant 1) really differs from the clean one (variant 0).
    offsets = first["offsets"]
    assert not np.array_equal(
        first["feats"][offsets[0] : offsets[1]], first["feats"][offsets[3] : offsets[4]]
    )


@needs_shared_data
def test_narrowband_copies_flatten_the_top_mel_bands() -> None:
    from tools.featcache import build

    clips = [c for c in read_manifest(DEFAULT_DATA) if c.corpus == "an4" and c.split == "train"]
    clips = clips[:3]
    wide = build(clips, 2, [], workers=1, first_variant=1)
    narrow = build(clips, 2, [], workers=1, narrow=True, first_variant=1)
    assert len(wide) == len(narrow) == 3  # variant 1 only: one augmented copy per clip
    assert narrow.texts == [c.text for c in clips]
    for i in range(3):
        top_wide = wide.item(i)[:, -8:].std(axis=0).mean()
        top_narrow = narrow.item(i)[:, -8:].std(axis=0).mean()
        # Above ~4.5 kHz only the faint codec floor is left: far less movement than speech.
        assert top_narrow < 0.6 * top_wide


@needs_shared_data
def test_streamed_copies_are_cut_as_the_daemon_cuts_them() -> None:
    from tools.featcache import build, variant_audio, variant_jobs
    from tools.streamed import as_streamed

    clips = [c for c in read_manifest(DEFAULT_DATA) if c.corpus == "an4" and c.split == "train"]
    clips = clips[:3]
    streamed = build(clips, 2, [], workers=1, first_variant=1, streamed=True)
    assert len(streamed) == 3 and streamed.texts == [c.text for c in clips]
    for i, (plain_job, job) in enumerate(
        zip(
            variant_jobs(clips, 2, first_variant=1),
            variant_jobs(clips, 2, first_variant=1, streamed=True),
            strict=True,
        )
    ):
        # Its own seed (another augmentation than the plain copy's), then the VAD's cut of it:
        # the pre-roll and hang-over of room around the words that the daemon hands over.
        assert job[2] != plain_job[2]
        cut = variant_audio(job)
        assert cut.size > 0.5 * 16000
        assert streamed.item(i).shape[0] == num_frames(cut.size)
        assert np.array_equal(cut, as_streamed(variant_audio((*job[:4], False))))
