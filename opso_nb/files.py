"""Which files are audio, and listing them in folders: one definition for all of opso_nb.

A leaf module (imports nothing from opso_nb) so that audio loading, annotation
pairing, RIBBIT, prediction, localization, batch runs and dashboards all agree
on what "the audio files in this folder" means.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["AUDIO_EXTENSIONS", "is_audio_file", "list_audio_files"]

#: Extensions (lower case) that opso_nb treats as audio when listing folders.
#: Every one is decoded by libsndfile (through ``soundfile``).
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aif", ".aiff")


def is_audio_file(path, extensions=AUDIO_EXTENSIONS) -> bool:
    """True if ``path``'s extension (case-insensitive) is one of ``extensions`` and it is not a hidden file."""
    p = Path(path)
    return p.suffix.lower() in extensions and not p.name.startswith(".")


def list_audio_files(where, recursive: bool = False, extensions=AUDIO_EXTENSIONS) -> list[str]:
    """Audio files in a folder (sorted), or the given file(s) unchanged.

    Parameters
    ----------
    where : str, Path, or iterable of them
        A folder (searched for ``extensions``; hidden files are skipped), one
        file, or a list of files (returned as strings, in order).
    recursive : bool
        Search sub-folders too.
    extensions : tuple of str
        Lower-case extensions with the dot.

    Raises
    ------
    FileNotFoundError
        ``where`` is a single path that does not exist.
    """
    if isinstance(where, (str, os.PathLike)):
        path = Path(where)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            return sorted(str(p) for p in path.glob(pattern) if p.is_file() and is_audio_file(p, extensions))
        if not path.exists():
            raise FileNotFoundError(f"{where}: no such file or folder")
        return [str(where)]
    return [str(p) for p in where]
