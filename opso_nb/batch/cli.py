"""``python -m opso_nb.batch``: run a batch job from a shell (a cluster's login node, a SLURM script).

Each sub-command builds a job and calls :func:`opso_nb.batch.run_batch`; see
``python -m opso_nb.batch --help`` and ``python -m opso_nb.batch predict --help``.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import threading

from opso_nb.batch.jobs import RibbitJob, SummaryJob
from opso_nb.batch.runner import DEFAULT_GROUP_MEGABYTES, BatchInterrupted, run_batch
from opso_nb.batch.summary import DEFAULT_BANDS

__all__ = ["main", "build_parser"]

DESCRIPTION = """\
Run one job over many recordings on Dask: on this machine (a LocalCluster with one
process per core, the default) or on a running Dask cluster (--scheduler ADDRESS).
Results go to a run folder inside --out (one Parquet part per recording, plus a
failures table); running the same command again resumes, skipping finished files.
"""

EXAMPLES = """\
examples:
  # score a folder tree with a saved CNN on all cores of this machine
  python -m opso_nb.batch predict --model best.model --files /data/aru2024 --out /data/scores

  # the same on a cluster whose scheduler runs at 10.0.0.5 (see docs/slurm/)
  python -m opso_nb.batch predict --model best.model --files /data/aru2024 --out /data/scores \\
      --scheduler tcp://10.0.0.5:8786

  # RIBBIT for two species, 4 local workers
  python -m opso_nb.batch ribbit --params toad.json frog.json --files /data/aru2024 --out /data/ribbit --workers 4

  # level and spectrum of every 10 s clip: check a deployment before scoring it
  python -m opso_nb.batch summary --files /data/aru2024 --out /data/qa

  # BirdNET confidences with a location/week species filter, and BirdNET embeddings
  python -m opso_nb.batch birdnet --files /data/aru2024 --out /data/birdnet --set lat=40.4 --set lon=-79.9 --set week=20
  python -m opso_nb.batch embed --files /data/aru2024 --out /data/embeddings

read the results with pandas (or dask.dataframe) from the run folder printed at the end:
  pandas.read_parquet("/data/scores/predict-<fingerprint>/parts")
"""

COMMANDS = {
    "predict": "scores of a saved CNN (a model file written by CNN.save)",
    "birdnet": "BirdNET species confidences per 3 s clip",
    "embed": "BirdNET embeddings (1,024 values per 3 s clip)",
    "ribbit": "RIBBIT pulse-rate scores, species parameters from JSON files",
    "summary": "RMS level, peak frequency and band levels per clip (check a deployment)",
}


def _bands(text: str) -> list:
    """``"0-500,500-1000"`` -> ``[[0.0, 500.0], [500.0, 1000.0]]``."""
    try:
        return [[float(v) for v in band.split("-")] for band in text.split(",") if band.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands are LOW-HIGH in Hz separated by commas, got {text!r}") from None


def _setting(text: str):
    """``KEY=VALUE`` -> ``(key, value)``, the value read as JSON when it is (numbers, lists, true/false)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _common(parser):
    where = parser.add_argument_group("input, output and where it runs")
    where.add_argument("--files", nargs="+", required=True, metavar="PATH",
                       help="audio files and/or folders (folders are searched for audio files, sub-folders too)")
    where.add_argument("--out", required=True, metavar="OUT",
                       help="output folder (created); every worker must see it at the same path")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                            "(default: start a LocalCluster on this machine)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="worker processes of the LocalCluster (default: one per core); ignored with --scheduler")
    where.add_argument("--no-recursive", action="store_true", help="do not search sub-folders of the folders given")
    where.add_argument("--restart", action="store_true",
                       help="compute every file again instead of resuming (the run's earlier results are deleted)")
    where.add_argument("--group-mb", type=float, default=DEFAULT_GROUP_MEGABYTES, metavar="MB",
                       help="hand out files smaller than this in groups of about this size, one task each "
                            "(default %(default)s; 0: one file per task)")
    where.add_argument("--allowed-failures", type=int, metavar="K",
                       help="LocalCluster only: worker deaths a task survives before its file is given up "
                            "(Dask's default 3)")
    where.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m opso_nb.batch``."""
    parser = argparse.ArgumentParser(prog="python -m opso_nb.batch", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     title="commands (python -m opso_nb.batch COMMAND --help for its options)")
    sub = {name: commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=textwrap.dedent(_epilog(name)))
           for name, text in COMMANDS.items()}

    p = sub["predict"].add_argument_group("model and clips")
    p.add_argument("--model", required=True, metavar="M", help="model file written by CNN.save")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="clips per forward pass (default 16)")
    p.add_argument("--activation", default="sigmoid", choices=["none", "sigmoid", "softmax", "softmax_and_logit"],
                   help="applied to the network's outputs (default sigmoid; none: raw logits)")
    p.add_argument("--overlap", type=float, default=0.0, metavar="FRACTION",
                   help="overlap of consecutive clips as a fraction of the clip length (default 0)")
    p.add_argument("--final-clip", default="none", choices=["none", "remainder", "full", "extend"],
                   help="how to score the end of a file shorter than a clip (default none: not scored)")
    p.add_argument("--device", default="cpu", help="torch device on the workers (default cpu)")

    for name in ("birdnet", "embed"):
        b = sub[name].add_argument_group("BirdNET")
        b.add_argument("--set", type=_setting, action="append", default=[], metavar="KEY=VALUE",
                       help="a BirdNET parameter, repeatable (values read as JSON: --set overlap=1.5 --set lat=40.4)")

    r = sub["ribbit"].add_argument_group("species")
    r.add_argument("--params", nargs="+", required=True, metavar="P.json",
                   help="RIBBIT parameters, one JSON file per species (written by RibbitParams.save)")
    r.add_argument("--chunk-duration", type=float, default=300.0, metavar="S",
                   help="seconds of audio read at a time (default 300)")

    s = sub["summary"].add_argument_group("clips and bands")
    s.add_argument("--clip-duration", type=float, default=10.0, metavar="S", help="clip length (s, default 10)")
    s.add_argument("--clip-overlap", type=float, default=0.0, metavar="S", help="clip overlap (s, default 0)")
    s.add_argument("--bands", type=_bands, default=[list(b) for b in DEFAULT_BANDS], metavar="LOW-HIGH,...",
                   help="frequency bands in Hz (default " + ",".join(f"{lo:g}-{hi:g}" for lo, hi in DEFAULT_BANDS)
                        + ")")
    s.add_argument("--sample-rate", type=int, metavar="HZ", help="resample every file to this rate first")
    s.add_argument("--window-samples", type=int, default=1024, metavar="N",
                   help="spectrum window (samples, default 1024)")

    for p in sub.values():
        _common(p)
    return parser


def _epilog(name) -> str:
    """The examples of one command (with their continuation lines), for its own --help."""
    lines, keep = [], False
    for line in EXAMPLES.splitlines():
        keep = f"opso_nb.batch {name} " in line or (keep and lines[-1].endswith("\\"))
        if keep:
            lines.append(line)
    return "examples:\n" + "\n".join(lines) if lines else ""


def _none(value):
    return None if value == "none" else value


def make_job(args):
    """The job a parsed command line asks for."""
    if args.command == "predict":
        from opso_nb.batch.ml_jobs import CNNPredictJob  # torch: only for this command

        return CNNPredictJob(model=args.model, batch_size=args.batch_size, activation_layer=_none(args.activation),
                             overlap_fraction=args.overlap, final_clip=_none(args.final_clip), device=args.device)
    if args.command in ("birdnet", "embed"):
        from opso_nb.batch.ml_jobs import BirdNETEmbedJob, BirdNETPredictJob  # torch: only for these commands

        cls = BirdNETPredictJob if args.command == "birdnet" else BirdNETEmbedJob
        return cls(birdnet_options=dict(args.set))
    if args.command == "ribbit":
        return RibbitJob.from_files(args.params, chunk_duration=args.chunk_duration)
    return SummaryJob(clip_duration=args.clip_duration, clip_overlap=args.clip_overlap, bands=args.bands,
                      sample_rate=args.sample_rate, window_samples=args.window_samples)


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0: the run finished, bad files included)."""
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        # SIGTERM (a SLURM time limit, kill PID) stops the run cleanly like Ctrl-C: files in progress are
        # released, not held against the recordings by the next run
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        job = make_job(args)
        run_batch(job, args.files, args.out, scheduler=args.scheduler, n_workers=args.workers,
                  recursive=not args.no_recursive, resume=not args.restart, progress=not args.quiet,
                  group_megabytes=args.group_mb, allowed_failures=args.allowed_failures, verbose=not args.quiet)
    except KeyboardInterrupt:
        print("stopped; run the same command again to resume", file=sys.stderr)
        return 130
    except (BatchInterrupted, OSError, ValueError, RuntimeError, ImportError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
