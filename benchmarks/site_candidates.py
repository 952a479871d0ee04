"""The recipes benchmarks/site.py judges at the site: the presets, and the candidates of the search for a better best."""

from __future__ import annotations

import dataclasses

from benchmarks.quality import SENSITIVE, shrink
from zoidberg.models.presets import make_preset_config

__all__ = ["CANDIDATES", "SENSITIVE", "candidate_config"]

# name -> {"description", "preset" (and "changes"), or "members" (an ensemble of other candidates)}.
# Only MobileNetV2 0.35 and 0.5 ImageNet weights exist here: the search varies those, the
# notes' CNN, resolution, fine-tuning depth and seeds, and which members an ensemble keeps.
CANDIDATES: dict[str, dict] = {
    "fast": {"description": "the fast preset: MobileNetV2 0.5 frozen at 224 px, 5 folds", "preset": "fast"},
    "balanced": {"description": "the balanced preset: MobileNetV2 0.35 fine-tuned (top 20 layers) at 128 px, 3 folds", "preset": "balanced"},
    "scratch": {"description": "the scratch preset: the notes' CNN at 128 px, 3 folds", "preset": "scratch"},
    "best": {"description": "the best preset: fast, balanced and scratch averaged", "members": ("fast", "balanced", "scratch")},
    "fast-035": {"description": "MobileNetV2 0.35 frozen at 224 px, 5 folds (another backbone)",
                 "preset": "fast", "changes": {"alpha": 0.35}},
    "balanced-seed7": {"description": "the balanced preset with seed 7 (a member by seed)", "preset": "balanced", "changes": {"random_state": 7}},
    "balanced-160": {"description": "the balanced preset at 160 px (a member by resolution)", "preset": "balanced", "changes": {"image_size": 160}},
    "finetune-050-224": {"description": "MobileNetV2 0.5 fine-tuned (top 20 layers) at 224 px, 4 epochs, 3 folds",
                         "preset": "balanced", "changes": {"alpha": 0.5, "image_size": 224}},
    "best-mobilenets": {"description": "fast, balanced and balanced at 160 px averaged (scratch left out)",
                        "members": ("fast", "balanced", "balanced-160")},
    "best-four": {"description": "fast, balanced, balanced at 160 px and scratch averaged", "members": ("fast", "balanced", "balanced-160", "scratch")},
    # Issue 20: the same recipes under mixed bfloat16 (this CPU has AVX-512 BF16), to price its quality on the site.
    "scratch-bf16": {"description": "the scratch preset under --precision mixed (bfloat16 on this CPU)", "preset": "scratch", "precision": "mixed"},
    "balanced-bf16": {"description": "the balanced preset under --precision mixed (bfloat16 on this CPU)", "preset": "balanced", "precision": "mixed"},
}


def candidate_config(name: str, data_dir: str, *, quick: bool = False):
    """The RunConfig of a single-run candidate on a folder (an ensemble candidate combines other candidates' runs).

    Args:
        name: A key of CANDIDATES.
        data_dir: The training folder.
        quick: Shrink to 48 px, k=2, one or two epochs and no weights file (checks that it runs).
    """
    candidate = CANDIDATES[name]
    if "members" in candidate:
        raise ValueError(f"{name} combines {', '.join(candidate['members'])}: train those, then combine them.")
    config = make_preset_config(candidate["preset"], data_dir, run_name=name, **candidate.get("changes", {}))
    if candidate.get("precision"):
        # How the run computes, not what the recipe is: set on the run, never on a preset.
        config = dataclasses.replace(config, precision=candidate["precision"])
    return shrink(config) if quick else config
