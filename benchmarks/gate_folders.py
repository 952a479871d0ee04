#!/usr/bin/env python
"""The gate of a finished run measured per folder: how many films of each folder it refuses, and why.

    python benchmarks/gate_folders.py --run RUN_ID ../shared/data/ood_sample/* ../shared/data/chest_xray_site_sample \\
        ../shared/data/chest_xray_fullres [--json out.json]

Every image of each folder (recursively) is decoded as predict decodes it and passed through the
run's gate; the table gives, per folder, the films refused, those flagged as outside the training
population (adults) and the reasons. Nothing here sets a threshold: the gate was fitted on the
run's training films when the run ended.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(run_id: str, folders: list[str], runs_dir=None) -> list[dict]:
    from zoidberg.data.files import collect_images
    from zoidberg.data.imaging import decode_grayscale
    from zoidberg.inference.loading import load_ensemble

    ensemble = load_ensemble(run_id, runs_dir=runs_dir)
    rows = []
    for folder in folders:
        paths, _ = collect_images([folder])
        verdicts, names = [], []
        for path in paths:
            try:
                gray = decode_grayscale(path, draft_size=1024)
            except ValueError:
                continue
            verdicts.append(ensemble.gate_verdicts([gray])[0])
            names.append(path.name)
        refused = [name for name, verdict in zip(names, verdicts) if verdict is not None and not verdict.in_distribution]
        reasons = collections.Counter((verdict.reason or "").split(":")[0] for verdict in verdicts if verdict is not None and not verdict.in_distribution)
        rows.append({"folder": Path(folder).name, "images": len(names), "refused": len(refused), "passed": [n for n in names if n not in refused],
                     "reasons": dict(reasons)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--run", required=True)
    parser.add_argument("--runs-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args(argv)
    rows = measure(args.run, args.folders, args.runs_dir)
    print("| folder | images | refused | passed |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['folder']} | {row['images']} | {row['refused']} | {', '.join(row['passed'][:6])}{' ...' if len(row['passed']) > 6 else ''} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
