"""`make app` serves the dashboards: start the same command line and check it answers."""
import os
import signal
import subprocess
import urllib.request

from browser import free_port, wait_for_http
from opso_nb.apps import APPS_DIR, serve_command


def test_app_server_comes_up_and_lists_the_dashboards():
    port = free_port()
    proc = subprocess.Popen(serve_command("voila", port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=120, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert "Voil" in response.read().decode()  # the tree page (listed client-side)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/render/spectrogram_explorer.ipynb",
                                    timeout=120) as response:
            assert response.status == 200
            assert "Spectrogram explorer" in response.read().decode()
        assert (APPS_DIR / "spectrogram_explorer.ipynb").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
