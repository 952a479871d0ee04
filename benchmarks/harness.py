"""The measuring harness of the benchmarks: result rows, timing helpers, child processes, the context, output."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SECTIONS = ("data", "train", "predict", "memory", "startup", "e2e", "parallel", "ray")
# Sections that train whole cross-validations: --quick leaves them out unless asked.
LONG_SECTIONS = ("e2e", "parallel", "ray")
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
    from zoidberg.data.demo import make_demo_dataset

    roots = []
    for name, size, patients in (("quick-fullres", 512, 3), ("quick-small", 96, 10)):
        root = make_demo_dataset(scratch / name, patients_per_class=patients, images_per_patient=(1, 3), image_size=size)
        shutil.rmtree(root / "test", ignore_errors=True)  # Both sides then read the same files.
        roots.append(root)
    return roots[0], roots[1]


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


def replace_doc_block(markdown: str, *, start: str, end: str, heading: str) -> None:
    """Replaces BENCHMARKS.md's block between the `start` and `end` markers (appended under `heading` when absent)."""
    text = DOC_PATH.read_text(encoding="utf-8")
    block = f"{start}\n{markdown}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text += f"\n\n## {heading}\n\n{block}\n"
    DOC_PATH.write_text(text, encoding="utf-8")
