"""The adapt command: a finished run adapted to a site's own labeled films, as a new run."""

from __future__ import annotations

import argparse
import json
import sys

from zoidberg.adaptation.config import ADAPT_METHOD_HELP, ADAPT_METHODS, MAX_PARTS, MIN_PARTS, AdaptConfig
from zoidberg.cli.options import add_operating_point_options, add_runs_dir, choice_from_args
from zoidberg.config import CALIBRATION_METHODS


def add_parsers(commands) -> None:
    """Adds adapt."""
    adapt = commands.add_parser(
        "adapt",
        help="Adapt a finished run to a site's own labeled films (a new run).",
        description="Fit site heads on a site's labeled films (NORMAL/ and PNEUMONIA/, or a labels file) on top of a finished cv or ensemble run. "
        "The new run records its parent, the site folder's fingerprint and the method; its site figures are cross-fitted by "
        "patient (each part scored and decided by heads fitted without it) and printed next to the parent's zero-shot "
        "figures, with patient-bootstrap intervals. Predict, evaluate, export, report and Compare treat it as any run. "
        "The new run id is the last line of standard output.",
    )
    adapt.add_argument("--run", required=True, metavar="RUN_ID", help="The finished cv or ensemble run to adapt (best, fast ...).")
    site = adapt.add_mutually_exclusive_group(required=True)
    site.add_argument("--data", metavar="SITE_DIR", help="The site's labeled films: NORMAL/ and PNEUMONIA/ (or a Kaggle layout).")
    site.add_argument("--labels", metavar="FILE", help="The site's labels file: the Label page's or label-next's JSON lines, or any CSV "
                      "with a header row and the columns file and label (normal, pneumonia or not_usable); relative paths start at "
                      "the file's folder. The run keeps a copy of what it read and records its digest.")
    adapt.add_argument("--unlabeled", default=None, metavar="DIR", help="Unlabeled films of the same site: they join the features' "
                       "standardization (what the site's films look like), never a fit.")
    adapt.add_argument("--method", choices=ADAPT_METHODS, default="head",
                       help="; ".join(f"{name}: {text}" for name, text in ADAPT_METHOD_HELP.items()) + " [default: head].")
    adapt.add_argument("--parts", dest="n_parts", type=int, default=5, metavar="K",
                       help=f"Cross-fit the site figures in K patient-grouped parts, {MIN_PARTS} to {MAX_PARTS} [default: 5].")
    adapt.add_argument("--seed", type=int, default=0, help="Seed of the parts [default: 0].")
    add_operating_point_options(adapt)
    adapt.add_argument("--calibration", dest="calibration_method", choices=CALIBRATION_METHODS, default="platt",
                       help="Fitted on the cross-fitted site predictions [default: platt].")
    adapt.add_argument("--name", default="", help="A readable run name.")
    adapt.add_argument("--background", action="store_true", help="Start a worker process and return the run id at once.")
    adapt.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    add_runs_dir(adapt)
    adapt.set_defaults(handler=command_adapt)


def _choice_or_parent(args: argparse.Namespace):
    """The threshold flags' rule, or None (the parent's) when none is given."""
    if args.threshold_method is None and args.target_sensitivity is None and args.target_specificity is None and args.prevalence is None:
        return None
    return choice_from_args(args)


def command_adapt(args) -> int:
    from zoidberg.evaluation.site_figures import describe_figure, describe_harm
    from zoidberg.cli.runs import run_or_start

    config = AdaptConfig(
        parent=args.run, site_dir=args.data or "", labels_file=args.labels, unlabeled_dir=args.unlabeled, method=args.method, n_parts=args.n_parts,
        random_state=args.seed, operating_point=_choice_or_parent(args), calibration_method=args.calibration_method,
        run_name=args.name or f"{args.run} adapted to {(args.data or args.labels).rstrip('/').split('/')[-1]}"[:80],
    )
    run_id, summary = run_or_start("adapt", config, args)
    if summary is None:
        print(run_id)
        return 0
    if "adaptation" not in summary:
        return 1
    if args.json:
        print(json.dumps({"run_id": run_id, **summary}, indent=2))
        print(run_id)
        return 0
    adaptation = summary["adaptation"]
    print(f"\nOn the {adaptation['adapted']['n']} site films ({adaptation['adapted']['n_patients']} patients), patient-bootstrap 95 % intervals:")
    print(f"{'':<26} {'AUC':<22} {'accuracy':<22} {'sensitivity':<22} {'specificity':<22}")
    for label, figures in (("parent, zero-shot", adaptation["zero_shot"]), ("adapted, cross-fitted", adaptation["adapted"])):
        print(f"{label:<26} " + " ".join(f"{describe_figure(figures[name]):<22}" for name in ("roc_auc", "accuracy", "sensitivity", "specificity")))
    if adaptation.get("labels_file"):
        counts = adaptation.get("labels_counts") or {}
        print(f"Labels: {adaptation['labels_file']} (sha256 {adaptation['labels_digest'][:12]}): {counts.get('normal', 0)} normal, "
              f"{counts.get('pneumonia', 0)} pneumonia, {counts.get('not_usable', 0)} not usable (left out), "
              f"{adaptation.get('labels_disagreements', 0)} where readers disagree (left out).")
    if adaptation.get("shift"):
        print(f"Shift check: {adaptation['shift']['sentence']}")
    print(f"Zero-shot: {describe_harm(adaptation['zero_shot'])}.")
    print(f"Adapted: {describe_harm(adaptation['adapted'])}.")
    print(f"Threshold for new films of this site: {summary['threshold']:.3f} ({summary['operating_point']}).", file=sys.stdout)
    print(run_id)
    return 0
