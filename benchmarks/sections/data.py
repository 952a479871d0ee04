"""Data section: decoding full-resolution and 224-px images, cold and from the cache, against the reference loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import REPO_ROOT, Context, Row, child_environment, load_average, median, read_all_files, say, timed


def section_data(ctx: Context) -> list[Row]:
    """Files to arrays ready for training: reference steps 1+2 vs load_dataset cold and warm."""
    import reference

    from zoidberg.data.dataset import load_dataset

    size = ctx.image_size
    rows = []
    sets = (
        ("full-res", ctx.fullres, 3.0),
        ("224 px", ctx.data224, None),
    )
    for label, root, cold_target in sets:
        say(f"data: {label} ({root})")
        read_all_files(root)
        pooled = reference.pooled_directory(root, ctx.scratch / f"pooled-{label.replace(' ', '')}")
        warm_cache = ctx.scratch / f"cache-warm-{label.replace(' ', '')}"
        primed = load_dataset(root, image_size=size, cache_dir=warm_cache)
        n_files = len(primed)
        times = {name: [] for name in ("reference", "cold", "warm_process", "warm_call", "reference_cpu", "cold_cpu", "draft_decode", "full_decode")}
        jpegs = sorted(root.rglob("*.jpeg")) if label == "full-res" else []
        for repeat in range(ctx.repeats):
            cold_cache = ctx.scratch / f"cache-cold-{repeat}"

            def run_reference():
                cpu = time.process_time()
                seconds, (images, labels) = timed(reference.load_arrays, pooled, size)
                times["reference_cpu"].append(time.process_time() - cpu)
                if len(images) != n_files:
                    raise RuntimeError(f"reference loaded {len(images)} images, Zoidberg {n_files}")
                times["reference"].append(seconds)

            def run_cold():
                cpu = time.process_time()
                seconds, dataset = timed(load_dataset, root, image_size=size, cache_dir=cold_cache)
                times["cold_cpu"].append(time.process_time() - cpu)
                assert not dataset.from_cache
                times["cold"].append(seconds)
                shutil.rmtree(cold_cache, ignore_errors=True)

            def run_decode_floor():
                if jpegs:
                    times["draft_decode"].append(pillow_decode_seconds(jpegs, draft=True))
                    times["full_decode"].append(pillow_decode_seconds(jpegs, draft=False))

            def run_warm():
                times["warm_process"].append(warm_load_in_new_process(root, size, warm_cache))
                seconds, dataset = timed(load_dataset, root, image_size=size, cache_dir=warm_cache)
                assert dataset.from_cache
                times["warm_call"].append(seconds)

            steps = [run_reference, run_cold, run_warm, run_decode_floor]
            for step in steps if repeat % 2 == 0 else reversed(steps):
                step()
        reference_s = median(times["reference"])
        cores = os.cpu_count() or 1
        cold_note = (
            f"Fresh cache_dir each repeat (decode + cache write); median of {ctx.repeats}, alternating. "
            f"CPU time: reference {median(times['reference_cpu']):.2f} s, Zoidberg {median(times['cold_cpu']):.2f} s."
        )
        if jpegs:
            draft = median(times["draft_decode"])
            cold_note += (
                f" Bound: Pillow's JPEG decode alone (same rounds) takes {draft:.2f} s serial at draft scale vs "
                f"{median(times['full_decode']):.2f} s at full scale: draft skips most of the IDCT but every "
                f"Huffman-coded coefficient is still decoded, so {cores} cores need ≥ {draft / cores:.2f} s and no "
                f"libjpeg-based loader can be more than {reference_s / (draft / cores):.1f}x faster than this reference."
            )
        rows.append(
            Row(
                "data", f"Data prep {label} ({n_files:,} files → {size}-px arrays), cold", "s",
                reference_s, median(times["cold"]), min_ratio=cold_target,
                note=cold_note, samples={**times, "load": load_average()},
            )
        )
        rows.append(
            Row(
                "data", f"Data prep {label}, warm (cache hit, new process)", "s",
                reference_s, median(times["warm_process"]), min_ratio=50.0,
                note=(
                    f"load_dataset timed inside a fresh Python process (imports excluded on both sides); "
                    f"same process, new call: {median(times['warm_call']) * 1000:.0f} ms."
                ),
                samples={**times, "load": load_average()},
            )
        )
    return rows


WARM_CHILD = """
import json, sys, time
from zoidberg.data.dataset import load_dataset
start = time.perf_counter()
dataset = load_dataset(sys.argv[1], image_size=int(sys.argv[2]), cache_dir=sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - start, "from_cache": dataset.from_cache}))
"""


def warm_load_in_new_process(root: Path, size: int, cache_dir: Path) -> float:
    """Times load_dataset on a warm cache inside a new Python process."""
    result = subprocess.run(
        [sys.executable, "-c", WARM_CHILD, str(root), str(size), str(cache_dir)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=child_environment(), check=True,
    )
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    if not payload["from_cache"]:
        raise RuntimeError("the warm load in a new process missed the cache")
    return float(payload["seconds"])


def pillow_decode_seconds(files: list[Path], *, draft: bool) -> float:
    """Serial Pillow decode time of JPEG files, at draft scale (as Zoidberg decodes) or full scale."""
    from PIL import Image

    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            if draft:
                image.draft("L", (128, 128))
            image.load()
    return time.perf_counter() - start
