#!/usr/bin/env python
"""Remakes docs/screenshots/ from real chest X-rays: trains the runs, evaluates them, drives the dashboard in Chromium.

    python docs/make_screenshots.py --data ../shared/data/chest_xray_224 \\
        --fullres ../shared/data/chest_xray_fullres --weights ../shared/weights

Every step is kept in --work (default /tmp/zoidberg-screenshots): run it again and finished
runs, hold-outs and evaluations are reused, so only the pictures are taken again. On 2 CPU
cores the first run takes about 25 minutes (the fine-tuned MobileNetV2 most of it).

The hold-outs: "shifted" holds out every NORMAL2-IM-* normal (another acquisition) with 15 %
of the pneumonia patients; "patients" is a patient-disjoint 12 % of what is left. The runs
train on the rest, so both evaluations see only patients the runs never saw.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTH = 1400

RUNS = {
    "cnn": ["--arch", "cnn", "--image-size", "128", "--folds", "3", "--epochs", "4", "--name", "CNN 128 px"],
    "frozen": [
        "--arch", "mobilenetv2", "--alpha", "0.5", "--weights", "imagenet", "--transfer-mode", "frozen", "--image-size", "224",
        "--folds", "5", "--epochs", "15", "--name", "MobileNetV2 0.5 frozen 224 px",
    ],
    "fine-tune": [
        "--arch", "mobilenetv2", "--alpha", "0.35", "--weights", "imagenet", "--transfer-mode", "fine-tune", "--image-size", "128",
        "--folds", "3", "--epochs", "4", "--name", "MobileNetV2 0.35 fine-tuned 128 px",
    ],
}


def say(message: str) -> None:
    print(f"[screenshots {time.strftime('%H:%M:%S')}] {message}", flush=True)


def zoidberg(*args: str, env: dict) -> str:
    """Runs the CLI and returns its standard output; stops the script on failure."""
    result = subprocess.run([sys.executable, "-m", "zoidberg", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"python -m zoidberg {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare(args, env: dict) -> dict[str, str]:
    """Carves the hold-outs, trains the runs and evaluates them (reusing what exists); returns {key: run id}."""
    work = args.work
    shifted, patients = work / "shifted", work / "patients"
    if not (shifted / "holdout").is_dir():
        say(zoidberg("holdout", "--data", str(args.data), "--out", str(shifted), "--by", "acquisition", "--fraction", "0.15", env=env))
    if not (patients / "holdout").is_dir():
        say(zoidberg("holdout", "--data", str(shifted / "rest"), "--out", str(patients), "--fraction", "0.12", env=env))
    listed = json.loads(zoidberg("runs", "--json", env=env))
    ids = {}
    for key, options in RUNS.items():
        name = options[options.index("--name") + 1]
        done = [row for row in listed if row["name"] == name and row["state"] == "completed"]
        if done:
            ids[key] = done[0]["id"]
            continue
        say(f"training {name} ...")
        summary = json.loads(zoidberg("cv", "--data", str(patients / "rest"), *options, "--json", env=env))
        ids[key] = summary["run_id"]
    for key, run_id in ids.items():
        for name, folder in (("patients", patients / "holdout"), ("shifted", shifted / "holdout")):
            zoidberg("evaluate", "--run", run_id, "--data", str(folder), "--name", name, env=env)
    say(f"runs: {ids}")
    return ids


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Dashboard:
    """The dashboard served on a free port, and a Chromium page on it."""

    def __init__(self, env: dict, height: int):
        self.port = free_port()
        self.env = env
        self.height = height

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        log = open(OUT_DIR.parent / ".screenshots-server.log", "w")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--browser.gatherUsageStats", "false"],
            cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        for _ in range(240):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": WIDTH, "height": self.height})
        self.page.set_default_timeout(120_000)
        self.page.goto(f"http://127.0.0.1:{self.port}/", wait_until="domcontentloaded")
        self.page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=120_000)
        return self

    def __exit__(self, *exc):
        self.browser.close()
        self.playwright.stop()
        self.server.terminate()
        self.server.wait(20)

    def go(self, title: str, settle: float = 6.0) -> None:
        self.page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
        time.sleep(settle)

    def select(self, label: str, text: str, settle: float = 6.0) -> None:
        self.page.get_by_label(label, exact=True).first.click()
        time.sleep(1)
        self.page.get_by_role("option").filter(has_text=text).first.click()
        time.sleep(settle)

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).first.click()
        time.sleep(2)

    def fill(self, label: str, value: str) -> None:
        field = self.page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Enter")
        time.sleep(8)

    def shot(self, name: str, height: int | None = None) -> None:
        """Saves the viewport, which is tall, as docs/screenshots/<name>.png (Streamlit scrolls inside it)."""
        if height:
            self.page.set_viewport_size({"width": WIDTH, "height": height})
            time.sleep(2)
        path = OUT_DIR / f"{name}.png"
        self.page.screenshot(path=str(path))
        if height:
            self.page.set_viewport_size({"width": WIDTH, "height": self.height})
        body = self.page.inner_text("body")
        if "Traceback" in body or "encountered an error" in body:
            sys.exit(f"{name}: the page shows an error")
        say(f"wrote {path.relative_to(REPO_ROOT)}")


def take(args, env: dict, ids: dict[str, str]) -> None:
    """Drives the dashboard through the pages and saves the screenshots."""
    with Dashboard(env, height=2600) as dashboard:
        dashboard.fill("Data folder", str(args.data))
        dashboard.shot("data", height=3000)
        dashboard.go("Train", settle=8)
        dashboard.select("Run", RUNS["fine-tune"][-1])
        dashboard.shot("run-gap", height=2400)
        dashboard.tab("Calibration")
        dashboard.shot("calibration", height=3000)
        dashboard.tab("Decision curve")
        dashboard.shot("decision-curve", height=3000)
        dashboard.go("Compare", settle=8)
        dashboard.page.get_by_text("evaluation: shifted").first.click()
        time.sleep(8)
        dashboard.shot("compare-external", height=2000)
        dashboard.go("Predict", settle=8)
        dashboard.select("Model (a finished cross-validation run)", RUNS["fine-tune"][-1], settle=10)
        files = [sorted((args.fullres / "train" / folder).glob("*.jpeg"))[0] for folder in ("NORMAL", "PNEUMONIA")]
        dashboard.page.locator('input[type="file"]').first.set_input_files([str(path) for path in files])
        time.sleep(25)
        dashboard.shot("predict", height=2200)
    demo_env = {**env, "ZOIDBERG_RUNS_DIR": str(args.work / "empty-runs")}
    with Dashboard(demo_env, height=2600) as dashboard:
        dashboard.shot("data-synthetic", height=2200)


def take_report_and_tensorboard(args, env: dict, ids: dict[str, str]) -> None:
    """The fine-tuned run's report opened offline in Chromium, and TensorBoard on every run's folds."""
    from playwright.sync_api import sync_playwright

    report = args.work / "report.html"
    zoidberg("report", "--run", ids["fine-tune"], "--out", str(report), env=env)
    port = free_port()
    board = subprocess.Popen(["tensorboard", "--logdir", str(args.work / "runs"), "--port", str(port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 3200})
            page.route("http*://**", lambda route: route.abort())  # The report must open offline.
            page.goto(report.as_uri())
            page.wait_for_timeout(1000)
            page.screenshot(path=str(OUT_DIR / "report.png"))
            say("wrote docs/screenshots/report.png")
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            for _ in range(60):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.5)
            page.goto(f"http://127.0.0.1:{port}/#timeseries")
            try:
                page.get_by_text("epoch_auc").first.wait_for(timeout=60_000)
            except Exception:  # Playwright's TimeoutError: runs made before TensorBoard logging have none.
                say("TensorBoard shows no scalars (runs made before TensorBoard logging): tensorboard.png kept as it was")
            else:
                page.wait_for_timeout(3000)
                page.screenshot(path=str(OUT_DIR / "tensorboard.png"))
                say("wrote docs/screenshots/tensorboard.png")
            browser.close()
    finally:
        board.terminate()
        board.wait(20)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "chest_xray_224")
    parser.add_argument("--fullres", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "chest_xray_fullres")
    parser.add_argument("--weights", type=Path, default=REPO_ROOT.parent / "shared" / "weights")
    parser.add_argument("--work", type=Path, default=Path("/tmp/zoidberg-screenshots"))
    args = parser.parse_args(argv)
    for path in (args.data, args.fullres, args.weights):
        if not path.is_dir():
            print(f"error: {path} is missing (real data and weights live in ../shared)", file=sys.stderr)
            return 2
    args.work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "ZOIDBERG_RUNS_DIR": str(args.work / "runs"),
        "ZOIDBERG_WEIGHTS_DIR": str(args.weights.resolve()),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    ids = prepare(args, env)
    take(args, env, ids)
    take_report_and_tensorboard(args, env, ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
