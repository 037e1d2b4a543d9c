"""Search-by-example latency on synthetic embeddings: exact (numpy) vs faiss IVF.

Prints one table: number of embeddings, method, build time, mean query latency
(ms, one query, k=10) and recall@10 of the approximate index against exact search.
The vectors are 1,024-dimensional (BirdNET's size) and clustered like real
embeddings (500 centres plus noise), float32. 10^6 vectors take 4 GB; pass
``--sizes 10000 100000`` on a small machine.

Usage: python benchmarks/bench_search.py [--sizes 10000 100000 1000000] [--queries 20]
"""
import argparse
import time

import numpy as np
import pandas as pd

from opso_nb.ml.agile import EmbeddingSearch
from opso_nb.utils import CLIP_INDEX


def make_table(n, dim=1024, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(500, dim)).astype(np.float32)
    vectors = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):  # in blocks, so building the data does not double the memory
        hi = min(n, lo + 100_000)
        vectors[lo:hi] = centres[rng.integers(0, 500, hi - lo)] + 0.5 * rng.normal(size=(hi - lo, dim))
    index = pd.MultiIndex.from_arrays([np.zeros(n, dtype=object), np.arange(n, dtype=float),
                                       np.arange(n, dtype=float) + 3], names=CLIP_INDEX)
    return pd.DataFrame(vectors, index=index, copy=False), vectors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    print(f"{'embeddings':>11} {'method':>6} {'build s':>8} {'query ms':>9} {'recall@10':>9}")
    for n in args.sizes:
        table, vectors = make_table(n)
        queries = vectors[np.random.default_rng(1).choice(n, args.queries, replace=False)]
        results = {}
        for method in ("exact", "ivf"):
            t0 = time.perf_counter()
            search = EmbeddingSearch(table, method=method)
            build = time.perf_counter() - t0
            search.search(queries[:1], 10)  # warm-up
            t0 = time.perf_counter()
            found = [search.search(q, 10)[0][0] for q in queries]
            per_query = (time.perf_counter() - t0) / len(queries) * 1000
            results[method] = found
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(results["exact"], found)])
            print(f"{n:>11,} {method:>6} {build:>8.1f} {per_query:>9.1f} {recall:>9.2f}", flush=True)
            del search


if __name__ == "__main__":
    main()
