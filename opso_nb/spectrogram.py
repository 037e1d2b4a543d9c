"""Spectrograms: time-frequency images of audio.

:class:`Spectrogram` holds power in dB (rows = frequency bins, columns = time
windows). Window length trades time resolution against frequency resolution:
at 32 kHz a 512-sample window is 16 ms long and its bins are 62.5 Hz apart;
doubling the window halves the bin spacing and doubles the smearing in time.

Values equal ``scipy.signal.spectrogram`` (constant detrend, one-sided,
``scaling="spectrum"`` or ``"density"``) followed by ``10 * log10`` and
clipping to ``decibel_limits``, as OpenSoundscape 0.9 documents. They are
computed in float32, block by block, writing dB values straight into the
output, so a whole 60-minute recording needs about its output's memory
(:meth:`Spectrogram.from_audio_file` does not even hold the audio), and the
spectrograms of consecutive clips come from one short-time transform
(:meth:`Spectrogram.from_audio_clips`).
"""
from __future__ import annotations

import warnings

import numpy as np
import param
import pandas as pd
import scipy.fft
import scipy.signal

from opso_nb.audio import Audio
from opso_nb.audio_io import AudioReader, check_allocation, segment_frames
from opso_nb.utils import min_max_scale, rescale

__all__ = ["Spectrogram", "MelSpectrogram", "SpectrogramParams", "SpectrogramInputError", "COMPUTE",
           "stft_power", "mel_filterbank"]


class SpectrogramInputError(TypeError, ValueError):
    """Invalid arrays or settings given to a Spectrogram (a TypeError, as in OpenSoundscape, and a ValueError)."""


class SpectrogramCompute(param.Parameterized):
    """How spectrograms are computed (not what they contain: values do not depend on these)."""

    fft_workers = param.Integer(default=1, bounds=(-1, None),
                                doc="Threads per FFT (scipy.fft workers; -1 = all cores). Measured in "
                                    "benchmarks/bench_audio.py: on 2 shared cores threads do not pay off.")
    block_bytes = param.Integer(default=2**21, bounds=(2**12, None),
                                doc="Bytes of audio frames transformed per block (small enough for the CPU cache).")
    file_block_duration = param.Number(default=60.0, bounds=(1, None),
                                       doc="Seconds of audio read per block by Spectrogram.from_audio_file "
                                           "and from_audio_clips.")


#: Settings in force for every spectrogram computation.
COMPUTE = SpectrogramCompute(name="COMPUTE")


def _resolve_window(sample_rate, window_samples, window_length_sec, overlap_samples, overlap_fraction, hop_samples):
    if window_samples is not None and window_length_sec is not None:
        raise ValueError("give window_samples or window_length_sec, not both")
    if window_length_sec is not None:
        window_samples = int(round(window_length_sec * sample_rate))
        if window_samples & (window_samples - 1):
            warnings.warn(
                f"window_length_sec={window_length_sec} gives {window_samples} samples, not a power of 2: "
                "the FFT is slower", stacklevel=4,
            )
    if window_samples is None:
        window_samples = 512
    window_samples = int(window_samples)
    if window_samples < 2:
        raise ValueError(f"window_samples must be >= 2, got {window_samples}")
    given = [x is not None for x in (overlap_samples, overlap_fraction, hop_samples)]
    if sum(given) > 1:
        raise ValueError("give only one of overlap_samples, overlap_fraction, hop_samples")
    if hop_samples is not None:
        overlap_samples = window_samples - int(hop_samples)
    elif overlap_fraction is not None:
        if not 0 <= overlap_fraction < 1:
            raise ValueError(f"overlap_fraction must be in [0, 1), got {overlap_fraction}")
        overlap_samples = int(round(window_samples * overlap_fraction))
    elif overlap_samples is None:
        overlap_samples = window_samples // 2
    overlap_samples = int(overlap_samples)
    if not 0 <= overlap_samples < window_samples:
        raise ValueError(
            f"overlap_samples must be >= 0 and < window_samples ({window_samples}), got {overlap_samples}"
        )
    return window_samples, overlap_samples


class _STFT:
    """One short-time Fourier transform setting: window positions, taper, FFT size and power scaling.

    ``compute`` writes the columns of any run of windows of a signal into an
    output array, optionally through ``post`` (mel projection, dB), one block
    of windows at a time, so the values of a window never depend on which
    block or which signal segment it was computed in.
    """

    def __init__(self, sample_rate, window_samples, overlap_samples, window_type="hann", fft_size=None,
                 scaling="spectrum"):
        self.sample_rate = sample_rate
        self.window_samples = int(window_samples)
        self.hop = self.window_samples - int(overlap_samples)
        self.nfft = int(fft_size) if fft_size else self.window_samples
        if self.nfft < self.window_samples:
            raise ValueError(f"fft_size ({self.nfft}) must be >= window_samples ({self.window_samples})")
        self.window = scipy.signal.get_window(window_type, self.window_samples).astype(np.float32)
        if scaling == "spectrum":
            scale = 1.0 / float(self.window.sum(dtype=np.float64)) ** 2
        elif scaling == "density":
            scale = 1.0 / (sample_rate * float((self.window.astype(np.float64) ** 2).sum()))
        else:
            raise ValueError(f"scaling must be 'spectrum' or 'density', got {scaling!r}")
        self.scale = np.float32(scale)
        self.n_freqs = self.nfft // 2 + 1
        # one-sided spectrum: every bin but DC (and Nyquist for an even FFT) holds two mirrored halves
        self.doubled = slice(1, self.n_freqs - 1 if self.nfft % 2 == 0 else self.n_freqs)
        self.frequencies = np.fft.rfftfreq(self.nfft, 1 / sample_rate)

    def n_windows(self, n_samples: int) -> int:
        return 0 if n_samples < self.window_samples else 1 + (n_samples - self.window_samples) // self.hop

    def times(self, n_windows: int, first_sample: int = 0) -> np.ndarray:
        """Centre time (s) of each window, relative to the signal start plus ``first_sample``."""
        return (first_sample + np.arange(n_windows) * self.hop + self.window_samples / 2) / self.sample_rate

    def power_rows(self, frames: np.ndarray) -> np.ndarray:
        """Power of each row of ``frames`` (windows x samples), shape (windows, frequencies), float32."""
        tapered = frames - frames.mean(axis=1, keepdims=True, dtype=np.float32)  # constant detrend
        tapered *= self.window
        spectrum = scipy.fft.rfft(tapered, n=self.nfft, axis=1, workers=COMPUTE.fft_workers)
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        power *= self.scale
        power[:, self.doubled] *= 2
        return power

    def compute(self, samples: np.ndarray, out: np.ndarray, first_column: int = 0, n_windows: int | None = None,
                post=None) -> int:
        """Write the columns of ``samples``' windows into ``out[:, first_column:]``; returns how many.

        ``post`` maps a (windows, frequencies) power block to the (windows, rows)
        block stored (default: the power itself).
        """
        samples = np.asarray(samples, dtype=np.float32)
        total = self.n_windows(len(samples)) if n_windows is None else n_windows
        if total == 0:
            return 0
        frames = np.lib.stride_tricks.sliding_window_view(samples, self.window_samples)[::self.hop]
        block = max(1, COMPUTE.block_bytes // (4 * self.nfft))
        for start in range(0, total, block):
            rows = self.power_rows(frames[start: min(total, start + block)])
            if post is not None:
                rows = post(rows)
            out[:, first_column + start: first_column + start + len(rows)] = rows.T
        return total


def _file_block_frames(stft, sample_rate) -> int:
    """Frames of audio read per block when a file is transformed (``COMPUTE.file_block_duration``)."""
    return max(stft.window_samples, int(COMPUTE.file_block_duration * sample_rate))


def _db_rows(decibel_limits):
    """``post`` step converting power rows to dB in place, clipped to ``decibel_limits``."""
    def convert(rows):
        np.maximum(rows, np.float32(1e-30), out=rows)  # log10(0) -> -300 dB, below any limit
        np.log10(rows, out=rows)
        rows *= np.float32(10)
        if decibel_limits is not None:
            np.clip(rows, decibel_limits[0], decibel_limits[1], out=rows)
        return rows

    return convert


def stft_power(samples, sample_rate, window_samples=512, overlap_samples=256, window_type="hann",
               fft_size=None, scaling="spectrum"):
    """One-sided power spectrogram of a 1-D signal (same values as ``scipy.signal.spectrogram``).

    Each window has its mean removed (constant detrend) and is tapered by
    ``window_type`` before the FFT. Computed in float32, in blocks of windows,
    so memory stays bounded by the output for long signals.

    Returns
    -------
    power : numpy.ndarray, float32, shape (n_freqs, n_windows)
    frequencies : numpy.ndarray (Hz)
    times : numpy.ndarray
        Centre of each window (s).
    """
    stft = _STFT(sample_rate, window_samples, overlap_samples, window_type, fft_size, scaling)
    n_windows = stft.n_windows(len(samples))
    check_allocation(stft.n_freqs * n_windows, 4, "the spectrogram")
    power = np.empty((stft.n_freqs, n_windows), dtype=np.float32)
    stft.compute(samples, power)
    return power, stft.frequencies, stft.times(n_windows)


def _check_array(value, name, ndim):
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise SpectrogramInputError(f"{name} must be a numeric np.ndarray, got {type(value).__name__} "
                                    f"of dtype {array.dtype}")
    if array.ndim != ndim:
        shape = "(n_frequencies, n_times)" if ndim == 2 else "(n,)"
        raise SpectrogramInputError(f"{name} must be a {ndim}-D np.ndarray [shape={shape}], got shape {array.shape}")
    return array


def _check_decibel_limits(decibel_limits):
    if decibel_limits is None:
        return None
    try:
        low, high = (float(v) for v in decibel_limits)
    except (TypeError, ValueError):
        raise SpectrogramInputError(f"decibel_limits must be (min, max) in dB, got {decibel_limits!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise SpectrogramInputError(f"decibel_limits must be finite (min, max) with min < max, got {decibel_limits!r}")
    return (decibel_limits[0], decibel_limits[1])


class Spectrogram:
    """Power over time and frequency, in dB by default.

    Parameters
    ----------
    spectrogram : numpy.ndarray
        2-D, shape (n_frequencies, n_times).
    frequencies : numpy.ndarray
        Frequency (Hz) of each row.
    times : numpy.ndarray
        Centre time (s) of each column.
    decibel_limits : tuple
        (min, max) dB range the values were clipped to; also the range
        :meth:`to_image` and :meth:`linear_scale` map from. None for linear power.
    window_samples, overlap_samples, window_type, audio_sample_rate, scaling, dB_scale
        How the spectrogram was made (for reference and resolution arithmetic).

    Raises
    ------
    SpectrogramInputError
        (a TypeError and a ValueError) for arrays that are not numeric, have
        the wrong number of dimensions or disagreeing lengths, and for
        ``decibel_limits`` that are not (min, max) with min < max.
    """

    def __init__(self, spectrogram, frequencies, times, decibel_limits=(-100, -20), window_samples=None,
                 overlap_samples=None, window_type=None, audio_sample_rate=None, scaling=None, dB_scale=True):
        spectrogram = _check_array(spectrogram, "spectrogram", 2)
        frequencies = _check_array(frequencies, "frequencies", 1)
        times = _check_array(times, "times", 1)
        if spectrogram.shape != (len(frequencies), len(times)):
            raise SpectrogramInputError(
                f"spectrogram shape {spectrogram.shape} does not match "
                f"{len(frequencies)} frequencies x {len(times)} times"
            )
        self.spectrogram = spectrogram
        self.frequencies = frequencies
        self.times = times
        self.decibel_limits = _check_decibel_limits(decibel_limits)
        self.window_samples = window_samples
        self.overlap_samples = overlap_samples
        self.window_type = window_type
        self.audio_sample_rate = audio_sample_rate
        self.scaling = scaling
        self.dB_scale = dB_scale

    _default_plot_scale = "linear"

    def _replace(self, **changes):
        fields = dict(
            spectrogram=self.spectrogram, frequencies=self.frequencies, times=self.times,
            window_samples=self.window_samples, overlap_samples=self.overlap_samples,
            window_type=self.window_type, audio_sample_rate=self.audio_sample_rate,
            scaling=self.scaling, decibel_limits=self.decibel_limits, dB_scale=self.dB_scale,
        )
        fields.update(changes)
        return type(self)(**fields)

    # ---------------------------------------------------------------- creation
    @classmethod
    def _plan(cls, sample_rate, window_type="hann", window_samples=None, window_length_sec=None,
              overlap_samples=None, overlap_fraction=None, fft_size=None, decibel_limits=(-100, -20),
              dB_scale=True, scaling="spectrum", hop_samples=None, **extra):
        """(stft, rows post-processing step, output frequencies, constructor settings) for these parameters."""
        window_samples, overlap_samples = _resolve_window(
            sample_rate, window_samples, window_length_sec, overlap_samples, overlap_fraction, hop_samples
        )
        if dB_scale:
            decibel_limits = _check_decibel_limits(decibel_limits)
        stft = _STFT(sample_rate, window_samples, overlap_samples, window_type, fft_size, scaling)
        post, frequencies = cls._rows_step(stft, **extra)
        if dB_scale:
            db = _db_rows(decibel_limits)
            post = db if post is None else (lambda rows, project=post: db(project(rows)))
        settings = dict(window_samples=window_samples, overlap_samples=overlap_samples, window_type=window_type,
                        audio_sample_rate=sample_rate, scaling=scaling,
                        decibel_limits=decibel_limits if dB_scale else None, dB_scale=dB_scale)
        return stft, post, frequencies, settings

    @classmethod
    def _rows_step(cls, stft, **extra):
        """Projection applied to power rows before dB (none for linear-frequency spectrograms)."""
        if extra:
            raise TypeError(f"unexpected argument(s) {sorted(extra)}")
        return None, stft.frequencies

    @classmethod
    def from_audio(cls, audio, window_type="hann", window_samples=None, window_length_sec=None,
                   overlap_samples=None, overlap_fraction=None, fft_size=None, decibel_limits=(-100, -20),
                   dB_scale=True, scaling="spectrum", hop_samples=None, **kwargs):
        """Spectrogram of an :class:`~opso_nb.audio.Audio` object.

        Parameters
        ----------
        audio : Audio
            Mono audio.
        window_type : str
            Taper applied to each window (any ``scipy.signal.get_window`` name).
        window_samples : int, optional
            Samples per FFT window (default 512 when ``window_length_sec`` is not given).
        window_length_sec : float, optional
            Window length in seconds instead of samples.
        overlap_samples : int, optional
            Samples shared by consecutive windows.
        overlap_fraction : float, optional
            Overlap as a fraction of the window (default 0.5).
        hop_samples : int, optional
            Samples between window starts (newer spelling; = window - overlap).
        fft_size : int, optional
            FFT length (zero-padded), default = window_samples.
        decibel_limits : tuple
            (min, max) dB; values are clipped to this range when ``dB_scale``.
        dB_scale : bool
            Store 10*log10(power); False keeps linear power and ignores the limits.
        scaling : {"spectrum", "density"}
            Power spectrum (V**2) or power spectral density (V**2/Hz).
        """
        if audio.samples.ndim != 1:
            raise ValueError("Spectrogram.from_audio needs mono audio (load with mono=True)")
        stft, post, frequencies, settings = cls._plan(
            audio.sample_rate, window_type, window_samples, window_length_sec, overlap_samples, overlap_fraction,
            fft_size, decibel_limits, dB_scale, scaling, hop_samples, **kwargs)
        n_windows = stft.n_windows(audio.n_samples)
        if n_windows == 0:
            raise ValueError(
                f"audio has {audio.n_samples} samples, fewer than one window ({stft.window_samples} samples)"
            )
        values = cls._empty(len(frequencies), n_windows)
        stft.compute(audio.samples, values, post=post)
        return cls(values, frequencies, stft.times(n_windows), **settings)

    @staticmethod
    def _empty(n_rows, n_windows):
        check_allocation(n_rows * n_windows, 4, f"a spectrogram of {n_rows} x {n_windows} values")
        return np.empty((n_rows, n_windows), dtype=np.float32)

    @classmethod
    def from_audio_file(cls, path, offset: float = 0, duration: float | None = None, out_of_bounds_mode: str = "warn",
                        non_finite: str = "raise", **kwargs):
        """Spectrogram of a file (or a segment of it), read block by block: the audio is never all in memory.

        Gives the same values as ``from_audio(Audio.from_file(path, offset=offset,
        duration=duration), **kwargs)`` with the memory of the spectrogram only
        (a 60-minute 32 kHz recording: 0.46 GB instead of 0.92 GB).
        Multi-channel files are averaged to mono, as ``Audio.from_file`` does.

        Parameters
        ----------
        path : str or Path
            Audio file.
        offset, duration : float
            Segment to transform (s), as in :meth:`Audio.from_file`.
        out_of_bounds_mode, non_finite : str
            As in :meth:`Audio.from_file`.
        **kwargs
            Spectrogram settings of :meth:`from_audio` (and, for
            :class:`MelSpectrogram`, the mel settings).

        Returns
        -------
        Spectrogram
            ``times`` are relative to ``offset``.
        """
        with AudioReader(path) as reader:
            info = reader.info
            start, stop = segment_frames(reader.path, info, float(offset or 0), duration, out_of_bounds_mode)
            stft, post, frequencies, settings = cls._plan(info.sample_rate, **kwargs)
            n_windows = stft.n_windows(stop - start)
            if n_windows == 0:
                raise ValueError(f"{reader.path}: {stop - start} samples, fewer than one window "
                                 f"({stft.window_samples} samples)")
            blocks = reader.blocks(start, stop, mono=True, non_finite=non_finite,
                                   block_frames=_file_block_frames(stft, info.sample_rate))
            values, done = cls._transform_blocks(blocks, n_windows, stft, post, len(frequencies))
        if done < n_windows:  # the decoder stopped early (it warned)
            values = values[:, :done].copy()
        return cls(values, frequencies, stft.times(done), **settings)

    @classmethod
    def _transform_blocks(cls, blocks, n_windows: int, stft, post, n_rows: int):
        """Columns of the first ``n_windows`` windows of samples that arrive block by block (any block sizes).

        Returns ``(values, done)``; ``done < n_windows`` when the blocks ended early
        (a decoder that stopped before the length its header gave).
        """
        values = cls._empty(n_rows, n_windows)
        pending = np.zeros(0, dtype=np.float32)
        done = 0
        for samples in blocks:
            pending = np.concatenate([pending, samples])  # leftover of the last block + this block
            count = min(stft.n_windows(len(pending)), n_windows - done)
            done += stft.compute(pending, values, done, count, post)
            pending = pending[count * stft.hop:]
        return values, done

    @classmethod
    def from_audio_clips(cls, audio, clip_times, non_finite: str = "raise", **kwargs) -> list:
        """Spectrograms of many clips of one recording, from one short-time transform per run of clips.

        Gives the same values as ``[from_audio(clip, **kwargs) for clip in
        audio.split(...)[0]]`` (clips past the end padded with silence, as
        :meth:`Audio.split` does) while transforming every window once: when a
        clip's start is a whole number of hops from the start of its run
        (5 s clips at 32 kHz with the default 256-sample hop, for example),
        its spectrogram is a slice of the run's transform, and windows shared
        by overlapping clips are computed once. Other clips start a run of
        their own.

        Parameters
        ----------
        audio : Audio, or path of an audio file
            Mono audio; a file is read run by run (a few minutes at a time),
            never whole, and averaged to mono like ``Audio.from_file`` does.
        clip_times : pandas.DataFrame or list of (start, end)
            Clip bounds in seconds: ``start_time``/``end_time`` columns (or
            index levels, as in a clip table), or pairs.
        non_finite : {"raise", "zero"}
            NaN/inf samples in a file, as in :meth:`Audio.from_file`.
        **kwargs
            Settings of :meth:`from_audio`.

        Returns
        -------
        list of Spectrogram
            One per clip, in the order given; ``times`` relative to each clip's
            start. Sliced spectrograms share memory with their run.
        """
        bounds = _clip_bounds(clip_times)
        if isinstance(audio, Audio):
            if audio.samples.ndim != 1:
                raise ValueError("Spectrogram.from_audio_clips needs mono audio (load with mono=True)")
            samples = audio.samples

            def blocks(a, b, size):
                return (samples[i: min(b, i + size)] for i in range(a, b, size))

            return cls._clips(lambda a, b: samples[a:b], blocks, audio.n_samples, audio.sample_rate, bounds, kwargs)
        with AudioReader(audio) as reader:
            return cls._clips(lambda a, b: reader.read(a, b, mono=True, non_finite=non_finite),
                              lambda a, b, size: reader.blocks(a, b, mono=True, non_finite=non_finite,
                                                               block_frames=size),
                              reader.info.frames, reader.info.sample_rate, bounds, kwargs)

    @classmethod
    def _clips(cls, read, blocks, n_samples, sample_rate, bounds, kwargs) -> list:
        """from_audio_clips on samples given by ``read(first, stop)`` or ``blocks(first, stop, block size)``."""
        stft, post, frequencies, settings = cls._plan(sample_rate, **kwargs)
        block = _file_block_frames(stft, sample_rate)
        duration = n_samples / sample_rate
        spans = []  # (index, first sample, stop sample) of the clips that lie inside the audio
        results = [None] * len(bounds)
        for i, (start, end) in enumerate(bounds):
            a = max(0, int(round(start * sample_rate)))
            b = min(n_samples, int(round(end * sample_rate)))
            if end <= duration + 1e-9 and stft.n_windows(b - a) > 0:
                spans.append((i, a, b))
            else:  # a padded or too-short clip: exactly what trim (+ extend_to) + from_audio does
                clip = Audio(read(a, max(a, b)), sample_rate)
                if end > duration + 1e-9:
                    clip = clip.extend_to(end - start)
                results[i] = cls.from_audio(clip, **kwargs)
        # a run of clips is transformed into one array that its clips are slices of (memory: the clips' own),
        # its audio read block by block
        spans.sort(key=lambda span: span[1])
        run = []
        for span in spans + [None]:
            if run and (span is None or span[1] > run_end or (span[1] - run_start) % stft.hop):
                n_windows = stft.n_windows(run_end - run_start)
                values, done = cls._transform_blocks(blocks(run_start, run_end, block), n_windows, stft, post,
                                                     len(frequencies))
                if done < n_windows:  # the decoder stopped early (it warned): silence, as a padded clip has
                    silence = stft.power_rows(np.zeros((1, stft.window_samples), np.float32))
                    values[:, done:] = (silence if post is None else post(silence)).T
                for i, a, b in run:
                    first, count = (a - run_start) // stft.hop, stft.n_windows(b - a)
                    results[i] = cls(values[:, first: first + count], frequencies, stft.times(count), **settings)
                run = []
            if span is None:
                break
            if not run:
                run_start, run_end = span[1], span[2]
            run.append(span)
            run_end = max(run_end, span[2])
        return results

    # ---------------------------------------------------------------- geometry
    def __repr__(self):
        return (f"<{type(self).__name__}(spectrogram={self.spectrogram.shape}, "
                f"frequencies={self.frequencies.shape}, times={self.times.shape})>")

    @property
    def shape(self):
        return self.spectrogram.shape

    @property
    def window_length(self) -> float:
        """Length of one FFT window (s)."""
        return self.window_samples / self.audio_sample_rate

    @property
    def window_step(self) -> float:
        """Seconds between the centres of consecutive windows."""
        return (self.window_samples - self.overlap_samples) / self.audio_sample_rate

    @property
    def window_start_times(self) -> np.ndarray:
        """Start time (s) of each window (``times`` are centres)."""
        return self.times - self.window_length / 2

    @property
    def duration(self) -> float:
        """Seconds of audio the windows cover (may be a little less than the audio)."""
        if len(self.times) == 0:
            return 0.0
        return float(self.window_start_times[-1] + self.window_length)

    # ---------------------------------------------------------------- edits
    def bandpass(self, min_f: float, max_f: float, out_of_bounds_ok: bool = True):
        """Keep only rows with ``min_f <= frequency <= max_f`` (Hz). Does not filter audio.

        Raises ValueError if the band is empty, or lies outside the spectrogram's
        range and ``out_of_bounds_ok`` is False.
        """
        if min_f >= max_f:
            raise ValueError(f"min_f ({min_f} Hz) must be below max_f ({max_f} Hz)")
        if not out_of_bounds_ok and (min_f < self.frequencies[0] or max_f > self.frequencies[-1]):
            raise ValueError(
                f"band {min_f}-{max_f} Hz is outside the spectrogram's range "
                f"{self.frequencies[0]}-{self.frequencies[-1]} Hz"
            )
        keep = (self.frequencies >= min_f) & (self.frequencies <= max_f)
        if not keep.any():
            raise ValueError(f"no frequency rows between {min_f} and {max_f} Hz")
        return self._replace(spectrogram=self.spectrogram[keep], frequencies=self.frequencies[keep])

    def trim(self, start_time: float, end_time: float):
        """Keep columns whose window centre lies in [start_time, end_time) (s)."""
        keep = (self.times >= start_time) & (self.times < end_time)
        return self._replace(spectrogram=self.spectrogram[:, keep], times=self.times[keep])

    def limit_range(self, min=-100, max=-20):
        """Clip values to [min, max] (dB); like a display range in Audacity or Raven."""
        return self._replace(spectrogram=np.clip(self.spectrogram, min, max), decibel_limits=(min, max))

    def limit_db_range(self, min_db=-100, max_db=-20):
        """Alias of :meth:`limit_range` (OpenSoundscape 0.9 name)."""
        return self.limit_range(min_db, max_db)

    def linear_scale(self, feature_range=(0, 1)):
        """Rescale from ``decibel_limits`` to ``feature_range`` (clipping outside values)."""
        limits = self.decibel_limits or (float(self.spectrogram.min()), float(self.spectrogram.max()))
        return self._replace(spectrogram=rescale(self.spectrogram, limits, feature_range).astype(np.float32))

    def min_max_scale(self, feature_range=(0, 1)):
        """Rescale so the actual minimum and maximum map to ``feature_range``."""
        return self._replace(spectrogram=min_max_scale(self.spectrogram, feature_range).astype(np.float32))

    # ---------------------------------------------------------------- measures
    def _rows(self, freq_range):
        if freq_range is None:
            return slice(None)
        low, high = freq_range
        rows = (self.frequencies >= low) & (self.frequencies <= high)
        if not rows.any():
            raise ValueError(f"no frequency rows between {low} and {high} Hz")
        return rows

    def amplitude(self, freq_range=None) -> np.ndarray:
        """Sum of values over frequency for each time window; optionally only rows in ``freq_range`` (Hz)."""
        return self.spectrogram[self._rows(freq_range)].sum(axis=0)

    def net_amplitude(self, signal_band, reject_bands=None) -> np.ndarray:
        """Signal-band amplitude per Hz minus the amplitude per Hz of the reject (noise) bands.

        Parameters
        ----------
        signal_band : (low, high) in Hz
        reject_bands : list of (low, high), optional
        """
        def per_hz(band):
            return self.amplitude(band) / max(band[1] - band[0], 1e-12)

        net = per_hz(signal_band)
        if reject_bands:
            total_width = sum(high - low for low, high in reject_bands)
            noise = sum(self.amplitude(b) for b in reject_bands) / max(total_width, 1e-12)
            net = net - noise
        return net

    # ---------------------------------------------------------------- output
    def to_image(self, shape=None, channels=1, colormap=None, invert=False, return_type="pil", range=None):
        """Image of the spectrogram, low frequencies at the bottom.

        Values are mapped linearly from ``range`` (default ``decibel_limits``)
        to [0, 1]: the loudest values become black (0) and the quietest white
        (1), as in the printed spectrograms of field guides; ``invert=True``
        gives loud = white (1).

        Parameters
        ----------
        shape : (height, width), optional
            Resize to this many pixels (bilinear).
        channels : int
            1 (grey) or 3 (needed for ``colormap``).
        colormap : str, optional
            Matplotlib colormap name, e.g. "viridis" (applied to loudness, loud = high end).
        return_type : {"pil", "np", "torch"}
            PIL image (0-255), or float array/tensor [channels, height, width] in [0, 1].
        """
        limits = range or self.decibel_limits or (float(self.spectrogram.min()), float(self.spectrogram.max()))
        loudness = rescale(np.asarray(self.spectrogram[::-1], dtype=np.float32), limits, (0, 1))
        if shape is not None:
            loudness = _resize(loudness, shape)
        if colormap is not None:
            if channels != 3:
                raise ValueError("a colormap needs channels=3")
            import matplotlib  # heavy, and only colour images need it

            rgba = matplotlib.colormaps[colormap](loudness if not invert else 1 - loudness)
            array = np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32)
        else:
            grey = loudness if invert else 1 - loudness
            array = np.repeat(grey[None], channels, axis=0)
        if return_type == "np":
            return array
        if return_type == "torch":
            import torch  # heavy: imported only when a tensor is asked for

            return torch.from_numpy(np.ascontiguousarray(array))
        if return_type == "pil":
            from PIL import Image  # only PIL output needs it

            pixels = np.round(array * 255).astype(np.uint8)
            return Image.fromarray(pixels[0] if channels == 1 else np.moveaxis(pixels, 0, -1))
        raise ValueError(f"return_type must be 'pil', 'np' or 'torch', got {return_type!r}")

    def plot(self, inline=True, fname=None, show_colorbar=False, ax=None, range=None, cmap="Greys",
             title=None, freq_scale=None):
        """Plot with matplotlib (time in s on x, frequency in Hz on y).

        Parameters
        ----------
        inline : bool
            Accepted for OpenSoundscape compatibility: in a notebook the figure
            shows by itself at the end of the cell.
        fname : str, optional
            Also save the figure (png/pdf...).
        show_colorbar : bool
            Add a colour bar (dB).
        ax : matplotlib Axes, optional
            Draw into this axes; a new figure otherwise.
        range : (min, max) dB, optional
            Colour range; default ``decibel_limits``.
        cmap : str
            Matplotlib colormap (default grey: loud = dark).
        title : str, optional
        freq_scale : {"linear", "mel"}, optional
            Frequency axis; default linear Hz for :class:`Spectrogram`, evenly
            spaced bands for :class:`MelSpectrogram`.

        Returns
        -------
        matplotlib.axes.Axes
        """
        import matplotlib.pyplot as plt  # plotting only: scripts and workers never import pyplot

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3.5))
        limits = range or self.decibel_limits
        vmin, vmax = limits if limits else (None, None)
        extent_t = (self.times[0] - self.window_step / 2, self.times[-1] + self.window_step / 2) if len(self.times) else (0, 1)
        if (freq_scale or self._default_plot_scale) == "linear":
            mesh = ax.pcolormesh(self.times, self.frequencies, self.spectrogram, shading="nearest",
                                 cmap=cmap, vmin=vmin, vmax=vmax, rasterized=True)
            ax.set_ylabel("frequency (Hz)")
        else:  # mel rows: evenly spaced image keeps the mel scale
            mesh = ax.imshow(self.spectrogram, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                             extent=(*extent_t, 0, len(self.frequencies)))
            ticks = np.linspace(0, len(self.frequencies) - 1, 6).astype(int)
            ax.set_yticks(ticks + 0.5)
            ax.set_yticklabels([f"{self.frequencies[t]:.0f}" for t in ticks])
            ax.set_ylabel("frequency (Hz, mel scale)")
        ax.set_xlabel("time (s)")
        if title:
            ax.set_title(title)
        if show_colorbar:
            ax.figure.colorbar(mesh, ax=ax, label="dB" if self.dB_scale else "power")
        if fname:
            ax.figure.savefig(fname, bbox_inches="tight")
        return ax


def _clip_bounds(clip_times) -> list:
    """[(start, end), ...] in seconds from a clip table, a start/end table, or pairs."""
    if isinstance(clip_times, pd.DataFrame):
        table = clip_times
        if not {"start_time", "end_time"} <= set(table.columns):
            table = table.index.to_frame(index=False)
        if not {"start_time", "end_time"} <= set(table.columns):
            raise ValueError("clip_times needs start_time and end_time columns or index levels")
        return list(zip(table["start_time"].astype(float), table["end_time"].astype(float)))
    return [(float(start), float(end)) for start, end in clip_times]


def _resize(array2d, shape):
    """Bilinear resize of a 2-D float array to (height, width)."""
    # torch is heavy and only needed when an image is resized: imported on first use
    import torch

    t = torch.from_numpy(np.ascontiguousarray(array2d, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False,
                                          antialias=True)
    return out[0, 0].numpy()


def mel_filterbank(sample_rate, n_fft, n_mels=64, fmin=0.0, fmax=None, norm="slaney", htk=False):
    """Triangular mel filters (librosa's), shape (n_mels, n_fft//2 + 1), and their centre frequencies (Hz).

    ``norm="slaney"`` scales each filter to unit area so wide high filters do
    not dominate; ``norm=None`` leaves peak height 1 (any norm
    ``librosa.filters.mel`` accepts works). ``htk`` selects the HTK mel formula
    instead of Slaney's.
    """
    # librosa takes seconds to import and only mel spectrograms need it
    import librosa

    fmax = sample_rate / 2 if fmax is None else fmax
    weights = librosa.filters.mel(sr=sample_rate, n_fft=int(n_fft), n_mels=int(n_mels), fmin=fmin, fmax=fmax,
                                  htk=htk, norm=norm, dtype=np.float32)
    centres = librosa.mel_frequencies(n_mels=int(n_mels) + 2, fmin=fmin, fmax=fmax, htk=htk)[1:-1]
    return weights, centres


class MelSpectrogram(Spectrogram):
    """Spectrogram with mel-spaced frequency rows (closer to how pitch is perceived).

    ``frequencies`` holds the centre frequency (Hz) of each mel band. As in
    OpenSoundscape, the power spectrogram is scipy's and only the filter bank
    comes from librosa (``librosa.filters.mel``).
    """

    _default_plot_scale = "mel"

    @classmethod
    def _rows_step(cls, stft, n_mels=64, norm="slaney", htk=False, fmin=0.0, fmax=None, f_min=None, f_max=None,
                   mel_scale=None):
        fmin = fmin if f_min is None else f_min
        fmax = fmax if f_max is None else f_max
        if mel_scale is not None:
            if mel_scale not in ("htk", "slaney"):
                raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
            htk = mel_scale == "htk"
        weights, centres = mel_filterbank(stft.sample_rate, stft.nfft, n_mels, fmin, fmax, norm, htk)
        weights_t = np.ascontiguousarray(weights.T)
        return (lambda rows: rows @ weights_t), centres

    @classmethod
    def from_audio(cls, audio, window_type="hann", window_samples=None, window_length_sec=None,
                   overlap_samples=None, overlap_fraction=None, fft_size=None, decibel_limits=(-100, -20),
                   dB_scale=True, scaling="spectrum", n_mels=64, norm="slaney", htk=False, hop_samples=None,
                   fmin=0.0, fmax=None, **kwargs):
        """Mel spectrogram of an Audio object.

        Same parameters as :meth:`Spectrogram.from_audio`, plus ``n_mels``
        (number of mel bands; more than about window_samples/10 gives empty
        bands), ``norm`` ("slaney" or None), ``htk`` (HTK mel formula instead
        of Slaney's) and ``fmin``/``fmax`` (Hz; also spelled ``f_min``/``f_max``,
        and ``mel_scale="htk"``/``"slaney"`` for ``htk``, as in newer
        OpenSoundscape).
        """
        return super().from_audio(audio, window_type, window_samples, window_length_sec, overlap_samples,
                                  overlap_fraction, fft_size, decibel_limits, dB_scale, scaling, hop_samples,
                                  n_mels=n_mels, norm=norm, htk=htk, fmin=fmin, fmax=fmax, **kwargs)


class SpectrogramParams(param.Parameterized):
    """Tunable spectrogram settings; ``pn.Param(SpectrogramParams())`` renders them as widgets.

    ``make(audio)`` builds the spectrogram these settings describe.
    """

    scale = param.Selector(default="linear", objects=["linear", "mel"], doc="Frequency axis: linear Hz or mel bands")
    window_samples = param.Selector(default=512, objects=[128, 256, 512, 1024, 2048, 4096],
                                    doc="Samples per FFT window: longer = finer frequency, coarser time")
    overlap_fraction = param.Number(default=0.5, bounds=(0, 0.95), step=0.05,
                                    doc="Fraction of each window shared with the next")
    window_type = param.Selector(default="hann", objects=["hann", "hamming", "blackman", "boxcar"])
    decibel_limits = param.Range(default=(-100, -20), bounds=(-160, 20), doc="dB range shown (and clipped to)")
    frequency_range = param.Range(default=(0, 24000), bounds=(0, 96000), doc="Frequency band shown (Hz)")
    n_mels = param.Integer(default=64, bounds=(8, 256), doc="Mel bands (mel scale only)")

    def make(self, audio) -> Spectrogram:
        """Spectrogram (or MelSpectrogram) of ``audio`` with these settings, cropped to ``frequency_range``."""
        common = dict(window_type=self.window_type, window_samples=self.window_samples,
                      overlap_fraction=self.overlap_fraction, decibel_limits=tuple(self.decibel_limits))
        nyquist = audio.sample_rate / 2
        low, high = self.frequency_range
        high = min(high, nyquist)
        if self.scale == "mel":
            return MelSpectrogram.from_audio(audio, n_mels=self.n_mels, fmin=min(low, high - 1), fmax=high, **common)
        spec = Spectrogram.from_audio(audio, **common)
        return spec.bandpass(min(low, high - 1), high)
