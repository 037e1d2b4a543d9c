"""Jobs for the batch tests that Dask workers import by name (so this module must not import torch)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import param

from opso_nb.batch import SummaryJob


class KillOnFile(SummaryJob):
    """The summary job, except that the worker process dies (SIGKILL) when it meets the file named ``poison``.

    Stands in for a recording that makes a model run out of memory: the
    out-of-memory killer ends the process the same way, without an exception.
    """

    job = "killer"

    poison = param.String(default="", doc="Name of the file that kills its worker")

    def compute(self, file):
        if Path(file).name == self.poison:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().compute(file)
