"""python -m zoidberg predict: image files and folders through a run, one line (or CSV row) per file."""

from __future__ import annotations

import json

from zoidberg.cli.options import CliError, add_runs_dir, parse_bool
from zoidberg.cli.pacs import add_pacs_options, command_predict_pacs
from zoidberg.cli.prediction_lines import log_records, prediction_line, write_predictions_csv


def add_parsers(commands) -> None:
    """Adds predict."""
    predict = commands.add_parser(
        "predict", help="Predict image files or whole folders with a run's fold ensemble.",
        description="Predict pneumonia on images (PNG, JPEG, DICOM, recognised by content) and folders of them "
        "(recursive) with the fold ensemble of a finished run or ensemble, at its operating point, in batches. "
        "Files inside NORMAL/PNEUMONIA folders get their label and a correct column; other files are listed as skipped.",
    )
    predict.add_argument("--run", required=True, help="Run id.")
    predict.add_argument("images", nargs="*", metavar="PATH", help="Image files and folders (or --dicomweb).")
    predict.add_argument("--csv", default=None, metavar="FILE", help="Write one row per file to this CSV file.")
    predict.add_argument("--threshold", type=float, default=None, help="Decision threshold [default: the run's operating point].")
    predict.add_argument("--tta", type=parse_bool, nargs="?", const=True, default=None, metavar="BOOL", help="Average test-time variants (identity, zoom, darker, brighter): 4x the forward passes [default: the run's setting].")
    predict.add_argument("--json", action="store_true", help="Print JSON.")
    predict.add_argument("--records-log", default=None, metavar="FILE", help="Also append every record to this log (JSON lines, "
                         "rotated at 50 MB; no file names, no pixels) for `monitor` to watch.")
    add_pacs_options(predict)
    add_runs_dir(predict)
    predict.set_defaults(handler=command_predict)


def command_predict(args) -> int:
    import time

    from zoidberg.cli.terminal_progress import progress_bar
    from zoidberg.data.files import collect_images
    from zoidberg.inference.loading import load_ensemble
    from zoidberg.inference.scoring import FilmSource, file_sources, predict_sources

    if args.dicomweb and args.images:
        raise CliError("Predict files or a PACS study, not both: drop the paths or --dicomweb.")
    if not args.dicomweb and not args.images:
        raise CliError("Name the image files or folders to predict, or a PACS: --dicomweb URL --study UID (or --since DATE).")
    if args.dicomweb:
        return command_predict_pacs(args)
    ensemble = load_ensemble(args.run, runs_dir=args.runs_dir)
    threshold = ensemble.threshold if args.threshold is None else args.threshold
    tta = ensemble.tta if args.tta is None else args.tta
    files, skipped = collect_images(args.images)
    label_mode = "binary" if ensemble.is_binary else "three-class"
    start = time.perf_counter()
    # Skipped paths (not images) go through the same function, so their records are drawn as every other.
    sources = file_sources(files, label_mode=label_mode) + [FilmSource(str(item.path), error=item.reason) for item in skipped]
    with progress_bar("Predicting", enabled=not args.json and len(files) > 1) as progress:
        rows = predict_sources(ensemble, sources, door="cli", threshold=threshold, tta=tta, progress=progress)
    seconds = time.perf_counter() - start
    if args.csv:
        write_predictions_csv(args.csv, rows, list(ensemble.class_names))
    log_records(args, rows)
    failed = [row for row in rows if "error" in row]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if not failed else 1
    if len(rows) <= 50 or not args.csv:
        for row in rows:
            print(prediction_line(row, threshold))
    if ensemble.gate is None:
        print(f"Unchecked: {ensemble.gate_note}")
    print(predictions_summary(rows, seconds, tta))
    if args.csv:
        print(f"Wrote {len(rows)} rows to {args.csv}")
    return 0 if not failed else 1


def predictions_summary(rows: list[dict], seconds: float, tta: bool) -> str:
    """One line: how many files were predicted, in how long, the accuracy where labels are known, the failures."""
    predicted = [row for row in rows if "error" not in row]
    text = f"{len(predicted)} image(s) predicted in {seconds:.1f} s ({1000 * seconds / max(1, len(predicted)):.0f} ms per image"
    text += ", with test-time augmentation: 4 variants per image)" if tta else ")"
    # A refused film has no diagnosis, so it is neither correct nor wrong.
    labelled = [row for row in predicted if row.get("correct") is not None]
    if labelled:
        text += f"; {sum(row['correct'] for row in labelled)}/{len(labelled)} correct where the folder names the class"
    refused = sum(row.get("in_distribution") is False for row in predicted)
    if refused:
        text += f"; {refused} refused as unlike the training films (in_distribution false)"
    failed = len(rows) - len(predicted)
    return text + (f"; {failed} skipped or unreadable (see their rows)" if failed else "")
