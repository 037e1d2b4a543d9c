"""`make app` serves the dashboards: the same command line comes up, works offline, and does not leak.

- the Voila server started by ``python -m opso_nb.apps`` lists the dashboards and renders one,
  and its pages link nothing outside this machine;
- Voila shuts down the kernel of a closed page (``MappingKernelManager`` culling), and
  ``panel serve`` discards the session of a closed page: after ten pages were opened and
  closed, the kernel / session count is back to where it started.
"""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from browser import (CHROMIUM, CHROMIUM_FLAGS, _require_browser, attach_error_collectors, free_port, kernel_pids,
                     live_panel_sessions, serve_app, wait_for_http)
from opso_nb.apps import APPS_DIR, serve_command, serve_environment

APP = APPS_DIR / "spectrogram_explorer.ipynb"
CYCLES = 10
BATCH = 2  # pages opened together, so kernel start-ups overlap (five at once beside another test worker
           # starved a 2-core CI machine: a page did not draw in 4 minutes)


def _external_links(html: str) -> list[str]:
    """src/href attributes that point to another machine."""
    links = re.findall(r"""(?:src|href)\s*=\s*["']((?:https?:)?//[^"']+)""", html)
    return [u for u in links if not re.match(r"(?:https?:)?//(127\.0\.0\.1|localhost)[:/]", u)]


def test_app_server_comes_up_lists_the_dashboards_and_links_nothing_outside(tmp_path):
    port = free_port()
    env = serve_environment([], tmp_path / "runs")
    proc = subprocess.Popen(serve_command("voila", port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=120, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            tree = response.read().decode()
        assert "Voil" in tree and _external_links(tree) == []  # the tree page (listed client-side)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/render/spectrogram_explorer.ipynb",
                                    timeout=120) as response:
            assert response.status == 200
            page = response.read().decode()
        assert "Spectrogram explorer" in page
        assert "fontawesome" not in page and _external_links(page) == []
        assert (APPS_DIR / "spectrogram_explorer.ipynb").exists()
    finally:
        kernels = kernel_pids(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        for pid in kernels:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_apps_module_refuses_a_missing_data_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "opso_nb.apps", "--data", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2 and "not a folder" in result.stderr


def _open_pages(browser, url, n, ready_text):
    """Open ``n`` pages at once, wait until each shows ``ready_text``; return them (with their contexts)."""
    pages = []
    for _ in range(n):
        context = browser.new_context()
        page = context.new_page()
        attach_error_collectors(page)
        page.goto(url, wait_until="commit", timeout=120_000)
        pages.append(page)
    for i, page in enumerate(pages):
        try:
            page.get_by_text(ready_text).first.wait_for(timeout=240_000)
        except Exception as err:  # say what the page showed instead
            text = page.evaluate("() => document.body ? document.body.innerText : ''")
            raise AssertionError(f"page {i + 1} of {n} did not show {ready_text!r}: {err}\npage errors: "
                                 f"{page.opso_errors}\npage text: {text[:1500]!r}") from None
    return pages


def _close(pages):
    errors = []
    for page in pages:
        errors += page.opso_errors
        page.context.close()
    assert not [e for e in errors if "non-local" in e], errors


def _wait_until(condition, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(1)
    return condition()


@pytest.mark.browser
def test_voila_frees_the_kernels_of_closed_pages():
    _require_browser()
    from playwright.sync_api import sync_playwright

    # a short cull time so the test is quick (make app uses CULL_IDLE_TIMEOUT / CULL_INTERVAL); it must still
    # outlast a page's load on a busy machine (two pages at once beside another test worker), or a kernel goes
    # before its page connects and that page never draws
    with serve_app(APP, "voila", cull_idle_timeout=90, cull_interval=3) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            kept = _open_pages(browser, url, 1, "Showing 0.00")  # stays open all along
            baseline = len(kernel_pids(url.pid))
            peak = baseline
            for _ in range(CYCLES // BATCH):
                pages = _open_pages(browser, url, BATCH, "Showing 0.00")
                peak = max(peak, len(kernel_pids(url.pid)))
                _close(pages)
            assert peak >= baseline + BATCH  # every visit started a kernel of its own
            assert _wait_until(lambda: len(kernel_pids(url.pid)) == baseline, 150), \
                f"{len(kernel_pids(url.pid))} kernels still running, {baseline} before"
            # the page left open the whole time (longer than the cull timeout) still has its kernel and works
            start = kept[0].get_by_label("Start time")
            start.fill("2")
            start.press("Enter")
            kept[0].get_by_text("Showing 2.00").first.wait_for(timeout=60_000)
            _close(kept)
        finally:
            browser.close()


@pytest.mark.browser
def test_panel_serve_discards_the_sessions_of_closed_pages():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with serve_app(APP, "panel") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            baseline = live_panel_sessions(url)
            for _ in range(CYCLES // BATCH):
                pages = _open_pages(browser, url, BATCH, "Showing 0.00")
                assert live_panel_sessions(url) >= baseline + BATCH
                _close(pages)
            # unused sessions live 15 s and are checked every 5 s (opso_nb.apps.panel_options)
            assert _wait_until(lambda: live_panel_sessions(url) == baseline, 60), \
                f"{live_panel_sessions(url)} live sessions, {baseline} before"
        finally:
            browser.close()
