"""Audio: load, cut, filter and save recordings.

All methods return new :class:`Audio` objects; nothing is modified in place
(``audio = audio.resample(22050)``).

Loading reads only what is asked for: ``Audio.from_file(path, offset=3590,
duration=5)`` seeks to 59:50 and decodes 5 s, whatever the file's length.
Files that cannot be used raise :class:`AudioLoadError`, whose message names
the file and the reason.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import struct
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

from opso_nb.aru import parse_audiomoth_metadata
from opso_nb.utils import atomic_path, generate_clip_times_df

__all__ = [
    "Audio",
    "AudioLoadError",
    "AudioOutOfBoundsError",
    "AudioTruncatedWarning",
    "AudioInfo",
    "audio_info",
    "load_envelope",
    "concat",
    "mix",
]

_RESAMPLE_QUALITY = {
    "soxr_vhq": "VHQ",
    "soxr_hq": "HQ",
    "soxr_mq": "MQ",
    "soxr_lq": "LQ",
    "soxr_qq": "QQ",
    # librosa names used by older OpenSoundscape versions, mapped to soxr presets
    "kaiser_best": "VHQ",
    "kaiser_fast": "MQ",
    "fft": "VHQ",
    "scipy": "VHQ",
}


class AudioLoadError(OSError):
    """An audio file could not be loaded. ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioOutOfBoundsError(AudioLoadError, ValueError):
    """A requested offset or start time lies outside the recording."""


class AudioTruncatedWarning(UserWarning):
    """The file is shorter than its header says (e.g. the recorder lost power); the readable part was loaded."""


AudioInfo = namedtuple(
    "AudioInfo", ["duration", "sample_rate", "channels", "frames", "format", "truncated"]
)


def _wav_declared_data_bytes(path) -> tuple[int, int] | None:
    """(declared, present) byte counts of a WAV file's data chunk, or None if not a WAV."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            little = head[:4] == b"RIFF"
            pos = 12
            while pos + 8 <= size:
                handle.seek(pos)
                chunk_id, chunk_size = struct.unpack("<4sI" if little else ">4sI", handle.read(8))
                if chunk_id == b"data":
                    return chunk_size, size - pos - 8
                pos += 8 + chunk_size + (chunk_size % 2)
    except OSError:
        return None
    return None


def audio_info(path) -> AudioInfo:
    """Duration (s), sample rate (Hz), channels and frame count of a file, without reading samples.

    Raises
    ------
    AudioLoadError
        Missing, empty, unreadable, or sample-less files.
    """
    path = Path(path)
    if not path.exists():
        raise AudioLoadError(path, "file does not exist")
    if path.is_dir():
        raise AudioLoadError(path, "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioLoadError(path, "file is empty (0 bytes)")
    try:
        info = soundfile.info(str(path))
    except Exception as err:  # libsndfile raises several types for bad headers
        raise AudioLoadError(path, f"not a readable audio file ({err})") from err
    if info.frames <= 0:
        raise AudioLoadError(path, "contains no audio samples (empty or truncated recording)")
    declared = _wav_declared_data_bytes(path)
    truncated = bool(declared and declared[0] > declared[1] and declared[0] != 0xFFFFFFFF)
    return AudioInfo(
        duration=info.frames / info.samplerate,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=info.format,
        truncated=truncated,
    )


def _resample(samples: np.ndarray, from_rate: int, to_rate: int, resample_type: str) -> np.ndarray:
    if from_rate == to_rate:
        return samples
    if resample_type == "polyphase":
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(from_rate), int(to_rate))
        return resample_poly(samples, to_rate // g, from_rate // g, axis=-1).astype(np.float32)
    import soxr

    quality = _RESAMPLE_QUALITY.get(resample_type)
    if quality is None:
        raise ValueError(
            f"resample_type must be one of {sorted(_RESAMPLE_QUALITY) + ['polyphase']}, got {resample_type!r}"
        )
    # soxr wants (frames, channels)
    out = soxr.resample(np.ascontiguousarray(samples.T), from_rate, to_rate, quality=quality)
    return np.ascontiguousarray(out.T, dtype=np.float32)


class Audio:
    """A recording (or part of one) held in memory.

    Parameters
    ----------
    samples : array-like
        Samples in [-1, 1]. 1-D for mono; 2-D ``(channels, samples)`` when
        loaded with ``mono=False``.
    sample_rate : int
        Samples per second (Hz).
    resample_type : str
        Default resampler for :meth:`resample` (soxr presets ``"soxr_hq"``,
        ``"soxr_vhq"`` ..., or ``"polyphase"``).
    metadata : dict, optional
        Header metadata; AudioMoth fields are parsed (see :mod:`opso_nb.aru`).

    Examples
    --------
    >>> import numpy as np
    >>> a = Audio(np.zeros(32000), 32000)
    >>> a.duration
    1.0
    """

    def __init__(self, samples, sample_rate, resample_type: str = "soxr_hq", metadata=None, max_duration=None):
        samples = np.asarray(samples)
        if samples.ndim not in (1, 2):
            raise ValueError(f"samples must be 1-D (mono) or 2-D (channels, samples), got shape {samples.shape}")
        if not np.issubdtype(samples.dtype, np.floating):
            # integer PCM: scale to [-1, 1]
            if np.issubdtype(samples.dtype, np.integer):
                samples = samples / float(np.iinfo(samples.dtype).max)
            else:
                raise TypeError(f"samples must be numeric, got dtype {samples.dtype}")
        self.samples = np.ascontiguousarray(samples, dtype=np.float32)
        if sample_rate is None or int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self.resample_type = resample_type
        self.metadata = dict(metadata) if metadata else {}
        if max_duration is not None and self.duration > max_duration:
            raise ValueError(f"audio is {self.duration:.2f} s, longer than max_duration={max_duration} s")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(
        cls,
        path,
        sample_rate: int | None = None,
        resample_type: str = "soxr_hq",
        dtype=np.float32,
        load_metadata: bool = True,
        offset: float = 0,
        duration: float | None = None,
        start_timestamp: dt.datetime | None = None,
        out_of_bounds_mode: str = "warn",
        mono: bool = True,
        max_duration: float | None = None,
    ) -> "Audio":
        """Load a recording, or just a segment of it.

        Parameters
        ----------
        path : str or Path
            WAV, FLAC, OGG/Vorbis, MP3 or any format libsndfile reads.
        sample_rate : int, optional
            Resample to this rate (Hz); None keeps the file's rate.
        resample_type : str
            Resampler (see :class:`Audio`).
        offset : float
            Start of the segment, seconds from the start of the file.
        duration : float, optional
            Length of the segment in seconds; None reads to the end.
        start_timestamp : datetime, optional
            Timezone-aware real-world start of the segment; needs
            ``recording_start_time`` in the file's metadata (AudioMoth).
            Replaces ``offset``.
        out_of_bounds_mode : {"warn", "raise", "ignore"}
            What to do when ``offset + duration`` runs past the end of the file
            (the available part is returned unless "raise"). An offset past the
            end always raises :class:`AudioOutOfBoundsError`.
        mono : bool
            Average channels into one (default). False keeps ``(channels, samples)``.
        max_duration : float, optional
            Refuse (ValueError) to load more than this many seconds.

        Raises
        ------
        AudioLoadError
            Missing, empty, truncated-to-nothing or non-audio file.
        AudioOutOfBoundsError
            Offset/start time outside the recording.
        """
        path = Path(path)
        info = audio_info(path)
        if info.truncated:
            warnings.warn(
                f"{path}: file is truncated (data chunk shorter than its header says); "
                f"loading the {info.duration:.3f} s that are present",
                AudioTruncatedWarning,
                stacklevel=2,
            )
        metadata = {}
        if load_metadata or start_timestamp is not None:
            try:
                with soundfile.SoundFile(str(path)) as handle:
                    metadata = parse_audiomoth_metadata(handle.copy_metadata())
            except Exception:
                metadata = {}
        if start_timestamp is not None:
            if not isinstance(start_timestamp, dt.datetime) or start_timestamp.tzinfo is None:
                raise ValueError("start_timestamp must be a timezone-aware datetime.datetime")
            recording_start = metadata.get("recording_start_time")
            if recording_start is None:
                raise AudioLoadError(
                    path, "start_timestamp given but the file has no recording_start_time metadata"
                )
            offset = (start_timestamp - recording_start).total_seconds()
            if offset < 0:
                raise AudioOutOfBoundsError(
                    path, f"start_timestamp {start_timestamp} is before the recording starts ({recording_start})"
                )
            metadata["recording_start_time"] = start_timestamp
        if offset < 0:
            raise AudioOutOfBoundsError(path, f"offset must be >= 0 s, got {offset}")
        if duration is not None and duration < 0:
            raise ValueError(f"duration must be >= 0 s, got {duration}")
        start = int(round(offset * info.sample_rate))
        if start >= info.frames and not (start == 0):
            raise AudioOutOfBoundsError(
                path, f"offset {offset} s is past the end of the recording ({info.duration:.3f} s)"
            )
        stop = info.frames if duration is None else start + int(round(duration * info.sample_rate))
        if stop > info.frames:
            message = (
                f"{path}: requested {offset} s + {duration} s runs past the end of the "
                f"recording ({info.duration:.3f} s); returning {(info.frames - start) / info.sample_rate:.3f} s"
            )
            if out_of_bounds_mode == "raise":
                raise AudioOutOfBoundsError(path, message.split(": ", 1)[1])
            if out_of_bounds_mode == "warn":
                warnings.warn(message, stacklevel=2)
            elif out_of_bounds_mode != "ignore":
                raise ValueError(f"out_of_bounds_mode must be 'warn', 'raise' or 'ignore', got {out_of_bounds_mode!r}")
            stop = info.frames
        if max_duration is not None and (stop - start) / info.sample_rate > max_duration:
            raise ValueError(
                f"{path}: {(stop - start) / info.sample_rate:.1f} s requested, more than max_duration={max_duration} s"
            )
        try:
            data, file_rate = soundfile.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
        except Exception as err:
            raise AudioLoadError(path, f"could not decode audio ({err})") from err
        if data.shape[0] == 0 and stop > start:
            raise AudioLoadError(path, "no samples could be decoded (corrupt or truncated file)")
        if mono:  # a view for mono files: no second copy of a long recording
            samples = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
        else:
            samples = data.T
        if sample_rate is not None and int(sample_rate) != file_rate:
            samples = _resample(samples, file_rate, int(sample_rate), resample_type)
            file_rate = int(sample_rate)
        if offset and "recording_start_time" in metadata and start_timestamp is None:
            metadata["recording_start_time"] = metadata["recording_start_time"] + dt.timedelta(seconds=offset)
        return cls(samples, file_rate, resample_type=resample_type, metadata=metadata)

    @classmethod
    def from_bytesio(cls, bytesio, sample_rate=None, resample_type="soxr_hq", mono=True, max_duration=None):
        """Load from an in-memory file (e.g. bytes received over HTTP)."""
        if isinstance(bytesio, (bytes, bytearray)):
            bytesio = io.BytesIO(bytesio)
        try:
            data, rate = soundfile.read(bytesio, dtype="float32", always_2d=True)
        except Exception as err:
            raise AudioLoadError("<bytes>", f"not readable audio ({err})") from err
        if data.shape[0] == 0:
            raise AudioLoadError("<bytes>", "contains no audio samples")
        samples = data.mean(axis=1) if mono else data.T
        if sample_rate is not None and int(sample_rate) != rate:
            samples = _resample(samples, rate, int(sample_rate), resample_type)
            rate = int(sample_rate)
        return cls(samples, rate, resample_type=resample_type, max_duration=max_duration)

    @classmethod
    def silence(cls, duration: float, sample_rate: int) -> "Audio":
        """``duration`` seconds of zeros at ``sample_rate`` Hz."""
        return cls(np.zeros(int(round(duration * sample_rate)), dtype=np.float32), sample_rate)

    @classmethod
    def noise(cls, duration: float, sample_rate: int, color: str = "white", dBFS: float = -10, seed=None) -> "Audio":
        """Gaussian noise with a given spectral colour and RMS level.

        Parameters
        ----------
        color : {"white", "pink", "brown", "blue", "violet"}
            Power spectrum slope: 0, -1, -2, +1, +2 (power ∝ f**slope).
        dBFS : float
            RMS level relative to a full-scale sine (see :attr:`dBFS`).
        seed : int, optional
            For reproducible noise.
        """
        slopes = {"white": 0, "pink": -1, "brown": -2, "blue": 1, "violet": 2}
        if color not in slopes:
            raise ValueError(f"color must be one of {list(slopes)}, got {color!r}")
        n = int(round(duration * sample_rate))
        rng = np.random.default_rng(seed)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1] if n > 1 else 1.0
        spectrum *= freqs ** (slopes[color] / 2)
        samples = np.fft.irfft(spectrum, n)
        rms = np.sqrt(np.mean(samples**2)) or 1.0
        target_rms = 10 ** (dBFS / 20) / np.sqrt(2)
        return cls(samples * (target_rms / rms), sample_rate)

    # ------------------------------------------------------------------ properties
    def _new(self, samples, sample_rate=None, metadata=None) -> "Audio":
        return Audio(
            samples,
            self.sample_rate if sample_rate is None else sample_rate,
            resample_type=self.resample_type,
            metadata=self.metadata if metadata is None else metadata,
        )

    @property
    def n_samples(self) -> int:
        return self.samples.shape[-1]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.sample_rate

    @property
    def rms(self) -> float:
        """Root-mean-square amplitude of the samples."""
        return float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64)))) if self.n_samples else 0.0

    @property
    def dBFS(self) -> float:
        """RMS level in dB relative to a full-scale sine wave (a full-scale sine is 0 dBFS)."""
        rms = self.rms
        return float(20 * np.log10(rms * np.sqrt(2))) if rms > 0 else -np.inf

    def __repr__(self) -> str:
        return f"<Audio(samples={self.samples.shape}, sample_rate={self.sample_rate})>"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Audio)
            and self.sample_rate == other.sample_rate
            and self.samples.shape == other.samples.shape
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None

    # ------------------------------------------------------------------ time edits
    def time_to_sample(self, time: float) -> int:
        """Index of the sample at ``time`` seconds."""
        return int(round(time * self.sample_rate))

    def trim(self, start_time: float, end_time: float) -> "Audio":
        """Segment from ``start_time`` to ``end_time`` (seconds from the start).

        Times beyond the ends are clipped to the audio.
        """
        if end_time < start_time:
            raise ValueError(f"end_time ({end_time}) must be >= start_time ({start_time})")
        a = max(0, self.time_to_sample(start_time))
        b = min(self.n_samples, self.time_to_sample(end_time))
        metadata = dict(self.metadata)
        if "recording_start_time" in metadata and start_time:
            metadata["recording_start_time"] = metadata["recording_start_time"] + dt.timedelta(seconds=start_time)
        return self._new(self.samples[..., a:b], metadata=metadata)

    def extend_to(self, duration: float) -> "Audio":
        """Pad the end with silence up to ``duration`` seconds (unchanged if already that long)."""
        target = int(round(duration * self.sample_rate))
        missing = target - self.n_samples
        if missing <= 0:
            return self._new(self.samples)
        pad = [(0, 0)] * (self.samples.ndim - 1) + [(0, missing)]
        return self._new(np.pad(self.samples, pad))

    extend = extend_to

    def loop(self, duration: float | None = None, n: int | None = None) -> "Audio":
        """Repeat the audio ``n`` times, or until it lasts ``duration`` seconds (cut to fit)."""
        if (duration is None) == (n is None):
            raise ValueError("give exactly one of duration (s) or n (repetitions)")
        if self.n_samples == 0:
            raise ValueError("cannot loop empty audio")
        if n is not None:
            return self._new(np.tile(self.samples, [1] * (self.samples.ndim - 1) + [int(n)]))
        target = int(round(duration * self.sample_rate))
        reps = int(np.ceil(target / self.n_samples))
        tiled = np.tile(self.samples, [1] * (self.samples.ndim - 1) + [reps])
        return self._new(tiled[..., :target])

    def split(self, clip_duration: float, clip_overlap: float = 0, final_clip: str | None = None, clip_step=None):
        """Cut into clips of ``clip_duration`` seconds.

        Parameters
        ----------
        clip_duration : float
            Seconds per clip.
        clip_overlap : float
            Seconds shared by consecutive clips (negative: gaps).
        final_clip : {None, "remainder", "full", "extend"}
            Handling of the leftover at the end; see
            :func:`opso_nb.utils.generate_clip_times_df`. With "extend" the
            last clip is padded with silence.

        Returns
        -------
        clips : list of Audio
        clip_df : pandas.DataFrame
            Columns ``start_time``, ``end_time`` (seconds), one row per clip.
        """
        clip_df = generate_clip_times_df(
            self.duration, clip_duration, clip_overlap, final_clip, clip_step=clip_step
        )
        clips = []
        for start, end in zip(clip_df["start_time"], clip_df["end_time"]):
            clip = self.trim(start, end)
            if end > self.duration + 1e-9:
                clip = clip.extend_to(end - start)
            clips.append(clip)
        return clips, clip_df

    def split_and_save(
        self,
        destination,
        prefix: str,
        clip_duration: float,
        clip_overlap: float = 0,
        final_clip: str | None = None,
        dry_run: bool = False,
    ) -> pd.DataFrame:
        """Split and write each clip as ``{destination}/{prefix}_{start}s_{end}s.wav``.

        Parameters
        ----------
        dry_run : bool
            Only compute the table; write nothing.

        Returns
        -------
        pandas.DataFrame
            Indexed by ``file`` (the clip paths), columns ``start_time``, ``end_time``.
        """
        clip_df = generate_clip_times_df(self.duration, clip_duration, clip_overlap, final_clip)
        destination = Path(destination)
        names = [
            str(destination / f"{prefix}_{start}s_{end}s.wav")
            for start, end in zip(clip_df["start_time"], clip_df["end_time"])
        ]
        if not dry_run:
            destination.mkdir(parents=True, exist_ok=True)
            clips, _ = self.split(clip_duration, clip_overlap, final_clip)
            for clip, name in zip(clips, names):
                clip.save(name)
        clip_df.index = pd.Index(names, name="file")
        return clip_df

    # ------------------------------------------------------------------ signal edits
    def resample(self, sample_rate: int, resample_type: str | None = None) -> "Audio":
        """Change the sample rate (Hz). Default resampler: soxr high quality."""
        rate = int(sample_rate)
        samples = _resample(self.samples, self.sample_rate, rate, resample_type or self.resample_type)
        return self._new(samples, sample_rate=rate)

    def _butter(self, order, cutoff, btype):
        from scipy.signal import butter

        nyquist = self.sample_rate / 2
        for f in np.atleast_1d(cutoff):
            if not 0 < f < nyquist:
                raise ValueError(
                    f"cutoff frequency {f} Hz must be between 0 and the Nyquist frequency ({nyquist} Hz)"
                )
        if btype == "bandpass" and cutoff[0] >= cutoff[1]:
            raise ValueError(f"low_f ({cutoff[0]} Hz) must be below high_f ({cutoff[1]} Hz)")
        return butter(order, cutoff, btype=btype, fs=self.sample_rate, output="sos")

    def bandpass(self, low_f: float, high_f: float, order: int) -> "Audio":
        """Zero-phase Butterworth band-pass between ``low_f`` and ``high_f`` (Hz, -3 dB points).

        ``order`` is the filter order (the manual's examples use 9); filtering
        forward and backward doubles the effective order and removes phase shift.
        """
        from scipy.signal import sosfiltfilt

        sos = self._butter(order, (low_f, high_f), "bandpass")
        return self._new(sosfiltfilt(sos, self.samples, axis=-1).astype(np.float32))

    def lowpass(self, cutoff_f: float, order: int) -> "Audio":
        """Zero-phase Butterworth low-pass at ``cutoff_f`` Hz."""
        from scipy.signal import sosfiltfilt

        return self._new(sosfiltfilt(self._butter(order, cutoff_f, "lowpass"), self.samples, axis=-1).astype(np.float32))

    def highpass(self, cutoff_f: float, order: int) -> "Audio":
        """Zero-phase Butterworth high-pass at ``cutoff_f`` Hz."""
        from scipy.signal import sosfiltfilt

        return self._new(sosfiltfilt(self._butter(order, cutoff_f, "highpass"), self.samples, axis=-1).astype(np.float32))

    def spectrum(self):
        """Power spectral density of the whole clip.

        Returns
        -------
        spectrum : numpy.ndarray
            Power per frequency bin (V**2/Hz, one-sided).
        frequencies : numpy.ndarray
            Bin centre frequencies (Hz).
        """
        from scipy.signal import periodogram

        frequencies, power = periodogram(self._mono_samples(), fs=self.sample_rate, scaling="density")
        return power, frequencies

    def normalize(self, peak_level: float | None = None, peak_dBFS: float | None = None) -> "Audio":
        """Scale so the largest absolute sample equals ``peak_level`` (default 1.0) or ``peak_dBFS``."""
        if peak_level is not None and peak_dBFS is not None:
            raise ValueError("give peak_level or peak_dBFS, not both")
        target = 10 ** (peak_dBFS / 20) if peak_dBFS is not None else (1.0 if peak_level is None else peak_level)
        peak = float(np.max(np.abs(self.samples))) if self.n_samples else 0.0
        if peak == 0:
            return self._new(self.samples)
        return self._new(self.samples * (target / peak))

    def apply_gain(self, dB: float, clip_range=(-1, 1)) -> "Audio":
        """Multiply by ``10**(dB/20)``; values are clipped to ``clip_range`` (None: no clipping)."""
        samples = self.samples * (10 ** (dB / 20))
        if clip_range is not None:
            samples = np.clip(samples, *clip_range)
        return self._new(samples)

    def _mono_samples(self) -> np.ndarray:
        return self.samples if self.samples.ndim == 1 else self.samples.mean(axis=0)

    # ------------------------------------------------------------------ output
    def save(self, path, subtype: str | None = None, metadata: dict | None = None) -> None:
        """Write to ``path`` (format from the suffix: .wav, .flac, .ogg ...), atomically.

        Parameters
        ----------
        subtype : str, optional
            soundfile subtype such as ``"PCM_16"`` or ``"FLOAT"``; default is the
            format's default (16-bit PCM for WAV/FLAC).
        metadata : dict, optional
            Header fields to write (``title``, ``comment``, ``artist``, ``date`` ...).
        """
        path = Path(path)
        if not path.suffix:
            raise ValueError(f"{path}: give a file suffix such as .wav or .flac")
        data = self.samples.T if self.samples.ndim == 2 else self.samples
        with atomic_path(path) as tmp:
            with soundfile.SoundFile(
                str(tmp), "w", samplerate=self.sample_rate, channels=1 if data.ndim == 1 else data.shape[1],
                subtype=subtype, format=path.suffix.lstrip(".").upper().replace("OGG", "OGG"),
            ) as handle:
                for key, value in (metadata or {}).items():
                    setattr(handle, key, str(value))
                handle.write(data)

    def show_widget(self, normalize: bool = False, autoplay: bool = False):
        """An audio player for Jupyter (IPython.display.Audio)."""
        from IPython.display import Audio as IPythonAudio

        return IPythonAudio(self._mono_samples(), rate=self.sample_rate, normalize=normalize, autoplay=autoplay)

    def _repr_html_(self):
        if self.duration > 600:  # never embed long recordings in a notebook
            return None
        try:
            return self.show_widget(normalize=True)._repr_html_()
        except Exception:
            return None


def concat(audios) -> Audio:
    """Join Audio objects end to end (all must share a sample rate)."""
    audios = list(audios)
    rates = {a.sample_rate for a in audios}
    if len(rates) != 1:
        raise ValueError(f"all Audio objects must share one sample rate, got {sorted(rates)}")
    return Audio(np.concatenate([a.samples for a in audios], axis=-1), rates.pop())


def mix(audios, gain=None, duration=None, clip_range=(-1, 1)) -> Audio:
    """Sum Audio objects sample by sample.

    Parameters
    ----------
    audios : list of Audio
        Same sample rate; shorter ones are padded with silence.
    gain : list of float, optional
        Gain in dB per input (0 = unchanged).
    duration : float, optional
        Output length in seconds (default: the longest input).
    clip_range : tuple or None
        Clip the mixture to this range.
    """
    audios = list(audios)
    rates = {a.sample_rate for a in audios}
    if len(rates) != 1:
        raise ValueError(f"all Audio objects must share one sample rate, got {sorted(rates)}")
    rate = rates.pop()
    gain = [0.0] * len(audios) if gain is None else list(gain)
    n = int(round(duration * rate)) if duration is not None else max(a.n_samples for a in audios)
    out = np.zeros(n, dtype=np.float64)
    for audio, g in zip(audios, gain):
        s = audio._mono_samples()[:n]
        out[: len(s)] += s * 10 ** (g / 20)
    if clip_range is not None:
        out = np.clip(out, *clip_range)
    return Audio(out, rate)


def load_envelope(path, n_points: int = 2000, block_seconds: float = 10.0, progress_callback=None):
    """Min/max envelope of a whole file, computed block by block (constant memory).

    Used for overviews of long recordings: a 10-hour file is read in
    ``block_seconds`` blocks and reduced to ``n_points`` (min, max) pairs;
    the samples are never all in memory at once.

    Returns
    -------
    times : numpy.ndarray
        Start time (s) of each envelope bin.
    lower, upper : numpy.ndarray
        Minimum and maximum sample value per bin.
    """
    info = audio_info(path)
    n_points = max(1, min(int(n_points), info.frames))
    edges = np.linspace(0, info.frames, n_points + 1).astype(np.int64)
    lower = np.full(n_points, np.inf, dtype=np.float32)
    upper = np.full(n_points, -np.inf, dtype=np.float32)
    block = max(1, int(block_seconds * info.sample_rate))
    position = 0
    try:
        for chunk in soundfile.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
            mono = chunk.mean(axis=1)
            idx = np.searchsorted(edges, position + np.arange(len(mono)), side="right") - 1
            idx = np.clip(idx, 0, n_points - 1)
            _reduce_into(lower, upper, idx, mono)
            position += len(mono)
            if progress_callback is not None:
                progress_callback(min(1.0, position / info.frames))
    except Exception as err:
        if position == 0:
            raise AudioLoadError(path, f"could not decode audio ({err})") from err
        warnings.warn(f"{path}: decoding stopped at {position / info.sample_rate:.1f} s ({err})", AudioTruncatedWarning)
    empty = ~np.isfinite(lower)
    lower[empty] = 0
    upper[empty] = 0
    return edges[:-1] / info.sample_rate, lower, upper


def _reduce_into(lower, upper, idx, values):
    """Per-bin min/max of ``values`` into ``lower``/``upper``; idx is sorted (contiguous runs)."""
    boundaries = np.flatnonzero(np.diff(idx)) + 1
    starts = np.concatenate([[0], boundaries])
    bins = idx[starts]
    np.minimum.at(lower, bins, np.minimum.reduceat(values, starts))
    np.maximum.at(upper, bins, np.maximum.reduceat(values, starts))
