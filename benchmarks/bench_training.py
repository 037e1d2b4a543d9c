"""Training speed: clips per second for one epoch of resnet18, num_workers 0 and 2.

Synthesizes a small labelled dataset (tones in noise, WAV), trains one epoch with
opso_nb, and (when an OpenSoundscape environment is given) the same epoch with
OpenSoundscape in that environment, then prints a table with the ratio.

Usage::

    python benchmarks/bench_training.py                       # opso_nb only
    python benchmarks/bench_training.py --clips 64 --size 224
    python benchmarks/bench_training.py --opso-python /path/to/opso-env/bin/python

``--opso-python`` (else ``$OPENSOUNDSCAPE_PYTHON``, ``$OPSO_PYTHON`` or
``benchmarks/_opso_env``) is a Python with ``opensoundscape`` installed in a
separate environment; without one that column says "not found".
Each configuration runs one warm-up batch first so model construction and first
calls are not counted.

``--precision float32`` turns off opso_nb's mixed precision (by default bfloat16
maths on CPUs that have it natively). OpenSoundscape 0.13 always trains under
bfloat16 autocast on a CPU, so the default setting is the like-for-like one.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from _common import OPSO_MISSING, opso_python

SAMPLE_RATE = 22050  # Hz, of the synthesized training clips

OPSO_SCRIPT = r"""
import json, math, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd, torch
from opensoundscape import CNN
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
df = pd.read_csv(cfg["labels"]).set_index(["file", "start_time", "end_time"])
classes = list(df.columns)
try:  # OpenSoundscape 0.9-0.12: trains by epochs
    model = CNN("resnet18", classes, cfg["duration"], sample_shape=(cfg["size"], cfg["size"], 1))
    def one_epoch(table, nw):
        model.train(table, epochs=1, batch_size=cfg["batch_size"], num_workers=nw, save_path=cfg["tmp"],
                    invalid_samples_log=None)
except TypeError:  # 0.13+: wants a sample rate, trains by steps, fetches ImageNet weights unless given a network
    from opensoundscape.ml import cnn_architectures
    net = cnn_architectures.resnet18(num_classes=len(classes), weights=None, num_channels=1)
    model = CNN(net, classes, cfg["duration"], sample_rate=cfg["sample_rate"], height=cfg["size"],
                width=cfg["size"], channels=1)
    def one_epoch(table, nw):
        model.train(table, steps=math.ceil(len(table) / cfg["batch_size"]), batch_size=cfg["batch_size"],
                    num_workers=nw, save_path=cfg["tmp"], invalid_samples_log=None, progress_bar=False,
                    reload_best_at_end=False)
out = {}
for nw in cfg["workers"]:
    one_epoch(df.iloc[: cfg["batch_size"]], nw)  # warm-up
    t = time.perf_counter()
    one_epoch(df, nw)
    out[nw] = len(df) / (time.perf_counter() - t)
print("RESULT " + json.dumps(out))
"""


def bench_ours(labels_df, size, batch_size, workers, threads, tmp, use_amp=None):
    import torch

    from opso_nb.ml.cnn import CNN

    torch.set_num_threads(threads)
    results = {}
    for nw in workers:
        torch.manual_seed(0)
        model = CNN("resnet18", list(labels_df.columns), float(labels_df.index[0][2]),
                    sample_shape=(size, size, 1), weights=None, device="cpu", verbose=0, use_amp=use_amp)
        model.train(labels_df.iloc[:batch_size], epochs=1, batch_size=batch_size, num_workers=nw,
                    save_path=tmp, save_interval=0, invalid_samples_log=None)  # warm-up
        t = time.perf_counter()
        model.train(labels_df, epochs=1, batch_size=batch_size, num_workers=nw, save_path=tmp,
                    save_interval=0, invalid_samples_log=None)
        results[nw] = len(labels_df) / (time.perf_counter() - t)
    return results


def bench_forward_backward_only(n, size, batch_size, threads, use_amp=None):
    """The limit: forward + backward + step on ready tensors (no audio, no preprocessing)."""
    import torch

    from opso_nb.ml.cnn_architectures import resnet18

    torch.set_num_threads(threads)
    from opso_nb.ml.utils import autocast, autocast_dtype, prepare_network, to_network_input

    net = prepare_network(resnet18(2, weights=None, num_channels=1), "cpu", channels_last=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = to_network_input(torch.rand(batch_size, 1, size, size), "cpu", channels_last=True)  # as CNN.train
    y = torch.randint(0, 2, (batch_size, 2)).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()
    steps = max(1, n // batch_size)
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        opt.zero_grad()
        with autocast("cpu", autocast_dtype("cpu", use_amp)):  # the same precision as CNN.train
            out = net(x)
        loss_fn(out.float(), y).backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t)


def bench_opso(python, labels_path, size, batch_size, workers, threads, duration, sample_rate, tmp):
    cfg = dict(labels=str(labels_path), size=size, batch_size=batch_size, workers=workers, threads=threads,
               duration=duration, sample_rate=sample_rate, tmp=tmp)
    try:
        proc = subprocess.run([python, "-c", OPSO_SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                              timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"failed: {e}"
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {int(k): v for k, v in json.loads(line[7:]).items()}, None
    return None, "failed: " + (proc.stderr.strip().splitlines() or ["no output"])[-1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64, help="training clips (half per class)")
    ap.add_argument("--duration", type=float, default=2.0, help="clip length (s)")
    ap.add_argument("--size", type=int, default=224, help="input image height and width (pixels)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--precision", choices=["auto", "float32"], default="auto",
                    help="opso_nb's maths: auto = bfloat16 on CPUs with native support (the default), or float32")
    ap.add_argument("--opso-python", default=None,
                    help="python of a separate environment with opensoundscape installed")
    args = ap.parse_args(argv)

    from opso_nb.ml.utils import make_tone_dataset

    with tempfile.TemporaryDirectory() as tmp:
        labels = make_tone_dataset(Path(tmp) / "data", n_per_class=args.clips // 2, duration=args.duration,
                                   sample_rate=SAMPLE_RATE)
        labels_path = Path(tmp) / "data" / "labels.csv"
        use_amp = None if args.precision == "auto" else False
        ours = bench_ours(labels, args.size, args.batch_size, args.workers, args.threads, tmp, use_amp)
        limit = bench_forward_backward_only(args.clips, args.size, args.batch_size, args.threads, use_amp)
        opso, why = (None, "not found")
        python = args.opso_python or opso_python()
        if python:
            opso, why = bench_opso(python, labels_path, args.size, args.batch_size, args.workers,
                                   args.threads, args.duration, SAMPLE_RATE, tmp)

    print(f"\nTraining, resnet18, {args.clips} clips of {args.duration} s, {args.size}x{args.size}x1 input, "
          f"batch {args.batch_size}, {args.threads} torch threads, opso_nb precision {args.precision}, one epoch "
          "(clips/s, higher is better)\n")
    print(f"{'num_workers':>11} | {'opso_nb':>9} | {'OpenSoundscape':>14} | {'ratio':>6}")
    print("-" * 50)
    for nw in args.workers:
        o = opso.get(nw) if opso else None
        ratio = f"{ours[nw] / o:6.2f}" if o else "     -"
        print(f"{nw:>11} | {ours[nw]:9.1f} | {(f'{o:14.1f}' if o else why[:14]):>14} | {ratio}")
    print(f"{'tensors':>11} | {limit:9.1f} | {'':>14} |   (forward+backward on ready tensors: the limit)")
    if opso is None:
        print(f"\nOpenSoundscape: {why}" + ("" if python else "\n" + OPSO_MISSING))


if __name__ == "__main__":
    main()
