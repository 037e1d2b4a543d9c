"""Small helpers for the ML modules: activation layers, batching, class-aware loaders."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile
import torch

from opso_nb.ml.sampling import ClassAwareSampler
from opso_nb.utils import CLIP_INDEX, atomic_path, atomic_write

ACTIVATION_LAYERS = (None, "sigmoid", "softmax", "softmax_and_logit")


def apply_activation_layer(x, activation_layer=None):
    """Apply an activation to raw network outputs (logits), rows = samples.

    Parameters
    ----------
    x : torch.Tensor or array-like (n_samples, n_classes)
    activation_layer : {None, "sigmoid", "softmax", "softmax_and_logit"}
        None keeps logits; "sigmoid" gives independent scores in [0, 1]; "softmax" gives
        scores summing to 1 per row; "softmax_and_logit" maps softmax scores back to the
        logit scale (spreads scores near 0 and 1 apart).

    Returns
    -------
    torch.Tensor
    """
    if activation_layer not in ACTIVATION_LAYERS:
        raise ValueError(f"activation_layer must be one of {ACTIVATION_LAYERS}, got {activation_layer!r}")
    x = torch.as_tensor(x, dtype=torch.float32)
    if activation_layer is None:
        return x
    if activation_layer == "sigmoid":
        return torch.sigmoid(x)
    soft = torch.softmax(x, dim=1)
    if activation_layer == "softmax":
        return soft
    return torch.logit(soft, eps=1e-7)


def to_network_input(x, device, channels_last=False):
    """Move a ``[batch, C, H, W]`` batch to ``device``, optionally in channels-last memory order.

    Channels-last (NHWC) is the layout oneDNN and cuDNN convolutions run fastest on:
    about 10-25% more clips per second for resnet18 on a CPU, in training and prediction.
    The values are unchanged; only the order in memory differs.
    """
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def prepare_network(network, device, channels_last=False):
    """Move ``network`` to ``device``; with ``channels_last`` also store its 4-D weights NHWC."""
    network.to(device)
    if channels_last:
        network.to(memory_format=torch.channels_last)
    return network


def native_bf16_cpu() -> bool:
    """Whether this CPU does bfloat16 matrix maths in hardware (AVX512-BF16 or AMX).

    Without it, bfloat16 is emulated and slower than float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device, use_amp=None):
    """Reduced precision for the network's maths on ``device``, or None for float32.

    Parameters
    ----------
    device : torch.device or str
    use_amp : bool or None
        True: always (bfloat16 on CPU; bfloat16 or, on older GPUs, float16 on CUDA).
        False: never. None (auto): on CUDA, and on CPUs with native bfloat16.

    Returns
    -------
    torch.dtype or None
    """
    device = torch.device(device)
    if use_amp is False or device.type not in ("cpu", "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if use_amp is None and not native_bf16_cpu():
        return None
    return torch.bfloat16


def autocast(device, dtype):
    """``torch.autocast`` for ``device`` with ``dtype`` from :func:`autocast_dtype` (off when None).

    Weights stay float32; convolutions and matrix products run in ``dtype``, which
    about doubles resnet18 training speed on a CPU with native bfloat16.
    """
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def loader_worker_init(_worker_id):
    """DataLoader ``worker_init_fn``: one thread and a lower CPU priority per worker.

    Workers only read and preprocess audio. On a machine with few cores they would
    otherwise take cores from the network's threads, which wait for each other at
    every layer; at lower priority they fill the gaps instead.
    """
    torch.set_num_threads(1)
    try:
        os.nice(10)
    except OSError:  # not permitted here: run at normal priority
        pass


def get_batch(array, batch_size, batch_number):
    """Rows ``batch_number * batch_size`` up to the next ``batch_size`` (the last batch may be short)."""
    start = batch_number * batch_size
    return array[start : start + batch_size]


def cas_dataloader(dataset, batch_size, num_workers, labels=None, num_samples_cls=1):
    """DataLoader drawing batches with :class:`~opso_nb.ml.sampling.ClassAwareSampler`.

    ``labels`` default to ``dataset.label_df``.
    """
    labels = dataset.label_df.values if labels is None else np.asarray(labels)
    sampler = ClassAwareSampler(labels, num_samples_cls=num_samples_cls)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, sampler=sampler)


def make_tone_dataset(folder, n_per_class=8, duration=1.0, sample_rate=16000, classes=("low_tone", "high_tone"),
                      frequencies=(1000.0, 4000.0), noise_dBFS=-30.0, seed=0, write_labels=True, n_mixed=0,
                      n_empty=0):
    """Write a small, trivially separable labelled dataset of synthetic clips.

    Each clip is white noise plus, for positive clips, a pure tone at its class's
    frequency (class ``i`` -> ``frequencies[i]`` Hz). Clips alternate between the
    classes, one class per clip. Useful for tutorials, smoke tests and
    benchmarks: a working training loop reaches ROC-AUC near 1 in a few epochs.

    Parameters
    ----------
    folder : str or Path
        Created if missing; WAV files and ``labels.csv`` go there.
    n_per_class : int or list of int
        Clips per class (a list gives imbalanced classes).
    duration : float
        Clip length (s).
    sample_rate : int
        Hz.
    classes, frequencies : sequence
        Class names and their tone frequencies (Hz), same length.
    noise_dBFS : float
        Level of the background noise.
    seed : int
        Makes the files identical from run to run.
    write_labels : bool
        Also write ``labels.csv`` (the returned table, atomically).
    n_mixed : int
        Extra clips holding every class's tone at once (multi-label rows).
    n_empty : int
        Extra noise-only clips (all labels 0).

    Returns
    -------
    pandas.DataFrame
        Clip table indexed by (file, start_time, end_time) with one 0/1 column per class.
    """
    if len(classes) != len(frequencies):
        raise ValueError("classes and frequencies must have the same length")
    # absolute: labels.csv is read relative to its own folder, so cwd-relative paths would be doubled
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    noise_amp = 10 ** (noise_dBFS / 20)
    counts = [int(n_per_class)] * len(classes) if np.isscalar(n_per_class) else [int(n) for n in n_per_class]
    if len(counts) != len(classes):
        raise ValueError("n_per_class needs one count per class")
    # (name, set of class indices present); single-class clips interleaved so any prefix is balanced
    plan = []
    for k in range(max(counts)):
        plan.extend((f"{classes[c]}_{k:03d}", {c}) for c in range(len(classes)) if k < counts[c])
    plan += [(f"mixed_{k:03d}", set(range(len(classes)))) for k in range(n_mixed)]
    plan += [(f"empty_{k:03d}", set()) for k in range(n_empty)]
    rows = []
    for name, present in plan:
        x = noise_amp * rng.standard_normal(n)
        for c in sorted(present):
            x = x + 0.3 / len(present) ** 0.5 * np.sin(2 * np.pi * frequencies[c] * t + rng.uniform(0, 2 * np.pi))
        path = folder / f"{name}.wav"
        with atomic_path(path) as tmp:
            soundfile.write(tmp, x.astype(np.float32), sample_rate, format="WAV")
        rows.append([str(path), 0.0, float(duration)] + [int(k in present) for k in range(len(classes))])
    df = pd.DataFrame(rows, columns=CLIP_INDEX + list(classes)).set_index(CLIP_INDEX)
    if write_labels:
        with atomic_write(folder / "labels.csv") as fh:
            df.to_csv(fh)
    return df


def network_forward(network, batch, device, amp_dtype=None, channels_last=False, activation_layer=None):
    """One forward pass on a ``[batch, C, H, W]`` tensor: float32 outputs on the CPU.

    The single place where opso_nb runs a network for scores (prediction,
    validation, embeddings): the batch is moved to ``device`` (channels-last when
    asked), run under :func:`autocast` with ``amp_dtype`` (None: float32), tuple
    outputs such as Inception's ``(logits, aux)`` are reduced to the first
    element, and ``activation_layer`` (see :func:`apply_activation_layer`) is applied
    in float32. Call it inside ``torch.inference_mode()`` or ``torch.no_grad()``.

    Returns
    -------
    torch.Tensor
        ``[batch, n_outputs]``, float32, on the CPU.
    """
    with autocast(device, amp_dtype):
        out = network(to_network_input(batch, device, channels_last))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return apply_activation_layer(out.float(), activation_layer).cpu()
