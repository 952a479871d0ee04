"""Where a run's folds train: in the worker's own process, or each in a fresh child process, one or several at a time."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from zoidberg.runs.store import Run, make_event

# engine "auto" trains in the worker's process when a run is this small (images × side²),
# where a TensorFlow import per fold would cost more than the fold; children otherwise.
IN_PROCESS_PIXEL_BUDGET = 30_000_000
# Memory one fold child may need beyond the shared image cache, per image pixel (a float32
# batch pipeline, the model and TensorFlow itself), to size --parallel auto.
CHILD_BASE_BYTES = 1200 * 1024**2
CHILD_BYTES_PER_PIXEL = 4


class FoldChildDied(RuntimeError):
    """Raised when a fold's child process ends without a result (a kill or the out-of-memory killer)."""


@dataclass(frozen=True)
class FoldTask:
    """One fold to train: its number, its rows (positions in `indices`) and the run's pooled dataset rows."""

    fold_number: int
    train_part: np.ndarray
    validation_part: np.ndarray
    indices: np.ndarray


def choose_engine(engine: str, n_images: int, image_size: int, *, heads_only: bool = False) -> str:
    """The engine a run uses: "inprocess" or "local" (a child per fold); "auto" decides by what actually trains.

    Args:
        engine: The run's engine option.
        n_images: Images the folds train on.
        image_size: Their side.
        heads_only: Only small heads train, on cached backbone features (a frozen backbone): each
            takes seconds, less than a fold child's TensorFlow start-up, so they train here
            whatever the pixels.
    """
    if engine != "auto":
        return engine
    if heads_only:
        return "inprocess"
    return "inprocess" if n_images * image_size * image_size <= IN_PROCESS_PIXEL_BUDGET else "local"


def available_memory_bytes() -> int:
    """Memory the machine can still give (psutil's available), for sizing parallel folds."""
    import psutil

    return int(psutil.virtual_memory().available)


def choose_parallel(parallel: int | str, n_folds: int, image_size: int, cores: int | None = None, memory_bytes: int | None = None) -> int:
    """How many folds train at once: the number asked, or for "auto" what cores and memory allow.

    Args:
        parallel: A count of at least 1, or "auto".
        n_folds: Folds still to train (never more children than that).
        image_size: The run's image side, for the memory estimate.
        cores: CPU cores (default: os.cpu_count()).
        memory_bytes: Available memory (default: psutil's).

    Returns:
        The number of children, from 1 to n_folds.
    """
    if parallel != "auto":
        return max(1, min(int(parallel), max(1, n_folds)))
    cores = cores or os.cpu_count() or 1
    memory_bytes = available_memory_bytes() if memory_bytes is None else memory_bytes
    per_child = CHILD_BASE_BYTES + CHILD_BYTES_PER_PIXEL * image_size * image_size * 256
    # Two cores a child at least: one TensorFlow fold on one core is slower than sequential folds.
    by_cores = max(1, cores // 2)
    by_memory = max(1, memory_bytes // per_child)
    return max(1, min(by_cores, by_memory, n_folds))


def threads_per_child(children: int, cores: int | None = None) -> int:
    """TensorFlow's intra-op threads for each of `children` processes, so that together they fill the cores once."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, children))


class RelayRun(Run):
    """A fold child's view of the run: it reads the folder, but its events go to the driver, the one writer of events.jsonl."""

    def __init__(self, path, events: "multiprocessing.Queue"):
        super().__init__(path)
        self._events = events

    def append_event(self, event_type: str, **data) -> dict:
        event = make_event(event_type, **data)
        self._events.put(event)
        return event


_CHILD: dict = {}


@contextlib.contextmanager
def native_stderr_held():
    """Holds back what C++ code writes to standard error in a block, and lets it out only if the block fails.

    TensorFlow's import in every fold child writes absl and oneDNN start-up lines ("All log
    messages before absl::InitializeLog() ...", "oneDNN custom operations are on ...") that
    TF_CPP_MIN_LOG_LEVEL does not silence: four lines a fold between the CLI's progress lines.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietTensorFlowImport:
    """A sys.meta_path finder that runs TensorFlow's first import inside native_stderr_held, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            with native_stderr_held():
                execute(module)

        spec.loader.exec_module = exec_module  # This loader instance only.
        return spec


def quiet_tensorflow_when_imported() -> None:
    """Makes TensorFlow's import quiet whenever it first happens in this process, without importing it now.

    The CLI's driver of a run whose folds train in children needs TensorFlow only when the
    run ends (the test split, the feature stage): importing it up front to silence its
    start-up lines would hold about 500 MB while the children train, and delay the first
    progress line.
    """
    if "tensorflow" not in sys.modules and not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def _start_child(events, intra_op_threads: int, counter, visible_gpus: str | None) -> None:
    """Initializes a fold child: its event queue, its GPU (one of the driver's, in turn), TensorFlow's thread pools."""
    from zoidberg.training.devices import enable_memory_growth, gpu_for_child

    _CHILD["events"] = events
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    gpu = gpu_for_child(index, visible_gpus)
    if gpu is not None:
        # Before TensorFlow is imported: it reads the variable once.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    with native_stderr_held():
        import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, intra_op_threads))
    enable_memory_growth()


def _run_in_child(train_one: Callable, run_path: str, task: FoldTask) -> int:
    """The body of one fold child: `train_one(relay_run, task)`, with events relayed to the driver."""
    train_one(RelayRun(run_path, _CHILD["events"]), task)
    return task.fold_number


def _drain(run: Run, events, stop: threading.Event) -> None:
    """Appends the children's events to the run, in the order they arrive, until told to stop and the queue is empty."""
    while True:
        try:
            event = events.get(timeout=0.2)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        except (EOFError, OSError):
            return
        event_type = event.pop("type")
        event.pop("time", None)
        run.append_event(event_type, **event)


def run_folds_in_children(run: Run, tasks: Sequence[FoldTask], train_one: Callable, *, parallel: int = 1, cores: int | None = None) -> None:
    """Trains each fold in a fresh child process (spawned, one fold each), `parallel` at a time.

    Every child imports TensorFlow anew and exits after its fold, so the memory TensorFlow
    keeps per trained model goes back to the system. Children write their fold's files
    (model, metrics, out-of-fold probabilities); their events come back through a queue,
    and this process alone appends them to events.jsonl.

    Args:
        run: The run (its folder holds config.json, folds.csv and the caches' keys).
        tasks: The folds to train.
        train_one: A picklable module-level function `train_one(run, task)`.
        parallel: Children at once.
        cores: CPU cores to share among them (default: os.cpu_count()).

    Raises:
        Exception: The first fold's failure (a stop request arrives as RunStopped), after
            the other children were cancelled or finished.
    """
    if not tasks:
        return
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    stop = threading.Event()
    drainer = threading.Thread(target=_drain, args=(run, events, stop), name="fold-events", daemon=True)
    drainer.start()
    children = max(1, min(parallel, len(tasks)))
    try:
        from zoidberg.training.devices import visible_gpus_of_driver

        initargs = (events, threads_per_child(children, cores), context.Value("i", 0), visible_gpus_of_driver())
        with ProcessPoolExecutor(max_workers=children, mp_context=context, max_tasks_per_child=1,
                                 initializer=_start_child, initargs=initargs) as pool:
            futures = [pool.submit(_run_in_child, train_one, str(run.path), task) for task in tasks]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            for task, future in zip(tasks, futures):
                if future.done() and not future.cancelled() and future.exception() is not None:
                    error = future.exception()
                    if isinstance(error, BrokenProcessPool):
                        raise FoldChildDied(
                            f"The process training fold {task.fold_number} ended abruptly (killed, or out of memory). "
                            f"Finished folds are kept: `{run.resume_command()}` trains the rest."
                        ) from None
                    raise error
            wait(futures)
    finally:
        stop.set()
        drainer.join(timeout=10)
