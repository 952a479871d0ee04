"""Start-up section: from Start to the first progress event, with the dataset cached, and where the time goes."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from harness import (
    BENCH_DIR,
    CNN_CONFIG,
    REPO_ROOT,
    Context,
    Row,
    child_environment,
    load_average,
    median,
    run_steps,
    say,
)


def section_startup(ctx: Context) -> list[Row]:
    """From Start (jobs.start_run) to the first progress event, dataset cached."""
    from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from zoidberg.data.dataset import load_dataset
    from zoidberg.training.run_setup import config_payload
    from zoidberg.versions import package_versions

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
    phases = {"run_started": [], "fold_started": [], "progress": [], "worker_cpu_s": []}
    warm_phases = {"run_started": [], "fold_started": [], "progress": [], "worker_cpu_s": []}
    reference_times = []
    # The worker inherits the environment, and with it the cache the run should hit.
    with environment_variable("ZOIDBERG_CACHE_DIR", str(ctx.cache_dir)):
        for repeat in range(ctx.repeats):
            run_steps(
                [lambda: phases_of_worker(payload, runs_dir, phases), lambda: reference_times.append(reference_first_batch(ctx, size))],
                concurrent=ctx.quick, reverse=repeat % 2 == 1,
            )
            say(f"startup: repeat {repeat + 1}: Zoidberg {phases['progress'][-1]:.2f} s, reference {reference_times[-1]:.2f} s")
        for repeat in range(ctx.repeats):
            phases_of_worker(payload, runs_dir, warm_phases, warm=True)
            say(f"startup: repeat {repeat + 1}: Zoidberg with a warm worker {warm_phases['progress'][-1]:.2f} s")
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
    warm_s = median(warm_phases["progress"])
    warm_note = (
        f"Median of {ctx.repeats}. The Train page keeps one warm worker (a process that has imported TensorFlow and the "
        "training modules, started when the form is shown); Start hands it the run, and with the local engine its first "
        f"fold trains in that process. Phases: to run_started {median(warm_phases['run_started']):.2f} s, to fold_started "
        f"{median(warm_phases['fold_started']):.2f} s, to the first progress event {warm_s:.2f} s. The worker is started "
        "and waited for (ready) before the clock starts, as the page does while the user fills the form."
    )
    return [
        Row(
            "startup", "Start-up: Start → first progress event (dataset cached)", "s",
            median(reference_times), zoidberg_s, max_zoidberg=5.0, note=note,
            samples={"zoidberg": phases, "reference": reference_times, "imports": imports, "load": load_average()},
        ),
        Row(
            "startup", "Start-up with the Train page's warm worker: Start → first progress event", "s",
            median(reference_times), warm_s, max_zoidberg=5.0, note=warm_note,
            samples={"zoidberg": warm_phases, "load": load_average()},
        ),
    ]


@contextlib.contextmanager
def environment_variable(name: str, value: str):
    """Sets an environment variable for the block (child processes inherit it), then puts the old value back."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def phases_of_worker(payload: dict, runs_dir: Path, phases: dict, warm: bool = False) -> None:
    """Starts one run, waits for its first progress event, records phase times, stops it.

    With `warm`, a warm worker is started and waited for first, as the Train page does.
    """
    import psutil

    from zoidberg.launch.jobs import start_run, stop_run
    from zoidberg.runs.store import RunStore

    if warm:
        from zoidberg.launch.warm import ensure_warm_worker, live_warm_workers

        store = RunStore(runs_dir)
        with environment_variable("ZOIDBERG_WARM_WORKER", "1"):
            ensure_warm_worker(store)
        deadline = time.time() + 120
        while not any(facts["ready"] for facts in live_warm_workers(store)) and time.time() < deadline:
            time.sleep(0.05)
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


IMPORT_CHILD = "import zoidberg.cli, zoidberg.launch.jobs, zoidberg.training.cv; from zoidberg.config import ModelConfig; ModelConfig()"


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
