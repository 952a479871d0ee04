#!/usr/bin/env python
"""The Label page's screenshots: a film to label, with its keys, and the learning curve of the rounds adapted so far.

    python docs/label_screenshots.py --run BEST_RUN_ID --films SITE_FOLDER --labels-dir LABELS_DIR

The labels folder holds the labels file of that folder and run (make_screenshots' Dashboard
serves the page; the rounds are adapted beforehand with label-next, label and adapt --labels,
as README's loop does).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from docs.make_screenshots import Dashboard  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--run", required=True)
    parser.add_argument("--films", required=True)
    parser.add_argument("--labels-dir", required=True)
    args = parser.parse_args(argv)
    env = {**os.environ, "ZOIDBERG_LABELS_DIR": args.labels_dir}
    with Dashboard(env, height=1500) as dashboard:
        dashboard.go("Label", settle=8)
        dashboard.select("Run to adapt", args.run, settle=6)
        dashboard.fill("Folder of the site's films (read recursively; nothing is written there)", args.films)
        # Every film is scored once, gate first; then the first film shows.
        dashboard.page.wait_for_selector('[data-testid="stImage"]', timeout=300_000)
        time.sleep(3)
        dashboard.page.get_by_role("heading", name="Label").first.click()  # out of the folder field, as a reader would
        dashboard.page.keyboard.press("s")  # a key: skip to the next film
        time.sleep(8)
        dashboard.shot("label", height=1500)
        dashboard.page.get_by_text("Adapt in the background every").first.scroll_into_view_if_needed()
        time.sleep(3)
        dashboard.shot("label-curve", height=2600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
