"""Opening audio files safely: header sanity limits, clear errors, block-wise reads.

Every audio file opso_nb reads goes through :class:`AudioReader`. Before a
single sample is decoded or an array is allocated it

1. checks the path: a missing file, a folder, a named pipe or a device, a file
   that cannot be read for lack of permission and an empty file each get their
   own :class:`AudioLoadError` subclass and a message that says so;
2. reads the header fields (sample rate, channels, bytes per sample, frames,
   duration) and refuses values outside :data:`LIMITS`, naming the field: a
   16 KB WAV whose header claims 2,147,483,647 Hz is refused at once instead of
   making a 1 s clip padded to full length allocate 8 GiB;
3. estimates the memory each read needs and refuses reads larger than
   ``LIMITS.max_memory_bytes`` (:class:`AudioTooLargeError`).

Samples are decoded in blocks in the decoder's native type (16-bit PCM is
read as ``int16`` and scaled; everything else as ``float32``), written
straight into one preallocated output, and checked for NaN or infinite values
(:class:`AudioNonFiniteError`, or repaired to 0 on request).

This module imports nothing from opso_nb, so :mod:`opso_nb.audio` and
:mod:`opso_nb.utils` can both use it without an import cycle. Public names are
re-exported by :mod:`opso_nb.audio`.
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
from collections import namedtuple

import numpy as np
import param
import soundfile

__all__ = [
    "LIMITS",
    "AudioLimits",
    "AudioReader",
    "AudioInfo",
    "audio_info",
    "check_allocation",
    "segment_frames",
    "AudioLoadError",
    "AudioFileNotFoundError",
    "AudioIsADirectoryError",
    "AudioNotAFileError",
    "AudioPermissionError",
    "AudioEmptyError",
    "AudioFormatError",
    "AudioHeaderError",
    "AudioTooLargeError",
    "AudioNonFiniteError",
    "AudioOutOfBoundsError",
    "AudioTruncatedWarning",
    "AudioNonFiniteWarning",
]


# --------------------------------------------------------------------------- errors
def display_path(path) -> str:
    """``path`` as text for messages and tables; a non-UTF-8 name keeps its surrogate escapes (lossless)."""
    if isinstance(path, (bytes, bytearray)):
        return os.fsdecode(bytes(path))
    return os.fspath(path) if isinstance(path, os.PathLike) else str(path)


class AudioLoadError(OSError):
    """An audio file could not be loaded. ``path`` and ``reason`` say which and why.

    The base of every loading error in opso_nb; batch operations catch it,
    record the file and the reason in their failures table, and go on.
    Subclasses also derive from the matching built-in exception
    (``FileNotFoundError``, ``PermissionError``, ``ValueError`` ...), so code
    written for those keeps working.
    """

    def __init__(self, path, reason: str, **details):
        self.path = display_path(path)
        self.reason = reason
        for key, value in details.items():
            setattr(self, key, value)
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader workers and Dask
        return (type(self), (self.path, self.reason), dict(self.__dict__))

    def __str__(self):
        return f"{self.path}: {self.reason}"


#: OpenSoundscape's name for the same error.
OpsoLoadAudioInputError = AudioLoadError


class AudioFileNotFoundError(AudioLoadError, FileNotFoundError):
    """The path does not exist."""


class AudioIsADirectoryError(AudioLoadError, IsADirectoryError):
    """The path is a folder."""


class AudioNotAFileError(AudioLoadError):
    """The path is a named pipe (FIFO), a device or a socket: opso_nb reads regular files only."""


class AudioPermissionError(AudioLoadError, PermissionError):
    """The file (or its folder) may not be read by this user."""


class AudioEmptyError(AudioLoadError, EOFError):
    """The file has 0 bytes, or a valid header and no samples."""


class AudioFormatError(AudioLoadError):
    """Not an audio file, an unsupported format, or samples that cannot be decoded."""


class AudioHeaderError(AudioLoadError, ValueError):
    """A header field is impossible or outside :data:`LIMITS`. ``field`` and ``value`` name it."""


class AudioTooLargeError(AudioLoadError, MemoryError):
    """An array would need more memory than ``LIMITS.max_memory_bytes``. ``n_bytes`` says how much."""


class AudioNonFiniteError(AudioLoadError, ValueError):
    """The file contains NaN or infinite samples. ``time`` is the first bad sample's time (s from the file start)."""


class AudioOutOfBoundsError(AudioLoadError, ValueError):
    """A requested offset or start time lies outside the recording."""


class AudioTruncatedWarning(UserWarning):
    """The file is shorter than its header says (e.g. the recorder lost power); the readable part was loaded."""


class AudioNonFiniteWarning(UserWarning):
    """NaN or infinite samples were replaced by 0 (``non_finite="zero"``)."""


# --------------------------------------------------------------------------- limits
class AudioLimits(param.Parameterized):
    """Sanity limits checked against every header before anything is read or allocated.

    Change them on the module-level instance :data:`LIMITS`, for example for a
    2 MHz ultrasound recorder ``opso_nb.audio.LIMITS.max_sample_rate = 2_000_000``,
    or for one block of code only::

        with opso_nb.audio.LIMITS.param.update(max_memory_bytes=16 * 2**30):
            audio = Audio.from_file(twelve_hour_recording)
    """

    min_sample_rate = param.Integer(default=1, bounds=(1, None), doc="Lowest plausible sample rate (Hz).")
    max_sample_rate = param.Integer(
        default=1_000_000, bounds=(1, None),
        doc="Highest plausible sample rate (Hz); ultrasound recorders reach 384-768 kHz.")
    max_channels = param.Integer(default=64, bounds=(1, None), doc="Most channels in one file.")
    max_bytes_per_sample = param.Integer(default=8, bounds=(1, None),
                                         doc="Widest sample (bytes); 8 = 64-bit float.")
    max_duration = param.Number(default=7 * 24 * 3600.0, bounds=(0, None),
                                doc="Longest plausible recording (s) a header may announce; default 7 days.")
    max_memory_bytes = param.Integer(
        default=4 * 2**30, bounds=(1, None),
        doc="Largest array (bytes) one load, padding, loop, mix or resample may build; default 4 GiB "
            "(9.3 h of mono 32 kHz float32 audio).")


#: The limits in force (an :class:`AudioLimits`); adjust its attributes to change them.
LIMITS = AudioLimits(name="LIMITS")


def _format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_allocation(n_values, itemsize: int, what: str, path="<audio>") -> int:
    """Refuse an array of ``n_values`` items of ``itemsize`` bytes larger than ``LIMITS.max_memory_bytes``.

    Called before every array opso_nb builds from a file or for padding,
    looping, mixing and resampling, so a lying header or a typo in a duration
    gives a clear error instead of an out-of-memory kill.

    Returns
    -------
    int
        The estimated size in bytes.

    Raises
    ------
    AudioTooLargeError
        Naming ``what`` was being built, the size and the limit.
    """
    n_bytes = int(max(0, n_values)) * int(itemsize)
    if n_bytes > LIMITS.max_memory_bytes:
        raise AudioTooLargeError(
            path,
            f"{what} would need {_format_bytes(n_bytes)}, more than the limit of "
            f"{_format_bytes(LIMITS.max_memory_bytes)} (opso_nb.audio.LIMITS.max_memory_bytes); "
            "load a shorter segment with offset/duration, or raise the limit",
            n_bytes=n_bytes,
        )
    return n_bytes


# --------------------------------------------------------------------------- header
AudioInfo = namedtuple(
    "AudioInfo", ["duration", "sample_rate", "channels", "frames", "format", "truncated", "subtype"],
    defaults=[None],
)
AudioInfo.__doc__ = """Header facts of an audio file: ``duration`` (s), ``sample_rate`` (Hz), ``channels``,
``frames`` (samples per channel), ``format`` and ``subtype`` (libsndfile names, e.g. ``"WAV"``, ``"PCM_16"``),
``truncated`` (the data chunk is shorter than the header announces)."""

#: Bytes per sample of the PCM/float subtypes; compressed subtypes decode to float.
_SUBTYPE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
#: Subtypes whose samples cannot be NaN or infinite (integers): the finite check is skipped for them.
_INTEGER_SUBTYPES = {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ULAW", "ALAW"}
_WAV_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"BW64")
_MAX_WAV_CHUNKS = 4096  # a real WAV has a handful; stop walking a file of tiny junk chunks
_PCM_TAGS = (0x0001, 0x0003)  # integer PCM, IEEE float

# Signatures of formats we can name in an error message, most specific first.
_SIGNATURES = [
    (b"RIFF", "a RIFF file"), (b"RF64", "an RF64 file"), (b"fLaC", "a FLAC file"), (b"OggS", "an Ogg file"),
    (b"ID3", "an MP3 file"), (b"FORM", "an AIFF file"), (b".snd", "an AU file"), (b"caff", "a CAF file"),
    (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"), (b"GIF8", "a GIF image"),
]


def _describe_content(head: bytes) -> str:
    """Short description of what the first bytes of a file look like."""
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    sample = head[:512]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text and sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * len(text):
        first_line = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"text (it starts with {first_line!r})"
    return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def _walk_wav_header(read_at, size: int) -> dict | None:
    """Fields of a WAV (RIFF/RIFX/RF64) header read through ``read_at(offset, n) -> bytes``, or None if not a WAV.

    Returns a dict with ``fmt`` (format tag, channels, sample_rate, block_align,
    bits_per_sample; None if no fmt chunk) and ``data`` ((declared, present)
    byte counts of the data chunk, declared None when unknown; None if absent).
    Reads at most a few bytes per chunk, whatever sizes the chunks claim.
    """
    head = read_at(0, 12)
    if len(head) < 12 or head[:4] not in _WAV_MAGIC or head[8:12] != b"WAVE":
        return None
    endian = ">" if head[:4] == b"RIFX" else "<"
    fmt = None
    data = None
    ds64_data_size = None
    pos = 12
    for _ in range(_MAX_WAV_CHUNKS):
        if pos + 8 > size:
            break
        chunk = read_at(pos, 8)
        if len(chunk) < 8:
            break
        chunk_id, chunk_size = struct.unpack(endian + "4sI", chunk)
        if chunk_id == b"ds64":
            body = read_at(pos + 8, 16)
            if len(body) == 16:
                ds64_data_size = struct.unpack("<QQ", body)[1]
        elif chunk_id == b"fmt " and fmt is None:
            body = read_at(pos + 8, min(chunk_size, 26))
            if len(body) >= 16:
                tag, channels, rate, _, block_align, bits = struct.unpack(endian + "HHIIHH", body[:16])
                if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag is in the GUID
                    tag = struct.unpack(endian + "H", body[24:26])[0]
                fmt = {"tag": tag, "channels": channels, "sample_rate": rate, "block_align": block_align,
                       "bits_per_sample": bits}
        elif chunk_id == b"data" and data is None:
            declared = chunk_size
            if chunk_size == 0xFFFFFFFF:  # RF64 size in ds64, or a streaming writer that never knew the size
                declared = ds64_data_size
            data = (declared, max(0, size - pos - 8))
            if fmt is not None:
                break
        pos += 8 + chunk_size + (chunk_size & 1)
    return {"fmt": fmt, "data": data}


def _check_wav_fields(path, fmt: dict) -> None:
    """Refuse impossible or out-of-limit values in a WAV fmt chunk, naming the field."""
    channels, rate = fmt["channels"], fmt["sample_rate"]
    if channels == 0:
        raise AudioHeaderError(path, "header field 'channels' is 0", field="channels", value=0)
    _check_value(path, "channels", channels, 1, LIMITS.max_channels, "max_channels")
    _check_value(path, "sample rate", rate, LIMITS.min_sample_rate, LIMITS.max_sample_rate, "max_sample_rate", "Hz")
    if fmt["tag"] in _PCM_TAGS:
        bits = fmt["bits_per_sample"]
        if bits == 0:
            raise AudioHeaderError(path, "header field 'bits per sample' is 0", field="bits per sample", value=0)
        _check_value(path, "bytes per sample", math.ceil(bits / 8), 1, LIMITS.max_bytes_per_sample,
                     "max_bytes_per_sample")
        if fmt["block_align"] == 0:
            raise AudioHeaderError(path, "header field 'block align' is 0", field="block align", value=0)


def _check_value(path, field, value, low, high, limit_name, unit=""):
    if not low <= value <= high:
        unit = f" {unit}" if unit else ""
        raise AudioHeaderError(
            path,
            f"header field '{field}' is {value:,}{unit}, outside the plausible range {low:,}-{high:,}{unit} "
            f"(opso_nb.audio.LIMITS.{limit_name}); the header is corrupt or the file is not what it claims",
            field=field, value=value,
        )


def _check_info_limits(path, handle: soundfile.SoundFile) -> None:
    """Limits on what libsndfile reports, for every format (not only WAV)."""
    _check_value(path, "channels", handle.channels, 1, LIMITS.max_channels, "max_channels")
    _check_value(path, "sample rate", handle.samplerate, LIMITS.min_sample_rate, LIMITS.max_sample_rate,
                 "max_sample_rate", "Hz")
    width = _SUBTYPE_BYTES.get(handle.subtype)
    if width is not None:
        _check_value(path, "bytes per sample", width, 1, LIMITS.max_bytes_per_sample, "max_bytes_per_sample")
    duration = handle.frames / handle.samplerate
    if duration > LIMITS.max_duration:
        raise AudioHeaderError(
            path,
            f"header announces {handle.frames:,} frames ({duration / 3600:.1f} h at {handle.samplerate} Hz), "
            f"longer than the plausible maximum of {LIMITS.max_duration / 3600:.1f} h "
            "(opso_nb.audio.LIMITS.max_duration)",
            field="frames", value=handle.frames,
        )


# --------------------------------------------------------------------------- reader
class AudioReader:
    """An audio file opened after every sanity check, for header facts, metadata and block reads.

    Parameters
    ----------
    source : str, Path, bytes, or io.BytesIO / bytearray / memoryview
        A file name (str, Path, or bytes for a name that is not valid UTF-8),
        or audio data held in memory (shown as ``<bytes>`` in messages).

    Raises
    ------
    AudioLoadError
        One of its subclasses, naming the file and the problem, before any
        sample is decoded.

    Examples
    --------
    >>> with AudioReader(path) as reader:  # doctest: +SKIP
    ...     print(reader.info.duration)
    ...     first_second = reader.read(0, reader.info.sample_rate)
    """

    #: Frames decoded per block by :meth:`read` and :meth:`blocks`.
    block_frames = 2**18

    def __init__(self, source):
        self._fd = None
        self._handle = None
        if isinstance(source, (bytearray, memoryview, io.BytesIO)):
            self.path = "<bytes>"
            data = source.getvalue() if isinstance(source, io.BytesIO) else bytes(source)
            if not data:
                raise AudioEmptyError(self.path, "no data (0 bytes)")
            self._size = len(data)
            self._read_at = lambda offset, n: data[offset: offset + n]
            self._open_handle = lambda: soundfile.SoundFile(io.BytesIO(data))
        else:
            self.path = display_path(source)
            self._fd = _open_regular_file(source, self.path)
            self._size = os.fstat(self._fd).st_size
            fd = self._fd
            self._read_at = lambda offset, n: os.pread(fd, n, offset)
            # a file descriptor, not a name: works for any file name and cannot race with a rename
            self._open_handle = lambda: soundfile.SoundFile(fd, closefd=False)
        try:
            self.info = self._inspect()
        except BaseException:
            self.close()
            raise

    # context manager -----------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Release the decoder and the file descriptor."""
        if self._handle is not None:
            try:
                self._handle.close()
            except Exception:  # closing a decoder that failed mid-stream must not hide the real error
                pass
            self._handle = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # header ----------------------------------------------------------------
    def _inspect(self) -> AudioInfo:
        wav = _walk_wav_header(self._read_at, self._size)
        if wav is not None and wav["fmt"] is not None:
            _check_wav_fields(self.path, wav["fmt"])
        try:
            self._handle = self._open_handle()
        except Exception as err:  # libsndfile raises several types for bad headers
            raise self._open_error(err) from None
        handle = self._handle
        _check_info_limits(self.path, handle)
        if handle.frames <= 0:
            raise AudioEmptyError(self.path, "contains no audio samples (empty or truncated recording)")
        truncated = False
        if wav is not None and wav["data"] is not None:
            declared, present = wav["data"]
            truncated = declared is not None and declared > present
        return AudioInfo(
            duration=handle.frames / handle.samplerate,
            sample_rate=int(handle.samplerate),
            channels=int(handle.channels),
            frames=int(handle.frames),
            format=handle.format,
            truncated=truncated,
            subtype=handle.subtype,
        )

    def _open_error(self, err) -> AudioLoadError:
        head = self._read_at(0, 512)
        looks_like = _describe_content(head)
        detail = str(err).split(": ", 1)[-1].strip() or type(err).__name__
        if any(head.startswith(magic) for magic, _ in _SIGNATURES[:8]) or _looks_like_mpeg(head):
            return AudioFormatError(self.path, f"not a readable audio file: {looks_like} with a corrupt or "
                                               f"unsupported header (decoder says: {detail})")
        return AudioFormatError(self.path, f"not a readable audio file: it is not an audio file at all; "
                                           f"its content is {looks_like}")

    def metadata(self) -> dict:
        """Raw header tags (title, artist, comment, date ...) as strings; ``{}`` if there are none."""
        try:
            return dict(self._handle.copy_metadata())
        except Exception:  # tags are optional: a broken tag chunk must not stop loading the samples
            return {}

    # samples ---------------------------------------------------------------
    def read(self, start: int = 0, stop: int | None = None, mono: bool = True, dtype=np.float32,
             non_finite: str = "raise") -> np.ndarray:
        """Samples ``start`` to ``stop`` (frame indices), in one preallocated array.

        Parameters
        ----------
        start, stop : int
            Frame range; ``stop`` None reads to the end. Clipped to the file.
        mono : bool
            Average the channels (1-D result); False gives ``(channels, frames)``.
        dtype : numpy dtype
            float32 (default) or float64; values in [-1, 1].
        non_finite : {"raise", "zero"}
            What to do with NaN/inf samples: raise :class:`AudioNonFiniteError`
            naming the first one's time, or replace them by 0 with an
            :class:`AudioNonFiniteWarning`.

        Returns
        -------
        numpy.ndarray
            Shorter than asked, with an :class:`AudioTruncatedWarning`, if the
            decoder ends early.
        """
        start, stop = self._clip_range(start, stop)
        n = stop - start
        out_channels = 1 if mono else self.info.channels
        dtype = np.dtype(dtype)
        check_allocation(n * out_channels, dtype.itemsize,
                         f"loading {n / self.info.sample_rate:.1f} s of {out_channels}-channel audio", self.path)
        out = np.empty(n if mono else (self.info.channels, n), dtype=dtype)
        position = 0
        for block in self._decode(start, stop, mono, dtype, non_finite, out=out):
            position += block.shape[-1]
        if position < n:
            out = out[..., :position]
            if position < n // 2:  # do not keep a mostly empty buffer alive
                out = out.copy()
        return out

    def blocks(self, start: int = 0, stop: int | None = None, mono: bool = True, dtype=np.float32,
               non_finite: str = "raise", block_frames: int | None = None):
        """Iterate over the samples ``start`` to ``stop`` in blocks of ``block_frames`` (constant memory).

        Same options as :meth:`read`. The yielded arrays are reused between
        iterations: copy a block to keep it.
        """
        start, stop = self._clip_range(start, stop)
        yield from self._decode(start, stop, mono, np.dtype(dtype), non_finite, block_frames=block_frames)

    def _clip_range(self, start, stop):
        frames = self.info.frames
        start = min(max(0, int(start)), frames)
        stop = frames if stop is None else min(max(start, int(stop)), frames)
        return start, stop

    def _decode(self, start, stop, mono, dtype, non_finite, out=None, block_frames=None):
        if non_finite not in ("raise", "zero"):
            raise ValueError(f"non_finite must be 'raise' or 'zero', got {non_finite!r}")
        info = self.info
        channels = info.channels
        block = int(block_frames or self.block_frames)
        native_int16 = info.subtype == "PCM_16"
        check_finite = info.subtype not in _INTEGER_SUBTYPES
        read_dtype = np.int16 if native_int16 else dtype
        direct = out is not None and channels == 1 and not native_int16  # decode straight into the output
        buffer = None if direct else np.empty((min(block, max(stop - start, 1)), channels), dtype=read_dtype)
        if out is None:
            shape = (min(block, max(stop - start, 1)),) if mono else (channels, min(block, max(stop - start, 1)))
            staging = np.empty(shape, dtype=dtype)
        try:
            self._handle.seek(start)
        except Exception as err:
            raise AudioFormatError(self.path, f"cannot seek to frame {start} ({err})") from None
        position = start
        replaced = 0
        while position < stop:
            want = min(block, stop - position)
            offset = position - start
            try:
                if direct:
                    target = out[offset: offset + want] if mono else out[0, offset: offset + want]
                    got = len(self._handle.read(want, dtype=dtype.name, out=target))
                    raw = target[:got]
                else:
                    got = len(self._handle.read(want, dtype=np.dtype(read_dtype).name, always_2d=True,
                                                out=buffer[:want]))
                    raw = buffer[:got]
            except Exception as err:  # the decoder failed mid-stream (corrupt data after a good start)
                if position == start:
                    raise AudioFormatError(self.path, f"could not decode audio ({err})") from None
                warnings.warn(f"{self.path}: decoding stopped at {position / info.sample_rate:.3f} s ({err}); "
                              "loading what was decoded", AudioTruncatedWarning, stacklevel=3)
                return
            if got == 0:
                break
            if check_finite:
                replaced += self._check_finite(raw, position, non_finite)
            if direct:
                block_out = raw
            else:
                if out is not None:
                    target = out[offset: offset + got] if mono else out[:, offset: offset + got]
                else:
                    target = staging[:got] if mono else staging[:, :got]
                _convert_block(raw, target, mono, native_int16)
                block_out = target
            yield block_out
            position += got
            if got < want:
                break
        if replaced:
            warnings.warn(f"{self.path}: replaced {replaced} NaN/infinite sample value(s) by 0",
                          AudioNonFiniteWarning, stacklevel=3)
        missing = stop - position
        if missing > max(0.01 * (stop - start), 0.05 * info.sample_rate):
            warnings.warn(
                f"{self.path}: the decoder ended at {position / info.sample_rate:.3f} s, "
                f"{missing / info.sample_rate:.3f} s before the end its header announces; loading what was decoded",
                AudioTruncatedWarning, stacklevel=3)

    def _check_finite(self, raw, position, non_finite) -> int:
        finite = np.isfinite(raw)
        if finite.all():
            return 0
        bad = ~finite
        if non_finite == "zero":
            raw[bad] = 0
            return int(bad.sum())
        first = int(np.flatnonzero(bad.any(axis=-1) if raw.ndim == 2 else bad)[0])
        time = (position + first) / self.info.sample_rate
        raise AudioNonFiniteError(
            self.path,
            f"contains NaN or infinite samples (the first at {time:.3f} s, frame {position + first}); "
            "load with non_finite='zero' to replace them by 0",
            time=time,
        )


def _convert_block(raw, target, mono, native_int16):
    """(frames, channels) decoded block -> mono or (channels, frames) float output, scaling int16 by 1/32768."""
    if mono:
        if raw.shape[1] == 1:
            np.copyto(target, raw[:, 0], casting="unsafe")
        else:
            np.mean(raw, axis=1, dtype=target.dtype, out=target)
    else:
        np.copyto(target, raw.T, casting="unsafe")
    if native_int16:
        target *= target.dtype.type(1 / 32768)  # libsndfile's own int16 -> float scale, exactly


def _looks_like_mpeg(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _open_regular_file(path, shown: str) -> int:
    """File descriptor of ``path`` after checking it is a readable, non-empty regular file."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise AudioFileNotFoundError(shown, "file does not exist") from None
    except PermissionError:
        raise AudioPermissionError(
            shown, "permission denied: cannot look up the file (check the permissions of its folder)") from None
    except OSError as err:
        raise AudioLoadError(shown, f"cannot access the file ({err.strerror or err})") from None
    _check_file_type(st, shown)
    try:
        # O_NONBLOCK: if the path was swapped for a pipe after the check, opening must not hang
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except PermissionError:
        raise AudioPermissionError(
            shown, "permission denied: this user may not read the file (check its permissions)") from None
    except FileNotFoundError:
        raise AudioFileNotFoundError(shown, "file does not exist") from None
    except OSError as err:
        raise AudioLoadError(shown, f"cannot open the file ({err.strerror or err})") from None
    try:
        _check_file_type(os.fstat(fd), shown)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_file_type(st, shown):
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise AudioIsADirectoryError(shown, "is a folder, not an audio file")
    if stat.S_ISFIFO(mode):
        raise AudioNotAFileError(shown, "is a named pipe (FIFO), not a regular file; save the stream to a file first")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise AudioNotAFileError(shown, "is a device, not a regular file")
    if stat.S_ISSOCK(mode):
        raise AudioNotAFileError(shown, "is a socket, not a regular file")
    if not stat.S_ISREG(mode):
        raise AudioNotAFileError(shown, "is not a regular file")
    if st.st_size == 0:
        raise AudioEmptyError(shown, "file is empty (0 bytes)")


def segment_frames(shown, info: AudioInfo, offset: float, duration: float | None, out_of_bounds_mode: str = "warn",
                   max_duration: float | None = None) -> tuple[int, int]:
    """First and last frame (stop excluded) of the segment ``offset`` to ``offset + duration`` seconds.

    Applies the rules of ``Audio.from_file``: an offset outside the file raises
    :class:`AudioOutOfBoundsError`; a segment running past the end is cut
    there, with a warning ("warn"), silently ("ignore") or not at all
    ("raise"); more than ``max_duration`` seconds raises ValueError.
    """
    if offset < 0:
        raise AudioOutOfBoundsError(shown, f"offset must be >= 0 s, got {offset}")
    start = int(round(offset * info.sample_rate))
    if start >= info.frames and start != 0:
        raise AudioOutOfBoundsError(
            shown, f"offset {offset} s is past the end of the recording ({info.duration:.3f} s)"
        )
    stop = info.frames if duration is None else start + int(round(duration * info.sample_rate))
    if stop > info.frames:
        message = (
            f"requested {offset} s + {duration} s runs past the end of the recording ({info.duration:.3f} s); "
            f"returning {(info.frames - start) / info.sample_rate:.3f} s"
        )
        if out_of_bounds_mode == "raise":
            raise AudioOutOfBoundsError(shown, message)
        if out_of_bounds_mode == "warn":
            warnings.warn(f"{shown}: {message}", stacklevel=4)
        stop = info.frames
    if max_duration is not None and (stop - start) / info.sample_rate > max_duration:
        raise ValueError(
            f"{shown}: {(stop - start) / info.sample_rate:.1f} s requested, more than max_duration={max_duration} s"
        )
    return start, stop


def audio_info(path) -> AudioInfo:
    """Duration (s), sample rate (Hz), channels and frame count of a file, without reading samples.

    Every check of :class:`AudioReader` applies: the header is refused if any
    field is outside :data:`LIMITS`.

    Raises
    ------
    AudioLoadError
        Missing, empty, unreadable, non-audio, implausible or sample-less files
        (a subclass naming the problem).

    Examples
    --------
    >>> from opso_nb import sample_data
    >>> audio_info(sample_data.birds()).sample_rate
    32000
    """
    with AudioReader(path) as reader:
        return reader.info
