"""No single file sinks a batch, no result is lost (issue 12): real files, real torch, real process deaths."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from opso_nb.ml.prediction import load_prediction_output, predict
from opso_nb.store import RunStore, StoreLocked, utf8_name
from tests._prediction_stub import BAD_KINDS, non_utf8_path, tiny_model, write_bad_file, write_test_wav

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
#: Address-space limit for runs that meet the lying header: its 16 GiB padding then fails with
#: MemoryError instead of waking the out-of-memory killer (importing torch alone maps ~4-5 GiB).
ADDRESS_SPACE = 10 * 2**30


def spawn(code: str, *args, limit_memory=False) -> subprocess.Popen:
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(os.fsencode, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit if limit_memory else None,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def assert_no_silent_nan(scores: pd.DataFrame, failures: pd.DataFrame):
    """Every NaN score row is explained by a failure of that clip or of its whole file."""
    explained = {(f, s, e) for f, s, e in zip(failures["file"], failures["start_time"], failures["end_time"])}
    whole = {f for f, s in zip(failures["file"], failures["start_time"]) if np.isnan(s)}
    for (f, s, e), row in zip(scores.index, scores.isna().any(axis=1)):
        if row:
            assert (f, s, e) in explained or f in whole, f"silent NaN score for {f} [{s}, {e}]"


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    return [str(write_test_wav(folder / f"good{i}.wav", 6.0, seed=i)) for i in range(3)]


# ----------------------------------------------------------------------------- a folder of trouble
BATCH = """
import sys, os, warnings
import torch
torch.set_num_threads(1)
from opso_nb.ml.prediction import predict
from tests._prediction_stub import tiny_model
folder, out = (os.fsdecode(a) for a in sys.argv[1:3])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    predict(tiny_model(), folder, output_path=out, progress=False, return_scores=False)
print("WARNED:", any("could not be scored" in str(w.message) for w in caught))
"""


@pytest.mark.slow
def test_a_folder_of_bad_files_finishes_and_reports_each(good_files, tmp_path):
    """Corrupt, empty, truncated, lying-header, NaN and non-UTF-8-named files next to good ones.

    The lying header (2,147,483,647 Hz) is refused at load by the header limits
    (``opso_nb.audio.LIMITS``) before any allocation. The batch still runs under an
    address-space limit, so a regression that lets the 16 GiB clip padding through fails
    here as a MemoryError instead of waking the machine's out-of-memory killer.
    """
    folder = tmp_path / "field"
    folder.mkdir()
    for f in good_files:
        shutil.copy(f, folder)
    for kind in BAD_KINDS:
        write_bad_file(folder / f"{kind}.wav", kind)
    odd = non_utf8_path(folder)
    shutil.copy(good_files[0], odd)
    out = tmp_path / "out"
    proc = spawn(BATCH, folder, out, limit_memory=True)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    assert b"WARNED: True" in stdout

    scores, failures = load_prediction_output(out)
    clean = predict(tiny_model(), good_files, progress=False)
    good_in_folder = [str(folder / Path(f).name) for f in good_files]
    np.testing.assert_array_equal(pd.concat([scores.xs(f, level="file") for f in good_in_folder]).to_numpy(),
                                  clean.to_numpy())
    reasons = dict(zip(failures["file"], failures["error"]))
    stages = dict(zip(failures["file"], failures["stage"]))
    for kind in ("corrupt", "empty", "lying", "nan"):
        f = str(folder / f"{kind}.wav")
        assert f in reasons and len(reasons[f]) > 20, (kind, reasons.get(f))
    assert stages[str(folder / "corrupt.wav")] == stages[str(folder / "empty.wav")] == "load"
    assert stages[str(folder / "nan.wav")] in ("load", "score")  # caught at load once audio checks samples
    assert "empty" in reasons[str(folder / "empty.wav")]
    # the truncated file is scored from the samples it has (with a warning), like OpenSoundscape
    assert str(folder / "truncated.wav") not in reasons
    assert scores.xs(str(folder / "truncated.wav"), level="file").notna().all().all()
    # the non-UTF-8 name is kept exactly and scored like its same-content twin
    assert odd not in reasons
    np.testing.assert_array_equal(scores.xs(odd, level="file").to_numpy(),
                                  scores.xs(good_in_folder[0], level="file").to_numpy())
    assert_no_silent_nan(scores, failures)


def test_nan_samples_never_give_silent_nan_scores(good_files, tmp_path):
    nan_file = write_bad_file(tmp_path / "nan.wav", "nan", duration=6.0)
    with pytest.warns(UserWarning, match="could not be scored"):
        scores, failures = predict(tiny_model(), [good_files[0], nan_file], return_invalid_samples=True,
                                   output_path=tmp_path / "out", progress=False)
    bad = failures[failures["file"] == str(nan_file)]
    assert len(bad) and set(bad["stage"]) <= {"load", "score"}
    assert scores.xs(good_files[0], level="file").notna().all().all()
    nan_rows = scores.xs(str(nan_file), level="file") if str(nan_file) in scores.index.get_level_values(0) else None
    if nan_rows is not None:  # NaN from the second half on: clip 0-2 s is fine, 2-4 overlaps the start of NaNs
        assert nan_rows.iloc[0].notna().all() and nan_rows.iloc[1:].isna().all().all()
        assert bad[["start_time", "end_time"]].values.tolist() == [[2.0, 4.0], [4.0, 6.0]]
    assert_no_silent_nan(scores, failures)
    stored_scores, stored_failures = load_prediction_output(tmp_path / "out")
    pd.testing.assert_frame_equal(stored_failures, failures)


def test_non_utf8_file_name_never_aborts_and_round_trips(good_files, tmp_path):
    odd = non_utf8_path(tmp_path)
    shutil.copy(good_files[1], odd)
    log = tmp_path / "invalid.csv"
    scores, failures = predict(tiny_model(), [odd, good_files[1]], output_path=tmp_path / "out",
                               return_invalid_samples=True, invalid_samples_log=log, progress=False)
    stored, stored_failures = load_prediction_output(tmp_path / "out")
    assert failures.empty and stored_failures.empty
    assert scores.index.get_level_values("file").unique().tolist() == [odd, good_files[1]]
    np.testing.assert_array_equal(scores.xs(odd, level="file").to_numpy(),
                                  scores.xs(good_files[1], level="file").to_numpy())
    assert stored.index.get_level_values("file").unique().tolist() == \
        scores.index.get_level_values("file").unique().tolist()
    assert utf8_name(odd).endswith("caf\\xe9.wav")


# ----------------------------------------------------------------------------- a file that kills the run
SLOW_ON_POISON = """
import sys, os, time
import torch
torch.set_num_threads(1)
from opso_nb.ml.prediction import predict
from tests._prediction_stub import tiny_model
out, *files = (os.fsdecode(a) for a in sys.argv[1:])
# slow on the poisoned file, so the parent can kill the run while that file is in progress
predict(tiny_model(), files, output_path=out, chunk_clips=1, progress=False,
        progress_callback=lambda d, t, f: time.sleep(0.3) if "poison" in f else None)
print("finished")
"""


def kill_while_in_progress(out: Path, files, target: str, attempt: int):
    """Run prediction in a child and SIGKILL it (as the out-of-memory killer would) once ``target`` is in progress."""
    proc = spawn(SLOW_ON_POISON, out, *files)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-3000:]
            marks = list(out.glob("predict-*/started/*.json"))
            if any(f'"attempts": {attempt}' in m.read_text() and Path(target).name in m.read_text()
                   for m in marks if m.exists()):
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"{target} was never started")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_file_in_progress_when_the_run_died_is_retried_once_then_quarantined(good_files, tmp_path):
    poison = str(write_test_wav(tmp_path / "poison.wav", 30.0, seed=9))
    files = [good_files[0], poison, good_files[1], good_files[2]]
    out = tmp_path / "out"
    kill_while_in_progress(out, files, poison, attempt=1)
    first = RunStore.existing(out).summary()
    assert first["files_in_progress"] >= 1 and first["files_done"] <= 1
    kill_while_in_progress(out, files, poison, attempt=2)  # retried first, alone: dies again
    with pytest.warns(UserWarning, match="quarantine|stopped abruptly"):
        scores, failures = predict(tiny_model(), files, output_path=out, return_invalid_samples=True,
                                   progress=False)
    assert failures[["file", "stage"]].values.tolist() == [[poison, "quarantine"]]
    assert "2 times" in failures["error"].iloc[0]
    clean = predict(tiny_model(), [f for f in files if f != poison], progress=False)
    pd.testing.assert_frame_equal(scores, clean)
    # later runs skip it without touching it, until it changes
    calls = []
    predict(tiny_model(), files, output_path=out, progress=False, progress_callback=lambda d, t, f: calls.append(f))
    assert calls == []
    write_test_wav(poison, 4.0, seed=10)
    predict(tiny_model(), files, output_path=out, progress=False, progress_callback=lambda d, t, f: calls.append(f))
    assert set(calls) == {poison}


# ----------------------------------------------------------------------------- two runs, one folder
@pytest.mark.slow
def test_second_run_on_the_same_folder_is_refused_and_nothing_is_lost(good_files, tmp_path):
    files = good_files + [str(write_test_wav(tmp_path / "slow_poison_free.wav", 8.0, seed=7))]
    out = tmp_path / "out"
    # the child is slow on one file ("poison" in the name) so this test can try to join mid-run
    slow = str(tmp_path / "poison_slow.wav")
    shutil.copy(files[-1], slow)
    proc = spawn(SLOW_ON_POISON, out, files[0], slow, files[1])
    try:
        deadline = time.time() + 120
        while not list(out.glob("predict-*/started/*.json")) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-3000:]
            time.sleep(0.02)
        with pytest.raises(StoreLocked, match=rf"process {proc.pid} .*wait for it to finish"):
            predict(tiny_model(), files, output_path=out, progress=False)
    finally:
        stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0 and b"finished" in stdout, stderr.decode(errors="replace")[-3000:]
    calls = []
    scores = predict(tiny_model(), files + [slow], output_path=out, progress=False,
                     progress_callback=lambda d, t, f: calls.append(f))
    assert set(calls) == {files[2], files[3]}  # the first run's files were kept, not redone
    pd.testing.assert_frame_equal(scores, predict(tiny_model(), files + [slow], progress=False))


# ----------------------------------------------------------------------------- permissions
def test_prediction_outputs_honour_the_umask(good_files, tmp_path):
    old = os.umask(0o002)
    try:
        predict(tiny_model(), good_files[:1], output_path=tmp_path / "out", invalid_samples_log=tmp_path / "log.csv",
                progress=False)
    finally:
        os.umask(old)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".lock")]
    assert len(written) >= 6
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {oct(0o664)}


@pytest.mark.filterwarnings("ignore::opso_nb.review.ReviewTooSmallWarning")  # 10 clips: a calibration is not the point
def test_non_utf8_file_name_survives_review_and_thresholding(good_files, tmp_path):
    """A RIBBIT run over an SD card with a non-UTF-8 name can be read, sampled, thresholded, reviewed and exported.

    The odd file is a copy of a plain one, so its rows must keep their exact name
    (``os.fsencode`` round trip) and equal the plain file's scores at every step;
    text exports write its name as the store does (undecodable bytes as ``\\xNN``).
    """
    from opso_nb.detection import detections_table, top_clips, write_detections_csv
    from opso_nb.review import ReviewSession, ReviewSettings, read_score_table, select_clips
    from opso_nb.ribbit import RibbitParams, run_ribbit
    from opso_nb.sample_data import toads_folder

    card = tmp_path / "card"
    card.mkdir()
    plain = str(card / "plain.mp3")
    odd = os.fsdecode(os.fsencode(str(card)) + b"/caf\xe9.mp3")
    for target in (plain, odd):
        shutil.copy(toads_folder() / "gpt1.mp3", target)
    run_ribbit(card, RibbitParams(clip_duration=2.0), out_path=tmp_path / "ribbit", progress=False)

    def same_rows(table, what, odd=odd, plain=plain):
        """Both files in ``table`` under their exact names, the odd one's rows equal to the plain one's."""
        files = list(table.index.get_level_values("file") if "file" in table.index.names else table["file"])
        assert set(files) == {odd, plain}, what
        assert os.fsdecode(os.fsencode(odd)) in files
        rows = {f: table[[name == f for name in files]].drop(columns="file", errors="ignore").reset_index(drop=True)
                for f in (odd, plain)}
        assert len(rows[odd]), what
        pd.testing.assert_frame_equal(rows[odd], rows[plain], obj=what)

    scores = read_score_table(tmp_path / "ribbit")
    (cls,) = scores.columns
    assert len(scores) == 10 and scores[cls].notna().all()
    assert b"caf\xe9.mp3" in {os.fsencode(f)[-8:] for f in scores.index.get_level_values("file")}
    same_rows(scores, "read_score_table")
    same_rows(select_clips(scores, cls, strategy="random", n=len(scores), seed=1).sort_index()[["score"]],
              "select_clips")
    assert select_clips(scores, cls, strategy="top", n=3, files=[odd]).index.get_level_values("file").tolist() == \
        [odd] * 3
    detections = detections_table(scores, float(scores[cls].min()))
    same_rows(detections, "detections_table")
    same_rows(detections_table(scores, float(scores[cls].min()), merge=True), "merged detections")
    same_rows(top_clips(scores, cls, n=len(scores), allow_overlap=True).sort_index(), "top_clips")

    # text exports follow the store's rule, so they are valid UTF-8 and read back
    escaped = utf8_name(odd)
    assert escaped.endswith("caf\\xe9.mp3")
    written = pd.read_csv(write_detections_csv(detections, tmp_path / "detections.csv"))
    assert set(written["file"]) == {escaped, plain}

    settings = ReviewSettings(class_name=cls, strategy="random", n=len(scores), seed=1, reviewer="ana")
    session = ReviewSession.open(scores, settings, tmp_path / "review")
    while session.current is not None:
        session.label("present" if session.current[1] < 6 else "absent")
    reopened = ReviewSession.open(scores, settings, tmp_path / "review")
    assert reopened.finished and list(reopened.sample.index) == list(session.sample.index)
    same_rows(reopened.reviewed().sort_index()[["score", "label"]], "reviewed clips")
    export = reopened.export(tmp_path / "export")
    assert set(pd.read_csv(export["labels"])["file"]) == {escaped, plain}
    assert set(pd.read_csv(export["training_labels"])["file"]) == {escaped, plain}
    raven = {p.name: p.read_text(encoding="utf-8") for p in export["raven"]}
    assert set(raven) == {"caf\\xe9.Table.1.selections.txt", "plain.Table.1.selections.txt"}
    assert raven["caf\\xe9.Table.1.selections.txt"] == raven["plain.Table.1.selections.txt"]

    # a prediction output folder holding such a name reads the same way
    odd_wav = non_utf8_path(card)
    shutil.copy(good_files[0], odd_wav)
    predict(tiny_model(), [good_files[0], odd_wav], output_path=tmp_path / "pred", progress=False)
    predicted = read_score_table(tmp_path / "pred")
    same_rows(predicted, "prediction scores", odd=odd_wav, plain=good_files[0])
    same_rows(detections_table(predicted, -np.inf), "prediction detections", odd=odd_wav, plain=good_files[0])
