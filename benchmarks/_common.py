"""Pieces shared by the benchmark scripts: synthesized recordings and the OpenSoundscape side-by-side.

Scripts run as ``python benchmarks/bench_x.py``, which puts this folder on ``sys.path``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "_data"  # git-ignored; recordings are written once and reused

sys.path.insert(0, str(ROOT))  # opso_nb from this checkout
from opso_nb.utils import atomic_path  # noqa: E402

OPSO_MISSING = ("(OpenSoundscape not compared: set OPENSOUNDSCAPE_PYTHON (or OPSO_PYTHON) to the python of a "
                "separate environment with `pip install opensoundscape`, or create benchmarks/_opso_env)")


def write_recording(path, seconds, sample_rate, make_block, seed=0, block_seconds=60.0) -> Path:
    """Write a mono 16-bit recording (WAV or FLAC, by suffix) once, block by block, so no benchmark holds a long file in memory.

    Parameters
    ----------
    path : Path
        Kept as is when it exists with the right length; written atomically otherwise.
    seconds : float
        Length (s).
    sample_rate : int
        Hz.
    make_block : callable
        ``make_block(t, rng)`` returns the samples at times ``t`` (s from the file start).
    seed : int
        Seed of the ``numpy`` generator handed to ``make_block`` (same file every time).
    block_seconds : float
        Length of each written block (s).
    """
    path = Path(path)
    n_total = int(round(seconds * sample_rate))
    if path.exists() and soundfile.info(str(path)).frames == n_total:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = int(block_seconds * sample_rate)
    with atomic_path(path) as tmp, soundfile.SoundFile(str(tmp), "w", samplerate=sample_rate, channels=1,
                                                        subtype="PCM_16") as out:
        for start in range(0, n_total, block):
            t = (start + np.arange(min(block, n_total - start))) / sample_rate
            out.write(np.asarray(make_block(t, rng), dtype=np.float32))
    return path


def opso_python() -> str | None:
    """Python of a separate environment with OpenSoundscape, or None.

    Looks at ``$OPENSOUNDSCAPE_PYTHON``, ``$OPSO_PYTHON`` and ``benchmarks/_opso_env``,
    and keeps the first that can import ``opensoundscape``.
    """
    candidates = [os.environ.get("OPENSOUNDSCAPE_PYTHON"), os.environ.get("OPSO_PYTHON"),
                  str(HERE / "_opso_env" / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists():
            if subprocess.run([python, "-c", "import opensoundscape"], capture_output=True).returncode == 0:
                return python
    return None
