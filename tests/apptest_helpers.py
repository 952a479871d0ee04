"""Helpers every AppTest page test shares: opening the app on a page, reading its elements, waiting."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from zoidberg.ui.state import DATA_DIR_KEY

APP = Path(__file__).resolve().parent.parent / "streamlit_app.py"
# The first script run (or the first Start) imports TensorFlow in the test process.
SCRIPT_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240


def open_app(data_dir: Path | None = None, page: str | None = None) -> AppTest:
    """Opens the app, optionally with a chosen data folder and on another page; fails on any exception."""
    app = AppTest.from_file(str(APP), default_timeout=SCRIPT_TIMEOUT_S)
    if data_dir is not None:
        app.session_state[DATA_DIR_KEY] = str(data_dir)
    app.run()
    assert_no_exception(app)
    if page:
        app.switch_page(page).run()
        assert_no_exception(app)
    return app


def assert_no_exception(app: AppTest) -> None:
    """Fails with the exception texts when a page raised."""
    assert not app.exception, [element.value for element in app.exception]


def texts(elements) -> str:
    """Joins the values of alert, caption or markdown elements."""
    return "\n".join(str(element.value) for element in elements)


def button(app: AppTest, label: str):
    """Returns the first button whose label contains `label`."""
    return next(item for item in app.button if label in item.label)


def metric_values(app: AppTest) -> dict[str, str]:
    """Returns {label: value} of the metric cards."""
    return {metric.label: metric.value for metric in app.metric}


def plotly_count(app: AppTest) -> int:
    """Counts the plotly charts drawn."""
    return len(app.get("plotly_chart"))


def wait_for(predicate, timeout: float = RUN_TIMEOUT_S, interval: float = 0.5):
    """Polls until predicate() is truthy; returns its value or fails on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout} s waiting for {predicate.__name__}")
