"""The kinds of run ("cv", "tune", "ensemble", "adapt"): how each is prepared from its configuration and how its worker runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from zoidberg.runs.store import RUN_KINDS, Run

Reporter = Callable[[str], None]

# The engine modules that train are imported inside these functions, so that listing the
# kinds (the CLI's parser, the dashboard's pages) never loads TensorFlow.


def _prepare_cv(config, dataset=None, runs_dir=None) -> dict:
    from zoidberg.training.run_setup import prepare_run

    return prepare_run(config, dataset)


def _run_cv(run: Run, report: Reporter | None) -> dict:
    from zoidberg.training.cv import run_cross_validation

    return run_cross_validation(run, report=report)


def _config_cv(payload: dict):
    from zoidberg.config import RunConfig

    return RunConfig.from_dict(payload)


def _prepare_tune(config, dataset=None, runs_dir=None) -> dict:
    from zoidberg.tuning.config import prepare_tuning

    return prepare_tuning(config, dataset)


def _run_tune(run: Run, report: Reporter | None) -> dict:
    from zoidberg.tuning.search import run_search

    return run_search(run, report=report)


def _config_tune(payload: dict):
    from zoidberg.tuning.config import TuneConfig

    return TuneConfig.from_dict(payload)


def _prepare_ensemble(config, dataset=None, runs_dir=None) -> dict:
    from zoidberg.runs.store import RunStore
    from zoidberg.training.ensemble import prepare_ensemble

    return prepare_ensemble(config, RunStore(runs_dir))


def _run_ensemble(run: Run, report: Reporter | None) -> dict:
    from zoidberg.training.ensemble import run_ensemble

    return run_ensemble(run, report=report)


def _config_ensemble(payload: dict):
    from zoidberg.config import EnsembleConfig

    return EnsembleConfig.from_dict(payload)


def _prepare_adapt(config, dataset=None, runs_dir=None) -> dict:
    from zoidberg.adaptation.adapt import prepare_adaptation
    from zoidberg.runs.store import RunStore

    return prepare_adaptation(config, RunStore(runs_dir))


def _run_adapt(run: Run, report: Reporter | None) -> dict:
    from zoidberg.adaptation.adapt import run_adaptation

    return run_adaptation(run, report=report)


def _config_adapt(payload: dict):
    from zoidberg.adaptation.config import AdaptConfig

    return AdaptConfig.from_dict(payload)


@dataclass(frozen=True)
class RunKind:
    """One kind of run.

    Attributes:
        name: The kind as meta.json stores it.
        title: What the run does, for messages ("cross-validation").
        unit: What it trains one after another ("fold", "trial").
        kept: What a stop keeps ("finished folds").
        resume_note: What Resume does.
        prepare: `prepare(config, dataset=None, runs_dir=None) -> payload`: checks a
            configuration against its data, weights or member runs before anything
            exists, and returns config.json.
        run: `run(run, report) -> summary`: the worker's body; resumes where it stopped.
        load_config: `load_config(payload) -> config`: the validated config of a config.json.
    """

    name: str
    title: str
    unit: str
    kept: str
    resume_note: str
    prepare: Callable[..., dict]
    run: Callable[[Run, Reporter | None], dict]
    load_config: Callable[[dict], Any]


KINDS: dict[str, RunKind] = {
    "cv": RunKind(
        name="cv",
        title="cross-validation",
        unit="fold",
        kept="finished folds",
        resume_note="Continues from the first unfinished fold; finished folds are kept",
        prepare=_prepare_cv,
        run=_run_cv,
        load_config=_config_cv,
    ),
    "tune": RunKind(
        name="tune",
        title="search",
        unit="trial",
        kept="finished trials",
        resume_note="Continues the search; finished trials are kept and an unfinished one runs again",
        prepare=_prepare_tune,
        run=_run_tune,
        load_config=_config_tune,
    ),
    "ensemble": RunKind(
        name="ensemble",
        title="ensemble",
        unit="fold",
        kept="nothing (an ensemble takes seconds)",
        resume_note="Combines the members again",
        prepare=_prepare_ensemble,
        run=_run_ensemble,
        load_config=_config_ensemble,
    ),
    "adapt": RunKind(
        name="adapt",
        title="adaptation",
        unit="part",
        kept="nothing (an adaptation takes a minute)",
        resume_note="Adapts again from the parent run and the site folder",
        prepare=_prepare_adapt,
        run=_run_adapt,
        load_config=_config_adapt,
    ),
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
