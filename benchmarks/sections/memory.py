"""Memory section: peak RSS of a 5-fold cross-validation at 224 px against the reference loop."""

from __future__ import annotations

import shutil
import sys

from harness import (
    BENCH_DIR,
    CV_FLAGS,
    Context,
    Row,
    check_child,
    child_environment,
    load_average,
    run_measured,
    run_steps,
    say,
)


def run_cv_pair(ctx: Context, tag: str, folds: int, epochs: int, size: int) -> dict[str, dict]:
    """Runs `python -m zoidberg cv` (cold cache) and the reference CV, each in its own process.

    One after the other, Zoidberg first; in quick mode both at once (peak RSS is per
    process, and quick timings mean nothing anyway).

    Returns:
        run_measured's result per side ("zoidberg", "reference").
    """
    cache_dir = ctx.scratch / f"{tag}-cache"  # Cold: a first run decodes, as a new user's does.
    commands = {
        "zoidberg": (
            [sys.executable, "-m", "zoidberg", "--runs-dir", ctx.scratch / f"{tag}-runs", "cv", "--data", ctx.data224,
             "--folds", folds, "--epochs", epochs, "--image-size", size, *CV_FLAGS],
            child_environment(ZOIDBERG_CACHE_DIR=str(cache_dir)),
        ),
        "reference": (
            [sys.executable, BENCH_DIR / "reference.py", "cv", "--data", ctx.data224, "--scratch", ctx.scratch,
             "--folds", folds, "--epochs", epochs, "--image-size", size, "--verbose", "2"],
            child_environment(),
        ),
    }
    results: dict[str, dict] = {}

    def run(side: str) -> None:
        command, environment = commands[side]
        results[side] = run_measured(command, ctx.log(f"{tag}-{side}"), environment)
        check_child(results[side], f"{side} cv ({tag})")
        say(f"{tag}: {side} {results[side]['wall_s']:,.0f} s, peak RSS {results[side]['peak_rss_mb']:,.0f} MB")

    say(f"{tag}: {folds}-fold CV x {epochs} epoch(s), CNN at {size} px, each side in its own process")
    run_steps([lambda: run("zoidberg"), lambda: run("reference")], concurrent=ctx.quick)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return results


def _tree_peak(result: dict) -> float | None:
    """The process tree's sampled peak, or the one process's ru_maxrss when the sampler saw nothing."""
    return result.get("peak_tree_rss_mb") or result["peak_rss_mb"]


def section_memory(ctx: Context) -> list[Row]:
    """Peak RSS of a whole CV (1 epoch) at 224 px, each side in its own process."""
    size, folds = ctx.memory_image_size, ctx.memory_folds
    results = run_cv_pair(ctx, "memory", folds, 1, size)
    note = (
        f"{folds}-fold CV, 1 epoch, CNN at {size} px on {ctx.data224.name}; the peak of the summed RSS of each side's "
        "process tree, sampled every 0.1 s (Zoidberg trains each fold in a child process), next to the largest single "
        f"process's ru_maxrss (Zoidberg {results['zoidberg']['peak_rss_mb']:,.0f} MB, reference {results['reference']['peak_rss_mb']:,.0f} MB) "
        f"and the tree's summed PSS, which counts shared pages such as the memory-mapped image cache once (Zoidberg "
        f"{results['zoidberg'].get('peak_tree_pss_mb') or 0:,.0f} MB, reference {results['reference'].get('peak_tree_pss_mb') or 0:,.0f} MB). "
        f"Wall time: reference {results['reference']['wall_s']:,.0f} s, Zoidberg {results['zoidberg']['wall_s']:,.0f} s (cold cache)."
    )
    if folds != 5:
        note += f" Fewer folds than the 5 asked for ({folds}), for both sides."
    return [
        Row(
            "memory", f"Peak RSS, {folds}-fold CV x 1 epoch at {size} px", "MB",
            _tree_peak(results["reference"]), _tree_peak(results["zoidberg"]), min_ratio=2.5,
            target_text="Zoidberg ≤ 1/2.5 (≥ 2.5×)", note=note, samples={**results, "load": load_average()},
        )
    ]
