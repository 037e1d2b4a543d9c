"""Source of notebooks/01_audio_and_spectrograms.ipynb (run: python tools/build_01.py)."""
from pathlib import Path

from nbbuild import write_notebook

cells = [
("md", """
# 1 · Audio and spectrograms

You came home from the field with a folder of recordings. This notebook shows how to **open, listen to, cut and look at**
them with `opso_nb`. Everything runs on example recordings that ship with the package, in about a minute on a laptop.

What you will learn:
1. load a whole recording, or just a few seconds of a long one;
2. listen to it in the notebook;
3. cut it into clips and save them;
4. filter out frequencies you don't care about;
5. draw spectrograms and choose their settings (the time vs. frequency trade-off);
6. what happens with broken files.

> Coming from OpenSoundscape? The names are the same: replace `opensoundscape` by `opso_nb` in your imports.
"""),
("code", """
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

from opso_nb import sample_data
from opso_nb.audio import Audio, AudioLoadError
from opso_nb.spectrogram import Spectrogram, MelSpectrogram
"""),
("md", """
## Loading a recording

`Audio.from_file` opens WAV, FLAC, OGG and MP3 files. The example is a 60-second AudioMoth recording from Pennsylvania.
An `Audio` object holds the **samples** (numbers between -1 and 1) and the **sample rate** (samples per second, Hz).
"""),
("code", """
path = sample_data.audiomoth_1min()
audio = Audio.from_file(path)
print(audio)
print(f"duration: {audio.duration} s, sample rate: {audio.sample_rate} Hz")
print(f"loudness: rms = {audio.rms:.3f}, level = {audio.dBFS:.1f} dBFS")
"""),
("md", """
AudioMoth recorders write when and how they recorded into the file header. `opso_nb` reads it for you:
"""),
("code", """
audio.metadata
"""),
("md", """
## Listening

An `Audio` object shown as the last line of a cell becomes a player (here: the first 10 seconds).
`audio.show_widget()` does the same from anywhere.
"""),
("code", """
audio.trim(0, 10)
"""),
("md", """
## Loading only a piece of a long recording

Field recordings are often hours long. Give `offset` (where to start, in seconds) and `duration` and only that part is
read from disk; the rest of the file is never loaded. For AudioMoth files you can also ask for a real-world time
with `start_timestamp`.
"""),
("code", """
import datetime as dt

piece = Audio.from_file(path, offset=30, duration=5)
print(piece.duration, "s starting at", piece.metadata["recording_start_time"])

start = audio.metadata["recording_start_time"] + dt.timedelta(seconds=42)
at_time = Audio.from_file(path, start_timestamp=start, duration=3)
print(at_time.duration, "s starting at", at_time.metadata["recording_start_time"])
"""),
("md", """
Loading can also **resample**: convert to another sample rate as the file is read. Every edit returns a *new*
object, so the original stays as it was.
"""),
("code", """
low_rate = Audio.from_file(path, duration=5, sample_rate=22050)
print(low_rate.sample_rate, "Hz;", "original still at", audio.sample_rate, "Hz")
"""),
("md", """
## Trimming, extending, looping
"""),
("code", """
five = audio.trim(0, 5)
print("trimmed:", five.duration, "s")
print("extended with silence:", five.extend_to(10).duration, "s")
print("looped to 7.5 s:", five.loop(7.5).duration, "s;  looped 3 times:", five.loop(n=3).duration, "s")
"""),
("md", """
## Cutting a recording into clips

Machine-learning models look at short clips of fixed length. `split` cuts the audio and returns the clips and a table
of their start and end times. `clip_overlap` makes clips share time (so a call cut in half by one clip boundary is
whole in the neighbouring clip); `final_clip` says what to do with a leftover shorter than a clip:
`None` drops it, `"remainder"` keeps it short, `"full"` shifts it back to full length, `"extend"` pads it with silence.
"""),
("code", """
clips, clip_df = audio.split(clip_duration=5, clip_overlap=2.5, final_clip="full")
print(len(clips), "clips")
clip_df.head()
"""),
("md", """
`split_and_save` writes each clip to a WAV file named after its times. Use `dry_run=True` to see the table without
writing anything.
"""),
("code", """
import tempfile
from pathlib import Path

out_folder = Path(tempfile.mkdtemp()) / "clips"
saved = audio.split_and_save(out_folder, prefix="audiomoth", clip_duration=10)
print(len(list(out_folder.glob("*.wav"))), "files written, e.g.", Path(saved.index[0]).name)
saved.head(3)
"""),
("md", """
## Frequencies: spectrum and band-pass filter

The **spectrum** tells how much energy the recording has at each frequency. A **band-pass filter** keeps only a
band of frequencies: handy to remove wind and traffic rumble below 1 kHz, for example.
"""),
("code", """
birds = Audio.from_file(sample_data.birds())
filtered = birds.bandpass(low_f=1000, high_f=5000, order=9)

fig, ax = plt.subplots(figsize=(8, 3))
for label, clip in [("original", birds), ("band-passed 1-5 kHz", filtered)]:
    power, freqs = clip.spectrum()
    ax.semilogy(freqs, power + 1e-14, label=label, lw=0.8)
ax.set_xlabel("frequency (Hz)"); ax.set_ylabel("power (V²/Hz)"); ax.set_xlim(0, 16000); ax.legend();
"""),
("md", """
## Spectrograms

A spectrogram shows the spectrum **over time**: time runs left to right, frequency bottom to top, and darker means
louder. It is how people (and CNNs) look at bird song.
"""),
("code", """
spec = Spectrogram.from_audio(birds)
print(spec)
print("first window centres (s):", spec.times[:3], " first frequencies (Hz):", spec.frequencies[:3])
spec.plot(title="birds_10s.wav, default settings");
"""),
("md", """
### The time-frequency trade-off

The spectrogram is made of short windows of audio. A **long window** separates close frequencies well but smears
fast sounds in time; a **short window** shows quick notes sharply but blurs frequency. At 32 kHz:

| window_samples | window length | frequency bins every | good for |
|---|---|---|---|
| 256 | 8 ms | 125 Hz | fast trills, clicks |
| 512 (default) | 16 ms | 62.5 Hz | most bird song |
| 2048 | 64 ms | 15.6 Hz | slow, tonal calls; low frequencies |
"""),
("code", """
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
segment = birds.trim(2, 5)
for ax, n in zip(axes, [256, 2048]):
    Spectrogram.from_audio(segment, window_samples=n).bandpass(0, 10000).plot(ax=ax, title=f"window_samples={n}")
"""),
("md", """
`overlap_fraction` (default 0.5) makes consecutive windows share samples: more overlap gives a smoother image along
time at the cost of more columns. `decibel_limits` sets which loudness range is drawn from white to black: raise the
lower limit to hide background noise.
"""),
("code", """
fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
Spectrogram.from_audio(segment, decibel_limits=(-100, -20)).bandpass(0, 10000).plot(ax=axes[0], title="(-100, -20) dB")
Spectrogram.from_audio(segment, decibel_limits=(-70, -20)).bandpass(0, 10000).plot(ax=axes[1], title="(-70, -20) dB");
"""),
("md", """
### Cropping and measuring

`bandpass` on a spectrogram keeps only some rows (it does not filter audio), `trim` keeps some columns, and
`amplitude` adds up a frequency band over time, a quick way to find when something calls.
"""),
("code", """
band = (4000, 8000)
amplitude = spec.amplitude(freq_range=band)
fig, ax = plt.subplots(figsize=(8, 2.5))
ax.plot(spec.times, amplitude)
ax.set_xlabel("time (s)"); ax.set_ylabel("summed dB"); ax.set_title(f"energy between {band[0]} and {band[1]} Hz");
"""),
("md", """
### Mel spectrograms

The mel scale spaces frequency bands like our ears do: fine at low frequencies, coarse at high ones. Many published
models use mel spectrograms.
"""),
("code", """
mel = MelSpectrogram.from_audio(birds, n_mels=64, window_samples=1024)
mel.plot(title="mel spectrogram, 64 bands");
"""),
("md", """
### Spectrograms as images

A CNN sees a spectrogram as an image: `to_image` resizes it and scales the decibel range to [0, 1].
"""),
("code", """
image = spec.to_image(shape=(224, 224), return_type="np")
print(image.shape, image.min(), image.max())
spec.to_image(shape=(128, 256))
"""),
("md", """
## When files are broken

Recorders run out of battery, SD cards fail, copies get interrupted. `opso_nb` tells you **which file** is broken and
**why**, with an `AudioLoadError`. Truncated files whose beginning is intact load with a warning.
"""),
("code", """
for broken in sorted(sample_data.corrupt_folder().glob("*.wav")):
    try:
        clip = Audio.from_file(broken)
        print(f"{broken.name}: loaded {clip.duration:.4f} s")
    except AudioLoadError as err:
        print(f"{broken.name}: {err.reason}")
"""),
("md", """
## Next

* Explore any folder of recordings interactively in the **spectrogram explorer** dashboard (`notebooks/apps/spectrogram_explorer.ipynb`).
* Notebook 2 reads Raven annotation tables and turns them into labelled clips.
"""),
]

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    print(write_notebook(root / "notebooks" / "01_audio_and_spectrograms.ipynb", cells))
