"""RIBBIT on a synthesized 60-minute recording: seconds including loading and the spectrogram.

    python benchmarks/bench_ribbit.py [--minutes 60] [--sample-rate 24000]
    python benchmarks/bench_ribbit.py --scores        # numbers, not speed: see below

The recording (cached in benchmarks/_data/) is pink-ish noise with a toad-like
trill (2.1 kHz carrier pulsed 15 times per second, 20 s long) every 5 minutes.
It is scored with the Great Plains toad parameters by :func:`opso_nb.ribbit.run_ribbit`,
which reads the file in chunks so memory stays bounded, for one and for two
species. The table gives seconds, real-time factor and peak memory, and checks
that the top-scoring clips are the planted trills. If an OpenSoundscape
environment exists (its python in $OPENSOUNDSCAPE_PYTHON), its ``ribbit`` runs
on the same file (whole-file spectrogram, as in its tutorial) and is shown
side by side.

``--scores`` compares numbers instead: opso_nb computes spectrograms (the
bundled toad recordings and synthetic pulse trains at four sample rates and
window sizes), both libraries score those identical spectrograms with five
parameter sets, and a table gives the largest relative score difference per
case, plus the manual's published toad table next to opso_nb's. OpenSoundscape
0.9 (the version the manual documents; it imports under current libraries
with the small shims in the comparison script) agrees to float32 rounding;
0.13 computes band amplitudes differently (see docs/differences/ribbit.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import DATA, OPSO_MISSING, opso_python, write_recording
from opso_nb import sample_data
from opso_nb.audio import Audio
from opso_nb.ribbit import RibbitParams, ribbit, run_ribbit
from opso_nb.spectrogram import Spectrogram

TRILL_EVERY = 300.0  # s
TRILL_LENGTH = 20.0  # s



# Scores identical spectrograms with OpenSoundscape: argv = npz of spectrograms, JSON of settings, output JSON.
# The shims let OpenSoundscape 0.9 import under current matplotlib without its optional CAM/W&B packages.
OPSO_SCORES_SCRIPT = """
import importlib.abc, importlib.machinery, json, sys, types, warnings
warnings.simplefilter("ignore")
import matplotlib, matplotlib.cm
if not hasattr(matplotlib.cm, "get_cmap"):
    matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
class _Stub(types.ModuleType):
    __path__ = []
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})
class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):  # last on the path: only for missing packages
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("pytorch_grad_cam", "wandb"):
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        return _Stub(spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.append(_Finder())
import inspect
import numpy as np
import opensoundscape
from opensoundscape.ribbit import ribbit
from opensoundscape.spectrogram import Spectrogram
arrays = np.load(sys.argv[1])
job = json.load(open(sys.argv[2]))
init = inspect.signature(Spectrogram.__init__).parameters
out = {"version": opensoundscape.__version__, "scores": {}}
for case in job["cases"]:
    S, f, t = (arrays[case + k] for k in ("__S", "__f", "__t"))
    window, overlap, rate = (int(v) for v in arrays[case + "__meta"])
    if "decibel_limits" in init:  # 0.9 API
        spec = Spectrogram(S, f, t, decibel_limits=(-100, -20), window_samples=window, overlap_samples=overlap,
                           window_type="hann", audio_sample_rate=rate, scaling="spectrum")
    else:
        spec = Spectrogram(S, f, t, window_samples=window, hop_samples=window - overlap, audio_sample_rate=rate,
                           fft_size=window)
    for i, settings in enumerate(job["settings"]):
        kwargs = dict(settings)
        if "decibel_limits" not in init:
            kwargs.setdefault("final_clip", None)
        try:
            out["scores"][f"{case}|{i}"] = ribbit(spec, **kwargs).values.tolist()
        except Exception as err:
            out["scores"][f"{case}|{i}"] = f"{type(err).__name__}: {err}"
json.dump(out, open(sys.argv[3], "w"))
"""

#: Section 11.5 of the OpenSoundscape 0.9 manual: highest clip score x 10,000 per file.
MANUAL_TOAD_TABLE = {"gpt3": 29.31, "gpt2": 16.69, "gpt1": 10.13, "negative9": 3.04, "negative8": 0.89,
                     "negative4": 0.76, "negative2": 0.65, "negative1": 0.3, "negative3": 0.3, "gpt4": 0.12,
                     "negative6": 0.06, "pops2": 0.0, "pops1": 0.0, "negative5": 0.0, "silent": 0.0,
                     "negative7": 0.0, "water": 0.0}

SCORE_SETTINGS = [
    dict(signal_band=[1900, 2400], pulse_rate_range=[8, 20], clip_duration=2.0, noise_bands=[[0, 1500], [2500, 3500]]),
    dict(signal_band=[1300, 1700], pulse_rate_range=[8, 15], clip_duration=1.0, noise_bands=[[0, 800], [3000, 4000]]),
    dict(signal_band=[1300, 1700], pulse_rate_range=[8, 15], clip_duration=1.0, noise_bands=None),
    dict(signal_band=[1310, 1690], pulse_rate_range=[5, 20], clip_duration=2.0, clip_overlap=0.5,
         final_clip="remainder", noise_bands=[[100, 900]]),
    dict(signal_band=[1300, 1700], pulse_rate_range=[10, 14], clip_duration=3.0, clip_overlap=1.0, final_clip="full",
         noise_bands=[[0, 1000], [2500, 3500], [4000, 5000]]),
]


def score_cases():
    """Spectrograms (name -> Spectrogram) the score comparison runs on."""
    rng = np.random.default_rng(1)
    cases = {}
    for rate, window, overlap in [(22050, 512, 256), (32000, 256, 128), (44100, 1024, 512), (16000, 128, 32)]:
        for seconds in (5.0, 7.7):
            t = np.arange(int(seconds * rate)) / rate
            x = 0.3 * np.sin(2 * np.pi * 1500 * t) * (((t * 12) % 1) < 0.4) + 0.03 * rng.standard_normal(len(t))
            cases[f"train_{rate}Hz_w{window}_{seconds:g}s"] = Spectrogram.from_audio(
                Audio(x.astype(np.float32), rate), window_samples=window, overlap_samples=overlap)
    for path in sorted(Path(sample_data.toads_folder()).glob("*.mp3")):
        cases[path.stem] = Spectrogram.from_audio(Audio.from_file(path))
    return cases


def compare_scores(opso: str):
    """Print how opso_nb's ribbit scores compare with OpenSoundscape's on identical spectrograms."""
    cases = score_cases()
    arrays = {}
    for name, spec in cases.items():
        arrays.update({name + "__S": spec.spectrogram, name + "__f": spec.frequencies, name + "__t": spec.times,
                       name + "__meta": np.array([spec.window_samples, spec.overlap_samples, spec.audio_sample_rate])})
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "specs.npz", **arrays)
        (Path(tmp) / "job.json").write_text(json.dumps({"cases": list(cases), "settings": SCORE_SETTINGS}))
        done = subprocess.run([opso, "-c", OPSO_SCORES_SCRIPT, f"{tmp}/specs.npz", f"{tmp}/job.json",
                               f"{tmp}/out.json"], capture_output=True, text=True)
        if done.returncode:
            print(f"OpenSoundscape failed: {done.stderr.strip()[-400:]}")
            return
        theirs = json.loads((Path(tmp) / "out.json").read_text())
    print(f"opso_nb ribbit vs OpenSoundscape {theirs['version']} ribbit on identical spectrograms\n")
    print("| case | settings | clips compared | clip tables differ | largest relative score difference |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, spec in cases.items():
        for i, settings in enumerate(SCORE_SETTINGS):
            ref = theirs["scores"][f"{name}|{i}"]
            if isinstance(ref, str):
                print(f"| {name} | {i} | 0 | OpenSoundscape: {ref[:60]} | |")
                continue
            ours = ribbit(spec, **settings).values
            ref = np.asarray(ref, dtype=float).reshape(-1, 3)
            matched, rel = 0, 0.0
            for start, end, score in ours:
                hit = np.flatnonzero((np.abs(ref[:, 0] - start) < 1e-6) & (np.abs(ref[:, 1] - end) < 1e-6))
                if len(hit):
                    matched += 1
                    other = ref[hit[0], 2]
                    rel = max(rel, abs(score - other) / abs(other) if other else abs(score))
            worst = max(worst, rel)
            differ = "yes" if matched != len(ours) or matched != len(ref) else "no"
            print(f"| {name} | {i} | {matched} | {differ} | {rel:.1e} |")
    print(f"\nlargest relative difference over all compared clips: {worst:.1e}")
    print("\nThe manual's toad table (section 11.5) and opso_nb's scores on the same recordings (x 10,000):\n")
    print("| file | manual | opso_nb |")
    print("|---|---|---|")
    for name, published in MANUAL_TOAD_TABLE.items():
        ours = ribbit(cases[name], **SCORE_SETTINGS[0]).score.max() * 10000
        print(f"| {name} | {published:.2f} | {ours:.2f} |")


def synthesize(minutes: int, sample_rate: int) -> Path:
    """Rumble and hiss with one planted 15 pulse/s trill every 5 minutes (written once, block by block)."""
    def block(t, rng):
        noise = np.cumsum(rng.standard_normal(len(t))) * 0.002  # brown-ish rumble
        noise = noise - np.convolve(noise, np.ones(501) / 501, "same") + 0.01 * rng.standard_normal(len(t))
        phase = t % TRILL_EVERY
        on = (phase >= 60) & (phase < 60 + TRILL_LENGTH)  # one trill per 5 min, starting at 1:00, 6:00, ...
        gate = ((t * 15.0) % 1.0) < 0.4
        return noise + 0.05 * np.sin(2 * np.pi * 2100 * t) * on * gate

    return write_recording(DATA / f"ribbit_{minutes}min_{sample_rate}Hz.wav", minutes * 60, sample_rate, block)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--sample-rate", type=int, default=24000)
    parser.add_argument("--chunk", type=float, default=300.0, help="seconds of audio per chunk")
    parser.add_argument("--scores", action="store_true",
                        help="compare scores with OpenSoundscape on identical spectrograms instead of timing")
    args = parser.parse_args()
    if args.scores:
        # OpenSoundscape 0.9 needs the script's shims even to import, so take $OPENSOUNDSCAPE_PYTHON as given
        opso = os.environ.get("OPENSOUNDSCAPE_PYTHON") or opso_python()
        if opso is None:
            print(OPSO_MISSING)
        else:
            compare_scores(opso)
        return
    DATA.mkdir(exist_ok=True)
    start = time.perf_counter()
    path = synthesize(args.minutes, args.sample_rate)
    print(f"recording: {path.name} ({path.stat().st_size / 1e6:.0f} MB; ready in {time.perf_counter() - start:.1f} s)")

    toad = RibbitParams()
    bird = RibbitParams(species="bird_series", signal_band=(5000, 6500), noise_bands=[(0, 4000)],
                        pulse_rate_range=(8, 11))
    rows = []
    for label, species in [("opso_nb run_ribbit, 1 species", [toad]), ("opso_nb run_ribbit, 2 species", [toad, bird])]:
        t0 = time.perf_counter()
        scores, errors = run_ribbit([path], species, chunk_duration=args.chunk, progress=False)
        seconds = time.perf_counter() - t0
        assert errors.empty, errors
        rows.append((label, len(scores), seconds))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # known output: the 2-second clips inside planted trills must be the top scorers
    s = scores["great_plains_toad"].reset_index()
    n_trills = int((args.minutes * 60 - 60 - 1e-9) // TRILL_EVERY) + 1 if args.minutes * 60 > 60 else 0
    in_trill = ((s.start_time % TRILL_EVERY) >= 60) & ((s.end_time - 1e-9) % TRILL_EVERY < 60 + TRILL_LENGTH) & (
        (s.start_time % TRILL_EVERY) < 60 + TRILL_LENGTH)
    top = s.nlargest(int(in_trill.sum()), "great_plains_toad")
    hit_rate = in_trill[top.index].mean()

    opso = opso_python()
    if opso:
        from bench_all import RIBBIT_OPSO, run  # bench_all imports this module: not at the top

        r = run(opso, RIBBIT_OPSO, {"path": str(path), "minutes": args.minutes}, pythonpath=None)
        if "error" not in r:
            rows.append(("OpenSoundscape ribbit (whole-file spectrogram)", r["n"], r["seconds"]))
        else:
            rows.append((f"OpenSoundscape: failed: {r['error'][-60:]}", 0, float("nan")))
    else:
        print(OPSO_MISSING)

    audio_seconds = args.minutes * 60
    print(f"\n{args.minutes} min at {args.sample_rate} Hz, 2 s clips, spectrogram 512/256 samples, "
          f"chunks of {args.chunk:g} s, python {sys.version.split()[0]}")
    width = max(len(r[0]) for r in rows)
    print(f"{'task':<{width}}  {'clips':>6}  {'seconds':>8}  {'x real time':>11}")
    print("-" * (width + 32))
    for task, clips, seconds in rows:
        print(f"{task:<{width}}  {clips:>6}  {seconds:>8.1f}  {audio_seconds / seconds:>11.0f}")
    print(f"peak memory of this process: {peak_mb:.0f} MB")
    print(f"planted trills: {n_trills}; top-{int(in_trill.sum())} clips inside a trill: {hit_rate:.0%}")


if __name__ == "__main__":
    main()
