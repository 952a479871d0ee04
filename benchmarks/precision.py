#!/usr/bin/env python
"""Training throughput in float32 against mixed bfloat16 on this CPU: the notes' CNN and a fine-tuned MobileNetV2.

    python benchmarks/precision.py --data ../shared/data/chest_xray_224 [--rounds 4] [--images 320]

Each contestant (model × precision) trains one epoch per round on the same images, the
precisions taking turns within a round (order reversed every round) so that a burst of load
hits both. The first epoch of each contestant traces its step and is left out. Every epoch's
result is appended to benchmarks/results/precision.jsonl as it ends, and a run picks up
where an earlier one stopped (--fresh starts over), so a stopped session loses at most one
epoch. The table printed at the end reads that file. No test asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "precision.jsonl"
# The notes' CNN, and MobileNetV2 0.35 fine-tuned (the balanced preset's), both at 128 px, batch 32.
MODELS = {
    "cnn": {"architecture": "cnn", "conv_blocks": 3, "base_filters": 32, "dense_units": 128, "dropout_rate": 0.3},
    "mobilenetv2-finetune": {"architecture": "mobilenetv2", "alpha": 0.35, "weights": "imagenet", "transfer_mode": "fine-tune", "fine_tune_layers": 20},
}
POLICIES = ("float32", "mixed_bfloat16")


def done_epochs() -> dict[tuple[str, str, int], int]:
    """How many epochs each contestant (model, policy, images per epoch) has in the results file."""
    counts: dict[tuple[str, str], int] = {}
    if RESULTS.is_file():
        for line in RESULTS.read_text().splitlines():
            row = json.loads(line)
            key = (row["model"], row["policy"], row["images"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def build(model_name: str, policy: str, size: int):
    """A compiled model under a policy (the output layer stays float32, as training builds it)."""
    import keras

    from zoidberg.config import ModelConfig, TrainConfig
    from zoidberg.models.build import build_model, compile_model
    from zoidberg.models.layers import unfreeze_top_layers

    keras.mixed_precision.set_global_policy(policy)
    try:
        config = ModelConfig(**MODELS[model_name])
        model = build_model(config, size, 2)
        if config.transfer_mode == "fine-tune":
            # The second phase of a fine-tune fold: the top layers train on the images.
            unfreeze_top_layers(model, config.fine_tune_layers)
        compile_model(model, TrainConfig(learning_rate=1e-4), 2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "chest_xray_224"))
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=4, help="Epochs per contestant after its tracing epoch.")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--fresh", action="store_true", help="Forget the earlier results.")
    args = parser.parse_args(argv)
    os.environ.setdefault("ZOIDBERG_WEIGHTS_DIR", str(REPO_ROOT.parent / "shared" / "weights"))
    import numpy as np

    from zoidberg.data.dataset import load_dataset
    from zoidberg.training.devices import cpu_has_bfloat16
    from zoidberg.training.pipeline import make_batches

    if args.fresh and RESULTS.exists():
        RESULTS.unlink()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    print(f"CPU bfloat16 (AVX-512 BF16 or AMX): {cpu_has_bfloat16()}; load {os.getloadavg()[0]:.2f}", flush=True)
    dataset = load_dataset(args.data, image_size=args.size)
    rows = np.arange(min(args.images, len(dataset.labels)))
    for model_name in args.models.split(","):
        models = {policy: build(model_name, policy, args.size) for policy in POLICIES}
        batches = make_batches(dataset.images, dataset.labels, rows, 32)
        for policy, model in models.items():
            model.fit(batches.take(2), epochs=1, verbose=0)  # traces the step; not measured
        done = done_epochs()
        for round_number in range(args.rounds):
            order = POLICIES if round_number % 2 == 0 else POLICIES[::-1]
            for policy in order:
                if done.get((model_name, policy, len(rows)), 0) > round_number:
                    continue
                start, cpu_start = time.perf_counter(), time.process_time()
                model = models[policy]
                model.fit(batches, epochs=1, verbose=0)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                row = {"model": model_name, "policy": policy, "round": round_number, "images": len(rows), "seconds": round(seconds, 3),
                       "images_per_second": round(len(rows) / seconds, 1), "cpu_seconds": round(cpu, 2), "load": round(os.getloadavg()[0], 2),
                       "time": time.strftime("%Y-%m-%d %H:%M:%S")}
                with RESULTS.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"{model_name:22s} {policy:15s} round {round_number}: {row['images_per_second']:6.1f} img/s (load {row['load']})", flush=True)
    print_table()
    return 0


def print_table() -> None:
    """Median images per second of each contestant, and the bfloat16 speed-up."""
    import numpy as np

    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    print("\n| model | images per epoch | float32 img/s | mixed_bfloat16 img/s | speed-up | epochs each | load |")
    print("|---|---|---|---|---|---|---|")
    for model_name, images in dict.fromkeys((row["model"], row["images"]) for row in rows):
        mine = [row for row in rows if row["model"] == model_name and row["images"] == images]
        speeds = {policy: [row["images_per_second"] for row in mine if row["policy"] == policy] for policy in POLICIES}
        loads = [row["load"] for row in mine]
        if not all(speeds.values()):
            continue
        f32, bf16 = (float(np.median(speeds[policy])) for policy in POLICIES)
        print(f"| {model_name} | {images} | {f32:.1f} | {bf16:.1f} | {bf16 / f32:.2f}x | {min(map(len, speeds.values()))} | {min(loads):.1f}-{max(loads):.1f} |")


if __name__ == "__main__":
    sys.exit(main())
