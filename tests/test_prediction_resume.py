"""Kill a streaming prediction half-way (SIGKILL in a subprocess) and resume it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from opso_nb.ml.prediction import load_prediction_output, predict
from opso_nb.store import RunStore
from tests._prediction_stub import tiny_model, write_test_wav

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from opso_nb.ml.prediction import predict
    from tests._prediction_stub import tiny_model
    files = {files!r}
    # slow each run of clips down so the parent can kill us between files
    predict(tiny_model(sample_duration=2.0), files, batch_size=2, chunk_clips=2, output_path={out!r},
            progress=False, progress_callback=lambda d, t, f: time.sleep(0.3))
    print("finished")
    """
)


def finished_files(out: Path) -> list:
    """Files whose results a (possibly running) prediction has recorded, in the order they finished."""
    try:
        records = RunStore.existing(out).records().values()
    except FileNotFoundError:
        return []
    return [r["file"] for r in sorted(records, key=lambda r: r["finished_ns"]) if r["status"] == "done"]


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_table(tmp_path):
    files = [str(write_test_wav(tmp_path / f"rec{i}.wav", 8.0, seed=i)) for i in range(4)]
    out = tmp_path / "scores"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT), files=files, out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        # kill as soon as a finished file is recorded (a part written just before its record
        # would also be fine: without a record it is simply redone)
        deadline = time.time() + 60
        while time.time() < deadline and not finished_files(out):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        assert finished_files(out), "no file finished within 60 s"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    finished = finished_files(out)
    assert 1 <= len(finished) < len(files), finished
    # no half-written parts or temp files are mistaken for results
    partial, _ = load_prediction_output(out)
    assert partial.index.get_level_values("file").unique().tolist() == finished

    calls = []
    resumed = predict(tiny_model(sample_duration=2.0), files, batch_size=2, chunk_clips=2, output_path=out,
                      progress=False, progress_callback=lambda d, t, f: calls.append(f))
    assert finished[0] not in calls and set(calls) == set(files) - set(finished)
    uninterrupted = predict(tiny_model(sample_duration=2.0), files, batch_size=2, progress=False)
    pd.testing.assert_frame_equal(resumed, uninterrupted)
    stored, invalid = load_prediction_output(out, files=files)
    pd.testing.assert_frame_equal(stored, uninterrupted)
    assert len(invalid) == 0
