"""Real-browser end-to-end test: Playwright drives Debian's Chromium through the whole dashboard.

A `streamlit run streamlit_app.py` server is started on a free port with private runs, cache
and demo folders. The test then, in one browser session:

1. opens Data and waits for the synthetic demo dataset to be shown;
2. on Train, starts a tiny patient-grouped CV (CNN, 32 px, k = 2, small filters) and sees
   the live learning curves gain points and the epoch counter advance while the run goes on;
3. reloads the page and sees the same run reattached live (without clicking Start again)
   while the run store still holds exactly one cross-validation run;
4. waits for the summary of the finished run;
5. opens Compare (one finished run: it asks for a second);
6. on Predict, uploads a demo X-ray and sees a probability and the Grad-CAM overlay, and a film
   the model never learned from (a real X-ray, or a colour image) refused with no diagnosis;
7. on Tune, starts a 1-trial search at 32 px and sees the trial's result appear.

A screenshot of every page is written to $ZOIDBERG_ARTIFACTS_DIR or artifacts/screenshots/.
The test skips when Playwright or /usr/bin/chromium is missing (CI installs both).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import SHARED_DATA, free_port

from zoidberg.runs.liveness import pid_is_alive
from zoidberg.runs.store import ACTIVE_STATES, RunStore

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 2400}
# Screenshots grow the viewport to the page's height, up to this many pixels.
MAX_SCREENSHOT_HEIGHT = 9000

# The machine is slow and shared: every wait is generous, the work itself is tiny.
SERVER_START_TIMEOUT_S = 180
PAGE_TIMEOUT_MS = 240_000
RUN_TIMEOUT_S = 600
TUNE_TIMEOUT_S = 300

# The CV run: small enough to finish in about a minute, long enough to be watched and reloaded.
# Each epoch of a fold is a fraction of a second at 32 px with 8 filters, so a fold needs
# tens of epochs (early stopping off) to stay live through two observations and a reload.
IMAGE_SIZE = 32
FOLDS = 2
EPOCHS = 40
START_LABEL = "Start cross-validation"

# Sums the points of every trace of every plotly chart; the newest live chart has the most.
PLOT_POINTS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot'))
    .map(plot => (plot.data || []).reduce((total, trace) => total + ((trace.x || []).length), 0))"""
NO_SKELETON_JS = "() => !document.querySelector('[data-testid=\"stSkeleton\"]')"
MAIN_HEIGHT_JS = (
    "() => { const main = document.querySelector('[data-testid=\"stMain\"]'); return main ? main.scrollHeight : 0 }"
)


# ----------------------------------------------------------------------------- fixtures




def artifacts_dir() -> Path:
    """Where screenshots and the server log go: $ZOIDBERG_ARTIFACTS_DIR or artifacts/screenshots/."""
    configured = os.environ.get("ZOIDBERG_ARTIFACTS_DIR", "").strip()
    folder = Path(configured) if configured else REPO_ROOT / "artifacts" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def chromium():
    """Launches Debian's headless Chromium through Playwright, or skips when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's chromium)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def stop_workers(runs_dir: Path, grace_s: float = 30.0) -> list[int]:
    """Stops every active run's worker: a stop request first, then SIGTERM and SIGKILL of its session.

    Returns:
        The pids of workers still alive afterwards (empty when all are gone).
    """
    try:
        runs = RunStore(runs_dir).list_runs()
    except OSError:
        return []
    pids = []
    for run in runs:
        status = run.read_json("status.json", {}) or {}
        pid = status.get("pid")
        if status.get("state") in ACTIVE_STATES:
            with contextlib.suppress(OSError, ValueError):
                run.request_stop()
        if pid and pid_is_alive(pid):
            pids.append(int(pid))
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if pid_is_alive(pid)]
        time.sleep(0.5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            # Workers run in their own session, so the group id is the pid.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if pid_is_alive(pid)]
            time.sleep(0.2)
    return pids


@contextlib.contextmanager
def started_app(private_dirs, demo_dir, extra_args=(), log_name: str = "streamlit-server.log"):
    """Runs `streamlit run streamlit_app.py` on a free port with private runs, cache and demo folders.

    Args:
        private_dirs: The test's private folder (runs, cache).
        demo_dir: The demo dataset.
        extra_args: More `streamlit run` options (a secrets file, say).
        log_name: The server log's file name under the artifacts folder.

    Yields:
        (base URL, runs folder).
    """
    runs_dir = Path(private_dirs) / "runs"
    env = {
        **os.environ,
        "ZOIDBERG_RUNS_DIR": str(runs_dir),
        "ZOIDBERG_CACHE_DIR": str(Path(private_dirs) / "cache"),
        "ZOIDBERG_DEMO_DIR": str(demo_dir),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    log_path = artifacts_dir() / log_name
    log = open(log_path, "wb")
    command = [
        sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        *extra_args,
    ]
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base_url, server, log_path)
        yield base_url, runs_dir
    finally:
        left = stop_workers(runs_dir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.pid, sig)
            try:
                server.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        assert not left, f"worker processes still alive after the test: {left}"


@pytest.fixture
def app_server(private_dirs, demo_dir):
    """The dashboard on a free port (see started_app)."""
    with started_app(private_dirs, demo_dir) as served:
        yield served


def wait_for_health(base_url: str, server: subprocess.Popen, log_path: Path) -> None:
    """Polls /_stcore/health until the server answers "ok"; fails with the log when it dies or stalls."""
    started = time.monotonic()
    while time.monotonic() - started < SERVER_START_TIMEOUT_S:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=5) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return
        time.sleep(0.5)
    pytest.fail(f"no health answer in {SERVER_START_TIMEOUT_S} s:\n{log_path.read_text(errors='replace')[-3000:]}")


# ----------------------------------------------------------------------------- helpers


class Timer:
    """Prints and keeps how long each step took."""

    def __init__(self):
        self.started = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def step(self, name: str):
        """Times one step."""
        begin = time.monotonic()
        print(f"[browser] {name} ...", flush=True)
        yield
        seconds = time.monotonic() - begin
        self.steps.append((name, seconds))
        print(f"[browser] {name}: {seconds:.1f} s (total {time.monotonic() - self.started:.1f} s)", flush=True)

    def report(self) -> str:
        """One line per step and the total."""
        lines = [f"{seconds:7.1f} s  {name}" for name, seconds in self.steps]
        lines.append(f"{time.monotonic() - self.started:7.1f} s  total")
        return "\n".join(lines)


def settle(page) -> None:
    """Waits until Streamlit has drawn every element (no loading skeleton left)."""
    page.wait_for_function(NO_SKELETON_JS, timeout=PAGE_TIMEOUT_MS)


def snap(page, name: str) -> Path:
    """Saves a screenshot of the whole page: the viewport grows to Streamlit's scrolling main area."""
    path = artifacts_dir() / f"{name}.png"
    height = int(page.evaluate(MAIN_HEIGHT_JS) or 0)
    # The main area fills the viewport at least, so only a taller page grows it.
    tall = min(height, MAX_SCREENSHOT_HEIGHT) if height > VIEWPORT["height"] else VIEWPORT["height"]
    if tall != VIEWPORT["height"]:
        page.set_viewport_size({"width": VIEWPORT["width"], "height": tall})
        page.wait_for_timeout(800)
    page.screenshot(path=str(path), animations="disabled")
    if tall != VIEWPORT["height"]:
        page.set_viewport_size(VIEWPORT)
    print(f"[browser] screenshot {path}", flush=True)
    return path


def go_to(page, title: str) -> None:
    """Clicks a page in the sidebar menu (keeps the browser session, unlike a new URL)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()


def set_number(page, label: str, value: int) -> None:
    """Types into a number input and leaves it (Tab, not Enter: Enter would submit a form)."""
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Tab")
    assert field.input_value() == str(value), f"{label} shows {field.input_value()!r}, not {value}"


def slider_to_minimum(page, label: str) -> str:
    """Moves a slider to its smallest value with the keyboard and returns the value shown."""
    slider = page.get_by_role("slider", name=label)
    slider.focus()
    slider.press("Home")
    return slider.get_attribute("aria-valuetext") or slider.input_value()


def cv_runs(runs_dir: Path) -> list:
    """The cross-validation runs of the store."""
    return RunStore(runs_dir).list_runs(kind="cv") if runs_dir.exists() else []


def plot_points(page) -> int:
    """The most points any plotly chart on the page holds (0 without a chart)."""
    return max(page.evaluate(PLOT_POINTS_JS) or [0])


def live_counters(page) -> tuple[int, int] | None:
    """Reads (fold, epoch) from the live view's metric cards, or None before they show."""
    values = {}
    for card in page.locator('[data-testid="stMetric"]').all():
        with contextlib.suppress(Exception):
            label = card.locator('[data-testid="stMetricLabel"]').inner_text(timeout=2000).strip()
            values[label] = card.locator('[data-testid="stMetricValue"]').inner_text(timeout=2000).strip()
    fold, epoch = re.match(r"(\d+)/", values.get("Fold", "")), re.match(r"(\d+)/", values.get("Epoch", ""))
    if not fold or not epoch:
        return None
    return int(fold.group(1)), int(epoch.group(1))


def poll(predicate, timeout_s: float, what: str, interval_s: float = 0.4):
    """Calls predicate() until it returns something truthy; fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def run_state(runs_dir: Path, run_id: str) -> str:
    """The run's state as its status.json says."""
    return RunStore(runs_dir).get(run_id).state


# ----------------------------------------------------------------------------- the test


def upload_images(demo_dir: Path, folder: Path) -> tuple[Path, Path]:
    """A demo X-ray the demo-trained model knows, and a film it must refuse.

    The film to refuse is a real full-resolution X-ray of median file size from ../shared when it
    is there (a model trained on the synthetic demo has never seen a real film), else a colour
    gradient that is no X-ray at all.
    """
    known = sorted((demo_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    real = sorted((SHARED_DATA / "chest_xray_fullres").rglob("*.jpeg"), key=lambda path: path.stat().st_size)
    if real:
        return known, real[len(real) // 2]
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)), np.full((256, 256), 200, np.uint8)], axis=-1)
    foreign = folder / "colour-gradient.png"
    Image.fromarray(pixels, "RGB").save(foreign)
    return known, foreign


@pytest.mark.timeout(1500)
def test_dashboard_end_to_end_in_chromium(chromium, app_server, demo_dir, tmp_path):
    """Data → Train (live, reload, reattach, finish) → Compare → Predict (Grad-CAM) → Tune, in Chromium."""
    from playwright.sync_api import expect

    base_url, runs_dir = app_server
    timer = Timer()
    load = os.getloadavg()
    print(f"[browser] load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs", flush=True)
    (artifacts_dir() / "failure.png").unlink(missing_ok=True)
    context = chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        with timer.step("Data page"):
            page.goto(base_url + "/", wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Data")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            synthetic = page.get_by_text("Synthetic demo data — not real X-rays").first
            expect(synthetic).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_text("Fold preview")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_text("No patient is shared between folds")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            settle(page)
            snap(page, "1-data")

        with timer.step("Train form"):
            go_to(page, "Train")
            start = page.get_by_role("button", name=START_LABEL)
            expect(start).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            settle(page)
            assert slider_to_minimum(page, "Base filters") == "8"
            assert slider_to_minimum(page, "Dense units") == "16"
            assert slider_to_minimum(page, "Batch size") == "4"
            set_number(page, "Image size (px)", IMAGE_SIZE)
            set_number(page, "Folds k", FOLDS)
            set_number(page, "Epochs", EPOCHS)
            set_number(page, "Early-stopping patience", 0)
            assert cv_runs(runs_dir) == []
            start.click()
            runs = poll(lambda: cv_runs(runs_dir), 120, "the run folder of the started run")
            assert len(runs) == 1
            run = runs[0]
            run_id = run.id
            print(f"[browser] started {run_id}", flush=True)
            config = run.config
            assert config["data"]["image_size"] == IMAGE_SIZE and config["n_splits"] == FOLDS
            assert config["train"]["epochs"] == EPOCHS and config["train"]["batch_size"] == 4
            assert config["model"]["base_filters"] == 8 and config["model"]["dense_units"] == 16
            expect(page.get_by_role("heading", name=run_id)).to_be_visible(timeout=PAGE_TIMEOUT_MS)

        with timer.step("Train live: curves gain points"):
            first_points = poll(lambda: plot_points(page), RUN_TIMEOUT_S, "the first points of the live curves")
            first_counters = live_counters(page)
            assert run_state(runs_dir, run_id) in ACTIVE_STATES, "the run ended before its live view could be watched"

            def advanced():
                points, counters = plot_points(page), live_counters(page)
                if points > first_points and counters and (first_counters is None or counters > first_counters):
                    return points, counters
                return None

            second_points, second_counters = poll(advanced, RUN_TIMEOUT_S, "the live curves to gain points")
            assert run_state(runs_dir, run_id) in ACTIVE_STATES, "the run ended before the reload could be tried"
            print(
                f"[browser] live chart {first_points} -> {second_points} points; "
                f"(fold, epoch) {first_counters} -> {second_counters}",
                flush=True,
            )
            expect(page.get_by_role("button", name="⏹ Stop", exact=True)).to_be_visible()
            snap(page, "2-train-live")

        with timer.step("Train reload: reattaches to the same run"):
            page.reload(wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name=run_id)).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            assert run_state(runs_dir, run_id) in ACTIVE_STATES, "the run ended before the reloaded page showed it"
            # Live after the reload: the running badge and Stop, with curves read from the run store again.
            expect(page.get_by_role("heading", name=re.compile(re.escape(run_id) + r".*running"))).to_be_visible(
                timeout=PAGE_TIMEOUT_MS
            )
            expect(page.get_by_role("button", name="⏹ Stop", exact=True)).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            poll(lambda: plot_points(page), RUN_TIMEOUT_S, "the learning curves after the reload")
            runs = cv_runs(runs_dir)
            run_ids = [item.id for item in runs]
            assert run_ids == [run_id], f"the reload started or lost a run: {run_ids}"

        with timer.step("Train: run completes"):
            poll(lambda: run_state(runs_dir, run_id) not in ACTIVE_STATES, RUN_TIMEOUT_S, "the run to end", 1.0)
            status = RunStore(runs_dir).get(run_id).status()
            assert status.get("state") == "completed", f"run ended {status.get('state')}: {status.get('error')}"
            summary = page.get_by_text(f"Cross-validation: mean ± std over {FOLDS} folds")
            expect(summary).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_role("heading", name=re.compile(re.escape(run_id) + r".*completed"))).to_be_visible()
            expect(page.locator('[data-testid="stMetric"]').filter(has_text="AUC").first).to_be_visible()
            assert [item.id for item in cv_runs(runs_dir)] == [run_id]
            settle(page)
            snap(page, "3-train-finished")

        with timer.step("Compare page"):
            go_to(page, "Compare")
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            needs_two = page.get_by_text("Comparing needs at least two completed cross-validation runs; there is 1")
            expect(needs_two).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            settle(page)
            snap(page, "4-compare")

        with timer.step("Predict page: upload, probability, Grad-CAM, refusal"):
            go_to(page, "Predict")
            expect(page.get_by_role("heading", name="Predict")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_text(f"Ensemble of all {FOLDS} fold models")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            known, foreign = upload_images(demo_dir, tmp_path)
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(known), str(foreign)])
            expect(page.get_by_text("Results (2 images)")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            # Headed by P(pneumonia) against the threshold, then the call, in three digits (or "> 0.999").
            probability = r"(\d\.\d{3}|> 0\.999|< 0\.001)"
            headline = page.get_by_text(re.compile(
                rf"^P\(pneumonia\) {probability} ± \d\.\d{{3}} across {FOLDS} folds, (below|at or above) the threshold \d\.\d{{3}}: (normal|pneumonia)$"
            ))
            expect(headline).to_have_count(1, timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_text(re.compile(rf"The threshold applies to (raw|calibrated) probabilities: raw {probability}, calibrated {probability}"))).to_have_count(1)
            expect(page.get_by_role("switch", name="Grad-CAM heatmap")).to_be_checked()
            overlay = page.locator('[data-testid="stImage"]').filter(has_text="Grad-CAM: evidence for").locator("img")
            expect(overlay).to_have_count(1, timeout=PAGE_TIMEOUT_MS)
            page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=overlay.element_handle())
            # The film the model never learned from gets the refusal card, with no diagnosis and no Grad-CAM.
            expect(page.get_by_role("heading", name="No diagnosis")).to_have_count(1, timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_text("1 of 2 image(s) do not look like the frontal chest X-rays")).to_be_visible()
            print(f"[browser] prediction for {known.name}: {headline.inner_text()}; {foreign.name} refused", flush=True)
            settle(page)
            snap(page, "5-predict")

        with timer.step("Tune page: 1-trial search"):
            go_to(page, "Tune")
            expect(page.get_by_role("heading", name="Tune")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            start_tuning = page.get_by_role("button", name="Start tuning")
            expect(start_tuning).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            settle(page)
            set_number(page, "Image size (px)", IMAGE_SIZE)
            set_number(page, "Max trials", 1)
            set_number(page, "Epochs per trial", 1)
            # Each input reruns the page; Start must belong to the last rerun, with every value in.
            expect(page.get_by_text("Searching", exact=False).first).to_be_visible()
            page.wait_for_timeout(1000)
            start_tuning.click()
            tune_runs = poll(lambda: RunStore(runs_dir).list_runs(kind="tune"), 120, "the tuning run folder")
            assert len(tune_runs) == 1
            tune_config = tune_runs[0].config
            assert tune_config["max_trials"] == 1 and tune_config["data"]["image_size"] == IMAGE_SIZE
            expect(page.get_by_text("Best so far: trial 1")).to_be_visible(timeout=TUNE_TIMEOUT_S * 1000)
            trials = json.loads((tune_runs[0].path / "trials.json").read_text())
            assert [row["trial"] for row in trials] == [1]
            poll(lambda: tune_runs[0].state not in ACTIVE_STATES, TUNE_TIMEOUT_S, "the search to end", 1.0)
            expect(page.get_by_text("Best configuration", exact=True)).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            settle(page)
            snap(page, "6-tune")

        with timer.step("No worker left running"):
            assert not stop_workers(runs_dir, grace_s=60), "a worker outlived its finished run"
    except Exception:
        with contextlib.suppress(Exception):
            snap(page, "failure")
        raise
    finally:
        report = timer.report()
        print(f"[browser] timings\n{report}", flush=True)
        with contextlib.suppress(OSError):
            (artifacts_dir() / "timings.txt").write_text(report + f"\nload average at start: {load}\n")
        context.close()


# A fake OpenID Connect provider is enough: the login screen needs no network, only a click on
# "Log in" would reach the provider's address.
FAKE_AUTH_SECRETS = """[auth]
redirect_uri = "http://127.0.0.1:8501/oauth2callback"
cookie_secret = "zoidberg-browser-test-cookie-secret-0123456789"
client_id = "zoidberg-test"
client_secret = "not-a-secret"
server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"
"""
# What only a logged-in user may see, page by page: none of it may show before the login.
PAGE_CONTENT = ("Data folder", "Start cross-validation", "Patient-grouped", "Runs folder", "Presets", "Compare runs",
                "Drop one or more chest X-rays", "No finished run yet", "streamlit app")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("address", ["data", "train", "compare", "predict", "tune", ""])
def test_a_fresh_server_shows_only_the_login_at_every_page_address(chromium, private_dirs, demo_dir, tmp_path, address):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(FAKE_AUTH_SECRETS, encoding="utf-8")
    with started_app(private_dirs, demo_dir, ["--secrets.files", str(secrets)], log_name=f"streamlit-login-{address or 'home'}.log") as (base_url, _):
        page = chromium.new_page(viewport={"width": 1200, "height": 900})
        try:
            # The first address this fresh server is asked for: Streamlit would run pages/<name>.py by itself.
            page.goto(f"{base_url}/{address}", timeout=PAGE_TIMEOUT_MS)
            page.get_by_role("button", name="Log in").wait_for(timeout=PAGE_TIMEOUT_MS)
            settle(page)
            body = page.inner_text("body")
            page.screenshot(path=str(artifacts_dir() / f"login-{address or 'home'}.png"))
        finally:
            page.close()
    assert "log in to see its runs and X-rays" in body and "not a medical device" in body
    shown = [text for text in PAGE_CONTENT if text in body]
    assert not shown, f"/{address} showed {shown} before any login"


@pytest.mark.timeout(300)
def test_without_a_login_a_page_address_gets_the_same_frame_and_keeps_its_folder(chromium, private_dirs, demo_dir, tmp_path):
    folder = tmp_path / "hospital"
    shutil.copytree(demo_dir, folder)
    with started_app(private_dirs, demo_dir, [], log_name="streamlit-frame.log") as (base_url, _):
        page = chromium.new_page(viewport={"width": 1200, "height": 900})
        try:
            # The first address a fresh server is asked for, with a folder in it, as a reloaded tab sends.
            page.goto(f"{base_url}/train?data={urllib.parse.quote(str(folder))}", timeout=PAGE_TIMEOUT_MS)
            page.get_by_text("Start cross-validation").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            settle(page)
            navigation = page.locator('[data-testid="stSidebarNav"]').inner_text()
            body = page.inner_text("body")
            address = page.url
            page.screenshot(path=str(artifacts_dir() / "frame-train-address.png"))
        finally:
            page.close()
    # The entry script's navigation (titles), not the raw page files, and the footer.
    assert "Train" in navigation and "Predict" in navigation and "streamlit app" not in navigation
    assert "not a medical device" in body
    # The folder in the address survives the detour through the entry script.
    assert f"Data folder: {folder}" in body and "data=" in address


def test_the_service_docs_render_in_chromium_with_no_network_beyond_the_service(chromium):
    """Swagger UI comes from the service (a closed network has no CDN), and /docs needs the key like every route."""
    import threading
    import time

    import uvicorn
    from conftest import free_port

    from zoidberg.serving.app import build_app

    key = "docs-key-0123456789"
    port = free_port()
    # The docs never load the run: no service is made.
    server = uvicorn.Server(uvicorn.Config(build_app(lambda: None, api_key=key, max_body_bytes=1024**2), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    address, outside = f"http://127.0.0.1:{port}", []
    try:
        page = chromium.new_page()

        def only_the_service(route):
            if route.request.url.startswith(address):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_service)
        assert page.goto(f"{address}/docs").status == 401
        page.goto(f"{address}/docs?key={key}")
        page.wait_for_selector(".swagger-ui .info .title", timeout=30000)
        assert page.inner_text(".swagger-ui .info .title").startswith("Zoidberg prediction service")
        assert page.locator(".opblock-summary-path").all_inner_texts() == ["/v1/predict", "/v1/model", "/healthz"]
        assert outside == []
    finally:
        server.should_exit = True
