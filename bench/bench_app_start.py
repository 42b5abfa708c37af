"""Cold start of the app as the README runs it: process start to the first result in a real browser.

    python bench/bench_app_start.py [--runs 3]

Runs ``.venv/bin/streamlit run app.py`` from the repository root (a ``.venv`` inside the project,
as the README sets it up), alternating ``.streamlit/config.toml`` as shipped with the settings the
app had before (``--server.fileWatcherType auto --server.address 0.0.0.0``: the watcher walks the
whole project, ``.venv`` included). Each run is a fresh server process (TensorFlow not yet imported,
the embedding cache warm), measured until the first "More like this" button shows in headless
Chromium. Prints per-setting median, min-max and the count of "Inotify" lines in the server log.
Needs ``playwright`` and ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# "before" = main's config: file watcher auto, every interface (which makes a headless start look
# up the machine's external IP on the internet to print it).
SETTINGS = {"shipped config": [],
            "before (watcher auto)": ["--server.fileWatcherType", "auto", "--server.address", "0.0.0.0"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(extra: list[str], browser) -> tuple[float, int]:
    port = free_port()
    streamlit = ROOT / ".venv" / "bin" / "streamlit"
    if not streamlit.exists():
        sys.exit(f"{streamlit} not found: set up the README's .venv inside the project first")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECOMMENDER_")}
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        start = time.monotonic()
        proc = subprocess.Popen([str(streamlit), "run", "app.py", "--server.port", str(port), *extra],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            page = browser.new_page()
            page.set_default_timeout(180_000)
            while True:
                try:
                    page.goto(f"http://localhost:{port}")
                    break
                except Exception:  # noqa: BLE001 - the server is not listening yet
                    if proc.poll() is not None or time.monotonic() - start > 180:
                        raise
                    time.sleep(0.2)
            page.get_by_role("button", name="More like this").first.wait_for()
            elapsed = time.monotonic() - start
            page.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        text = Path(log.name).read_text(errors="replace")
        inotify = text.count("Inotify")
    return elapsed, inotify


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per setting, alternating (default 3)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    lines: dict[str, list[int]] = {name: [] for name in SETTINGS}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        for i in range(args.runs):
            for name, extra in SETTINGS.items():
                t, n = one_run(extra, browser)
                times[name].append(t)
                lines[name].append(n)
                print(f"run {i + 1} {name:24s} first result {t:6.1f} s, {n} Inotify log lines", flush=True)
        browser.close()
    print(f"\nprocess start -> first result, n={args.runs} per setting (median [min, max]):")
    for name in SETTINGS:
        ts = times[name]
        print(f"  {name:24s} {statistics.median(ts):6.1f} s [{min(ts):.1f}, {max(ts):.1f}]   "
              f"Inotify lines: median {statistics.median(lines[name]):.0f}")


if __name__ == "__main__":
    main()
