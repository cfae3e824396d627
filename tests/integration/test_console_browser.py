"""The console in a real browser: monitoring and evaluation write their reports (the services' own
report code on small frames), the model's deployment events go to the real broker, ``llmops ui``
(what ``make ui`` runs) starts Evidently's UI on the workspace and the platform page beside it, and
Debian's headless Chromium, driven by Selenium and the system chromedriver, finds the model's project,
its windows and evaluations among the reports, the dashboard's panels, one report's content, and on
the platform page the champion and canary, the versions and windows. Screenshots are kept under the
test's folder and in ``var/test-artifacts/`` (``ui.png``: the model's reports in Evidently's UI)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmops_config import PlatformSettings
from llmops_config.kafka import kafka_environment
from llmops_events.v1 import DeploymentCanaryStarted, DeploymentPromoted, DeploymentRequested
from llmops_messaging import EventPublisher
from llmops_stack import free_port, repo_paths
from llmops_storage.evidently_workspace import project_id, snapshot_id
from tests.console_reports import ConsoleReports, write_console_reports

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
PAGE_TIMEOUT_S = 60
UI_START_TIMEOUT_S = 90

NO_BROWSER = (
    "Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver;"
    " .ci/run installs them)"
)
needs_browser = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=NO_BROWSER)


@dataclass(frozen=True)
class Console:
    evidently_url: str
    platform_url: str
    reports: ConsoleReports


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory, kafka_settings: PlatformSettings) -> tuple[Path, ConsoleReports]:
    """The reports of a uniquely named model, in a fresh var/, and its deployment on the real broker:
    v1 champion, v2 canary at 25%."""
    root = tmp_path_factory.mktemp("console")
    written = write_console_reports(
        root / "evidently", root / "artifacts", model=f"banking-intents-{uuid.uuid4().hex[:6]}"
    )

    async def deploy() -> None:
        async with EventPublisher(kafka_settings, service="test") as publisher:
            await publisher.publish(DeploymentRequested(model_name=written.model, model_version=1, artifact_uri="x"))
            await publisher.publish(DeploymentPromoted(model_name=written.model, model_version=1))
            await publisher.publish(
                DeploymentCanaryStarted(
                    model_name=written.model, model_version=2, champion_version=1, traffic_share=0.25
                )
            )

    asyncio.run(deploy())
    return root, written


@pytest.fixture(scope="module")
def console(reports: tuple[Path, ConsoleReports], kafka_settings: PlatformSettings) -> Iterator[Console]:
    """``llmops ui`` on the reports, as ``make ui`` runs it; its URLs from what it prints."""
    root, written = reports
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("LLMOPS_")},
        **kafka_environment(kafka_settings),
        "LLMOPS_VAR_DIR": str(root),
        "LLMOPS_EVIDENTLY_WORKSPACE": str(root / "evidently"),
        "LLMOPS_ARTIFACT_STORE_URI": str(root / "artifacts"),
        "LLMOPS_UI_PORT": str(free_port()),
        "LLMOPS_CONSOLE_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "llmops_cli", "ui"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    seen: list[str] = []
    urls: dict[str, str] = {}
    deadline = time.monotonic() + UI_START_TIMEOUT_S
    try:
        while len(urls) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line.rstrip())
            for label in ("Evidently UI: ", "Platform page: "):
                if line.startswith(label):
                    urls[label] = line[len(label) :].split()[0]
        assert len(urls) == 2, "llmops ui did not print both URLs:\n" + "\n".join(seen)
        assert any(f"1 project(s): {written.model}" in line for line in seen), seen
        yield Console(urls["Evidently UI: "], urls["Platform page: "], written)
    finally:
        # SIGINT, as Ctrl-C: llmops ui stops Evidently's process before it exits.
        with_group(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with_group(process.pid, signal.SIGKILL)
            process.wait()


def with_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (uv sync --group dev)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1440,1000")
    # The system chromedriver matches the system chromium; Selenium Manager (a download) is not used.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_text(driver: Any, *texts: str) -> str:
    """The page's text once it shows every one of ``texts`` (the UI renders after its API calls)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(current: Any) -> str | bool:
        body = current.find_element(By.TAG_NAME, "body").text
        return body if all(text in body for text in texts) else False

    try:
        return str(WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.5).until(shown))
    except Exception as error:
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{driver.current_url} never showed {texts}; it shows:\n{body[:3000]}") from error


def _screenshot(driver: Any, folder: Path, name: str) -> Path:
    """Save the page under the test's folder and as a stable copy in var/test-artifacts/; print both."""
    path = folder / name
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    stable = repo_paths().root / "var" / "test-artifacts" / name
    stable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, stable)
    print(f"screenshot: {path} (copy: {stable})")
    return stable


@needs_browser
def test_the_console_shows_the_models_and_their_reports(browser: Any, console: Console, tmp_path: Path) -> None:
    model = console.reports.model
    url = console.evidently_url

    browser.get(f"{url}/")
    _wait_for_text(browser, model)
    _screenshot(browser, tmp_path, "ui-projects.png")

    project = project_id(model)
    browser.get(f"{url}/projects/{project}/reports")
    first, second = console.reports.window_report_ids
    page = _wait_for_text(
        browser,
        f"window {second} (v1): drift, request",
        f"window {first} (v1): drift, none",
        "evaluation of v2: approved",
    )
    assert "quality on feedback labels" in page
    shot = _screenshot(browser, tmp_path, "ui.png")
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one

    browser.get(f"{url}/projects/{project}")
    _wait_for_text(browser, "Drift per signal (classification windows)", "Candidates on the test set (classifiers)")
    _screenshot(browser, tmp_path, "ui-dashboard.png")

    drift = snapshot_id(model, f"monitoring/{second}/drift")
    browser.get(f"{url}/projects/{project}/reports/{drift}")
    _wait_for_text(browser, "prediction", "confidence")  # the window's drift per signal column
    _screenshot(browser, tmp_path, "ui-report.png")


@needs_browser
def test_the_platform_page_shows_who_is_live_and_the_chain(browser: Any, console: Console, tmp_path: Path) -> None:
    model = console.reports.model
    browser.get(f"{console.platform_url}/")
    page = _wait_for_text(browser, model, "champion v1, canary v2 at 25% (canary)", "Latest monitoring windows")
    first, second = console.reports.window_report_ids
    assert first in page and second in page and "approved" in page
    _screenshot(browser, tmp_path, "ui-platform.png")


def test_llmops_ui_serves_the_workspace_and_the_platform(console: Console) -> None:
    """Without a browser too: Evidently's API lists the model's project and its reports, and the
    platform page's API the model's deployment, versions and windows."""
    import httpx

    written = console.reports
    projects = httpx.get(f"{console.evidently_url}/api/projects", timeout=10).json()
    assert [(p["name"], p["id"]) for p in projects] == [(written.model, str(project_id(written.model)))]
    snapshots = httpx.get(f"{console.evidently_url}/api/projects/{project_id(written.model)}/snapshots", timeout=10)
    names = sorted(s["name"] for s in snapshots.json())
    assert len(names) == 2 * len(written.window_report_ids) + len(written.evaluated_versions), names
    assert f"window {written.window_report_ids[1]} (v1): drift, request" in names

    state = httpx.get(f"{console.platform_url}/api/models", timeout=30).json()
    assert state["note"] == ""
    (view,) = [m for m in state["models"] if m["name"] == written.model]
    assert (view["champion"], view["canary"], view["canary_share"], view["phase"]) == (1, 2, 0.25, "canary")
    assert [w["report_id"] for w in view["windows"]] == written.window_report_ids[::-1]
    assert [w["action"] for w in view["windows"]] == ["request", "none"]
