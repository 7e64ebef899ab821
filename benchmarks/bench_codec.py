"""Residual codec throughput: compress / decompress vectors per second at 1, 2 and 4 bits.

    python benchmarks/bench_codec.py [--n 200000] [--dim 128] [--repeats 3]

Vectors are random unit vectors; the codec is trained on a sample of them with the default
centroid count for ``n`` (4096 for 200k). ``compress`` includes the nearest-centroid search.
When colbert-ai is importable, its CPU ``ResidualCodec`` is timed on the same codec too.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from jacolbert_core.index.codec import ResidualCodec, default_num_centroids


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def reference_times(codec: ResidualCodec, x: np.ndarray, repeats: int) -> tuple[float, float]:
    """Time colbert-ai's CPU codec with the same centroids and buckets (nan if absent)."""
    try:
        import torch
        from colbert.indexing.codecs.residual import ResidualCodec as RefCodec
        from colbert.infra.config import ColBERTConfig
    except ImportError:
        return float("nan"), float("nan")
    config = ColBERTConfig(dim=codec.dim, nbits=codec.nbits)
    if config.total_visible_gpus:
        return float("nan"), float("nan")
    ref = RefCodec(
        config=config,
        centroids=torch.from_numpy(np.array(codec.centroids)),
        avg_residual=torch.from_numpy(np.array(codec.avg_residual)),
        bucket_cutoffs=torch.from_numpy(np.array(codec.bucket_cutoffs)),
        bucket_weights=torch.from_numpy(np.array(codec.bucket_weights)),
    )
    xt = torch.from_numpy(x)
    t_c, packed = best_time(lambda: ref.compress(xt), repeats)
    t_d, _ = best_time(lambda: ref.decompress(packed), repeats)
    return t_c, t_d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--train-sample", type=int, default=1 << 16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sample = x[rng.choice(args.n, min(args.train_sample, args.n), replace=False)]
    k = default_num_centroids(args.n)
    print(
        f"{args.n} random unit vectors, dim {args.dim}, {k} centroids, "
        f"{os.cpu_count()} CPUs, best of {args.repeats}"
    )
    header = (
        f"{'nbits':>5} {'bytes/vec':>9} {'train s':>8} {'compress v/s':>13} "
        f"{'decompress v/s':>15} {'cosine':>7} {'ref comp v/s':>13} {'ref decomp v/s':>15}"
    )
    print(header)
    print("-" * len(header))
    for nbits in (1, 2, 4):
        t_train, codec = best_time(
            lambda nbits=nbits: ResidualCodec.train(sample, nbits=nbits, n_centroids=k), 1
        )
        t_c, (codes, packed) = best_time(lambda codec=codec: codec.compress(x), args.repeats)
        t_d, recon = best_time(
            lambda codec=codec, codes=codes, packed=packed: codec.decompress(codes, packed),
            args.repeats,
        )
        cosine = float(np.mean(np.einsum("ij,ij->i", recon, x)))
        bytes_per_vector = codec.bytes_per_vector + codes.dtype.itemsize
        ref_c, ref_d = reference_times(codec, x, args.repeats)
        print(
            f"{nbits:>5} {bytes_per_vector:>9} {t_train:>8.1f} {args.n / t_c:>13,.0f} "
            f"{args.n / t_d:>15,.0f} {cosine:>7.4f} {args.n / ref_c:>13,.0f} "
            f"{args.n / ref_d:>15,.0f}"
        )
    print("bytes/vec = packed residual bytes + 4-byte int32 centroid code")


if __name__ == "__main__":
    main()
