"""Named, documented training recipes (fast, balanced, best, scratch): one run each, or an ensemble of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zoidberg.config import (
    DataConfig,
    EnsembleConfig,
    ModelConfig,
    OperatingPointChoice,
    RunConfig,
    TrainConfig,
    make_data_config,
)

# Every preset sets values of these groups; anything it leaves out keeps its usual default.
GROUPS = ("data", "model", "train", "run")
# The RunConfig fields a preset may set besides data, model and training.
RUN_FIELDS = ("n_splits", "random_state", "tta")


@dataclass(frozen=True)
class Preset:
    """One recipe.

    Attributes:
        name: What --preset takes and config.json records.
        label: The button's text.
        description: What it trains and why, for the form and --help.
        expected_time: The wall time measured on the project's 2-core CPU (BENCHMARKS.md).
        data: DataConfig fields (image_size, resize, enhance).
        model: ModelConfig fields, with "architecture".
        train: TrainConfig fields.
        run: RunConfig fields of RUN_FIELDS.
        operating_point: The OperatingPointChoice fields.
        alternative: The preset to offer when this one's weights file is missing.
        site_figures: What it scored on films of other children (the 312-film site sample,
            benchmarks/site.py), zero-shot and adapted with `adapt`, with intervals.
        members: For an ensemble preset: the presets it trains one after another, then
            combines (its own data, model and train fields are then empty).
        method: How an ensemble preset combines its members.
    """

    name: str
    label: str
    description: str
    expected_time: str
    data: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)
    operating_point: Mapping[str, Any] = field(default_factory=dict)
    alternative: str | None = None
    site_figures: str = ""
    members: tuple[str, ...] = ()
    method: str = "mean"

    @property
    def is_ensemble(self) -> bool:
        """Whether it trains several runs and combines them."""
        return bool(self.members)

    @property
    def architecture(self) -> str:
        """The registry key of the architecture it trains."""
        return str(self.model.get("architecture", "cnn"))

    @property
    def needs_weights(self) -> bool:
        """Whether it (or one of its members) starts from ImageNet weights (a local file)."""
        return self.model.get("weights") == "imagenet" or any(PRESETS[member].needs_weights for member in self.members)

    def weights_needed(self) -> list[tuple[str, float]]:
        """(architecture, alpha) of every ImageNet backbone it needs, once each."""
        if self.members:
            return list(dict.fromkeys(need for member in self.members for need in PRESETS[member].weights_needed()))
        return [(self.architecture, float(self.model.get("alpha", 1.0)))] if self.model.get("weights") == "imagenet" else []

    def flat_values(self) -> dict[str, Any]:
        """{field name: value} of every field it sets (data, model, training, run), for forms and flags."""
        values: dict[str, Any] = {}
        for group in (self.data, self.model, self.train, self.run):
            values.update(group)
        return values


# The operating point of every preset: the threshold that keeps 95 % of pneumonia found on
# the out-of-fold predictions, which the notes' clinicians asked for; the prevalence is the
# training data's unless the user states another.
SENSITIVE = {"method": "target-sensitivity", "target": 0.95}

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="fast",
            site_figures="new site (312 films of other children): zero-shot AUC 0.965 [0.943, 0.982], specificity 0.68 [0.59, 0.76] (38 of 117 healthy children called pneumonia); after `adapt` (cross-fitted) AUC 0.975 [0.953, 0.991], accuracy 0.94 [0.91, 0.96], specificity 0.92 [0.86, 0.96]",
            label="Fast",
            description="MobileNetV2 0.5 with ImageNet weights, frozen, 224 px: the backbone runs once per image and "
            "only a small head trains per fold. The quickest strong baseline.",
            expected_time="measured 72 s on 2 CPU cores for 5,232 images with its features cold (BENCHMARKS.md), seconds once they are cached",
            data={"image_size": 224},
            model={"architecture": "mobilenetv2", "alpha": 0.5, "weights": "imagenet", "transfer_mode": "frozen", "dropout_rate": 0.3},
            train={"epochs": 15, "learning_rate": 0.001, "batch_size": 32, "early_stopping_patience": 3},
            run={"n_splits": 5},
            operating_point=SENSITIVE,
            alternative="scratch",
        ),
        Preset(
            name="balanced",
            site_figures="new site (312 films of other children): zero-shot AUC 0.964 [0.943, 0.981], specificity 0.72 [0.62, 0.80] (33 of 117 healthy children called pneumonia); after `adapt --method recalibrate` (cross-fitted) AUC 0.962 [0.939, 0.979], accuracy 0.92 [0.88, 0.95], specificity 0.85 [0.78, 0.91]",
            label="Balanced",
            description="MobileNetV2 0.35 with ImageNet weights at 128 px, fine-tuned: the head warms up on cached "
            "features for half the epochs, then the top 20 backbone layers train on the images at a tenth of the "
            "learning rate.",
            expected_time="measured 2.8 min on 2 CPU cores for 5,232 images (BENCHMARKS.md, site sample table)",
            data={"image_size": 128},
            model={"architecture": "mobilenetv2", "alpha": 0.35, "weights": "imagenet", "transfer_mode": "fine-tune", "fine_tune_layers": 20},
            train={"epochs": 4},
            run={"n_splits": 3},
            operating_point=SENSITIVE,
            alternative="scratch",
        ),
        Preset(
            name="best",
            site_figures="new site (312 films of other children): zero-shot AUC 0.970 [0.952, 0.985], specificity 0.66 [0.56, 0.75] (40 of 117 healthy children called pneumonia); after `adapt` (cross-fitted) AUC 0.979 [0.963, 0.991], accuracy 0.94 [0.91, 0.96], specificity 0.93 [0.89, 0.98] at sensitivity 0.94 [0.91, 0.97]",
            label="Best",
            description="The fast, balanced and scratch presets trained one after another on the same folder, then "
            "averaged into one ensemble run: a frozen and a fine-tuned ImageNet MobileNetV2 and a CNN from scratch "
            "err on different films. On the site sample their mean ranks films best (the highest AUC, its interval "
            "overlapping fast's and balanced's), but at its sensitive threshold it calls more healthy children "
            "pneumonia than fast or balanced: `adapt` to the site is what fixes its decisions. Its threshold and "
            "calibration are fitted on the three runs' combined out-of-fold predictions.",
            expected_time="measured 6 min 36 s on 2 CPU cores for 5,232 images with warm caches, its members included (BENCHMARKS.md); longer on a loaded machine",
            operating_point=SENSITIVE,
            alternative="scratch",
            members=("fast", "balanced", "scratch"),
            method="mean",
        ),
        Preset(
            name="scratch",
            site_figures="new site (312 films of other children): zero-shot AUC 0.936 [0.905, 0.961], specificity 0.45 [0.36, 0.55] (64 of 117 healthy children called pneumonia); after `adapt --method recalibrate` (cross-fitted) AUC 0.933 [0.899, 0.959], accuracy 0.87 [0.82, 0.91], specificity 0.73 [0.64, 0.80]",
            label="From scratch",
            description="The design notes' CNN (three Conv2D/MaxPooling blocks of 32, 64 and 128 filters, dense 128, "
            "dropout 0.3) trained from scratch at 128 px: needs no weights file. Alone it is weaker on new "
            "hospitals than the pretrained presets; in the best preset it errs where they do not.",
            expected_time="measured 3.8 min on 2 CPU cores for 5,232 images in bfloat16 (BENCHMARKS.md, site sample table); about 9 min where the CPU has no bfloat16",
            data={"image_size": 128},
            model={"architecture": "cnn", "conv_blocks": 3, "base_filters": 32, "dense_units": 128, "dropout_rate": 0.3},
            train={"epochs": 4},
            run={"n_splits": 3},
            operating_point=SENSITIVE,
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Returns the preset called `name`.

    Raises:
        ValueError: For an unknown name, naming the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def make_preset_config(name: str, data_dir: str, *, label_mode: str = "binary", run_name: str = "", **changes) -> RunConfig | EnsembleConfig:
    """Builds the validated configuration of a preset on a data folder.

    Args:
        name: The preset.
        data_dir: The labeled folder.
        label_mode: "binary" or "three-class".
        run_name: Optional run name.
        **changes: Field values that replace the preset's (any data, model, train or run
            field; an ensemble preset takes only random_state, for every member).

    Returns:
        A RunConfig, or an EnsembleConfig whose recipes are its members' RunConfigs; the
        preset is recorded in either.

    Raises:
        ValueError: An unknown preset or field, or a value the configs refuse.
    """
    preset = get_preset(name)
    if preset.is_ensemble:
        unknown = sorted(set(changes) - {"random_state"})
        if unknown:
            raise ValueError(
                f"The {preset.name} preset trains the {', '.join(preset.members)} presets and combines them, so "
                f"{', '.join(unknown)} cannot be changed for all of them at once: train a member with its own preset "
                "and your changes, then combine the runs with `ensemble`."
            )
        recipes = tuple(
            make_preset_config(member, data_dir, label_mode=label_mode, run_name=f"{run_name or preset.label} - {member}"[:80], **changes)
            for member in preset.members
        )
        return EnsembleConfig(
            recipes=recipes, method=preset.method, operating_point=OperatingPointChoice.from_dict(preset.operating_point),
            preset=preset.name, run_name=run_name,
        )
    groups = {"data": dict(preset.data), "model": dict(preset.model), "train": dict(preset.train), "run": dict(preset.run)}
    owners = field_groups()
    for key, value in changes.items():
        if key not in owners:
            raise ValueError(f"A preset cannot set {key!r}; known fields: {', '.join(sorted(owners))}.")
        groups[owners[key]][key] = value
    data = make_data_config(data_dir, label_mode, **groups["data"])
    return RunConfig(
        data=data,
        model=ModelConfig(**groups["model"]),
        train=TrainConfig(**groups["train"]),
        operating_point=OperatingPointChoice.from_dict(preset.operating_point),
        preset=preset.name,
        run_name=run_name,
        **groups["run"],
    )


def field_groups() -> dict[str, str]:
    """{field name: group} of every field a preset may set."""
    import dataclasses

    owners = {field.name: "data" for field in dataclasses.fields(DataConfig) if field.name not in ("data_dir", "label_mode")}
    owners.update({field.name: "model" for field in dataclasses.fields(ModelConfig)})
    owners.update({field.name: "train" for field in dataclasses.fields(TrainConfig)})
    owners.update({name: "run" for name in RUN_FIELDS})
    return owners


def preset_changes(config: Mapping[str, Any]) -> list[str]:
    """The fields of a stored config.json that differ from its preset's values (empty without a preset).

    Args:
        config: config.json of a cross-validation run.

    Returns:
        Field names the user changed after choosing the preset, in a stable order.
    """
    name = config.get("preset")
    if not name or name not in PRESETS:
        return []
    preset = PRESETS[name]
    changed = []
    for group, values in (("data", preset.data), ("model", preset.model), ("train", preset.train)):
        stored = config.get(group) or {}
        changed += [key for key, value in values.items() if key in stored and stored[key] != value]
    changed += [key for key, value in preset.run.items() if key in config and config[key] != value]
    return changed


def missing_weights(name: str) -> list[str]:
    """The messages of the ImageNet weights files a preset needs and this machine lacks (empty when all are here)."""
    from zoidberg.models.weights import WeightsNotFoundError, resolve_imagenet_weights

    messages = []
    for architecture, alpha in get_preset(name).weights_needed():
        try:
            resolve_imagenet_weights(architecture, alpha, "imagenet", 224)
        except WeightsNotFoundError as error:
            messages.append(str(error))
    return messages
