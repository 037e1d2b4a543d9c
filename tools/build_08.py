"""Source of notebooks/08_acoustic_localization.ipynb (run: python tools/build_08.py)."""
from pathlib import Path

from nbbuild import write_notebook

cells = [
("md", """
# 8 · Acoustic localization with a synchronized recorder array

When several recorders share a clock, a call reaches each of them at a slightly different time. Those **time
differences of arrival** (TDOAs) tell where the caller was: territory mapping, counting individuals, following
movement.

This notebook:
1. simulates an array of six recorders with birds calling inside it (so we know the truth);
2. estimates the delays by cross-correlation and turns them into positions with three algorithms;
3. filters out bad localizations by their residuals and compares with the truth;
4. localizes a call on **real recordings** from a six-recorder 3-D array.

Runs in under a minute.
"""),
("code", """
%matplotlib inline
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from opso_nb import sample_data
from opso_nb.localization import (SynchronizedRecorderArray, SpatialEvent, events_to_df, filter_events,
                                  simulate_array_recordings, calc_speed_of_sound, latlon_to_xy)
from opso_nb.audio import Audio
from opso_nb.spectrogram import Spectrogram

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 12)
"""),
("md", """
## 1. A simulated array

Six recorders: four corners of a 100 m square, one in the middle, one on a 20 m mast. Eight calls of two species
(a high "wren" whistle and a lower "thrush" whistle) come from random places. The simulator delays each call by
distance / speed of sound (at 20 °C), weakens it with distance and adds noise, then writes one WAV per recorder and
a **detections table**: which recorder heard which class in which 1-second clip. In a real project that table comes
from a CNN or RIBBIT (notebooks 5 and 7).

To make it realistic, a second wren sings quietly right next to the north-east recorder while the first wren calls:
that recorder hears mostly the wrong bird, a classic source of bad delays.
"""),
("code", """
work = Path(tempfile.mkdtemp())
rng = np.random.default_rng(7)
receivers = np.array([[0, 0, 2], [100, 0, 2], [100, 100, 2], [0, 100, 2], [50, 50, 2], [50, 0, 20]], float)
n = 8
classes = np.where(np.arange(n) % 2 == 0, "wren", "thrush")
sources = pd.DataFrame({"x": rng.uniform(15, 85, n), "y": rng.uniform(15, 85, n), "z": rng.uniform(1, 8, n),
                        "time": np.arange(n) + 0.1, "class": classes,  # one call per 1 s clip
                        "low_f": np.where(classes == "wren", 3000, 1800), "high_f": np.where(classes == "wren", 5000, 3200)})
intruder = pd.DataFrame([{"x": 97.0, "y": 98.0, "z": 2.0, "time": 0.12, "class": "wren", "low_f": 3000,
                          "high_f": 5000, "level": 0.05}])  # a tenth as loud, 3 m from recorder 2
sim = simulate_array_recordings(receivers, pd.concat([sources, intruder], ignore_index=True), work, duration=n,
                               temperature=20, noise_dBFS=-48, seed=7)
speed_of_sound = sim["speed_of_sound"]
print(f"speed of sound at 20 °C: {speed_of_sound:.1f} m/s")
sim["detections"].head(8)
"""),
("code", """
fig, ax = plt.subplots(figsize=(5, 5))
ax.scatter(receivers[:, 0], receivers[:, 1], marker="^", s=120, c="k", label="recorders")
for cls, marker in [("wren", "o"), ("thrush", "s")]:
    s = sources[sources["class"] == cls]
    ax.scatter(s.x, s.y, marker=marker, label=f"{cls} (true)")
ax.set_aspect("equal"); ax.set_xlabel("x (m)"); ax.set_ylabel("y (m)"); ax.legend(loc="upper right", fontsize=8);
"""),
("md", """
## 2. From detections to events

`SynchronizedRecorderArray` holds the recorder positions (a table of file → x, y, z in metres).
`create_candidate_events` turns every detection into an event: that recorder is the *reference*, joined by the nearby
recorders (within `max_receiver_dist`) that detected the same class in the same clip. Each detection becomes the
reference of one event, so every call is localized several times: a built-in consistency check.
"""),
("code", """
array = SynchronizedRecorderArray(sim["file_coords"])
events = array.create_candidate_events(sim["detections"], min_n_receivers=4, max_receiver_dist=200)
print(len(events), "candidate events;", events[0])
"""),
("md", """
Each event estimates its delays with **generalized cross-correlation** (GCC). The `phat` filter whitens the spectra so
the correlation peak is sharp even for tonal calls; a band-pass to the species' frequencies keeps other sounds out.
Below, each receiver's audio is shifted by its estimated delay: when the delays are right, the calls line up.
"""),
("code", """
event = events[0]
event.bandpass_range = (2500, 5500)
delays = event.estimate_delays(cc_filter="phat")
print("delays (ms):", np.round(1000 * delays, 2), " peak correlations:", np.round(event.cc_maxs, 2))
fig, axes = plt.subplots(1, len(event.receiver_files), figsize=(14, 2.5), sharey=True)
for ax, clip, file in zip(axes, event.aligned_audio(padding=0.05), event.receiver_files):
    Spectrogram.from_audio(clip, window_samples=256).bandpass(1000, 7000).plot(ax=ax, title=Path(file).stem)
    ax.set_ylabel("")
"""),
("md", """
## 3. Positions, three ways

* **`gillette`** (Gillette & Silverman 2008): a linear closed form; fast; needs dims + 2 receivers.
* **`soundfinder`** (Wilson et al. 2014): the GPS (Bancroft) solution; needs dims + 1 receivers.
* **`least_squares`**: nonlinear least squares on the TDOA equations, started from the closed form; usually the most
  accurate with noisy delays.

`localize_detections` runs the whole chain (candidates → delays → positions) and returns localized and unlocalized
events. The **residual RMS** (metres) says how well the delays fit the position: large values mean a wrong delay
(echo, another bird) or a source outside the array.
"""),
("code", """
bands = {"wren": (2500, 5500), "thrush": (1500, 3500)}
truth = sources.assign(clip_start=np.floor(sources["time"])).set_index(["class", "clip_start"])  # intruder left out
summary = []
results = {}
for algorithm in ["gillette", "soundfinder", "least_squares"]:
    localized, unlocalized = array.localize_detections(
        sim["detections"], max_receiver_dist=200, min_n_receivers=4, localization_algorithm=algorithm,
        bandpass_ranges=bands, speed_of_sound=speed_of_sound)
    table = events_to_df(localized)
    true_xyz = truth.loc[list(zip(table["class"], table["start_time"]))][["x", "y", "z"]].to_numpy()
    table["error_m"] = np.linalg.norm(table[["x", "y", "z"]].to_numpy() - true_xyz, axis=1)
    table["error_xy_m"] = np.linalg.norm(table[["x", "y"]].to_numpy() - true_xyz[:, :2], axis=1)
    results[algorithm] = table
    summary.append({"algorithm": algorithm, "localized": len(localized), "unlocalized": len(unlocalized),
                    "median 3-D error (m)": table["error_m"].median(), "median 2-D error (m)": table["error_xy_m"].median(),
                    "median residual (m)": table["residual_rms"].median()})
pd.DataFrame(summary).round(2)
"""),
("md", """
All three recover the simulated positions to within centimetres (medians), height included thanks to the recorder on
the mast: with every recorder at the same height, a source above the plane and its mirror image below fit equally
well. Real recordings are harder (echoes, wind, other birds, recorder positions known to a metre or so), as the next
sections show.

## 4. Filtering by residuals and cross-correlation

Keep events whose residual RMS is below a few metres and whose receivers all correlated well. `filter_events` applies
these rules to the results table (the dashboard's sliders do the same).
"""),
("code", """
table = results["least_squares"]
columns = ["class", "start_time", "reference_file", "n_receivers", "min_cc", "residual_rms", "error_m"]
table.sort_values("residual_rms", ascending=False)[columns].assign(
    reference_file=lambda t: t.reference_file.map(lambda f: Path(f).name)).head(8).round(3)
"""),
("md", """
The worst residuals all belong to the first clip, where the intruder spoils recorder 2's delay: those events are also
the ones far from the truth. A residual threshold of 2 m removes them. The peak cross-correlation (`min_cc`: the
weakest receiver of the event) is a second, independent check; with the `phat` filter its values are small for
band-limited calls in broadband noise, so judge a threshold by the spread of values in your own data.
"""),
("code", """
keep = filter_events(table, residual_threshold=2.0)
print(f"{keep.sum()} of {len(table)} events kept; median error of kept events "
      f"{table.loc[keep, 'error_m'].median():.2f} m, of removed ones {table.loc[~keep, 'error_m'].median():.2f} m")
fig, ax = plt.subplots(figsize=(8, 5.5))
ax.scatter(receivers[:, 0], receivers[:, 1], marker="^", s=120, c="k", label="recorders")
ax.scatter(sources.x, sources.y, marker="x", s=120, c="gray", label="true sources")
for cls, color in [("wren", "tab:blue"), ("thrush", "tab:orange")]:
    t = table[keep & (table["class"] == cls)]
    ax.scatter(t.x, t.y, s=25, color=color, alpha=0.7, label=f"{cls} (localized)")
t = table[~keep]
ax.scatter(t.x, t.y, s=25, facecolor="none", edgecolor="red", label="removed (residual > 2 m)")
ax.set_xlim(-20, 130); ax.set_ylim(-20, 130)
ax.set_aspect("equal"); ax.set_xlabel("x (m)"); ax.set_ylabel("y (m)")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1));
"""),
("md", """
Results are a plain table: save it for GIS or R, atomically, so an interrupted save never leaves half a file
(`localize_detections(..., results_csv=path)` does this for all events, localized and not).
"""),
("code", """
from opso_nb.utils import atomic_write

with atomic_write(work / "localized_events.csv") as f:
    table[keep].to_csv(f, index=False)
table[keep][["class", "start_time", "x", "y", "z", "residual_rms", "n_receivers"]].head().round(2)
"""),
("md", """
## 5. Real recordings: a six-recorder 3-D array

The package ships 1-second clips from six synchronized recorders on three poles about 20 m apart, with microphones at
about 3 m and 15 m on each pole, recorded before dawn in September. All six detected a "zeep", a nocturnal flight call
of a migrating songbird, in the clip 0.2–0.5 s. The tables list paths as `tests/audio/...`; we point them at the
bundled folder and leave out files that are not shipped (and a late-starting copy of recorder 8, used further down).
"""),
("code", """
folder = sample_data.localization_folder()
coords = pd.read_csv(folder / "LOCA_2021_aru_coords.csv", skipinitialspace=True)
detections = pd.read_csv(folder / "LOCA_2021_detections.csv", skipinitialspace=True)
for t in (coords, detections):
    t["file"] = [str(folder / Path(f).name) for f in t["file"]]
coords = coords[[Path(f).exists() and not f.endswith("_late_start.wav") for f in coords["file"]]]
detections = detections[detections["file"].isin(coords["file"])].set_index(["file", "start_time", "end_time"])
coords
"""),
("md", """
The spectrogram shows a steady insect chorus at about 4.5 and 6.5 kHz; the zeep sits higher, at 7–9 kHz. Without a
band-pass the cross-correlation would lock onto the insects, so we give the class its band.
"""),
("code", """
clip = Audio.from_file(coords["file"].iloc[1])
Spectrogram.from_audio(clip, window_samples=512).plot(title=Path(coords["file"].iloc[1]).name);
"""),
("code", """
real_array = SynchronizedRecorderArray(coords)
localized, unlocalized = real_array.localize_detections(
    detections, max_receiver_dist=100, min_n_receivers=4, localization_algorithm="least_squares",
    bandpass_ranges={"zeep": (7000, 9000)}, residual_threshold=0.5)
real = events_to_df(localized)
centre = real_array.file_coords.to_numpy().mean(axis=0)
d = real[["x", "y", "z"]].to_numpy() - centre
real["elevation_deg"] = np.degrees(np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1])))
real["azimuth_deg"] = np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360  # clockwise from north (+y)
print(len(localized), "events kept,", len(unlocalized), "set aside:", [e.error[:60] for e in unlocalized])
real[["reference_file", "x", "y", "z", "residual_rms", "elevation_deg", "azimuth_deg"]].assign(
    reference_file=lambda t: t.reference_file.map(lambda f: Path(f).name)).round(1)
"""),
("md", """
Each pole's two microphones hear the call about 33 ms apart, nearly the 11.5 m between them divided by the speed of
sound: the bird was almost straight overhead. From an array 20 m across, the *distance* to a source 100 m up is
poorly fixed (the estimates slide along one line), but the *direction* is not: every well-fitting event points up at
about 78° elevation, towards the north-west. That is what a flight call from a bird passing overhead should look like.

Recorders do not always start together. Recorder 8 also exists as a copy that started 0.1 s late (its AudioMoth
metadata says so); events read each file at the same real time, so its delay comes out the same:
"""),
("code", """
late = str(folder / "LOCA_2021_09_24_652_8_late_start.wav")
xyz = real_array.file_coords[["x", "y", "z"]]
for partner in [coords["file"].iloc[5], late]:
    e = SpatialEvent([coords["file"].iloc[0], partner], xyz.iloc[[0, 5]].to_numpy(), start_time=0.2, duration=0.3,
                     bandpass_range=(7000, 9000))
    print(f"{Path(partner).name:40s} delay {1000 * e.estimate_delays()[1]:+.2f} ms")
"""),
("md", """
## 6. Recorders given in latitude / longitude

GPS positions convert to local metres with `latlon_to_xy` (an equirectangular projection around the array's centre,
accurate to millimetres over a few kilometres). `SynchronizedRecorderArray` does this itself when its table has
`lat`/`lon` columns instead of `x`/`y`.
"""),
("code", """
x, y = latlon_to_xy([40.4410, 40.4415, 40.4410], [-79.9600, -79.9600, -79.9593])
print(np.round(x, 1), np.round(y, 1))
"""),
("md", """
## Next

Review localized events interactively (filters, aligned spectrograms, audio of each receiver) in the
**localization map** dashboard: `notebooks/apps/localization_map.ipynb`.
"""),
]

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print(write_notebook(root / "notebooks" / "08_acoustic_localization.ipynb", cells))
