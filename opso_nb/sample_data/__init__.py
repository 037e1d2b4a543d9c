"""Example recordings and annotation tables that ship with opso_nb.

Nothing is downloaded: every file lives in this folder (see ``ATTRIBUTION.md`` for
sources and licences). Each loader returns a :class:`pathlib.Path`; pass it to
:meth:`opso_nb.audio.Audio.from_file` to load the audio.

Examples
--------
>>> from opso_nb import sample_data
>>> from opso_nb.audio import Audio
>>> audio = Audio.from_file(sample_data.birds())
>>> round(audio.duration, 2)
10.13
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

#: Folder that holds all bundled example data.
DATA_DIR = Path(__file__).resolve().parent


def path(relative: str) -> Path:
    """Return the absolute path of a bundled file, e.g. ``path("toads/gpt1.mp3")``.

    Raises
    ------
    FileNotFoundError
        If no bundled file has that relative path.
    """
    full = DATA_DIR / relative
    if not full.exists():
        raise FileNotFoundError(f"no bundled example file {relative!r} in {DATA_DIR}")
    return full


def birds() -> Path:
    """10.1 s, 32 kHz field recording with several birds singing (Pennsylvania)."""
    return path("soundscapes/birds_10s.wav")


def audiomoth_1min() -> Path:
    """60 s, 32 kHz AudioMoth soundscape with AudioMoth metadata in its header."""
    return path("soundscapes/audiomoth_1min.wav")


def audiomoth_metadata() -> Path:
    """15 s, 32 kHz AudioMoth recording (device 24526B065D325963, 2020-04-04 10:25 UTC)."""
    return path("soundscapes/audiomoth_metadata.wav")


def ruffed_grouse() -> Path:
    """10 s of ruffed grouse drumming: an accelerating pulse train near 50-100 Hz."""
    return path("soundscapes/rugr_drum.wav")


def soundscapes_folder() -> Path:
    """Folder of short soundscapes, the default folder of the spectrogram explorer."""
    return DATA_DIR / "soundscapes"


def annotated_recording() -> tuple[Path, Path]:
    """A 10 s dawn-chorus recording and its Raven selection table (``Species`` column).

    Returns
    -------
    (audio_path, table_path)
    """
    return (
        path("annotated/Recording_1_Segment_07-snippet.wav"),
        path("annotated/Recording_1_Segment_07-snippet.Table.1.selections.txt"),
    )


def toads_folder() -> Path:
    """Folder of 10 s, 48 kHz AudioMoth MP3s: Great Plains toad trills (``gpt*.mp3``) and negatives."""
    return DATA_DIR / "toads"


def toad_positives() -> list[Path]:
    """MP3s containing Great Plains toad trills (pulse rate about 15-20 pulses/s)."""
    return sorted(toads_folder().glob("gpt*.mp3"))


def toad_negatives() -> list[Path]:
    """MP3s from the same site without Great Plains toads (incl. pops, water, silence)."""
    return sorted(p for p in toads_folder().glob("*.mp3") if not p.name.startswith("gpt"))


def localization_folder() -> Path:
    """Six 1 s clips from a synchronized 3-D recorder array plus coordinate/detection CSVs."""
    return DATA_DIR / "localization"


def localization_array() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bundled recorder array's positions and detections, ready for ``SynchronizedRecorderArray``.

    The CSVs ship as OpenSoundscape's tests have them (paths under
    ``tests/audio/``, one row for a ``veryshort.wav`` that is not bundled, and
    a late-start copy of recorder 8 for the synchronisation example); here the
    paths point into the package and only the six synchronized recordings
    that ship are kept.

    Returns
    -------
    file_coords : DataFrame
        Columns ``file, x, y, z`` (m).
    detections : DataFrame
        Clip table indexed by ``(file, start_time, end_time)`` (s), one 0/1
        column per class (``zeep``).
    """
    folder = localization_folder()
    coords = pd.read_csv(folder / "LOCA_2021_aru_coords.csv", skipinitialspace=True)
    detections = pd.read_csv(folder / "LOCA_2021_detections.csv", skipinitialspace=True)
    for table in (coords, detections):
        table["file"] = [str(folder / Path(f).name) for f in table["file"]]
    coords = coords[[Path(f).exists() and not f.endswith("_late_start.wav") for f in coords["file"]]]
    coords = coords.reset_index(drop=True)
    detections = detections[detections["file"].isin(coords["file"])]
    return coords, detections.set_index(["file", "start_time", "end_time"])


def corrupt_folder() -> Path:
    """Deliberately broken WAV files, for demonstrating and testing error handling."""
    return DATA_DIR / "corrupt"


def write_broken_examples(folder) -> list[Path]:
    """Write three broken files that the bundled ``corrupt`` folder lacks, for demonstrating error messages.

    Deterministic (always the same bytes):

    * ``lying_header.wav``: a 16 KB WAV whose header claims 2,147,483,647 Hz
      (padding a 1 s clip of it would need 8 GiB);
    * ``nan_samples.wav``: 2 s of 32-bit float audio with a NaN at 1.5 s;
    * ``field_notes.mp3``: a text file with an audio name.

    Parameters
    ----------
    folder : str or Path
        Where to write them (created if needed).

    Returns
    -------
    list of Path
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rate = 2_147_483_647
    samples = (np.sin(np.arange(8000) / 5) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (rate * 2) % 2**32, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    lying = folder / "lying_header.wav"
    lying.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    values = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16000) / 8000)).astype(np.float32)
    values[12000] = np.nan
    nan_file = folder / "nan_samples.wav"
    soundfile.write(nan_file, values, 8000, subtype="FLOAT")
    notes = folder / "field_notes.mp3"
    notes.write_text("Site 4, 05:12: wood thrush, ovenbird; recorder battery low\n" * 20)
    return [lying, nan_file, notes]
