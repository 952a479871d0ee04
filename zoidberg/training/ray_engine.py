"""Folds and tuning trials as Ray tasks: a private local Ray or a cluster, events relayed live, files back as bytes."""

from __future__ import annotations

import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoidberg.runs import progress as events
from zoidberg.runs.store import CONFIG_FILE, FOLD_METRICS_FILE, Run, make_event, write_atomically

RAY_MISSING = "The Ray engine needs Ray, which is not installed: pip install -r requirements-ray.txt (or choose engine local)."
# A fold task that dies with its worker (killed, out of memory, node lost) runs once more.
FOLD_RETRIES = 1
# How often the driver relays events and looks for a stop request.
POLL_S = 0.5
# The channel's own marker of a task's start (where, which attempt): the driver reads it and
# never writes it to events.jsonl.
TASK_STARTED = "task_started"
# How often a task asks the driver whether a stop was requested (every batch would be a round trip each).
STOP_POLL_S = 0.5
# How long joining a cluster may take to find something answering at its address: Ray's own
# client retries for minutes, printing its gcs_client lines, when nothing is there.
CONNECT_TIMEOUT_S = 15.0
TOKEN_HINT = (
    "A cluster with token authentication (the default from Ray 2.59 on) also needs its token here: run "
    "`ray get-auth-token` on the head node and set RAY_AUTH_TOKEN, or copy its ~/.ray/auth_token."
)


def import_ray():
    """Returns the ray module.

    Raises:
        ValueError: Ray is not installed, with the command that installs it.
    """
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    return ray


def joins_cluster(address: str | None) -> bool:
    """Whether an address names a running cluster (else the run starts a private local Ray)."""
    return bool(address) and address != "local"


def describe_address(address: str | None) -> str:
    """Where a Ray run trains, in words: a private local Ray, or the cluster at the address."""
    return f"the Ray cluster at {address}" if joins_cluster(address) else "a private local Ray"


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raises ValueError in one sentence when nothing accepts a TCP connection at HOST:PORT (or ray://HOST:PORT).

    "auto" is left to Ray, which reads the local head's address.
    """
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except TimeoutError:
        raise ValueError(f"Nothing answered at {address} within {timeout_s:.0f} s: check the address and that the cluster's head node is up.") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"Could not reach the Ray cluster at {address} ({reason}): check the address and that `ray start --head` runs there.") from None


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Connects this process to Ray: the cluster at `address`, or a private local Ray when None.

    The engine's own package travels with the job (runtime_env py_modules), so a cluster's
    nodes need the requirements installed but neither this checkout nor a shared folder.

    Args:
        address: "auto", "HOST:PORT", "ray://HOST:10001", or None for a private local Ray.
        num_cpus: CPUs of a private local Ray (default: all of this machine's).

    Returns:
        True when this call started Ray (and the caller shuts it down), False when this
        process was already connected.

    Raises:
        ValueError: Ray is missing or the cluster cannot be reached, with what to do.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    package = str(Path(__file__).resolve().parent.parent)
    options = dict(
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env={"py_modules": [package], "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}},
    )
    if joins_cluster(address):
        check_reachable(address)
    try:
        if joins_cluster(address):
            ray.init(address=address, **options)
        else:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **options)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError or its own errors here.
        text = (str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__).rstrip(".")
        if not joins_cluster(address):
            raise ValueError(f"Could not start a local Ray: {text}") from None
        raise ValueError(
            f"Could not join {describe_address(address)}: {text}. Is `ray start --head` running there (for auto: on "
            f"this machine)? {TOKEN_HINT}"
        ) from None
    return True


@dataclass(frozen=True)
class TaskResources:
    """What one fold (or trial) task declares to Ray's scheduler."""

    num_cpus: float
    num_gpus: float
    memory: int
    at_once: int = 1

    def options(self) -> dict:
        """The keyword arguments of `remote_function.options`."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.memory}

    def describe(self) -> str:
        """The resources in words, for the console and the events."""
        gpus = f", {self.num_gpus:g} GPU" if self.num_gpus else ""
        return f"{self.num_cpus:g} CPU{gpus}, {self.memory / 1024**3:.1f} GB"


def choose_task_resources(parallel: int | str, n_tasks: int, image_size: int, cluster: dict) -> TaskResources:
    """Sizes each task from the cluster: `parallel` at once share its CPUs and GPUs; auto fits as many as there are tasks.

    Args:
        parallel: Tasks at once (a count), or "auto".
        n_tasks: Tasks to run.
        image_size: The run's image side, for the memory estimate.
        cluster: ray.cluster_resources().

    Returns:
        The resources every task declares, and how many tasks that lets run at once. The
        memory is capped to what the cluster has, so that a task is never unschedulable.
    """
    from zoidberg.training.executors import CHILD_BASE_BYTES, CHILD_BYTES_PER_PIXEL

    cpus = max(1, int(cluster.get("CPU", 1)))
    gpus = int(cluster.get("GPU", 0))
    at_once = max(1, min(n_tasks, cpus if parallel == "auto" else int(parallel)))
    num_cpus = max(1, cpus // at_once)
    # One GPU a task when there are enough; else they share the GPUs evenly (memory growth is on).
    num_gpus = 0.0 if gpus == 0 else (1.0 if gpus >= at_once else round(gpus / at_once, 2))
    wanted = CHILD_BASE_BYTES + CHILD_BYTES_PER_PIXEL * image_size * image_size * 256
    memory = int(min(wanted, cluster.get("memory", wanted) / at_once))
    return TaskResources(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory, at_once=at_once)


class RunChannel:
    """The driver's mailbox in the cluster (a Ray actor): tasks post events and attempts, the driver posts a stop."""

    def __init__(self):
        self._events: list[dict] = []
        self._stop = False
        self._attempts: dict[int, int] = {}

    def begin(self, unit: int, host: str, pid: int) -> int:
        """Records that a task for `unit` (fold or trial number) started on `host`; returns its attempt, from 1."""
        self._attempts[unit] = self._attempts.get(unit, 0) + 1
        self._events.append({"type": TASK_STARTED, "unit": unit, "host": host, "pid": pid, "attempt": self._attempts[unit]})
        return self._attempts[unit]

    def started(self) -> list[int]:
        """The units some task has started."""
        return list(self._attempts)

    def post(self, event: dict) -> None:
        """Queues one event for the driver."""
        self._events.append(event)

    def take(self) -> list[dict]:
        """Hands the queued events to the driver, oldest first."""
        taken, self._events = self._events, []
        return taken

    def flush(self) -> None:
        """Returns once every event a task posted before calling it is queued (one caller's actor calls run in order)."""

    def request_stop(self) -> None:
        """The driver saw a stop request in the run store."""
        self._stop = True

    def stop_requested(self) -> bool:
        """Whether the driver asked the tasks to stop."""
        return self._stop


class NodeRun(Run):
    """A task's view of the run on a cluster node: a scratch copy of its config, events and stops through the channel.

    A task never blocks on the channel: Ray hands a blocked task's CPUs to the next task,
    which would then train beside it and overrun `--parallel`. Stop requests are asked for
    in the background and read once answered.
    """

    def __init__(self, path, channel, unit: int):
        super().__init__(path)
        self._channel = channel
        self._unit = unit
        self._stop = False
        self._asked = 0.0
        self._answer = None

    @property
    def stop_requested(self) -> bool:
        if self._stop:
            return True
        import ray

        if time.monotonic() - self._asked < STOP_POLL_S:
            return False  # Asked a moment ago: the callback calls this every batch.
        if self._answer is not None:
            ready, _ = ray.wait([self._answer], timeout=0)
            if ready:
                self._stop = bool(ray.get(ready[0]))
                self._answer = None
        if self._answer is None:
            self._asked = time.monotonic()
            self._answer = self._channel.stop_requested.remote()
        return self._stop

    def flush(self) -> None:
        """Waits until the driver's channel holds every event this task posted: the worker exits right after its task."""
        import ray

        ray.get(self._channel.flush.remote())

    def append_event(self, event_type: str, **data) -> dict:
        if event_type in (events.FOLD_STARTED, events.TRIAL_STARTED):
            # Where the unit runs, as `runs` and the dashboard show it (the driver adds the attempt).
            data.update(host=platform.node(), pid=os.getpid())
        event = make_event(event_type, **data)
        # Calls from one task to one actor run in order, so events keep theirs.
        self._channel.post.remote(event)
        return event


def make_node_run(config_payload: dict, channel, unit: int) -> NodeRun:
    """Makes a scratch run folder on this node with the run's config.json, and tells the driver the task began."""
    import json

    channel.begin.remote(unit, platform.node(), os.getpid())
    scratch = Path(tempfile.mkdtemp(prefix=f"zoidberg-unit{unit}-"))
    (scratch / CONFIG_FILE).write_text(json.dumps(config_payload), encoding="utf-8")
    return NodeRun(scratch, channel, unit)


def collect_files(folder: Path, under: Sequence[str]) -> dict[str, bytes]:
    """Every file below the named sub-folders of `folder`, as {relative path: bytes}."""
    files = {}
    for name in under:
        root = folder / name
        if root.exists():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def write_files(run: Run, files: dict[str, bytes], last: str | None = None) -> None:
    """Writes a task's files into the run folder, each atomically; `last` (the file that marks the unit done) goes last."""
    order = sorted(files, key=lambda name: name == last)
    for name in order:
        target = run.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        data = files[name]
        write_atomically(target, lambda path, data=data: Path(path).write_bytes(data))


def set_thread_pools(num_cpus: float) -> None:
    """Gives TensorFlow in a fresh task worker as many threads as the task declared CPUs, and GPU memory growth."""
    import tensorflow as tf

    from zoidberg.training.devices import enable_memory_growth

    threads = max(1, int(num_cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:  # TensorFlow already started in this worker: its pools stay as they are.
        pass
    enable_memory_growth()


@dataclass(frozen=True)
class FoldInputs:
    """What a fold task needs besides its FoldTask: the pooled rows' images, labels and classes, and any backbone features."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple
    features: np.ndarray | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def run_folds_on_ray(run: Run, tasks: Sequence, inputs: FoldInputs, train_one: Callable, *, address: str | None, parallel: int | str,
                     image_size: int, say: Callable[[str], None]) -> None:
    """Trains each fold as a Ray task and writes what comes back into the run, live.

    The driver (this process, the run's worker) stays the one writer of events.jsonl and
    status.json: the tasks' events come back through a RunChannel actor and are appended
    here as they arrive, and each finished fold's files come back as bytes. A task whose
    worker dies is retried once by Ray; a stop request reaches running tasks within a
    batch, and tasks not yet started are cancelled.

    Args:
        run: The run (config.json and folds.csv written).
        tasks: The FoldTasks still to train.
        inputs: The pooled rows' images, labels, class names and any backbone features.
        train_one: The task body, `train_one(config_payload, task, inputs, channel, num_cpus)`,
            returning the fold's files as {relative path: bytes}.
        address: The cluster's address, or None for a private local Ray.
        parallel: Folds at once (a count or "auto").
        image_size: The image side, for the memory each task declares.
        say: Console reporter.

    Raises:
        RunStopped: A stop was requested (finished folds are written and kept).
        Exception: The first fold's failure, after the other tasks were cancelled.
    """
    if not tasks:
        return
    ray = import_ray()
    started_here = connect(address)
    try:
        resources = choose_task_resources(parallel, len(tasks), image_size, ray.cluster_resources())
        say(f"Training {len(tasks)} fold(s) as Ray tasks on {describe_address(address)}, each with {resources.describe()}.")
        channel = ray.remote(RunChannel).options(num_cpus=0).remote()
        inputs_ref = ray.put(inputs)
        remote = make_remote(ray, train_one, resources)
        pending = {remote.remote(run.config, task, inputs_ref, channel, resources.num_cpus): task for task in tasks}
        _drive(run, pending, channel, unit=lambda task: task.fold_number, done_file=FOLD_METRICS_FILE, say=say)
    finally:
        if started_here:
            ray.shutdown()


def relay_events(run: Run, channel, hosts: set[str], say: Callable[[str], None], attempts: dict | None = None) -> None:
    """Appends the tasks' queued events to the run; notes where tasks run and says when Ray retried one.

    Args:
        run: The run (this process is its one writer).
        channel: The RunChannel actor.
        hosts: The hosts seen so far, updated here (status.json's task_hosts).
        say: Console reporter.
        attempts: Each unit's latest attempt, kept by the caller across calls.
    """
    import ray

    attempts = {} if attempts is None else attempts
    name = "Trial" if run.kind == "tune" else "Fold"
    for event in ray.get(channel.take.remote()):
        event_type = event.pop("type")
        event.pop("time", None)
        if event_type in (events.FOLD_STARTED, events.TRIAL_STARTED):
            unit = event.get("fold") or event.get("trial")
            event["attempt"] = attempts.get(unit, 1)
        if event_type != TASK_STARTED:
            run.append_event(event_type, **event)
            continue
        attempts[event["unit"]] = event["attempt"]
        if event["host"] not in hosts:
            # Where the tasks ran, for `runs` and the run page (a resumed run adds to it).
            hosts.update(run.status().get("task_hosts") or [])
            hosts.add(event["host"])
            run.set_status(run.state, task_hosts=sorted(hosts))
        if event["attempt"] > 1:
            message = f"{name} {event['unit']}: its Ray worker was lost; Ray runs it again (attempt {event['attempt']})."
            run.append_event(events.WARNING, message=message)
            say(message)


def make_remote(ray, function: Callable, resources: TaskResources):
    """Wraps a task body for Ray: one call per worker process (TensorFlow's memory goes back after each), one retry."""
    # max_calls=1 gives every fold a fresh process, as the local engine does.
    wrapped = ray.remote(max_calls=1, max_retries=FOLD_RETRIES, retry_exceptions=False)(function)
    return wrapped.options(**resources.options())


def _drive(run: Run, pending: dict, channel, *, unit: Callable, done_file: str, say: Callable[[str], None]) -> None:
    """Relays events and stops until every task ended; writes each finished task's files; raises the first failure."""
    import ray
    from ray.exceptions import TaskCancelledError

    from zoidberg.runs.worker import RunStopped

    stopping = False
    failure: BaseException | None = None
    hosts: set[str] = set()
    attempts: dict[int, int] = {}

    def relay() -> None:
        relay_events(run, channel, hosts, say, attempts=attempts)

    def cancel_unstarted() -> None:
        begun = set(ray.get(channel.started.remote()))
        for ref, item in pending.items():
            if unit(item) not in begun:
                ray.cancel(ref)

    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        relay()
        if not stopping and run.stop_requested:
            stopping = True
            channel.request_stop.remote()
            cancel_unstarted()
        for ref in ready:
            item = pending.pop(ref)
            try:
                files = ray.get(ref)
            except (RunStopped, TaskCancelledError):
                stopping = True
                continue
            except Exception as error:  # The first real failure ends the run; the others are cancelled.
                if failure is None:
                    failure = _plain_task_error(error, unit(item))
                    stopping = True
                    channel.request_stop.remote()
                    cancel_unstarted()
                continue
            write_files(run, files, last=next((name for name in files if name.endswith(done_file)), None))
    relay()
    if failure is not None:
        raise failure
    if stopping:
        raise RunStopped()


def _plain_task_error(error: BaseException, unit: int) -> BaseException:
    """The cause of a failed task: the task's own exception, or a sentence for a worker that died twice."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    if isinstance(error, RayTaskError):
        cause = getattr(error, "cause", None)
        return cause if isinstance(cause, BaseException) else error
    if isinstance(error, WorkerCrashedError):
        return RuntimeError(
            f"The Ray worker training unit {unit} died {FOLD_RETRIES + 1} times (killed, or out of memory: lower the batch "
            "size or the image size, or give the task more memory)."
        )
    return error
