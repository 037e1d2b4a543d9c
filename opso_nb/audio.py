"""Audio: load, cut, filter, mix and save recordings.

All methods return new :class:`Audio` objects; nothing is modified in place
(``audio = audio.resample(22050)``).

Loading reads only what is asked for: ``Audio.from_file(path, offset=3590,
duration=5)`` seeks to 59:50 and decodes 5 s, whatever the file's length.
Every file passes the checks of :mod:`opso_nb.audio_io` first: files that
cannot be used raise :class:`AudioLoadError` (a subclass naming the problem:
missing, a folder or pipe, no permission, empty, not audio, a header field
outside :data:`LIMITS`, NaN samples ...), whose message names the file and the
reason, before anything large is allocated.
"""
from __future__ import annotations

import datetime as dt
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.signal
import soundfile
import soxr

# The loading API (limits, errors, reader, audio_info) lives in opso_nb.audio_io and is re-exported here,
# where OpenSoundscape users look for it.
from opso_nb import audio_io
from opso_nb.aru import generate_opso_metadata_str, parse_audiomoth_metadata, parse_opso_metadata
from opso_nb.audio_io import *  # noqa: F403
from opso_nb.audio_io import (
    AudioFormatError,
    AudioInfo,
    AudioLoadError,
    AudioOutOfBoundsError,
    AudioReader,
    AudioTruncatedWarning,
    check_allocation,
    segment_frames,
)
from opso_nb.signal_processing import bandpass_filter, butter_bandpass, tdoa
from opso_nb.utils import atomic_path, generate_clip_times_df, load_metadata

__all__ = [
    "Audio",
    "OpsoLoadAudioInputError",
    "load_envelope",
    "load_channels_as_audio",
    "load_metadata",
    "concat",
    "mix",
    "bandpass_filter",
    "butter_bandpass",
    "clipping_detector",
    "estimate_delay",
    "parse_opso_metadata",
    "generate_opso_metadata_str",
    *audio_io.__all__,
]
OpsoLoadAudioInputError = audio_io.OpsoLoadAudioInputError

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

#: Header tags libsndfile can write (``Audio.save``).
_WRITABLE_TAGS = ("title", "copyright", "software", "artist", "comment", "date", "album", "license",
                  "tracknumber", "genre")
_METADATA_FORMATS = ("opso", "soundfile", None)
_OUT_OF_BOUNDS_MODES = ("warn", "raise", "ignore")
_IN_MEMORY = "<audio>"  # shown in errors about Audio objects that did not come from a file


def _resample(samples: np.ndarray, from_rate: int, to_rate: int, resample_type: str) -> np.ndarray:
    if from_rate == to_rate:
        return samples
    if resample_type != "polyphase" and resample_type not in _RESAMPLE_QUALITY:
        raise ValueError(
            f"resample_type must be one of {sorted(_RESAMPLE_QUALITY) + ['polyphase']}, got {resample_type!r}"
        )
    n_out = int(math.ceil(samples.shape[-1] * to_rate / from_rate))
    channels = samples.shape[0] if samples.ndim == 2 else 1
    check_allocation(n_out * channels, samples.itemsize, f"resampling to {to_rate} Hz", _IN_MEMORY)
    if resample_type == "polyphase":
        g = math.gcd(int(from_rate), int(to_rate))
        return scipy.signal.resample_poly(samples, to_rate // g, from_rate // g, axis=-1).astype(samples.dtype)
    # soxr wants (frames, channels)
    out = soxr.resample(np.ascontiguousarray(samples.T), from_rate, to_rate, quality=_RESAMPLE_QUALITY[resample_type])
    return np.ascontiguousarray(out.T, dtype=samples.dtype)


def _as_float_samples(samples, dtype) -> np.ndarray:
    """Samples as a contiguous float array; integer PCM scaled to [-1, 1) like libsndfile (int16 / 32768)."""
    samples = np.asarray(samples)
    if samples.dtype == bool or not np.issubdtype(samples.dtype, np.number) or np.iscomplexobj(samples):
        raise TypeError(f"samples must be real numbers, got dtype {samples.dtype}")
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        half = float(2 ** (info.bits - 1))
        offset = half if info.min == 0 else 0.0  # unsigned PCM (e.g. 8-bit WAV) is centred on 128
        return np.ascontiguousarray((samples - offset) / half, dtype=dtype)
    return np.ascontiguousarray(samples, dtype=dtype)


def _file_metadata(raw: dict, info: AudioInfo) -> dict:
    """OpenSoundscape-style metadata: the file's tags, parsed AudioMoth/opso fields, and the file's facts."""
    metadata = parse_audiomoth_metadata(raw)
    metadata.update(samplerate=info.sample_rate, format=info.format, frames=info.frames, subtype=info.subtype,
                    channels=info.channels)
    return metadata


class Audio:
    """A recording (or part of one) held in memory.

    Parameters
    ----------
    samples : array-like
        Samples in [-1, 1]. 1-D for mono; 2-D ``(channels, samples)`` when
        loaded with ``mono=False``. Integer PCM is scaled to [-1, 1).
    sample_rate : int
        Samples per second (Hz).
    resample_type : str
        Default resampler for :meth:`resample` (soxr presets ``"soxr_hq"``,
        ``"soxr_vhq"`` ..., or ``"polyphase"``).
    metadata : dict, optional
        Header metadata (see :meth:`from_file`); None when there is none.
    max_duration : float, optional
        Refuse (ValueError) audio longer than this many seconds.
    dtype : numpy dtype
        float32 (default: half the memory of float64 and more precision than
        any 24-bit recording) or float64.

    Attributes
    ----------
    metadata : dict or None
        For loaded files, the header tags (``artist``, ``comment``, ``title``
        ...), the file's ``format``, ``subtype`` and ``frames``, the audio's
        ``samplerate`` (Hz), ``channels`` and ``duration`` (s), and, for
        AudioMoth recordings, ``recording_start_time``, ``device_id``,
        ``gain_setting``, ``battery_state`` and ``temperature_C``.
        ``duration``, ``samplerate`` and ``recording_start_time`` are kept up
        to date by :meth:`trim`, :meth:`extend_to`, :meth:`loop` and
        :meth:`resample`; :meth:`save` writes it into the file.

    Examples
    --------
    >>> import numpy as np
    >>> a = Audio(np.zeros(32000), 32000)
    >>> a.duration
    1.0
    """

    def __init__(self, samples, sample_rate, resample_type: str = "soxr_hq", metadata=None, max_duration=None,
                 dtype=np.float32):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        samples = _as_float_samples(samples, dtype)
        if samples.ndim not in (1, 2):
            raise ValueError(f"samples must be 1-D (mono) or 2-D (channels, samples), got shape {samples.shape}")
        try:
            rate_ok = sample_rate is not None and float(sample_rate) > 0 and math.isfinite(float(sample_rate))
        except (TypeError, ValueError):
            rate_ok = False
        if not rate_ok or int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
        self.samples = samples
        self.sample_rate = int(sample_rate)
        self.resample_type = resample_type
        self.metadata = None if metadata is None else dict(metadata)
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
        offset: float | None = 0,
        duration: float | None = None,
        start_timestamp: dt.datetime | None = None,
        out_of_bounds_mode: str = "warn",
        mono: bool = True,
        max_duration: float | None = None,
        non_finite: str = "raise",
    ) -> "Audio":
        """Load a recording, or just a segment of it.

        Parameters
        ----------
        path : str, Path or bytes
            WAV, FLAC, OGG/Vorbis, MP3 or any format libsndfile reads (any file
            name the operating system accepts).
        sample_rate : int, optional
            Resample to this rate (Hz); None keeps the file's rate.
        resample_type : str
            Resampler (see :class:`Audio`).
        dtype : numpy dtype
            float32 (default) or float64.
        load_metadata : bool
            Read the header metadata into :attr:`metadata`; False gives
            ``metadata`` None.
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
        non_finite : {"raise", "zero"}
            NaN or infinite samples (possible in float WAV files) raise
            :class:`AudioNonFiniteError` naming the first one's time; "zero"
            replaces them by 0 with an :class:`AudioNonFiniteWarning`.

        Raises
        ------
        AudioLoadError
            Missing, empty, truncated-to-nothing, implausible or non-audio
            file (a subclass naming the problem), checked before any large
            allocation.
        AudioOutOfBoundsError
            Offset/start time outside the recording.
        """
        if out_of_bounds_mode not in _OUT_OF_BOUNDS_MODES:
            raise ValueError(f"out_of_bounds_mode must be one of {_OUT_OF_BOUNDS_MODES}, got {out_of_bounds_mode!r}")
        offset = 0.0 if offset is None else float(offset)
        if duration is not None and not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"duration must be a finite number >= 0 s, got {duration}")
        with AudioReader(path) as reader:
            info = reader.info
            shown = reader.path
            if info.truncated:
                warnings.warn(
                    f"{shown}: file is truncated (data chunk shorter than its header says); "
                    f"loading the {info.duration:.3f} s that are present",
                    AudioTruncatedWarning,
                    stacklevel=2,
                )
            metadata = None
            if load_metadata or start_timestamp is not None:
                metadata = _file_metadata(reader.metadata(), info)
            if start_timestamp is not None:
                offset = _offset_of_timestamp(shown, start_timestamp, metadata)
                metadata["recording_start_time"] = start_timestamp
            elif metadata is not None and offset and isinstance(metadata.get("recording_start_time"), dt.datetime):
                metadata["recording_start_time"] += dt.timedelta(seconds=offset)
            start, stop = segment_frames(shown, info, offset, duration, out_of_bounds_mode, max_duration)
            samples = reader.read(start, stop, mono=mono, dtype=dtype, non_finite=non_finite)
        if samples.shape[-1] == 0 and stop > start:
            raise AudioFormatError(shown, "no samples could be decoded (corrupt or truncated file)")
        rate = info.sample_rate
        if sample_rate is not None and int(sample_rate) != rate:
            samples = _resample(samples, rate, int(sample_rate), resample_type)
            rate = int(sample_rate)
        if metadata is not None:
            metadata.update(samplerate=rate, channels=1 if samples.ndim == 1 else samples.shape[0],
                            duration=samples.shape[-1] / rate)
        return cls(samples, rate, resample_type=resample_type, metadata=metadata if load_metadata else None,
                   dtype=dtype)

    @classmethod
    def from_bytesio(cls, bytesio, sample_rate=None, resample_type="soxr_hq", mono=True, max_duration=None,
                     dtype=np.float32, non_finite="raise"):
        """Load from an in-memory file (bytes, or a BytesIO, e.g. received over HTTP).

        The same checks and options as :meth:`from_file`; errors name the file ``<bytes>``.
        """
        if isinstance(bytesio, bytes):
            bytesio = io.BytesIO(bytesio)
        with AudioReader(bytesio) as reader:
            info = reader.info
            if max_duration is not None and info.duration > max_duration:
                raise ValueError(f"<bytes>: {info.duration:.1f} s of audio, more than max_duration={max_duration} s")
            metadata = _file_metadata(reader.metadata(), info)
            samples = reader.read(mono=mono, dtype=dtype, non_finite=non_finite)
        rate = info.sample_rate
        if sample_rate is not None and int(sample_rate) != rate:
            samples = _resample(samples, rate, int(sample_rate), resample_type)
            rate = int(sample_rate)
        metadata.update(samplerate=rate, channels=1 if samples.ndim == 1 else samples.shape[0],
                        duration=samples.shape[-1] / rate)
        return cls(samples, rate, resample_type=resample_type, metadata=metadata, dtype=dtype)

    @classmethod
    def silence(cls, duration: float, sample_rate: int) -> "Audio":
        """``duration`` seconds of zeros at ``sample_rate`` Hz."""
        n = int(round(duration * sample_rate))
        check_allocation(n, 4, f"{duration} s of silence", _IN_MEMORY)
        return cls(np.zeros(n, dtype=np.float32), sample_rate)

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
        check_allocation(n, 32, f"{duration} s of noise", _IN_MEMORY)  # float64 samples + complex spectrum
        rng = np.random.default_rng(seed)
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1] if n > 1 else 1.0
        spectrum *= freqs ** (slopes[color] / 2)
        samples = np.fft.irfft(spectrum, n)
        rms = np.sqrt(np.mean(samples**2)) or 1.0
        target_rms = 10 ** (dBFS / 20) / np.sqrt(2)
        return cls(samples * (target_rms / rms), sample_rate)

    # ------------------------------------------------------------------ copies
    def spawn(self, **kwargs) -> "Audio":
        """A new Audio like this one with some attributes replaced.

        Parameters
        ----------
        **kwargs
            Any of ``samples``, ``sample_rate``, ``resample_type``, ``metadata``.
        """
        allowed = {"samples", "sample_rate", "resample_type", "metadata"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(f"spawn() got unexpected attribute(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        fields = {"samples": self.samples, "sample_rate": self.sample_rate, "resample_type": self.resample_type,
                  "metadata": self.metadata}
        fields.update(kwargs)
        samples = np.asarray(fields["samples"])
        dtype = samples.dtype if samples.dtype in (np.float32, np.float64) else np.float32
        return Audio(dtype=dtype, **fields)

    _spawn = spawn  # OpenSoundscape's name

    def _new(self, samples, sample_rate=None, metadata=None) -> "Audio":
        """Copy with new samples (and optionally rate/metadata); metadata None keeps the current one."""
        return self.spawn(samples=samples, sample_rate=self.sample_rate if sample_rate is None else sample_rate,
                          metadata=self.metadata if metadata is None else metadata)

    def _metadata_with(self, **changes):
        if self.metadata is None:
            return None
        metadata = dict(self.metadata)
        metadata.update(changes)
        return metadata

    # ------------------------------------------------------------------ properties
    @property
    def n_samples(self) -> int:
        """Samples per channel."""
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

    def trim(self, start_time: float, end_time: float, out_of_bounds_mode: str = "ignore") -> "Audio":
        """Segment from ``start_time`` to ``end_time`` (seconds from the start).

        Parameters
        ----------
        out_of_bounds_mode : {"ignore", "warn", "raise"}
            Times beyond the ends are clipped to the audio; "warn" also warns,
            "raise" raises :class:`AudioOutOfBoundsError` instead.
        """
        if out_of_bounds_mode not in _OUT_OF_BOUNDS_MODES:
            raise ValueError(f"out_of_bounds_mode must be one of {_OUT_OF_BOUNDS_MODES}, got {out_of_bounds_mode!r}")
        if end_time < start_time:
            raise ValueError(f"end_time ({end_time}) must be >= start_time ({start_time})")
        if (start_time < 0 or end_time > self.duration + 1e-9) and out_of_bounds_mode != "ignore":
            message = f"trim({start_time}, {end_time}) reaches outside the audio (0 to {self.duration:.3f} s)"
            if out_of_bounds_mode == "raise":
                raise AudioOutOfBoundsError(_IN_MEMORY, message)
            warnings.warn(message, stacklevel=2)
        a = max(0, self.time_to_sample(start_time))
        b = min(self.n_samples, self.time_to_sample(end_time))
        changes = {"duration": max(0, b - a) / self.sample_rate}
        start = (self.metadata or {}).get("recording_start_time")
        if isinstance(start, dt.datetime) and a:
            changes["recording_start_time"] = start + dt.timedelta(seconds=a / self.sample_rate)
        return self.spawn(samples=self.samples[..., a:b], metadata=self._metadata_with(**changes))

    def extend_to(self, duration: float) -> "Audio":
        """Pad the end with silence up to ``duration`` seconds (unchanged if already that long)."""
        target = int(round(duration * self.sample_rate))
        missing = target - self.n_samples
        if missing <= 0:
            return self.spawn()
        channels = self.samples.shape[0] if self.samples.ndim == 2 else 1
        check_allocation(target * channels, self.samples.itemsize, f"extending the audio to {duration} s",
                         _IN_MEMORY)
        pad = [(0, 0)] * (self.samples.ndim - 1) + [(0, missing)]
        return self.spawn(samples=np.pad(self.samples, pad), metadata=self._metadata_with(duration=target /
                                                                                             self.sample_rate))

    extend = extend_to  # name in OpenSoundscape 0.9's tutorial

    def extend_by(self, duration: float) -> "Audio":
        """Pad the end with ``duration`` seconds of silence."""
        if not duration >= 0:
            raise ValueError(f"duration to extend by must be >= 0 s, got {duration}")
        return self.extend_to(self.duration + duration)

    def loop(self, length: float | None = None, n: int | None = None, duration: float | None = None) -> "Audio":
        """Repeat the audio ``n`` times, or until it lasts ``length`` seconds (cut to fit).

        ``duration`` is accepted as another name for ``length``.
        """
        if duration is not None:
            if length is not None:
                raise ValueError("give length or duration (the same thing), not both")
            length = duration
        if (length is None) == (n is None):
            raise ValueError("give exactly one of length (s) or n (repetitions)")
        if self.n_samples == 0:
            raise ValueError("cannot loop empty audio")
        target = self.n_samples * int(n) if n is not None else int(round(length * self.sample_rate))
        channels = self.samples.shape[0] if self.samples.ndim == 2 else 1
        check_allocation(target * channels, self.samples.itemsize, "looping the audio", _IN_MEMORY)
        reps = int(np.ceil(target / self.n_samples))
        tiled = np.tile(self.samples, [1] * (self.samples.ndim - 1) + [reps])[..., :target]
        return self.spawn(samples=tiled, metadata=self._metadata_with(duration=target / self.sample_rate))

    def split(self, clip_duration: float, clip_overlap: float = 0, final_clip: str | None = None, clip_step=None):
        """Cut into clips of ``clip_duration`` seconds.

        Parameters
        ----------
        clip_duration : float
            Seconds per clip.
        clip_overlap : float
            Seconds shared by consecutive clips (negative: gaps).
        final_clip : {None, "remainder", "full", "extend"}
            Handling of the end of the audio; see
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
        return self.spawn(samples=samples, sample_rate=rate,
                          metadata=self._metadata_with(samplerate=rate, duration=samples.shape[-1] / rate))

    def _filtered(self, sos) -> "Audio":
        return self.spawn(samples=scipy.signal.sosfiltfilt(sos, self.samples, axis=-1).astype(self.samples.dtype))

    def _butter(self, order, cutoff, btype):
        nyquist = self.sample_rate / 2
        if not 0 < cutoff < nyquist:
            raise ValueError(f"cutoff frequency {cutoff} Hz must be between 0 and the Nyquist frequency ({nyquist} Hz)")
        return scipy.signal.butter(order, cutoff, btype=btype, fs=self.sample_rate, output="sos")

    def bandpass(self, low_f: float, high_f: float, order: int) -> "Audio":
        """Zero-phase Butterworth band-pass between ``low_f`` and ``high_f`` (Hz, -3 dB points).

        ``order`` is the filter order (the manual's examples use 9); filtering
        forward and backward doubles the effective order and removes phase shift.
        """
        return self._filtered(butter_bandpass(low_f, high_f, self.sample_rate, order))

    def lowpass(self, cutoff_f: float, order: int) -> "Audio":
        """Zero-phase Butterworth low-pass at ``cutoff_f`` Hz."""
        return self._filtered(self._butter(order, cutoff_f, "lowpass"))

    def highpass(self, cutoff_f: float, order: int) -> "Audio":
        """Zero-phase Butterworth high-pass at ``cutoff_f`` Hz."""
        return self._filtered(self._butter(order, cutoff_f, "highpass"))

    def spectrum(self):
        """Power spectral density of the whole clip.

        Returns
        -------
        spectrum : numpy.ndarray
            Power per frequency bin (V**2/Hz, one-sided).
        frequencies : numpy.ndarray
            Bin centre frequencies (Hz).
        """
        frequencies, power = scipy.signal.periodogram(self._mono_samples(), fs=self.sample_rate, scaling="density")
        return power, frequencies

    def normalize(self, peak_level: float | None = None, peak_dBFS: float | None = None) -> "Audio":
        """Scale so the largest absolute sample equals ``peak_level`` (default 1.0) or ``peak_dBFS``."""
        if peak_level is not None and peak_dBFS is not None:
            raise ValueError("give peak_level or peak_dBFS, not both")
        target = 10 ** (peak_dBFS / 20) if peak_dBFS is not None else (1.0 if peak_level is None else peak_level)
        peak = float(np.max(np.abs(self.samples))) if self.n_samples else 0.0
        if peak == 0:
            return self.spawn()
        return self.spawn(samples=self.samples * (target / peak))

    def apply_gain(self, dB: float, clip_range=(-1, 1)) -> "Audio":
        """Multiply by ``10**(dB/20)``; values are clipped to ``clip_range`` (None: no clipping)."""
        samples = self.samples * (10 ** (dB / 20))
        if clip_range is not None:
            samples = np.clip(samples, *clip_range)
        return self.spawn(samples=samples)

    def _mono_samples(self) -> np.ndarray:
        return self.samples if self.samples.ndim == 1 else self.samples.mean(axis=0)

    # ------------------------------------------------------------------ output
    def save(self, path, metadata_format: str | None = "opso", soundfile_subtype: str | None = None,
             soundfile_format: str | None = None, suppress_warnings: bool = False, subtype: str | None = None) -> None:
        """Write to ``path`` (format from the suffix: .wav, .flac, .ogg ...), atomically.

        Parameters
        ----------
        path : str or Path
        metadata_format : {"opso", "soundfile", None}
            How :attr:`metadata` is written: "opso" stores all of it as JSON in
            the comment tag (plus the plain tags such as ``artist``), so
            :meth:`from_file` gives it back, datetimes included; "soundfile"
            writes only the plain tags (``title``, ``artist``, ``comment``,
            ``date`` ...); None writes none.
        soundfile_subtype : str, optional
            soundfile subtype such as ``"PCM_16"`` or ``"FLOAT"``; default is the
            format's default (16-bit PCM for WAV/FLAC).
        soundfile_format : str, optional
            soundfile format name (``"WAV"``, ``"FLAC"`` ...); default from the suffix.
        suppress_warnings : bool
            Do not warn when the format cannot hold a tag.
        subtype : str, optional
            Older spelling of ``soundfile_subtype``.
        """
        if metadata_format not in _METADATA_FORMATS:
            raise ValueError(f"metadata_format must be one of {_METADATA_FORMATS}, got {metadata_format!r}")
        path = Path(path)
        file_format = soundfile_format or path.suffix.lstrip(".").upper()
        if not file_format:
            raise ValueError(f"{path}: give a file suffix such as .wav or .flac (or soundfile_format)")
        if file_format not in soundfile.available_formats():
            raise ValueError(f"{path}: cannot write format {file_format!r}; "
                             f"available: {sorted(soundfile.available_formats())}")
        data = self.samples.T if self.samples.ndim == 2 else self.samples
        tags = self._tags(metadata_format)
        # soundfile is handed an open file, not a name: any name the operating system accepts works
        with atomic_path(path) as tmp, open(tmp, "wb") as stream:
            with soundfile.SoundFile(
                stream, "w", samplerate=self.sample_rate, channels=1 if data.ndim == 1 else data.shape[1],
                subtype=soundfile_subtype or subtype, format=file_format,
            ) as handle:
                for key, value in tags.items():
                    try:
                        setattr(handle, key, value)
                    except Exception as err:  # libsndfile refuses tags some formats cannot hold
                        if not suppress_warnings:
                            warnings.warn(f"{path}: could not write the {key!r} tag ({err})", stacklevel=2)
                handle.write(data)

    def _tags(self, metadata_format) -> dict:
        if metadata_format is None or not self.metadata:
            return {}
        tags = {key: str(self.metadata[key]) for key in _WRITABLE_TAGS if self.metadata.get(key) is not None}
        if metadata_format == "opso":
            tags["comment"] = generate_opso_metadata_str(self.metadata)
        return tags

    def show_widget(self, normalize: bool = False, autoplay: bool = False):
        """An audio player for Jupyter (IPython.display.Audio)."""
        # IPython is only needed in notebooks: imported here so scripts and workers do not need it
        from IPython.display import Audio as IPythonAudio

        return IPythonAudio(self._mono_samples(), rate=self.sample_rate, normalize=normalize, autoplay=autoplay)

    def _repr_html_(self):
        if self.duration > 600:  # never embed long recordings in a notebook
            return None
        try:
            return self.show_widget(normalize=True)._repr_html_()
        except Exception:
            return None


def _offset_of_timestamp(shown, start_timestamp, metadata) -> float:
    """Seconds from the start of the file to ``start_timestamp`` (AudioMoth files)."""
    if not isinstance(start_timestamp, dt.datetime) or start_timestamp.tzinfo is None:
        raise ValueError("start_timestamp must be a timezone-aware datetime.datetime")
    recording_start = metadata.get("recording_start_time")
    if not isinstance(recording_start, dt.datetime):
        raise AudioLoadError(shown, "start_timestamp given but the file has no recording_start_time metadata")
    offset = (start_timestamp - recording_start).total_seconds()
    if offset < 0:
        raise AudioOutOfBoundsError(
            shown, f"start_timestamp {start_timestamp} is before the recording starts ({recording_start})"
        )
    return offset


def load_channels_as_audio(path, sample_rate=None, resample_type="soxr_hq", dtype=np.float32, offset=0,
                           duration=None, metadata=True) -> list:
    """Each channel of a multi-channel file as its own mono :class:`Audio`.

    Parameters are those of :meth:`Audio.from_file`; ``metadata`` says whether
    to load it (each channel's copy has ``channels`` 1 and ``channel`` such as
    ``"1 of 2"``).

    Returns
    -------
    list of Audio
        One per channel, in file order.
    """
    audio = Audio.from_file(path, sample_rate=sample_rate, resample_type=resample_type, dtype=dtype,
                            load_metadata=metadata, offset=offset, duration=duration, mono=False)
    n = audio.samples.shape[0]
    return [
        audio.spawn(samples=audio.samples[i],
                    metadata=audio._metadata_with(channels=1, channel=f"{i + 1} of {n}"))
        for i in range(n)
    ]


def _common_rate(audios, sample_rate):
    """The audios resampled to ``sample_rate`` (default: the first one's rate), and that rate."""
    if not audios:
        raise ValueError("give at least one Audio object")
    rate = int(sample_rate) if sample_rate is not None else audios[0].sample_rate
    return [a if a.sample_rate == rate else a.resample(rate) for a in audios], rate


def concat(audio_objects, sample_rate=None) -> Audio:
    """Join Audio objects end to end.

    Parameters
    ----------
    audio_objects : list of Audio
    sample_rate : int, optional
        Rate of the result (Hz); inputs at other rates are resampled. Default:
        the first object's rate.
    """
    audios, rate = _common_rate(list(audio_objects), sample_rate)
    check_allocation(sum(a.samples.size for a in audios), 4, "concatenating audio", _IN_MEMORY)
    return Audio(np.concatenate([a.samples for a in audios], axis=-1), rate)


def mix(audio_objects, duration=None, gain=-3, offsets=None, sample_rate=None, clip_range=(-1, 1)) -> Audio:
    """Sum Audio objects sample by sample, each shifted by an offset and scaled by a gain.

    Parameters
    ----------
    audio_objects : list of Audio
        Mixed in mono; inputs at other rates are resampled to ``sample_rate``.
    duration : float, optional
        Output length in seconds: longer inputs are cut, the end padded with
        silence. Default: until the last input ends.
    gain : float or list of float
        Gain in dB applied to every input (one number) or to each (a list);
        default -3 dB. None or 0 leaves levels unchanged.
    offsets : list of float, optional
        Start time (s, >= 0) of each input in the mix; default all 0.
    sample_rate : int, optional
        Rate of the mix (Hz); default the first object's rate.
    clip_range : (low, high) or None
        Clip the mixture to this range (None: no clipping).

    Examples
    --------
    >>> import numpy as np
    >>> a, b = Audio(np.full(4, 0.5), 4), Audio(np.full(2, 0.25), 4)
    >>> mix([a, b], gain=0, offsets=[0, 0.5]).samples.tolist()
    [0.5, 0.5, 0.75, 0.75]
    """
    audios, rate = _common_rate(list(audio_objects), sample_rate)
    count = len(audios)
    gains = [0.0 if gain is None else gain] * count if np.ndim(gain) == 0 else list(gain)
    offsets = [0.0] * count if offsets is None else list(offsets)
    if len(gains) != count or len(offsets) != count:
        raise ValueError(f"give one gain and one offset per Audio object ({count}); "
                         f"got {len(gains)} gain(s) and {len(offsets)} offset(s)")
    if any(o < 0 for o in offsets):
        raise ValueError(f"offsets must be >= 0 s, got {offsets}")
    starts = [int(round(o * rate)) for o in offsets]
    if duration is not None:
        n = int(round(duration * rate))
    else:
        n = max(s + a.n_samples for s, a in zip(starts, audios))
    check_allocation(n, 8, "mixing audio", _IN_MEMORY)
    out = np.zeros(n, dtype=np.float64)
    for audio, g, s in zip(audios, gains, starts):
        if s >= n:
            continue
        part = audio._mono_samples()[: n - s]
        out[s: s + len(part)] += part * 10 ** (g / 20)
    if clip_range is not None:
        np.clip(out, *clip_range, out=out)
    return Audio(out, rate)


def clipping_detector(samples, threshold: float = 0.6) -> int:
    """Number of samples above ``threshold`` (a quick check for clipped, overloaded recordings).

    Parameters
    ----------
    samples : array-like or Audio
    threshold : float
        Count values strictly greater than this.
    """
    values = samples.samples if isinstance(samples, Audio) else np.asarray(samples)
    return int(np.count_nonzero(values > threshold))


def estimate_delay(primary_audio, reference_audio, max_delay, bandpass_range=None, bandpass_order=9,
                   cc_filter="phat", return_cc_max=False, skip_ref_bandpass=False, frequency_range=None):
    """Delay (s) of ``primary_audio`` relative to ``reference_audio`` by generalized cross-correlation.

    Positive when the sound reaches the primary recording later than the
    reference. Both are band-passed first if ``bandpass_range`` is given.

    Parameters
    ----------
    primary_audio, reference_audio : Audio
        Same sample rate.
    max_delay : float
        Largest delay magnitude (s) considered.
    bandpass_range : (low_f, high_f), optional
        Band (Hz) to filter both signals to (Butterworth, ``bandpass_order``).
    cc_filter : str
        Weighting of :func:`opso_nb.signal_processing.gcc` ("phat", "roth",
        "scot", "ht", "cc").
    return_cc_max : bool
        Also return the peak cross-correlation value.
    skip_ref_bandpass : bool
        Do not filter the reference (it was filtered already).
    frequency_range : (low_f, high_f), optional
        Newer OpenSoundscape spelling of ``bandpass_range``.

    Returns
    -------
    float or (float, float)
        The delay in seconds, and the peak value if ``return_cc_max``.
    """
    if frequency_range is not None:
        if bandpass_range is not None:
            raise ValueError("give bandpass_range or frequency_range (the same thing), not both")
        bandpass_range = frequency_range
    if primary_audio.sample_rate != reference_audio.sample_rate:
        raise ValueError(f"sample rates differ: {primary_audio.sample_rate} and {reference_audio.sample_rate} Hz")
    rate = primary_audio.sample_rate
    primary = primary_audio._mono_samples()
    reference = reference_audio._mono_samples()
    if bandpass_range is not None:
        low, high = bandpass_range
        primary = bandpass_filter(primary, low, high, rate, bandpass_order)
        if not skip_ref_bandpass:
            reference = bandpass_filter(reference, low, high, rate, bandpass_order)
    return tdoa(primary, reference, cc_filter=cc_filter, sample_rate=rate, return_max=return_cc_max,
                max_delay=max_delay)


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
    with AudioReader(path) as reader:
        info = reader.info
        n_points = max(1, min(int(n_points), info.frames))
        edges = np.linspace(0, info.frames, n_points + 1).astype(np.int64)
        lower = np.full(n_points, np.inf, dtype=np.float32)
        upper = np.full(n_points, -np.inf, dtype=np.float32)
        position = 0
        block = max(1, int(block_seconds * info.sample_rate))
        for mono in reader.blocks(block_frames=block):
            idx = np.searchsorted(edges, position + np.arange(len(mono)), side="right") - 1
            np.clip(idx, 0, n_points - 1, out=idx)
            _reduce_into(lower, upper, idx, mono)
            position += len(mono)
            if progress_callback is not None:
                progress_callback(min(1.0, position / info.frames))
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
