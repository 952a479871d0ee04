#!/usr/bin/env python
"""The monitor's alert on real films: its false-alarm rate on windows of a site's films, its detection rate where a fifth changes.

    ZOIDBERG_WEIGHTS_DIR=../shared/weights python benchmarks/monitor.py --run BEST_ENSEMBLE_ID [--write-doc]

The site sample is split by patient: `best` is adapted on one half (as a clinic adapts), and the
windows are drawn from the other half (films it never saw): stable windows of 40 films, and
windows where 8 of 40 (a fifth) are adult frontal films, side views, other radiographs, CT/MR,
other modalities, look-alikes (../shared/data/ood_sample), or the site's films at another
contrast (gamma 0.5). Each step appends to benchmarks/results/monitor.jsonl; a rerun goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.harness import RESULTS_DIR, load_average  # noqa: E402

RESULTS_FILE = RESULTS_DIR / "monitor.jsonl"
SHARED = REPO_ROOT.parent / "shared" / "data"
WINDOW, DRAWS = 40, 40
# Which alert rule a row measured: rows of an older rule are kept, and measured again under the new one.
RULE = "2026-12-08: scores against the best mix of the reference's classes"
DOC_START, DOC_END = "<!-- monitor:start (written by benchmarks/monitor.py) -->", "<!-- monitor:end -->"


def say(message: str) -> None:
    print(message, flush=True)


def read_results() -> list[dict]:
    return [json.loads(line) for line in RESULTS_FILE.read_text().splitlines() if line.strip()] if RESULTS_FILE.exists() else []


def append(row: dict) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_FILE, "a") as handle:
        handle.write(json.dumps(row) + "\n")


def split_site(work: Path, seed: int = 0) -> tuple[Path, list[Path]]:
    """Half of the site's patients as a folder to adapt on (links), the other half's films."""
    from zoidberg.data.dataset import parse_patient_id

    films = sorted((SHARED / "chest_xray_site_sample").glob("*/*.jpeg"))
    patients = sorted({parse_patient_id(path.name) for path in films})
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(patients)[: len(patients) // 2])
    adapt_dir = work / "site_a"
    held = []
    for path in films:
        if parse_patient_id(path.name) in half:
            target = adapt_dir / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(path)
        else:
            held.append(path)
    return adapt_dir, held


def adapted_run(parent_id: str, adapt_dir: Path, done: list[dict]) -> str:
    from zoidberg.adaptation.adapt import prepare_adaptation, run_adaptation
    from zoidberg.adaptation.config import AdaptConfig
    from zoidberg.runs.store import RunStore

    previous = next((row["adapted"] for row in reversed(done) if row.get("step") == "adapt"), None)
    store = RunStore()
    from zoidberg.runs.store import MONITOR_REFERENCE_FILE

    # A run adapted before the monitor kept the films' exposure is adapted again.
    if previous and (store.root / previous).is_dir() and (store.get(previous).read_json(MONITOR_REFERENCE_FILE) or {}).get("pixel_mean"):
        return previous
    config = AdaptConfig(parent=parent_id, site_dir=str(adapt_dir), run_name="monitor benchmark: half the site")
    run = store.create_run("adapt", prepare_adaptation(config, store), config.run_name)
    start = time.perf_counter()
    run_adaptation(run, report=say)
    append({"step": "adapt", "adapted": run.id, "parent": parent_id, "seconds": round(time.perf_counter() - start, 1), "load": load_average()})
    return run.id


def other_contrast(paths: list[Path], work: Path) -> list[Path]:
    """The held-out films at another contrast (gamma 0.5), written as PNG outside the repository."""
    from PIL import Image

    folder = work / "contrast"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = folder / (path.stem + ".png")
        if not target.exists():
            gray = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
            Image.fromarray((np.power(gray, 0.5) * 255).astype(np.uint8)).save(target)
        out.append(target)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--run", help="The parent (best's ensemble).")
    parser.add_argument("--work", default="/tmp/zoidberg-monitor-bench", help="Scratch folder (links and PNGs; never the repository).")
    parser.add_argument("--window-films", type=int, default=WINDOW, help=f"Films per window [default: {WINDOW}]; a fifth are changed.")
    parser.add_argument("--write-doc", action="store_true", help="Rewrite BENCHMARKS.md's block from the results and exit.")
    args = parser.parse_args(argv)
    if args.write_doc:
        return write_doc()
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.inference.scoring import predict_files
    from zoidberg.monitoring.reference import load_references
    from zoidberg.monitoring.watch import watch_window
    from zoidberg.runs.store import RunStore

    work = Path(args.work)
    done = read_results()
    adapt_dir, held = split_site(work)
    run_id = adapted_run(args.run, adapt_dir, done)
    say(f"Adapted run {run_id}; {len(held)} held-out site films.")
    ensemble = load_ensemble(run_id)
    sources = {"site": held, "another contrast": other_contrast(held, work)}
    for folder in sorted((SHARED / "ood_sample").iterdir()):
        if folder.is_dir():
            sources[folder.name.split("_", 1)[1].replace("_", " ")] = sorted(path for path in folder.rglob("*") if path.is_file())
    records = {name: predict_files(ensemble, paths, door="cli") for name, paths in sources.items()}
    references = load_references(RunStore().get(run_id))
    rng = np.random.default_rng(0)
    size, changed_films = args.window_films, args.window_films // 5
    finished = {(row["windows"], row.get("window_films")) for row in done
                if row.get("step") == "windows" and row.get("adapted") == run_id and row.get("rule") == RULE}
    for name in records:
        if (name, size) in finished:
            continue
        alerts, whys = 0, []
        for _ in range(DRAWS):
            stable = [records["site"][index] for index in rng.choice(len(records["site"]), size - (0 if name == "site" else changed_films), replace=False)]
            changed = [] if name == "site" else [records[name][index] for index in rng.choice(len(records[name]), changed_films,
                                                                                              replace=len(records[name]) < changed_films)]
            summary = watch_window(name, stable + changed, references)
            alerts += summary["alert"]
            whys.append(summary["why"])
        refused = np.mean([record.get("in_distribution") is False for record in records[name]])
        append({"step": "windows", "rule": RULE, "adapted": run_id, "windows": name, "draws": DRAWS, "window_films": size,
                "changed_films": 0 if name == "site" else changed_films, "alert_rate": alerts / DRAWS, "films": len(records[name]),
                "refused_share": round(float(refused), 3), "example_why": whys[0], "load": load_average()})
        say(f"{name:<22} alert in {alerts}/{DRAWS} windows (its films refused: {refused:.0%})")
    return 0


def write_doc() -> int:
    rows = [row for row in read_results() if row.get("step") == "windows"]
    if not rows:
        return 1
    latest = rows[-1]["adapted"]
    rows = [row for row in rows if row["adapted"] == latest and row.get("rule") == RULE]
    lines = ["| windows | films a window | changed films | alert (of 40 windows) | the changed films' own refusal rate |", "|---|---|---|---|---|"]
    for row in rows:
        what = "none (the site's held-out films)" if row["windows"] == "site" else f"{row['changed_films']} {row['windows']}"
        lines.append(f"| {row['windows']} | {row['window_films']} | {what} | **{row['alert_rate']:.0%}** | {row['refused_share']:.0%} |")
    from benchmarks.harness import replace_doc_block

    replace_doc_block("\n".join(lines) + f"\n\nAdapted run {latest}; example: \"{rows[-1]['example_why']}\"", start=DOC_START, end=DOC_END,
                      heading="Watching a run after go-live")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
