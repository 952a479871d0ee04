"""Scaling sections: folds two at a time against one at a time, and the Ray engine against the local one."""

from __future__ import annotations

import json
import sys

from harness import CV_FLAGS, Context, Row, check_child, child_environment, load_average, run_measured, say

# The Ray comparison trains small folds, where the engine's fixed costs show.
RAY_FOLDS = 3
RAY_EPOCHS = 1
RAY_IMAGE_SIZE = 64


def run_zoidberg_cv(ctx: Context, tag: str, folds: int, epochs: int, size: int, flags: list[str], cache_dir) -> dict:
    """Runs `python -m zoidberg cv --json` in its own process (warm cache); returns run_measured's result plus the summary."""
    command = [sys.executable, "-m", "zoidberg", "--runs-dir", ctx.scratch / f"{tag}-runs", "cv", "--data", ctx.data224,
               "--folds", folds, "--epochs", epochs, "--image-size", size, *CV_FLAGS, "--no-tensorboard", "--json", *flags]
    result = run_measured(command, ctx.log(tag), child_environment(ZOIDBERG_CACHE_DIR=str(cache_dir)))
    check_child(result, f"zoidberg cv ({tag})")
    text = open(result["log"], encoding="utf-8", errors="replace").read()
    start = text.rfind('\n{\n  "run_id"')
    summary = json.loads(text[start:text.rfind("}") + 1]) if start >= 0 else {}
    result["roc_auc"] = ((summary.get("mean_std") or {}).get("roc_auc") or {}).get("mean")
    say(f"{tag}: {result['wall_s']:,.1f} s, CPU {result['cpu_s']:,.0f} s, AUC {result['roc_auc']}")
    return result


def _warm_cache(ctx: Context, size: int):
    from zoidberg.data.dataset import load_dataset

    cache_dir = ctx.scratch / "scaling-cache"
    load_dataset(ctx.data224, image_size=size, cache_dir=cache_dir)
    return cache_dir


def section_parallel(ctx: Context) -> list[Row]:
    """The e2e CV with `--parallel 2` against the same CV one fold at a time (both the local engine, warm cache)."""
    folds, epochs, size = ctx.e2e_folds, ctx.e2e_epochs, ctx.image_size
    cache_dir = _warm_cache(ctx, size)
    say(f"parallel: {folds}-fold CV x {epochs} epoch(s) at {size} px, --parallel 1 then --parallel 2")
    sequential = run_zoidberg_cv(ctx, "parallel-1", folds, epochs, size, ["--engine", "local", "--parallel", "1"], cache_dir)
    together = run_zoidberg_cv(ctx, "parallel-2", folds, epochs, size, ["--engine", "local", "--parallel", "2"], cache_dir)
    return [
        Row(
            "parallel", f"--parallel 2 vs one fold at a time: {folds}-fold x {epochs} epochs at {size} px", "s",
            sequential["wall_s"], together["wall_s"], min_ratio=1.0, target_text="≥ 1× (report honestly if 2 cores cannot gain)",
            note=(
                f"Both `python -m zoidberg cv --engine local` (a process per fold), warm cache, one after the other on "
                f"{__import__('os').cpu_count()} cores; the 'reference' column is Zoidberg with --parallel 1. CPU time: "
                f"{sequential['cpu_s']:,.0f} s against {together['cpu_s']:,.0f} s; peak tree RSS "
                f"{sequential.get('peak_tree_rss_mb') or sequential['peak_rss_mb']:,.0f} against "
                f"{together.get('peak_tree_rss_mb') or together['peak_rss_mb']:,.0f} MB; AUC {sequential['roc_auc']:.3f} against {together['roc_auc']:.3f}."
            ),
            samples={"sequential": sequential, "parallel": together, "load": load_average()},
        )
    ]


def section_ray(ctx: Context) -> list[Row]:
    """A small CV on a private local Ray against the local engine, same settings (a process per fold on both)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        say("ray: Ray is not installed (pip install -r requirements-ray.txt); section skipped")
        return []
    folds, epochs, size = (2, 1, 32) if ctx.quick else (RAY_FOLDS, RAY_EPOCHS, RAY_IMAGE_SIZE)
    cache_dir = _warm_cache(ctx, size)
    say(f"ray: {folds}-fold CV x {epochs} epoch at {size} px, --engine local then --engine ray")
    local = run_zoidberg_cv(ctx, "ray-local", folds, epochs, size, ["--engine", "local"], cache_dir)
    on_ray = run_zoidberg_cv(ctx, "ray-ray", folds, epochs, size, ["--engine", "ray"], cache_dir)
    overhead = on_ray["wall_s"] - local["wall_s"]
    return [
        Row(
            "ray", f"Ray engine overhead: {folds}-fold x {epochs} epoch at {size} px, private local Ray vs local", "s",
            local["wall_s"], on_ray["wall_s"], max_zoidberg=local["wall_s"] + 15.0,
            target_text=f"overhead ≤ 15 s (Ray ≤ {local['wall_s'] + 15.0:,.0f} s)",
            zoidberg_detail=f"overhead {overhead:+.1f} s",
            note=(
                f"Both `python -m zoidberg cv`, --parallel 1, warm cache, one after the other; the 'reference' column is "
                f"the local engine. Ray's side includes starting and stopping a private local Ray and shipping the "
                f"package (runtime_env py_modules) and the images (object store). CPU time: local {local['cpu_s']:,.0f} s, "
                f"Ray driver tree {on_ray['cpu_s']:,.0f} s (Ray's own processes are not the driver's children); "
                f"AUC local {local['roc_auc']:.3f}, Ray {on_ray['roc_auc']:.3f}."
            ),
            samples={"local": local, "ray": on_ray, "overhead_s": overhead, "load": load_average()},
        )
    ]
