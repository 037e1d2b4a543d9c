"""run_ribbit over folders on the run store: resume keyed on settings, O(file) appends, failures, kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile

from opso_nb.failures import FAILURE_COLUMNS
from opso_nb.ribbit import RibbitParams, run_ribbit
from opso_nb.store import RunSettingsChanged, RunStore
from tests._prediction_stub import write_bad_file

ROOT = Path(__file__).resolve().parents[1]
SR = 8000


def pulse_file(path, rate, duration=8.0, seed=0):
    """A 1.5 kHz tone gated ``rate`` times per second in noise: RIBBIT's score peaks at ``rate``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 1500 * t) * (((t * rate) % 1.0) < 0.4) + 0.02 * rng.standard_normal(len(t))
    soundfile.write(str(path), x.astype(np.float32), SR)
    return str(path)


def params(**kw):
    kw = dict(signal_band=(1300, 1700), noise_bands=[(3000, 3800)], pulse_rate_range=(12, 18), clip_duration=2.0,
              window_samples=256, overlap_samples=128) | kw
    return RibbitParams(**kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pulses")
    return [pulse_file(folder / f"p{rate}.wav", rate, seed=rate) for rate in (6, 15, 25)]


def test_resume_is_keyed_on_the_settings(files, tmp_path):
    out = tmp_path / "out"
    fast = params()
    slow = params(pulse_rate_range=(4, 8))
    first, errors = run_ribbit(files, fast, out_path=out, progress=False)
    assert errors.empty and list(errors.columns) == FAILURE_COLUMNS
    # the 15/s file scores highest for 12-18 pulses/s, the 6/s file for 4-8
    assert first.groupby(level="file").max()["great_plains_toad"].idxmax() == files[1]
    calls = []
    with pytest.warns(RunSettingsChanged, match=r"species\.great_plains_toad\.pulse_rate_range"):
        changed, _ = run_ribbit(files, slow, out_path=out, progress=False,
                                progress_callback=lambda i, n, f: calls.append(f))
    assert calls == files  # nothing stale reused
    fresh, _ = run_ribbit(files, slow, progress=False)
    pd.testing.assert_frame_equal(changed, fresh)
    assert changed.groupby(level="file").max()["great_plains_toad"].idxmax() == files[0]
    calls.clear()
    with pytest.warns(RunSettingsChanged):
        again, _ = run_ribbit(files, fast, out_path=out, progress=False,
                              progress_callback=lambda i, n, f: calls.append(f))
    assert calls == []
    pd.testing.assert_frame_equal(again, first)
    # resume=False scores everything again with the same settings, same numbers
    again, _ = run_ribbit(files, fast, out_path=out, resume=False, progress=False,
                          progress_callback=lambda i, n, f: calls.append(f))
    assert calls == files
    pd.testing.assert_frame_equal(again, first)


def test_adding_a_file_writes_only_that_file(files, tmp_path):
    out = tmp_path / "out"
    run_ribbit(files[:2], params(), out_path=out, progress=False)
    parts = RunStore.existing(out).parts_folder
    before = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    time.sleep(0.01)
    scores, _ = run_ribbit(files, params(), out_path=out, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    assert len(after) == 3 and all(after[n] == before[n] for n in before)
    assert scores.index.get_level_values("file").unique().tolist() == files
    pd.testing.assert_frame_equal(pd.read_parquet(parts).set_index(["file", "start_time", "end_time"]).sort_index(),
                                  scores.sort_index(), check_index_type=False)


def test_bad_files_and_nan_clips_are_in_the_failures_table(files, tmp_path):
    bad = {kind: str(write_bad_file(tmp_path / f"{kind}.wav", kind, duration=8.0))
           for kind in ("corrupt", "empty", "nan")}
    with pytest.warns(UserWarning, match="RIBBIT could not score everything"):
        scores, errors = run_ribbit([files[1], *bad.values()], params(), out_path=tmp_path / "out", progress=False)
    assert list(errors.columns) == FAILURE_COLUMNS
    whole = errors[errors["start_time"].isna()]
    assert set(whole["file"]) >= {bad["corrupt"], bad["empty"]} and set(whole["stage"]) == {"load"}
    nan_failures = errors[errors["file"] == bad["nan"]]
    assert len(nan_failures) and set(nan_failures["stage"]) <= {"load", "score"}
    # no silent NaN: every missing score of the NaN file is a failure row of that clip (or the whole file)
    if bad["nan"] in scores.index.get_level_values("file"):
        missing = scores.xs(bad["nan"], level="file")["great_plains_toad"].isna()
        listed = set(zip(nan_failures["start_time"], nan_failures["end_time"]))
        assert missing.sum() >= 2 and {k for k, m in missing.items() if m} <= listed
        assert not missing.iloc[0]  # the first seconds are clean audio
    assert scores.xs(files[1], level="file").notna().all().all()
    stored = RunStore.existing(tmp_path / "out").read()[1]
    pd.testing.assert_frame_equal(stored.sort_values(["file", "start_time"]).reset_index(drop=True),
                                  errors.sort_values(["file", "start_time"]).reset_index(drop=True))


def test_species_on_other_clip_grids_are_not_failures(files):
    toad = params()
    bird = params(species="bird", clip_duration=4.0, pulse_rate_range=(21, 28))
    scores, errors = run_ribbit(files, [toad, bird], progress=False)
    assert errors.empty
    assert scores["great_plains_toad"].notna().sum() == 12 and scores["bird"].notna().sum() == 6
    assert scores.groupby(level="file").max()["bird"].idxmax() == files[2]


def test_csv_out_path_keeps_its_table_and_errors(files, tmp_path):
    out = tmp_path / "scores.csv"
    missing = str(tmp_path / "missing.wav")
    with pytest.warns(UserWarning):
        scores, errors = run_ribbit(files + [missing], params(), out_path=out, progress=False)
    table = pd.read_csv(out).set_index(["file", "start_time", "end_time"])
    pd.testing.assert_frame_equal(table, scores, check_index_type=False)
    assert pd.read_csv(tmp_path / "scores.errors.csv")["file"].tolist() == [missing]
    assert RunStore.existing(tmp_path / "scores.run").summary()["files_done"] == 3


KILLED = """
import sys, time
from opso_nb.ribbit import run_ribbit
from tests.test_ribbit_batch import params
run_ribbit(sys.argv[2:], params(), out_path=sys.argv[1], progress=False,
           progress_callback=lambda i, n, f: time.sleep(1.0))
"""


@pytest.mark.slow
def test_kill_9_then_resume_is_exact(files, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED), str(out), *files], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            if list(out.glob("ribbit-*/records/[!.]*.json")):
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done_before = RunStore.existing(out).summary()["files_done"]
    assert 1 <= done_before < len(files)
    calls = []
    resumed, errors = run_ribbit(files, params(), out_path=out, progress=False,
                                 progress_callback=lambda i, n, f: calls.append(f))
    assert len(calls) == len(files) - done_before and errors.empty
    pd.testing.assert_frame_equal(resumed, run_ribbit(files, params(), progress=False)[0])
