"""End-to-end section: wall time of `python -m zoidberg cv` against the reference loop, same folds and epochs."""

from __future__ import annotations

from harness import CV_FLAGS, Context, Row, load_average

from sections.memory import run_cv_pair


def section_e2e(ctx: Context) -> list[Row]:
    """Wall time of `python -m zoidberg cv` vs the reference loop, same folds/epochs/size."""
    folds, epochs, size = ctx.e2e_folds, ctx.e2e_epochs, ctx.image_size
    results = run_cv_pair(ctx, "e2e", folds, epochs, size)
    reference_result, zoidberg = results["reference"], results["zoidberg"]
    return [
        Row(
            "e2e", f"End to end: {folds}-fold x {epochs} epochs, CNN at {size} px", "s",
            reference_result["wall_s"], zoidberg["wall_s"], min_ratio=1.2,
            target_text="≥ 1.2×",
            note=(
                f"One run each (process launch to exit). `python -m zoidberg cv {' '.join(CV_FLAGS)}` with a cold cache "
                "(also writes models, out-of-fold predictions, metrics) vs `benchmarks/reference.py cv`. "
                f"CPU time: reference {reference_result['cpu_s']:,.0f} s, Zoidberg {zoidberg['cpu_s']:,.0f} s; "
                f"peak RSS: reference {reference_result['peak_rss_mb']:,.0f} MB, Zoidberg {zoidberg['peak_rss_mb']:,.0f} MB."
            ),
            samples={"reference": reference_result, "zoidberg": zoidberg, "load": load_average()},
        )
    ]
