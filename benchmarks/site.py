#!/usr/bin/env python
"""Recipes judged on a site's own labeled films: zero-shot and adapted (cross-fitted by patient), every figure with its patient-bootstrap interval.

One command, from the repository root (resumable: run it again and it goes on):

    ZOIDBERG_WEIGHTS_DIR=../shared/weights python benchmarks/site.py --write-doc
    python benchmarks/site.py --candidates fast,best --timeout 1800     # some recipes, 30 min each at most
    python benchmarks/site.py --quick                                   # tiny generated data: checks that it runs

Every candidate trains on --data (default ../shared/data/chest_xray_224) through the engine,
is evaluated zero-shot on --site (default ../shared/data/chest_xray_site_sample) at its own
operating point, then adapted to the site with `adapt` (head and recalibrate), whose figures
are cross-fitted by patient. Each candidate runs in a child process bounded by --timeout and
appends one JSON line to benchmarks/results/site.jsonl as it ends (its figures, wall times
and the load average); a candidate with a line is skipped when the script runs again, and
the runs it trained are kept in --work, so an ensemble candidate combines members that
earlier candidates trained. --write-doc rewrites BENCHMARKS.md's "site" block from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.harness import RESULTS_DIR, load_average  # noqa: E402
from benchmarks.site_candidates import CANDIDATES, SENSITIVE, candidate_config  # noqa: E402
from zoidberg.runs.store import RunStore  # noqa: E402

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
RESULTS_FILE = RESULTS_DIR / "site.jsonl"
DOC_START = "<!-- site:start (written by benchmarks/site.py) -->"
DOC_END = "<!-- site:end -->"
ADAPT_METHODS = ("head", "recalibrate")
FIGURES = ("roc_auc", "accuracy", "sensitivity", "specificity")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", default=str(SHARED_DATA / "chest_xray_224"), help="The labeled training folder.")
    parser.add_argument("--site", default=str(SHARED_DATA / "chest_xray_site_sample"), help="The site's labeled films.")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="Comma-separated candidates (benchmarks/site_candidates.py).")
    parser.add_argument("--timeout", type=int, default=1800, help="Seconds one candidate may take, training and adapting [default: 1800].")
    parser.add_argument("--work", default=None, help="Folder for the runs (default: $ZOIDBERG_CACHE_DIR/site-bench or a temporary one).")
    parser.add_argument("--results", default=None, help=f"The JSON-lines file results are appended to [default: {RESULTS_FILE.relative_to(REPO_ROOT)}; with --quick, one in --work].")
    parser.add_argument("--write-doc", action="store_true", help="Rewrite BENCHMARKS.md's site block from the results file.")
    parser.add_argument("--quick", action="store_true", help="Tiny generated data and shrunk recipes: checks that it runs.")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"[site {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def read_results(path: Path) -> list[dict]:
    """Every finished candidate's line (a cut last line, from a killed run, is ignored)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_result(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- one candidate


def find_run(store: RunStore, name: str):
    """The completed run trained for a candidate (its name is the candidate's), or None."""
    for run in store.list_runs(("cv", "ensemble")):
        if run.name == name and run.state == "completed":
            return run
    return None


def run_seconds(run) -> float:
    """A run's training time from its folds' metrics, for a run this script did not time (a resumed one)."""
    return float(sum(fold.get("train_seconds") or 0.0 for fold in run.fold_metrics()))


def train(store: RunStore, name: str, data: Path, quick: bool) -> tuple[str, float, bool]:
    """Trains a candidate (or finds it trained); returns (run id, wall seconds, reused)."""
    from zoidberg.config import EnsembleConfig
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import prepare_run
    from zoidberg.training.ensemble import prepare_ensemble, run_ensemble

    existing = find_run(store, name)
    if existing is not None:
        return existing.id, float(existing.read_json("bench_seconds.json") or run_seconds(existing)), True
    start = time.perf_counter()
    if "members" in CANDIDATES[name]:
        # Members are the candidates of the same names, trained once and reused.
        members = [train(store, member, data, quick) for member in CANDIDATES[name]["members"]]
        config = EnsembleConfig(members=tuple(member[0] for member in members), operating_point=SENSITIVE, run_name=name)
        run = store.create_run("ensemble", prepare_ensemble(config, store), name)
        run_ensemble(run, report=say)
        seconds = time.perf_counter() - start + sum(member[1] for member in members)
    else:
        config = candidate_config(name, str(data), quick=quick)
        run = store.create_run("cv", prepare_run(config), name)
        run_cross_validation(run, report=say)
        seconds = time.perf_counter() - start
    if run.state != "completed":
        raise RuntimeError(f"{name} ended {run.state}: {run.status().get('error')}")
    run.write_json("bench_seconds.json", seconds)
    return run.id, seconds, False


def zero_shot(run, site: Path) -> dict:
    """The run's figures on the site at its own operating point, with patient-bootstrap intervals."""
    import numpy as np

    from zoidberg.evaluation.site_figures import site_figures
    from zoidberg.inference.evaluate import evaluate_run
    from zoidberg.evaluation.stored import read_predictions

    evaluation = evaluate_run(run, site, split="all", name="site", report=say)
    stored = read_predictions(run, "site")
    scores = stored["calibrated"] if evaluation["scale"] == "calibrated" and stored["calibrated"] is not None else stored["raw"]
    decided = (scores[:, 1] >= evaluation["threshold"]).astype(int)
    figures = site_figures(stored["labels"], stored["raw"][:, 1], decided, stored["patients"])
    return {**figures, "threshold": evaluation["threshold"], "leakage_clean": evaluation["leakage"]["clean"],
            "scoring_seconds": evaluation.get("scoring_seconds"), "n_images": int(len(np.asarray(stored["labels"])))}


def adapt(store: RunStore, parent_id: str, site: Path, method: str) -> dict:
    """Adapts the run to the site; its cross-fitted figures and wall time, or why it could not."""
    from zoidberg.adaptation.adapt import prepare_adaptation, run_adaptation
    from zoidberg.adaptation.config import AdaptConfig

    config = AdaptConfig(parent=parent_id, site_dir=str(site), method=method, run_name=f"{parent_id} {method}")
    try:
        payload = prepare_adaptation(config, store)
    except ValueError as error:
        return {"skipped": str(error)}
    start = time.perf_counter()
    run = store.create_run("adapt", payload, config.run_name)
    summary = run_adaptation(run, report=say)
    return {**summary["adaptation"]["adapted"], "run_id": run.id, "seconds": time.perf_counter() - start,
            "threshold": summary["threshold"]}


def measure_one(name: str, args) -> dict:
    """Trains, evaluates and adapts one candidate; returns its result line."""
    data, site, store = resolve_paths(args)
    load_before = load_average()
    run_id, seconds, reused = train(store, name, data, args.quick)
    run = store.get(run_id)
    mean_std = (run.summary() or {}).get("mean_std") or {}
    row = {
        "candidate": name,
        "description": CANDIDATES[name]["description"],
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run_id": run_id,
        "train_seconds": seconds,
        "reused": reused,
        "cv": {figure: (mean_std.get(figure) or {}).get("mean") for figure in FIGURES},
        "zero_shot": zero_shot(run, site),
        "adapted": {method: adapt(store, run_id, site, method) for method in ADAPT_METHODS},
        "load_average": [load_before, load_average()],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "quick": args.quick,
    }
    return row


def resolve_paths(args) -> tuple[Path, Path, RunStore]:
    work = Path(args.work)
    if args.quick:
        from zoidberg.data.demo import make_demo_dataset

        data = work / "demo" if (work / "demo").is_dir() else make_demo_dataset(work / "demo", patients_per_class=12, images_per_patient=(1, 3), image_size=64)
        other = work / "other"
        if not other.is_dir():
            make_demo_dataset(other, patients_per_class=8, images_per_patient=(1, 3), image_size=64, random_state=7)
        return data, other / "train", RunStore(work / "runs")
    return Path(args.data).expanduser().resolve(), Path(args.site).expanduser().resolve(), RunStore(work / "runs")


# --------------------------------------------------------------------------- the table


def figure(block: dict | None, name: str) -> str:
    from zoidberg.evaluation.site_figures import describe_figure

    if not block or "skipped" in block:
        return "—"
    return describe_figure(block.get(name))


def minutes(seconds) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def load_text(pair) -> str:
    """The 1-minute load average when the candidate started and ended, "2.1–2.8"."""
    values = [f"{sample[0]:.1f}" for sample in pair if sample]
    return "–".join(values) or "—"


def markdown(rows: list[dict]) -> str:
    """The zero-shot and adapted tables, one row per candidate (the newest line of each)."""
    latest = {row["candidate"]: row for row in rows}
    head = "| candidate | CV AUC | AUC [95 % CI] | accuracy | sensitivity | specificity | healthy called pneumonia | time | load |"
    lines = ["**Zero-shot** (trained on chest_xray_224, scored on the 312 site films at its own threshold)", "", head, "|---|---|---|---|---|---|---|---|---|"]
    for row in latest.values():
        block = row["zero_shot"]
        lines.append(
            f"| {row['candidate']} | {row['cv'].get('roc_auc') or 0:.3f} | " + " | ".join(figure(block, name) for name in FIGURES)
            + f" | {block['normal_called_pneumonia']} of {block['n_normal']} | {minutes(row['train_seconds'])} | {load_text(row['load_average'])} |"
        )
    for method in ADAPT_METHODS:
        lines += ["", f"**Adapted ({method})**, cross-fitted by patient in 5 parts (each part scored and thresholded by heads fitted without it)", "",
                  "| candidate | AUC [95 % CI] | accuracy | sensitivity | specificity | healthy called pneumonia | adaptation time | threshold |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in latest.values():
            block = row["adapted"].get(method) or {}
            if "skipped" in block:
                reason = "no frozen-backbone member: the head method needs one" if "frozen-backbone" in block["skipped"] else block["skipped"]
                lines.append(f"| {row['candidate']} | {reason} | | | | | | |")
                continue
            lines.append(
                f"| {row['candidate']} | " + " | ".join(figure(block, name) for name in FIGURES)
                + f" | {block['normal_called_pneumonia']} of {block['n_normal']} | {minutes(block['seconds'])} | {block['threshold']:.3f} |"
            )
    return "\n".join(lines)


def write_doc(text: str) -> None:
    """Rewrites BENCHMARKS.md's site block (quality.write_doc with this script's markers)."""
    from benchmarks.quality import write_doc as write_block

    write_block(text, start=DOC_START, end=DOC_END, heading="At the site: recipes on the site sample, zero-shot and adapted")


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.work is None:
        base = Path(os.environ.get("ZOIDBERG_CACHE_DIR") or Path.home() / ".cache" / "zoidberg")
        args.work = str(base / "site-bench") if not args.quick else tempfile.mkdtemp(prefix="zoidberg-site-")
    results = Path(args.results or (Path(args.work) / "site.jsonl" if args.quick else RESULTS_FILE))
    if args.one:
        append_result(results, measure_one(args.one, args))
        return 0
    names = [name.strip() for name in args.candidates.split(",") if name.strip()]
    unknown = [name for name in names if name not in CANDIDATES]
    if unknown:
        print(f"error: unknown candidate {unknown[0]!r}; choose from {', '.join(CANDIDATES)}", file=sys.stderr)
        return 2
    if not args.quick:
        for folder in (args.data, args.site):
            if not Path(folder).is_dir():
                print(f"error: {folder} is not a folder; pass --data and --site (or --quick)", file=sys.stderr)
                return 2
    done = {row["candidate"] for row in read_results(results)}
    failed = 0
    for name in names:
        if name in done:
            say(f"{name}: already measured (in {results}), skipped")
            continue
        say(f"{name}: {CANDIDATES[name]['description']}")
        command = [sys.executable, __file__, "--one", name, "--data", args.data, "--site", args.site, "--work", args.work, "--results", str(results)]
        try:
            code = subprocess.run(command + (["--quick"] if args.quick else []), timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            say(f"{name}: over {args.timeout} s, stopped; its finished runs stay in {args.work} and the next start goes on from them")
            failed += 1
            continue
        if code != 0:
            say(f"{name}: failed (exit {code})")
            failed += 1
    text = markdown(read_results(results))
    print(text)
    if args.write_doc and not args.quick:
        write_doc(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
