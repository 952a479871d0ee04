"""The run store: one folder per run, the only channel between workers, CLI and dashboard."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

# The store reads and writes through these; callers keep importing them from here.
from zoidberg.runs.files import json_default, open_csv, read_json, write_atomically, write_json_atomic  # noqa: F401
from zoidberg.runs.liveness import last_failure, worker_is_dead

RUNS_DIR_ENV = "ZOIDBERG_RUNS_DIR"
RUN_KINDS = ("cv", "tune", "ensemble", "adapt")
# The kinds whose runs are models: Predict, Compare, evaluate and the Train page list them.
MODEL_KINDS = ("cv", "ensemble", "adapt")
ACTIVE_STATES = ("queued", "running")

# The files of a run folder, named once. Everything outside this module refers to them by
# these names; the folder layout is the contract between worker, CLI and dashboard.
CONFIG_FILE = "config.json"  # The validated configuration, data fingerprint and package versions.
META_FILE = "meta.json"  # Kind, name and creation time.
STATUS_FILE = "status.json"  # State, worker pid and host, error.
EVENTS_FILE = "events.jsonl"  # One JSON event a line, appended by the worker.
HEARTBEAT_FILE = "heartbeat.json"  # The worker's last sign of life.
STOP_FILE = "STOP"  # Present when someone asked the run to stop.
LOCK_FILE = ".lock"  # Held (flock) while a state is checked and changed, so two resumes cannot both win.
SUMMARY_FILE = "summary.json"  # Written when the run ends.
DATA_FILE = "data.json"  # What a cross-validation was trained on.
FOLDS_FILE = "folds.csv"  # path, patient, label, fold of every pooled image.
SPLIT_FILE = "split.json"  # A search's patient-grouped train/validation split.
TRIALS_FILE = "trials.json"  # A search's trial table.
TRIAL_SECONDS_FILE = "trial_seconds.json"  # How long each trial took.
WORKER_LOG = "worker.log"  # The worker process's console output and tracebacks.
FOLD_DIR_PREFIX = "fold_"  # fold_1/, fold_2/, ... one folder per finished or running fold.
MODEL_FILE = "model.keras"  # A fold's trained model.
FOLD_METRICS_FILE = "metrics.json"  # A fold's metrics and history; its presence marks the fold finished.
OOF_FILE = "oof.npz"  # A fold's out-of-fold probabilities and their indices.
CALIBRATION_FILE = "calibration.json"  # The calibration fitted on out-of-fold predictions, and its effect.
OPERATING_POINT_FILE = "operating_point.json"  # The chosen threshold method, its threshold and fold-wise spread.
OOD_FEATURES_FILE = "ood_features.npz"  # The gate's feature stage: densities of the training films' frozen ImageNet features.
OOD_GATE_FILE = "ood_gate.npz"  # The out-of-distribution gate fitted on the training films (zoidberg.data.ood).
HASHES_FILE = "hashes.json"  # SHA-256 of every training image, for leakage checks of later evaluations.
EXPORTS_DIR = "exports"  # exports/<format>/: the fold ensemble as one model, with its model_card.json.
REPORTS_DIR = "reports"  # reports/report.html and report.pdf: the run told for a clinician.
TENSORBOARD_DIR = "tensorboard"  # tensorboard/fold_<k>/: each fold's epoch scalars, for `tensorboard --logdir runs/`.
ENSEMBLE_FILE = "ensemble.json"  # How an ensemble combines its members' probabilities (method, stacking weights).
ADAPTATION_FILE = "adaptation.json"  # An adapted run's parent, site fingerprint, method and fitted site heads.
# What adapt stores of the site films for the monitor: the gate's scores and refusals (no pixels).
MONITOR_REFERENCE_FILE = "monitor_reference.json"
SITE_LABELS_FILE = "site_labels"  # An adapted run's copy of the labels file it read (its suffix kept): labels added later never change it.
MEMBERS_FILE = "members.json"  # {recipe index: run id} of the member runs an ensemble trained.
EVALUATIONS_DIR = "evaluations"  # evaluations/<name>/: one folder per evaluation on a labeled folder.
EVALUATION_FILE = "evaluation.json"  # An evaluation's metrics, intervals, curves, calibration and checks.
PREDICTIONS_FILE = "predictions.csv"  # An evaluation's per-image probabilities and decisions.
EVALUATION_STATUS_FILE = "status.json"  # An evaluation started from the dashboard: running, completed or failed.
ATTENTION_FILE = "attention.json"  # Where the model looks: the share of Grad-CAM evidence inside the lung fields (run: out of fold; evaluation: its films).
FINAL_STATES = ("completed", "stopped", "failed", "interrupted")

_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,79}$")


class RunNotFoundError(LookupError):
    """Raised when a run id names no run in the store."""


def default_runs_dir() -> Path:
    """Returns the runs directory: $ZOIDBERG_RUNS_DIR or ./runs."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs").expanduser()


def validate_run_id(run_id: str) -> str:
    """Returns `run_id` if it is a plain id, else raises ValueError.

    Plain ids keep every path the store builds inside the runs directory: no
    separators, no `..`, no absolute paths.
    """
    if not isinstance(run_id, str) or not _RUN_ID_PATTERN.match(run_id):
        raise ValueError(
            f"{run_id!r} is not a run id: use the id shown by `python -m zoidberg runs` "
            "(letters, digits, '-' and '_' only)."
        )
    return run_id


def validate_evaluation_name(name: str) -> str:
    """Returns `name` if it can name an evaluation folder, else raises ValueError saying what to use."""
    if not isinstance(name, str) or not _RUN_ID_PATTERN.match(name):
        raise ValueError(
            f"{name!r} cannot name an evaluation: use letters, digits, '-' and '_' (at most 80), e.g. holdout-2026."
        )
    return name


def now_iso() -> str:
    """Returns the current UTC time as an ISO-8601 string."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def make_event(event_type: str, **data: Any) -> dict:
    """One event as events.jsonl holds it: its type, the time, and its fields."""
    return {"type": event_type, "time": time.time(), **data}


class Run:
    """One run's folder: config, status, events, per-fold outputs.

    Args:
        path: The run's folder inside the store.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    def open_text(self, name: str, mode: str = "r"):
        """Opens a CSV or text file of the run (folds.csv ...) with open_csv: every path read back is the path written."""
        return open_csv(self.path / name, mode)

    def resume_command(self) -> str:
        """The command that resumes this run, as a user can paste it: with --runs-dir when the run is not in the default store."""
        command = f"python -m zoidberg resume {self.id}"
        try:
            default = default_runs_dir().resolve() == self.path.parent.resolve()
        except OSError:
            default = False
        return command if default else f"{command} --runs-dir {shlex.quote(str(self.path.parent))}"

    # Files.
    @property
    def config(self) -> dict:
        """The run's config.json."""
        return self.read_json(CONFIG_FILE, default={}) or {}

    def checked_config(self) -> dict:
        """The run's config.json, or a ValueError that names the damaged file and what to do.

        Commands that rebuild the run's models (predict, evaluate, export, report) read it
        through here, so that a damaged file is named instead of failing later on a missing key.
        """
        path = self.path / CONFIG_FILE
        config = self.read_json(CONFIG_FILE, default=None)
        if not isinstance(config, dict) or not isinstance(config.get("data"), dict) or "image_size" not in config["data"]:
            state = "missing" if not path.exists() else "damaged (not the JSON the run wrote)"
            raise ValueError(f"Run {self.id}'s {path} is {state}: restore it from a copy of the run, or train the run again.")
        return config

    @property
    def kind(self) -> str:
        """'cv' or 'tune'."""
        return self.meta.get("kind", "cv")

    @property
    def meta(self) -> dict:
        """Kind, name and creation time."""
        return self.read_json(META_FILE, default={}) or {}

    @property
    def name(self) -> str:
        """The user's run name, or the id."""
        return self.meta.get("name") or self.id

    def write_json(self, name: str, payload: Any) -> None:
        """Atomically writes `name` inside the run folder."""
        write_json_atomic(self.path / name, payload)

    def read_json(self, name: str, default: Any = None) -> Any:
        """Reads `name` inside the run folder."""
        return read_json(self.path / name, default)

    def fold_dir(self, fold: int) -> Path:
        """Returns (and creates) the folder of fold `fold` (1-based)."""
        path = self.fold_path(fold)
        path.mkdir(exist_ok=True)
        return path

    def fold_path(self, fold: int, name: str = "") -> Path:
        """Returns the folder of fold `fold` (1-based), or the file `name` inside it, without creating it."""
        folder = self.path / f"{FOLD_DIR_PREFIX}{int(fold)}"
        return folder / name if name else folder

    def model_path(self, fold: int) -> Path:
        """Returns the .keras file of fold `fold`."""
        return self.fold_path(fold, MODEL_FILE)

    def read_fold_json(self, fold: int, name: str = FOLD_METRICS_FILE, default: Any = None) -> Any:
        """Reads a JSON file of fold `fold` (its metrics.json by default)."""
        return read_json(self.fold_path(fold, name), default)

    def folds_with(self, name: str) -> list[int]:
        """Returns the fold numbers whose folder holds the file `name`, in order.

        Only plain fold folders inside the run count: a fold_<n> entry that is no folder,
        or a file that resolves outside the run folder, is left out.
        """
        root = self.path.resolve()
        numbers = []
        for path in self.path.glob(f"{FOLD_DIR_PREFIX}*/{name}"):
            suffix = path.parent.name[len(FOLD_DIR_PREFIX):]
            if suffix.isdigit() and root in path.resolve().parents:
                numbers.append(int(suffix))
        return sorted(numbers)

    def member_ids(self) -> list[str]:
        """An ensemble run's members: the runs it joined, then those it trained (empty for other runs)."""
        trained = self.read_json(MEMBERS_FILE) or {}
        return list(self.config.get("members") or []) + [trained[key] for key in sorted(trained, key=int)]

    def evaluation_path(self, name: str, file: str = "") -> Path:
        """Returns the folder of evaluation `name` (a plain name), or a file inside it."""
        validate_evaluation_name(name)
        folder = self.path / EVALUATIONS_DIR / name
        return folder / file if file else folder

    def evaluations(self) -> list[dict]:
        """Returns every finished evaluation (its evaluation.json), oldest first."""
        folder = self.path / EVALUATIONS_DIR
        found = [read_json(path) for path in folder.glob(f"*/{EVALUATION_FILE}")] if folder.is_dir() else []
        return sorted((item for item in found if item), key=lambda item: item.get("created", ""))

    def fold_metrics(self) -> list[dict]:
        """Returns the metrics of finished folds, in fold order."""
        results = []
        for fold in self.folds_with(FOLD_METRICS_FILE):
            payload = self.read_fold_json(fold)
            if payload:
                results.append(payload)
        return results

    # Status.
    def status(self) -> dict:
        """Returns status.json with `state` corrected for dead workers.

        A run recorded as running whose worker process is gone, or whose heartbeat is
        older than HEARTBEAT_TIMEOUT_S, is reported as `interrupted`.
        """
        status = self.read_json(STATUS_FILE, default=None)
        if not isinstance(status, dict):
            status = self._status_when_damaged() if (self.path / STATUS_FILE).exists() else {"state": "queued"}
        if status.get("state") in ACTIVE_STATES and worker_is_dead(status, self.path / HEARTBEAT_FILE):
            failure = last_failure(self.path / EVENTS_FILE)
            status = {
                **status,
                "state": "interrupted",
                "error": status.get("error")
                # A worker that could not write status.json (a full disk) often still appended its
                # failure to the events: that is the reason the user needs.
                or (f"The worker failed and could not record it in status.json: {failure}" if failure else None)
                or "The worker process stopped without finishing (killed, crashed or the machine restarted). "
                "Resume the run to continue from its first unfinished fold.",
            }
        return status

    def _status_when_damaged(self) -> dict:
        """The state a damaged status.json stands for: completed when summary.json is whole, else interrupted."""
        where = self.path / STATUS_FILE
        if isinstance(self.read_json(SUMMARY_FILE), dict):
            return {"state": "completed", "warning": f"{where} is damaged; the run's summary.json says it completed."}
        return {
            "state": "interrupted",
            "error": f"{where} is damaged, and the run has no summary: resume it to train its unfinished folds "
            f"({self.resume_command()}), or delete it.",
        }

    @property
    def state(self) -> str:
        """The run's state after the liveness check."""
        return self.status().get("state", "queued")

    def wall_seconds(self) -> float | None:
        """How long a finished run took, start to end (status.json), or None while it has no end."""
        status = self.status()
        try:
            started, ended = (_dt.datetime.fromisoformat(str(status[key])) for key in ("started", "ended"))
        except (KeyError, ValueError):
            return None
        return max(0.0, (ended - started).total_seconds())

    def set_status(self, state: str, **fields: Any) -> dict:
        """Records a new state, keeping earlier fields unless overridden."""
        status = self.read_json(STATUS_FILE, default={}) or {}
        status.update(fields)
        status["state"] = state
        status["updated"] = now_iso()
        status["updated_unix"] = time.time()
        if state in FINAL_STATES:
            status.setdefault("ended", now_iso())
        self.write_json(STATUS_FILE, status)
        return status

    def heartbeat(self) -> None:
        """Tells readers that the worker is alive."""
        self.write_json(HEARTBEAT_FILE, {"unix": time.time(), "pid": os.getpid()})

    # Stop requests.
    def request_stop(self) -> None:
        """Asks the worker to stop after the current batch."""
        (self.path / STOP_FILE).write_text(now_iso(), encoding="utf-8")

    @property
    def stop_requested(self) -> bool:
        """Whether someone asked this run to stop."""
        return (self.path / STOP_FILE).exists()

    def clear_stop(self) -> None:
        """Removes a stop request (used when a run is resumed)."""
        (self.path / STOP_FILE).unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the run's lock file for a check-then-set of its state (two `resume` calls at once)."""
        with open(self.path / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # Events.
    def append_event(self, event_type: str, **data: Any) -> dict:
        """Appends one event as a single JSON line.

        One `write` of a line shorter than the pipe buffer on a file opened for
        appending is atomic on POSIX, so concurrent readers see whole lines only;
        `read_events` skips a trailing partial line anyway.
        """
        event = make_event(event_type, **data)
        line = json.dumps(event, default=json_default, allow_nan=True) + "\n"
        with open(self.path / EVENTS_FILE, "a", encoding="utf-8") as handle:
            handle.write(line)
        return event

    def read_events(self, offset: int = 0) -> tuple[list[dict], int]:
        """Reads events written since byte `offset`.

        Args:
            offset: Byte offset returned by the previous call (0 for all).

        Returns:
            The new events and the offset to pass next time.
        """
        try:
            with open(self.path / EVENTS_FILE, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return [], offset
        events = []
        consumed = 0
        for raw in chunk.splitlines(keepends=True):
            if not raw.endswith(b"\n"):
                break  # A line still being written: read it next time.
            consumed += len(raw)
            try:
                events.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return events, offset + consumed

    def events(self, event_type: str | None = None) -> list[dict]:
        """Returns all events, optionally of one type."""
        events, _ = self.read_events(0)
        return [event for event in events if event_type is None or event["type"] == event_type]

    def summary(self) -> dict | None:
        """Returns summary.json once the run has one."""
        return self.read_json(SUMMARY_FILE)

    def __repr__(self) -> str:
        return f"Run({self.id!r})"


class RunStore:
    """A folder of runs.

    Args:
        root: The runs directory; defaults to $ZOIDBERG_RUNS_DIR or ./runs.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_runs_dir()

    def ensure_writable(self) -> None:
        """Creates the runs directory and checks that runs can be written there.

        Raises:
            ValueError: with what to change when the folder is not writable.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-test-", delete=True)
            probe.close()
        except OSError as error:
            raise ValueError(
                f"The runs directory {self.root} is not writable ({error.strerror or error}). "
                f"Choose another folder with --runs-dir or ${RUNS_DIR_ENV}."
            ) from None

    def create_run(self, kind: str, config: dict, name: str = "") -> Run:
        """Creates a new run folder with its config and a queued status.

        Args:
            kind: "cv" or "tune".
            config: JSON-ready config (saved as config.json).
            name: A human-readable name.

        Returns:
            The new Run.
        """
        if kind not in RUN_KINDS:
            raise ValueError(f"kind must be one of {RUN_KINDS}, not {kind!r}")
        self.ensure_writable()
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{kind}-{secrets.token_hex(3)}"
        staging = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=self.root))
        try:
            run = Run(staging)
            run.write_json(CONFIG_FILE, config)
            run.write_json(META_FILE, {"id": run_id, "kind": kind, "name": name or "", "created": now_iso()})
            run.set_status("queued")
            # The folder appears complete or not at all, so listings never see half a run.
            os.replace(staging, self.root / run_id)
        except BaseException:
            # A full disk must not leave an empty .RUNID.* folder behind.
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Run(self.root / run_id)

    def get(self, run_id: str) -> Run:
        """Returns the run `run_id`.

        Raises:
            ValueError: if the id is not a plain id.
            RunNotFoundError: if no such run exists.
        """
        validate_run_id(run_id)
        path = self.root / run_id
        if not (path / META_FILE).exists():
            raise RunNotFoundError(f"No run {run_id!r} in {self.root}. `python -m zoidberg runs` lists them.")
        return Run(path)

    def list_runs(self, kind: str | tuple[str, ...] | None = None) -> list[Run]:
        """Returns runs, newest first, optionally of one kind or of several (MODEL_KINDS)."""
        if not self.root.is_dir():
            return []
        kinds = (kind,) if isinstance(kind, str) else kind
        runs = [Run(path) for path in self.root.iterdir() if (path / META_FILE).exists() and not path.name.startswith(".")]
        runs = [run for run in runs if kinds is None or run.kind in kinds]
        return sorted(runs, key=lambda run: run.id, reverse=True)

    def delete(self, run_id: str) -> None:
        """Deletes a finished run's folder."""
        run = self.get(run_id)
        if run.state in ACTIVE_STATES:
            raise ValueError("Stop the run before deleting it.")
        shutil.rmtree(run.path)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.list_runs())
