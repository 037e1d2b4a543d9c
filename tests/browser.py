"""Serve a dashboard notebook and drive it in headless Chromium.

Used by every ``tests/test_*_browser.py``, either with context managers::

    from browser import serve_app, open_page, assert_healthy

    @pytest.mark.browser
    @pytest.mark.parametrize("server", ["voila", "panel"])
    def test_it(server):
        with serve_app(APP, server) as url, open_page(url) as page:
            page.get_by_text("some status").first.wait_for(timeout=90_000)
            ...
            assert_healthy(page)

Chromium is Debian's (``/usr/bin/chromium``), launched by path through
Playwright; no browser is ever downloaded. Without Chromium or Playwright the
tests skip locally and fail under CI (``CI=true``), so CI cannot pass by
skipping them.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    # no name resolves except this machine's: a request to any other host fails at once
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Console errors that are not the dashboards' fault, in one place. Anything else fails the test.
#: There is no network noise here: a page may not request anything outside this machine
#: (see :func:`attach_error_collectors`), so a failed CDN request is a failure, not noise.
ALLOWED_CONSOLE_NOISE = [
    re.compile(p)
    for p in (
        r"favicon",
        r"Shared module @jupyterlab/\w+ doesn't exist in shared scope",  # jupyterlab_pyviz extension in Voila
        r"WebSocket connection to .* failed",  # a comm socket closing while the page unloads
    )
]


#: Server-log tracebacks that are not the dashboards' fault (each pattern spans the whole logged error).
ALLOWED_SERVER_TRACEBACKS = [
    # jupyter_server's kernel culler meets a kernel still starting (no activity recorded yet); it logs
    # the error, skips that kernel and checks it again next round
    re.compile(r"\[Voila\] ERROR \| The following exception was encountered while checking the idle duration "
               r"of kernel .*?TraitError: The 'last_activity' trait of a \w+ instance expected a datetime, "
               r"not the NoneType None\.\n", re.S),
]

_WIDGET_ERROR_SELECTORS = [
    ".jupyter-widgets-error-widget",  # ipywidgets' "Error displaying widget" box
    ".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']",
]


def _require_browser():
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"Debian chromium not found at {CHROMIUM} (make test installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright (python) is not installed"
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser tests cannot run under CI: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(notebook: Path, server: str, port: int, cull_idle_timeout: int | None = None,
                   cull_interval: int | None = None) -> tuple[list[str], str]:
    """Command line and URL to serve ``notebook`` with ``server`` ("voila" or "panel") on ``port``.

    ``notebook`` may be a folder: Voila then lists it, ``panel serve`` serves every
    notebook in it (the URL is the server's root; add ``<name>``). The options are
    those of ``python -m opso_nb.apps`` (template, kernel culling, session expiry).
    """
    from opso_nb.apps import CULL_IDLE_TIMEOUT, CULL_INTERVAL, panel_options, voila_options

    notebook = Path(notebook)
    bin_dir = Path(sys.executable).parent
    if server == "voila":
        cmd = [str(bin_dir / "voila"), str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
               "--show_tracebacks=True",
               *voila_options(cull_idle_timeout or CULL_IDLE_TIMEOUT, cull_interval or CULL_INTERVAL)]
        return cmd, f"http://127.0.0.1:{port}/"
    if server == "panel":
        # a folder: every notebook in it, each at /<name> (one server process, imports shared)
        notebooks = sorted(str(p) for p in notebook.glob("*.ipynb")) if notebook.is_dir() else [str(notebook)]
        cmd = [str(bin_dir / "panel"), "serve", *notebooks, "--port", str(port), "--address", "127.0.0.1",
               "--allow-websocket-origin", f"127.0.0.1:{port}", *panel_options()]
        return cmd, f"http://127.0.0.1:{port}/" + ("" if notebook.is_dir() else notebook.stem)
    raise ValueError(f"server must be 'voila' or 'panel', got {server!r}")


def wait_for_http(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers HTTP 200 (raises RuntimeError with the server log otherwise)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except Exception as err:  # not up yet
            last = err
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s ({last})")


class ServedApp(str):
    """The URL of a served app (a ``str``), with the server's ``pid``, ``port``, ``server`` and ``output`` folder."""

    pid: int
    port: int
    server: str
    output: Path


@contextlib.contextmanager
def serve_app(notebook, server: str = "voila", timeout: float = 120.0, env=None, data=(), output=None,
              cull_idle_timeout: int | None = None, cull_interval: int | None = None):
    """Serve a notebook with Voila or ``panel serve`` on a free port; yield its URL; stop the server after.

    The workspace is that of ``python -m opso_nb.apps --data DATA --output OUTPUT``;
    ``output`` defaults to a fresh temporary folder, so a test never writes into
    the checkout. The yielded :class:`ServedApp` is the URL and knows the server's
    pid and output folder. The server's output is checked for Python tracebacks
    when it stops.
    """
    from opso_nb.apps import serve_environment

    _require_browser()
    port = free_port()
    cmd, url = server_command(Path(notebook), server, port, cull_idle_timeout, cull_interval)
    tmp_root = Path(os.environ.get("PYTEST_TMPDIR", tempfile.gettempdir()))
    if output is None:
        output = Path(tempfile.mkdtemp(prefix=f"opso_nb_{server}_out_", dir=tmp_root))
    log_path = tmp_root / f"opso_nb_{server}_{port}.log"
    log = open(log_path, "w+b")
    server_env = serve_environment(data, output, base={**os.environ, "MPLBACKEND": "Agg", **(env or {})})
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=server_env)
    served = ServedApp(url)
    served.pid, served.port, served.server, served.output = proc.pid, port, server, Path(output)
    try:
        if server == "panel":
            wait_for_http(url, timeout, proc)
        else:  # a GET of Voila's page would start a kernel just for the check: wait for the port
            _wait_port(port, timeout, proc)
        yield served
    finally:
        kernels = kernel_pids(proc.pid)  # before the server dies: its children are then re-parented
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _stop_kernels(kernels)
        log.seek(0)
        output_text = log.read().decode(errors="replace")
        log.close()
        for pattern in ALLOWED_SERVER_TRACEBACKS:
            output_text = pattern.sub("", output_text)
        if "Traceback (most recent call last)" in output_text:
            raise AssertionError(f"{server} server logged a traceback:\n{output_text[-4000:]}")


def kernel_pids(server_pid: int) -> list[int]:
    """Process ids of the Jupyter kernels a server started (its children running ``ipykernel``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == server_pid and b"ipykernel" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _stop_kernels(pids) -> None:
    # kernels run in their own session: the signal to the server's process group misses any it left running
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def live_panel_sessions(url) -> int:
    """Live sessions of a ``panel serve`` server (from ``/rest/session_info``)."""
    import json

    base = "/".join(str(url).split("/")[:3])
    with urllib.request.urlopen(f"{base}/rest/session_info", timeout=10) as response:
        return int(json.loads(response.read())["session_info"]["live"])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:.0f} s")


@contextlib.contextmanager
def open_page(url: str, viewport=(1400, 1000), goto_timeout_ms: int = 120_000):
    """Open ``url`` in headless Chromium; yield the Playwright page.

    ``page.opso_errors`` collects uncaught page errors, console errors that
    are not in :data:`ALLOWED_CONSOLE_NOISE` and requests to other machines;
    :func:`assert_healthy` checks it.
    """
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            attach_error_collectors(page)
            page.goto(url, timeout=goto_timeout_ms)
            yield page
        finally:
            browser.close()


def assert_healthy(page) -> None:
    """Fail on page errors, unexpected console errors, non-local requests, widget-error boxes or Voila cell errors."""
    errors = list(getattr(page, "opso_errors", []))
    for selector in _WIDGET_ERROR_SELECTORS:
        count = page.locator(selector).count()
        if count:
            errors.append(f"{count} element(s) matching {selector}: {page.locator(selector).first.inner_text()[:500]}")
    body = page_text(page)
    for marker in ("Error displaying widget", "There was an error when executing cell", "Traceback (most recent call last)"):
        if marker in body:
            errors.append(f"page shows {marker!r}: ...{body[body.index(marker):][:800]}")
    assert not errors, "\n".join(errors)


_DEEP_TEXT_JS = """
() => {
  const out = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) out.push(child.textContent);
      else if (child.nodeName !== 'SCRIPT' && child.nodeName !== 'STYLE') walk(child);
    }
  };
  walk(document.body);
  return out.join(' ').replace(/\\s+/g, ' ');
}
"""


def page_text(page) -> str:
    """All visible text of the page, including inside shadow roots (Bokeh/Panel render there)."""
    return page.evaluate(_DEEP_TEXT_JS)


def poll(page, condition, timeout_s: float = 20.0) -> bool:
    """True as soon as ``condition()`` holds (checked every 200 ms); False after ``timeout_s``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return True
        page.wait_for_timeout(200)
    return bool(condition())


def wait_for_canvases(page, count: int = 1, timeout_s: float = 90.0) -> None:
    """Wait until Bokeh has drawn at least ``count`` canvases (locators pierce Bokeh's shadow DOM)."""
    if not poll(page, lambda: page.locator("canvas").count() >= count, timeout_s):
        raise AssertionError(f"fewer than {count} canvas(es) after {timeout_s} s; page text: {page_text(page)[:800]}")


def canvas_fingerprint(page, index: int = 0) -> bytes:
    """PNG bytes of one canvas element, to tell whether a plot changed.

    Bokeh draws each plot on two stacked canvases (plot, then overlay), so
    plot ``k`` on a page is canvas ``2 * k``.
    """
    return page.locator("canvas").nth(index).screenshot()


# ---------------------------------------------------------------------------
# Convenience names: one-server context managers, pytest fixtures, widget helpers.

def serve_voila(notebook_path, timeout: float = 120.0, env=None, **kwargs):
    """``serve_app(notebook_path, "voila")``: serve one notebook with Voila, yield its URL."""
    return serve_app(notebook_path, "voila", timeout=timeout, env=env, **kwargs)


def serve_panel(notebook_or_py_path, timeout: float = 120.0, env=None, **kwargs):
    """``serve_app(path, "panel")``: serve one notebook or script with ``panel serve``, yield its URL."""
    return serve_app(notebook_or_py_path, "panel", timeout=timeout, env=env, **kwargs)


@pytest.fixture
def browser():
    """A headless Chromium (Debian's, launched by path) for one test.

    Function-scoped on purpose: a live sync Playwright keeps an asyncio loop running in
    the worker, which would break later tests that call ``sync_playwright()`` themselves.
    """
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def is_local_url(url: str) -> bool:
    """True for URLs that never leave this machine (localhost, data:, blob:, about:)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome-error", ""):
        return True
    host = parts.hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def attach_error_collectors(page) -> None:
    """Record page errors, non-allow-listed console errors and every request to another machine.

    All three land in ``page.opso_errors``, which :func:`assert_healthy` checks: a
    dashboard must work with no network, so any request (or WebSocket) to a host
    other than this one fails the test, whatever the page does with the answer.
    """
    page.opso_errors = []
    page.on("pageerror", lambda err: page.opso_errors.append(f"page error: {err}"))

    def on_request(request):
        if not is_local_url(request.url):
            page.opso_errors.append(f"non-local request: {request.url}")

    def on_websocket(ws):
        if not is_local_url(ws.url.replace("ws://", "http://").replace("wss://", "https://")):
            page.opso_errors.append(f"non-local websocket: {ws.url}")

    page.on("request", on_request)
    page.on("websocket", on_websocket)

    def on_console(message):
        if message.type == "error" and not any(p.search(message.text) for p in ALLOWED_CONSOLE_NOISE):
            page.opso_errors.append(f"console error: {message.text[:500]}")

    page.on("console", on_console)


@pytest.fixture
def page(browser):
    """A fresh page (own context) whose errors are collected for :func:`assert_healthy`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    new_page = context.new_page()
    attach_error_collectors(new_page)
    try:
        yield new_page
    finally:
        context.close()


def wait_for_bokeh_plot(page, count: int = 1, timeout_s: float = 90.0) -> None:
    """Wait until ``count`` Bokeh plots have drawn (each plot draws on two stacked canvases)."""
    wait_for_canvases(page, 2 * count, timeout_s)


def set_widget_value(page, label: str, value, timeout_ms: int = 30_000) -> None:
    """Set a Panel widget found by its visible label, as a user would.

    Selects pick the option whose value or text is ``value``; text and number inputs
    are filled and Enter pressed (Panel commits on Enter/blur); sliders are moved with
    the keyboard from their current value (``value`` is a number of arrow-key steps
    when given as ``("steps", n)``). Locators pierce Bokeh's shadow DOM.
    """
    widget = page.get_by_label(label).first
    widget.wait_for(timeout=timeout_ms)
    tag = widget.evaluate("el => el.tagName.toLowerCase()")
    if tag == "select":
        try:
            widget.select_option(value=str(value), timeout=timeout_ms)
        except Exception:
            widget.select_option(label=str(value), timeout=timeout_ms)
    elif tag in ("input", "textarea"):
        widget.fill(str(value))
        widget.press("Enter")
    else:  # a slider handle (noUiSlider): arrow keys move it by one step each
        if not (isinstance(value, tuple) and value[0] == "steps"):
            raise ValueError("for sliders pass value=('steps', n) with n arrow-key steps (negative: left)")
        handle = widget if widget.get_attribute("role") == "slider" else widget.locator("[role=slider]").first
        handle.focus()
        key = "ArrowRight" if value[1] > 0 else "ArrowLeft"
        for _ in range(abs(int(value[1]))):
            handle.press(key)
