"""Review, label and calibrate: sampling, the crash-safe label store, calibration with known answers."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from opso_nb.review import (
    LabelStore,
    ReviewSession,
    ReviewSettings,
    ReviewTooSmallWarning,
    ScoreTableError,
    calibrate,
    confirmed_detections,
    export_raven,
    file_start_times,
    labels_to_one_hot,
    limits_text,
    precision_recall_table,
    read_score_table,
    review_folder_name,
    score_table_choices,
    select_clips,
)
from opso_nb.utils import CLIP_INDEX


def score_table(values, files=("a.wav",), clip=3.0, column="frog"):
    values = np.asarray(values, dtype=float)
    n_per = int(np.ceil(len(values) / len(files)))
    rows = [(files[i // n_per], (i % n_per) * clip, (i % n_per + 1) * clip) for i in range(len(values))]
    index = pd.MultiIndex.from_tuples(rows, names=CLIP_INDEX)
    return pd.DataFrame({column: values}, index=index)


def labelled(scores, present, column="frog"):
    return pd.DataFrame({"class": column, "label": np.where(present, "present", "absent")}, index=scores.index)


# --------------------------------------------------------------------------- selection
def test_stratified_selection_draws_equal_numbers_per_bin_and_repeats_with_the_seed():
    rng = np.random.default_rng(3)
    scores = score_table(rng.beta(0.5, 3, 2000))  # most scores low: plain random sampling would miss high bins
    first = select_clips(scores, "frog", strategy="stratified", n=40, n_bins=4, seed=11)
    again = select_clips(scores, "frog", strategy="stratified", n=40, n_bins=4, seed=11)
    other = select_clips(scores, "frog", strategy="stratified", n=40, n_bins=4, seed=12)
    pd.testing.assert_frame_equal(first, again)
    assert not first.index.equals(other.index)
    counts = first.groupby("bin").size()
    edges = np.linspace(scores.frog.min(), scores.frog.max(), 5)
    population = np.histogram(scores.frog, bins=edges)[0]
    for b, pop in enumerate(population):
        assert counts.get(b, 0) == min(10, pop)
        # weights: each chosen clip stands for its bin's population share
        if pop:
            assert first[first.bin == b].weight.sum() == pytest.approx(pop)
    assert first.index.isin(scores.index).all()


def test_stratified_selection_shares_the_remainder_among_bins_by_seed():
    scores = score_table(np.linspace(0, 1, 1000))  # about 200 clips in each of 5 bins
    extra_bins = set()
    for seed in range(8):
        picked = select_clips(scores, "frog", strategy="stratified", n=53, n_bins=5, seed=seed)
        counts = picked.groupby("bin").size()
        assert len(picked) == 53 and sorted(counts) == [10, 10, 11, 11, 11]  # 53 = 5 x 10 + 3
        extra_bins.add(tuple(counts.index[counts == 11]))
        population = picked.groupby("bin").weight.sum()
        sizes = pd.Series(np.histogram(scores.frog, bins=np.linspace(0, 1, 6))[0])
        pd.testing.assert_series_equal(population, sizes.astype(float), check_names=False, check_index_type=False)
    assert len(extra_bins) > 1  # the remainder does not always go to the same (e.g. the lowest) bins
    again = select_clips(scores, "frog", strategy="stratified", n=53, n_bins=5, seed=3)
    pd.testing.assert_frame_equal(again, select_clips(scores, "frog", strategy="stratified", n=53, n_bins=5, seed=3))


def test_stratified_selection_gives_a_small_bins_shortfall_to_the_others():
    # the top bin (0.75 - 1) holds 3 clips: it gives all 3, the other 37 are shared by the other bins
    scores = score_table(np.r_[np.linspace(0, 0.74, 300), [0.9, 0.95, 1.0]])
    picked = select_clips(scores, "frog", strategy="stratified", n=40, n_bins=4, seed=1)
    counts = picked.groupby("bin").size()
    assert len(picked) == 40 and counts[3] == 3 and sorted(counts[[0, 1, 2]]) == [12, 12, 13]
    assert (picked[picked.bin == 3].weight == 1.0).all()
    assert picked.weight.sum() == pytest.approx(len(scores))
    # fewer clips than asked only when the table holds fewer
    assert len(select_clips(scores.iloc[::20], "frog", strategy="stratified", n=40, n_bins=4)) == 16


def test_stratified_weights_stay_unbiased_whatever_the_allocation():
    # a quantity that varies within bins; the weighted sample sum estimates its whole-table sum
    rng = np.random.default_rng(9)
    s = np.r_[rng.beta(0.5, 3, 600), [0.97, 0.99]]  # the top bins hold a handful of clips
    truth = pd.Series(np.sin(12 * s) + s, index=score_table(s).index)
    scores = score_table(s)
    estimates = []
    for seed in range(300):
        picked = select_clips(scores, "frog", strategy="stratified", n=23, n_bins=6, seed=seed)
        assert len(picked) == 23
        estimates.append(float((picked.weight * truth.loc[picked.index]).sum()))
    # 300 draws: the standard error of the mean estimate is well under 1 % of the total
    assert np.mean(estimates) == pytest.approx(truth.sum(), rel=0.01)


def test_stratified_selection_warns_when_n_cannot_cover_every_bin():
    scores = score_table(np.linspace(0, 1, 100))
    with pytest.warns(UserWarning, match="cannot cover the 5 score bins"):
        picked = select_clips(scores, "frog", strategy="stratified", n=3, n_bins=5)
    assert len(picked) == 3 and picked.bin.nunique() == 3


def test_top_and_random_selection_and_limits():
    scores = score_table(np.linspace(0, 1, 100), files=("x_20200101_050000.wav", "y_20200102_050000.wav"))
    top = select_clips(scores, "frog", strategy="top", n=5)
    assert list(top.score) == sorted(scores.frog.nlargest(5), reverse=True)
    rand = select_clips(scores, "frog", strategy="random", n=10, seed=1)
    assert len(rand) == 10 and rand.weight.iloc[0] == pytest.approx(10.0)
    only_x = select_clips(scores, "frog", strategy="random", n=100, files=["x_20200101_050000.wav"])
    assert set(only_x.index.get_level_values("file")) == {"x_20200101_050000.wav"}
    in_range = select_clips(scores, "frog", strategy="top", n=100, score_range=(0.2, 0.3))
    assert in_range.score.between(0.2, 0.3).all() and len(in_range) == 10
    day2 = select_clips(scores, "frog", strategy="top", n=100, date_range=("2020-01-02", None))
    assert set(day2.index.get_level_values("file")) == {"y_20200102_050000.wav"}
    reviewed = top.index[:2]
    rest = select_clips(scores, "frog", strategy="top", n=3, exclude=reviewed)
    assert not rest.index.isin(reviewed).any()


def test_selection_rejects_tables_without_the_clip_index_and_unknown_classes():
    with pytest.raises(ValueError, match="file"):
        select_clips(pd.DataFrame({"frog": [0.1]}), "frog")
    with pytest.raises(KeyError, match="toad"):
        select_clips(score_table([0.1, 0.2]), "toad")


def test_file_start_times_reads_audiomoth_and_songmeter_names():
    got = file_start_times(["S4A03895_20190522_050000.wav", "20200401_235959.WAV", "notes.wav"])
    assert got["S4A03895_20190522_050000.wav"] == pd.Timestamp("2019-05-22 05:00:00")
    assert got["20200401_235959.WAV"] == pd.Timestamp("2020-04-01 23:59:59")
    assert pd.isna(got["notes.wav"])


# --------------------------------------------------------------------------- label store
def test_label_store_keeps_latest_label_resumes_and_tracks_progress(tmp_path):
    path = tmp_path / "labels.jsonl"
    clips = score_table([0.9, 0.5, 0.1])
    store = LabelStore(path, reviewer="ana")
    store.add(clips.index[0], "frog", "present", note="clear call")
    store.add(clips.index[1], "frog", "absent")
    store.add(clips.index[1], "frog", "unsure")  # changed mind: latest wins
    assert store.progress(clips, "frog") == (2, 3)
    reopened = LabelStore(path, reviewer="ana")
    labels = reopened.labels("frog")
    assert labels.loc[clips.index[0], "label"] == "present"
    assert labels.loc[clips.index[0], "note"] == "clear call"
    assert labels.loc[clips.index[1], "label"] == "unsure"
    assert reopened.next_unreviewed(clips, "frog") == 2
    reopened.remove(clips.index[0], "frog")
    assert reopened.progress(clips, "frog") == (1, 3)
    assert len(reopened.history()) == 4
    reopened.compact()
    assert len(LabelStore(path).history()) == 1
    with pytest.raises(ValueError, match="label"):
        store.add(clips.index[2], "frog", "maybe")


def test_label_store_keeps_non_utf8_file_names(tmp_path):
    name = os.fsdecode(b"/cards/caf\xe9_20200101_050000.wav")  # a Latin-1 name from a FAT card
    store = LabelStore(tmp_path / "l.jsonl")
    store.add((name, 0.0, 3.0), "frog", "present")
    got = LabelStore(tmp_path / "l.jsonl").labels()
    assert os.fsencode(got.index[0][0]) == b"/cards/caf\xe9_20200101_050000.wav"


def test_label_store_survives_kill_9(tmp_path):
    path = tmp_path / "labels.jsonl"
    script = textwrap.dedent(f"""
        import sys
        from opso_nb.review import LabelStore
        store = LabelStore({str(path)!r}, reviewer="loop")
        i = 0
        while True:
            store.add(("rec.wav", float(i), float(i + 3)), "frog", "present" if i % 2 else "absent", note=str(i))
            print(i, flush=True)
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    confirmed = -1
    deadline = time.time() + 60
    while confirmed < 50 and time.time() < deadline:
        confirmed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    labels = LabelStore(path).labels("frog")
    starts = set(labels.index.get_level_values("start_time"))
    assert confirmed >= 50
    assert set(float(i) for i in range(confirmed + 1)) <= starts  # every confirmed click is on disk
    for raw in path.read_bytes().splitlines()[:-1]:
        json.loads(raw)  # every complete line parses


def test_a_label_after_a_torn_last_line_is_kept(tmp_path):
    path = tmp_path / "labels.jsonl"
    store = LabelStore(path)
    store.add(("rec.wav", 0.0, 3.0), "frog", "present")
    with open(path, "ab") as handle:
        handle.write(b'{"file": "rec.wav", "start_ti')  # power lost mid-write
    store.add(("rec.wav", 3.0, 6.0), "frog", "absent")
    with pytest.warns(UserWarning, match="1 unreadable line"):
        labels = LabelStore(path).labels("frog")
    assert labels["label"].tolist() == ["present", "absent"]


# --------------------------------------------------------------------------- calibration
def test_calibration_recovers_known_logistic_parameters():
    # scores uniform on [0, 1]; P(present | s) = 1 / (1 + exp(-(-6 + 12 s)))
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 1, 5000)
    present = rng.uniform(size=s.size) < 1 / (1 + np.exp(-(-6 + 12 * s)))
    scores = score_table(s)
    result = calibrate(scores, labelled(scores, present), "frog", n_bootstrap=0)
    # with 5000 clips the maximum-likelihood standard errors are about 0.2 (intercept)
    # and 0.35 (slope); 0.8 and 1.4 allow four of them
    assert result.intercept == pytest.approx(-6, abs=0.8)
    assert result.slope == pytest.approx(12, abs=1.4)
    assert result.score_for_probability(0.5) == pytest.approx(0.5, abs=0.03)
    assert result.stable and result.n_reviewed == 5000


def test_threshold_for_precision_matches_the_analytic_answer():
    # scores uniform on [0, 1] and P(present | s) = s: precision above t is (1 + t) / 2, so 0.9 at t = 0.8
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 1, 20000)
    present = rng.uniform(size=s.size) < s
    scores = score_table(s)
    result = calibrate(scores, labelled(scores, present), "frog", target_precision=0.9, n_bootstrap=200)
    assert result.threshold == pytest.approx(0.8, abs=0.02)
    lo, hi = result.threshold_ci
    assert lo <= result.threshold <= hi and hi - lo < 0.1
    row = result.table.set_index("threshold").loc[result.threshold]
    assert row.precision >= 0.9


def test_weighted_stratified_review_estimates_whole_table_precision():
    # a stratified sample over-represents high scores; its weights undo that
    rng = np.random.default_rng(2)
    s = rng.beta(0.6, 2.5, 30000)
    truth = rng.uniform(size=s.size) < s
    scores = score_table(s)
    sample = select_clips(scores, "frog", strategy="stratified", n=3000, n_bins=10, seed=4)
    labels = labelled(scores, truth).loc[sample.index]
    weighted = calibrate(scores, labels, "frog", weights=sample.weight, n_bootstrap=0)
    t = 0.5
    true_precision = truth[s >= t].mean()
    est = weighted.table[weighted.table.threshold >= t].iloc[0].precision
    assert est == pytest.approx(true_precision, abs=0.03)


def test_small_reviews_warn_and_unsure_is_left_out():
    scores = score_table([0.9, 0.8, 0.2, 0.1, 0.5])
    labels = pd.DataFrame({"class": "frog", "label": ["present", "present", "absent", "absent", "unsure"]},
                          index=scores.index)
    with pytest.warns(ReviewTooSmallWarning, match="only 4"):
        result = calibrate(scores, labels, "frog", n_bootstrap=10)
    assert not result.stable and result.n_reviewed == 4


def test_precision_recall_table_counts():
    table = precision_recall_table([0.9, 0.8, 0.7, 0.1], [True, False, True, False])
    row = table.set_index("threshold").loc[0.7]
    assert (row.true_positives, row.false_positives, row.n_above) == (2, 1, 3)
    assert row.precision == pytest.approx(2 / 3) and row.recall == 1.0
    # no clip present: recall is 0, not NaN, as opso_nb.metrics (scikit-learn's zero_division=0)
    assert precision_recall_table([0.2, 0.4], [False, False]).recall.tolist() == [0.0, 0.0]


def tied_review(seed, n=400):
    """Reviewed scores rounded to 0.05 (many ties), answers more often present at high scores, and weights."""
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(0, 1, n) / 0.05) * 0.05
    present = rng.uniform(size=n) < s
    weights = rng.choice([1.0, 2.5, 7.0], n)
    return s, present, weights


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_table_matches_sklearn_and_the_detection_curve(seed):
    from sklearn.metrics import precision_recall_curve

    from opso_nb.detection import precision_recall_curve_table

    s, present, weights = tied_review(seed)
    for w in (None, weights):
        table = precision_recall_table(s, present, w)
        precision, recall, thresholds = precision_recall_curve(present, s, sample_weight=w, drop_intermediate=False)
        # same rule (score >= threshold) and thresholds; sklearn's last point (nothing detected) has none
        np.testing.assert_array_equal(table.threshold, thresholds)
        np.testing.assert_allclose(table.precision, precision[:-1])
        np.testing.assert_allclose(table.recall, recall[:-1])
        assert (table.n_above == [(s >= t).sum() for t in table.threshold]).all()
    assert len(table) < len(s)  # ties were there to be tested
    # the detection module's curve is the same table, row by row
    scores = score_table(s)
    curve = precision_recall_curve_table(scores, pd.DataFrame({"frog": present.astype(int)}, index=scores.index))
    unweighted = precision_recall_table(s, present)
    np.testing.assert_allclose(curve[["threshold", "tp", "fp", "fn", "precision", "recall"]].to_numpy(dtype=float),
                               unweighted[["threshold", "true_positives", "false_positives", "false_negatives",
                                           "precision", "recall"]].to_numpy(dtype=float))


def test_calibrated_threshold_picks_the_same_clips_with_detect():
    from opso_nb.detection import detect, threshold_for_precision

    s, present, _ = tied_review(4, n=300)
    scores = score_table(s)
    result = calibrate(scores, labelled(scores, present), "frog", target_precision=0.8, n_bootstrap=0)
    hits = detect(scores, {"frog": result.threshold})["frog"].to_numpy()
    row = result.table.set_index("threshold").loc[result.threshold]
    assert hits.sum() == row.n_above and present[hits].mean() == pytest.approx(row.precision)
    as_table = pd.DataFrame({"frog": present.astype(int)}, index=scores.index)
    assert threshold_for_precision(scores, as_table, 0.8)["frog"] == result.threshold


# --------------------------------------------------------------------------- closing the loop
def test_labels_become_one_hot_training_labels_and_raven_tables(tmp_path):
    from opso_nb.annotations import BoxedAnnotations

    scores = score_table([0.9, 0.7, 0.2], files=("rec.wav",))
    scores["toad"] = [0.1, 0.8, 0.3]
    store = LabelStore(tmp_path / "l.jsonl")
    for clip, frog, toad in zip(scores.index, ["present", "absent", "unsure"], ["absent", "present", "absent"]):
        store.add(clip, "frog", frog)
        store.add(clip, "toad", toad)
    one_hot = labels_to_one_hot(store.labels(), classes=["frog", "toad"])
    assert list(one_hot.columns) == ["frog", "toad"]
    assert one_hot.to_numpy().tolist() == [[1, 0], [0, 1]]  # the unsure clip is dropped
    assert labels_to_one_hot(store.labels(), unsure="absent").shape == (3, 2)
    found = confirmed_detections(store.labels(), scores=scores)
    assert set(zip(found["class"], found.score)) == {("frog", 0.9), ("toad", 0.8)}
    written = export_raven(store.labels(), tmp_path / "raven", scores=scores, high_f=8000)
    back = BoxedAnnotations.from_raven_files(written, audio_files=["rec.wav"] * len(written))
    assert sorted(back.df["annotation"]) == ["frog", "toad"]
    assert sorted(back.df["start_time"]) == [0.0, 3.0]


def test_review_settings_drive_selection():
    settings = ReviewSettings(class_name="frog", strategy="top", n=2)
    picked = settings.select(score_table([0.1, 0.5, 0.9]))
    assert list(picked.score) == [0.9, 0.5]


def test_calibration_recovers_parameters_on_any_score_scale():
    # RIBBIT scores are about 1e-3, logits about 10: the same curve on both scales gives the same answer
    rng = np.random.default_rng(5)
    s = rng.uniform(0, 1, 4000)
    present = rng.uniform(size=s.size) < 1 / (1 + np.exp(-(-6 + 12 * s)))
    for scale in (1e-3, 1e3):
        scores = score_table(s * scale)
        result = calibrate(scores, labelled(scores, present), "frog", n_bootstrap=0)
        # same tolerances as above (four standard errors of a 4000-clip fit), on the rescaled slope
        assert result.intercept == pytest.approx(-6, abs=0.9)
        assert result.slope * scale == pytest.approx(12, abs=1.6)
        assert result.score_for_probability(0.5) / scale == pytest.approx(0.5, abs=0.03)


# --------------------------------------------------------------------------- score tables on disk
def test_read_score_table_from_csv_parquet_and_a_prediction_folder(tmp_path):
    from opso_nb.ml.prediction import predict
    from tests._prediction_stub import tiny_model, write_test_wav

    table = score_table([0.25, 0.5, 0.75], files=("a.wav",))
    table["note"] = ["x", "y", "z"]  # text: left out with a warning
    table.reset_index().to_csv(tmp_path / "s.csv", index=False)
    with pytest.warns(UserWarning, match="note"):
        got = read_score_table(tmp_path / "s.csv")
    assert list(got.columns) == ["frog"] and got.index.names == CLIP_INDEX
    assert got.frog.tolist() == [0.25, 0.5, 0.75] and got.index[1] == ("a.wav", 3.0, 6.0)
    table[["frog"]].to_parquet(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(read_score_table(tmp_path / "s.parquet"), got, check_index_type=False)
    # a prediction run's folder: the scores as predict returned them
    audio = tmp_path / "audio"
    audio.mkdir()
    files = [str(write_test_wav(audio / "rec.wav", 6.0))]
    direct = predict(tiny_model(sample_duration=2.0), files, progress=False, output_path=tmp_path / "run")
    from_folder = read_score_table(tmp_path / "run")
    assert from_folder.shape == (3, 2) and np.allclose(from_folder.to_numpy(), direct.to_numpy())
    assert score_table_choices(tmp_path) == ["run", "s.csv", "s.parquet"]
    assert score_table_choices(tmp_path / "run") == ["."]
    assert score_table_choices(tmp_path / "nothing") == []


@pytest.mark.parametrize("content, problem", [
    ("frog\n0.1\n", "needs the columns"),
    ("file,start_time,end_time,kind\na.wav,0,3,frog\n", "no column of scores"),
    ("file,start_time,end_time,frog\n", "holds no clips"),
    ("file,start_time,end_time,frog\na.wav,0,3,0.1\na.wav,0,3,0.2\n", "listed more than once"),
    ("file,start_time,end_time,frog\na.wav,3,1,0.1\n", "ends before it starts"),
    ("file,start_time,end_time,frog\n,0,3,0.1\n", "no file name"),
    ("file,start_time,end_time,frog\na.wav,zero,3,0.1\n", "missing time"),
])
def test_read_score_table_names_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ScoreTableError, match=problem) as info:
        read_score_table(path)
    assert str(path) in str(info.value)


def test_read_score_table_refuses_what_is_not_a_table(tmp_path):
    (tmp_path / "binary.parquet").write_bytes(b"\x00\x01 not parquet")
    with pytest.raises(ScoreTableError, match="cannot be read"):
        read_score_table(tmp_path / "binary.parquet")
    (tmp_path / "scores.txt").write_text("file,start_time,end_time,frog\n")
    with pytest.raises(ScoreTableError, match="not a score table"):
        read_score_table(tmp_path / "scores.txt")
    with pytest.raises(ScoreTableError, match="no such file"):
        read_score_table(tmp_path / "missing.csv")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ScoreTableError, match="prediction output"):
        read_score_table(tmp_path / "empty_run")
    with pytest.raises(ScoreTableError, match="holds no clips"):
        read_score_table(score_table([]))


def test_review_folder_names_keep_tables_apart(tmp_path):
    a, b = tmp_path / "x" / "scores.csv", tmp_path / "y" / "scores.csv"
    assert review_folder_name(a) != review_folder_name(b)
    assert review_folder_name(a).startswith("scores-") and review_folder_name(a) == review_folder_name(a)


# --------------------------------------------------------------------------- review sessions
def session_table():
    rng = np.random.default_rng(8)
    return score_table(rng.uniform(0, 1, 120), files=("n1_20200101_050000.wav", "n2_20200102_050000.wav"))


def test_session_resumes_with_the_same_sample_at_the_next_unlabelled_clip(tmp_path):
    scores = session_table()
    settings = ReviewSettings(class_name="frog", n=12, n_bins=3, seed=4, reviewer="ana")
    first = ReviewSession.open(scores, settings, tmp_path)
    assert len(first) == 12 and first.progress() == (0, 12) and first.position == 0
    # stratified clips come shuffled: not in score order
    assert not first.sample.score.is_monotonic_increasing
    shown = [first.current]
    first.label("present", note="loud")
    shown.append(first.current)
    first.label("absent")
    skipped = first.current
    first.skip()  # the third clip stays without a label
    assert first.position == 3 and first.progress() == (2, 12)
    # reopened (another day, other settings on screen): same clips, at the first one without a label
    settings.seed, settings.n = 99, 30
    again = ReviewSession.open(scores, settings, tmp_path)
    assert again.sample.index.equals(first.sample.index) and again.sampling["seed"] == 4
    assert again.position == 2 and again.current == skipped  # the skipped clip is the first without a label
    assert again.labels.loc[shown[0], "note"] == "loud"
    # a new sample keeps the labels
    fresh = ReviewSession.open(scores, settings, tmp_path, new_sample=True)
    assert len(fresh) == 30 and fresh.sampling["seed"] == 99
    assert len(fresh.store.labels("frog")) == 2


def test_session_navigation_label_skip_back(tmp_path):
    scores = score_table([0.1, 0.2, 0.3, 0.4])
    session = ReviewSession.open(scores, ReviewSettings(class_name="frog", strategy="top", n=4), tmp_path)
    assert [c[1] for c in session.sample.index] == [9.0, 6.0, 3.0, 0.0]  # top: highest first
    session.skip()                       # clip 0 left without a label
    session.label("present")             # clip 1
    assert session.position == 2
    session.back()                       # back to clip 1, shows its answer
    assert session.position == 1 and session.current_label()["label"] == "present"
    session.label("absent")              # relabel: latest wins, then on to clip 2
    assert session.position == 2 and session.labels.loc[session.sample.index[1], "label"] == "absent"
    session.label("unsure")
    session.label("present")             # clip 3; then wraps round to the skipped clip 0
    assert session.position == 0
    session.skip()                       # the only clip left: past the end
    assert session.position == 4 and session.current is None and not session.finished
    with pytest.raises(IndexError):
        session.label("present")
    session.back()
    assert session.position == 0
    session.label("absent")
    assert session.finished and session.current is None and session.progress() == (4, 4)
    session.go_to(0)
    with pytest.raises(ValueError, match="label"):
        session.label("maybe")
    assert session.current_label()["label"] == "absent"  # nothing written by the refused label


def test_session_redraws_when_the_table_changed_and_limits_files(tmp_path):
    scores = session_table()
    settings = ReviewSettings(class_name="frog", n=10, n_bins=2)
    ReviewSession.open(scores, settings, tmp_path)
    smaller = scores.iloc[:50]  # the saved sample has clips this table lacks
    with pytest.warns(UserWarning, match="not in the score table"):
        session = ReviewSession.open(smaller, settings, tmp_path, files=["n1_20200101_050000.wav"])
    assert set(session.sample.index.get_level_values("file")) == {"n1_20200101_050000.wav"}
    with pytest.raises(KeyError, match="toad"):
        ReviewSession.open(scores, ReviewSettings(class_name="toad"), tmp_path)


def test_review_settings_limits_select_what_select_clips_selects():
    scores = session_table()
    day2 = ("2020-01-02 05:00:30", "2020-01-02 05:02:00")
    settings = ReviewSettings(class_name="frog", n=10, n_bins=2, seed=5, files=["n2_20200102_050000.wav"],
                              score_range=(0.2, 0.7))
    expected = select_clips(scores, "frog", n=10, n_bins=2, seed=5, files=["n2_20200102_050000.wav"],
                            score_range=(0.2, 0.7))
    pd.testing.assert_frame_equal(settings.select(scores), expected)
    assert set(expected.index.get_level_values("file")) == {"n2_20200102_050000.wav"}
    assert expected.score.between(0.2, 0.7).all()
    settings.date_range = tuple(pd.Timestamp(d) for d in day2)
    pd.testing.assert_frame_equal(settings.select(scores), select_clips(
        scores, "frog", n=10, n_bins=2, seed=5, files=["n2_20200102_050000.wav"], score_range=(0.2, 0.7),
        date_range=day2))
    # no limits: the whole table, as before the limits existed
    plain = ReviewSettings(class_name="frog", n=10, n_bins=2, seed=5)
    pd.testing.assert_frame_equal(plain.select(scores), select_clips(scores, "frog", n=10, n_bins=2, seed=5))


def test_sampling_settings_round_trip_through_json():
    settings = ReviewSettings(strategy="random", n=7, seed=3, files=["a.wav", "b\udcff.wav"],
                              date_range=(pd.Timestamp("2020-01-01 05:00"), pd.Timestamp("2020-01-02 06:30")),
                              score_range=(0.25, 0.5))
    saved = json.loads(json.dumps(settings.sampling()))
    assert saved["date_range"] == ["2020-01-01T05:00:00", "2020-01-02T06:30:00"]
    assert saved["score_range"] == [0.25, 0.5] and saved["files"] == ["a.wav", "b\udcff.wav"]
    again = ReviewSettings()
    again.use_sampling(saved)
    for name in ("strategy", "n", "seed", "files", "date_range", "score_range"):
        assert getattr(again, name) == getattr(settings, name), name
    # a sample saved before the limits existed was drawn from the whole table
    again.use_sampling({"strategy": "top", "n": 5, "n_bins": 2, "seed": 0})
    assert again.files == [] and again.date_range is None and again.score_range is None
    assert limits_text(saved) == ("2 recording(s) (a.wav, b\\xff.wav); clips recorded from 2020-01-01 05:00 "
                                  "to 2020-01-02 06:30; scores from 0.25 to 0.5")
    assert limits_text(again.sampling()) == ""
    # a score range holding every score of the class is no limit
    assert limits_text({"score_range": [0.0, 1.0]}, class_scores=[0.1, 0.9]) == ""
    assert limits_text({"score_range": [0.0, 0.5]}, class_scores=[0.1, 0.9]) == "scores from 0 to 0.5"


def test_session_limits_are_saved_with_the_sample_and_restored_on_reopening(tmp_path):
    scores = session_table()
    settings = ReviewSettings(class_name="frog", n=8, n_bins=2, seed=1, reviewer="ana", score_range=(0.3, 0.9),
                              files=["n1_20200101_050000.wav"])
    # the clips whose audio was found (files=) and the chosen recordings (settings.files) both hold
    first = ReviewSession.open(scores, settings, tmp_path, files=["n1_20200101_050000.wav", "n2_20200102_050000.wav"])
    expected = select_clips(scores, "frog", n=8, n_bins=2, seed=1, score_range=(0.3, 0.9),
                            files=["n1_20200101_050000.wav"])
    pd.testing.assert_frame_equal(first.sample.sort_index(), expected.sort_index())
    saved = json.loads(first.sample_path.read_text())["sampling"]
    assert saved["score_range"] == [0.3, 0.9] and saved["files"] == ["n1_20200101_050000.wav"]
    assert saved["date_range"] is None
    first.label("present")
    # reopened with other limits on screen: the saved sample and its own limits, not a mix
    other = ReviewSettings(class_name="frog", reviewer="ana", score_range=(0.0, 0.1))
    again = ReviewSession.open(scores, other, tmp_path)
    assert again.sample.index.equals(first.sample.index) and again.progress() == (1, 8)
    other.use_sampling(again.sampling)
    assert other.score_range == (0.3, 0.9) and other.files == ["n1_20200101_050000.wav"]
    # a new sample with other limits is saved with them; the earlier answer stays in the store, out of this sample
    fresh = ReviewSession.open(scores, ReviewSettings(class_name="frog", reviewer="ana", n=8, score_range=(0.0, 0.1)),
                               tmp_path, new_sample=True)
    assert fresh.sample.score.between(0.0, 0.1).all() and fresh.sampling["score_range"] == [0.0, 0.1]
    assert fresh.sampling["files"] == [] and fresh.progress()[0] == 0 and len(fresh.store.labels("frog")) == 1
    # the export says how the sample was limited
    with pytest.warns(ReviewTooSmallWarning):
        written = fresh.export(tmp_path / "export")
    assert json.loads(written["threshold"].read_text())["sampling"]["score_range"] == [0.0, 0.1]


def test_an_empty_limited_sample_is_drawn_again_with_its_own_limits(tmp_path):
    scores = session_table()
    settings = ReviewSettings(class_name="frog", n=6, n_bins=2, score_range=(0.5, 1.0))
    # no recording found yet: nothing to draw, whatever the limits
    empty = ReviewSession.open(scores, settings, tmp_path, files=[])
    assert len(empty) == 0 and empty.current is None and empty.progress() == (0, 0)
    with pytest.raises(IndexError):
        empty.label("present")
    # limits that hold no clip
    outside = ReviewSession.open(scores, ReviewSettings(class_name="frog", n=6, score_range=(2.0, 3.0)),
                                 tmp_path / "other")
    assert len(outside) == 0 and outside.sampling["score_range"] == [2.0, 3.0]
    # reopened once the recordings are found: drawn again, with the limits it was saved with
    found = ReviewSession.open(scores, ReviewSettings(class_name="frog"), tmp_path,
                               files=["n1_20200101_050000.wav", "n2_20200102_050000.wav"])
    assert len(found) == 6 and found.sample.score.between(0.5, 1.0).all()
    assert found.sampling["score_range"] == [0.5, 1.0] and found.sampling["n"] == 6


def test_session_calibrates_with_weights_and_exports_files_that_read_back(tmp_path):
    from opso_nb.annotations import BoxedAnnotations

    rng = np.random.default_rng(3)
    s = rng.beta(0.6, 2.5, 3000)
    truth = pd.Series(rng.uniform(size=s.size) < s, index=score_table(s).index)
    scores = score_table(s, files=tuple(f"rec{i}.wav" for i in range(10)))
    truth.index = scores.index
    session = ReviewSession.open(scores, ReviewSettings(class_name="frog", n=400, n_bins=8, seed=2), tmp_path)
    while session.current is not None:
        session.label("present" if truth[session.current] else "absent")
    result = session.calibrate(target_precision=0.8, n_bootstrap=100)
    # weights undo the over-sampling of high scores: precision above 0.5 matches the whole table's
    est = result.table[result.table.threshold >= 0.5].iloc[0].precision
    assert est == pytest.approx(truth[s >= 0.5].mean(), abs=0.06)
    unweighted = calibrate(scores, session.reviewed()[["class", "label"]], "frog", n_bootstrap=0)
    assert result.threshold <= unweighted.threshold or not np.isfinite(unweighted.threshold)
    written = session.export(tmp_path / "export", result, score_table="synthetic")
    labels = pd.read_csv(written["labels"])
    assert len(labels) == len(session) and set(labels.label) == {"present", "absent"}
    assert labels.weight.sum() == pytest.approx(3000)  # the sample stands for the whole table
    saved = json.loads(written["threshold"].read_text())
    assert saved["threshold"] == pytest.approx(result.threshold) and saved["score_table"] == "synthetic"
    assert saved["sampling"]["n_bins"] == 8
    back = BoxedAnnotations.from_raven_files(written["raven"], audio_files=[p.name.split(".")[0] + ".wav"
                                                                            for p in written["raven"]])
    assert len(back.df) == int((labels.label == "present").sum())


def test_export_writes_a_training_table_that_trains_a_cnn_and_the_training_monitor_reads(tmp_path):
    from opso_nb.ml.training_run import read_labels_table
    from opso_nb.workspace import clip_sources, load_clips
    from tests._prediction_stub import tiny_model, write_test_wav

    audio = tmp_path / "audio"
    audio.mkdir()
    paths = {f"night{i}.wav": write_test_wav(audio / f"night{i}.wav", 8.0, seed=i) for i in (1, 2)}
    # the table names recordings by base name (written elsewhere); the session resolves them to these files
    scores = score_table(np.linspace(0.05, 0.95, 8), files=tuple(paths), clip=2.0)
    session = ReviewSession.open(scores, ReviewSettings(class_name="frog", strategy="top", n=8), tmp_path / "rev",
                                 audio_paths={name: str(path) for name, path in paths.items()})
    answers = ["present", "present", "absent", "unsure", "present", "absent", "absent", "absent"]
    for answer in answers:
        session.label(answer)
    with pytest.warns(ReviewTooSmallWarning):
        written = session.export(tmp_path / "export")

    table = pd.read_csv(written["training_labels"])
    assert list(table.columns) == ["file", "start_time", "end_time", "frog"]
    assert len(table) == 7 and table.frog.sum() == 3  # the unsure clip is left out
    assert set(table.file) == {str(p) for p in paths.values()}  # full paths: the CSV works from any folder
    # labels.csv (one row per answer, with notes and weights) is not a training table; the new one is
    with pytest.raises(ValueError, match="only 0/1"):
        read_labels_table(written["labels"])
    folder = written["training_labels"].parent
    assert "training_labels.csv" in clip_sources(folder)  # offered by the training monitor
    clips, failures = load_clips(folder, "training_labels.csv", 2.0)  # what the training monitor does
    assert len(clips) == 7 and list(clips.columns) == ["frog"] and failures.empty

    model = tiny_model(classes=("frog",))
    model.train(read_labels_table(written["training_labels"]), None, epochs=1, batch_size=4,
                save_path=tmp_path / "run", invalid_samples_log=None)
    assert model.current_epoch == 1 and np.isfinite(model.loss_hist[0]) and model.failed_samples.empty


def test_threshold_json_is_strict_when_no_threshold_is_reached(tmp_path):
    scores = score_table([0.9, 0.8, 0.2, 0.1])
    labels = pd.DataFrame({"class": "frog", "label": ["absent", "absent", "present", "absent"]}, index=scores.index)
    with pytest.warns(ReviewTooSmallWarning):
        result = calibrate(scores, labels, "frog", n_bootstrap=10)
    saved = json.loads(result.save(tmp_path / "t.json").read_text())  # json.loads rejects NaN? no: check text
    assert saved["threshold"] is None and "NaN" not in (tmp_path / "t.json").read_text()
