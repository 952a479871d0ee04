"""Keeps Streamlit's work between two script runs small: with TensorFlow loaded, its clean-up held the GIL for most of a second."""

from __future__ import annotations

import sys


def _clean_problem_modules_without_collecting() -> None:
    """What Streamlit does after every run (Keras' global state cleared, pyplot figures closed), without a full collection.

    Keras' clear_session() collects garbage by default; with TensorFlow and a run's models in
    memory a full collection takes 0.3 to 0.5 s, during which no answer reaches the browser.
    """
    if "keras" in sys.modules:
        try:
            sys.modules["keras"].backend.clear_session(free_memory=False)
        except Exception:  # As Streamlit does: a failed clean-up never stops the app.
            pass
    if "matplotlib.pyplot" in sys.modules:
        try:
            sys.modules["matplotlib.pyplot"].close("all")
        except Exception:
            pass


def lighten_script_runs() -> None:
    """Replaces Streamlit's after-run clean-up by one that does not collect garbage (idempotent).

    The two other costs of a run are settings in .streamlit/config.toml: runner.postScriptGC
    (another full collection) and server.fileWatcherType (every module's path resolved after
    each run, thousands with TensorFlow). benchmarks/label_page.py measures the key-to-next-film
    time they cost.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if getattr(script_runner, "_clean_problem_modules", None) is not _clean_problem_modules_without_collecting:
        script_runner._clean_problem_modules = _clean_problem_modules_without_collecting
