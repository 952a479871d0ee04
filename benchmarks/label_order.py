#!/usr/bin/env python
"""Which films to label first: the site sample labeled in each ordering, adapted every 20 labels, measured two ways.

One command, from the repository root (resumable: run it again and it goes on):

    python benchmarks/label_order.py --run BEST_RUN_ID --orders stratified,random --seeds 0,1,2 --timeout 1800
    python benchmarks/label_order.py --write-doc          # BENCHMARKS.md's "label order" block from the results
    python benchmarks/label_order.py --quick              # tiny generated data: checks that it runs

The site sample's known labels play the reader. In each ordering (zoidberg.adaptation.ordering)
and seed, films are named 20 at a time by the same function label-next uses, "labeled", and the
parent is adapted on everything labeled so far by the engine's own cross-fit
(adaptation.crossfit.crossfit_heads, patient-grouped parts; no film labeled in a round is
scored by a head that saw it). Each point gives (a) the cross-fitted figures on the labeled
films, what the Label page's curve shows, and (b) the figures of the adapted model (the mean
of the part heads at the threshold chosen on all cross-fitted scores, as `adapt` does) on the
films not labeled yet, as a clinic's next films would be scored. Both with patient-bootstrap
intervals. Each point is one JSON line appended to benchmarks/results/label_order.jsonl as it
ends; a point with a line is skipped when the script runs again.
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
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.harness import RESULTS_DIR, load_average  # noqa: E402

RESULTS_FILE = RESULTS_DIR / "label_order.jsonl"
SITE = REPO_ROOT.parent / "shared" / "data" / "chest_xray_site_sample"
DOC_START = "<!-- label-order:start (written by benchmarks/label_order.py) -->"
DOC_END = "<!-- label-order:end -->"
FIGURES = ("roc_auc", "accuracy", "sensitivity", "specificity")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="The parent run (best's ensemble) [default: the newest completed ensemble in --runs-dir].")
    parser.add_argument("--runs-dir", default=None, help="The run store [default: $ZOIDBERG_RUNS_DIR or runs/].")
    parser.add_argument("--site", default=str(SITE), help="The labeled site sample that plays the clinic.")
    parser.add_argument("--orders", default="stratified,random,uncertain,diverse", help="Orderings to simulate.")
    parser.add_argument("--seeds", default="0,1,2", help="Seeds of each ordering.")
    parser.add_argument("--step", type=int, default=20, help="Labels per round [default: 20].")
    parser.add_argument("--most", type=int, default=200, help="Stop after this many labels [default: 200].")
    parser.add_argument("--with-unlabeled", action="store_true", help="The films not labeled yet join the heads' standardization "
                        "(adapt --unlabeled); recorded as ORDER+unlabeled.")
    parser.add_argument("--pool-threshold", action="store_true", help="The threshold chosen on the films not labeled yet "
                        "(adaptation.pool_threshold); recorded as ORDER+pool.")
    parser.add_argument("--matched-threshold", action="store_true", help="The threshold calls the same share of the site's films "
                        "as the cross-fitted threshold calls of the labeled ones (quantile matching); recorded as ORDER+matched.")
    parser.add_argument("--part-threshold", action="store_true", help="The threshold is the mean of the parts' own thresholds "
                        "(each chosen on its heads' inner out-of-fold scores); recorded as ORDER+parts.")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds per ordering and seed [default: 1800].")
    parser.add_argument("--results", default=str(RESULTS_FILE), help="The results file (JSON lines).")
    parser.add_argument("--quick", action="store_true", help="Tiny generated data and runs: checks that it runs.")
    parser.add_argument("--write-doc", action="store_true", help="Rewrite BENCHMARKS.md's block from the results and exit.")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(message, flush=True)


def site_inputs(parent_id: str, site: Path, store) -> dict:
    """The parent's scores, the heads' inputs and the truth of every site film, computed once (as adapt computes them)."""
    from zoidberg.adaptation.adapt import _parent_choice, frozen_member, load_site
    from zoidberg.adaptation.config import AdaptConfig
    from zoidberg.inference.adapted import AdaptedEnsemble
    from zoidberg.inference.loading import load_ensemble

    parent_run = store.get(parent_id)
    parent = load_ensemble(parent_id, runs_dir=store.root)
    loaded = load_site(AdaptConfig(parent=parent_id, site_dir=str(site)), parent_run.config.get("data") or {})
    rows = np.arange(len(loaded))
    feature_run = frozen_member(parent_run, store)
    feature = next((member for member in getattr(parent, "members", [parent]) if feature_run and member.run.id == feature_run.id), None)
    probe = AdaptedEnsemble(parent_run, parent, [], feature, None, 0.5, "raw", None)
    per_member = parent.score_dataset(loaded, rows)
    raw, calibrated = parent.combine(per_member)
    in_use = calibrated if parent.scale == "calibrated" and calibrated is not None else raw
    return {
        "inputs": probe.site_inputs(loaded, rows, per_member=per_member), "n_prior": len(probe._members),
        "labels": loaded.labels.astype(int), "groups": loaded.patients.astype(str), "positive": in_use[:, 1],
        "raw": raw[:, 1], "threshold": float(parent.threshold), "choice": _parent_choice(parent_run),
    }


def adapt_point(site: dict, labeled: np.ndarray, seed: int, with_unlabeled: bool = False, pool: bool = False, matched: bool = False,
                parts_mean: bool = False) -> dict:
    """Adapts on the labeled films (cross-fitted) and scores the rest with the adapted model, as adapt would."""
    from zoidberg.adaptation.crossfit import crossfit_heads
    from zoidberg.evaluation.site_figures import site_figures
    from zoidberg.evaluation.operating import choose_threshold

    labels, groups = site["labels"], site["groups"]
    rows = np.flatnonzero(labeled)
    smallest = min(len(np.unique(groups[rows][labels[rows] == label])) for label in (0, 1))
    parts = min(5, smallest)
    if parts < 2:
        return {"skipped": f"{smallest} patient(s) of a class among the labeled films"}
    start = time.perf_counter()
    crossfit = crossfit_heads(site["inputs"][rows], labels[rows], groups[rows], site["choice"], n_prior=site["n_prior"], n_parts=parts,
                              random_state=seed, unlabeled=site["inputs"][~labeled] if with_unlabeled else None)
    rest = np.flatnonzero(~labeled)
    positive = np.mean([head.positive(site["inputs"][rest]) for head in crossfit.heads], axis=0) if len(rest) else np.zeros(0)
    if pool:
        from zoidberg.adaptation.pool_threshold import choose_pool_threshold

        threshold = choose_pool_threshold(labels[rows], crossfit.positive, positive, site["choice"])
    else:
        threshold = choose_threshold(labels[rows], crossfit.positive, site["choice"])
    if parts_mean:
        threshold = float(np.mean(crossfit.thresholds))
    if matched:
        # The share of labeled films the cross-fitted threshold calls pneumonia, called among all the site's films.
        every = np.mean([head.positive(site["inputs"]) for head in crossfit.heads], axis=0)
        share = float(np.mean(crossfit.positive >= threshold))
        threshold = float(np.quantile(every, 1.0 - share, method="inverted_cdf")) if 0 < share < 1 else threshold
    seconds = time.perf_counter() - start
    point = {"parts": parts, "threshold": float(threshold), "adapt_seconds": round(seconds, 2),
             "crossfit": _short(site_figures(labels[rows], crossfit.positive, crossfit.decided, groups[rows]))}
    if len(rest) and len(np.unique(labels[rest])) == 2:
        point["unlabeled"] = _short(site_figures(labels[rest], positive, (positive >= threshold).astype(int), groups[rest]))
    return point


def zero_shot_point(site: dict, labeled: np.ndarray) -> dict:
    """The parent's own figures on the films not labeled (at its threshold): the curve's start."""
    from zoidberg.evaluation.site_figures import site_figures

    rest = np.flatnonzero(~labeled)
    decided = (site["positive"][rest] >= site["threshold"]).astype(int)
    return {"unlabeled": _short(site_figures(site["labels"][rest], site["raw"][rest], decided, site["groups"][rest]))}


def _short(figures: dict) -> dict:
    out = {name: [round(figures[name]["estimate"], 4), round(figures[name]["low"], 4), round(figures[name]["high"], 4)]
           for name in FIGURES if figures[name].get("estimate") is not None}
    return {**out, "n": figures["n"], "normal_called_pneumonia": figures["normal_called_pneumonia"], "n_normal": figures["n_normal"]}


def simulate(site: dict, order: str, seed: int, args, done: set, write) -> None:
    """Labels the site in one ordering, a round at a time; appends each round's point unless it is in the results already."""
    from zoidberg.adaptation.ordering import order_films

    labels = site["labels"]
    labeled = np.zeros(len(labels), dtype=bool)
    features = site["inputs"][:, site["n_prior"]:]
    name = order + ("+unlabeled" if args.with_unlabeled else "") + ("+pool" if args.pool_threshold else "") + ("+matched" if args.matched_threshold else "") + ("+parts" if args.part_threshold else "")
    if (name, seed, 0) not in done:
        write({"order": name, "seed": seed, "n_labels": 0, **zero_shot_point(site, labeled)})
    start = time.perf_counter()
    while labeled.sum() < min(args.most, len(labels)):
        picks = order_films(site["positive"], labeled, count=args.step, order=order, threshold=site["threshold"],
                            features=features, random_state=seed)
        labeled[[pick.index for pick in picks]] = True
        n = int(labeled.sum())
        if (name, seed, n) in done:
            continue
        if time.perf_counter() - start > args.timeout:
            say(f"{name} seed {seed}: over {args.timeout:.0f} s, stopped at {n} labels (run again to go on)")
            return
        point = adapt_point(site, labeled, seed, args.with_unlabeled, args.pool_threshold, args.matched_threshold, args.part_threshold)
        write({"order": name, "seed": seed, "n_labels": n, "labeled_normal": int(np.sum(labels[labeled] == 0)), **point,
               "load": load_average()})
        unlabeled = point.get("unlabeled") or {}
        say(f"{name:<11} seed {seed} {n:>4} labels: cross-fitted AUC {point.get('crossfit', {}).get('roc_auc', ['–'])[0]}, "
            f"not labeled: accuracy {unlabeled.get('accuracy', ['–'])[0]}, specificity {unlabeled.get('specificity', ['–'])[0]}, "
            f"sensitivity {unlabeled.get('sensitivity', ['–'])[0]} ({point.get('adapt_seconds')} s)")


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


DOC_COUNTS = (0, 20, 40, 60, 80, 100, 120, 160, 200)
DOC_ORDERS = ("stratified", "random", "diverse", "uncertain", "stratified+unlabeled", "random+unlabeled", "stratified+pool",
              "stratified+matched", "random+matched", "stratified+parts")


def summary_table(rows: list[dict], what: str = "unlabeled", target: float = 0.95) -> str:
    """One row per ordering, one column per label count: mean accuracy (± its mean interval half-width) · specificity ·
    sensitivity over the seeds, and in how many seeds sensitivity kept its target."""
    present = {row["order"] for row in rows}
    orders = [order for order in DOC_ORDERS if order in present] + sorted(present - set(DOC_ORDERS))
    counts = [count for count in DOC_COUNTS if any(row["n_labels"] == count for row in rows)]
    lines = ["| ordering | " + " | ".join(f"{count} labels" for count in counts) + " |", "|---" * (len(counts) + 1) + "|"]
    for order in orders:
        cells = []
        for count in counts:
            points = [row[what] for row in rows if row["order"] == order and row["n_labels"] == count and what in row]
            if not points:
                cells.append("–")
                continue
            mean = {name: np.mean([point[name][0] for point in points]) for name in FIGURES}
            half = np.mean([(point["accuracy"][2] - point["accuracy"][1]) / 2 for point in points])
            kept = sum(point["sensitivity"][0] >= target for point in points)
            cells.append(f"**{mean['accuracy']:.3f}** ±{half:.3f} · {mean['specificity']:.3f} · {mean['sensitivity']:.3f} ({kept}/{len(points)})")
        lines.append(f"| `{order}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc(path: Path) -> None:
    rows = read_results(path)
    from benchmarks.harness import replace_doc_block

    block = (f"**On the films not labeled yet** (the adapted model at its own threshold, as a clinic's next films; means over "
             f"the seeds of accuracy (± the mean half-width of its patient-bootstrap interval) · specificity · sensitivity, and "
             f"(in brackets) in how many seeds sensitivity kept the parent's 95 % target of all seeds run):\n\n{summary_table(rows, 'unlabeled')}\n\n"
             f"**Cross-fitted on the labeled films** (what the Label page's curve shows):\n\n{summary_table(rows, 'crossfit')}")
    replace_doc_block(block, start=DOC_START, end=DOC_END, heading="Which films to label first")


def quick_site(seed: int = 0) -> dict:
    """Generated inputs for --quick: two classes apart in a few features, three films a patient."""
    from zoidberg.config import OperatingPointChoice

    rng = np.random.default_rng(seed)
    n = 90
    labels = (rng.random(n) < 0.6).astype(int)
    positive = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, n), 0.02, 0.98)
    features = rng.normal(size=(n, 8)) + labels[:, None] * 0.7
    from zoidberg.models.site_heads import make_inputs

    return {"inputs": make_inputs(positive[None, :], features), "n_prior": 1, "labels": labels, "groups": np.array([f"p{i}" for i in range(n)]),
            "positive": positive, "raw": positive, "threshold": 0.5, "choice": OperatingPointChoice("target-sensitivity", target=0.9)}


def main(argv=None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    if args.write_doc:
        write_doc(results)
        return 0
    results.parent.mkdir(parents=True, exist_ok=True)
    if args.quick:
        site = quick_site()
    else:
        from zoidberg.runs.store import RunStore

        store = RunStore(args.runs_dir)
        parent_id = args.run or next(run.id for run in store.list_runs("ensemble") if run.state == "completed")
        say(f"Scoring {args.site} with run {parent_id} once ...")
        site = site_inputs(parent_id, Path(args.site), store)
    done = {(row["order"], row["seed"], row["n_labels"]) for row in read_results(results)}

    def write(row: dict) -> None:
        with open(results, "a") as handle:
            handle.write(json.dumps(row) + "\n")

    for order in args.orders.split(","):
        for seed in (int(value) for value in args.seeds.split(",")):
            simulate(site, order, seed, args, done, write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
