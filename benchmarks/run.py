#!/usr/bin/env python
"""Benchmarks Zoidberg against the design notes' pipeline ("reference", benchmarks/reference.py).

One command, from the repository root:

    python benchmarks/run.py                      # everything on ../shared/data (1 to 2 hours)
    python benchmarks/run.py --quick              # tiny generated data, every section, about a minute
    python benchmarks/run.py --sections predict,startup --merge   # re-measure some sections only

It prints a markdown table (measure, reference, Zoidberg, ratio, target, met?) and writes
JSON (benchmarks/results/latest.json; --quick writes benchmarks/results/quick.json). A run
on the real data (unless --no-doc) also rewrites the results block of BENCHMARKS.md with
every row the JSON holds, naming the sections it has none for.

The machine is shared and noisy, so every ratio is measured in one process run,
alternating reference and Zoidberg, and short figures are medians of several repeats. The
ratio column is always Zoidberg's advantage: reference time / Zoidberg time, Zoidberg
throughput / reference throughput, reference memory / Zoidberg memory (> 1: Zoidberg wins).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness import (  # noqa: E402
    DOC_PATH,
    RESULTS_DIR,
    LONG_SECTIONS,
    SECTIONS,
    SHARED_DATA,
    Context,
    load_average,
    machine_facts,
    make_quick_data,
    markdown_table,
    notes_list,
    ordered_rows,
    say,
    update_doc,
    write_json,
)
from sections import data, e2e, memory, predict, scaling, startup, train  # noqa: E402

SECTION_FUNCTIONS = {
    "data": data.section_data,
    "train": train.section_train,
    "predict": predict.section_predict,
    "memory": memory.section_memory,
    "startup": startup.section_startup,
    "e2e": e2e.section_e2e,
    "parallel": scaling.section_parallel,
    "ray": scaling.section_ray,
}



def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny generated data and few repeats: checks that everything runs (numbers mean nothing).")
    parser.add_argument("--sections", default=None, help=f"Comma-separated sections to run [default: all: {','.join(SECTIONS)}; quick: all but {','.join(LONG_SECTIONS)}].")
    parser.add_argument("--skip", default="", help="Comma-separated sections to leave out.")
    parser.add_argument("--repeats", type=int, default=None, help="Repeats of the data, training and start-up measures [default: 3; quick: 1].")
    parser.add_argument("--latency-repeats", type=int, default=None, help="Calls per prediction latency [default: 60; quick: 4].")
    parser.add_argument("--train-epochs", type=int, default=None, help="Epochs per side in the throughput measure, the first (tracing) excluded [default: 7; quick: 2].")
    parser.add_argument("--train-images", type=int, default=None, help="CNN training images per epoch [default: 320; quick: 32]; MobileNetV2 uses half.")
    parser.add_argument("--memory-folds", type=int, default=None, help="Folds of the peak-memory CV [default: 5; quick: 2].")
    parser.add_argument("--e2e-folds", type=int, default=None, help="Folds of the end-to-end CV [default: 5; quick: 2].")
    parser.add_argument("--e2e-epochs", type=int, default=None, help="Epochs of the end-to-end CV [default: 3; quick: 1].")
    parser.add_argument("--data-root", type=Path, default=SHARED_DATA, help=f"Folder with chest_xray_fullres/ and chest_xray_224/ [default: {SHARED_DATA}].")
    parser.add_argument("--out", type=Path, default=None, help="JSON output [default: benchmarks/results/latest.json; quick: benchmarks/results/quick.json].")
    parser.add_argument("--merge", action="store_true", help="Keep the other sections' rows of an existing --out file (re-measure some sections only).")
    parser.add_argument("--no-doc", action="store_true", help="Never rewrite BENCHMARKS.md.")
    parser.add_argument("--keep-scratch", action="store_true", help="Keep the scratch folder (logs, runs, caches).")
    args = parser.parse_args(argv)
    default_sections = [name for name in SECTIONS if not (args.quick and name in LONG_SECTIONS)]
    sections = [name.strip() for name in args.sections.split(",") if name.strip()] if args.sections else default_sections
    skipped = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = [name for name in [*sections, *skipped] if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [name for name in SECTIONS if name in sections and name not in skipped]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    out = args.out or RESULTS_DIR / ("quick.json" if quick else "latest.json")
    scratch = Path(tempfile.mkdtemp(prefix="zoidberg-bench-"))
    if quick:
        fullres, data224 = make_quick_data(scratch)
    else:
        fullres, data224 = args.data_root / "chest_xray_fullres", args.data_root / "chest_xray_224"
        missing = [str(path) for path in (fullres, data224) if not path.is_dir()]
        if missing:
            print(f"error: data folder(s) missing: {', '.join(missing)} (use --quick for generated data, or --data-root)", file=sys.stderr)
            return 2
    train_images = args.train_images or (32 if quick else 320)
    ctx = Context(
        quick=quick,
        repeats=args.repeats or (1 if quick else 3),
        latency_repeats=args.latency_repeats or (4 if quick else 60),
        scratch=scratch,
        fullres=fullres.resolve(),
        data224=data224.resolve(),
        image_size=64 if quick else 128,
        memory_image_size=64 if quick else 224,
        memory_folds=args.memory_folds or (2 if quick else 5),
        e2e_folds=args.e2e_folds or (2 if quick else 5),
        e2e_epochs=args.e2e_epochs or (1 if quick else 3),
        train_images={"cnn": train_images, "mobilenetv2": max(16, train_images // 2)},
        train_epochs=max(2, args.train_epochs or (2 if quick else 7)),
        cache_dir=scratch / "cache",
        architectures=("cnn",) if quick else ("cnn", "mobilenetv2"),
    )
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    payload = {"generated": "", "command": command, "quick": quick, "machine": machine_facts(), "sections": {}, "rows": []}
    if args.merge and out.exists():
        previous = json.loads(out.read_text(encoding="utf-8"))
        if previous.get("quick") == quick:
            payload["sections"] = {name: info for name, info in previous.get("sections", {}).items() if name not in args.sections}
            payload["rows"] = [row for row in previous.get("rows", []) if row["section"] not in args.sections]
    status = 0
    try:
        for name in args.sections:
            started = time.time()
            say(f"section {name} ...")
            load_start = load_average()
            try:
                rows = SECTION_FUNCTIONS[name](ctx)
            except Exception as error:  # One broken section must not lose the others' numbers.
                import traceback

                traceback.print_exc()
                status = 1
                payload["sections"][name] = {"error": f"{type(error).__name__}: {error}", "load_start": load_start, "load_end": load_average()}
                continue
            payload["sections"][name] = {
                "finished": _dt.datetime.now().isoformat(timespec="seconds"),
                "seconds": round(time.time() - started, 1),
                "load_start": load_start,
                "load_end": load_average(),
                "command": command,
            }
            payload["rows"] = ordered_rows([row for row in payload["rows"] if row["section"] != name] + [row.to_json() for row in rows])
            payload["generated"] = _dt.datetime.now().astimezone().isoformat(timespec="minutes")
            write_json(out, payload)
            say(f"section {name} done in {time.time() - started:,.0f} s")
    finally:
        if not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            say(f"scratch kept in {scratch}")
    payload["generated"] = _dt.datetime.now().astimezone().isoformat(timespec="minutes")
    write_json(out, payload)
    print(markdown_table(payload["rows"]))
    print()
    print(notes_list(payload["rows"]))
    # A partial run still rewrites the block: it names the sections that have no rows.
    if not quick and not args.no_doc and update_doc(payload):
        say(f"updated {DOC_PATH.relative_to(REPO_ROOT)}")
    say(f"wrote {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
