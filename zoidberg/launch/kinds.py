"""The kinds of run ("cv", "tune", "ensemble", "adapt"): one table of how each is prepared from its configuration and run by its worker."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from zoidberg.runs.store import RUN_KINDS, Run, RunStore

Reporter = Callable[[str], None]
DatasetLoader = Callable[..., Any]


def _resolve(path: str) -> Any:
    """The object a "module:name" path names, imported only now.

    The engine modules that train are imported when a kind is prepared or run, never when
    the kinds are listed, so that the CLI's parser and the dashboard's pages do not load
    TensorFlow.
    """
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class RunKind:
    """One kind of run.

    Attributes:
        name: The kind as meta.json stores it.
        title: What the run does, for messages ("cross-validation").
        unit: What it trains one after another ("fold", "trial").
        kept: What a stop keeps ("finished folds").
        resume_note: What Resume does.
        config_class: "module:Class" of its validated configuration (with from_dict).
        prepare_function: "module:function" that checks a configuration before anything
            exists and returns config.json.
        run_function: "module:function", the worker's body: `function(run, report=...)`.
        reads: "images" when the kind trains on a data folder's images (prepared against the
            loaded dataset), "runs" when it reads other runs (prepared against the run store).
    """

    name: str
    title: str
    unit: str
    kept: str
    resume_note: str
    config_class: str
    prepare_function: str
    run_function: str
    reads: str

    def load_config(self, payload: dict) -> Any:
        """The validated configuration of a config.json payload."""
        return _resolve(self.config_class).from_dict(payload)

    def prepare(self, config, dataset=None, runs_dir=None) -> dict:
        """Checks a configuration against its data, weights or member runs; returns its config.json payload.

        Args:
            config: The kind's validated configuration.
            dataset: The loaded dataset of a kind that reads images, when the caller has it.
            runs_dir: The run store of a kind that reads runs.
        """
        function = _resolve(self.prepare_function)
        if self.reads == "runs":
            return function(config, RunStore(runs_dir))
        return function(config, dataset)

    def run(self, run: Run, report: Reporter | None) -> dict:
        """Runs (or resumes) a created run of this kind; returns its summary."""
        return _resolve(self.run_function)(run, report=report)

    def folders(self, config) -> list[str]:
        """The data folders a configuration reads, for a shared dashboard's ZOIDBERG_DATA_ROOTS check."""
        if self.name == "ensemble":
            return [recipe.data.data_dir for recipe in config.recipes]
        if self.name == "adapt":
            return [folder for folder in (config.site_dir, config.labels_file, config.unlabeled_dir) if folder]
        return [config.data.data_dir]


KINDS: dict[str, RunKind] = {
    kind.name: kind
    for kind in (
        RunKind(
            name="cv", title="cross-validation", unit="fold", kept="finished folds",
            resume_note="Continues from the first unfinished fold; finished folds are kept",
            config_class="zoidberg.config:RunConfig", prepare_function="zoidberg.training.run_setup:prepare_run",
            run_function="zoidberg.training.cv:run_cross_validation", reads="images",
        ),
        RunKind(
            name="tune", title="search", unit="trial", kept="finished trials",
            resume_note="Continues the search; finished trials are kept and an unfinished one runs again",
            config_class="zoidberg.tuning.config:TuneConfig", prepare_function="zoidberg.tuning.config:prepare_tuning",
            run_function="zoidberg.tuning.search:run_search", reads="images",
        ),
        RunKind(
            name="ensemble", title="ensemble", unit="fold", kept="nothing (an ensemble takes seconds)",
            resume_note="Combines the members again",
            config_class="zoidberg.config:EnsembleConfig", prepare_function="zoidberg.training.ensemble:prepare_ensemble",
            run_function="zoidberg.training.ensemble:run_ensemble", reads="runs",
        ),
        RunKind(
            name="adapt", title="adaptation", unit="part", kept="nothing (an adaptation takes a minute)",
            resume_note="Adapts again from the parent run and the site folder",
            config_class="zoidberg.adaptation.config:AdaptConfig", prepare_function="zoidberg.adaptation.adapt:prepare_adaptation",
            run_function="zoidberg.adaptation.adapt:run_adaptation", reads="runs",
        ),
    )
}

if tuple(KINDS) != RUN_KINDS:
    raise RuntimeError(f"zoidberg.launch.kinds defines {tuple(KINDS)}, but the run store knows {RUN_KINDS}.")


def get_kind(name: str) -> RunKind:
    """Returns the run kind called `name`.

    Raises:
        ValueError: For an unknown kind, naming the known ones.
    """
    if name not in KINDS:
        raise ValueError(f"Unknown run kind {name!r}; choose one of {', '.join(KINDS)}.")
    return KINDS[name]


def prepare_within_roots(name: str, config, runs_dir, load_dataset: DatasetLoader) -> dict:
    """Prepares a configuration as a shared dashboard must: no folder outside $ZOIDBERG_DATA_ROOTS is read.

    Args:
        name: The kind.
        config: Its validated configuration.
        runs_dir: The run store.
        load_dataset: `load_dataset(data_dir, **loader_options)`, the caller's (cached) loader,
            which checks its folder itself.

    Raises:
        ValueError: A folder outside the allowed roots, or what the kind's prepare refuses.
        FileNotFoundError: Weights asked for are not on this machine.
    """
    from zoidberg.data.roots import check_folder_allowed

    kind = get_kind(name)
    if kind.reads == "images":
        return kind.prepare(config, load_dataset(config.data.data_dir, **config.data.loader_options()))
    # An ensemble reads its members' stored predictions and an adaptation its parent's, but the
    # runs an ensemble trains read their folders, and an adaptation reads the site's films.
    for folder in kind.folders(config):
        check_folder_allowed(folder)
    return kind.prepare(config, runs_dir=runs_dir)
