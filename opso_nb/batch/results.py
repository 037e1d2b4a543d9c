"""Reading what a batch wrote: the result of :func:`~opso_nb.batch.run_batch`.

Any table on disk (an output folder, a run, its ``parts/``, a Parquet or CSV
file) opens with :func:`opso_nb.store.read_results`, re-exported here.

Nothing here needs Dask (except :meth:`BatchResult.to_dask`), so dashboards
can open batch outputs on a machine without it.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import pandas as pd

from opso_nb.store import RunStore, read_results

__all__ = ["BatchResult", "read_results", "format_summary"]


def format_summary(summary: dict) -> str:
    """The end-of-run report of :func:`~opso_nb.batch.run_batch` as two lines of text."""
    s = summary
    speed = (f"{s['audio_hours']:.3g} h of audio in {s['seconds']:.1f} s = {s['audio_hours_per_second']:.3g} "
             f"audio h/s ({s['audio_hours_per_second'] * 3600:,.0f}x real time)")
    trouble = f", {s['clip_failures']} clip failure(s) in finished files" if s.get("clip_failures") else ""
    return (f"{s['job']}: {s['done']} file(s) done, {s['skipped']} skipped (finished before), {s['failed']} "
            f"failed, {s['quarantined']} quarantined{trouble} · {speed}\n"
            f"results: {Path(s['folder']) / 'parts'} · failures: {Path(s['folder']) / 'failures.csv'}")


class BatchResult:
    """What :func:`~opso_nb.batch.run_batch` returns: where the results are, read on demand.

    Attributes
    ----------
    folder : Path
        The run folder (``<output_path>/<job>-<fingerprint>``).
    parts_folder : Path
        ``folder / "parts"``: one Parquet dataset (``pd.read_parquet``,
        ``pyarrow.dataset``, ``dask.dataframe.read_parquet``).
    files : list of str
        The input files of the call, in order.
    summary : dict
        ``job, folder, files, done, skipped, failed, quarantined,
        clip_failures, rows, audio_hours, seconds, audio_hours_per_second``.
    """

    def __init__(self, folder, files, summary: dict):
        self.folder = Path(folder)
        self.parts_folder = self.folder / "parts"
        self.files = list(files)
        self.summary = dict(summary)

    def read(self):
        """``(table, failures)`` of the input files, in input order (the table indexed by file, start, end)."""
        return RunStore.existing(self.folder).read(self.files)

    @cached_property
    def _both(self):
        return self.read()

    @property
    def table(self) -> pd.DataFrame:
        """The results, indexed by ``(file, start_time, end_time)``: the serial call's table (read once)."""
        return self._both[0]

    @property
    def failures(self) -> pd.DataFrame:
        """The failures table (:data:`opso_nb.failures.FAILURE_COLUMNS`) of the input files (read once)."""
        return self._both[1]

    def to_dask(self):
        """The parts as a lazy ``dask.dataframe`` (columns ``file, start_time, end_time`` and the values)."""
        import dask.dataframe as dd  # optional (the dask extra), and only needed here

        csv = sorted(self.parts_folder.glob("*.csv"))
        return dd.read_csv([str(p) for p in csv]) if csv else dd.read_parquet(str(self.parts_folder))

    def __repr__(self):
        return f"BatchResult({self.folder})\n{format_summary(self.summary)}"
