#!/usr/bin/env python
"""Quality benchmark: every preset (and the design notes' CNN) trained through the engine, scored on images it never saw.

One command, from the repository root:

    python benchmarks/quality.py --data ../shared/data/chest_xray_224                 # proxies carved from the data
    python benchmarks/quality.py --data ../shared/data/chest_xray_224 --external DIR  # your own labeled folder
    python benchmarks/quality.py --quick                                              # tiny generated data, a minute

Without --external it carves two hold-outs from the data, nested so that one training
serves both: first every NORMAL2-IM-* normal (another acquisition) with 15 % of the
pneumonia patients, the *shifted* proxy; then a patient-disjoint 12 % of what is left, the
*patients* hold-out. Every recipe trains on the rest and is evaluated on each hold-out
(AUC with a 95 % interval from a bootstrap over patients, accuracy, sensitivity,
specificity at the run's own operating point, ECE) next to its cross-validation figures.
The best preset is the fast, balanced and scratch runs averaged: the benchmark combines
the runs it trained for their own rows, so its wall time is the sum of theirs plus the
combination. The markdown table goes to standard output, every figure to
benchmarks/results/quality.json, and with --write-doc to BENCHMARKS.md ("Generalization").

ImageNet weights come from $ZOIDBERG_WEIGHTS_DIR (e.g. ../shared/weights); presets whose
file is missing are skipped with the message that names it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.harness import CNN_CONFIG, RESULTS_DIR, load_average  # noqa: E402
from zoidberg.config import DataConfig, EnsembleConfig, ModelConfig, OperatingPointChoice, RunConfig, TrainConfig  # noqa: E402
from zoidberg.models.presets import PRESETS, make_preset_config, missing_weights  # noqa: E402
from zoidberg.runs.store import RunStore  # noqa: E402

DOC_PATH = REPO_ROOT / "BENCHMARKS.md"
DOC_START = "<!-- quality:start (written by benchmarks/quality.py) -->"
DOC_END = "<!-- quality:end -->"
REFERENCE = "notes-cnn"
# The design notes' CNN at their 128 px, 5 folds of 3 epochs, as the benchmarks' reference loop.
REFERENCE_TRAIN = dict(epochs=3, batch_size=32, early_stopping_patience=0, class_weighting="none")
SENSITIVE = OperatingPointChoice("target-sensitivity", target=0.95)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data" / "chest_xray_224"), help="The labeled training folder.")
    parser.add_argument("--external", default=None, help="A labeled folder to evaluate on instead of carved hold-outs.")
    parser.add_argument("--presets", default=",".join([*PRESETS, REFERENCE]), help="Comma-separated recipes to run.")
    parser.add_argument("--tta", action="store_true", help="Also evaluate every run with test-time augmentation.")
    parser.add_argument("--work", default=None, help="Folder for hold-outs and runs (default: a temporary one).")
    parser.add_argument("--out", default=str(RESULTS_DIR / "quality.json"), help="Where the JSON goes.")
    parser.add_argument("--write-doc", action="store_true", help="Rewrite BENCHMARKS.md's Generalization block.")
    parser.add_argument("--quick", action="store_true", help="Tiny generated data and shrunk recipes: checks that it runs.")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def make_holdouts(data: Path, work: Path, quick: bool) -> tuple[Path, dict[str, Path]]:
    """Carves the nested hold-outs; returns the training folder and {name: hold-out folder}."""
    from zoidberg.data.holdout import carve_holdout

    shifted, patients = work / "shifted", work / "patients"
    if not (shifted / "rest").is_dir():
        carve_holdout(data, shifted, fraction=0.15, method="acquisition" if not quick else "patient", random_state=0)
    if not (patients / "rest").is_dir():
        carve_holdout(shifted / "rest", patients, fraction=0.12 if not quick else 0.3, method="patient", random_state=0)
    return patients / "rest", {"patients": patients / "holdout", "shifted": shifted / "holdout"}


def quick_data(work: Path) -> Path:
    """A tiny generated data set in the real naming scheme, with NORMAL2 normals."""
    from zoidberg.data.demo import make_demo_dataset

    return make_demo_dataset(work / "demo", patients_per_class=12, images_per_patient=(1, 3), image_size=64)


# --------------------------------------------------------------------------- recipes


def recipe(name: str, data_dir: Path, quick: bool):
    """The RunConfig (or the preset's EnsembleConfig) of a recipe on a folder; shrunk with --quick."""
    if name == REFERENCE:
        config = RunConfig(
            data=DataConfig(str(data_dir), "binary", 128), model=ModelConfig(**CNN_CONFIG), train=TrainConfig(**REFERENCE_TRAIN),
            n_splits=5, operating_point=SENSITIVE, run_name="notes CNN",
        )
    else:
        config = make_preset_config(name, str(data_dir), run_name=f"{name} preset")
    return shrink(config) if quick else config


def shrink(config):
    """The same recipe at 48 px, k=2, the fewest epochs and no weights file: for --quick only."""
    if isinstance(config, EnsembleConfig):
        return dataclasses.replace(config, recipes=tuple(shrink(member) for member in config.recipes))
    epochs = 2 if config.model.transfer_mode == "fine-tune" else 1
    model = config.model
    if model.weights:
        model = dataclasses.replace(model, weights=None, transfer_mode="end-to-end")
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, image_size=48), model=model,
        train=dataclasses.replace(config.train, epochs=epochs, batch_size=16), n_splits=2, tta=False,
    )


def train(store: RunStore, name: str, config, trained: dict[str, str]) -> tuple[str, float]:
    """Trains one recipe through the engine in this process; returns (run id, wall seconds).

    The best preset's members are the runs trained for their own rows when those exist, so
    it combines them instead of training them twice; its time is then theirs summed.
    """
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import prepare_run
    from zoidberg.training.ensemble import prepare_ensemble, run_ensemble

    start = time.perf_counter()
    if isinstance(config, EnsembleConfig):
        members = [trained.get(member.preset) for member in config.recipes]
        reused = 0.0
        if all(members):
            reused = sum(float(store.get(member).read_json("bench_seconds.json") or 0.0) for member in members)
            config = dataclasses.replace(config, members=tuple(members), recipes=())
        run = store.create_run("ensemble", prepare_ensemble(config, store), config.run_name)
        run_ensemble(run, report=say)
        return run.id, time.perf_counter() - start + reused
    run = store.create_run("cv", prepare_run(config), config.run_name)
    run_cross_validation(run, report=say)
    seconds = time.perf_counter() - start
    run.write_json("bench_seconds.json", seconds)
    return run.id, seconds


# --------------------------------------------------------------------------- measuring


def evaluate(run, holdouts: dict[str, Path], tta: bool) -> dict:
    """Every hold-out's figures at the run's operating point: {name: {...}}."""
    from zoidberg.inference.evaluate import evaluate_run

    figures = {}
    for name, folder in holdouts.items():
        for with_tta in ((False, True) if tta else (False,)):
            label = f"{name}+tta" if with_tta else name
            evaluation = evaluate_run(run, folder, split="auto", name=label.replace("+", "-"), tta=with_tta, report=say)
            metrics, interval = evaluation["metrics"], evaluation.get("auc_ci") or {}
            figures[label] = {
                "auc": metrics.get("roc_auc"), "auc_low": interval.get("low"), "auc_high": interval.get("high"),
                "accuracy": metrics.get("accuracy"), "sensitivity": metrics.get("sensitivity"),
                "specificity": metrics.get("specificity"), "ece": (evaluation.get("calibration") or {}).get("raw", {}).get("ece"),
                "n_images": evaluation["n_images"], "leakage_clean": evaluation["leakage"]["clean"],
                "scoring_seconds": evaluation.get("scoring_seconds"),
            }
    return figures


def cv_figures(run) -> dict:
    summary = run.summary() or {}
    mean_std = summary.get("mean_std") or {}
    return {name: (mean_std.get(name) or {}).get("mean") for name in ("roc_auc", "accuracy", "sensitivity", "specificity")}


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def table(results: list[dict], holdout: str) -> list[str]:
    """The markdown rows of one hold-out."""
    lines = [
        f"| recipe | CV AUC | {holdout}: AUC [95 % CI] | accuracy | sensitivity | specificity | ECE | AUC gap to CV | training wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        figures = result["holdouts"].get(holdout)
        if figures is None:
            continue
        cv = result["cv"]["roc_auc"]
        gap = None if cv is None or figures["auc"] is None else figures["auc"] - cv
        lines.append(
            f"| {result['label']} | {fmt(cv)} | {fmt(figures['auc'])} [{fmt(figures['auc_low'])}, {fmt(figures['auc_high'])}] | "
            f"{fmt(figures['accuracy'])} | {fmt(figures['sensitivity'])} | {fmt(figures['specificity'])} | {fmt(figures['ece'])} | "
            f"{'—' if gap is None else f'{gap:+.3f}'} | {minutes(result['seconds'])} |"
        )
    return lines


def write_doc(markdown: str, *, start: str = DOC_START, end: str = DOC_END,
              heading: str = "Generalization: presets on images they never saw") -> None:
    """Replaces BENCHMARKS.md's block between `start` and `end` markers (appended under `heading` when absent)."""
    from harness import replace_doc_block

    replace_doc_block(markdown, start=start, end=end, heading=heading)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="zoidberg-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ZOIDBERG_CACHE_DIR", str(work / "cache"))
    data = quick_data(work) if args.quick else Path(args.data).expanduser().resolve()
    if not data.is_dir():
        print(f"error: {data} is not a folder; pass --data (or --quick)", file=sys.stderr)
        return 2
    if args.external:
        training, holdouts = data, {"external": Path(args.external).expanduser().resolve()}
    else:
        training, holdouts = make_holdouts(data, work, args.quick)
    store = RunStore(work / "runs")
    names = [name.strip() for name in args.presets.split(",") if name.strip()]
    # Single presets first, so that an ensemble preset can combine what they trained.
    names.sort(key=lambda name: name in PRESETS and PRESETS[name].is_ensemble)
    results, trained, skipped = [], {}, {}
    for name in names:
        if name != REFERENCE and name not in PRESETS:
            print(f"error: unknown recipe {name!r}; choose from {', '.join([*PRESETS, REFERENCE])}", file=sys.stderr)
            return 2
        if name in PRESETS and not args.quick and missing_weights(name):
            skipped[name] = missing_weights(name)[0]
            say(f"skipping {name}: {skipped[name]}")
            continue
        say(f"training {name} on {training} ...")
        load_before = load_average()
        run_id, seconds = train(store, name, recipe(name, training, args.quick), trained)
        trained[name] = run_id
        run = store.get(run_id)
        results.append({
            "recipe": name,
            "label": f"{PRESETS[name].label} preset" if name in PRESETS else "design notes' CNN (reference)",
            "run_id": run_id,
            "seconds": seconds,
            "cv": cv_figures(run),
            "holdouts": evaluate(run, holdouts, args.tta),
            "load_average": [load_before, load_average()],
        })
    lines = []
    for holdout in dict.fromkeys(label for result in results for label in result["holdouts"]):
        lines += [f"**{holdout}**", "", *table(results, holdout), ""]
    markdown = "\n".join(lines)
    print(markdown)
    payload = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "data": str(data),
        "holdouts": {name: str(folder) for name, folder in holdouts.items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "skipped": skipped,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    if args.write_doc and not args.quick:
        write_doc(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
