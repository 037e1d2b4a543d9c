"""Where the dashboards (and notebooks) may read, and the one folder they write to.

A *workspace* is two things:

- the **data folders**: the folders a dashboard may browse and read. By default
  the bundled example data (:data:`opso_nb.sample_data.DATA_DIR`) plus the
  folders named in ``$OPSO_NB_DATA`` (several joined with ``os.pathsep``, as in
  ``PATH``), which ``python -m opso_nb.apps --data ~/recordings`` sets. The
  output folder is readable too (trained models, demo data, earlier results).
- the **output folder**: every file a dashboard writes goes under it
  (:func:`default_output_dir`: ``$OPSO_NB_OUTPUT``, else ``opso_nb_runs`` at the
  root of a source checkout, else ``./opso_nb_runs``). Notebooks 04 and 05 use
  the same folder, so a model trained in a notebook is offered by the
  prediction explorer and the other way round.

Paths typed by a user are checked before anything is read or created: ``..``
that climbs out, absolute paths elsewhere, symbolic links that point outside,
over-long paths and NUL characters are refused with a :class:`PathRefused`
error whose message says why. Nothing is ever written inside the installed
package.

Examples
--------
>>> from opso_nb.workspace import Workspace
>>> ws = Workspace(data_dirs=[], output_dir="/tmp/opso_nb_example_runs")
>>> ws.output_path("ribbit/toad.json")
PosixPath('/tmp/opso_nb_example_runs/ribbit/toad.json')
>>> ws.output_path("../elsewhere.json")
Traceback (most recent call last):
...
opso_nb.workspace.PathRefused: '../elsewhere.json' is outside the output folder /tmp/opso_nb_example_runs; give a name relative to it, such as 'results/my_file'
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from opso_nb.annotations import pair_audio_and_tables
from opso_nb.audio import AudioLoadError, audio_info
from opso_nb.failures import failure_record, failures_frame
from opso_nb.files import is_audio_file, list_audio_files
from opso_nb.localization.coordinates import latlon_to_xy
from opso_nb.ml.training_run import TRAINING_LABELS_NAME, read_labels_table
from opso_nb.sample_data import DATA_DIR as BUNDLED_DATA_DIR
from opso_nb.utils import CLIP_INDEX, make_clip_df

__all__ = [
    "DATA_ENV", "OUTPUT_ENV", "OUTPUT_DIR_NAME", "PACKAGE_DIR", "PathRefused", "Workspace", "check_recordings",
    "default_output_dir", "source_checkout", "user_data_dirs",
]

#: Environment variable naming extra data folders (``os.pathsep``-separated).
DATA_ENV = "OPSO_NB_DATA"
#: Environment variable naming the output folder.
OUTPUT_ENV = "OPSO_NB_OUTPUT"
#: Name of the default output folder.
OUTPUT_DIR_NAME = "opso_nb_runs"
#: The installed ``opso_nb`` package: never written to.
PACKAGE_DIR = Path(__file__).resolve().parent

#: Longest path accepted (characters); Linux refuses longer ones anyway (PATH_MAX).
MAX_PATH_CHARS = 4096
#: Longest single file or folder name accepted (bytes; NAME_MAX on common file systems).
MAX_NAME_BYTES = 255


class PathRefused(ValueError):
    """A path a user typed is not allowed (outside the workspace, too long, malformed)."""


def source_checkout() -> Path | None:
    """Root of the source checkout opso_nb is imported from, or None for an installed package.

    A checkout is recognised by ``pyproject.toml`` and a ``notebooks`` folder next
    to the package folder.
    """
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def default_output_dir() -> Path:
    """The output folder shared by notebooks and dashboards (absolute; not created here).

    ``$OPSO_NB_OUTPUT`` if set; otherwise ``opso_nb_runs`` at the root of a source
    checkout (so notebooks, whose working folder is ``notebooks/``, and the
    dashboards, served from the root, agree); otherwise ``./opso_nb_runs`` in the
    current working folder.
    """
    env = os.environ.get(OUTPUT_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    checkout = source_checkout()
    return (checkout if checkout is not None else Path.cwd()) / OUTPUT_DIR_NAME


def user_data_dirs() -> list[Path]:
    """The data folders named in ``$OPSO_NB_DATA`` (absolute, in order; empty entries skipped)."""
    raw = os.environ.get(DATA_ENV, "")
    return [Path(p).expanduser().absolute() for p in raw.split(os.pathsep) if p.strip()]


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise PathRefused("the path contains a NUL character")
    if len(text) > MAX_PATH_CHARS:
        raise PathRefused(f"the path is {len(text)} characters long (at most {MAX_PATH_CHARS} are accepted)")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise PathRefused(f"a folder or file name in the path is longer than {MAX_NAME_BYTES} bytes "
                              f"({part[:40]}...)")


def _resolve(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base / path
    try:
        return path.resolve()  # follows symbolic links: a link pointing outside ends up outside
    except (OSError, RuntimeError) as err:  # RuntimeError: a symbolic-link loop
        raise PathRefused(f"{text!r} cannot be resolved ({err})") from None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 20] + "..." + text[-17:]


class Workspace:
    """The data folders a dashboard may read and the output folder it writes to.

    Parameters
    ----------
    data_dirs : list of str or Path, optional
        Folders users may browse (default: ``$OPSO_NB_DATA``). Missing ones are kept
        (they may appear later) but never created.
    output_dir : str or Path, optional
        Where everything is written (default :func:`default_output_dir`). Must not
        lie inside the installed package.
    include_bundled : bool
        Also allow the bundled example data (read only).

    Raises
    ------
    PathRefused
        The output folder lies inside the installed package.
    """

    def __init__(self, data_dirs=None, output_dir=None, include_bundled: bool = True):
        dirs = user_data_dirs() if data_dirs is None else [Path(d).expanduser() for d in data_dirs]
        roots = [Path(d).absolute().resolve() for d in dirs]
        if include_bundled:
            roots.append(BUNDLED_DATA_DIR.resolve())
        self.data_dirs: tuple[Path, ...] = tuple(dict.fromkeys(roots))
        out = Path(output_dir).expanduser() if output_dir is not None else default_output_dir()
        self.output_dir: Path = out.absolute().resolve()
        if _inside(self.output_dir, PACKAGE_DIR) or _inside(PACKAGE_DIR, self.output_dir):
            raise PathRefused(f"the output folder {self.output_dir} would be inside (or contain) the installed "
                              f"opso_nb package {PACKAGE_DIR}; choose another one")

    @classmethod
    def from_env(cls, extra_data_dirs=()) -> "Workspace":
        """The workspace of ``$OPSO_NB_DATA`` and ``$OPSO_NB_OUTPUT``, plus ``extra_data_dirs``.

        Dashboards built in Python with an explicit folder pass it here: code that
        names a folder is trusted to read it; only typed paths are checked.
        """
        extra = [Path(d).expanduser() for d in extra_data_dirs if d is not None and str(d) != ""]
        return cls(data_dirs=user_data_dirs() + extra)

    def __repr__(self):
        return f"Workspace(data_dirs={[str(d) for d in self.data_dirs]}, output_dir={str(self.output_dir)!r})"

    # ------------------------------------------------------------------ reading
    @property
    def readable_roots(self) -> tuple[Path, ...]:
        """Data folders plus the output folder."""
        return tuple(dict.fromkeys(self.data_dirs + (self.output_dir,)))

    @property
    def user_dirs(self) -> tuple[Path, ...]:
        """The data folders other than the bundled examples."""
        bundled = BUNDLED_DATA_DIR.resolve()
        return tuple(d for d in self.data_dirs if d != bundled)

    def start_folder(self, default) -> Path:
        """The folder a dashboard opens on: the first user data folder if one was named, else ``default``."""
        for d in self.user_dirs:
            if d.is_dir():
                return d
        return Path(default)

    def readable(self, path, kind: str | None = None) -> Path:
        """Check that ``path`` lies inside a data folder (or the output folder); return it resolved.

        Parameters
        ----------
        path : str or Path
            Absolute, or relative to the first data folder.
        kind : {"dir", "file", None}
            Also require an existing folder / file.

        Raises
        ------
        PathRefused
            Naming the path and the reason.
        """
        text = os.fspath(path)
        if not text.strip():
            raise PathRefused("no path given")
        _check_text(text)
        resolved = _resolve(text, self.data_dirs[0] if self.data_dirs else self.output_dir)
        if not any(_inside(resolved, root) for root in self.readable_roots):
            roots = ", ".join(str(r) for r in self.readable_roots)
            raise PathRefused(f"{_short(text)!r} is outside the data folders ({roots}); start the dashboards with "
                              f"`python -m opso_nb.apps --data FOLDER` to add a folder")
        if kind == "dir" and not resolved.is_dir():
            raise PathRefused(f"{_short(text)!r} is not a folder"
                              + (" (it is a file)" if resolved.exists() else " (nothing exists there)"))
        if kind == "file" and not resolved.is_file():
            raise PathRefused(f"{_short(text)!r} is not a file"
                              + (" (it is a folder)" if resolved.exists() else " (nothing exists there)"))
        return resolved

    def browse_choices(self, current=None) -> list[str]:
        """Folders offered for browsing: every data folder, the current folder, its parent and sub-folders.

        Only existing folders inside the workspace are listed (hidden ones skipped), sorted
        within each group; at most 200 sub-folders.
        """
        choices = [d for d in self.readable_roots if d.is_dir()]
        if current:
            try:
                here = self.readable(current, kind="dir")
            except PathRefused:
                here = None
            if here is not None:
                if here.parent != here and any(_inside(here.parent, r) for r in self.readable_roots):
                    choices.append(here.parent)
                choices.append(here)
                try:
                    subs = sorted(p for p in here.iterdir() if p.is_dir() and not p.name.startswith("."))
                except OSError:
                    subs = []
                choices.extend(subs[:200])
        return [str(p) for p in dict.fromkeys(choices)]

    # ------------------------------------------------------------------ writing
    def output_path(self, path) -> Path:
        """Check that ``path`` lies inside the output folder; return it resolved. Creates nothing.

        Parameters
        ----------
        path : str or Path
            Relative to the output folder (``"ribbit/toad.json"``), or absolute inside it.

        Raises
        ------
        PathRefused
            The path escapes the output folder (``..``, an absolute path elsewhere, a
            symbolic link pointing out), is the output folder itself, lies in the
            installed package, is too long or malformed.
        """
        text = os.fspath(path)
        if not text.strip():
            raise PathRefused("no file name given")
        _check_text(text)
        resolved = _resolve(text, self.output_dir)
        if not _inside(resolved, self.output_dir):
            raise PathRefused(f"{_short(text)!r} is outside the output folder {self.output_dir}; give a name "
                              f"relative to it, such as 'results/my_file'")
        if _inside(resolved, PACKAGE_DIR):
            raise PathRefused(f"{_short(text)!r} is inside the installed opso_nb package; refusing to write there")
        if resolved == self.output_dir:
            raise PathRefused("give a file or folder name inside the output folder, not the output folder itself")
        return resolved

    def prepare_output(self, path, folder: bool = False) -> Path:
        """:meth:`output_path`, then create the folders needed to write there (``folder``: the path itself too)."""
        resolved = self.output_path(path)
        (resolved if folder else resolved.parent).mkdir(parents=True, exist_ok=True)
        return resolved


def check_recordings(files, limit: int = 5000) -> tuple[list[str], pd.DataFrame]:
    """Read the header of each audio file; return (readable files, failures table).

    Only headers are read (:func:`opso_nb.audio.audio_info`), so a folder of long
    recordings is checked in moments. The failures table has the
    :mod:`opso_nb.failures` columns, one row per unreadable file with the reason
    (stage ``"load"``). Beyond ``limit`` files, the rest are returned unchecked.
    """
    files = [str(f) for f in files]
    good, failures = [], []
    for i, f in enumerate(files):
        if i >= limit:
            good.extend(files[i:])
            break
        try:
            audio_info(f)
        except AudioLoadError as err:
            failures.append(failure_record(f, err))
            continue
        good.append(f)
    return good, failures_frame(failures)


def audio_files_in(folder, recursive: bool = False) -> list[str]:
    """Audio files in ``folder`` (see :func:`opso_nb.files.list_audio_files`); [] if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [f for f in list_audio_files(folder, recursive=recursive) if is_audio_file(f)]


# ----------------------------------------------------------------------------- clips from a user's folder

#: Kinds of labelled (or unlabelled) clips a folder can provide, see :func:`clip_sources`.
CLASS_FOLDERS = "one sub-folder per class"
RAVEN_TABLES = "recordings with Raven tables"
RECORDINGS = "recordings (unlabelled clips)"


def clip_sources(folder) -> list[str]:
    """What :func:`load_clips` can read from ``folder``, most specific first.

    ``CLASS_FOLDERS`` when sub-folders hold audio files (each sub-folder's name is
    a class), ``RAVEN_TABLES`` when recordings are paired with annotation tables by
    name, the name of every CSV file in the folder (a clip-label table; a clip
    review's ``training_labels.csv`` first), and
    ``RECORDINGS`` when the folder holds audio files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(audio_files_in(s) for s in subs):
        out.append(CLASS_FOLDERS)
    recordings = audio_files_in(folder)
    if recordings and len(pair_audio_and_tables(folder).pairs):
        out.append(RAVEN_TABLES)
    # a review export's training table first: its folder also holds labels.csv, one row per answer (not 0/1)
    out.extend(sorted((p.name for p in folder.glob("*.csv") if p.is_file() and not p.name.startswith(".")),
                      key=lambda name: (name != TRAINING_LABELS_NAME, name)))
    if recordings:
        out.append(RECORDINGS)
    return out


def load_clips(folder, source: str, clip_duration: float, clip_overlap: float = 0.0,
               min_label_overlap: float = 0.25, max_files: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clips of ``folder`` as a clip table, and the files that could not be read.

    Parameters
    ----------
    folder : str or Path
    source : str
        One of :func:`clip_sources`: ``CLASS_FOLDERS`` (every recording in sub-folder
        ``c`` is cut into clips labelled 1 for class ``c``, 0 for the others),
        ``RAVEN_TABLES`` (recordings cut into clips, labelled from their boxes with
        :meth:`~opso_nb.annotations.BoxedAnnotations.one_hot_clip_labels`), a CSV file
        name (read with :func:`opso_nb.ml.training_run.read_labels_table`; relative
        paths are relative to the CSV) or ``RECORDINGS`` (clips without labels).
    clip_duration, clip_overlap : float
        Seconds.
    min_label_overlap : float
        Seconds of a box inside a clip for a label of 1 (``RAVEN_TABLES``).
    max_files : int, optional
        Use only the first recordings (previews).

    Returns
    -------
    (clips, failures)
        ``clips`` is indexed by (file, start_time, end_time) with one 0/1 column
        per class (none for ``RECORDINGS``); ``failures`` has the
        :mod:`opso_nb.failures` columns, one row per unreadable recording.

    Raises
    ------
    ValueError
        Naming the folder or table and the problem (no recordings, a malformed CSV).
    """
    folder = Path(folder)
    cut = dict(clip_duration=float(clip_duration), clip_overlap=float(clip_overlap))
    if source == CLASS_FOLDERS:
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = {s.name: audio_files_in(s) for s in subs}
        per_class = {c: f[:max_files] if max_files else f for c, f in per_class.items() if f}
        frames, failures = [], []
        for name, files in per_class.items():
            good, bad = check_recordings(files)
            failures.append(bad)
            clips = make_clip_df(good, **cut)
            for other in per_class:
                clips[other] = int(other == name)
            frames.append(clips)
        clips = pd.concat(frames) if frames else pd.DataFrame(columns=CLIP_INDEX).set_index(CLIP_INDEX)
        if not len(clips):
            raise ValueError(f"{folder}: no readable recording in its class sub-folders")
        return clips.astype(int), pd.concat(failures, ignore_index=True) if failures else failures_frame()
    if source == RAVEN_TABLES:
        pairing = pair_audio_and_tables(folder)
        pairs = pairing.pairs.iloc[:max_files] if max_files else pairing.pairs
        good, failures = check_recordings(pairs["audio_file"])
        if not good:
            raise ValueError(f"{folder}: none of the recordings with an annotation table can be read")
        keep = pairs[pairs["audio_file"].isin(good)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # boxes beyond a recording's end label no clip: expected
            boxes = type(pairing)(pairs=keep).load(errors="skip")
            clips = boxes.one_hot_clip_labels(min_label_overlap=min_label_overlap, audio_files=good, **cut)
        return clips.astype(int), failures
    if source == RECORDINGS:
        files = audio_files_in(folder)
        good, failures = check_recordings(files[:max_files] if max_files else files)
        if not good:
            raise ValueError(f"{folder}: no readable recording")
        return make_clip_df(good, **cut), failures
    table = folder / source
    if table.suffix.lower() != ".csv" or table.parent != folder or not table.is_file():
        raise ValueError(f"{source!r} is not a clip source of {folder} (choose one of {clip_sources(folder)})")
    clips = read_labels_table(table)
    if clips.index.nlevels == 1:  # file-level labels: one clip per whole file
        raise ValueError(f"{table}: the clip table needs start_time and end_time columns (seconds)")
    files = list(dict.fromkeys(clips.index.get_level_values("file")))
    good, failures = check_recordings(files)
    return clips[clips.index.get_level_values("file").isin(good)], failures


# ----------------------------------------------------------------------------- a recorder array in a folder

def _csv_columns(path: Path) -> set[str]:
    try:
        return {str(c).strip().lower() for c in pd.read_csv(path, nrows=0, skipinitialspace=True).columns}
    except Exception:  # not a readable CSV: simply not offered
        return set()


def array_tables(folder) -> tuple[list[str], list[str]]:
    """Names of the CSV files in ``folder`` that can be recorder positions, and those that can be detections.

    Positions have columns ``file`` and ``x``, ``y`` (metres) or ``lat``, ``lon``;
    detections have ``file``, ``start_time`` and ``end_time`` (plus one 0/1 column per class).
    """
    folder = Path(folder)
    positions, detections = [], []
    for csv in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        cols = _csv_columns(csv)
        if "file" in cols and ({"x", "y"} <= cols or {"lat", "lon"} <= cols):
            positions.append(csv.name)
        if {"file", "start_time", "end_time"} <= cols:
            detections.append(csv.name)
    return positions, detections


def _match_files(listed, folder: Path, table: Path) -> tuple[dict, list[str]]:
    """Map file names written in ``table`` to recordings: as written (relative to the table), else by base name."""
    by_name = {Path(f).name: f for f in audio_files_in(folder)}
    mapping, missing = {}, []
    for name in dict.fromkeys(str(f).strip() for f in listed):
        as_written = Path(name) if Path(name).is_absolute() else table.parent / name
        if as_written.is_file():
            mapping[name] = str(as_written.resolve())
        elif Path(name).name in by_name:
            mapping[name] = by_name[Path(name).name]
        else:
            missing.append(name)
    return mapping, missing


def _positions_in_metres(coords: pd.DataFrame, table: Path) -> tuple[pd.DataFrame, tuple | None]:
    """Recorder positions with numeric x, y[, z] in metres; lat/lon (degrees) converted around their mean.

    Returns the positions and the (lat, lon) of x = y = 0 (None when they were given in metres).

    Raises
    ------
    ValueError
        Naming the table and the recordings whose coordinates are missing, not numbers, or
        (for degrees) outside -90..90 / -180..180.
    """
    in_degrees = {"lat", "lon"} <= set(coords.columns) and not {"x", "y"} <= set(coords.columns)
    if not in_degrees and not {"x", "y"} <= set(coords.columns):
        raise ValueError(f"{table}: the recorder positions need columns x and y (metres) or lat and lon "
                         f"(degrees); it has {list(coords.columns)}")
    given = (["lat", "lon"] if in_degrees else ["x", "y"]) + (["z"] if "z" in coords.columns else [])
    values = coords[given].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1)
    if bad.any():
        names = [Path(f).name for f in values.index[bad]]
        raise ValueError(f"{table}: missing or non-numeric {'/'.join(given)} for {len(names)} recording(s): "
                         + ", ".join(names[:5]))
    coords = coords.copy()
    coords[given] = values
    if not in_degrees:
        return coords, None
    outside = (values["lat"].abs() > 90) | (values["lon"].abs() > 180)
    if outside.any():
        names = [Path(f).name for f in values.index[outside]]
        raise ValueError(f"{table}: lat must lie within -90..90 and lon within -180..180 degrees; not so for "
                         + ", ".join(names[:5]) + ". Are these metres? Then name the columns x and y.")
    reference = (float(values["lat"].mean()), float(values["lon"].mean()))
    coords["x"], coords["y"] = latlon_to_xy(values["lat"], values["lon"], *reference)
    return coords, reference


def read_array_folder(folder, positions_csv: str, detections_csv: str | None = None, clip_duration: float = 1.0,
                      max_clips: int = 5000) -> dict:
    """Recorder positions and detections of a folder of synchronized recordings, ready to localize.

    File names in the tables are matched to the recordings as written (relative to
    the table) or, failing that, by base name, so tables written on another computer
    still work. Without a detections table every clip of ``clip_duration`` seconds of
    every recording is a candidate (class ``"sound"``): the localization's
    cross-correlation and residual filters then decide.

    Positions in degrees (columns ``lat``, ``lon`` and no ``x``, ``y``) are converted
    to metres east (x) and north (y) of the recorders' mean position with
    :func:`opso_nb.localization.latlon_to_xy`; a ``z`` column stays in metres.

    Returns
    -------
    dict
        ``file_coords`` (indexed by recording path, columns x, y[, z] in metres, plus
        lat, lon when given), ``geo_reference`` ((lat, lon) in degrees of the point
        x = y = 0, or None for positions given in metres), ``detections`` (clip table,
        one 0/1 column per class), ``failures`` (unreadable recordings,
        :mod:`opso_nb.failures` columns) and ``missing`` (names in the tables without
        a recording).

    Raises
    ------
    ValueError
        A table cannot be read, has missing, non-numeric or out-of-range coordinates,
        names no recording, or there would be more than ``max_clips`` candidate clips.
    """
    folder = Path(folder)
    table = folder / positions_csv
    try:
        coords = pd.read_csv(table, skipinitialspace=True)
    except Exception as err:
        raise ValueError(f"{table}: cannot read the recorder positions ({err})") from None
    coords.columns = [str(c).strip().lower() for c in coords.columns]
    if "file" not in coords.columns:
        raise ValueError(f"{table}: the recorder positions need a 'file' column; it has {list(coords.columns)}")
    mapping, missing = _match_files(coords["file"], folder, table)
    good, failures = check_recordings(list(dict.fromkeys(mapping.values())))
    coords["file"] = coords["file"].astype(str).str.strip().map(mapping)
    coords = coords[coords["file"].isin(good)].set_index("file")
    if len(coords) < 2:
        raise ValueError(f"{table}: fewer than two listed recordings exist in {folder} and can be read "
                         f"(missing: {missing[:5]})")
    coords, geo_reference = _positions_in_metres(coords, table)
    if detections_csv:
        det_table = folder / detections_csv
        try:
            det = pd.read_csv(det_table, skipinitialspace=True)
        except Exception as err:
            raise ValueError(f"{det_table}: cannot read the detections ({err})") from None
        det.columns = [str(c).strip() for c in det.columns]
        det_map, det_missing = _match_files(det["file"], folder, det_table)
        missing += [m for m in det_missing if m not in missing]
        det["file"] = det["file"].astype(str).str.strip().map(det_map)
        detections = det[det["file"].isin(coords.index)].set_index(CLIP_INDEX)
    else:
        detections = make_clip_df(list(coords.index), clip_duration)
        if len(detections) > max_clips:
            raise ValueError(f"{len(detections)} clips of {clip_duration} s to localize (at most {max_clips}): "
                             "give a detections table, or a longer clip length")
        detections["sound"] = 1
    return {"file_coords": coords, "geo_reference": geo_reference, "detections": detections, "failures": failures,
            "missing": missing}
