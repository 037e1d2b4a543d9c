"""Machine learning: CNN classifiers, datasets, losses, samplers, activation maps.

``from opso_nb.ml import CNN, load_model`` works. The submodules pull in torch,
so they are imported on first use of one of these names: ``import opso_nb.ml``
stays light for code that only needs, say, the metrics.
"""

_FROM_CNN = ("CNN", "InceptionV3", "load_model", "load_outdated_model", "ModelLoadError", "TrainingFailed",
             "use_resample_loss", "separate_feat_clf", "separate_resnet_feat_clf")


def __getattr__(name):
    # deferred: importing torch costs seconds
    if name in _FROM_CNN:
        from opso_nb.ml import cnn

        return getattr(cnn, name)
    if name == "list_architectures":
        from opso_nb.ml.cnn_architectures import list_architectures

        return list_architectures
    raise AttributeError(f"module 'opso_nb.ml' has no attribute {name!r}")
