#!/usr/bin/env python
"""The HTTP prediction service under load, on localhost only, bounded in count and time: latency, throughput, a soak, Ray Serve.

    python benchmarks/service.py --run RUN_ID --runs-dir RUNS [--image FILM.jpeg] [--soak-s 300] [--write-doc]
    python benchmarks/service.py --quick                          # a tiny run on generated data: checks that it runs

Each step starts `python -m zoidberg serve` (or `serve --ray --replicas 2`) as its own process,
waits for /healthz, measures, stops it, and appends one JSON line to
benchmarks/results/service.jsonl (its figures, the load average, the card); a step with a
line for the same run is skipped when the script runs again. Steps:
- latency: one client, --requests one after another (p50, p99 in ms; 10 warm-up requests first);
- throughput: --clients clients at once for --seconds (images/s; batching shares forward passes);
- soak: --rate requests/s for --soak-s seconds (errors, the server's memory each 10 s: first minute against last);
- ray-latency, ray-throughput: the same through Ray Serve with 2 replicas.
--write-doc rewrites BENCHMARKS.md's "service" block from the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
RESULTS = BENCH_DIR / "results" / "service.jsonl"
BEGIN, END = "<!-- service:begin -->", "<!-- service:end -->"
STEPS = ("latency", "throughput", "soak", "ray-latency", "ray-throughput")


def load_average() -> float:
    """The 1-minute load (harness.load_average gives all three)."""
    from benchmarks.harness import load_average as load_averages

    return (load_averages() or [float("nan")])[0]


def free_port() -> int:
    """A localhost port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m zoidberg serve` in its own process group, stopped whatever happens."""

    def __init__(self, run_id: str, runs_dir: str, ray: bool, log: Path):
        self.port = free_port()
        command = [sys.executable, "-m", "zoidberg", "--runs-dir", runs_dir, "serve", "--run", run_id, "--port", str(self.port)]
        if ray:
            command += ["--ray", "--replicas", "2"]
        self.log = log
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()[-1500:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("serve did not answer /healthz")

    def memory_mb(self) -> float:
        """The summed RSS of the server's process tree (Ray's replicas included)."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return sum(process.memory_info().rss for process in [root, *root.children(recursive=True)]) / 2**20
        except psutil.Error:
            return float("nan")

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def measure_latency(url: str, body: bytes, requests: int) -> dict:
    import httpx

    with httpx.Client(base_url=url, headers={"Content-Type": "image/jpeg"}, timeout=60) as client:
        for _ in range(10):
            client.post("/v1/predict", content=body)
        times, errors = [], 0
        for _ in range(requests):
            start = time.perf_counter()
            answer = client.post("/v1/predict", content=body)
            times.append(1000 * (time.perf_counter() - start))
            errors += answer.status_code != 200
    return {"requests": requests, "p50_ms": round(percentile(times, 50), 1), "p99_ms": round(percentile(times, 99), 1), "errors": errors}


async def _clients(url: str, body: bytes, clients: int, seconds: float) -> dict:
    import httpx

    done, errors, latencies = 0, 0, []
    stop_at = time.perf_counter() + seconds

    async def one(http):
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            answer = await http.post("/v1/predict", content=body)
            latencies.append(1000 * (time.perf_counter() - start))
            done += answer.status_code == 200
            errors += answer.status_code != 200

    async with httpx.AsyncClient(base_url=url, headers={"Content-Type": "image/jpeg"}, timeout=60,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        for _ in range(clients):  # Warm-up.
            await http.post("/v1/predict", content=body)
        started = time.perf_counter()
        await asyncio.gather(*(one(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"clients": clients, "seconds": round(elapsed, 1), "images": done, "errors": errors, "images_per_s": round(done / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50), 1), "p99_ms": round(percentile(latencies, 99), 1)}


async def _soak(url: str, body: bytes, rate: float, seconds: float, server: Server) -> dict:
    import httpx

    errors, sent, latencies, memory = 0, 0, [], []
    pending = set()

    async def one(http):
        nonlocal errors
        start = time.perf_counter()
        try:
            answer = await http.post("/v1/predict", content=body)
            errors += answer.status_code != 200
        except httpx.HTTPError:
            errors += 1
        latencies.append(1000 * (time.perf_counter() - start))

    async with httpx.AsyncClient(base_url=url, headers={"Content-Type": "image/jpeg"}, timeout=60) as http:
        started = time.perf_counter()
        next_memory = started
        while (now := time.perf_counter()) - started < seconds:
            if now >= next_memory:
                memory.append((round(now - started), round(server.memory_mb())))
                next_memory += 10
            task = asyncio.ensure_future(one(http))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
        await asyncio.gather(*pending)
    first = [mb for at, mb in memory if at <= 60]
    last = [mb for at, mb in memory if at >= seconds - 60]
    return {"rate": rate, "seconds": seconds, "requests": sent, "errors": errors, "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1), "memory_first_minute_mb": max(first), "memory_last_minute_mb": max(last),
            "memory_mb": memory}


def done_steps(run_id: str) -> set[str]:
    if not RESULTS.exists():
        return set()
    return {line["step"] for line in map(json.loads, RESULTS.read_text().splitlines()) if line.get("run_id") == run_id}


def write_doc() -> None:
    """Rewrites BENCHMARKS.md's service block from service.jsonl (the latest line per step)."""
    lines = {}
    for line in map(json.loads, RESULTS.read_text().splitlines()):
        if not line.get("quick"):
            lines[line["step"]] = line
    rows = []
    for step in STEPS:
        item = lines.get(step)
        if not item:
            rows.append(f"| {step} | not measured | | |")
            continue
        if step.endswith("latency"):
            figure = f"p50 **{item['p50_ms']} ms**, p99 {item['p99_ms']} ms ({item['requests']} requests, {item['errors']} errors)"
            goal = "p50 ≤ 60 ms" if step == "latency" else "—"
        elif step.endswith("throughput"):
            figure = (f"**{item['images_per_s']} images/s** with {item['clients']} clients ({item['images']} in {item['seconds']} s, "
                      f"{item['errors']} errors; p50 {item['p50_ms']} ms, p99 {item['p99_ms']} ms)")
            goal = "≥ 40 images/s" if step == "throughput" else "—"
        else:
            figure = (f"{item['requests']} requests at {item['rate']:.0f}/s over {item['seconds']:.0f} s: **{item['errors']} errors**; "
                      f"server memory {item['memory_first_minute_mb']:,} MB (first minute) → {item['memory_last_minute_mb']:,} MB (last); "
                      f"p50 {item['p50_ms']} ms, p99 {item['p99_ms']} ms")
            goal = "0 errors, flat memory"
        rows.append(f"| {step} | {figure} | {goal} | {item['when']}, load {item['load_before']} → {item['load_after']} |")
    first = next(iter(lines.values()), {})
    block = "\n".join([
        BEGIN,
        f"Run `{first.get('run_id', '?')}` ({first.get('card', '')}), one 224-px JPEG of the site sample, `python -m zoidberg serve` "
        f"on 127.0.0.1 with its defaults (batches of up to 16, 4 ms gathering), the clients in another process; {first.get('cpu', '')}.",
        "",
        "| step | measured | goal | when, 1-minute load |",
        "|---|---|---|---|",
        *rows,
        END,
    ])
    path = REPO_ROOT / "BENCHMARKS.md"
    text = path.read_text()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text += "\n## The HTTP prediction service\n\n`python benchmarks/service.py --run RUN_ID --runs-dir RUNS --image FILM --write-doc` (resumable: one line per step in `benchmarks/results/service.jsonl`).\n\n" + block + "\n"
    path.write_text(text)


def quick_run(work: Path) -> tuple[str, str, Path]:
    """A tiny run on generated data, for --quick."""
    from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from zoidberg.data.demo import make_demo_dataset
    from zoidberg.runs.store import RunStore
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    data = work / "demo"
    make_demo_dataset(data, patients_per_class=6, image_size=48)
    config = RunConfig(data=DataConfig(data_dir=str(data), image_size=32), model=ModelConfig(architecture="cnn", conv_blocks=1, base_filters=4, dense_units=8),
                       train=TrainConfig(epochs=1, batch_size=8), n_splits=2, engine="inprocess", tensorboard=False)
    store = RunStore(work / "runs")
    run = store.create_run("cv", config_payload(config))
    run_cross_validation(run)
    return run.id, str(store.root), next((data / "test").rglob("*.jpeg"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None)
    parser.add_argument("--runs-dir", default=os.environ.get("ZOIDBERG_RUNS_DIR", "runs"))
    parser.add_argument("--image", default=None, help="A 224-px JPEG [default: the first of ../shared/data/chest_xray_site_sample].")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--soak-s", type=float, default=300)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--write-doc", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    if quick:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="zoidberg-service-"))
        args.run, args.runs_dir, image = quick_run(work)
        args.requests, args.seconds, args.soak_s, args.rate = 20, 3, 6, 5
        steps = ["latency", "throughput", "soak"]
    else:
        if not args.run:
            parser.error("--run RUN_ID is required (or --quick)")
        site = REPO_ROOT.parent / "shared" / "data" / "chest_xray_site_sample"
        image = Path(args.image) if args.image else sorted(site.rglob("*.jpeg"))[0]
        steps = [step for step in args.steps.split(",") if step]
    body = Path(image).read_bytes()
    from zoidberg.runs.store import RunStore

    run = RunStore(args.runs_dir).get(args.run)
    card = f"{run.config.get('preset') or (run.config.get('model') or {}).get('architecture')}, {(run.config.get('data') or {}).get('image_size')} px"
    done = set() if quick else done_steps(args.run)
    log_dir = RESULTS.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for step in steps:
        if step in done:
            print(f"{step}: done already (benchmarks/results/service.jsonl)")
            continue
        ray = step.startswith("ray-")
        load_before = load_average()
        server = Server(args.run, args.runs_dir, ray, log_dir / f"service-{step}.log")
        try:
            server.wait_ready()
            if step.endswith("latency"):
                figures = measure_latency(server.url, body, args.requests)
            elif step.endswith("throughput"):
                figures = asyncio.run(_clients(server.url, body, args.clients, args.seconds))
            else:
                figures = asyncio.run(_soak(server.url, body, args.rate, args.soak_s, server))
        finally:
            server.stop()
        line = {"step": step, "run_id": args.run, "card": card, "when": time.strftime("%Y-%m-%d %H:%M"), "load_before": load_before,
                "load_after": load_average(), "cpu": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}", "quick": quick, **figures}
        print(json.dumps({key: value for key, value in line.items() if key != "memory_mb"}))
        if not quick:
            with RESULTS.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
    if args.write_doc and not quick:
        write_doc()
    return 0


if __name__ == "__main__":
    sys.exit(main())
