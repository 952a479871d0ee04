#!/usr/bin/env python
"""The Monitor page's screenshot: four weeks of a clinic's records, one with adults mixed in, one with side views.

    ZOIDBERG_WEIGHTS_DIR=../shared/weights python docs/monitor_screenshots.py --run ADAPTED_RUN_ID --films HELD_OUT_SITE_FILMS

The weeks are predicted with `predict --records-log` (as a clinic's service would log them) into a
scratch folder, then the page reads the four logs, one window per file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from docs.make_screenshots import Dashboard  # noqa: E402

OOD = REPO_ROOT.parent / "shared" / "data" / "ood_sample"


def make_weeks(run: str, films: list[Path], folder: Path) -> list[Path]:
    """Four weeks of 40 films: the site's, the site's with 8 adults, the site's, the site's with 8 side views or other radiographs."""
    from zoidberg.cli import main

    adults = sorted((OOD / "5_adult_frontal_cxr").iterdir())[:8]
    others = (sorted((OOD / "2_lateral_cxr").iterdir()) + sorted((OOD / "1_other_radiographs").iterdir()))[:8]
    weeks = [films[0:40], films[40:72] + adults, films[72:112], films[112:144] + others]
    logs = []
    for index, week in enumerate(weeks, start=1):
        log = folder / f"week{index}.jsonl"
        if not log.exists():
            main(["predict", "--run", run, "--records-log", str(log), "--json", *map(str, week)])
        logs.append(log)
    return logs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--run", required=True)
    parser.add_argument("--films", required=True, help="A folder of site films the run was not adapted on.")
    parser.add_argument("--work", default=tempfile.gettempdir() + "/zoidberg-monitor-shots")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    films = sorted(path for path in Path(args.films).rglob("*") if path.suffix.lower() in (".jpeg", ".jpg", ".png"))
    logs = make_weeks(args.run, films, work)
    with Dashboard({**os.environ}, height=1700) as dashboard:
        dashboard.go("Monitor", settle=6)
        dashboard.select("Run whose records are watched", args.run, settle=4)
        dashboard.page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files([str(log) for log in logs])
        time.sleep(10)
        dashboard.shot("monitor", height=1700)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
