"""The run store's contract: parts, records, settings, resume, retry/quarantine, locking, names, modes, temp files."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from opso_nb.failures import FAILURE_COLUMNS, failure_record
from opso_nb.store import (
    RunSettingsChanged,
    RunStore,
    SettingsChanged,
    StoreLocked,
    make_clip_index,
    process_files,
    remove_stale_temp_files,
    utf8_name,
)
from opso_nb.utils import atomic_path, atomic_write

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["frog", "bird"]
SETTINGS = {"model": "abc", "clip": 2.0, "nested": {"band": [0, 4000]}}


def make_input(folder: Path, name: str, n_bytes: int = 100) -> str:
    path = folder / name
    path.write_bytes(b"x" * n_bytes)
    return str(path)


def table_for(file: str, n: int, offset: float = 0.0) -> pd.DataFrame:
    """n clips of 2 s with known values: frog = offset + clip number, bird = -that."""
    starts = np.arange(n) * 2.0
    index = make_clip_index([file] * n, starts, starts + 2.0)
    values = offset + np.arange(n, dtype=np.float32)
    return pd.DataFrame({"frog": values, "bird": -values}, index=index).astype(np.float32)


def run_script(code: str, timeout=120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the worktree importable."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


# ----------------------------------------------------------------------------- writing and reading
def test_write_read_round_trip_and_parts_read_as_one_dataset(tmp_path):
    files = [make_input(tmp_path, f"rec{i}.wav") for i in range(3)]
    with RunStore.open(tmp_path / "out", SETTINGS, job="predict", columns=COLUMNS) as run:
        assert [run.is_done(f) for f in files] == [False] * 3
        for i, f in enumerate(files):
            run.begin(f)
            failures = [failure_record(f, "ValueError: bad clip", 4.0, 6.0, stage="preprocess")] if i == 1 else []
            run.write(f, table_for(f, 3 + i, offset=10 * i), failures)
        assert all(run.is_done(f) for f in files)
        # in finishing order by default; in the order asked for with files=
        table, failures = run.read()
        assert table.index.get_level_values("file").unique().tolist() == files
        reordered, _ = run.read(files=[files[2], files[0]])
        assert reordered.index.get_level_values("file").unique().tolist() == [files[2], files[0]]
    expected = pd.concat([table_for(f, 3 + i, offset=10 * i) for i, f in enumerate(files)])
    pd.testing.assert_frame_equal(table, expected)
    assert list(failures.columns) == FAILURE_COLUMNS
    assert failures.values.tolist() == [[files[1], 4.0, 6.0, "preprocess", "ValueError: bad clip"]]
    # the parts folder is one dataset for pandas, pyarrow and dask, with the clip-table columns
    parts = run.parts_folder
    by_pandas = pd.read_parquet(parts).set_index(["file", "start_time", "end_time"]).sort_index()
    pd.testing.assert_frame_equal(by_pandas, expected.sort_index(), check_index_type=False)
    schema = pads.dataset(parts).schema
    assert schema.names == ["file", "start_time", "end_time", "frog", "bird"]
    assert str(schema.field("frog").type) == "float" and str(schema.field("start_time").type) == "double"
    dd = pytest.importorskip("dask.dataframe")
    by_dask = dd.read_parquet(str(parts)).compute().set_index(["file", "start_time", "end_time"]).sort_index()
    pd.testing.assert_frame_equal(by_dask, expected.sort_index(), check_dtype=False, check_index_type=False)
    # read-only access after the run closed gives the same, with failures.csv written at close
    again, failures_again = RunStore.existing(tmp_path / "out").read()
    pd.testing.assert_frame_equal(again, table)
    assert pd.read_csv(run.folder / "failures.csv")["file"].tolist() == [files[1]]


def test_csv_parts_empty_tables_and_failed_files(tmp_path):
    files = [make_input(tmp_path, f"rec{i}.wav") for i in range(3)]
    with RunStore.open(tmp_path / "out", SETTINGS, job="ribbit", columns=COLUMNS, dtype="float64",
                       format="csv") as run:
        run.write(files[0], table_for(files[0], 2, offset=0.125))
        run.write(files[1], None)  # no clips: done, no part
        run.fail(files[2], [failure_record(files[2], "AudioLoadError: empty", stage="load")])
        assert run.is_done(files[0]) and run.is_done(files[1])
        assert not run.is_done(files[2])  # whole-file failures are tried again by the next run
        assert run.summary() | {"folder": "", "fingerprint": ""} == {
            "folder": "", "fingerprint": "", "files_done": 2, "files_failed": 1, "files_quarantined": 0,
            "files_in_progress": 0, "rows": 2, "failures": 1}
    assert [p.name.endswith(".csv") for p in run.parts_folder.iterdir()] == [True]
    table, failures = RunStore.existing(tmp_path / "out").read(files)
    assert table.dtypes.tolist() == [np.float64, np.float64]
    pd.testing.assert_frame_equal(table, table_for(files[0], 2, offset=0.125).astype(np.float64))
    assert failures[["file", "stage"]].values.tolist() == [[files[2], "load"]]
    assert np.isnan(failures["start_time"].iloc[0])
    # nothing stored at all: an empty table with the value columns
    with RunStore.open(tmp_path / "empty", SETTINGS, job="x", columns=COLUMNS) as run:
        empty, no_failures = run.read()
    assert empty.shape == (0, 2) and list(empty.index.names) == ["file", "start_time", "end_time"]
    assert len(no_failures) == 0 and list(no_failures.columns) == FAILURE_COLUMNS


def test_done_means_unchanged_same_key_and_part_present(tmp_path):
    f = make_input(tmp_path, "a.wav")
    with RunStore.open(tmp_path / "out", SETTINGS, job="predict", columns=COLUMNS) as run:
        run.write(f, table_for(f, 2), key="clips-A")
        assert run.is_done(f, key="clips-A") and not run.is_done(f, key="clips-B")
        Path(f).write_bytes(b"y" * 100)  # same size, new modification time
        os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        assert not run.is_done(f, key="clips-A")
        run.write(f, table_for(f, 2), key="clips-A")
        next(run.parts_folder.iterdir()).unlink()
        assert not run.is_done(f, key="clips-A")
        missing = str(tmp_path / "gone.wav")
        run.write(missing, table_for(missing, 1))
        assert not run.is_done(missing)  # an input that cannot be checked never counts as unchanged


def test_appending_a_file_rewrites_nothing_else(tmp_path):
    files = [make_input(tmp_path, f"rec{i}.wav") for i in range(6)]
    out = tmp_path / "out"
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        for f in files[:5]:
            run.write(f, table_for(f, 4))
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        time.sleep(0.01)
        run.begin(files[5])
        run.write(files[5], table_for(files[5], 4))
        after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    new = set(after) - set(before)
    assert sorted(p.parent.name for p in new) == ["parts", "records"]  # one part, one record
    assert set(before) - set(after) == set()
    assert all(after[p] == before[p] for p in before), "an earlier file was rewritten"
    # closing compacts the records into manifest.json (once per run, not per file)
    assert not list(run.folder.joinpath("records").iterdir())
    assert RunStore.existing(out).summary()["files_done"] == 6


# ----------------------------------------------------------------------------- settings
def test_other_settings_start_a_new_run_or_are_refused(tmp_path):
    f = make_input(tmp_path, "a.wav")
    out = tmp_path / "out"
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        run.write(f, table_for(f, 2))
    changed = {**SETTINGS, "nested": {"band": [0, 3000]}}
    with pytest.raises(SettingsChanged, match=r"nested\.band: \[0,4000\] -> \[0,3000\]"):
        RunStore.open(out, changed, job="predict", columns=COLUMNS, on_change="refuse")
    with pytest.warns(RunSettingsChanged, match=r"nested\.band"):
        with RunStore.open(out, changed, job="predict", columns=COLUMNS) as other:
            assert other.folder != run.folder and not other.is_done(f)
            assert other.changes == ["nested.band: [0,4000] -> [0,3000]"]
            other.write(f, table_for(f, 2, offset=100))
    # the latest run is what readers open; each run keeps its own results
    assert RunStore.existing(out).read()[0]["frog"].tolist() == [100, 101]
    assert RunStore.existing(run.folder).read()[0]["frog"].tolist() == [0, 1]
    # the same settings again (key order does not matter) resume the first run
    with pytest.warns(RunSettingsChanged):
        with RunStore.open(out, dict(reversed(list(SETTINGS.items()))), job="predict", columns=COLUMNS) as again:
            assert again.folder == run.folder and again.is_done(f)
    # other jobs in the same folder are independent
    with RunStore.open(out, changed, job="ribbit", columns=["toad"]) as ribbit:
        assert ribbit.changes == []
    with pytest.raises(FileNotFoundError, match="no opso_nb"):
        RunStore.existing(tmp_path)


# ----------------------------------------------------------------------------- crashes
KILL_DURING = """
import os, signal, sys
from opso_nb.store import RunStore
run = RunStore.open(sys.argv[1], {settings!r}, job="predict", columns={columns!r})
for f in sys.argv[2:]:
    run.begin(f)
os.kill(os.getpid(), signal.SIGKILL)
"""


def die_while_processing(out, *files):
    code = KILL_DURING.format(settings=SETTINGS, columns=COLUMNS)
    proc = subprocess.run([sys.executable, "-c", code, str(out), *files], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_file_in_progress_when_a_run_died_is_retried_once_then_quarantined(tmp_path):
    poison, innocent, other = (make_input(tmp_path, n) for n in ("poison.wav", "innocent.wav", "other.wav"))
    out = tmp_path / "out"
    die_while_processing(out, poison, innocent)  # both were in flight when the run died
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        assert run.suspects() == sorted([poison, innocent], key=lambda f: run._started_path(f).name)
        assert run.summary()["files_in_progress"] == 2
        run.begin(innocent)
        run.write(innocent, table_for(innocent, 1))
        assert run.suspects() == [poison]
    die_while_processing(out, poison)  # the retry kills the run again
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        assert run.suspects() == []
        assert run.is_done(poison) and run.is_done(innocent) and not run.is_done(other)
        _, failures = run.read()
        assert failures[["file", "stage"]].values.tolist() == [[poison, "quarantine"]]
        assert "2 times" in failures["error"].iloc[0]
        assert run.summary()["files_quarantined"] == 1
    # a quarantined file that changes is tried again
    Path(poison).write_bytes(b"z" * 50)
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        assert not run.is_done(poison)


def test_clean_stop_clears_marks_but_keeps_earlier_strikes(tmp_path):
    a, b = make_input(tmp_path, "a.wav"), make_input(tmp_path, "b.wav")
    out = tmp_path / "out"
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        run.begin(a)  # stopped by the user (an exception, not a crash)
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        assert run.suspects() == []
    die_while_processing(out, b)
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        assert run.suspects() == [b]
        assert run.begin(b) == 2  # the retry
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        assert run.suspects() == [b]  # still one strike: a clean stop is not a crash


def test_stale_temp_files_are_removed_on_the_next_run(tmp_path):
    out = tmp_path / "out"
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        parts = run.parts_folder
    # a writer killed in the middle of an atomic write leaves its temporary file
    proc = run_script(f"""
        import os, signal
        from opso_nb.utils import atomic_path
        with atomic_path({str(parts / 'x-123.parquet')!r}) as tmp:
            open(tmp, "wb").write(b"half a part")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in parts.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".x-123.parquet.") and "tmp" in leftovers[0]
    (parts / ".keep").write_text("not ours")
    (out / ".old.csv.abcdefgh.tmp.csv").write_text("mkstemp-style leftover")
    assert pd.read_parquet(parts).empty  # readers never see the hidden leftover
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS):
        pass
    assert sorted(p.name for p in parts.iterdir()) == [".keep"]
    assert not (out / ".old.csv.abcdefgh.tmp.csv").exists()
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_only_temporary_files_older_than_asked_are_removed(tmp_path):
    old, fresh = tmp_path / ".best.model.0123456789ab.tmp.model", tmp_path / ".metrics.csv.ba9876543210.tmp.csv"
    for path in (old, fresh):
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_stale_temp_files(tmp_path, older_than_s=3600) == [str(old)]
    assert fresh.exists()  # could be a save in progress


# ----------------------------------------------------------------------------- writers
def test_second_writer_is_refused_with_the_holder_named_or_waits(tmp_path):
    out = tmp_path / "out"
    first = RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS)
    try:
        with pytest.raises(StoreLocked, match=rf"process {os.getpid()} .*another output folder"):
            RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS)
        with pytest.raises(StoreLocked):  # any job: the lock is per output folder
            RunStore.open(out, SETTINGS, job="ribbit", columns=COLUMNS)
        threading.Timer(0.5, first.close).start()
        with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS, lock_timeout=30) as waited:
            assert waited.folder == first.folder
    finally:
        first.close()
    # a holder that dies (kill -9) releases the folder with it
    die_while_processing(out)
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS):
        pass


HELPER = """
import sys
import pandas as pd
from opso_nb.store import RunStore, make_clip_index
run = RunStore.open(sys.argv[1], {settings!r}, job="predict", columns={columns!r}, lock=False)
for f in sys.argv[2:]:
    run.begin(f)
    values = {{"frog": [1.0, 2.0], "bird": [3.0, 4.0]}}
    run.write(f, pd.DataFrame(values, index=make_clip_index([f, f], [0, 2], [2, 4])))
"""


def test_helpers_sharing_a_run_lose_no_rows(tmp_path):
    """Dask-style: a coordinator holds the folder, worker processes write files concurrently."""
    files = [make_input(tmp_path, f"rec{i:02d}.wav") for i in range(30)]
    out = tmp_path / "out"
    code = HELPER.format(settings=SETTINGS, columns=COLUMNS)
    with pytest.raises(FileNotFoundError, match="coordinator"):
        RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS, lock=False)
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        workers = [subprocess.Popen([sys.executable, "-c", code, str(out), *files[k::2]], cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)}) for k in range(2)]
        assert [w.wait(timeout=120) for w in workers] == [0, 0]
    table, _ = RunStore.existing(out).read(files)
    assert table.index.get_level_values("file").unique().tolist() == files
    assert table["frog"].tolist() == [1.0, 2.0] * len(files)


# ----------------------------------------------------------------------------- names and modes
def test_any_file_name_round_trips_exactly(tmp_path):
    names = [os.fsdecode(b"caf\xe9 \xff.wav"), "d\u00e9j\u00e0 vu.wav", "quote\"comma,new\nline.wav"]
    files = [str(tmp_path / n) for n in names]
    for f in files:
        Path(f).write_bytes(b"x")
    for fmt in ("parquet", "csv"):
        with RunStore.open(tmp_path / fmt, SETTINGS, job="predict", columns=COLUMNS, format=fmt) as run:
            for f in files:
                run.begin(f)
                run.write(f, table_for(f, 2), [failure_record(f, "bad", 0.0, 2.0, stage="score")])
            assert all(run.is_done(f) for f in files)
        table, failures = RunStore.existing(tmp_path / fmt).read(files)
        assert table.index.get_level_values("file").unique().tolist() == files
        assert failures["file"].tolist() == files
    # text formats show undecodable bytes as \xNN; the records keep the exact name
    shown = set(pd.read_parquet(RunStore.existing(tmp_path / "parquet").parts_folder)["file"])
    assert utf8_name(files[0]) in shown and utf8_name(files[0]).endswith("caf\\xe9 \\xff.wav")
    assert utf8_name(files[1]) == files[1]


def test_outputs_honour_the_umask(tmp_path):
    f = make_input(tmp_path, "a.wav")
    old = os.umask(0o027)
    try:
        with RunStore.open(tmp_path / "out", SETTINGS, job="predict", columns=COLUMNS) as run:
            run.begin(f)
            run.write(f, table_for(f, 2))
        with atomic_write(tmp_path / "plain.csv") as fh:
            fh.write("a\n")
        with atomic_path(tmp_path / "plain.bin") as tmp:
            Path(tmp).write_bytes(b"1")
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and not p.name.startswith(".lock")]
    written += [tmp_path / "plain.csv", tmp_path / "plain.bin"]
    assert {p.name for p in written} >= {"settings.json", "manifest.json", "failures.csv", "latest.json"}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {oct(0o640)}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in (tmp_path / "out").rglob("*") if p.is_dir()} == {
        oct(0o750)}


# ----------------------------------------------------------------------------- the generic loop
def test_process_files_skips_done_retries_suspects_first_and_reports_errors(tmp_path):
    files = [make_input(tmp_path, f"rec{i}.wav") for i in range(4)]
    out = tmp_path / "out"

    def compute(file):
        if file.endswith("rec2.wav"):
            raise ValueError("cannot score this one")
        return table_for(file, 2), []

    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        process_files(files[:1], compute, run=run)
    die_while_processing(out, files[3])
    seen = []
    with RunStore.open(out, SETTINGS, job="predict", columns=COLUMNS) as run:
        tables, failures = process_files(files, compute, run=run, progress_callback=lambda i, n, f: seen.append(f))
        table, all_failures = run.read(files)
    assert seen == [files[3], files[1], files[2]]  # done skipped, the suspect first
    assert sorted(tables) == sorted([files[1], files[3]])
    assert [(r["file"], r["stage"]) for r in failures] == [(files[2], "score")]
    assert all_failures["error"].tolist() == ["ValueError: cannot score this one"]
    assert table.index.get_level_values("file").unique().tolist() == [files[0], files[1], files[3]]
    with pytest.raises(ValueError, match="cannot score"):
        process_files(files, compute, raise_errors=True)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_text_columns_are_stored_after_the_values(tmp_path, fmt):
    rec = make_input(tmp_path, "rec.wav")
    odd = os.fsdecode(b"caf\xe9.wav")
    table = pd.DataFrame({"x": [1.5, np.nan]}, index=make_clip_index([rec, rec], [0.0, 1.0], [1.0, 2.0]))
    # object columns: pandas' own strings cannot hold a name that is not valid UTF-8
    table["class"] = pd.Series(["wren", "1"], index=table.index, dtype=object)
    table["error"] = pd.Series(["", f"cannot read {odd}"], index=table.index, dtype=object)
    with RunStore.open(tmp_path / "out", SETTINGS, job="localize", columns=["x"], dtype="float64", format=fmt,
                       text_columns=["class", "error"]) as run:
        run.write(rec, table)
    back, _ = RunStore.existing(tmp_path / "out", job="localize").read()
    assert back.columns.tolist() == ["x", "class", "error"]
    np.testing.assert_array_equal(back["x"], [1.5, np.nan])
    assert back["class"].tolist() == ["wren", "1"]  # text stays text, "" stays ""
    assert back["error"].tolist() == ["", f"cannot read {utf8_name(odd)}"]  # written as UTF-8, like file names
    with pytest.raises(ValueError, match="text_columns|columns"):
        RunStore.open(tmp_path / "out", SETTINGS, job="localize", columns=["x"], dtype="float64", format=fmt)
    empty, _ = RunStore.existing(tmp_path / "out", job="localize").read(files=["none.wav"])
    assert empty.columns.tolist() == ["x", "class", "error"] and empty.empty
