"""``python -m opso_nb.batch``: help that reads well, clear errors, and real runs in a subprocess."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from opso_nb import sample_data
from opso_nb.batch import local_client, summarize_file
from opso_nb.batch.cli import COMMANDS, main
from opso_nb.ribbit import RibbitParams, run_ribbit
from opso_nb.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SOUNDSCAPES = [str(sample_data.path(f"soundscapes/S4A03895_20190522_{h}0000.wav")) for h in ("00", "05")]


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opso_nb.batch", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_help_lists_every_command_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command, description in COMMANDS.items():
        assert command in text and description.split(" (")[0] in text
        assert f"python -m opso_nb.batch {command} --" in text  # an example of each
    assert "--scheduler tcp://" in text and "read_parquet" in text


@pytest.mark.parametrize("command, own_option", [("predict", "--model M"), ("ribbit", "--params P.json"),
                                                 ("summary", "--clip-duration S"), ("birdnet", "--set KEY=VALUE"),
                                                 ("embed", "--set KEY=VALUE")])
def test_each_command_explains_its_options(capsys, command, own_option):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in (own_option, "--files PATH", "--out OUT", "--scheduler ADDRESS", "--workers N", "examples:"):
        assert option in text, (command, option)


def test_bad_arguments_and_missing_inputs_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--files", "x.wav", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "--model" in capsys.readouterr().err
    assert main(["summary", "--files", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["summary", "--files", "x", "--out", "y", "--bands", "low-high"])
    assert "LOW-HIGH" in capsys.readouterr().err


@pytest.fixture(scope="module")
def scheduler():
    client = local_client(n_workers=1)
    yield client.scheduler.address
    client.close()


def test_summary_and_ribbit_run_end_to_end_on_a_scheduler(scheduler, tmp_path):
    out = tmp_path / "qa"
    done = cli("summary", "--files", *SOUNDSCAPES, "--out", out, "--scheduler", scheduler, "--clip-duration", 5)
    assert done.returncode == 0, done.stderr
    assert "summary: 2 file(s) done, 0 skipped" in done.stdout
    table, failures = RunStore.existing(out).read(SOUNDSCAPES)
    expected = pd.concat([summarize_file(f, clip_duration=5)[0] for f in SOUNDSCAPES])
    pd.testing.assert_frame_equal(table, expected)

    again = cli("summary", "--files", *SOUNDSCAPES, "--out", out, "--scheduler", scheduler, "--clip-duration", 5)
    assert again.returncode == 0 and "0 file(s) done, 2 skipped" in again.stdout

    params = RibbitParams().save(tmp_path / "toad.json")
    folder = sample_data.toads_folder()
    ribbit = cli("ribbit", "--params", params, "--files", folder, "--out", tmp_path / "ribbit", "--scheduler",
                 scheduler, "--quiet")
    assert ribbit.returncode == 0, ribbit.stderr
    assert ribbit.stdout == ""  # --quiet
    scores, _ = run_ribbit(folder, RibbitParams.load(params), progress=False)
    pd.testing.assert_frame_equal(RunStore.existing(tmp_path / "ribbit").read(list(scores.index.unique(0)))[0],
                                  scores)


def test_sigterm_stops_the_run_cleanly_and_it_resumes(scheduler, tmp_path):
    """What a SLURM time limit does: SIGTERM, then (later) SIGKILL. The run must stop cleanly before that."""
    folder = tmp_path / "minutes"
    folder.mkdir()
    for i in range(12):
        shutil.copy(sample_data.audiomoth_1min(), folder / f"unit{i:02d}.wav")
    out = tmp_path / "out"
    args = ["summary", "--files", folder, "--out", out, "--scheduler", scheduler, "--group-mb", "0", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "opso_nb.batch", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob("summary-*/records/*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr
    time.sleep(2)  # the task that was running when it stopped may still finish: then it counts as done
    run = RunStore.existing(out)
    summary = run.summary()
    assert summary["files_in_progress"] == 0  # nothing held against a recording by the next run
    assert 1 <= summary["files_done"] < 12
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert len(RunStore.existing(out).records()) == 12
    assert all(r["attempts"] == 1 for r in RunStore.existing(out).records().values())


def test_a_command_starts_its_own_local_cluster(tmp_path):
    done = cli("summary", "--files", SOUNDSCAPES[0], "--out", tmp_path / "out", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "Dask dashboard: http" in done.stdout and "summary: 1 file(s) done" in done.stdout
    assert len(pd.read_parquet(RunStore.existing(tmp_path / "out").parts_folder)) == 1


def test_predict_and_birdnet_options_reach_their_jobs():
    from opso_nb.batch.cli import build_parser, make_job

    job = make_job(build_parser().parse_args(
        ["predict", "--model", "m.model", "--files", "a.wav", "--out", "o", "--activation", "none", "--overlap",
         "0.5", "--final-clip", "remainder", "--batch-size", "4"]))
    assert (job.model, job.activation_layer, job.overlap_fraction, job.final_clip, job.batch_size) == \
        ("m.model", None, 0.5, "remainder", 4)
    job = make_job(build_parser().parse_args(
        ["embed", "--files", "a.wav", "--out", "o", "--set", "lat=40.5", "--set", "species_list=[\"a\"]"]))
    assert type(job).__name__ == "BirdNETEmbedJob" and job.birdnet_options == {"lat": 40.5, "species_list": ["a"]}


def test_birdnet_without_its_module_says_what_to_install(tmp_path, capsys):
    from opso_nb.batch.ml_jobs import birdnet_available

    if birdnet_available():
        pytest.skip("BirdNET is installed here")
    assert main(["birdnet", "--files", SOUNDSCAPES[0], "--out", str(tmp_path / "out"), "--quiet"]) == 1
    assert "opso_nb[birdnet]" in capsys.readouterr().err
