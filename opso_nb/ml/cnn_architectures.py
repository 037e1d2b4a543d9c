"""Torchvision CNN architectures with a chosen number of outputs and input channels.

Each wrapper takes ``(num_classes, freeze_feature_extractor=False, weights="DEFAULT",
num_channels=3)`` and returns a ``torch.nn.Module`` whose final layer has
``num_classes`` outputs.

Pretrained ImageNet weights are **never downloaded**. They are used only when the
weight file is already in torch's cache (``torch.hub.get_dir()/checkpoints``):

* ``weights="DEFAULT"``: the cached ImageNet weights if present; otherwise a
  ``UserWarning`` says where the file is expected and the network starts from
  random weights.
* ``weights="IMAGENET1K_V1"`` (any explicit torchvision weight name): raises
  :class:`PretrainedWeightsNotFound` when the file is missing.
* ``weights=None``: random initialisation, no look-up.

``efficientnet_widese_b0`` / ``_b4`` are built here from torchvision's
EfficientNets (wide squeeze-and-excitation blocks) and have no pretrained weights.

Each returned network carries three plain attributes used by :class:`opso_nb.ml.cnn.CNN`:
``constructor_name`` (registry name, so a saved model can be rebuilt),
``classifier_layer_names`` (module names of the final classifier, for freezing and
separate learning rates) and ``cam_layer_names`` (default Grad-CAM target layers).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torchvision

ARCH_DICT: dict = {}


class PretrainedWeightsNotFound(FileNotFoundError):
    """Raised when pretrained weights are requested but not present on disk."""


def register_arch(func):
    """Add an architecture-building function to :data:`ARCH_DICT` under its name."""
    ARCH_DICT[func.__name__] = func
    return func


def list_architectures() -> list:
    """Names accepted by ``CNN(architecture=...)`` and :func:`build_architecture`."""
    return list(ARCH_DICT.keys())


def build_architecture(name: str, num_classes: int, **kwargs) -> torch.nn.Module:
    """Build a registered architecture by name.

    Raises
    ------
    ValueError
        For unknown names, listing the available ones.
    """
    if name not in ARCH_DICT:
        raise ValueError(
            f"unknown architecture {name!r}; choose one of {list_architectures()} "
            "or pass a torch.nn.Module"
        )
    return ARCH_DICT[name](num_classes, **kwargs)


def _cached_weight_file(weights_enum) -> Path:
    filename = weights_enum.url.split("/")[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _load_pretrained(model_name: str, weights):
    """Return a torchvision weights enum whose file is on disk, or None (random init).

    Never touches the network: torchvision's loader only reads the cache when the
    file exists, and we check that first.
    """
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(model_name)
    chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights] if isinstance(weights, str) else weights
    path = _cached_weight_file(chosen)
    if path.exists():
        return chosen
    message = (
        f"pretrained weights {chosen} for {model_name} are not on disk (expected {path}); "
        "opso_nb never downloads weights. Copy the file there (e.g. from a machine with "
        "internet: torchvision.models.get_weight(...).get_state_dict()) or pass weights=None."
    )
    if weights == "DEFAULT":
        warnings.warn(message + " Starting from random weights.", UserWarning, stacklevel=4)
        return None
    raise PretrainedWeightsNotFound(message)


def _tv(model_name: str, weights, **kwargs) -> torch.nn.Module:
    chosen = _load_pretrained(model_name, weights)
    return torchvision.models.get_model(model_name, weights=chosen, **kwargs)


def freeze_params(model: torch.nn.Module) -> None:
    """Turn off gradients for every parameter of ``model`` (in place)."""
    for p in model.parameters():
        p.requires_grad = False


def change_conv2d_channels(conv2d: torch.nn.Conv2d, num_channels: int = 3, reuse_weights: bool = True):
    """Return a copy of ``conv2d`` taking ``num_channels`` input channels.

    With ``reuse_weights``, fewer channels get the mean of the original channel
    weights; more channels cycle through the originals. This keeps pretrained
    filters useful for 1-channel spectrograms.
    """
    new = torch.nn.Conv2d(
        num_channels,
        conv2d.out_channels,
        kernel_size=conv2d.kernel_size,
        stride=conv2d.stride,
        padding=conv2d.padding,
        dilation=conv2d.dilation,
        groups=conv2d.groups,
        bias=conv2d.bias is not None,
        padding_mode=conv2d.padding_mode,
    )
    if reuse_weights:
        w = conv2d.weight.detach()
        with torch.no_grad():
            if num_channels < w.shape[1]:
                new.weight.copy_(w.mean(dim=1, keepdim=True).repeat(1, num_channels, 1, 1))
            else:
                idx = [i % w.shape[1] for i in range(num_channels)]
                new.weight.copy_(w[:, idx])
            if conv2d.bias is not None:
                new.bias.copy_(conv2d.bias.detach())
    return new


def change_fc_output_size(fc: torch.nn.Linear, num_classes: int) -> torch.nn.Linear:
    """Return a new (randomly initialised) Linear layer with ``num_classes`` outputs."""
    return torch.nn.Linear(fc.in_features, num_classes, bias=fc.bias is not None)


def _get_module(model, dotted):
    for part in dotted.split("."):
        model = getattr(model, part) if not part.isdigit() else model[int(part)]
    return model


def _set_module(model, dotted, module):
    *parents, last = dotted.split(".")
    parent = _get_module(model, ".".join(parents)) if parents else model
    if last.isdigit():
        parent[int(last)] = module
    else:
        setattr(parent, last, module)


def _finish(model, name, num_classes, freeze_feature_extractor, num_channels, first_conv, classifier, cam_layers):
    """Common tail: resize classifier and first conv, tag names, optionally freeze features."""
    if isinstance(classifier, str):
        old = _get_module(model, classifier)
        if isinstance(old, torch.nn.Conv2d):  # squeezenet classifies with a 1x1 conv
            new = torch.nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride)
        else:
            new = change_fc_output_size(old, num_classes)
        _set_module(model, classifier, new)
    if num_channels != 3:
        conv = _get_module(model, first_conv)
        _set_module(model, first_conv, change_conv2d_channels(conv, num_channels))
    model.constructor_name = name
    model.classifier_layer_names = [classifier]
    model.cam_layer_names = list(cam_layers)
    if freeze_feature_extractor:
        freeze_params(model)
        for p in _get_module(model, classifier).parameters():
            p.requires_grad = True
    return model


_PARAMETERS_DOC = """
    Parameters
    ----------
    num_classes : int
        Outputs of the final layer.
    freeze_feature_extractor : bool
        If True only the final layer trains.
    weights : str or None
        ``"DEFAULT"`` (ImageNet weights if cached on disk), an explicit torchvision
        weight name (error if not cached), or None (random).
    num_channels : int
        Input channels (1 for a grey spectrogram).
    """


def _torchvision_arch(name, first_conv, classifier, cam_layers, description):
    """Register a wrapper ``name(num_classes, freeze_feature_extractor, weights, num_channels)`` around
    torchvision's ``name``; the module names locate its first conv, classifier and CAM layers."""

    def build(num_classes, freeze_feature_extractor=False, weights="DEFAULT", num_channels=3):
        model = _tv(name, weights)
        return _finish(model, name, num_classes, freeze_feature_extractor, num_channels, first_conv, classifier,
                       cam_layers)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = description + "\n" + _PARAMETERS_DOC
    return register_arch(build)


resnet18 = _torchvision_arch("resnet18", "conv1", "fc", ["layer4"],
                             "ResNet-18 (input about 224x224; any size >= 32 px works).")
resnet34 = _torchvision_arch("resnet34", "conv1", "fc", ["layer4"], "ResNet-34 (input about 224x224).")
resnet50 = _torchvision_arch("resnet50", "conv1", "fc", ["layer4"], "ResNet-50 (input about 224x224).")
resnet101 = _torchvision_arch("resnet101", "conv1", "fc", ["layer4"], "ResNet-101 (input about 224x224).")
resnet152 = _torchvision_arch("resnet152", "conv1", "fc", ["layer4"], "ResNet-152 (input about 224x224).")
alexnet = _torchvision_arch("alexnet", "features.0", "classifier.6", ["features.10"], "AlexNet (input 224x224).")
vgg11_bn = _torchvision_arch("vgg11_bn", "features.0", "classifier.6", ["features.27"],
                             "VGG-11 with batch norm (input 224x224).")


@register_arch
def squeezenet1_0(num_classes, freeze_feature_extractor=False, weights="DEFAULT", num_channels=3):
    """SqueezeNet 1.0 (input 224x224). Parameters as for :func:`resnet18`."""
    model = _tv("squeezenet1_0", weights)
    model = _finish(model, "squeezenet1_0", num_classes, freeze_feature_extractor, num_channels,
                    "features.0", "classifier.1", ["features.12"])
    model.num_classes = num_classes
    return model


densenet121 = _torchvision_arch("densenet121", "features.conv0", "classifier", ["features.denseblock4"],
                                "DenseNet-121 (input 224x224).")


@register_arch
def inception_v3(num_classes, freeze_feature_extractor=False, weights="DEFAULT", num_channels=3):
    """Inception v3 (input 299x299, at least 75x75). Parameters as for :func:`resnet18`.

    The auxiliary classifier is removed so the network returns one tensor in
    training and evaluation alike (it only helps in the first epochs of ImageNet
    training).
    """
    chosen = _load_pretrained("inception_v3", weights)
    model = torchvision.models.inception_v3(weights=chosen, aux_logits=True, init_weights=chosen is None)
    model.aux_logits = False
    model.AuxLogits = None
    model.transform_input = False  # inputs are spectrograms, not ImageNet-normalised RGB
    return _finish(model, "inception_v3", num_classes, freeze_feature_extractor, num_channels,
                   "Conv2d_1a_3x3.conv", "fc", ["Mixed_7c"])


efficientnet_b0 = _torchvision_arch("efficientnet_b0", "features.0.0", "classifier.1", ["features"],
                                    "EfficientNet-B0 (input 224x224).")
efficientnet_b4 = _torchvision_arch("efficientnet_b4", "features.0.0", "classifier.1", ["features"],
                                    "EfficientNet-B4 (input 380x380).")


def _widen_squeeze_excitation(model: torch.nn.Module) -> torch.nn.Module:
    """Give every squeeze-and-excitation block a bottleneck a quarter of its *expanded* width (in place).

    torchvision's EfficientNet sizes each bottleneck from the block's input
    channels; the "WideSE" variant sizes it from the channels of the depthwise
    convolution it gates, which are up to six times more.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torchvision.ops.SqueezeExcitation):
                width = child.fc1.in_channels
                setattr(module, name, torchvision.ops.SqueezeExcitation(width, max(1, width // 4),
                                                                         activation=torch.nn.SiLU))
    return model


def _efficientnet_widese(name, base):
    def build(num_classes, freeze_feature_extractor=False, weights="DEFAULT", num_channels=3):
        if weights == "DEFAULT":
            warnings.warn(f"no pretrained weights exist for {name} in torchvision (OpenSoundscape fetched NVIDIA's "
                          "from torch.hub, which opso_nb never uses); starting from random weights",
                          UserWarning, stacklevel=3)
        elif weights is not None:
            raise PretrainedWeightsNotFound(f"no pretrained weights {weights!r} for {name}: opso_nb builds it with "
                                            "random weights only (weights=None)")
        model = _widen_squeeze_excitation(torchvision.models.get_model(base, weights=None))
        return _finish(model, name, num_classes, freeze_feature_extractor, num_channels,
                       "features.0.0", "classifier.1", ["features"])

    build.__name__ = name
    build.__doc__ = f"""{name}: {base} with wide squeeze-and-excitation blocks, random weights.

    As :func:`{base}`, except that each squeeze-and-excitation bottleneck is a
    quarter of the depthwise convolution's width instead of the block input's
    (NVIDIA's "WideSE" variant). Built offline from torchvision's {base};
    pretrained weights are not available (``weights="DEFAULT"`` warns and
    starts from random weights, a named weight raises
    :class:`PretrainedWeightsNotFound`). Parameters as for :func:`resnet18`.
    """
    return register_arch(build)


efficientnet_widese_b0 = _efficientnet_widese("efficientnet_widese_b0", "efficientnet_b0")
efficientnet_widese_b4 = _efficientnet_widese("efficientnet_widese_b4", "efficientnet_b4")
