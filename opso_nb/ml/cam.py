"""Class activation maps: which parts of a spectrogram drove a CNN's score.

Implemented here with torch hooks (no extra dependency):

* ``"gradcam"``: channel weights = spatial mean of the score's gradient (Selvaraju et al. 2017).
* ``"hirescam"``: element-wise gradient x activation, summed over channels (Draelos & Carin 2020).
* ``"gradcam++"``: second-order weighting of positive gradients (Chattopadhay et al. 2018).
* ``"layercam"``: positive gradient x activation, element-wise (Jiang et al. 2021).
* ``"eigencam"``: first principal component of the activations, no gradients (Muhammad & Yeasin 2020).
* ``"xgradcam"``: channel weights = gradient x activation summed over space, divided by the
  activation sum (Fu et al. 2020).
* ``"eigengradcam"``: first principal component of gradient x activation.
* ``"gradcamelementwise"``: positive part of gradient x activation, element-wise, summed over channels.

Guided backpropagation (``guided_backprop=True``) gives a pixel-level map of the
input gradient with negative gradients stopped at every ReLU.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from opso_nb.ml.datasets import AudioFileDataset
from opso_nb.ml.safe_dataset import SafeDataset
from opso_nb.ml.utils import network_forward, to_network_input
from opso_nb.sample import AudioSample
from opso_nb.utils import CLIP_INDEX, make_clip_df

CAM_METHODS = ("gradcam", "hirescam", "gradcam++", "layercam", "eigencam", "xgradcam", "eigengradcam",
               "gradcamelementwise")


class CAM:
    """Activation and/or guided-backprop maps for one sample.

    Parameters
    ----------
    base_image : torch.Tensor or ndarray [C, H, W]
        The network input (preprocessed spectrogram).
    activation_maps : pd.Series, optional
        Class name -> 2-D array [H, W] in [0, 1].
    gbp_maps : pd.Series, optional
        Class name -> array [C, H, W] of guided-backprop gradients.
    """

    def __init__(self, base_image, activation_maps=None, gbp_maps=None):
        self.base_image = torch.as_tensor(base_image).detach().cpu()
        self.activation_maps = activation_maps
        self.gbp_maps = gbp_maps

    def __repr__(self):
        classes = [] if self.activation_maps is None else list(self.activation_maps.index)
        return f"<CAM image={tuple(self.base_image.shape)} classes={classes}>"

    def plot(self, target_class=None, mode="activation", show_base=True, alpha=0.5, cmap="inferno",
             interpolation="bilinear", figsize=None, plt_show=True, save_path=None, ax=None):
        """Overlay the map for ``target_class`` on the spectrogram.

        Parameters
        ----------
        target_class : str, optional
            Default: the first class with a map.
        mode : {"activation", "backprop", "backprop_and_activation", None}
            What to draw over the base image.
        show_base : bool
            Draw the spectrogram (grey) underneath.
        alpha : float
            Opacity of the activation map.
        cmap : str
            Colormap of the activation map.

        Returns
        -------
        (fig, ax)
        """
        # pyplot only when plotting: importing it chooses a backend, which a server may not want
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=figsize)
        else:
            fig = ax.figure
        if show_base:
            base = self.base_image.float().mean(0).numpy()  # channels averaged -> grey
            ax.imshow(base, cmap="Greys", aspect="auto", interpolation=interpolation)
        maps = self.activation_maps if mode in ("activation", "backprop_and_activation") else self.gbp_maps
        if mode is not None:
            if maps is None or len(maps) == 0:
                raise ValueError(f"no {'activation' if maps is self.activation_maps else 'backprop'} maps stored")
            if target_class is None:
                target_class = maps.index[0]
            if mode in ("activation", "backprop_and_activation"):
                act = np.asarray(self.activation_maps[target_class])
                ax.imshow(act, cmap=cmap, alpha=alpha, aspect="auto", interpolation=interpolation, vmin=0, vmax=1)
            if mode in ("backprop", "backprop_and_activation"):
                if self.gbp_maps is None:
                    raise ValueError("no guided backprop maps: generate_cams(..., guided_backprop=True)")
                g = np.abs(np.asarray(self.gbp_maps[target_class])).mean(0)
                g = g / g.max() if g.max() > 0 else g
                if mode == "backprop_and_activation":
                    g = g * np.asarray(self.activation_maps[target_class])
                ax.imshow(g, cmap=cmap, alpha=0.9 if not show_base else alpha, aspect="auto",
                          interpolation=interpolation)
        ax.set_title(f"activation for class {target_class}")
        ax.set_xlabel("time (image columns)")
        ax.set_ylabel("frequency (image rows)")
        if save_path is not None:
            fig.savefig(save_path)
        if plt_show:
            plt.show()
        return fig, ax


def _get_layer(network, name):
    modules = dict(network.named_modules())
    if name not in modules:
        raise ValueError(f"target layer {name!r} not in the network; some layer names: {list(modules)[:20]}")
    return modules[name]


def _first_component(maps, reference):
    """Projection of ``maps`` [B, K, h, w] on their first principal component (over channels), signed to
    agree with ``reference`` [B, h, w]."""
    b, k, h, w = maps.shape
    flat = maps.reshape(b, k, h * w).transpose(1, 2)  # [B, hw, K]
    flat = flat - flat.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = (flat @ vh[:, 0, :, None]).reshape(b, h, w)
    # the sign of a principal component is arbitrary: orient it to agree with the reference
    sign = torch.sign((proj * reference).sum(dim=(1, 2), keepdim=True))
    return proj * torch.where(sign == 0, torch.ones_like(sign), sign)


def _cam_from(method, acts, grads):
    """acts, grads: [B, K, h, w] -> maps [B, h, w] (not yet normalised)."""
    if method == "gradcam":
        w = grads.mean(dim=(2, 3), keepdim=True)
        return (w * acts).sum(1)
    if method == "hirescam":
        return (grads * acts).sum(1)
    if method == "layercam":
        return (F.relu(grads) * acts).sum(1)
    if method == "gradcamelementwise":
        return F.relu(grads * acts).sum(1)
    if method == "xgradcam":
        total = acts.sum(dim=(2, 3), keepdim=True)
        w = (grads * acts).sum(dim=(2, 3), keepdim=True) / torch.where(total != 0, total, torch.ones_like(total))
        return (w * acts).sum(1)
    if method == "gradcam++":
        g2, g3 = grads**2, grads**3
        denom = 2 * g2 + (acts.sum(dim=(2, 3), keepdim=True) * g3)
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        w = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
        return (w * acts).sum(1)
    if method == "eigencam":
        return _first_component(acts, acts.mean(1))
    if method == "eigengradcam":
        return _first_component(grads * acts, (grads * acts).sum(1))
    raise ValueError(f"unknown CAM method {method!r}; choose from {CAM_METHODS}")


def _normalise(maps, size):
    maps = F.relu(maps)[:, None]
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = maps.reshape(len(maps), -1)
    lo = flat.min(1).values[:, None, None]
    hi = flat.max(1).values[:, None, None]
    return torch.where(hi > lo, (maps - lo) / (hi - lo).clamp(min=1e-12), torch.zeros_like(maps))


class _GuidedReLUs:
    """Context manager: during backward, stop negative gradients at every ReLU."""

    def __init__(self, network):
        self.network = network
        self.handles, self.inplace = [], []

    def __enter__(self):
        for m in self.network.modules():
            if isinstance(m, torch.nn.ReLU):
                self.inplace.append((m, m.inplace))
                m.inplace = False  # full backward hooks refuse in-place modules
                self.handles.append(m.register_full_backward_hook(lambda mod, gin, gout: (F.relu(gin[0]),)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for m, flag in self.inplace:
            m.inplace = flag


def activation_maps(network, x, class_indices, method="gradcam", target_layers=None):
    """Activation maps for a batch.

    Parameters
    ----------
    network : torch.nn.Module
    x : torch.Tensor [B, C, H, W]
    class_indices : list of list of int
        For each sample, the output indices to explain.
    method : str
        One of :data:`CAM_METHODS`.
    target_layers : list of str
        Module names (from ``network.named_modules()``); maps of several layers are averaged.

    Returns
    -------
    list of dict
        Per sample, ``{class_index: ndarray [H, W] in [0, 1]}``.
    """
    if target_layers is None:
        target_layers = getattr(network, "cam_layer_names", None)
        if not target_layers:
            raise ValueError("this network has no default CAM layer; pass target_layers=[module name]")
    layers = [_get_layer(network, n) for n in target_layers]
    store = {}

    def fwd_hook(i):
        def hook(mod, inp, out):
            out.retain_grad()
            store[i] = out

        return hook

    handles = [layer.register_forward_hook(fwd_hook(i)) for i, layer in enumerate(layers)]
    was_training = network.training
    network.eval()
    results = [dict() for _ in range(len(x))]
    try:
        todo = sorted({c for cs in class_indices for c in cs})
        for c in todo:
            rows = [b for b, cs in enumerate(class_indices) if c in cs]
            store.clear()
            xi = x[rows].clone().requires_grad_(True)
            with torch.enable_grad():
                out = network(xi)
                network.zero_grad()
                out[:, c].sum().backward()
            maps = 0
            for i in range(len(layers)):
                acts = store[i].detach()
                grads = store[i].grad if store[i].grad is not None else torch.zeros_like(acts)
                maps = maps + _normalise(_cam_from(method, acts, grads.detach()), x.shape[-2:])
            maps = (maps / len(layers)).cpu().numpy()
            for j, b in enumerate(rows):
                results[b][c] = maps[j]
    finally:
        for h in handles:
            h.remove()
        network.train(was_training)
    return results


def guided_backprop_maps(network, x, class_indices):
    """Guided-backprop input gradients, per sample ``{class_index: ndarray [C, H, W]}``."""
    was_training = network.training
    network.eval()
    results = [dict() for _ in range(len(x))]
    try:
        with _GuidedReLUs(network):
            for c in sorted({c for cs in class_indices for c in cs}):
                rows = [b for b, cs in enumerate(class_indices) if c in cs]
                xi = x[rows].clone().requires_grad_(True)
                with torch.enable_grad():
                    out = network(xi)
                    network.zero_grad()
                    out[:, c].sum().backward()
                g = xi.grad.detach().cpu().numpy()
                for j, b in enumerate(rows):
                    results[b][c] = g[j]
    finally:
        network.train(was_training)
    return results


def _samples_df(model, samples, split_files_into_clips):
    if isinstance(samples, pd.DataFrame) and list(samples.index.names) == CLIP_INDEX:
        return samples
    files = list(samples.index) if isinstance(samples, pd.DataFrame) else [str(s) for s in samples]
    if split_files_into_clips:
        df = make_clip_df(files, model.sample_duration)
        return df[~pd.isna(df.index.get_level_values("start_time"))]
    return pd.DataFrame(index=pd.Index(files, name="file"))


def generate_cams(model, samples, method="gradcam", classes=None, target_layers=None, guided_backprop=False,
                  split_files_into_clips=True, bypass_augmentations=True, batch_size=1, num_workers=0):
    """Activation (and optionally guided-backprop) maps for each clip.

    Parameters
    ----------
    model : opso_nb.ml.cnn.CNN
    samples : list of paths or DataFrame
        Files (split into ``model.sample_duration`` clips) or a clip table indexed by
        ``(file, start_time, end_time)``.
    method : str or None
        One of :data:`CAM_METHODS`, or None for no activation maps.
    classes : list of str, optional
        Classes to explain; default each sample's highest-scoring class (the
        maps are then keyed by that class's name).
    target_layers : list of str, optional
        Module names; default the architecture's last convolutional block.
    guided_backprop : bool
        Also compute guided-backprop maps (``.cam.gbp_maps``).
    split_files_into_clips, bypass_augmentations, batch_size, num_workers
        As in prediction. Samples that fail to load are skipped and listed in
        ``model.failed_samples`` (schema of :mod:`opso_nb.failures`).

    Returns
    -------
    list of AudioSample
        One per clip that could be read, with ``data`` (the network input),
        ``.cam`` (a :class:`CAM`) and ``.scores`` (pd.Series of the network's
        sigmoid/softmax outputs).
    """
    df = _samples_df(model, samples, split_files_into_clips)
    if classes is not None:
        unknown = [c for c in classes if c not in model.classes]
        if unknown:
            raise ValueError(f"classes {unknown} are not among the model's classes {model.classes}")
    safe = SafeDataset(AudioFileDataset(df, model.preprocessor, bypass_augmentations=bypass_augmentations),
                       invalid_sample_behavior="none")
    network = model.network
    was_training = network.training
    network.eval()
    out_samples = []
    try:
        for batch in safe.loader(batch_size=batch_size, num_workers=num_workers):
            if not batch.indices:
                continue
            x, _ = batch
            with torch.inference_mode():
                scores = network_forward(network, x, model.device, None, model.channels_last,
                                         activation_layer=model.score_activation).numpy()
            if classes is None:
                cls_idx = [[int(np.argmax(s))] for s in scores]
            else:
                cls_idx = [[model.classes.index(c) for c in classes] for _ in range(len(x))]
            xd = to_network_input(x, model.device, model.channels_last)
            acts = activation_maps(network, xd, cls_idx, method, target_layers) if method else [None] * len(x)
            gbps = guided_backprop_maps(network, xd, cls_idx) if guided_backprop else [None] * len(x)
            for j, row in enumerate(batch.indices):
                out_samples.append(_sample_with_cam(model, df.iloc[row], x[j], scores[j], acts[j], gbps[j]))
    finally:
        network.train(was_training)
    model.failed_samples = safe.failed_samples
    return out_samples


def _sample_with_cam(model, row, data, scores, acts, gbps):
    """The AudioSample of a clip-table ``row`` carrying its network input, scores and maps."""
    sample = AudioSample.from_series(row)
    sample.data = data

    def by_class(maps):
        return None if maps is None else pd.Series({model.classes[c]: m for c, m in maps.items()}, dtype=object)

    sample.cam = CAM(data, activation_maps=by_class(acts), gbp_maps=by_class(gbps))
    sample.scores = pd.Series(scores, index=model.classes)
    return sample
