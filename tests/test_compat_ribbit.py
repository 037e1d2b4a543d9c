"""OpenSoundscape 0.9 parity of opso_nb.ribbit: the documented names and signatures, and the manual's numbers.

The RIBBIT tutorial of the OpenSoundscape 0.9 manual (section 11.5) publishes each Great Plains toad
file's highest clip score (times 10,000) for its parameters; the same recordings ship with opso_nb as MP3s.
"""
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.signal

from opso_nb import sample_data
from opso_nb.audio import Audio
from opso_nb.ribbit import calculate_pulse_score, ribbit
from opso_nb.spectrogram import Spectrogram

#: name -> leading positional parameters with their documented defaults (inspect.Parameter.empty: required)
E = inspect.Parameter.empty
CLAIMED = {
    ribbit: [("spectrogram", E), ("signal_band", E), ("pulse_rate_range", E), ("clip_duration", E),
             ("clip_overlap", 0), ("final_clip", None), ("noise_bands", None), ("plot", False)],
    calculate_pulse_score: [("amplitude", E), ("amplitude_sample_rate", E), ("pulse_rate_range", E),
                            ("plot", False), ("nfft", 1024)],
}

#: section 11.5: ribbit(spec, pulse_rate_range=[8, 20], signal_band=[1900, 2400], clip_duration=2,
#: noise_bands=[[0, 1500], [2500, 3500]]) on Spectrogram.from_audio(Audio.from_file(path)); max score x 10,000
MANUAL_PARAMS = dict(pulse_rate_range=[8, 20], signal_band=[1900, 2400], clip_duration=2,
                     noise_bands=[[0, 1500], [2500, 3500]])
MANUAL_SCORES = {"gpt3": 29.31, "gpt2": 16.69, "gpt1": 10.13, "negative9": 3.04, "negative8": 0.89,
                 "negative4": 0.76, "negative2": 0.65, "negative1": 0.3, "negative3": 0.3, "gpt4": 0.12,
                 "negative6": 0.06, "pops2": 0.0, "pops1": 0.0, "negative5": 0.0, "silent": 0.0,
                 "negative7": 0.0, "water": 0.0}


@pytest.mark.parametrize("fn", list(CLAIMED), ids=lambda f: f.__name__)
def test_documented_signature(fn):
    params = list(inspect.signature(fn).parameters.values())
    claimed = CLAIMED[fn]
    assert [(p.name, p.default) for p in params[:len(claimed)]] == claimed
    # anything opso_nb adds comes after the documented parameters and has a default
    assert all(p.default is not E for p in params[len(claimed):])


@pytest.fixture(scope="module")
def toad_maxima():
    out = {}
    for path in sorted(Path(sample_data.toads_folder()).glob("*.mp3")):
        spec = Spectrogram.from_audio(Audio.from_file(path))
        out[path.stem] = ribbit(spec, **MANUAL_PARAMS).score.max() * 10000
    return pd.Series(out)


def test_manual_scores_of_the_toad_recordings(toad_maxima):
    assert sorted(toad_maxima.index) == sorted(MANUAL_SCORES)
    manual = pd.Series(MANUAL_SCORES)[toad_maxima.index]
    # the manual prints two decimals; MP3 decoders may differ in the last bits
    np.testing.assert_allclose(toad_maxima.values, manual.values, atol=0.006, rtol=0.005)


def test_clear_toad_files_rank_above_every_negative(toad_maxima):
    clear = toad_maxima[["gpt1", "gpt2", "gpt3"]]
    negatives = toad_maxima[[n for n in toad_maxima.index if not n.startswith("gpt")]]
    assert clear.min() > negatives.max()
    assert len(negatives) == 13


def test_pulse_score_is_welch_density_maximum():
    # "scores an amplitude signal by the highest value of power spectral density in the PRR range"
    rng = np.random.default_rng(0)
    rate = 187.5
    t = np.arange(375) / rate
    amp = np.sin(2 * np.pi * 13 * t) + 0.5 * rng.standard_normal(len(t))
    freqs, psd = scipy.signal.welch(amp, fs=rate, nfft=512)
    expected = psd[(freqs >= 8) & (freqs <= 20)].max()
    assert calculate_pulse_score(amp, rate, [8, 20], nfft=512) == pytest.approx(expected, rel=1e-12)


def test_output_table_plot_and_final_clip(capsys):
    import matplotlib

    matplotlib.use("Agg")
    spec = Spectrogram.from_audio(Audio.from_file(sample_data.path("toads/gpt1.mp3")))
    df = ribbit(spec, plot=True, **MANUAL_PARAMS)
    assert list(df.columns) == ["start_time", "end_time", "score"] and len(df) == 5
    assert "window: 0.0 to 2.0 sec" in capsys.readouterr().out
    with pytest.raises(ValueError, match="extend"):
        ribbit(spec, final_clip="extend", **MANUAL_PARAMS)
