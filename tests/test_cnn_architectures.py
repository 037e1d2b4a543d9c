"""Architectures build offline, take any channel count, freeze correctly, never download."""
import warnings

import pytest
import torch

from opso_nb.ml import cnn_architectures as ca

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "squeezenet1_0", "densenet121", "efficientnet_b0",
                                  "alexnet"])
def test_builds_with_one_channel_and_n_classes(name):
    model = ca.build_architecture(name, 3, weights=None, num_channels=1).eval()
    size = 64 if name != "alexnet" else 96
    with torch.no_grad():
        out = model(torch.zeros(2, 1, size, size))
    assert out.shape == (2, 3)
    assert model.constructor_name == name and model.cam_layer_names


def test_inception_has_single_output():
    model = ca.inception_v3(2, weights=None, num_channels=1)
    model.train()
    out = model(torch.zeros(2, 1, 80, 80))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2)


def test_list_and_unknown():
    # OpenSoundscape 0.9's documented list, in its order
    assert ca.list_architectures() == [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "alexnet", "vgg11_bn", "squeezenet1_0",
        "densenet121", "inception_v3", "efficientnet_b0", "efficientnet_b4", "efficientnet_widese_b0",
        "efficientnet_widese_b4"]
    with pytest.raises(ValueError, match="unknown architecture"):
        ca.build_architecture("resnet9000", 2)


def test_freeze_feature_extractor_leaves_only_classifier_trainable():
    model = ca.resnet18(2, weights=None, freeze_feature_extractor=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


def test_change_conv2d_channels_reuses_weights():
    conv = torch.nn.Conv2d(3, 4, 3)
    one = ca.change_conv2d_channels(conv, 1)
    assert torch.allclose(one.weight[:, 0], conv.weight.mean(1))
    five = ca.change_conv2d_channels(conv, 5)
    assert torch.equal(five.weight[:, 3], conv.weight[:, 0]) and torch.equal(five.weight[:, 4], conv.weight[:, 1])
    assert torch.equal(five.bias, conv.bias)


def test_pretrained_weights_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # empty cache
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("tried to download weights"))
    with pytest.raises(ca.PretrainedWeightsNotFound, match="never downloads"):
        ca.resnet18(2, weights="IMAGENET1K_V1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = ca.resnet18(2)  # DEFAULT: falls back to random weights, with a warning
    assert any("not on disk" in str(w.message) for w in caught)
    assert model.fc.out_features == 2


def test_cached_pretrained_weights_are_used(monkeypatch, tmp_path):
    # put a (random) resnet18 state dict where torchvision's cache would hold the ImageNet file
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import torchvision

    ref = torchvision.models.resnet18()
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    target = tmp_path / "checkpoints" / weights.url.split("/")[-1]
    target.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), target)
    monkeypatch.setattr(weights.__class__, "get_state_dict",
                        lambda self, *a, **k: torch.load(target, weights_only=True))
    model = ca.resnet18(2, num_channels=1)
    assert torch.allclose(model.conv1.weight[:, 0], ref.conv1.weight.mean(1))
    assert torch.equal(model.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)


def test_efficientnet_widese_builds_offline_with_wide_squeeze_excitation(monkeypatch):
    monkeypatch.setattr(torch.hub, "load", lambda *a, **k: pytest.fail("tried torch.hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    wide = ca.efficientnet_widese_b0(3, weights=None, num_channels=1).eval()
    narrow = ca.efficientnet_b0(3, weights=None, num_channels=1)
    # second stage: 16 input channels expanded 6x to 96; the bottleneck is 96 // 4 = 24 wide, not 16 // 4 = 4
    assert narrow.features[2][0].block[2].fc1.out_channels == 4
    assert wide.features[2][0].block[2].fc1.out_channels == 24
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    with torch.no_grad():
        assert wide(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    with pytest.warns(UserWarning, match="random weights"):
        ca.efficientnet_widese_b4(2)
    with pytest.raises(ca.PretrainedWeightsNotFound, match="random weights only"):
        ca.efficientnet_widese_b0(2, weights="IMAGENET1K_V1")
