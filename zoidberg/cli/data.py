"""Commands about data: the synthetic demo set, fold assignments, the duplicate audit and patient-disjoint hold-outs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from zoidberg.cli.options import add_data_options
from zoidberg.config import DUPLICATE_POLICIES, DUPLICATE_POLICY_HELP

# The audit's perceptual hashes are taken at this size (the hash itself works at 64 px).
AUDIT_IMAGE_SIZE = 128


def add_parsers(commands) -> None:
    """Adds demo-data, folds, audit, holdout and weights."""
    weights = commands.add_parser(
        "weights", help="List the ImageNet weight files present and where; download one when online.",
        description="List every pretrained backbone's no-top ImageNet file: where it was found ($ZOIDBERG_WEIGHTS_DIR, "
        "the Keras cache) or that it is missing. With --download ARCH, fetch it with Keras' downloader into the Keras cache.",
    )
    weights.add_argument("--download", default=None, metavar="ARCH", help="Download this backbone's file (e.g. mobilenetv2).")
    weights.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2's width multiplier for --download [default: 1.0].")
    weights.add_argument("--json", action="store_true", help="Print JSON.")
    weights.set_defaults(handler=command_weights)

    demo = commands.add_parser("demo-data", help="Write the deterministic synthetic demo dataset.", description="Write the deterministic SYNTHETIC demo dataset (Kaggle layout, real naming scheme).")
    demo.add_argument("out", help="Output folder.")
    demo.add_argument("--seed", type=int, default=0, help="Random seed [default: 0].")
    demo.set_defaults(handler=command_demo_data)

    folds = commands.add_parser("folds", help="Write the patient-grouped fold assignment as CSV.", description="Assign pooled train+val images to stratified, patient-grouped folds and write path,patient,label,fold.")
    add_data_options(folds, with_size=False)
    folds.add_argument("--folds", type=int, default=5, help="Number of folds k [default: 5].")
    folds.add_argument("--seed", type=int, default=42, help="Random seed [default: 42].")
    folds.add_argument("--duplicates", choices=DUPLICATE_POLICIES, default="group", help=f"{DUPLICATE_POLICY_HELP} [default: group, as cv].")
    folds.add_argument("--out", default="-", help="CSV file to write ('-' for standard output).")
    folds.set_defaults(handler=command_folds)

    audit = commands.add_parser(
        "audit",
        help="List exact and near-duplicate images, and those that cross patients, splits or folds.",
        description="Audit a dataset for byte-identical files (SHA-256) and near-duplicates (256-bit perceptual hash "
        "within --max-bits), and say which groups cross patients, split folders or the folds cross-validation would use.",
    )
    add_data_options(audit, with_size=False)
    audit.add_argument("--max-bits", type=int, default=None, help="Largest perceptual-hash distance of near-duplicates, of 256 bits [default: 16].")
    audit.add_argument("--folds", type=int, default=5, help="Folds k whose crossings are checked, with duplicates ignored [default: 5].")
    audit.add_argument("--seed", type=int, default=42, help="Fold seed [default: 42].")
    audit.add_argument("--json", action="store_true", help="Print JSON.")
    audit.set_defaults(handler=command_audit)

    holdout = commands.add_parser(
        "holdout",
        help="Carve a patient-disjoint hold-out folder (links) to train on the rest and evaluate on it.",
        description="Split a dataset's train+val images into OUT/rest and OUT/holdout, patient-disjoint and stratified, "
        "as links (nothing is copied). Train with cv --data OUT/rest, then evaluate --data OUT/holdout.",
    )
    holdout.add_argument("--data", required=True, help="Dataset folder (Kaggle or flat layout).")
    holdout.add_argument("--out", required=True, help="A new folder for rest/ and holdout/.")
    holdout.add_argument("--fraction", type=float, default=0.2, help="Share of patients held out [default: 0.2].")
    holdout.add_argument("--seed", type=int, default=0, help="Seed of the choice [default: 0].")
    holdout.add_argument(
        "--by", dest="method", choices=("patient", "acquisition"), default="patient",
        help="patient: a stratified share of patients; acquisition: every NORMAL2-IM-* normal plus a share of the "
        "pneumonia patients (a shifted proxy: normals from another acquisition) [default: patient].",
    )
    holdout.set_defaults(handler=command_holdout)


def command_demo_data(args) -> int:
    from zoidberg.data.demo import make_demo_dataset

    path = make_demo_dataset(args.out, random_state=args.seed)
    print(f"Wrote the synthetic demo dataset to {path}")
    return 0


def command_folds(args) -> int:
    from zoidberg.data.dataset import load_dataset
    from zoidberg.data.duplicates import apply_duplicate_policy, load_or_find_duplicates
    from zoidberg.data.folds import fold_table, make_folds, shared_patients
    from zoidberg.data.summary import describe_dataset
    from zoidberg.runs.store import open_csv, write_atomically

    dataset = load_dataset(args.data, label_mode=args.label_mode, image_size=AUDIT_IMAGE_SIZE if args.duplicates != "ignore" else 32)
    for line in describe_dataset(dataset):
        print(line, file=sys.stderr)
    indices = dataset.training_indices()
    groups = dataset.patients
    if args.duplicates != "ignore":
        indices, groups, _ = apply_duplicate_policy(load_or_find_duplicates(dataset), dataset.patients, indices, args.duplicates)
    fold_of = make_folds(dataset.labels[indices], groups[indices], args.folds, args.seed)
    rows = fold_table([dataset.paths[i] for i in indices], dataset.patients[indices], dataset.labels[indices], fold_of, dataset.class_names)
    fields = ["path", "patient", "label", "fold"]
    if args.out == "-":
        writer = csv.DictWriter(sys.stdout, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    else:
        def write(staged):
            # A file name that is not valid UTF-8 is written byte for byte (see open_csv): it reads back as the path.
            with open_csv(staged, "w") as handle:
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)

        # Staged, then renamed: a failure leaves the previous file (or none), never half of one.
        write_atomically(Path(args.out).expanduser(), write)
        shared = shared_patients(dataset.patients[indices], fold_of)
        print(f"Wrote {len(rows)} rows, {args.folds} folds, {len(np.unique(dataset.patients[indices]))} patients; patients in two folds: {len(shared)}.")
    return 0


def command_audit(args) -> int:
    from zoidberg.data.dataset import load_dataset
    from zoidberg.data.duplicates import NEAR_DUPLICATE_BITS, find_duplicates, groups_crossing_folds
    from zoidberg.data.folds import make_folds

    max_bits = NEAR_DUPLICATE_BITS if args.max_bits is None else args.max_bits
    if not 0 <= max_bits <= 128:
        raise ValueError(f"--max-bits must be from 0 to 128 (of 256), not {max_bits}.")
    dataset = load_dataset(args.data, label_mode=args.label_mode, image_size=AUDIT_IMAGE_SIZE)
    report = find_duplicates(dataset, near_bits=max_bits)
    indices = dataset.training_indices()
    crossing = []
    try:
        fold_of = make_folds(dataset.labels[indices], dataset.patients[indices], args.folds, args.seed)
        crossing = groups_crossing_folds(report, indices, fold_of)
    except ValueError as error:
        print(f"Folds not checked: {error}", file=sys.stderr)
    if args.json:
        payload = {
            "data": str(dataset.root),
            "n_images": len(dataset),
            "summary": report.summary(),
            "groups": [group.to_dict() for group in report.groups],
            "crossing_folds": [{**group.to_dict(), "folds": list(folds)} for group, folds in crossing],
        }
        print(json.dumps(payload, indent=2))
        return 0
    summary = report.summary()
    print(
        f"{dataset.root}: {len(dataset)} images. {summary['exact_groups']} groups of byte-identical files "
        f"({summary['exact_images']} images), {summary['near_groups']} groups of near-duplicates within {max_bits} of 256 "
        f"perceptual-hash bits ({summary['near_images']} images)."
    )
    print(
        f"Across patients: {summary['crossing_patients']} group(s); across split folders: {summary['crossing_splits']}; "
        f"across the folds of k={args.folds}, seed {args.seed} (duplicates ignored): {len(crossing)}."
    )
    for group in report.groups:
        marks = [text for flag, text in ((group.crosses_patients, "ACROSS PATIENTS"), (group.crosses_splits, "ACROSS SPLITS")) if flag]
        distance = f", {group.max_bits} bits" if group.kind == "near" else ""
        print(f"  {group.kind}{distance}: {', '.join(group.paths)}" + (f"  [{'; '.join(marks)}]" if marks else ""))
    if crossing:
        print("Groups whose copies would land in different folds (cv --duplicates group keeps them together):")
        for group, folds in crossing:
            print(f"  folds {', '.join(map(str, folds))}: {', '.join(group.paths)}")
    return 0


def command_holdout(args) -> int:
    from zoidberg.data.holdout import carve_holdout

    holdout = carve_holdout(args.data, args.out, fraction=args.fraction, random_state=args.seed, method=args.method)
    for name in ("rest", "holdout"):
        counts = ", ".join(f"{folder} {count}" for folder, count in sorted(holdout.counts[name].items()))
        print(f"{name:>8}: {getattr(holdout, name)}  ({counts}; {holdout.patients[name]} patients)")
    print(
        f"Patient-disjoint ({holdout.method}). Train: python -m zoidberg cv --data {holdout.rest} ...; "
        f"then: python -m zoidberg evaluate --run RUN_ID --data {holdout.holdout}"
    )
    return 0


def command_weights(args) -> int:
    from zoidberg.models.weights import download_imagenet_weights, weights_inventory, weights_search_dirs

    if args.download:
        path = download_imagenet_weights(args.download, args.alpha)
        print(f"Downloaded {path}")
        return 0
    rows = weights_inventory()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("Searched: " + ", ".join(str(folder) for folder in weights_search_dirs()))
    for row in rows:
        what = row["architecture"] + (f" {row['alpha']:g}" if row["alpha"] is not None else "")
        print(f"{what:<20} {'present ' + row['path'] if row['path'] else 'missing (' + row['file'] + ')'}")
    return 0
