"""A recording as the daemon hears it from a microphone: cut out of a stream by its VAD.

A corpus clip starts and ends where its recorder chose. The daemon's utterances start and end
where webrtcvad chose: its pre-roll before the first voiced frames, its hang-over of room
noise after the last. Scoring clips as recorded measures the model; scoring them as cut from a
stream measures what a user of the daemon gets (``tools.evaluate --channel stream``).

Each clip is played between a lead-in and a tail of its own room: noise of the colour and level
of its quietest quarter of frames (``assistant.edges.comfort_noise``; digital silence for a clip
whose quiet is digital silence), so the VAD meets no onset the recording did not hold. A clip
cut mid-speech has no room to copy and gets the recogniser's own stand-in (``room_of``).
"""

from __future__ import annotations

import numpy as np

from assistant.audio import frame_samples
from assistant.edges import FRAME as LEVEL_FRAME
from assistant.edges import comfort_noise, frame_levels_db, is_clean, loud_edges
from assistant.features import SAMPLE_RATE, to_float_pcm
from assistant.vad import Segmenter, VadSettings

# Long enough for the segmenter to learn the room's noise floor before the clip, and for its
# hang-over to run out after it.
LEAD_S, TAIL_S = 2.0, 1.0
# The room is the quietest quarter of the clip's frames, which is its background in nearly
# every clip. Its quietest tenth (edges.py's lead-in) is quieter than the background, which
# then becomes an onset that a real room never has (the VAD opened on 5 of the 11 dev
# keywords lost that way); the quieter half holds weak speech where the words fill the clip
# (6 dev keywords went unheard).
ROOM_SHARE = 0.25
# A clip whose quietest twentieth of frames lies under this was made in no room (a TTS engine's
# dither is ~-80 dBFS), or in one quieter than the VAD's floor minimum (assistant/vad.py, 20 dB
# of int16 power): its room is digital silence. Its quietest quarter would be speech where the
# words fill the clip: 38 of the 200 held-out TTS commands got a room of -70 to -42 dBFS,
# coloured like speech. tools.bench_asking's microphone then stepped from one turn's room to
# the next's, 20-30 dB louder, as a reply ended; the VAD's floor takes 3 s to learn a new
# level, so it heard that room as speech and ran the reply on into the next command.
NO_ROOM_DBFS = -70.0
DAEMON_VAD = VadSettings()  # the daemon's defaults


def room_of(clip: np.ndarray, size: int) -> np.ndarray:
    """``size`` samples of the room ``clip`` (float) was recorded in. A clip cut mid-speech
    (FSDD's are) holds no room of its own: its quietest frames are the ends of its words, and
    a room that loud would hide them from the VAD. It gets the stand-in the recogniser gives
    such a clip's missing lead-in (assistant/edges.py): digital silence where the clip is
    clean, else noise like its quietest tenth. A clip made in no room (NO_ROOM_DBFS) gets
    digital silence."""
    if clip.size < LEVEL_FRAME:  # not one frame to take a room from
        return np.zeros(size, np.float32)
    levels = frame_levels_db(clip)
    if np.percentile(levels, 5) < NO_ROOM_DBFS:
        return np.zeros(size, np.float32)
    frames = clip[: clip.size // LEVEL_FRAME * LEVEL_FRAME].reshape(-1, LEVEL_FRAME)
    if any(loud_edges(clip)):
        if is_clean(clip):
            return np.zeros(size, np.float32)
        return comfort_noise(frames, levels, size)
    return comfort_noise(frames, levels, size, ROOM_SHARE)


def vad_cuts(
    audio: np.ndarray,
    settings: VadSettings = DAEMON_VAD,
    lead_s: float = LEAD_S,
    tail_s: float = TAIL_S,
) -> list[np.ndarray]:
    """The utterances (int16) the daemon's segmenter cuts from ``audio`` (int16 or float)
    played between ``lead_s`` and ``tail_s`` of its own room (``room_of``)."""
    clip = to_float_pcm(np.asarray(audio)).reshape(-1)
    lead, tail = int(lead_s * SAMPLE_RATE), int(tail_s * SAMPLE_RATE)
    room = room_of(clip, lead + tail)
    played = np.concatenate([room[:lead], clip, room[lead:][::-1]])
    # x 32768: int16 audio comes back sample for sample
    pcm = np.clip(np.rint(played * 32768.0), -32768, 32767).astype(np.int16)
    segmenter = Segmenter(settings)
    step = frame_samples(settings.frame_ms)
    pcm = np.concatenate([pcm, np.zeros(-pcm.size % step, np.int16)])
    cuts = [u.pcm for at in range(0, pcm.size, step) if (u := segmenter.feed(pcm[at : at + step]))]
    if (last := segmenter.flush()) is not None:
        cuts.append(last.pcm)
    return cuts


def as_streamed(audio: np.ndarray, settings: VadSettings = DAEMON_VAD) -> np.ndarray:
    """The longest utterance the daemon would cut from ``audio`` (float), or no audio at all
    when its VAD hears no speech in it (the daemon would then recognise nothing)."""
    cuts = vad_cuts(audio, settings)
    if not cuts:
        return np.zeros(0, np.float32)
    return to_float_pcm(max(cuts, key=len))
