"""Helpers for preprocessing: error types, the registries configurations are rebuilt from, tensor display."""
from __future__ import annotations

import inspect

import numpy as np
from matplotlib.figure import Figure


class PreprocessingError(Exception):
    """A sample could not be preprocessed; the message names the file, clip and step."""


class UnregisteredActionError(ValueError):
    """A configuration names a class or function that is not registered; nothing in it was run.

    Saved preprocessor configurations (JSON files, and the preprocessor inside
    a model file) may name only opso_nb's own actions and functions, plus the
    ones the user's own code registers with
    :func:`opso_nb.preprocess.actions.register_action`.
    """


class Registry(dict):
    """Names a saved configuration may use, mapped to the objects they stand for.

    Entries that opso_nb registers itself are *built-in* and cannot be replaced
    by another object; a user's entries can (re-running a notebook cell that
    defines and registers a function registers the new definition).

    Parameters
    ----------
    kind : str
        What the entries are, for messages ("action class", "action function").
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.builtin: set[str] = set()

    def add(self, name: str, obj, builtin: bool = False):
        """Register ``obj`` as ``name``; returns ``obj``."""
        current = self.get(name)
        if current is not None and current != obj and name in self.builtin:
            raise ValueError(f"{name!r} is one of opso_nb's own {self.kind}s; register yours under another name")
        self[name] = obj
        if builtin:
            self.builtin.add(name)
        return obj

    def lookup(self, name):
        """The object registered as ``name``; :class:`UnregisteredActionError` if there is none."""
        obj = self.get(name) if isinstance(name, str) else None
        if obj is None:
            raise UnregisteredActionError(
                f"{self.kind} {name!r} is not registered. A configuration may name only opso_nb's own actions and "
                "the ones your code registers with opso_nb.preprocess.actions.register_action(...); "
                "nothing from this configuration was run")
        return obj


def get_args(func) -> dict:
    """All parameters of ``func`` with their defaults (``inspect.Parameter.empty`` if none)."""
    return {k: v.default for k, v in inspect.signature(func).parameters.items()}


def get_reqd_args(func) -> list:
    """Names of ``func``'s parameters that have no default."""
    return [k for k, v in inspect.signature(func).parameters.items()
            if v.default is inspect.Parameter.empty and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]


def tensor_to_image_array(tensor, channel=None, transform_from_zero_centered=True, invert=False):
    """[C, H, W] tensor -> [H, W] or [H, W, 3] array in [0, 1] for display.

    Parameters
    ----------
    channel : int, optional
        Show only this channel (else channel 0 of 1-channel, RGB of 3-channel tensors).
    transform_from_zero_centered : bool
        Map [-1, 1] (the default normalisation) back to [0, 1].
    invert : bool
        ``1 - x``: with loud = 1 tensors this draws loud sounds dark, as on paper.
    """
    x = np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if transform_from_zero_centered:
        x = (x + 1) / 2
    x = np.clip(x, 0, 1)
    if invert:
        x = 1 - x
    if channel is not None:
        return x[channel]
    return x[0] if x.shape[0] != 3 else np.moveaxis(x, 0, -1)


def show_tensor(tensor, channel=None, transform_from_zero_centered=True, invert=True, ax=None, title=None):
    """Draw one preprocessed sample tensor with matplotlib; returns the axes."""
    # pyplot picks a GUI backend when imported: only import it when a figure is really drawn here
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    img = tensor_to_image_array(tensor, channel, transform_from_zero_centered, invert)
    ax.imshow(img, cmap="Greys_r" if img.ndim == 2 else None, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def show_tensor_grid(tensors, columns=4, channel=None, transform_from_zero_centered=True, invert=True, labels=None,
                     figsize=None, colorbar=True):
    """Grid of sample tensors (matplotlib Figure); ``labels`` are per-tensor titles.

    Parameters
    ----------
    tensors : list of tensor or array
        ``[C, H, W]`` (or ``[H, W]``) samples, drawn as :func:`show_tensor` draws them.
    columns : int
        Grid columns.
    channel, transform_from_zero_centered, invert
        As in :func:`tensor_to_image_array`.
    labels : list, optional
        One title per tensor.
    figsize : (width, height), optional
        Default: 2.6 x 2.2 inches per image (plus room for the colour bar).
    colorbar : bool or str
        Draw a colour bar in tensor values, the network's input: -1 to 1 with
        ``transform_from_zero_centered``, else 0 to 1; arrows mean that some
        values lie beyond and are drawn as its end colours. A string is its
        label (default "network input (tensor value)"). Drawn only when the
        images are grey (colour images carry their own channels).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = len(tensors)
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns)) if n else 1
    # constrained layout leaves room for titles and the colour bar (tight_layout cannot place a bar)
    fig = Figure(figsize=figsize or (2.6 * columns + (0.9 if colorbar else 0), 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    grey = n > 0
    for i, ax in enumerate(axes.ravel()):
        if i < n:
            show_tensor(tensors[i], channel, transform_from_zero_centered, invert, ax=ax,
                        title=None if labels is None else str(labels[i]))
            img = np.asarray(ax.images[-1].get_array())
            grey = grey and (img.ndim == 2 or bool(np.all(img == img[..., :1])))  # RGB of equal channels is grey
        else:
            ax.axis("off")
    if colorbar and grey:
        lo, hi = (-1.0, 1.0) if transform_from_zero_centered else (0.0, 1.0)
        values = [np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t, dtype=np.float32)
                  for t in tensors]
        below = any(float(v.min()) < lo for v in values if v.size)
        above = any(float(v.max()) > hi for v in values if v.size)
        extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get((below, above), "both")
        # the images show 1 - value when inverted: high values dark ("Greys"), else light ("Greys_r")
        scale = ScalarMappable(Normalize(lo, hi), cmap="Greys" if invert else "Greys_r")
        label = colorbar if isinstance(colorbar, str) else "network input (tensor value)"
        fig.colorbar(scale, ax=axes, label=label, extend=extend, shrink=min(1.0, 0.5 + 0.25 * rows), aspect=25)
    return fig
