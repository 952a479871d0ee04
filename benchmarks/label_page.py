#!/usr/bin/env python
"""The Label page in Chromium: seconds from a key (a label) to the next film on screen, over a run of labels.

    python benchmarks/label_page.py --run BEST_RUN_ID --films SITE_FOLDER [--labels 12]

Labels go to a fresh labels folder of its own (the reader answers "normal" to every film; the
labels are thrown away). Each press of N is timed until the film's caption changes on screen.
The result (median, 90th percentile, every time, the load) is appended to
benchmarks/results/label_page.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.harness import RESULTS_DIR, load_average  # noqa: E402
from docs.make_screenshots import Dashboard  # noqa: E402



def caption(page) -> str:
    """The caption under the film on screen."""
    return page.locator('[data-testid="stImage"]').first.inner_text()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--run", required=True)
    parser.add_argument("--films", required=True)
    parser.add_argument("--labels", type=int, default=12, help="Labels to time [default: 12].")
    parser.add_argument("--click", action="store_true", help="Click the Normal button instead of pressing N.")
    args = parser.parse_args(argv)
    labels_dir = tempfile.mkdtemp(prefix="zoidberg-label-bench-")
    env = {**os.environ, "ZOIDBERG_LABELS_DIR": labels_dir}
    seconds = []
    with Dashboard(env, height=1500) as dashboard:
        page = dashboard.page
        dashboard.go("Label", settle=8)
        dashboard.select("Run to adapt", args.run, settle=6)
        dashboard.fill("Folder of the site's films (read recursively; nothing is written there)", args.films)
        page.wait_for_selector('[data-testid="stImage"]', timeout=300_000)
        page.get_by_role("heading", name="Label").first.click()
        time.sleep(3)
        for _ in range(args.labels):
            before = caption(page)
            start = time.perf_counter()
            if args.click:
                page.get_by_role("button", name="Normal (N)").first.click()
            else:
                page.keyboard.press("n")
            deadline = start + 30
            while caption(page) == before and time.perf_counter() < deadline:
                time.sleep(0.01)
            seconds.append(round(time.perf_counter() - start, 3))
            time.sleep(0.5)  # a reader's glance, during which the next film is prefetched
    row = {"when": time.strftime("%Y-%m-%d %H:%M"), "run": args.run, "by": "click" if args.click else "key", "labels": len(seconds), "median_s": statistics.median(seconds),
           "p90_s": sorted(seconds)[int(0.9 * (len(seconds) - 1))], "seconds": seconds, "load": load_average()}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "label_page.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
