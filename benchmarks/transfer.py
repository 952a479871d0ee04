#!/usr/bin/env python
"""Transfer-learning benchmark (issue 6): frozen and fine-tuned MobileNetV2 against a CNN from scratch.

One command, from the repository root (real ImageNet weights in ../shared/weights):

    ZOIDBERG_WEIGHTS_DIR=../shared/weights python benchmarks/transfer.py
    python benchmarks/transfer.py --sections frozen,end-to-end --alphas 0.35   # a part only

Every configuration runs a full patient-grouped k-fold cross-validation through the engine
(zoidberg.training.cv.run_cross_validation, in this process, so TensorFlow's start-up is not
counted) and reports the ROC AUC over folds (mean ± std) and the wall time. Frozen runs
are timed twice: with the feature cache emptied first, then with it filled. End-to-end
MobileNetV2 is too slow to cross-validate here, so one fold is trained for a few epochs
and the 5-fold time is extrapolated from its steady epoch time (labelled as such).

It prints a markdown table and writes benchmarks/results/transfer.json. The machine is
shared and noisy: wall times can vary by 2x between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoidberg.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "chest_xray_224"
DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "weights"
SECTIONS = ("frozen", "fine-tune", "cnn", "end-to-end")


def parse_args(argv=None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Dataset folder [default: ../shared/data/chest_xray_224].")
    parser.add_argument("--image-size", type=int, default=128, help="Image size in pixels [default: 128].")
    parser.add_argument("--folds", type=int, default=5, help="Number of folds [default: 5].")
    parser.add_argument("--seed", type=int, default=42, help="Fold and weight seed [default: 42].")
    parser.add_argument("--alphas", default="0.35,0.5", help="MobileNetV2 widths with local ImageNet weights [default: 0.35,0.5].")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"Comma-separated subset of {', '.join(SECTIONS)}.")
    parser.add_argument("--frozen-epochs", type=int, default=10, help="Head epochs per fold in frozen mode [default: 10].")
    parser.add_argument("--fine-tune-epochs", type=int, default=4, help="Epochs per fold in fine-tune mode, half of them head warm-up [default: 4].")
    parser.add_argument("--cnn-epochs", type=int, default=5, help="Epochs per fold of the CNN from scratch [default: 5].")
    parser.add_argument("--end-to-end-epochs", type=int, default=2, help="Epochs of the one measured end-to-end fold (at least 2) [default: 2].")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / "transfer.json"), help="JSON results file.")
    parser.add_argument("--merge", action="store_true", help="Keep the rows of --out that this run does not measure again.")
    return parser.parse_args(argv)


def say(message: str) -> None:
    """Prints a timestamped progress line to standard error."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_config(args, model: ModelConfig, epochs: int) -> RunConfig:
    """Returns the benchmark's RunConfig: CLI defaults except the model and the epochs."""
    return RunConfig(
        data=DataConfig(str(Path(args.data).resolve()), "binary", args.image_size),
        model=model,
        train=TrainConfig(epochs=epochs),
        n_splits=args.folds,
        random_state=args.seed,
    )


def cross_validate(label: str, config: RunConfig, runs_dir: Path) -> dict:
    """Runs one cross-validation in a temporary run store and returns AUC and timings.

    Args:
        label: Row label for the table.
        config: The run configuration.
        runs_dir: Scratch run store folder.

    Returns:
        {"label", "auc_mean", "auc_std", "seconds", "features_seconds", "epochs_trained", ...}.
    """
    from zoidberg.runs.store import RunStore
    from zoidberg.training.cv import run_cross_validation
    from zoidberg.training.run_setup import config_payload

    run = RunStore(runs_dir).create_run("cv", config_payload(config))
    say(f"{label}: cross-validating ...")
    load_start = os.getloadavg()
    start = time.perf_counter()
    summary = run_cross_validation(run, report=lambda message: say(f"  {message}"))
    seconds = time.perf_counter() - start
    events = run.events()
    features_seconds = next((event["seconds"] for event in events if event["type"] == "features_ready"), None)
    epochs_trained = [run.read_json(f"fold_{fold}/metrics.json")["epochs_trained"] for fold in range(1, config.n_splits + 1)]
    auc = summary["mean_std"]["roc_auc"]
    result = {
        "label": label,
        "architecture": config.model.architecture,
        "alpha": config.model.alpha,
        "transfer_mode": config.model.transfer_mode,
        "weights": config.model.weights,
        "epochs": config.train.epochs,
        "epochs_trained": epochs_trained,
        "auc_mean": auc["mean"],
        "auc_std": auc["std"],
        "fold_auc": [fold["roc_auc"] for fold in summary["folds"]],
        "accuracy_mean": summary["mean_std"]["accuracy"]["mean"],
        "seconds": seconds,
        "features_seconds": features_seconds,
        "fold_train_seconds": [fold["train_seconds"] for fold in summary["folds"]],
        "extrapolated": False,
        # The machine is shared: the 1-minute load average before and after says how much.
        "load_average": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
    }
    say(f"{label}: AUC {auc['mean']:.4f} ± {auc['std']:.4f} in {seconds:.1f} s")
    return result


def forget_features(config: RunConfig) -> None:
    """Deletes the cached backbone features of a configuration so the next run computes them."""
    from zoidberg.data.dataset import default_cache_dir, load_dataset
    from zoidberg.inference.features import feature_cache_key, feature_cache_path, weights_identity

    dataset = load_dataset(config.data.data_dir, image_size=config.data.image_size)
    digest = weights_identity(config.model, config.data.image_size)
    key = feature_cache_key(dataset, config.model, config.data.image_size, digest)
    feature_cache_path(default_cache_dir(), key).unlink(missing_ok=True)


def mobilenet(alpha: float, transfer_mode: str) -> ModelConfig:
    """Returns MobileNetV2 with ImageNet weights in a transfer mode (other fields at defaults)."""
    return ModelConfig(architecture="mobilenetv2", alpha=alpha, weights="imagenet", transfer_mode=transfer_mode)


def frozen_rows(args, alphas, runs_dir) -> list[dict]:
    """Frozen-backbone CV per alpha, first with features computed, then from the cache."""
    rows = []
    for alpha in alphas:
        config = run_config(args, mobilenet(alpha, "frozen"), args.frozen_epochs)
        forget_features(config)
        first = cross_validate(f"MobileNetV2 {alpha}, frozen backbone (features computed)", config, runs_dir)
        second = cross_validate(f"MobileNetV2 {alpha}, frozen backbone (features cached)", config, runs_dir)
        rows += [first, second]
    return rows


def fine_tune_rows(args, alphas, runs_dir) -> list[dict]:
    """Fine-tuned CV per alpha (head warm-up, then the top layers at a tenth of the rate)."""
    return [
        cross_validate(f"MobileNetV2 {alpha}, fine-tuned", run_config(args, mobilenet(alpha, "fine-tune"), args.fine_tune_epochs), runs_dir)
        for alpha in alphas
    ]


def cnn_rows(args, runs_dir) -> list[dict]:
    """The custom CNN trained from scratch with its default hyperparameters."""
    return [cross_validate("Custom CNN, from scratch", run_config(args, ModelConfig(architecture="cnn"), args.cnn_epochs), runs_dir)]


def end_to_end_rows(args, alphas, reference_epochs: int) -> list[dict]:
    """Trains one fold of end-to-end MobileNetV2 (ImageNet start) and extrapolates 5-fold CV time.

    The first epoch includes tracing, so the steady epoch time is the median of the later
    ones; the estimate is folds x reference_epochs x that time (no early stopping).
    """
    import keras

    from zoidberg.data.dataset import load_dataset
    from zoidberg.data.folds import iter_fold_indices, make_folds
    from zoidberg.training.pipeline import train_model

    dataset = load_dataset(args.data, image_size=args.image_size)
    indices = dataset.training_indices()
    labels = dataset.labels[indices]
    fold_of = make_folds(labels, dataset.patients[indices], args.folds, args.seed)
    _, train_part, validation_part = next(iter(iter_fold_indices(fold_of)))
    rows = []
    for alpha in alphas[:1]:
        config = run_config(args, mobilenet(alpha, "end-to-end"), max(2, args.end_to_end_epochs))
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, early_stopping_patience=0))
        durations: list[float] = []

        class EpochTimer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                durations.append(time.perf_counter() - self.start)
                say(f"  end-to-end {alpha}: epoch {epoch + 1} {durations[-1]:.1f} s, val_auc {logs.get('val_auc', float('nan')):.4f}")

        say(f"MobileNetV2 {alpha}, end to end: one fold, {config.train.epochs} epochs ...")
        _, history = train_model(
            config.model, config.train, dataset.images[indices], labels, train_part, validation_part,
            num_classes=dataset.num_classes, image_size=args.image_size, callbacks=[EpochTimer()], random_state=args.seed + 1,
        )
        steady = statistics.median(durations[1:])
        rows.append({
            "label": f"MobileNetV2 {alpha}, end to end (ImageNet start)",
            "architecture": "mobilenetv2",
            "alpha": alpha,
            "transfer_mode": "end-to-end",
            "weights": "imagenet",
            "epochs": reference_epochs,
            "epoch_seconds": durations,
            "steady_epoch_seconds": steady,
            "images_per_second": len(train_part) / steady,
            "seconds": args.folds * reference_epochs * steady,
            "extrapolated": True,
            "fold1_val_auc": history["val_auc"],
            "auc_mean": None,
            "auc_std": None,
        })
    return rows


def row_order(row: dict) -> tuple:
    """Sorts rows as the table shows them: frozen, fine-tuned, CNN, end to end; by alpha."""
    if row["architecture"] == "cnn":
        rank = 2
    else:
        rank = {"frozen": 0, "fine-tune": 1, "end-to-end": 3}[row["transfer_mode"]]
    return (rank, row["alpha"], row["label"])


def format_duration(seconds: float) -> str:
    """Formats seconds as '42 s', '3 min 05 s' or '1 h 20 min'."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def markdown_table(rows: list[dict], folds: int) -> str:
    """Returns the results as a markdown table."""
    lines = [
        f"| configuration | epochs per fold | {folds}-fold CV ROC AUC (mean ± std) | {folds}-fold CV wall time |",
        "|---|---|---|---|",
    ]
    for row in rows:
        auc = "—" if row["auc_mean"] is None else f"{row['auc_mean']:.3f} ± {row['auc_std']:.3f}"
        if row["extrapolated"]:
            wall = (
                f"≈ {format_duration(row['seconds'])} **extrapolated** from one fold "
                f"({row['steady_epoch_seconds']:.0f} s per epoch, {row['images_per_second']:.0f} img/s)"
            )
            epochs = f"{row['epochs']} (assumed)"
        else:
            wall = format_duration(row["seconds"])
            if row.get("features_seconds") is not None:
                wall += f" (features {row['features_seconds']:.1f} s)"
            trained = row["epochs_trained"]
            epochs = f"{row['epochs']}" + ("" if min(trained) == row["epochs"] else f" (early stop: {min(trained)}–{max(trained)})")
        lines.append(f"| {row['label']} | {epochs} | {auc} | {wall} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.environ.get("ZOIDBERG_WEIGHTS_DIR") and DEFAULT_WEIGHTS.is_dir():
        os.environ["ZOIDBERG_WEIGHTS_DIR"] = str(DEFAULT_WEIGHTS)
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"Unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}.")
    alphas = [float(alpha) for alpha in args.alphas.split(",")]
    out = Path(args.out)
    kept = json.loads(out.read_text())["rows"] if args.merge and out.is_file() else []
    rows: list[dict] = []

    def save() -> None:
        # Written after every section, so a long run cut short keeps what it measured.
        measured = {row["label"] for row in rows}
        everything = sorted([row for row in kept if row["label"] not in measured] + rows, key=row_order)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"args": vars(args), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": everything}, indent=2))

    with tempfile.TemporaryDirectory(prefix="zoidberg-transfer-") as scratch:
        runs_dir = Path(scratch) / "runs"
        steps = {
            "frozen": lambda: frozen_rows(args, alphas, runs_dir),
            "fine-tune": lambda: fine_tune_rows(args, alphas, runs_dir),
            "cnn": lambda: cnn_rows(args, runs_dir),
            "end-to-end": lambda: end_to_end_rows(args, alphas, args.fine_tune_epochs),
        }
        for name in SECTIONS:
            if name in sections:
                rows += steps[name]()
                save()
    rows = json.loads(out.read_text())["rows"] if out.is_file() else rows
    print(markdown_table(rows, args.folds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
