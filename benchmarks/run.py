#!/usr/bin/env python
"""Benchmarks Zoidberg against the design notes' pipeline ("reference", benchmarks/reference.py).

One command, from the repository root:

    python benchmarks/run.py                      # everything on ../shared/data (1 to 2 hours)
    python benchmarks/run.py --quick              # tiny generated data, every section, about a minute
    python benchmarks/run.py --sections predict,startup --merge   # re-measure some sections only

It prints a markdown table (measure, reference, Zoidberg, ratio, target, met?) and writes
JSON (benchmarks/results/latest.json; --quick writes benchmarks/results/quick.json). A run
on the real data (unless --no-doc) also rewrites the results block of BENCHMARKS.md with
every row the JSON holds, naming the sections it has none for.

The machine is shared and noisy, so every ratio is measured in one process run,
alternating reference and Zoidberg, and short figures are medians of several repeats. The
ratio column is always Zoidberg's advantage: reference time / Zoidberg time, Zoidberg
throughput / reference throughput, reference memory / Zoidberg memory (> 1: Zoidberg wins).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SECTIONS = ("data", "train", "predict", "memory", "startup", "e2e")
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
RESULTS_DIR = BENCH_DIR / "results"
DOC_PATH = REPO_ROOT / "BENCHMARKS.md"
DOC_START = "<!-- results:start (written by benchmarks/run.py) -->"
DOC_END = "<!-- results:end -->"
# The design notes' CNN as Zoidberg's registry builds it, and training settings that match
# the notes: no dropout, no early stopping, no class weights, no augmentation.
CNN_CONFIG = dict(architecture="cnn", conv_blocks=3, base_filters=32, kernel_size=3, dense_units=128, dropout_rate=0.0, batch_norm=False)
MOBILENET_CONFIG = dict(architecture="mobilenetv2", alpha=1.0, weights=None, dropout_rate=0.0)
CV_FLAGS = ("--arch", "cnn", "--dropout-rate", "0", "--patience", "0", "--class-weighting", "none")


# --------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        section: Which benchmark section measured it.
        measure: What was measured.
        unit: "s", "ms", "img/s" or "MB".
        reference: The reference's figure (None where it has none).
        zoidberg: Zoidberg's figure.
        better: "lower" (times, memory) or "higher" (throughput).
        min_ratio: Target on the ratio (Zoidberg's advantage factor), if any.
        max_zoidberg: Target on Zoidberg's absolute figure (lower is better), if any.
        target_text: Overrides the generated target text.
        reference_detail: Extra text after the reference figure (e.g. GFLOP/s).
        zoidberg_detail: Extra text after Zoidberg's figure.
        note: One line: what bounds it, how it was measured.
        samples: Raw samples and facts (JSON only).
    """

    section: str
    measure: str
    unit: str
    reference: float | None
    zoidberg: float | None
    better: str = "lower"
    min_ratio: float | None = None
    max_zoidberg: float | None = None
    target_text: str = ""
    reference_detail: str = ""
    zoidberg_detail: str = ""
    note: str = ""
    samples: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Zoidberg's advantage factor (> 1: Zoidberg better)."""
        if not self.reference or not self.zoidberg:
            return None
        return self.reference / self.zoidberg if self.better == "lower" else self.zoidberg / self.reference

    @property
    def target(self) -> str:
        if self.target_text:
            return self.target_text
        parts = []
        if self.min_ratio is not None:
            parts.append(f"≥ {self.min_ratio:g}×")
        if self.max_zoidberg is not None:
            parts.append(f"≤ {format_value(self.max_zoidberg, self.unit)}")
        return " and ".join(parts) or "—"

    @property
    def met(self) -> bool | None:
        checks = []
        if self.min_ratio is not None:
            checks.append(self.ratio is not None and self.ratio >= self.min_ratio)
        if self.max_zoidberg is not None:
            checks.append(self.zoidberg is not None and self.zoidberg <= self.max_zoidberg)
        return all(checks) if checks else None

    def to_json(self) -> dict:
        payload = dataclasses.asdict(self)
        payload.update(ratio=self.ratio, target=self.target, met=self.met)
        return payload


def format_value(value: float | None, unit: str) -> str:
    """Formats a figure with its unit and a sensible precision."""
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "s":
        return f"{value:.2f} s" if value < 10 else f"{value:,.1f} s" if value < 100 else f"{value:,.0f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "img/s":
        return f"{value:.1f} img/s" if value < 100 else f"{value:,.0f} img/s"
    return f"{value:g} {unit}"


def markdown_table(rows: list[dict]) -> str:
    """Renders JSON rows as the markdown results table."""
    lines = [
        "| measure | reference | Zoidberg | ratio | target | met? |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    for row in rows:
        reference = format_value(row["reference"], row["unit"]) + (f" ({row['reference_detail']})" if row["reference_detail"] else "")
        zoidberg = format_value(row["zoidberg"], row["unit"]) + (f" ({row['zoidberg_detail']})" if row["zoidberg_detail"] else "")
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}×" if row["ratio"] < 10 else f"{row['ratio']:,.0f}×"
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        lines.append(f"| {row['measure']} | {reference} | {zoidberg} | {ratio} | {row['target']} | {met} |")
    return "\n".join(lines)


def notes_list(rows: list[dict]) -> str:
    """Renders the per-row notes as a numbered markdown list."""
    return "\n".join(f"- **{row['measure']}**: {row['note']}" for row in rows if row.get("note"))


# --------------------------------------------------------------------------- helpers


def median(values) -> float:
    values = [value for value in values if value is not None]
    return float(statistics.median(values)) if values else float("nan")


def timed(function: Callable, *args, **kwargs) -> tuple[float, object]:
    """Returns (seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def interleaved(functions: dict[str, Callable], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Times each function `repeats` times, alternating them (order reversed every round).

    Returns:
        Seconds per call, per function name.
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    items = list(functions.items())
    for index in range(repeats):
        for name, function in items if index % 2 == 0 else reversed(items):
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def run_steps(steps: list[Callable], *, concurrent: bool, reverse: bool = False) -> None:
    """Runs steps one after the other (order reversed if asked) or, in quick mode, all at once."""
    if not concurrent:
        for step in reversed(steps) if reverse else steps:
            step()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(steps)) as pool:
        for future in [pool.submit(step) for step in steps]:
            future.result()


def load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def child_environment(**extra: str) -> dict[str, str]:
    """Environment for child processes: the repository importable, TensorFlow quiet."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **extra}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    return environment


def run_measured(command: list, log_path: Path, environment: dict | None = None, timeout: float = 4 * 3600) -> dict:
    """Runs a child process to completion; returns its wall time, peak RSS, CPU time and exit code.

    The command runs under benchmarks/peak_rss.py, a small launcher, because Linux hands a
    child the peak RSS of the process that forked it: started from this process, every
    child would report at least this process's size.
    """
    report = log_path.with_suffix(".rss.json")
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(map(str, command))}\n".encode())
        log.flush()
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "peak_rss.py"), str(report), "--", *map(str, command)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
            env=environment or child_environment(), start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # The session this call started: the launcher and its child.
            process.wait()
        wall = time.perf_counter() - start
    measured = json.loads(report.read_text()) if report.exists() else {"peak_rss_mb": None, "cpu_s": None}
    return {**measured, "wall_s": wall, "returncode": process.returncode, "log": str(log_path)}


def check_child(result: dict, what: str) -> None:
    if result["returncode"] != 0:
        tail = Path(result["log"]).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what} exited with {result['returncode']}; log tail:\n{tail}")


def read_all_files(root: Path) -> int:
    """Reads every file under root once so both sides start from a warm page cache."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def machine_facts() -> dict:
    import PIL
    import psutil
    import sklearn

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "scikit-learn": sklearn.__version__,
    }
    with contextlib.suppress(Exception):
        import keras
        import tensorflow as tf

        facts.update(tensorflow=tf.__version__, keras=keras.__version__)
    return facts


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """Everything a section needs: options, data folders and scratch space."""

    quick: bool
    repeats: int
    latency_repeats: int
    scratch: Path
    fullres: Path
    data224: Path
    image_size: int
    memory_image_size: int
    memory_folds: int
    e2e_folds: int
    e2e_epochs: int
    train_images: dict
    train_epochs: int
    cache_dir: Path
    architectures: tuple[str, ...] = ("cnn", "mobilenetv2")

    def log(self, name: str) -> Path:
        return self.scratch / f"{name}.log"


def say(message: str) -> None:
    print(f"[{_dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def make_quick_data(scratch: Path) -> tuple[Path, Path]:
    """Generates two tiny Kaggle-layout data sets (large and small images), no test split."""
    from zoidberg.demo import make_demo_dataset

    roots = []
    for name, size, patients in (("quick-fullres", 512, 3), ("quick-small", 96, 10)):
        root = make_demo_dataset(scratch / name, patients_per_class=patients, images_per_patient=(1, 3), image_size=size)
        shutil.rmtree(root / "test", ignore_errors=True)  # Both sides then read the same files.
        roots.append(root)
    return roots[0], roots[1]


# --------------------------------------------------------------------------- data


def section_data(ctx: Context) -> list[Row]:
    """Files to arrays ready for training: reference steps 1+2 vs load_dataset cold and warm."""
    import reference
    from zoidberg.data import load_dataset

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
from zoidberg.data import load_dataset
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


# --------------------------------------------------------------------------- train


class EpochTimer:
    """Keras callback factory: training-phase wall and CPU seconds of every epoch (validation excluded).

    CPU seconds (all threads of this process) barely move with other users' load, unlike
    wall time; they back up the wall-time throughput on this shared machine.
    """

    @staticmethod
    def create():
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []
                self.cpu_seconds: list[float] = []
                self._start = self._last = self._cpu_start = self._cpu_last = 0.0

            def on_epoch_begin(self, epoch, logs=None):
                self._start = self._last = time.perf_counter()
                self._cpu_start = self._cpu_last = time.process_time()

            def on_train_batch_end(self, batch, logs=None):
                self._last = time.perf_counter()
                self._cpu_last = time.process_time()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(self._last - self._start)
                self.cpu_seconds.append(self._cpu_last - self._cpu_start)

        return _Timer()


def layer_stack(model) -> list[tuple]:
    """Describes a model's compute layers (type and shape-deciding settings) in order."""
    import keras

    stack = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config = layer.get_config()
        keys = ("filters", "kernel_size", "strides", "padding", "pool_size", "units", "activation", "use_bias")
        stack.append((type(layer).__name__, *(str(config.get(key)) for key in keys if key in config)))
    return stack


def section_train(ctx: Context) -> list[Row]:
    """Steady-state training throughput: the reference's fit on NumPy vs Zoidberg's loop.

    Each side gets one model, trained one epoch per fit() call, and the sides take turns
    epoch by epoch (order reversed every round), so a burst of load on this shared machine
    hits both. The first epoch traces the step function and is reported apart. The Zoidberg
    side is its training loop's parts as train_model puts them together: build_model from
    the registry, compile_model (as shipped, with its AUC metric), make_batches over the
    full uint8 tensor, fit(shuffle=False); a third contestant compiles like the notes (no
    AUC) to price the metric.
    """
    import keras
    import tensorflow as tf

    import reference
    from zoidberg.config import ModelConfig, TrainConfig
    from zoidberg.data import load_dataset
    from zoidberg.models import build_model, compile_model, count_parameters, estimate_flops
    from zoidberg.training import make_batches

    size = ctx.image_size
    dataset = load_dataset(ctx.data224, image_size=size, cache_dir=ctx.cache_dir)
    order = np.random.default_rng(0).permutation(len(dataset))
    labels = dataset.labels
    image_tensor = tf.constant(dataset.images)  # As train_model and the CV hold it: all images, uint8.
    train_config = TrainConfig(
        epochs=ctx.train_epochs, batch_size=32, learning_rate=1e-3, optimizer="adam",
        early_stopping_patience=0, class_weighting="none", augmentation=False,
    )
    rows = []
    for architecture, config_fields, creator in (
        ("cnn", CNN_CONFIG, reference.create_cnn),
        ("mobilenetv2", MOBILENET_CONFIG, reference.create_mobilenetv2),
    ):
        if architecture not in ctx.architectures:
            continue
        n_train = min(ctx.train_images[architecture], len(dataset) - 16)
        n_validation = min(32, len(dataset) - n_train)
        train_indices = np.sort(order[:n_train])
        validation_indices = np.sort(order[n_train:n_train + n_validation])
        # What the reference's step 2 hands to fit: float32 0..255 with a channel axis.
        x_train = dataset.images[train_indices].astype(np.float32)[..., None]
        y_train = labels[train_indices].astype(np.float32)[:, None]
        x_validation = dataset.images[validation_indices].astype(np.float32)[..., None]
        y_validation = labels[validation_indices].astype(np.float32)[:, None]
        model_config = ModelConfig(**config_fields)
        keras.utils.set_random_seed(1)
        reference_model = creator(size)
        zoidberg_model = compile_model(build_model(model_config, size, 2), train_config, 2)
        contestants = {
            "reference": (
                reference_model,
                dict(x=x_train, y=y_train, validation_data=(x_validation, y_validation)),
            ),
            "zoidberg": (
                zoidberg_model,
                dict(
                    x=make_batches(image_tensor, labels, train_indices, 32, shuffle=True, random_state=1),
                    validation_data=make_batches(image_tensor, labels, validation_indices, 32),
                    shuffle=False,
                ),
            ),
        }
        if architecture == "cnn":
            no_auc = build_model(model_config, size, 2)
            no_auc.compile(
                optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="binary_crossentropy",
                metrics=[keras.metrics.BinaryAccuracy(name="accuracy")], jit_compile=False,
            )
            contestants["zoidberg_no_auc"] = (no_auc, contestants["zoidberg"][1])
        flops = estimate_flops(zoidberg_model)
        parameters = {"reference": reference_model.count_params(), "zoidberg": count_parameters(zoidberg_model)["total"]}
        same_stack = architecture != "cnn" or layer_stack(reference_model) == layer_stack(zoidberg_model)
        rounds = ctx.train_epochs - 1
        say(f"train: {architecture}, {n_train} images, 1 tracing epoch + {rounds} rounds of one epoch per side")

        cpu_seconds: dict[str, list[float]] = {name: [] for name in contestants}

        def one_epoch(name: str) -> float:
            model, fit_arguments = contestants[name]
            timer = EpochTimer.create()
            model.fit(epochs=1, callbacks=[timer], verbose=0, **fit_arguments)
            cpu_seconds[name].append(timer.cpu_seconds[0])
            return timer.seconds[0]

        first_epoch = {name: one_epoch(name) for name in contestants}
        for values in cpu_seconds.values():
            values.clear()
        epoch_seconds: dict[str, list[float]] = {name: [] for name in contestants}
        names = list(contestants)
        for index in range(rounds):
            for name in names if index % 2 == 0 else reversed(names):
                epoch_seconds[name].append(one_epoch(name))
            say(f"train: {architecture} round {index + 1}/{rounds}: " + ", ".join(f"{name} {values[-1]:.1f} s" for name, values in epoch_seconds.items()))
        throughput = {name: [n_train / seconds for seconds in values] for name, values in epoch_seconds.items()}
        medians = {name: median(values) for name, values in throughput.items()}
        paired = [z / r for z, r in zip(throughput["zoidberg"], throughput["reference"])]
        gflops = {name: flops * 3 * value / 1e9 for name, value in medians.items()}
        cpu_ms_per_image = {name: median(values) / n_train * 1000 for name, values in cpu_seconds.items()}
        samples = {
            "epoch_seconds": epoch_seconds, "images_per_s": throughput, "first_epoch_s": first_epoch,
            "epoch_cpu_seconds": cpu_seconds, "cpu_ms_per_image": cpu_ms_per_image,
            "paired_ratios": paired, "forward_flops_per_image": flops, "parameters": parameters,
            "same_layer_stack": same_stack, "n_train": n_train, "load": load_average(),
        }
        label = "CNN" if architecture == "cnn" else "MobileNetV2 (alpha 1.0, no weights)"
        note = (
            f"{n_train} images at {size} px, batch 32; median of {rounds} epochs per side, sides alternating epoch by epoch "
            f"(per-round ratios {min(paired):.2f}–{max(paired):.2f}); first epoch with tracing excluded (reference "
            f"{first_epoch['reference']:.1f} s, Zoidberg {first_epoch['zoidberg']:.1f} s). "
            f"CPU time per image (all threads, robust to load): reference {cpu_ms_per_image['reference']:.1f} ms, "
            f"Zoidberg {cpu_ms_per_image['zoidberg']:.1f} ms. "
            f"Forward {flops / 1e9:.3f} GFLOP/image (models.estimate_flops), x3 for forward+backward. "
            f"Parameters: reference {parameters['reference']:,}, Zoidberg {parameters['zoidberg']:,}."
        )
        if architecture == "cnn":
            auc_cost = 1 - medians["zoidberg"] / medians["zoidberg_no_auc"]
            note += (
                f" build_model gives {'the same' if same_stack else 'a DIFFERENT'} layer stack as the notes' Sequential."
                f" compile_model's AUC metric: {medians['zoidberg_no_auc']:.1f} img/s without it, i.e. it costs "
                f"{auc_cost * 100:.1f}% (within noise when small)."
            )
            samples["auc_cost_fraction"] = auc_cost
        else:
            note += " Zoidberg adds a Rescaling layer (input to [-1, 1]); the notes feed 0..255."
        rows.append(
            Row(
                "train", f"Training throughput, {label}", "img/s", medians["reference"], medians["zoidberg"],
                better="higher", min_ratio=1.0,
                reference_detail=f"{gflops['reference']:.1f} GFLOP/s", zoidberg_detail=f"{gflops['zoidberg']:.1f} GFLOP/s",
                note=note, samples=samples,
            )
        )
        if architecture == "cnn":
            rows.append(
                Row(
                    "train", "Training throughput, CNN, Zoidberg loop compiled without AUC", "img/s",
                    medians["reference"], medians["zoidberg_no_auc"], better="higher",
                    reference_detail=f"{gflops['reference']:.1f} GFLOP/s", zoidberg_detail=f"{gflops['zoidberg_no_auc']:.1f} GFLOP/s",
                    note="make_batches + build_model compiled with Adam 1e-3, binary cross-entropy and accuracy only "
                    "(the notes' compile); same alternation as the row above.",
                    samples={"images_per_s": throughput["zoidberg_no_auc"]},
                )
            )
    return rows


# --------------------------------------------------------------------------- predict


def largest_jpeg(root: Path) -> Path:
    """The JPEG with the most pixels under root."""
    from PIL import Image

    def pixels(path):
        with Image.open(path) as image:
            return image.size[0] * image.size[1]

    return max(sorted(root.rglob("*.jpeg")), key=pixels)


def save_fold_models(store, models_per_run: dict[str, list], image_size: int) -> dict[str, str]:
    """Writes untrained fold models into the run store as a finished CV would; returns run ids."""
    run_ids = {}
    for name, models in models_per_run.items():
        run = store.create_run("cv", {"data": {"image_size": image_size, "label_mode": "binary"}}, name)
        for fold, model in enumerate(models, start=1):
            run.fold_dir(fold)
            model.save(run.model_path(fold))
        run_ids[name] = run.id
    return run_ids


def section_predict(ctx: Context) -> list[Row]:
    """Latency from an upload to a probability, and Grad-CAM, warm, median of many calls."""
    import keras
    import tensorflow as tf
    from PIL import Image

    import reference
    from zoidberg.config import ModelConfig
    from zoidberg.imaging import decode_grayscale, load_image, resize_square
    from zoidberg.models import build_model, last_conv_layer_name
    from zoidberg.predict import load_ensemble
    from zoidberg.runstore import RunStore

    size = ctx.image_size
    keras.utils.set_random_seed(7)
    upload_path = largest_jpeg(ctx.fullres)
    upload = upload_path.read_bytes()
    with Image.open(upload_path) as image:
        upload_pixels = image.size
    gray = load_image(next(iter(sorted(ctx.data224.rglob("*.jpeg")))), size)  # A decoded upload at model size.
    x = gray.astype(np.float32)[..., None]  # The reference's input: 0..255, as its training data.

    store = RunStore(ctx.scratch / "predict-runs")
    zoidberg_models = {
        "cnn-1": [build_model(ModelConfig(**CNN_CONFIG), size, 2)],
        "cnn-5": [build_model(ModelConfig(**CNN_CONFIG), size, 2) for _ in range(5)],
    }
    reference_models = {
        "cnn-1": [reference.create_cnn(size)],
        "cnn-5": [reference.create_cnn(size) for _ in range(5)],
    }
    if "mobilenetv2" in ctx.architectures:
        zoidberg_models["mobilenetv2-1"] = [build_model(ModelConfig(**MOBILENET_CONFIG), size, 2)]
        reference_models["mobilenetv2-1"] = [reference.create_mobilenetv2(size)]
    run_ids = save_fold_models(store, zoidberg_models, size)
    ensembles = {name: load_ensemble(run_id, runs_dir=store.root) for name, run_id in run_ids.items()}
    labels = {"cnn-1": "1 CNN", "cnn-5": "5-fold CNN ensemble", "mobilenetv2-1": "1 MobileNetV2"}
    array_targets = {"cnn-1": 10.0, "cnn-5": 40.0, "mobilenetv2-1": None}
    bytes_targets = {"cnn-1": None, "cnn-5": 40.0, "mobilenetv2-1": None}
    rows = []
    for name, ensemble in ensembles.items():
        models = reference_models[name]
        repeats = ctx.latency_repeats if name != "mobilenetv2-1" else max(5, ctx.latency_repeats // 2)
        say(f"predict: {labels[name]}, {repeats} calls per variant")
        # The bound: the models' forward pass alone, traced, on a ready tensor.
        forward = tf.function(
            lambda batch, models=ensemble.models: [model(batch, training=False) for model in models],
            input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32)],
        )
        ready = tf.constant(gray.astype(np.float32)[None, :, :, None] / 255.0)
        times = interleaved(
            {
                "reference": lambda: float(np.mean([reference.predict_array(model, x) for model in models])),
                "zoidberg": lambda: ensemble.predict_gray(gray),
                "forward_only": lambda: [output.numpy() for output in forward(ready)],
            },
            repeats,
        )
        forward_ms = median(times["forward_only"]) * 1000
        rows.append(
            Row(
                "predict", f"Predict, {labels[name]}: decoded {size}-px image → probability", "ms",
                median(times["reference"]) * 1000, median(times["zoidberg"]) * 1000, max_zoidberg=array_targets[name],
                note=f"Warm models; median of {repeats} alternating calls. Reference: model.predict per model; "
                "Zoidberg: Ensemble.predict_gray (one traced tf.function for all folds). Bound: the traced forward "
                f"pass alone takes {forward_ms:.1f} ms, so Zoidberg's own overhead is "
                f"{median(times['zoidberg']) * 1000 - forward_ms:.1f} ms.",
                samples={key: [value * 1000 for value in values] for key, values in times.items()},
            )
        )

        def dashboard_path():
            # What the Predict page does: full decode (kept for display), resize, predict.
            full = decode_grayscale(upload, name="upload.jpeg")
            return ensemble.predict_gray(resize_square(full, ensemble.image_size))

        times = interleaved(
            {
                "reference": lambda: reference.predict_bytes(models, upload, size),
                "zoidberg": lambda: ensemble.predict_file(upload, name="upload.jpeg"),
                "dashboard": dashboard_path,
                "decode_only": lambda: resize_square(decode_grayscale(upload, name="upload.jpeg", draft_size=size), size),
            },
            repeats,
        )
        rows.append(
            Row(
                "predict", f"Predict, {labels[name]}: full-res JPEG bytes → probability", "ms",
                median(times["reference"]) * 1000, median(times["zoidberg"]) * 1000, max_zoidberg=bytes_targets[name],
                note=(
                    f"{upload_pixels[0]}x{upload_pixels[1]} px, {len(upload) / 1024:,.0f} KB JPEG. Reference: tf.image.decode_image + "
                    "resize (as its loader) + model.predict; Zoidberg: Ensemble.predict_file (draft decode). "
                    f"Zoidberg's draft decode + resize alone: {median(times['decode_only']) * 1000:.1f} ms. "
                    f"The Predict page's path (full decode kept for display): {median(times['dashboard']) * 1000:.1f} ms."
                ),
                samples={key: [value * 1000 for value in values] for key, values in times.items()},
            )
        )

    say("predict: Grad-CAM")
    gradcam_repeats = max(5, ctx.latency_repeats // 2)
    for name in ensembles:
        ensemble = ensembles[name]
        models = reference_models[name]
        functions = {"zoidberg": lambda: ensemble.gradcam(gray)}
        if name != "mobilenetv2-1":
            targets = [(model, last_conv_layer_name(model)) for model in models]
            functions["reference"] = lambda: [reference.gradcam_heatmap(x, model, layer) for model, layer in targets]
        first_call, _ = timed(ensemble.gradcam, gray)
        times = interleaved(functions, gradcam_repeats)
        rows.append(
            Row(
                "predict", f"Grad-CAM, {labels[name]}, one image", "ms",
                median(times["reference"]) * 1000 if "reference" in times else None, median(times["zoidberg"]) * 1000,
                max_zoidberg=150.0,
                note=(
                    f"Median of {gradcam_repeats} warm calls; first call (tracing) {first_call * 1000:,.0f} ms. "
                    + (
                        "Reference: the Keras example's make_gradcam_heatmap (eager GradientTape, sub-model per call)."
                        if "reference" in times
                        else "No reference: the notes' nested Sequential MobileNetV2 hides its last convolution from the Keras example."
                    )
                ),
                samples={key: [value * 1000 for value in values] for key, values in times.items()} | {"first_call_ms": first_call * 1000},
            )
        )
    return rows


# --------------------------------------------------------------------------- memory


def run_cv_pair(ctx: Context, tag: str, folds: int, epochs: int, size: int) -> dict[str, dict]:
    """Runs `python -m zoidberg cv` (cold cache) and the reference CV, each in its own process.

    One after the other, Zoidberg first; in quick mode both at once (peak RSS is per
    process, and quick timings mean nothing anyway).

    Returns:
        run_measured's result per side ("zoidberg", "reference").
    """
    cache_dir = ctx.scratch / f"{tag}-cache"  # Cold: a first run decodes, as a new user's does.
    commands = {
        "zoidberg": (
            [sys.executable, "-m", "zoidberg", "--runs-dir", ctx.scratch / f"{tag}-runs", "cv", "--data", ctx.data224,
             "--folds", folds, "--epochs", epochs, "--image-size", size, *CV_FLAGS],
            child_environment(ZOIDBERG_CACHE_DIR=str(cache_dir)),
        ),
        "reference": (
            [sys.executable, BENCH_DIR / "reference.py", "cv", "--data", ctx.data224, "--scratch", ctx.scratch,
             "--folds", folds, "--epochs", epochs, "--image-size", size, "--verbose", "2"],
            child_environment(),
        ),
    }
    results: dict[str, dict] = {}

    def run(side: str) -> None:
        command, environment = commands[side]
        results[side] = run_measured(command, ctx.log(f"{tag}-{side}"), environment)
        check_child(results[side], f"{side} cv ({tag})")
        say(f"{tag}: {side} {results[side]['wall_s']:,.0f} s, peak RSS {results[side]['peak_rss_mb']:,.0f} MB")

    say(f"{tag}: {folds}-fold CV x {epochs} epoch(s), CNN at {size} px, each side in its own process")
    run_steps([lambda: run("zoidberg"), lambda: run("reference")], concurrent=ctx.quick)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return results


def section_memory(ctx: Context) -> list[Row]:
    """Peak RSS of a whole CV (1 epoch) at 224 px, each side in its own process."""
    size, folds = ctx.memory_image_size, ctx.memory_folds
    results = run_cv_pair(ctx, "memory", folds, 1, size)
    note = (
        f"{folds}-fold CV, 1 epoch, CNN at {size} px on {ctx.data224.name}; ru_maxrss of each process "
        "(wait4() in benchmarks/peak_rss.py). "
        f"Wall time: reference {results['reference']['wall_s']:,.0f} s, Zoidberg {results['zoidberg']['wall_s']:,.0f} s (cold cache)."
    )
    if folds != 5:
        note += f" Fewer folds than the 5 asked for ({folds}), for both sides."
    return [
        Row(
            "memory", f"Peak RSS, {folds}-fold CV x 1 epoch at {size} px", "MB",
            results["reference"]["peak_rss_mb"], results["zoidberg"]["peak_rss_mb"], min_ratio=2.0,
            target_text="Zoidberg ≤ ½ (≥ 2×)", note=note, samples={**results, "load": load_average()},
        )
    ]


# --------------------------------------------------------------------------- startup


def section_startup(ctx: Context) -> list[Row]:
    """From Start (jobs.start_run) to the first progress event, dataset cached."""
    from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from zoidberg.cv import config_payload, package_versions
    from zoidberg.data import load_dataset

    size = ctx.image_size
    load_dataset(ctx.data224, image_size=size, cache_dir=ctx.cache_dir)  # The cache the worker will hit.
    runs_dir = ctx.scratch / "startup-runs"
    config = RunConfig(
        data=DataConfig(str(ctx.data224), "binary", size),
        model=ModelConfig(**CNN_CONFIG),
        train=TrainConfig(epochs=3, early_stopping_patience=0, class_weighting="none"),
        n_splits=5 if not ctx.quick else 2,
    )
    payload = config_payload(config, versions=package_versions())
    previous_cache = os.environ.get("ZOIDBERG_CACHE_DIR")
    os.environ["ZOIDBERG_CACHE_DIR"] = str(ctx.cache_dir)  # The worker inherits the environment.
    phases = {"run_started": [], "fold_started": [], "progress": [], "worker_cpu_s": []}
    reference_times = []
    try:
        for repeat in range(ctx.repeats):
            run_steps(
                [lambda: phases_of_worker(payload, runs_dir, phases), lambda: reference_times.append(reference_first_batch(ctx, size))],
                concurrent=ctx.quick, reverse=repeat % 2 == 1,
            )
            say(f"startup: repeat {repeat + 1}: Zoidberg {phases['progress'][-1]:.2f} s, reference {reference_times[-1]:.2f} s")
    finally:
        if previous_cache is None:
            os.environ.pop("ZOIDBERG_CACHE_DIR", None)
        else:
            os.environ["ZOIDBERG_CACHE_DIR"] = previous_cache
    imports = import_profile() if not ctx.quick else {}
    zoidberg_s = median(phases["progress"])
    to_started = median(phases["run_started"])
    to_fold = median(phases["fold_started"])
    note = (
        f"Median of {ctx.repeats}. Zoidberg phases: process start + imports to run_started {to_started:.2f} s, "
        f"dataset from cache + folds to fold_started +{to_fold - to_started:.2f} s, model build + compile + tracing + "
        f"first batch +{zoidberg_s - to_fold:.2f} s; worker CPU {median(phases['worker_cpu_s']):.2f} s by then. "
    )
    if imports:
        note += (
            f"`python -X importtime` of the worker's imports: {imports['total']:.2f} s, of which tensorflow "
            f"{imports.get('tensorflow', 0):.2f} s and keras {imports.get('keras', 0):.2f} s (cumulative). "
        )
    note += "Reference: `reference.py cv` launched to its first batch (it has no cache: steps 1+2 decode every file)."
    return [
        Row(
            "startup", "Start-up: Start → first progress event (dataset cached)", "s",
            median(reference_times), zoidberg_s, max_zoidberg=5.0, note=note,
            samples={"zoidberg": phases, "reference": reference_times, "imports": imports, "load": load_average()},
        )
    ]


def phases_of_worker(payload: dict, runs_dir: Path, phases: dict) -> None:
    """Starts one run, waits for its first progress event, records phase times, stops it."""
    import psutil

    from zoidberg.jobs import start_run, stop_run
    from zoidberg.runstore import RunStore

    start = time.time()
    run_id = start_run("cv", payload, name="benchmark start-up", runs_dir=runs_dir)
    run = RunStore(runs_dir).get(run_id)
    seen: dict[str, float] = {}
    offset = 0
    cpu = None
    deadline = time.time() + 600
    while "progress" not in seen:
        events, offset = run.read_events(offset)
        for event in events:
            seen.setdefault(event["type"], event["time"])
            if event["type"] == "progress" and cpu is None:
                with contextlib.suppress(Exception):
                    times = psutil.Process(int(run.status()["pid"])).cpu_times()
                    cpu = times.user + times.system
            if event["type"] == "failed":
                raise RuntimeError(f"start-up run failed: {event.get('error')}")
        if time.time() > deadline:
            raise RuntimeError("no progress event within 600 s")
        time.sleep(0.01)
    for name in ("run_started", "fold_started", "progress"):
        phases[name].append(seen.get(name, float("nan")) - start)
    phases["worker_cpu_s"].append(cpu)
    pid = run.status().get("pid")
    stop_run(run_id, runs_dir=runs_dir)
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(int(pid))
        try:
            process.wait(timeout=120)
        except psutil.TimeoutExpired:
            process.kill()  # Our own worker, by its pid.
            process.wait(timeout=30)


def reference_first_batch(ctx: Context, size: int) -> float:
    """Seconds from launching the reference CV script to the end of its first training batch."""
    command = [sys.executable, str(BENCH_DIR / "reference.py"), "cv", "--data", str(ctx.data224), "--scratch", str(ctx.scratch),
               "--folds", "5" if not ctx.quick else "2", "--epochs", "1", "--image-size", str(size), "--verbose", "0",
               "--first-batch-marker"]
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO_ROOT, env=child_environment())
    marker = None
    try:
        for line in process.stdout:
            if line.startswith("FIRST_BATCH "):
                marker = float(line.split()[1])
                break
    finally:
        process.kill()  # Our own child, by its handle.
        process.wait()
        process.stdout.close()
    if marker is None:
        raise RuntimeError("the reference never finished a training batch")
    return marker - start


IMPORT_CHILD = "import zoidberg.cli, zoidberg.jobs, zoidberg.cv; from zoidberg.config import ModelConfig; ModelConfig()"


def import_profile() -> dict:
    """Cumulative import seconds of the worker's heavy modules, from `python -X importtime`."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", IMPORT_CHILD], capture_output=True, text=True, cwd=REPO_ROOT, env=child_environment()
    )
    cumulative: dict[str, float] = {}
    total = 0.0
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)", line)
        if not match:
            continue
        seconds, depth, module = int(match.group(1)) / 1e6, len(match.group(2)), match.group(3)
        if depth == 1:
            total += seconds
        if module in ("tensorflow", "keras", "numpy", "PIL", "sklearn"):
            cumulative[module] = max(cumulative.get(module, 0.0), seconds)
    return {**cumulative, "total": total}


# --------------------------------------------------------------------------- end to end


def section_e2e(ctx: Context) -> list[Row]:
    """Wall time of `python -m zoidberg cv` vs the reference loop, same folds/epochs/size."""
    folds, epochs, size = ctx.e2e_folds, ctx.e2e_epochs, ctx.image_size
    results = run_cv_pair(ctx, "e2e", folds, epochs, size)
    reference_result, zoidberg = results["reference"], results["zoidberg"]
    return [
        Row(
            "e2e", f"End to end: {folds}-fold x {epochs} epochs, CNN at {size} px", "s",
            reference_result["wall_s"], zoidberg["wall_s"], min_ratio=1.0,
            target_text="≥ 1× (none set)",
            note=(
                f"One run each (process launch to exit). `python -m zoidberg cv {' '.join(CV_FLAGS)}` with a cold cache "
                "(also writes models, out-of-fold predictions, metrics) vs `benchmarks/reference.py cv`. "
                f"CPU time: reference {reference_result['cpu_s']:,.0f} s, Zoidberg {zoidberg['cpu_s']:,.0f} s; "
                f"peak RSS: reference {reference_result['peak_rss_mb']:,.0f} MB, Zoidberg {zoidberg['peak_rss_mb']:,.0f} MB."
            ),
            samples={"reference": reference_result, "zoidberg": zoidberg, "load": load_average()},
        )
    ]


SECTION_FUNCTIONS = {
    "data": section_data,
    "train": section_train,
    "predict": section_predict,
    "memory": section_memory,
    "startup": section_startup,
    "e2e": section_e2e,
}


# --------------------------------------------------------------------------- output


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def ordered_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: SECTIONS.index(row["section"]))


def render_doc_block(payload: dict) -> str:
    machine = payload["machine"]
    lines = [
        DOC_START,
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB RAM, {machine['os']}; "
        f"Python {machine['python']}, TensorFlow {machine.get('tensorflow', '?')}, Keras {machine.get('keras', '?')}, "
        f"NumPy {machine['numpy']}, Pillow {machine['pillow']}, scikit-learn {machine['scikit-learn']}.",
        "",
        markdown_table(payload["rows"]),
        "",
        "Ratio: Zoidberg's advantage (reference time ÷ Zoidberg time, Zoidberg img/s ÷ reference img/s, "
        "reference MB ÷ Zoidberg MB). Raw samples: `benchmarks/results/latest.json`.",
        "",
        "| section | finished | took | load average at start → end (1/5/15 min, 2 cores) | command |",
        "|---|---|---:|---|---|",
    ]
    for name in SECTIONS:
        info = payload["sections"].get(name)
        if not info or "error" in info:
            continue
        load = f"{' / '.join(map(str, info['load_start']))} → {' / '.join(map(str, info['load_end']))}"
        lines.append(f"| {name} | {info['finished']} | {info['seconds']:,.0f} s | {load} | `{info['command']}` |")
    missing = [name for name in SECTIONS if name not in payload["sections"] or "error" in payload["sections"][name]]
    if missing:
        lines += ["", f"Not measured in these results: {', '.join(f'`{name}`' for name in missing)}."]
    lines += ["", "Notes per row:", "", notes_list(payload["rows"]), "", DOC_END]
    return "\n".join(lines)


def update_doc(payload: dict) -> bool:
    """Replaces the results block of BENCHMARKS.md; returns whether it did."""
    if not DOC_PATH.exists():
        return False
    text = DOC_PATH.read_text(encoding="utf-8")
    if DOC_START not in text or DOC_END not in text:
        return False
    before, rest = text.split(DOC_START, 1)
    _, after = rest.split(DOC_END, 1)
    DOC_PATH.write_text(before + render_doc_block(payload) + after, encoding="utf-8")
    return True


# --------------------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny generated data and few repeats: checks that everything runs (numbers mean nothing).")
    parser.add_argument("--sections", default=None, help=f"Comma-separated sections to run [default: all: {','.join(SECTIONS)}; quick: all but e2e].")
    parser.add_argument("--skip", default="", help="Comma-separated sections to leave out.")
    parser.add_argument("--repeats", type=int, default=None, help="Repeats of the data, training and start-up measures [default: 3; quick: 1].")
    parser.add_argument("--latency-repeats", type=int, default=None, help="Calls per prediction latency [default: 60; quick: 4].")
    parser.add_argument("--train-epochs", type=int, default=None, help="Epochs per side in the throughput measure, the first (tracing) excluded [default: 7; quick: 2].")
    parser.add_argument("--train-images", type=int, default=None, help="CNN training images per epoch [default: 320; quick: 32]; MobileNetV2 uses half.")
    parser.add_argument("--memory-folds", type=int, default=None, help="Folds of the peak-memory CV [default: 5; quick: 2].")
    parser.add_argument("--e2e-folds", type=int, default=None, help="Folds of the end-to-end CV [default: 5; quick: 2].")
    parser.add_argument("--e2e-epochs", type=int, default=None, help="Epochs of the end-to-end CV [default: 3; quick: 1].")
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA, help=f"Folder with chest_xray_fullres/ and chest_xray_224/ [default: {SHARED_DATA}].")
    parser.add_argument("--out", type=Path, default=None, help="JSON output [default: benchmarks/results/latest.json; quick: benchmarks/results/quick.json].")
    parser.add_argument("--merge", action="store_true", help="Keep the other sections' rows of an existing --out file (re-measure some sections only).")
    parser.add_argument("--no-doc", action="store_true", help="Never rewrite BENCHMARKS.md.")
    parser.add_argument("--keep-scratch", action="store_true", help="Keep the scratch folder (logs, runs, caches).")
    args = parser.parse_args(argv)
    default_sections = [name for name in SECTIONS if not (args.quick and name == "e2e")]
    sections = [name.strip() for name in args.sections.split(",") if name.strip()] if args.sections else default_sections
    skipped = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = [name for name in [*sections, *skipped] if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [name for name in SECTIONS if name in sections and name not in skipped]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    out = args.out or RESULTS_DIR / ("quick.json" if quick else "latest.json")
    scratch = Path(tempfile.mkdtemp(prefix="zoidberg-bench-"))
    if quick:
        fullres, data224 = make_quick_data(scratch)
    else:
        fullres, data224 = args.data_root / "chest_xray_fullres", args.data_root / "chest_xray_224"
        missing = [str(path) for path in (fullres, data224) if not path.is_dir()]
        if missing:
            print(f"error: data folder(s) missing: {', '.join(missing)} (use --quick for generated data, or --data-root)", file=sys.stderr)
            return 2
    train_images = args.train_images or (32 if quick else 320)
    ctx = Context(
        quick=quick,
        repeats=args.repeats or (1 if quick else 3),
        latency_repeats=args.latency_repeats or (4 if quick else 60),
        scratch=scratch,
        fullres=fullres.resolve(),
        data224=data224.resolve(),
        image_size=64 if quick else 128,
        memory_image_size=64 if quick else 224,
        memory_folds=args.memory_folds or (2 if quick else 5),
        e2e_folds=args.e2e_folds or (2 if quick else 5),
        e2e_epochs=args.e2e_epochs or (1 if quick else 3),
        train_images={"cnn": train_images, "mobilenetv2": max(16, train_images // 2)},
        train_epochs=max(2, args.train_epochs or (2 if quick else 7)),
        cache_dir=scratch / "cache",
        architectures=("cnn",) if quick else ("cnn", "mobilenetv2"),
    )
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    payload = {"generated": "", "command": command, "quick": quick, "machine": machine_facts(), "sections": {}, "rows": []}
    if args.merge and out.exists():
        previous = json.loads(out.read_text(encoding="utf-8"))
        if previous.get("quick") == quick:
            payload["sections"] = {name: info for name, info in previous.get("sections", {}).items() if name not in args.sections}
            payload["rows"] = [row for row in previous.get("rows", []) if row["section"] not in args.sections]
    status = 0
    try:
        for name in args.sections:
            started = time.time()
            say(f"section {name} ...")
            load_start = load_average()
            try:
                rows = SECTION_FUNCTIONS[name](ctx)
            except Exception as error:  # One broken section must not lose the others' numbers.
                import traceback

                traceback.print_exc()
                status = 1
                payload["sections"][name] = {"error": f"{type(error).__name__}: {error}", "load_start": load_start, "load_end": load_average()}
                continue
            payload["sections"][name] = {
                "finished": _dt.datetime.now().isoformat(timespec="seconds"),
                "seconds": round(time.time() - started, 1),
                "load_start": load_start,
                "load_end": load_average(),
                "command": command,
            }
            payload["rows"] = ordered_rows([row for row in payload["rows"] if row["section"] != name] + [row.to_json() for row in rows])
            payload["generated"] = _dt.datetime.now().astimezone().isoformat(timespec="minutes")
            write_json(out, payload)
            say(f"section {name} done in {time.time() - started:,.0f} s")
    finally:
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            say(f"scratch kept in {scratch}")
    payload["generated"] = _dt.datetime.now().astimezone().isoformat(timespec="minutes")
    write_json(out, payload)
    print(markdown_table(payload["rows"]))
    print()
    print(notes_list(payload["rows"]))
    # A partial run still rewrites the block: it names the sections that have no rows.
    if not quick and not args.no_doc and update_doc(payload):
        say(f"updated {DOC_PATH.relative_to(REPO_ROOT)}")
    say(f"wrote {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
