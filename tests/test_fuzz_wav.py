"""Fuzzing the audio loader with generated WAV files (Hypothesis).

Headers and bodies are built field by field with lies everywhere: chunk sizes,
sample rates, channel counts, bit depths, format tags, RIFF/RIFX/RF64 magic,
extra chunks, NaN and infinite float samples, truncation at any byte. Whatever
the file, loading it may only

* succeed, or raise a documented :class:`~opso_nb.audio.AudioLoadError`
  subclass (never a raw libsndfile, numpy, struct or Unicode error);
* warn with :class:`~opso_nb.audio.AudioTruncatedWarning` or
  :class:`~opso_nb.audio.AudioNonFiniteWarning`, nothing else;
* allocate a bounded amount of memory (tracemalloc peak per example), also when
  the clip is padded to full length as a clip loader does.

Examples are derandomized (the same every run) and bounded so the file runs in
well under 30 s.
"""
import io
import resource
import struct
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opso_nb.audio import (
    Audio,
    AudioLoadError,
    AudioNonFiniteWarning,
    AudioTruncatedWarning,
    audio_info,
)
from opso_nb.utils import make_clip_df

#: Peak bytes one example may allocate (the largest legal case, a 1 s clip at 1 MHz padded, needs 4 MB).
ALLOCATION_BOUND = 48 * 2**20
ALLOWED_WARNINGS = (AudioTruncatedWarning, AudioNonFiniteWarning)
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


FIELDS = ("magic", "tag", "channels", "rate", "bits", "align", "byte_rate", "fmt_size", "chunks", "data_size",
          "riff_size", "cut", "floats")


@st.composite
def float_samples(draw, bits):
    """Float PCM bytes that may contain NaN and infinities."""
    values = draw(st.lists(st.one_of(st.floats(-1, 1, width=32), st.sampled_from([np.nan, np.inf, -np.inf])),
                           min_size=1, max_size=400))
    return np.asarray(values, dtype="<f8" if bits == 64 else "<f4").tobytes()


@st.composite
def wav_files(draw):
    """Bytes of a WAV-like file that lies in a few chosen fields (none, one, or several)."""
    lies = draw(st.sets(st.sampled_from(FIELDS), max_size=4))

    def field(name, honest, anything):
        return draw(anything) if name in lies else draw(honest)

    magic = field("magic", st.just(b"RIFF"), st.sampled_from([b"RIFX", b"RF64", b"RIFF", b"BW64", b"RIFG"]))
    endian = ">" if magic == b"RIFX" else "<"
    tag = field("tag", st.sampled_from([1, 1, 3, 0xFFFE]), st.one_of(st.sampled_from([2, 6, 7, 0x11, 0x55]), u16))
    channels = field("channels", st.sampled_from([1, 2]), u16)
    rate = field("rate", st.sampled_from([8000, 32000, 48000]), u32)
    floats = tag in (3, 0xFFFE) or "floats" in lies
    bits = field("bits", st.sampled_from([32, 64] if floats else [8, 16, 24, 32]), u16)
    align = field("align", st.just((channels * ((bits + 7) // 8)) % 65536), u16)
    byte_rate = field("byte_rate", st.just((rate * align) % 2**32), u32)
    fmt_body = struct.pack(endian + "HHIIHH", tag, channels, rate, byte_rate, align, bits)
    if tag == 0xFFFE:
        fmt_body += struct.pack(endian + "HHI", 22, bits, 0) + struct.pack(endian + "H", 3 if floats else 1)
        fmt_body += bytes(14)
    fmt_size = field("fmt_size", st.just(len(fmt_body)), u32)
    chunks = [b"fmt " + struct.pack(endian + "I", fmt_size) + fmt_body]
    if "chunks" in lies:  # LIST, fact, junk ... chunks with honest or lying sizes, anywhere
        for _ in range(draw(st.integers(1, 3))):
            body = draw(st.binary(max_size=48))
            chunk_id = draw(st.one_of(st.sampled_from([b"LIST", b"fact", b"junk", b"ds64", b"data", b"fmt "]),
                                      st.binary(min_size=4, max_size=4)))
            size = draw(st.one_of(st.just(len(body)), u32))
            chunks.insert(draw(st.integers(0, len(chunks))), chunk_id + struct.pack(endian + "I", size) + body)
    if floats and bits in (32, 64):
        data = draw(float_samples(bits))
    else:
        data = draw(st.binary(min_size=1, max_size=4096))
    data_size = field("data_size", st.just(len(data)), st.one_of(st.sampled_from([0xFFFFFFFF, 0]), u32))
    chunks.append(b"data" + struct.pack(endian + "I", data_size) + data)
    body = b"WAVE" + b"".join(chunks)
    riff_size = field("riff_size", st.just(len(body)), u32)
    content = magic + struct.pack(endian + "I", riff_size) + body
    cut = field("cut", st.none(), st.integers(0, len(content)))
    return content if cut is None else content[:cut]


def _load_everything(path, content):
    """Every entrance a batch uses: header, whole file, padded 1 s clip, bytes, clip table."""
    outcomes = []
    for attempt in (
        lambda: audio_info(path),
        lambda: Audio.from_file(path),
        lambda: Audio.from_file(path, duration=1, out_of_bounds_mode="ignore").extend_to(1),
        lambda: Audio.from_file(path, offset=0, duration=0.5, out_of_bounds_mode="ignore", mono=False),
        lambda: Audio.from_bytesio(io.BytesIO(content)),
    ):
        try:
            attempt()
            outcomes.append("ok")
        except AudioLoadError as err:
            assert err.path in (str(path), "<bytes>")
            outcomes.append(type(err).__name__)
    clips, invalid = make_clip_df([path], 1.0, return_invalid_samples=True)  # never raises in skip mode
    assert len(invalid) + (len(clips) > 0) >= 1 or outcomes[0] != "ok"
    return outcomes


def _assert_only_documented_behaviour(path, content):
    path.write_bytes(content)
    tracemalloc.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _load_everything(path, content)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    unexpected = [w for w in caught if not issubclass(w.category, ALLOWED_WARNINGS)]
    assert not unexpected, [str(w.message) for w in unexpected]
    assert peak < ALLOCATION_BOUND, f"{peak / 2**20:.0f} MiB allocated for a {len(content)}-byte file"


@pytest.fixture(scope="module")
def rss_before():
    """Peak resident memory before fuzzing: libsndfile's own allocations are invisible to tracemalloc."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield before
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 256, f"peak resident memory grew by {grown_mib:.0f} MiB while fuzzing"


@FUZZ
@given(content=wav_files())
def test_generated_wav_files_give_only_documented_errors(tmp_path, rss_before, content):
    _assert_only_documented_behaviour(tmp_path / "fuzz.wav", content)


@settings(FUZZ, max_examples=40)
@given(content=st.one_of(st.binary(max_size=2048),
                         st.binary(max_size=2048).map(lambda b: b"RIFF\xff\xff\xff\xffWAVE" + b),
                         st.binary(max_size=2048).map(lambda b: b"fLaC" + b),
                         st.binary(max_size=2048).map(lambda b: b"OggS" + b),
                         st.binary(max_size=2048).map(lambda b: b"ID3\x03\x00" + b)))
@pytest.mark.parametrize("suffix", [".wav", ".mp3"])
def test_random_bytes_with_audio_magic_give_only_documented_errors(tmp_path, rss_before, suffix, content):
    _assert_only_documented_behaviour(tmp_path / f"fuzz{suffix}", content)


def test_the_generator_reaches_the_interesting_cases(tmp_path):
    """The fuzzer is only useful if it produces loadable files, NaN files and lying headers: check it does."""
    seen = set()

    @settings(FUZZ, max_examples=150)
    @given(content=wav_files())
    def collect(content):
        path = tmp_path / "probe.wav"
        path.write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                Audio.from_file(path)
                seen.add("loaded")
            except AudioLoadError as err:
                seen.add(type(err).__name__)

    collect()
    assert {"loaded", "AudioHeaderError", "AudioFormatError"} <= seen, seen
    assert "AudioNonFiniteError" in seen or "AudioEmptyError" in seen, seen
