"""End to end: ``streamlit run app.py`` as a real server, driven by a real Chromium via Playwright.

Needs the ``playwright`` Python package and a system Chromium at /usr/bin/chromium (Debian:
``apt-get install -y chromium``; Playwright's own browser download is not used). Skipped, with the
reason, where either is missing. Saves a screenshot in tmp_path (and to docs/screenshot.png with UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
PHOTO = ROOT / "data" / "demo" / "images" / "tennis-ball.jpg"
SCREENSHOT = ROOT / "docs" / "screenshot.png"
WAIT_S = 90  # every wait below is bounded by this
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} not found (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """The app served on a free loopback port; always terminated."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOMMENDER_")}
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + WAIT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not answer within {WAIT_S} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def test_upload_a_photo_in_a_real_browser(server, tmp_path):
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1480}, accept_downloads=True)
            page.set_default_timeout(WAIT_S * 1000)
            expect.set_options(timeout=WAIT_S * 1000)
            page.goto(server)

            # Opens on the demo catalog with results for the preselected product.
            expect(page.get_by_role("heading", name="Find similar products")).to_be_visible()
            more = page.get_by_role("button", name="More like this")
            expect(more.first).to_be_visible()

            # Upload a product photo through the file input.
            page.get_by_role("radio", name="A photo").click()
            page.locator("input[type=file]").set_input_files(str(PHOTO))
            expect(page.get_by_text("1. Tennis Ball", exact=True)).to_be_visible()
            expect(more).to_have_count(12)
            expect(page.get_by_text("no description given", exact=False)).to_be_visible()
            expect(page.get_by_text("Query: uploaded image", exact=False)).to_be_visible()
            expect(page.locator("[data-testid=stException]")).to_have_count(0)
            expect(page.locator("[data-testid=stAlertContentError]")).to_have_count(0)

            # The result list downloads as CSV, best first.
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV").click()
            rows = list(csv.DictReader(Path(download.value.path()).read_text(encoding="utf-8").splitlines()))
            assert len(rows) == 12
            assert rows[0]["rank"] == "1" and rows[0]["id"] == "tennis-ball"

            # Let the images finish loading, then keep the picture for the README.
            page.wait_for_load_state("networkidle")
            page.wait_for_function(
                "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
            page.mouse.move(0, 0)
            page.screenshot(path=str(tmp_path / "screenshot.png"))
        finally:
            browser.close()
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOT") == "1":  # refresh the README's picture on request only
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "screenshot.png", SCREENSHOT)
