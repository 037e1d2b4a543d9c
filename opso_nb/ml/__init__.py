"""Machine learning: CNN classifiers, datasets, losses, samplers, activation maps.

``from opso_nb.ml import CNN, load_model`` works; submodules are imported on first
use so ``import opso_nb.ml`` stays light.
"""


def __getattr__(name):
    if name in ("CNN", "load_model", "ModelLoadError", "use_resample_loss", "separate_feat_clf",
                "separate_resnet_feat_clf"):
        from opso_nb.ml import cnn

        return getattr(cnn, name)
    if name == "list_architectures":
        from opso_nb.ml.cnn_architectures import list_architectures

        return list_architectures
    raise AttributeError(f"module 'opso_nb.ml' has no attribute {name!r}")
