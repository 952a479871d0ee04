#!/usr/bin/env python
"""Checks Zoidberg's GPU paths on a machine with NVIDIA GPUs: one GPU per fold child, mixed precision, the same results.

    python benchmarks/gpu_check.py [--data DIR] [--folds 2] [--epochs 2] [--image-size 128]

It prints what TensorFlow sees, then trains the same small cross-validation several ways
(float32 in-process, which is data-parallel over all GPUs with MirroredStrategy when there are
several; float32 with a process per fold and --parallel auto; mixed precision with a process per
fold; and, when Ray is installed, each fold a Ray task with its own GPU) on generated data (or
--data) and prints a table: wall time and AUC. It exits 1 when no GPU is visible, or when the runs disagree by more than
0.05 AUC. Nothing here runs in the test suite (there is no GPU on the CI machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def zoidberg(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoidberg", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="A labeled folder [default: the generated demo data].")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"TensorFlow {tf.__version__} sees {len(gpus)} GPU(s): {[gpu.name for gpu in gpus]}")
    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")
    if not gpus:
        print("No GPU visible: install the CUDA build (README, GPU) and check nvidia-smi.", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="zoidberg-gpu-"))
    env = {**os.environ, "ZOIDBERG_RUNS_DIR": str(scratch / "runs"), "ZOIDBERG_CACHE_DIR": str(scratch / "cache")}
    data = args.data
    if data is None:
        data = scratch / "demo"
        zoidberg("demo-data", str(data), env=env).check_returncode()
    common = ["cv", "--data", str(data), "--arch", "cnn", "--folds", str(args.folds), "--epochs", str(args.epochs),
              "--image-size", str(args.image_size), "--json"]
    variants = {
        "float32, in-process": ["--engine", "inprocess"],
        "float32, a process per fold, parallel auto": ["--engine", "local", "--parallel", "auto"],
        "mixed, a process per fold, parallel auto": ["--engine", "local", "--parallel", "auto", "--precision", "mixed"],
    }
    try:
        import ray  # noqa: F401

        variants["mixed, Ray tasks (one GPU each when there are enough)"] = ["--engine", "ray", "--parallel", "auto", "--precision", "mixed"]
    except ImportError:
        print("Ray is not installed (pip install -r requirements-ray.txt): its variant is left out.")
    rows = []
    for name, flags in variants.items():
        start = time.perf_counter()
        result = zoidberg(*common, *flags, env=env)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            print(f"{name}: failed\n{result.stderr[-3000:]}", file=sys.stderr)
            return 1
        summary = json.loads(result.stdout)
        rows.append((name, seconds, summary["mean_std"]["roc_auc"]["mean"]))
    print(f"\n{'variant':<56} {'wall s':>8} {'AUC':>7}")
    for name, seconds, auc in rows:
        print(f"{name:<56} {seconds:>8.1f} {auc:>7.3f}")
    spread = max(auc for *_, auc in rows) - min(auc for *_, auc in rows)
    print(f"\nAUC spread across variants: {spread:.3f}; runs in {scratch}")
    return 0 if spread <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
