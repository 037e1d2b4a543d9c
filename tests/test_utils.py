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


# ---------------------------------------------------------------- wave 2: OpenSoundscape parity, no import cycles
import ast  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from opso_nb import utils  # noqa: E402
from opso_nb.audio import Audio, AudioLoadError  # noqa: E402
from opso_nb.utils import GetDurationError  # noqa: E402

# Values printed by OpenSoundscape 0.13.2's generate_clip_times_df for the same arguments.
OPSO_CLIP_TIMES = [
    (10.5, 5, 0, None, [[0, 5], [5, 10]]),
    (10.5, 5, 0, "remainder", [[0, 5], [5, 10], [10, 10.5]]),
    (10.5, 5, 0, "full", [[0, 5], [5, 10], [5.5, 10.5]]),
    (10.5, 5, 0, "extend", [[0, 5], [5, 10], [10, 15]]),
    (10.5, 5, 2, None, [[0, 5], [3, 8]]),
    (10.5, 5, 2, "remainder", [[0, 5], [3, 8], [6, 10.5], [9, 10.5]]),
    (10.5, 5, 2, "full", [[0, 5], [3, 8], [5.5, 10.5]]),
    (10.5, 5, 2, "extend", [[0, 5], [3, 8], [6, 11], [9, 14]]),
    (22, 5, -5, "remainder", [[0, 5], [10, 15], [20, 22]]),
    (22, 5, -5, "full", [[0, 5], [10, 15], [17, 22]]),
    (17, 5, -5, "remainder", [[0, 5], [10, 15]]),
    (5.0, 5, 0, "extend", [[0, 5]]),
    (3.0, 5, 0, "remainder", [[0, 3]]),
    (3.0, 5, 0, "full", [[0, 3]]),
    (3.0, 5, 0, "extend", [[0, 5]]),
    (0.0, 5, 0, "extend", []),
]


@pytest.mark.parametrize("full, clip, overlap, final_clip, expected", OPSO_CLIP_TIMES)
def test_clip_times_match_opensoundscape(full, clip, overlap, final_clip, expected):
    df = generate_clip_times_df(full, clip, clip_overlap=overlap, final_clip=final_clip)
    assert df.values.tolist() == [[float(a), float(b)] for a, b in expected]


def test_audio_shorter_than_a_clip_is_one_clip_as_the_09_manual_documents():
    # OpenSoundscape 0.13.2 returns no clip here; the 0.9 manual: "returns entire original audio"
    assert generate_clip_times_df(3.0, 5, final_clip=None).values.tolist() == [[0.0, 3.0]]


def test_make_clip_df_copies_labels_from_a_label_table(tmp_path):
    for name, seconds in [("a.wav", 10.5), ("b.wav", 3.0)]:
        soundfile.write(tmp_path / name, np.zeros(int(seconds * 8000), np.float32), 8000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    files = [str(tmp_path / n) for n in ("a.wav", "b.wav", "bad.wav", "a.wav")]
    labels = pd.DataFrame({"x": [1, 0, 1, 0], "y": [0, 1, 1, 1]}, index=files)  # a.wav twice: first row wins
    df, invalid = make_clip_df(labels, 5, return_invalid_samples=True)
    assert df.reset_index().values.tolist() == [
        [files[0], 0.0, 5.0, 1, 0], [files[0], 5.0, 10.0, 1, 0], [files[1], 0.0, 3.0, 0, 1]]
    assert df.dtypes.tolist() == [np.int64, np.int64]
    assert list(invalid.columns) == ["file", "start_time", "end_time", "stage", "error"]
    assert invalid.file.tolist() == [files[2]] and invalid.stage.tolist() == ["load"]
    assert "bad.wav" in invalid.error.iloc[0]
    assert make_clip_df([], 5).empty and list(make_clip_df([], 5).index.names) == ["file", "start_time", "end_time"]
    with pytest.raises(GetDurationError, match="bad.wav") as info:
        make_clip_df(files, 5, raise_exceptions=True)
    assert isinstance(info.value, AudioLoadError) and isinstance(info.value, ValueError)
    with pytest.raises(GetDurationError):
        make_clip_df(files, 5, raise_errors=True)  # older opso_nb spelling


def test_make_clip_df_keeps_non_utf8_names_losslessly(tmp_path):
    name = os.fsencode(tmp_path) + b"/nuit_\xe9t\xe9.wav"
    Audio(np.zeros(8000 * 6), 8000).save(os.fsdecode(name))  # saving works with such names too
    df = make_clip_df([name], 5)
    stored = df.index.get_level_values("file")[0]
    assert os.fsencode(stored) == name and len(df) == 1
    assert Audio.from_file(stored, duration=1).duration == 1.0


def test_small_utilities_known_answers():
    assert utils.binarize([0.2, 0.5, 0.7], 0.5) == [0, 0, 1]
    assert utils.inrange(5, (0, 5)) and not utils.inrange(5.1, (0, 5))
    assert utils.isNan(float("nan")) and not utils.isNan(3) and not utils.isNan("a")
    assert utils.overlap([0, 5], [3, 10]) == 2 and utils.overlap([0, 5], [6, 10]) == 0
    assert utils.overlap([0, 10], [2, 3]) == 1
    assert utils.overlap_fraction([0, 4], [3, 10]) == 0.25
    with pytest.raises(ValueError):
        utils.overlap([5, 0], [1, 2])
    scaled, vector = utils.rescale_features(np.array([[1.0, -4], [2, 2], [-3, 1]]))
    np.testing.assert_allclose(scaled, [[0.5, -2], [1, 1], [-1.5, 0.5]])
    np.testing.assert_allclose(vector, [2, 2])
    np.testing.assert_allclose(utils.rescale_features([[1.0, 1.0]], [2, 4])[0], [[0.5, 0.25]])
    assert utils.sigmoid(0) == 0.5
    np.testing.assert_allclose(utils.sigmoid(np.array([-1, 1])), [0.26894142, 0.73105858])
    assert utils.sigmoid(-1000) == 0.0  # no overflow warning
    np.random.seed(0)
    np.testing.assert_allclose(utils.jitter(np.zeros(3), 1), [1.76405235, 0.40015721, 0.97873798])
    assert -2 <= utils.jitter(0.0, 2, "uniform") <= 2
    with pytest.raises(ValueError, match="gaussian"):
        utils.jitter(0.0, 1, "other")
    assert utils.identity(3) == 3
    assert utils.hex_to_time("5F16A04E") == dt.datetime(2020, 7, 21, 7, 59, 10, tzinfo=dt.timezone.utc)
    np.testing.assert_allclose(utils.linear_scale(np.array([0, 0.5, 2])), [0, 127.5, 255])
    np.testing.assert_allclose(utils.min_max_scale(np.array([1, 2, 3.0])), [0, 0.5, 1])


def test_rescale_keeps_float32_and_matches_float64():
    x = np.random.default_rng(0).uniform(-120, 0, 1000).astype(np.float32)
    fast = utils.rescale(x, (-100, -20), (0, 1))
    slow = np.clip((x.astype(np.float64) + 100) / 80, 0, 1)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, slow, atol=1e-6)


def test_load_metadata(tmp_path):
    soundfile.write(tmp_path / "t.wav", np.zeros(10), 8000)
    with soundfile.SoundFile(tmp_path / "t.wav", "r+") as f:
        f.artist = "me"
    assert utils.load_metadata(tmp_path / "t.wav") == {"artist": "me"}
    assert utils.load_metadata(tmp_path / "missing.wav") is None
    with pytest.raises(AudioLoadError):
        utils.load_metadata(tmp_path / "missing.wav", raise_exceptions=True)


def _import_graph(package_dir: Path) -> dict:
    """{module: modules of the package it imports anywhere (also inside functions)} read with ast."""
    modules = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name and c != "opso_nb"}
        graph[name] = targets
    return graph


def test_audio_modules_take_part_in_no_import_cycle():
    graph = _import_graph(Path(utils.__file__).parent)
    mine = ["opso_nb.audio", "opso_nb.audio_io", "opso_nb.utils", "opso_nb.aru", "opso_nb.spectrogram"]

    def reaches(start, target, seen=()):
        return any(nxt == target or (nxt not in seen and reaches(nxt, target, (*seen, nxt)))
                   for nxt in graph.get(start, ()))

    assert "opso_nb.audio" not in graph["opso_nb.utils"]
    for module in mine:
        assert not reaches(module, module), f"{module} imports itself through a cycle"


def test_opso_metadata_text_round_trip_and_errors():
    start = dt.datetime(2020, 4, 4, 10, 25, 2, tzinfo=dt.timezone.utc)
    text = aru.generate_opso_metadata_str({"recording_start_time": start, "gain": np.int64(2), "note": "é"})
    back = aru.parse_opso_metadata(text)
    assert back["recording_start_time"] == start and back["gain"] == 2 and back["note"] == "é"
    assert back["opso_metadata_version"] == "v0.1"
    with pytest.raises(ValueError, match="not opso metadata"):
        aru.parse_opso_metadata("Recorded at 10:25:00 04/04/2020 (UTC) by AudioMoth 24526B065D325963")
    with pytest.raises(ValueError, match="malformed"):
        aru.parse_opso_metadata("opso_metadata{not json")
    with pytest.raises(ValueError, match="version"):
        aru.generate_opso_metadata_str({}, version="v9")
    # a broken opso comment does not stop AudioMoth parsing of the rest
    assert aru.parse_audiomoth_metadata({"comment": "opso_metadata{oops", "artist": "x"})["artist"] == "x"
