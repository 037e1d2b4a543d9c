"""Pairing audio files with their annotation tables by name, and loading whichever kind of table it is."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from opso_nb.annotations.boxed import BoxedAnnotations
from opso_nb.annotations.raven import is_raven_table
from opso_nb.files import AUDIO_EXTENSIONS, list_audio_files

__all__ = ["FilePairing", "load_table", "pair_audio_and_tables", "table_stem"]

_TABLE_SUFFIX = re.compile(
    r"(\.table\.\d+)?(\.selections\d*)?(\.annotations)?\.txt$", flags=re.IGNORECASE
)
_TABLE_EXTENSIONS = (".txt",)


def table_stem(path) -> str:
    """Name of an annotation table without Raven's suffixes.

    Examples
    --------
    >>> table_stem("site1/20200401_0500.Table.1.selections.txt")
    '20200401_0500'
    >>> table_stem("a.b.selections.txt")
    'a.b'
    """
    return _TABLE_SUFFIX.sub("", Path(path).name)


def load_table(path, audio_file=None, **kwargs) -> BoxedAnnotations:
    """Load one annotation table, Raven selection table or Audacity label track (detected from the header).

    Keyword arguments go to :meth:`BoxedAnnotations.from_raven_files` (only
    ``lowercase_labels`` and ``errors`` apply to Audacity files).
    """
    audio = [audio_file] if audio_file is not None else None
    if is_raven_table(path) or not Path(path).is_file():
        # not a readable file: from_raven_files says why (missing, folder, pipe ...)
        return BoxedAnnotations.from_raven_files([path], audio_files=audio, **kwargs)
    keep = {k: v for k, v in kwargs.items() if k in ("lowercase_labels", "errors")}
    return BoxedAnnotations.from_audacity([path], audio_files=audio, **keep)


@dataclass
class FilePairing:
    """Audio files paired with their annotation tables by name.

    Attributes
    ----------
    pairs : pandas.DataFrame
        Index ``stem``; columns ``audio_file`` and ``annotation_file``.
    audio_without_table : list of str
        Audio files no table matched.
    tables_without_audio : list of str
        Tables no audio file matched.
    ambiguous : pandas.DataFrame
        Columns ``stem, kind, file``: names shared by more than one audio file
        or table; those are left unpaired for a person to resolve.
    """

    pairs: pd.DataFrame
    audio_without_table: list = field(default_factory=list)
    tables_without_audio: list = field(default_factory=list)
    ambiguous: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["stem", "kind", "file"]))

    def __repr__(self) -> str:
        return (
            f"FilePairing({len(self.pairs)} pairs, {len(self.audio_without_table)} audio without table, "
            f"{len(self.tables_without_audio)} tables without audio, "
            f"{self.ambiguous['stem'].nunique()} ambiguous names)"
        )

    def load(self, **kwargs) -> BoxedAnnotations:
        """Load all pairs: Raven tables with :meth:`BoxedAnnotations.from_raven_files`, other
        ``.txt`` files as Audacity label tracks. Keyword arguments go to ``from_raven_files``.
        """
        objects = [
            load_table(t, audio_file=a, **kwargs)
            for a, t in zip(self.pairs["audio_file"], self.pairs["annotation_file"])
        ]
        if not objects:
            return BoxedAnnotations(audio_files=[])
        return BoxedAnnotations.concat(objects)


def _list(where, extensions, recursive) -> list:
    # list_audio_files lists any extensions; here it also finds the .txt tables
    return [] if where is None else list_audio_files(where, recursive=recursive, extensions=extensions)


def pair_audio_and_tables(
    audio, tables=None, audio_extensions=AUDIO_EXTENSIONS, recursive: bool = False
) -> FilePairing:
    """Pair audio files with annotation tables whose names match.

    ``rec1.wav`` pairs with ``rec1.Table.1.selections.txt``, ``rec1.selections.txt``
    or ``rec1.txt``. Names are compared exactly (case-sensitive).

    Parameters
    ----------
    audio : folder or list of files
        Audio files (a folder is searched for ``audio_extensions``; default
        :data:`opso_nb.files.AUDIO_EXTENSIONS`).
    tables : folder or list of files, optional
        Tables (``.txt``); default: the ``.txt`` files in the folder(s) of the audio.
    recursive : bool
        Search folders recursively.

    Returns
    -------
    FilePairing
        Pairs plus everything that could not be paired (never silently dropped).
    """
    audio_list = _list(audio, tuple(e.lower() for e in audio_extensions), recursive)
    if tables is None:
        # default: look for tables next to the audio files
        folders = [audio] if isinstance(audio, (str, os.PathLike)) and Path(audio).is_dir() else sorted(
            {str(Path(f).parent) for f in audio_list})
        table_list = sorted({t for d in folders for t in _list(d, _TABLE_EXTENSIONS, recursive)})
    else:
        table_list = _list(tables, _TABLE_EXTENSIONS, recursive)
    a = pd.DataFrame({"stem": [Path(f).stem for f in audio_list], "file": audio_list})
    t = pd.DataFrame({"stem": [table_stem(f) for f in table_list], "file": table_list})
    amb_a = a[a["stem"].duplicated(keep=False)].assign(kind="audio")
    amb_t = t[t["stem"].duplicated(keep=False)].assign(kind="table")
    ambiguous = pd.concat([amb_a, amb_t], ignore_index=True)[["stem", "kind", "file"]]
    bad = set(ambiguous["stem"])
    a1 = a[~a["stem"].isin(bad)].set_index("stem")["file"].rename("audio_file")
    t1 = t[~t["stem"].isin(bad)].set_index("stem")["file"].rename("annotation_file")
    joined = pd.concat([a1, t1], axis=1)
    pairs = joined.dropna().sort_index()
    pairs.index.name = "stem"
    return FilePairing(
        pairs=pairs,
        audio_without_table=sorted(joined.loc[joined["annotation_file"].isna(), "audio_file"]),
        tables_without_audio=sorted(joined.loc[joined["audio_file"].isna(), "annotation_file"]),
        ambiguous=ambiguous,
    )
