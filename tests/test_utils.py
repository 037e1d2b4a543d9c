"""Clip-time tables, clip tables for files, atomic writes, AudioMoth name parsing."""
import datetime as dt

import numpy as np
import pandas as pd
import pytest
import soundfile

from opso_nb import aru
from opso_nb.utils import atomic_write, generate_clip_times_df, make_clip_df, validate_clip_table


def test_generate_clip_times_documented_cases():
    df = generate_clip_times_df(60, 5, clip_overlap=-5)
    assert df.start_time.tolist() == [0, 10, 20, 30, 40, 50]
    assert df.end_time.tolist() == [5, 15, 25, 35, 45, 55]
    assert generate_clip_times_df(10, 3, final_clip="full").values.tolist()[-1] == [7.0, 10.0]
    assert generate_clip_times_df(10, 3, final_clip="extend").values.tolist()[-1] == [9.0, 12.0]
    assert generate_clip_times_df(10, 3, final_clip="remainder").values.tolist()[-1] == [9.0, 10.0]
    assert len(generate_clip_times_df(10, 3)) == 3


def test_generate_clip_times_float_noise_and_errors():
    df = generate_clip_times_df(1.0, 0.1, clip_overlap=0.05)
    assert len(df) == 19 and df.end_time.iloc[-1] == 1.0
    with pytest.raises(ValueError, match="smaller than clip_duration"):
        generate_clip_times_df(10, 2, clip_overlap=2)
    with pytest.raises(ValueError, match="final_clip"):
        generate_clip_times_df(10, 2, final_clip="pad")


def test_make_clip_df_reads_headers_and_reports_bad_files(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.zeros(8000 * 12, dtype=np.float32), 8000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    df, invalid = make_clip_df([tmp_path / "a.wav", tmp_path / "bad.wav"], 5, final_clip="remainder",
                               return_invalid_samples=True)
    assert list(df.index.names) == ["file", "start_time", "end_time"]
    assert df.index.get_level_values("end_time").tolist() == [5, 10, 12]
    assert invalid.file.tolist() == [str(tmp_path / "bad.wav")]
    assert "bad.wav" in invalid.error.iloc[0]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "labels.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new"


def test_validate_clip_table():
    df = pd.DataFrame({"file": ["a"], "start_time": [0.0], "end_time": [5.0], "x": [1]})
    assert list(validate_clip_table(df).index.names) == ["file", "start_time", "end_time"]
    with pytest.raises(ValueError, match="ends before it starts"):
        validate_clip_table(df.assign(end_time=[-1.0]))
    with pytest.raises(ValueError, match="must be indexed"):
        validate_clip_table(pd.DataFrame({"a": [1]}))


def test_audiomoth_file_names_and_comments():
    assert aru.audiomoth_start_time("20190616_053000.WAV") == dt.datetime(2019, 6, 16, 5, 30, tzinfo=dt.timezone.utc)
    assert aru.audiomoth_start_time("5F16A04E.WAV") == dt.datetime(2020, 7, 21, 7, 59, 10, tzinfo=dt.timezone.utc)
    local = aru.audiomoth_start_time("20190616_053000.WAV", filename_timezone="US/Eastern", to_utc=True)
    assert local.hour == 9
    parsed = aru.parse_audiomoth_comment(
        "Recorded at 22:00:00 05/06/2021 (UTC-5) by AudioMoth 24F3190360FC6174 at medium gain setting "
        "while battery state was less than 3.6V and temperature was -1.5C.")
    assert parsed["recording_start_time"].utcoffset() == dt.timedelta(hours=-5)
    assert parsed["gain_setting"] == "medium" and parsed["battery_state"] == 3.6
    assert parsed["temperature_C"] == -1.5
    assert aru.parse_audiomoth_comment("a song meter file") == {}
