"""End to end: the README's ``.venv/bin/streamlit run app.py`` as a real server, driven by a real Chromium.

The server is started exactly as the README says, from the repository root with the shipped
``.streamlit/config.toml`` (file watcher, address, upload limit as configured); only the port comes
from ``STREAMLIT_SERVER_PORT`` so that runs do not collide. It uses ``.venv/bin/streamlit`` when the
project has its ``.venv`` (as the README sets it up), else this interpreter's streamlit.

Needs the ``playwright`` Python package and a system Chromium at /usr/bin/chromium (Debian:
``apt-get install -y chromium``; Playwright's own browser download is not used). Skipped, with the
reason, where either is missing. Saves a screenshot in tmp_path (and to docs/screenshot.png with
UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

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
expect = sync_api.expect


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_command() -> list[str]:
    venv = ROOT / ".venv" / "bin" / "streamlit"
    return [str(venv.relative_to(ROOT)), "run", "app.py"] if venv.exists() else \
        [sys.executable, "-m", "streamlit", "run", "app.py"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app served as the README starts it; yields (url, log path); always terminated."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOMMENDER_", "STREAMLIT_"))}
    env["STREAMLIT_SERVER_PORT"] = str(port)
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(readme_command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://localhost:{port}"
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
            yield url, log_path
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(server, browser):
    """A fresh page on the app's first results; records every request that leaves the server."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1480}, accept_downloads=True)
    page.set_default_timeout(WAIT_S * 1000)
    expect.set_options(timeout=WAIT_S * 1000)
    page.outside = []
    page.on("request", lambda r: page.outside.append(r.url)
            if not r.url.startswith((url, "data:", "blob:")) else None)
    page.goto(url)
    expect(page.get_by_role("heading", name="Find similar products")).to_be_visible()
    expect(page.get_by_role("button", name="More like this").first).to_be_visible()
    settled(page)
    yield page
    page.close()


def settled(page) -> None:
    """Wait until the script run is over: until then Streamlit still shows the previous run's elements,
    and a download button from that run points at a media file the run's end deletes."""
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")


def no_errors(page) -> None:
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    expect(page.locator("[data-testid=stAlertContentError]")).to_have_count(0)


def test_starts_quietly_and_offline(server, page):
    _, log_path = server
    favicon = page.evaluate("() => document.querySelector('link[rel*=icon]')?.href || ''")
    assert favicon.startswith("data:"), favicon  # drawn by the browser, not fetched
    page.wait_for_load_state("networkidle")
    assert page.outside == []  # no font, icon or IP lookup from the internet
    log = log_path.read_text(errors="replace")
    for noise in ("Inotify", "Traceback", "external IP", "absl::InitializeLog", "cuda"):
        assert noise not in log, log[-3000:]
    # Cards show the real image (full screen shows these pixels), not a 320-px thumbnail.
    expect(page.get_by_role("button", name="More like this")).to_have_count(12)
    page.wait_for_function("() => document.images.length >= 13 && "
                           "[...document.images].every(img => img.complete && img.naturalWidth > 0)")
    widths = page.evaluate("() => [...document.images].map(img => img.naturalWidth)")
    assert len(widths) >= 13 and min(widths) >= 400, widths  # 12 cards and the query product


def test_clear_filters_resets_the_price_slider(page):
    caption = page.get_by_text("pass the filters", exact=False)
    unfiltered = caption.inner_text()
    start = page.get_by_role("slider", name="Price (USD) — start")
    start.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    expect(start).not_to_have_attribute("aria-valuetext", "$1")
    expect(caption).not_to_have_text(unfiltered)
    page.get_by_role("button", name="Clear filters").click()
    expect(start).to_have_attribute("aria-valuetext", "$1")
    expect(caption).to_have_text(unfiltered)
    # The next interaction elsewhere does not bring the old range back.
    k = page.get_by_role("slider", name="Number of results")
    k.focus()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("button", name="More like this")).to_have_count(11)
    expect(start).to_have_attribute("aria-valuetext", "$1")
    expect(caption).to_have_text(unfiltered)
    no_errors(page)


def test_more_like_this_shows_the_new_query_at_the_top(page):
    heading = page.get_by_role("heading", name="Find similar products")
    last = page.get_by_role("button", name="More like this").last
    last.scroll_into_view_if_needed()
    expect(heading).not_to_be_in_viewport()
    last.click()
    expect(heading).to_be_in_viewport()
    expect(page.get_by_role("combobox").first).to_be_in_viewport()
    no_errors(page)


def test_upload_a_photo_in_a_real_browser(page, tmp_path):
    page.get_by_role("radio", name="A photo").click()
    page.locator("input[type=file]").set_input_files(str(PHOTO))
    expect(page.get_by_text("1. Tennis Ball", exact=True)).to_be_visible()
    more = page.get_by_role("button", name="More like this")
    expect(more).to_have_count(12)
    expect(page.get_by_text("Query: uploaded image", exact=False)).to_be_visible()
    settled(page)
    no_errors(page)

    # Let the images finish loading, then keep the picture for the README (the app's defaults).
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
    page.mouse.move(0, 0)
    page.evaluate("() => document.querySelector('[data-testid=stMain]')?.scrollTo({top: 0})")
    page.screenshot(path=str(tmp_path / "screenshot.png"))
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOT") == "1":  # refresh the README's picture on request only
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "screenshot.png", SCREENSHOT)

    # The result list downloads as CSV, best first.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(Path(download.value.path()).read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 12
    assert rows[0]["rank"] == "1" and rows[0]["id"] == "tennis-ball" and rows[0]["currency"] == "USD"

    # A product image downloads as a re-encoded image, not the file's bytes.
    page.get_by_text("Details").first.click()
    settled(page)
    # The expander animates open; a click during the animation lands on whatever slides under it.
    page.wait_for_function("() => document.getAnimations().length === 0")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download image").first.click()
    data = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename == "tennis-ball.jpg"
    assert Image.open(io.BytesIO(data)).size == Image.open(PHOTO).size and data != PHOTO.read_bytes()
    page.get_by_text("Details").first.click()

    # The photo survives a trip to another mode.
    page.get_by_role("radio", name="A description").click()
    expect(more).to_have_count(0)
    page.get_by_role("radio", name="A photo").click()
    expect(page.get_by_text("1. Tennis Ball", exact=True)).to_be_visible()
    expect(page.get_by_text("Your photo: tennis-ball.jpg", exact=False)).to_be_visible()
