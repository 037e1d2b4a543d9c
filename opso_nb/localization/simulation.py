"""Simulated recorder arrays: what each recorder hears of calls from known places.

For tutorials, tests and benchmarks: the truth is known, so positions can be checked.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

from opso_nb.localization.localization_algorithms import _as_positions, calc_speed_of_sound
from opso_nb.localization.spatial_event import events_to_df
from opso_nb.localization.synchronized_recorder_array import SynchronizedRecorderArray
from opso_nb.utils import atomic_path, generate_clip_times_df

__all__ = ["simulate_array_recordings", "demo_array"]


def _call_waveform(sample_rate, duration=0.25, low_f=2500.0, high_f=4500.0, seed=None):
    """A frequency-modulated whistle with a smooth envelope (a bird-like test call)."""
    t = np.arange(int(duration * sample_rate)) / sample_rate
    freq = low_f + (high_f - low_f) * (0.5 - 0.5 * np.cos(2 * np.pi * t / duration))
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    envelope = np.sin(np.pi * t / duration) ** 2
    return envelope * np.sin(phase)


def _fractional_delay(signal, delay_samples, length):
    """Place ``signal`` delayed by a fractional number of samples in an array of ``length``."""
    n = int(2 ** math.ceil(math.log2(len(signal) + abs(delay_samples) + length + 1)))
    spectrum = np.fft.rfft(signal, n)
    freqs = np.fft.rfftfreq(n)
    shifted = np.fft.irfft(spectrum * np.exp(-2j * np.pi * freqs * delay_samples), n)
    return shifted[:length]


def simulate_array_recordings(receiver_positions, sources, out_dir, duration: float = 10.0, sample_rate: int = 22050,
                              temperature: float = 20.0, noise_dBFS: float = -50.0, source_level: float = 0.5,
                              clip_duration: float = 1.0, detection_radius: float | None = None, seed: int = 0,
                              file_prefix: str = "rec"):
    """Synthesize what each recorder of an array hears, for tutorials and tests.

    Each source emits a whistle at its time; every receiver gets it delayed by
    distance / speed of sound (fractional-sample accurate), attenuated by
    spherical spreading (1/r, relative to 1 m), plus independent white noise.

    Parameters
    ----------
    receiver_positions : array (n, 2 or 3), metres
    sources : DataFrame or list of dict
        Columns ``x``, ``y`` [, ``z``] (m), ``time`` (emission, s), ``class``
        and optionally ``low_f``/``high_f`` (Hz, whistle sweep) and ``level``.
    out_dir : path
        Folder for ``{file_prefix}_{i}.wav`` and the CSV tables.
    temperature : float
        °C, sets the speed of sound.
    clip_duration : float
        Clip length (s) of the detections table.
    detection_radius : float, optional
        Receivers farther than this from a source do not "detect" it (m).

    Returns
    -------
    dict
        ``file_coords`` (DataFrame indexed by file: x, y[, z]), ``detections``
        (clip table, one 0/1 column per class; a receiver detects a call in
        the clip its arrival falls in), ``truth`` (sources with ``clip_start``,
        the clip each is emitted in: emit calls early in a clip so that every
        receiver hears them within it) and ``speed_of_sound``. All three tables are also
        written as CSV into ``out_dir``.
    """
    positions = _as_positions(receiver_positions)
    dims = positions.shape[1]
    sources = pd.DataFrame(sources).reset_index(drop=True)
    for column in ["x", "y", "time", "class"] + (["z"] if dims == 3 else []):
        if column not in sources.columns:
            raise ValueError(f"sources need a {column!r} column")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    c = calc_speed_of_sound(temperature)
    n = int(round(duration * sample_rate))
    noise_rms = 10 ** (noise_dBFS / 20) / math.sqrt(2)
    files = [str(out_dir / f"{file_prefix}_{i}.wav") for i in range(len(positions))]
    clips = generate_clip_times_df(duration, clip_duration)
    classes = sorted(sources["class"].astype(str).unique())
    detections = pd.DataFrame(0, index=pd.MultiIndex.from_tuples(
        [(f, s, e) for f in files for s, e in clips.itertuples(index=False)], names=["file", "start_time", "end_time"]),
        columns=classes)
    for i, (file, receiver) in enumerate(zip(files, positions)):
        samples = rng.standard_normal(n) * noise_rms
        for _, src in sources.iterrows():
            position = src[["x", "y", "z"][:dims]].to_numpy(float)
            distance = max(float(np.linalg.norm(position - receiver)), 1.0)
            call = _call_waveform(sample_rate, low_f=src.get("low_f", 2500.0) if "low_f" in src else 2500.0,
                                  high_f=src.get("high_f", 4500.0) if "high_f" in src else 4500.0)
            level = float(src["level"]) if "level" in src and pd.notna(src["level"]) else source_level
            arrival = float(src["time"]) + distance / c
            start = int(math.floor(arrival * sample_rate))
            if start >= n:
                continue
            piece = _fractional_delay(call, arrival * sample_rate - start, min(len(call) + 8, n - start))
            samples[start:start + len(piece)] += level / distance * piece
            if detection_radius is None or distance <= detection_radius:
                hit = (clips["start_time"] <= arrival) & (clips["end_time"] > arrival)
                for s, e in clips[hit].itertuples(index=False):
                    detections.loc[(file, s, e), str(src["class"])] = 1
        with atomic_path(file) as tmp:
            soundfile.write(tmp, np.clip(samples, -1, 1).astype(np.float32), sample_rate, subtype="FLOAT",
                            format="WAV")
    coords = pd.DataFrame(positions, index=pd.Index(files, name="file"), columns=["x", "y", "z"][:dims])
    truth = sources.copy()
    truth["clip_start"] = [clips["start_time"][(clips["start_time"] <= t)].max() for t in truth["time"]]
    for name, table in (("coords.csv", coords), ("detections.csv", detections), ("truth.csv", truth)):
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp)
    return {"file_coords": coords, "detections": detections, "truth": truth, "speed_of_sound": c}


def demo_array(out_dir, algorithm: str = "least_squares", seed: int = 7, n_sources: int = 8, duration: float = 12.0):
    """A simulated 6-recorder array with calling birds, localized: data for the tutorial and dashboard.

    Recorders sit on a 100 m square with one in the centre and one 20 m high
    on a mast; ``n_sources`` calls of two classes come from random places
    inside the square. While the first wren calls, a second, quieter wren sings
    3 m from the north-east recorder, spoiling that recorder's delays: the
    events of that clip get large residuals (something to filter out).
    Files are written to ``out_dir``.

    Returns
    -------
    dict
        The simulator's tables plus ``events`` (all candidate events, each with
        its position or error) and ``table`` (:func:`events_to_df` of them).
    """
    rng = np.random.default_rng(seed)
    receivers = np.array([[0, 0, 2], [100, 0, 2], [100, 100, 2], [0, 100, 2], [50, 50, 2], [50, 0, 20]], float)
    classes = np.where(np.arange(n_sources) % 2 == 0, "wren", "thrush")
    sources = pd.DataFrame({
        "x": rng.uniform(15, 85, n_sources), "y": rng.uniform(15, 85, n_sources), "z": rng.uniform(1, 8, n_sources),
        # one call early in each 1 s clip, so every receiver hears it in the same clip (arrivals <= 0.4 s later)
        "time": np.arange(n_sources) * max(1, int(duration // n_sources)) + 0.1, "class": classes,
        "low_f": np.where(classes == "wren", 3000, 1800), "high_f": np.where(classes == "wren", 5000, 3200)})
    intruder = pd.DataFrame([{"x": 97.0, "y": 98.0, "z": 2.0, "time": 0.12, "class": "wren", "low_f": 3000,
                              "high_f": 5000, "level": 0.05}])
    sources = pd.concat([sources, intruder], ignore_index=True)
    sim = simulate_array_recordings(receivers, sources, out_dir, duration=duration, noise_dBFS=-48, seed=seed)
    array = SynchronizedRecorderArray(sim["file_coords"])
    localized, unlocalized = array.localize_detections(
        sim["detections"], max_receiver_dist=200, min_n_receivers=4, localization_algorithm=algorithm,
        bandpass_ranges={"wren": (2500, 5500), "thrush": (1500, 3500)}, speed_of_sound=sim["speed_of_sound"])
    events = localized + unlocalized
    return {**sim, "array": array, "events": events, "table": events_to_df(events)}
