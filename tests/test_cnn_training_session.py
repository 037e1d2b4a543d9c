"""TrainingSession (the training monitor's engine): a run that cannot train honestly ends as "failed"."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from opso_nb.ml.training_run import TrainingSession
from opso_nb.ml.utils import make_tone_dataset

torch.set_num_threads(1)


@pytest.fixture
def mostly_broken_labels(tmp_path):
    labels = make_tone_dataset(tmp_path / "tones", n_per_class=1, duration=1.0, write_labels=False)
    rows = [labels.reset_index()]
    for k in range(4):
        bad = tmp_path / "tones" / f"broken_{k}.wav"
        bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # header cut short
        rows.append(pd.DataFrame([[str(bad), 0.0, 1.0, k % 2, 1 - k % 2]], columns=rows[0].columns))
    path = tmp_path / "labels.csv"
    pd.concat(rows).to_csv(path, index=False)
    return path


def test_session_with_unreadable_training_data_ends_failed_with_the_reason(mostly_broken_labels, tmp_path):
    session = TrainingSession(labels_path=str(mostly_broken_labels), runs_folder=str(tmp_path / "runs"),
                              run_name="bad", epochs=2, batch_size=2, image_size=32, validation_fraction=0.3)
    session.start()
    session.join(120)
    events = session.drain_events()
    assert session.state == "failed"
    assert "could not be read" in session.error and "broken_" in session.error
    assert events[-1]["event"] == "failed" and events[-1]["n_failed"] == len(session.failures) > 0
    assert set(session.failures.stage) == {"load"}
    assert not (tmp_path / "runs" / "bad" / "best.model").exists()
    assert not (tmp_path / "runs" / "bad" / "last.model").exists()
    assert "broken_" in (tmp_path / "runs" / "bad" / "invalid_samples.log").read_text()
