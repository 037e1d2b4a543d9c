"""Source of notebooks/07_ribbit_pulse_rate.ipynb (run: python tools/build_07.py)."""
from pathlib import Path

from nbbuild import write_notebook

cells = [
("md", """
# 7 · RIBBIT: finding pulsing calls without training data

Many frogs and toads, and some birds and insects, call with a steady **pulse rate**: a trill is a train of short
sound pulses repeated, say, 15 times per second. RIBBIT (Repeat-Interval Based Bioacoustic Identification Tool,
Lapp et al. 2021) scores how strongly the energy in a species' frequency band pulses at that rate. It needs no
labelled data, so it is a good first tool for a species nobody has annotated yet.

This notebook:
1. chooses RIBBIT parameters for the Great Plains toad (*Anaxyrus cognatus*) by looking at a spectrogram;
2. runs RIBBIT on one recording and reads the scores per clip;
3. opens the detail view to see *why* a clip scored high or low;
4. scores a set of recordings for several species at once, with bad files reported;
5. picks a score threshold;
6. detects ruffed grouse drumming (an *accelerating* pulse series) with a wavelet peak detector.

The recordings are bundled with `opso_nb` (AudioMoth recordings from the R package *ribbit*, MIT licence).
Runs in about half a minute.
"""),
("code", """
%matplotlib inline
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from opso_nb import sample_data
from opso_nb.audio import Audio
from opso_nb.spectrogram import Spectrogram
from opso_nb.ribbit import RibbitParams, ribbit, plot_ribbit_detail, ribbit_detail, run_ribbit
from opso_nb import signal_processing as sp

pd.set_option("display.precision", 2)
work = Path(tempfile.mkdtemp())
"""),
("md", """
## 1. Look before you choose parameters

RIBBIT's parameters describe the call:

| parameter | meaning | how to choose |
|---|---|---|
| `signal_band` | frequency range of the call (Hz) | narrow, around the call's strongest energy |
| `noise_bands` | ranges whose energy is **subtracted** | a low band against clicks and rain; bands next to the signal band or on confusion species |
| `pulse_rate_range` | pulses per second | count pulses in a zoomed spectrogram; allow for temperature (pulse rate rises with it) |
| `clip_duration` | seconds scored at a time | long enough for ≥ 5 pulses, about the length of a call or longer |

Here are the first 2 seconds of a toad recording: a dense trill with its energy between about 1.9 and 2.4 kHz.
"""),
("code", """
toad_file = sample_data.path("toads/gpt3.mp3")
audio = Audio.from_file(toad_file)
print(audio, f"{audio.duration:.1f} s")
spec = Spectrogram.from_audio(audio)  # 512-sample windows at 48 kHz: 94 Hz bins, a column every 5.3 ms

params = RibbitParams()  # the Great Plains toad settings of the OpenSoundscape tutorial
print(params.to_dict())

zoom = spec.trim(0, 2).bandpass(0, 5000)
fig, ax = plt.subplots(figsize=(10, 3.5))
ax.pcolormesh(zoom.times, zoom.frequencies, zoom.spectrogram, cmap="Greys", vmin=-100, vmax=-20, shading="auto")
ax.axhspan(*params.signal_band, color="tab:green", alpha=0.3, label="signal band")
for i, band in enumerate(params.noise_bands):
    ax.axhspan(*band, color="tab:red", alpha=0.15, label="noise bands" if i == 0 else None)
ax.set_xlabel("time (s)"); ax.set_ylabel("frequency (Hz)"); ax.legend(loc="upper right");
"""),
("md", """
Pulses are hard to count by eye in a dense chorus. The **band amplitude** makes them visible: the mean level in
the signal band per spectrogram column, minus the level in the noise bands. Its ripples are the pulses.
"""),
("code", """
detail = ribbit_detail(spec, params, 0, 1)
fig, ax = plt.subplots(figsize=(10, 2.5))
ax.plot(detail["times"], detail["net"])
ax.set_xlabel("time (s)"); ax.set_ylabel("net band level (0-1)");
"""),
("md", """
## 2. Scores for one recording

`ribbit` cuts the spectrogram into clips and scores each: it takes the power spectral density (PSD) of the net
band amplitude and keeps its largest value within `pulse_rate_range`. The result is the project's usual clip
table (start and end time in seconds) with a `score` column.

Scores are **not probabilities**. They depend on the recording level and the settings; compare them between
clips and files recorded the same way.
"""),
("code", """
scores = ribbit(spec, **params.ribbit_kwargs())
scores
"""),
("code", """
negative = Audio.from_file(sample_data.path("toads/negative4.mp3"))
neg_scores = ribbit(Spectrogram.from_audio(negative), **params.ribbit_kwargs())
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(scores.start_time, scores.score, "o-", label="gpt3 (toads)")
ax.plot(neg_scores.start_time, neg_scores.score, "s-", label="negative4 (no toads)")
ax.set_xlabel("clip start (s)"); ax.set_ylabel("RIBBIT score"); ax.legend();
assert scores.score.min() > neg_scores.score.max()
"""),
("md", """
## 3. The detail view: why did a clip score what it did?

`plot_ribbit_detail` shows, for one clip, the spectrogram with the bands, the band amplitudes over time and the
PSD of the net amplitude with the pulse-rate window. A real trill gives a clear peak inside the window (here near
the toad's pulse rate); a clip without it gives a flat, low spectrum.
"""),
("code", """
best = scores.loc[scores.score.idxmax()]
fig = plot_ribbit_detail(spec, params, best.start_time, best.end_time)
"""),
("code", """
neg_spec = Spectrogram.from_audio(negative)
fig = plot_ribbit_detail(neg_spec, params, 0, 2)
"""),
("md", """
The peak rate tells you whether the pulse-rate range fits. If the toad's peak sat at the edge of the window,
widen the range; if a confusion species peaks inside it, narrow the signal band or add a noise band over that
species. Settings that exclude the toad's rate give low scores on the same clip:
"""),
("code", """
for prr in [(2, 5), (8, 20), (30, 45)]:
    p = RibbitParams(pulse_rate_range=prr)
    print(f"pulse_rate_range {prr}: score {ribbit_detail(spec, p, best.start_time, best.end_time)['score']:.2e}")
"""),
("md", """
The **RIBBIT explorer** dashboard (`notebooks/apps/ribbit_explorer.ipynb`) does this interactively: sliders for
every parameter, the score curve and detail view update live, and a *Save* button writes the parameter set as
JSON, which `RibbitParams.load` reads back here. The same JSON round trip by hand:
"""),
("code", """
saved = params.save(work / "great_plains_toad.json")
print(saved.read_text())
assert RibbitParams.load(saved).to_dict() == params.to_dict()
"""),
("md", """
## 4. Many files, several species, bad files included

`run_ribbit` scores a list of files for any number of species in one pass: each file is read once (in chunks,
so hour-long recordings fit in memory) and one spectrogram serves all species with the same spectrogram
settings. The result is one table indexed by (file, start_time, end_time) with a score column per species.
Unreadable files do not stop the run; they are listed in the second table. With `out_path` the table is
written to disk after every file and a rerun resumes where it stopped.

The second species is a trilling bird at 5-6.5 kHz that pulses 8-11 times per second (from the OpenSoundscape
tutorial); we include two broken files to see how they are reported.
"""),
("code", """
bird = RibbitParams(species="bird_series", signal_band=(5000, 6500), noise_bands=[(0, 4000)],
                    pulse_rate_range=(8, 11), clip_duration=2.0)
files = sorted(sample_data.toads_folder().glob("*.mp3"))
files += [sample_data.path("corrupt/empty_2c.wav"), work / "does_not_exist.wav"]

clip_scores, errors = run_ribbit(files, [params, bird], out_path=work / "ribbit_scores.csv", progress=False)
print(clip_scores.shape)
clip_scores.head()
"""),
("code", """
errors
"""),
("md", """
A file's score is usually its highest clip score. Sorted by the toad score:
"""),
("code", """
per_file = clip_scores.groupby(level="file").max()
per_file.index = [Path(f).name for f in per_file.index]
per_file["has_toad"] = per_file.index.str.startswith("gpt")
per_file.sort_values("great_plains_toad", ascending=False)
"""),
("md", """
All four toad recordings rank in the top half and the quiet negatives (silence, water, pops: the noise bands
cancel the pops) at the bottom, but two negatives outrank the toads. The detail view says why: in `negative5`
the loudest clip is full of broadband clicks and bird notes whose level changes differ between the signal band and
the noise bands, so they are not fully cancelled.
"""),
("code", """
top_negative = clip_scores.loc[str(sample_data.path("toads/negative5.mp3")), "great_plains_toad"].idxmax()
n5 = Spectrogram.from_audio(Audio.from_file(sample_data.path("toads/negative5.mp3")))
fig = plot_ribbit_detail(n5, params, *top_negative)
"""),
("md", """
The `bird_series` column ranks `negative5` and `negative1` (trilling birds at 5-6 kHz) highest, and the toad
recordings low: different species, different bands and rates, same pass over the files.

Parameter tables kept in a spreadsheet work too: `species_params_from_df` reads one row per species and parses
cells such as `"[8, 20]"` that come back as text from CSV.
"""),
("code", """
from opso_nb.ribbit import species_params_from_df

table = pd.DataFrame([p.to_dict() for p in (params, bird)])
table.to_csv(work / "species.csv", index=False)
from_csv = species_params_from_df(pd.read_csv(work / "species.csv"))
{name: p.pulse_rate_range for name, p in from_csv.items()}
"""),
("md", """
## 5. Choosing a threshold

Without labels you would listen to clips around a few candidate thresholds. Here the file names tell us which
recordings have toads, so we can count, for each threshold, the toad files found (recall) and the share of files
above the threshold that really have toads (precision).
"""),
("code", """
rows = []
for threshold in np.quantile(per_file.great_plains_toad, np.linspace(0.3, 0.95, 8)):
    above = per_file.great_plains_toad >= threshold
    found = (above & per_file.has_toad).sum()
    rows.append(dict(threshold=threshold, files_above=int(above.sum()),
                     precision=found / max(above.sum(), 1), recall=found / per_file.has_toad.sum()))
pd.DataFrame(rows)
"""),
("md", """
On this small, hard set (several negatives contain other pulsing sounds near 2 kHz) no threshold separates the
two groups perfectly; a threshold that keeps every toad file also keeps a few negatives to check by ear. That is
the normal way to use RIBBIT: rank a large survey, listen from the top down, and tighten the bands where
confusion sounds score high.

## 6. Ruffed grouse drumming: an accelerating pulse series

A drumming ruffed grouse makes low thumps (~50 Hz) that start about half a second apart and speed up. A fixed
pulse rate does not fit, so `opso_nb.signal_processing` has a detector for **accelerating sequences**:
`cwt_peaks` finds the thumps with a wavelet tuned to 50 Hz, and `find_accel_sequences` links peaks whose
intervals shrink smoothly.
"""),
("code", """
grouse = Audio.from_file(sample_data.ruffed_grouse()).resample(400)  # 400 Hz is plenty for 50 Hz thumps
peak_times, peak_levels = sp.cwt_peaks(grouse, center_frequency=50, peak_threshold=0.2, peak_separation=15 / 400,
                                       plot=True)
print(len(peak_times), "peaks; first intervals (s):", np.round(np.diff(peak_times)[:8], 3))
"""),
("code", """
seq_t, seq_y = sp.find_accel_sequences(peak_times)
fig, ax = plt.subplots(figsize=(8, 3))
ax.scatter(peak_times[:-1], np.diff(peak_times), s=12, c="0.6", label="all peaks")
for t, y in zip(seq_t, seq_y):
    ax.plot(t, y, "r.-", label="accelerating sequence")
ax.set_xlabel("time (s)"); ax.set_ylabel("interval to next peak (s)"); ax.legend();
"""),
("md", """
`detect_peak_sequence_cwt` wraps both steps for long recordings (non-overlapping analysis windows, 60 s by
default) and returns one row per detected drumming bout:
"""),
("code", """
bouts = sp.detect_peak_sequence_cwt(Audio.from_file(sample_data.ruffed_grouse()))
bouts[["seq_len", "seq_start_time", "seq_end_time", "seq_midpoint_time"]]
"""),
("code", """
assert len(bouts) == 1 and bouts.seq_len.iloc[0] >= 20
"""),
("md", """
## Summary

- Choose `signal_band`, `noise_bands`, `pulse_rate_range` and `clip_duration` from spectrograms of the species;
  check them with the detail view or the RIBBIT explorer dashboard.
- `ribbit(spectrogram, ...)` scores the clips of one recording; `run_ribbit(files, [species...])` scores a
  survey for several species at once, reports bad files and resumes.
- Scores are relative: rank, listen, then choose a threshold.
- Accelerating series such as grouse drumming: `cwt_peaks` + `find_accel_sequences` or
  `detect_peak_sequence_cwt`.
"""),
]

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "notebooks" / "07_ribbit_pulse_rate.ipynb"
    print(write_notebook(out, cells))
