"""CNN training, evaluation, persistence and activation maps on tiny real data.

Data: synthetic 1 s clips written with soundfile (class low_tone = 1 kHz tone in noise,
high_tone = 4 kHz tone in noise), 64x64 one-channel spectrograms, resnet18 on CPU.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from opso_nb.metrics import roc_auc
from opso_nb.ml import cnn as cnn_module
from opso_nb.ml.cnn import CNN, ModelLoadError, load_model, separate_feat_clf, use_resample_loss
from opso_nb.ml.loss import ResampleLoss
from opso_nb.ml.sampling import ClassAwareSampler, ImbalancedDatasetSampler
from opso_nb.ml.utils import apply_activation_layer, make_tone_dataset

torch.set_num_threads(1)
CLASSES = ["low_tone", "high_tone"]
SHAPE = (64, 64, 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    train = make_tone_dataset(root / "train", n_per_class=8, seed=0)
    valid = make_tone_dataset(root / "valid", n_per_class=4, seed=1)
    return train, valid


def new_model(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("use_amp", False)  # float32 unless a test asks otherwise, whatever the CPU
    return CNN("resnet18", CLASSES, 1.0, sample_shape=SHAPE, weights=None, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    train, valid = data
    model = new_model(use_amp=True)  # bfloat16 maths must still learn (float32 runs in the other tests)
    folder = tmp_path_factory.mktemp("run")
    events = []
    # small batches: batch-norm running statistics settle within a few epochs on 16 clips
    model.train(train, valid, epochs=4, batch_size=2, save_path=folder, save_interval=2,
                invalid_samples_log=None, progress_callback=events.append)
    return model, folder, events


def test_trivially_separable_reaches_high_auc(trained):
    model, folder, events = trained
    table = model.metrics_table()
    assert list(table.index) == [0, 1, 2, 3]
    for col in ["train_loss", "valid_loss", "valid_map", "valid_macro_roc_auc", "valid_micro_roc_auc",
                "valid_precision", "valid_recall", "valid_f1"]:
        assert col in table.columns
    assert model.best_score >= 0.95
    assert table["valid_macro_roc_auc"].max() >= 0.95
    assert set(model.loss_hist) == {0, 1, 2, 3}
    # files written: best model, checkpoints every 2 epochs, metrics table
    assert (folder / "best.model").exists()
    assert sorted(p.name for p in folder.glob("epoch-*.model")) == ["epoch-1.model", "epoch-3.model"]
    assert pd.read_csv(folder / "metrics.csv").shape[0] == 4
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch") == 4 and kinds[-1] == "done" and kinds.count("batch") == 32


def test_best_model_and_scores_separate_classes(trained, data):
    model, folder, _ = trained
    _, valid = data
    best = model.best_model
    logits, failures = best._run_inference(valid, batch_size=4, num_workers=0)
    assert failures == []
    scores = apply_activation_layer(torch.as_tensor(logits), "sigmoid").numpy()
    for i, c in enumerate(CLASSES):
        assert roc_auc(valid[c].values, scores[:, i]) >= 0.95


def test_save_load_round_trip_identical_scores(trained, data, tmp_path):
    model, _, _ = trained
    _, valid = data
    path = tmp_path / "m.model"
    model.save(path)
    raw = torch.load(path, weights_only=True)  # only tensors and plain values inside
    assert raw["format_version"] == cnn_module.MODEL_FORMAT_VERSION
    loaded = load_model(path, device="cpu")
    assert loaded.classes == CLASSES and loaded.sample_duration == 1.0 and loaded.single_target is False
    assert loaded.architecture_name == "resnet18" and loaded.current_epoch == 4 and loaded.use_amp is True
    assert type(loaded.preprocessor) is type(model.preprocessor)
    assert loaded.preprocessor.to_dict() == model.preprocessor.to_dict()
    assert loaded.best_score == pytest.approx(model.best_score)
    pd.testing.assert_frame_equal(loaded.train_metrics, model.train_metrics, check_dtype=False,
                                  check_index_type=False, check_names=False)
    a, _ = model._run_inference(valid, 4, 0)
    b, _ = loaded._run_inference(valid, 4, 0)
    np.testing.assert_array_equal(a, b)


def test_predict_delegates_to_prediction_module(trained, data):
    model, _, _ = trained
    _, valid = data
    scores = model.predict(valid, activation_layer="sigmoid", split_files_into_clips=False)
    overlapping = model.predict(valid.index.get_level_values("file")[:1], clip_overlap=0.5, progress=False)
    assert overlapping.index.get_level_values("start_time").tolist() == [0.0]  # 1 s file, 1 s clips
    assert list(scores.columns) == CLASSES and len(scores) == len(valid)
    assert list(scores.index.names) == ["file", "start_time", "end_time"]
    ordered = scores.loc[valid.index]
    best_epoch_scores = model.best_model.predict(valid, activation_layer="sigmoid", split_files_into_clips=False)
    for c in CLASSES:
        assert roc_auc(valid[c].values, best_epoch_scores.loc[valid.index, c].values) >= 0.95
    assert np.isfinite(ordered.values).all()


def test_continue_training_from_saved_model(trained, data, tmp_path):
    model, folder, _ = trained
    train, valid = data
    loaded = load_model(folder / "epoch-3.model", device="cpu")
    loaded.verbose = 0
    loaded.train(train, valid, epochs=1, batch_size=4, save_path=tmp_path, save_interval=1,
                 invalid_samples_log=None)
    assert loaded.current_epoch == 5 and (tmp_path / "epoch-4.model").exists()
    # momentum buffers came back with the optimizer state
    assert any("momentum_buffer" in s for s in loaded.opt_net.state_dict()["state"].values())
    assert list(loaded.train_metrics.index) == [0, 1, 2, 3, 4]


def test_bad_model_files_give_clear_errors(trained, tmp_path):
    model, folder, _ = trained
    good = (folder / "best.model").read_bytes()
    truncated = tmp_path / "truncated.model"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match="truncated.model"):
        load_model(truncated)
    text = tmp_path / "notes.model"
    text.write_text("not a model at all")
    with pytest.raises(ModelLoadError, match="not a readable torch file"):
        load_model(text)
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        load_model(empty)
    plain = tmp_path / "weights.pt"
    model.save_weights(plain)
    with pytest.raises(ModelLoadError, match="plain state dict"):
        load_model(plain)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing.model")


def test_load_plain_torchvision_state_dict(trained, data, tmp_path):
    model, _, _ = trained
    _, valid = data
    # OpenSoundscape 0.6.0 naming: "feature." prefix on the body, "classifier." for the last layer
    old = {}
    for k, v in model.network.state_dict().items():
        old[("classifier." + k[3:]) if k.startswith("fc.") else "feature." + k] = v
    path = tmp_path / "old.pt"
    torch.save(old, path)
    rebuilt = CNN.from_torchvision_state_dict(path, "resnet18", CLASSES, 1.0, sample_shape=SHAPE,
                                              device="cpu", verbose=0)
    a, _ = model._run_inference(valid, 4, 0)
    b, _ = rebuilt._run_inference(valid, 4, 0)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_training_file_is_reported_and_skipped(data, tmp_path, num_workers):
    train, _ = data
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # header cut short
    extra = pd.DataFrame([[1, 0]], columns=CLASSES,
                         index=pd.MultiIndex.from_tuples([(str(bad), 0.0, 1.0)], names=train.index.names))
    df = pd.concat([train.iloc[:6], extra])
    model = new_model()
    log = tmp_path / "invalid.log"
    model.train(df, None, epochs=1, batch_size=4, num_workers=num_workers, save_path=tmp_path / "run",
                invalid_samples_log=log)
    assert model.failed_samples["file"].tolist() == [str(bad)]  # reported from worker processes too
    assert model.failed_samples["stage"].tolist() == ["load"] and "broken.wav" in model.failed_samples["error"][0]
    assert "broken.wav" in log.read_text()
    assert model.current_epoch == 1 and np.isfinite(model.loss_hist[0])
    with pytest.raises(RuntimeError, match="broken.wav"):
        new_model().train(df, None, epochs=1, batch_size=4, save_path=tmp_path / "run2",
                          invalid_samples_log=None, raise_errors=True)


def test_label_table_errors_name_the_problem(data, tmp_path):
    train, _ = data
    model = new_model()
    with pytest.raises(ValueError, match="lacks columns"):
        model.train(train[["low_tone"]], epochs=1, save_path=tmp_path)
    bad = train.copy()
    bad.iloc[2, 1] = 2
    with pytest.raises(ValueError, match="only 0/1"):
        model.train(bad, epochs=1, save_path=tmp_path)


def test_single_target_training_and_stop_event(data, tmp_path):
    train, valid = data
    model = new_model(single_target=True)
    stop = threading.Event()
    seen = []

    def callback(ev):
        seen.append(ev["event"])
        if ev["event"] == "batch" and ev["epoch"] == 1 and ev["batch"] == 2:
            stop.set()  # as a dashboard's Stop button would, from another thread

    model.train(train, valid, epochs=5, batch_size=4, save_path=tmp_path, invalid_samples_log=None,
                progress_callback=callback, stop_event=stop)
    assert model.current_epoch == 1 and "stopped" in seen
    assert isinstance(model.loss_fn, torch.nn.CrossEntropyLoss)
    assert model.valid_metrics.shape[0] == 1 and 0 <= model.best_score <= 1


def test_freeze_feature_extractor_and_separate_learning_rates(data, tmp_path):
    train, _ = data
    model = new_model()
    model.freeze_feature_extractor()
    before = model.network.conv1.weight.detach().clone()
    fc_before = model.network.fc.weight.detach().clone()
    model.train(train.iloc[:8], None, epochs=1, batch_size=4, save_path=tmp_path, invalid_samples_log=None)
    assert torch.equal(model.network.conv1.weight, before)
    assert not torch.equal(model.network.fc.weight, fc_before)

    model2 = new_model()
    separate_feat_clf(model2, feature_lr=0.001, classifier_lr=0.1)
    model2._init_optimizer()
    lrs = [g["lr"] for g in model2.opt_net.param_groups]
    assert lrs == [0.001, 0.1]
    assert len(model2.opt_net.param_groups[1]["params"]) == 2  # fc weight and bias


def test_learning_rate_cools_every_interval(data, tmp_path):
    train, _ = data
    model = new_model(lr_update_interval=2, lr_cooling_factor=0.5)
    model.train(train.iloc[:4], None, epochs=3, batch_size=4, save_path=tmp_path, invalid_samples_log=None)
    assert model.opt_net.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5)


def test_early_stopping(data, tmp_path):
    train, valid = data
    model = new_model(early_stopping_patience=2, selection_metric="map")
    model.train(train, valid, epochs=12, batch_size=2, save_path=tmp_path, invalid_samples_log=None)
    scores = model.valid_metrics["map"].tolist()
    assert len(scores) < 12  # a perfect score cannot be beaten, so it stops at the latest there
    # the rule: stop right after the 2nd validation in a row without a new best
    best, since = -1.0, 0
    for i, s in enumerate(scores):
        best, since = (s, 0) if s > best else (best, since + 1)
        if since == 2:
            assert i == len(scores) - 1
            break
    else:
        pytest.fail(f"stopped without two validations lacking improvement: {scores}")
    assert model.best_score == max(scores)


def test_resample_loss_class_weights_and_samplers(data, tmp_path):
    train, valid = data
    model = new_model(sampler="imbalanced", class_weights="balanced")
    use_resample_loss(model)
    model.train(train, valid, epochs=2, batch_size=4, save_path=tmp_path, invalid_samples_log=None)
    assert isinstance(model.loss_fn, ResampleLoss) and np.isfinite(model.loss_hist[1])

    labels = np.array([[1, 0]] * 90 + [[0, 1]] * 10)
    draws = list(ImbalancedDatasetSampler(labels, generator=torch.Generator().manual_seed(0), num_samples=4000))
    share_rare = np.mean(np.array(draws) >= 90)
    assert 0.45 < share_rare < 0.55
    cas = list(ClassAwareSampler(labels, num_samples_cls=2, seed=0))
    assert len(cas) == 100 and 0.4 < np.mean(np.array(cas) >= 90) < 0.6
    with pytest.raises(ValueError, match="multi-target"):
        use_resample_loss(new_model(single_target=True))


class _HalvesNet(torch.nn.Module):
    """Known answer for CAMs: class 0 sums the top half of the image, class 1 the bottom half."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(1, 2, 8, 8)
        mask[0, 0, :4] = 1
        mask[0, 1, 4:] = 1
        self.register_buffer("mask", mask)
        self.conv = torch.nn.Conv2d(1, 2, 1, bias=False)
        torch.nn.init.ones_(self.conv.weight)
        self.features = torch.nn.Identity()

    def forward(self, x):
        f = self.features(torch.relu(self.conv(x)) * self.mask)
        return f.sum(dim=(2, 3))


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++", "layercam"])
def test_activation_maps_known_answer(method):
    from opso_nb.ml.cam import activation_maps

    net = _HalvesNet()
    x = torch.rand(1, 1, 8, 8) + 0.5
    maps = activation_maps(net, x, [[0, 1]], method=method, target_layers=["features"])[0]
    top, bottom = maps[0], maps[1]
    assert top[:4].min() > 0.2 and top[4:].max() == 0
    assert bottom[4:].min() > 0.2 and bottom[:4].max() == 0


def test_generate_cams_on_trained_model(trained, data):
    model, _, _ = trained
    _, valid = data
    samples = model.generate_cams(valid, method="gradcam", classes=CLASSES, batch_size=4)
    assert len(samples) == len(valid)
    for sample in samples:
        maps = [np.asarray(sample.cam.activation_maps[c]) for c in CLASSES]
        for m in maps:
            assert m.shape == SHAPE[:2] and m.min() >= 0 and m.max() <= 1 + 1e-6
        assert max(m.max() for m in maps) == pytest.approx(1.0)  # each map is scaled to its own peak
    fig, ax = samples[0].cam.plot(target_class="high_tone", plt_show=False)
    assert ax.get_title() == "activation for class high_tone"
    # default classes: each sample's top-scoring class
    top = model.generate_cams(valid.iloc[:2], method="eigencam", batch_size=2)
    assert len(top[0].cam.activation_maps) == 1 and top[0].cam.activation_maps.index[0] in CLASSES
    g = model.generate_cams(valid.iloc[:1], method=None, guided_backprop=True, classes=["low_tone"])
    assert g[0].cam.gbp_maps["low_tone"].shape == (1, 64, 64) and np.abs(g[0].cam.gbp_maps["low_tone"]).sum() > 0
    with pytest.raises(ValueError, match="not among"):
        model.generate_cams(valid.iloc[:1], classes=["owl"])


# ----------------------------------------------------------------------------- honest training
def _broken_rows(tmp_path, n, columns, index_names):
    rows = []
    for k in range(n):
        bad = tmp_path / f"broken_{k}.wav"
        bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # header cut short
        rows.append((str(bad), 0.0, 1.0))
    index = pd.MultiIndex.from_tuples(rows, names=index_names)
    return pd.DataFrame([[1, 0]] * n, columns=columns, index=index)


def test_no_readable_training_sample_fails_and_saves_nothing(data, tmp_path):
    train, valid = data
    broken = _broken_rows(tmp_path, 3, CLASSES, train.index.names)
    model = new_model(max_failed_fraction=1.0)  # never stop for the fraction: the all-bad rule still applies
    with pytest.raises(cnn_module.TrainingFailed, match="no training sample could be read.*broken_0.wav.*"
                                                        "not a readable audio file"):
        model.train(broken, valid, epochs=2, batch_size=2, save_path=tmp_path / "run",
                    invalid_samples_log=tmp_path / "bad.log")
    assert not (tmp_path / "run" / "best.model").exists() and model.best_score is None
    assert sorted(model.failed_samples.file) == sorted(broken.index.get_level_values("file"))
    assert set(model.failed_samples.stage) == {"load"}
    assert "broken_2.wav" in (tmp_path / "bad.log").read_text()


def test_training_stops_when_too_many_samples_fail(data, tmp_path):
    train, _ = data
    df = pd.concat([train.iloc[:3], _broken_rows(tmp_path, 4, CLASSES, train.index.names)])
    model = new_model()  # max_failed_fraction 0.5: 4 of 7 is too many
    with pytest.raises(cnn_module.TrainingFailed, match=r"4 of 7 training samples could not be read.*"
                                                        r"max_failed_fraction=0.5.*broken_"):
        model.train(df, None, epochs=1, batch_size=2, save_path=tmp_path / "run", invalid_samples_log=None)
    assert model.current_epoch == 0 and len(model.failed_samples) == 4
    relaxed = new_model(max_failed_fraction=0.6)  # 4 of 7 = 0.57 is allowed: trains on the 3 good clips
    relaxed.train(df, None, epochs=1, batch_size=2, save_path=tmp_path / "run2", invalid_samples_log=None)
    assert relaxed.current_epoch == 1 and len(relaxed.failed_samples) == 4


def test_failed_samples_use_the_failure_schema(data, tmp_path):
    train, valid = data
    df = pd.concat([train.iloc[:3], _broken_rows(tmp_path, 1, CLASSES, train.index.names)])
    model = new_model()
    model.train(df, pd.concat([valid.iloc[:2], _broken_rows(tmp_path, 1, CLASSES, valid.index.names)]), epochs=2,
                batch_size=2, save_path=tmp_path / "run", invalid_samples_log=None)
    failed = model.failed_samples
    assert list(failed.columns) == ["file", "start_time", "end_time", "stage", "error"]
    assert len(failed) == 1  # the same clip in training and validation, two epochs: one row
    assert failed.iloc[0].stage == "load" and failed.iloc[0].start_time == 0.0


# ----------------------------------------------------------------------------- schedule, logging, single class
def test_custom_scheduler_and_schedule_continues_after_load(data, tmp_path):
    train, _ = data
    model = new_model()
    model._init_optimizer()
    model.scheduler = torch.optim.lr_scheduler.ExponentialLR(model.opt_net, gamma=0.5)
    model.train(train.iloc[:2], None, epochs=2, batch_size=2, save_path=tmp_path, invalid_samples_log=None)
    assert model.opt_net.param_groups[0]["lr"] == pytest.approx(0.01 * 0.25)

    default = new_model(lr_update_interval=2, lr_cooling_factor=0.5)
    default.train(train.iloc[:2], None, epochs=1, batch_size=2, save_path=tmp_path, save_interval=1,
                  invalid_samples_log=None)
    resumed = load_model(tmp_path / "epoch-0.model", device="cpu")
    resumed.verbose = 0
    resumed.train(train.iloc[:2], None, epochs=1, batch_size=2, save_path=tmp_path, invalid_samples_log=None)
    # epoch 1 ends the 2-epoch interval: cooled once, as in one uninterrupted run
    assert resumed.opt_net.param_groups[0]["lr"] == pytest.approx(0.005)
    # a scheduler assigned after the built-in one was used replaces it
    resumed.scheduler = torch.optim.lr_scheduler.ExponentialLR(resumed.opt_net, gamma=0.1)
    resumed.train(train.iloc[:2], None, epochs=1, batch_size=2, save_path=tmp_path, invalid_samples_log=None)
    assert resumed.opt_net.param_groups[0]["lr"] == pytest.approx(0.0005)


def test_log_file_levels_and_eval_logging_offset(data, tmp_path, capsys):
    train, valid = data
    model = new_model(logging_level=2)
    model.log_file = tmp_path / "training_log.txt"
    model.train(train.iloc[:4], valid.iloc[:4], epochs=1, batch_size=4, save_path=tmp_path,
                invalid_samples_log=None)
    log = model.log_file.read_text()
    assert "Training Epoch 0" in log and "Validation." in log and "MAP:" in log
    assert "low_tone: precision" in log  # per-class metrics at level 2
    assert capsys.readouterr().out == ""  # verbose 0: nothing printed
    model.log_file, model.verbose = None, 1
    score, m = model.eval(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.1, 0.8]]))
    assert score == 1.0 and "MAP: 1.000" in capsys.readouterr().out
    model.eval(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.1, 0.8]]), logging_offset=-1)
    assert capsys.readouterr().out == ""


def test_single_target_with_one_class_trains_as_presence(data, tmp_path):
    train, valid = data
    torch.manual_seed(0)
    model = CNN("resnet18", ["low_tone"], 1.0, single_target=True, sample_shape=SHAPE, weights=None, device="cpu",
                verbose=0, use_amp=False)
    assert model.score_activation == "sigmoid"  # a softmax over one class would always give 1
    model.train(train[["low_tone"]].iloc[:6], valid[["low_tone"]], epochs=2, batch_size=2, save_path=tmp_path,
                invalid_samples_log=None)
    assert isinstance(model.loss_fn, torch.nn.BCEWithLogitsLoss)
    assert model.valid_metrics["f1"].notna().all() and 0 <= model.best_score <= 1
    with pytest.raises(ValueError, match="exactly one positive class per row.*has 0"):
        new_model(single_target=True).train(pd.DataFrame({"low_tone": [0], "high_tone": [0]},
                                                         index=train.index[:1]), save_path=tmp_path)


def test_inception_v3_class_trains_one_epoch(data, tmp_path):
    train, _ = data
    model = cnn_module.InceptionV3(CLASSES, 1.0, weights=None, sample_shape=(80, 80, 1), device="cpu", verbose=0,
                                   use_amp=False)
    assert model.architecture_name == "inception_v3" and model.sample_shape == (80, 80, 1)
    model.train(train.iloc[:4], None, epochs=1, batch_size=2, save_path=tmp_path, invalid_samples_log=None)
    assert np.isfinite(model.loss_hist[0])
    frozen = cnn_module.InceptionV3(CLASSES, 1.0, weights=None, freeze_feature_extractor=True, device="cpu")
    assert [n for n, p in frozen.network.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_generate_cams_reports_unreadable_clips(trained, data, tmp_path):
    model, _, _ = trained
    _, valid = data
    df = pd.concat([valid.iloc[:2], _broken_rows(tmp_path, 1, CLASSES, valid.index.names)])
    samples = model.generate_cams(df, method="xgradcam", classes=["low_tone"], batch_size=2)
    assert [s.source for s in samples] == list(valid.index.get_level_values("file")[:2])
    assert model.failed_samples.file.tolist() == [str(tmp_path / "broken_0.wav")]
    assert model.failed_samples.stage.tolist() == ["load"]


def test_lone_clip_batch_skipped_only_when_batch_norm_cannot_take_it(data, tmp_path):
    train, _ = data
    logs = {}
    for size in (32, 64):  # resnet18's last feature map: 1x1 at 32 px (one clip cannot train), 2x2 at 64 px
        torch.manual_seed(0)
        model = CNN("resnet18", CLASSES, 1.0, sample_shape=(size, size, 1), weights=None, device="cpu", verbose=0,
                    use_amp=False, logging_level=2)
        model.log_file = tmp_path / f"log{size}.txt"
        model.train(train.iloc[:3], None, epochs=1, batch_size=2, save_path=tmp_path, invalid_samples_log=None)
        assert np.isfinite(model.loss_hist[0])
        logs[size] = model.log_file.read_text()
    assert "skipped: it holds one clip" in logs[32] and "skipped" not in logs[64]
