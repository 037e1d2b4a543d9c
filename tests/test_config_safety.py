"""A saved preprocessor configuration is data, never code (issue 12, item 1).

Configurations (JSON files opened with ``load_preprocessor`` and the preprocessor inside a model file)
may name only opso_nb's own actions and the ones the user's code registers with ``register_action``.
"""
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from opso_nb.preprocess import actions
from opso_nb.preprocess.actions import (ACTION_REGISTRY, FUNCTION_REGISTRY, Action, BaseAction, function_name,
                                        register_action)
from opso_nb.preprocess.preprocessors import (CONFIG_VERSION, SpectrogramPreprocessor, load_preprocessor,
                                              preprocessor_from_dict, register_preprocessor)
from opso_nb.preprocess.utils import UnregisteredActionError
from opso_nb.sample import AudioSample

torch.set_num_threads(1)


def crafted_config(marker):
    """format(None) -> "None"; re.sub turns it into a shell command; os.system runs it."""
    steps = [
        {"name": "to_text", "class": "Action", "fn": "builtins:format", "params": {}},
        {"name": "to_command", "class": "Action", "fn": "re:sub",
         "params": {"repl": f"touch {marker}", "string": "None"}},
        {"name": "run", "class": "Action", "fn": "os:system", "params": {}},
    ]
    return {"format": "opso_nb.preprocessor", "version": 1, "class": "BasePreprocessor",
            "init": {"sample_duration": 1.0}, "bypass_augmentations": False, "pipeline": steps}


def attempt(load):
    """Load a configuration and, if that works, run it as prediction would; the refusal, if any."""
    try:
        pre = load()
    except UnregisteredActionError as err:
        return err
    try:
        pre.forward(AudioSample("clip.wav"))
    except Exception:  # noqa: BLE001 - the point is what ran, not how it ended
        pass
    return None


def test_crafted_config_is_refused_by_preprocessor_from_dict(tmp_path):
    marker = tmp_path / "pwned"
    refusal = attempt(lambda: preprocessor_from_dict(crafted_config(marker)))
    assert not marker.exists()
    assert refusal is not None
    assert "pipeline step 0 ('to_text')" in str(refusal) and "builtins:format" in str(refusal)


def test_crafted_config_is_refused_by_load_preprocessor(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "innocent.json"
    path.write_text(json.dumps(crafted_config(marker)))
    refusal = attempt(lambda: load_preprocessor(path))
    assert not marker.exists()
    assert refusal is not None and "innocent.json" in str(refusal) and "not registered" in str(refusal)
    # a model config embedding the preprocessor is read the same way
    path.write_text(json.dumps({"preprocessor": crafted_config(marker)}))
    assert attempt(lambda: load_preprocessor(path)) is not None and not marker.exists()


def test_refusal_comes_before_any_step_is_built(tmp_path):
    # a harmless registered step first, the dangerous one later: nothing is built at all
    cfg = SpectrogramPreprocessor(1.0, out_shape=(8, 8, 1)).to_dict()
    cfg["pipeline"].append({"name": "run", "class": "Action", "fn": "os:system", "params": {}})
    with pytest.raises(UnregisteredActionError, match=r"pipeline step 11 \('run'\).*'os:system'"):
        preprocessor_from_dict(cfg)


@pytest.mark.parametrize("step, message", [
    ({"name": "x", "class": "Popen"}, "action class 'Popen' is not registered"),
    ({"name": "x", "class": "Action"}, "action function None is not registered"),
    ({"name": "x", "class": "Action", "fn": "opso_nb.utils:atomic_write"}, "'opso_nb.utils:atomic_write'"),
    ({"name": "x", "class": "Action", "fn": ["os", "system"]}, "is not registered"),
])
def test_other_unregistered_names_are_refused(step, message):
    cfg = {"format": "opso_nb.preprocessor", "version": 1, "class": "BasePreprocessor", "init": {},
           "pipeline": [step]}
    with pytest.raises(UnregisteredActionError, match=message):
        preprocessor_from_dict(cfg)


def test_malformed_configs_are_clear_errors():
    base = {"format": "opso_nb.preprocessor", "version": 1, "class": "BasePreprocessor", "init": {}, "pipeline": []}
    with pytest.raises(UnregisteredActionError, match="preprocessor class 'Evil'"):
        preprocessor_from_dict({**base, "class": "Evil"})
    with pytest.raises(ValueError, match="may only hold sample_duration"):
        preprocessor_from_dict({**base, "init": {"sample_duration": 1, "name": "x"}})
    with pytest.raises(ValueError, match="'pipeline' list"):
        preprocessor_from_dict({**base, "pipeline": "load_audio"})
    with pytest.raises(ValueError, match="pipeline step 0: expected an object"):
        preprocessor_from_dict({**base, "pipeline": ["load_audio"]})
    with pytest.raises(ValueError, match=r"pipeline step 0 \('noise'\).*no_such_param"):
        preprocessor_from_dict({**base, "pipeline": [{"name": "noise", "class": "TensorAddNoise",
                                                      "params": {"no_such_param": 1}}]})


def test_model_file_with_crafted_preprocessor_runs_nothing(tmp_path):
    from opso_nb.ml.cnn import CNN, load_model, weights_checksum

    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    CNN("resnet18", classes=["a"], sample_duration=1.0, weights=None, sample_shape=(32, 32, 1)).save(path)
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["config"])
    config["preprocessor"] = crafted_config(marker)
    payload["config"] = json.dumps(config)
    # the checksum detects damage, not malice: an attacker recomputes it, so the registry must refuse
    payload["weights_sha256"] = weights_checksum(payload["network_state_dict"], payload["config"])
    torch.save(payload, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = load_model(path)
        except Exception as err:  # noqa: BLE001 - refusing the whole file is fine too
            model, messages = None, [str(err)]
        else:
            messages = [str(w.message) for w in caught]
    assert any("not registered" in m for m in messages), messages
    if model is not None:
        assert "run" not in model.preprocessor.pipeline.index
        try:
            model.preprocessor.forward(AudioSample("clip.wav"))
        except Exception:  # noqa: BLE001
            pass
    assert not marker.exists()


# ------------------------------------------------------------------ what users register themselves
def triple(x, n=3):
    return x * n


class Gate(BaseAction):
    """The manual's custom-action pattern: plain parameters set through ``self.params``."""

    def __init__(self, threshold=0.5):
        super().__init__()
        self.params["threshold"] = threshold

    def go(self, sample, **kwargs):
        sample.data = sample.data * (sample.data.abs() >= self.params["threshold"])
        return sample


@pytest.fixture
def registered():
    register_action(triple)
    register_action(Gate)
    yield
    FUNCTION_REGISTRY.pop(function_name(triple))
    ACTION_REGISTRY.pop("Gate")


def small_pipeline(*extra):
    pre = SpectrogramPreprocessor(1.0, out_shape=(8, 8, 1))
    for name, action in extra:
        pre.insert_action(name, action)
    return pre


def test_user_registered_function_and_class_round_trip(registered, tmp_path):
    pre = small_pipeline(("times", Action(triple, n=2)), ("gate", Gate(threshold=0.3)))
    pre.save(tmp_path / "pre.json")
    loaded = load_preprocessor(tmp_path / "pre.json")
    assert loaded.pipeline["times"].fn is triple and loaded.pipeline["times"].get("n") == 2
    assert isinstance(loaded.pipeline["gate"], Gate) and loaded.pipeline["gate"].get("threshold") == 0.3
    sample = AudioSample("x")
    sample.data = torch.tensor([0.1, -0.2, 0.25])
    assert torch.allclose(loaded.pipeline["times"].go(sample).data, torch.tensor([0.2, -0.4, 0.5]))
    assert torch.allclose(loaded.pipeline["gate"].go(sample).data, torch.tensor([0.0, -0.4, 0.5]))


def test_unregistered_user_function_cannot_be_saved_or_loaded(registered, tmp_path):
    pre = small_pipeline(("times", Action(triple)))
    pre.save(tmp_path / "pre.json")
    FUNCTION_REGISTRY.pop(function_name(triple))  # a fresh session that has not registered it
    try:
        with pytest.raises(UnregisteredActionError, match=r"step 11 \('times'\).*test_config_safety:triple"):
            load_preprocessor(tmp_path / "pre.json")
        with pytest.raises(ValueError, match="register_action"):
            small_pipeline(("times", Action(triple))).to_dict()
    finally:
        register_action(triple)


def test_registering_cannot_replace_opso_nb_names_or_take_lambdas():
    def scale_tensor(x):  # same name as a built-in action function, other module
        return x

    scale_tensor.__module__, scale_tensor.__qualname__ = "opso_nb.preprocess.actions", "scale_tensor"
    with pytest.raises(ValueError, match="one of opso_nb's own"):
        register_action(scale_tensor)
    with pytest.raises(ValueError, match="no stable module-level name"):
        register_action(lambda x: x)
    with pytest.raises(TypeError):
        register_action(dict)  # a class that is not an Action
    with pytest.raises(UnregisteredActionError):
        Action("os:system")


def test_user_preprocessor_class(tmp_path):
    class Custom(SpectrogramPreprocessor):
        pass

    with pytest.warns(UserWarning, match="saved as SpectrogramPreprocessor"):
        assert Custom(1.0).to_dict()["class"] == "SpectrogramPreprocessor"
    register_preprocessor(Custom)
    try:
        assert type(preprocessor_from_dict(Custom(1.0).to_dict())) is Custom
    finally:
        from opso_nb.preprocess.preprocessors import PREPROCESSOR_REGISTRY

        PREPROCESSOR_REGISTRY.pop("Custom")


# ------------------------------------------------------------------ every built-in name round-trips
def _example(cls):
    if cls is Action:
        return Action(actions.scale_tensor, input_std=0.25)
    if cls is actions.Overlay:
        return cls(overlay_df=pd.DataFrame({"a": [1]}, index=pd.Index(["bg.wav"], name="file")), overlay_weight=[0.1, 0.4])
    return cls()


@pytest.mark.parametrize("name", sorted(ACTION_REGISTRY.builtin))
def test_every_builtin_action_round_trips(name):
    cls = ACTION_REGISTRY[name]
    action = _example(cls)
    action.bypass = True
    again = preprocessor_from_dict({"format": "opso_nb.preprocessor", "version": CONFIG_VERSION,
                                    "class": "BasePreprocessor", "init": {},
                                    "pipeline": [{"name": "step", **action.to_dict()}]}).pipeline["step"]
    assert type(again) is cls and again.bypass and again.is_augmentation == action.is_augmentation
    assert list(again.params.index) == list(action.params.index)
    for key, value in action.params.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(again.get(key), value)
        else:
            assert again.get(key) == value, key


@pytest.mark.parametrize("name", sorted(FUNCTION_REGISTRY.builtin))
def test_every_builtin_function_round_trips(name):
    fn = FUNCTION_REGISTRY[name]
    action = Action(fn, is_augmentation=True)
    d = json.loads(json.dumps(action.to_dict()))
    assert d["fn"] == name
    again = Action.from_dict(d)
    assert again.fn == fn and again.is_augmentation
    assert again.params.to_dict() == action.params.to_dict()


def test_builtin_function_action_runs_after_round_trip():
    action = Action("opso_nb.preprocess.actions:scale_tensor", input_mean=1.0, input_std=2.0)
    again = Action.from_dict(json.loads(json.dumps(action.to_dict())))
    sample = AudioSample("x")
    sample.data = torch.tensor([3.0, 5.0])
    assert torch.equal(again.go(sample).data, torch.tensor([1.0, 2.0]))
    assert np.isclose(again.get("input_std"), 2.0)
