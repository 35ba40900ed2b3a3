"""The anomaly explorer in a real browser: JupyterLab (from .venv) on a free localhost port, headless
Chromium driven by selenium, a tiny notebook that shows the explorer on demo images; moving the
``delta`` slider with the keyboard must redraw the picture.

This checks what the headless tests (tests/test_widgets.py) cannot: that the widget's front end
renders in JupyterLab, that a slider sends its value to the kernel and that the new figure comes
back to the page.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "memseg-lite-widget-test"
START_TIMEOUT = 120  # seconds for JupyterLab to answer
STEP_TIMEOUT = 120  # seconds for the page, the kernel, the first picture, the redraw (each)

NOTEBOOK_CELLS = [
    (
        "import numpy as np\n"
        "from memseg_lite.datasets.demo.render import render_good\n"
        "from memseg_lite.simulation.textures import TextureSource\n"
        "from memseg_lite.teaching.widgets import anomaly_explorer"
    ),
    (
        "images = {\n"
        "    'mesh': render_good('mesh', np.random.default_rng(0), size=64),\n"
        "    'button': render_good('button', np.random.default_rng(1), size=64),\n"
        "}\n"
        "explorer = anomaly_explorer(images, texture_source=TextureSource(None, n_procedural=4, procedural_size=32))\n"
        "explorer.widget"
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_notebook(path: Path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    nbformat.write(notebook, path)


def our_kernels(runtime: Path) -> list[int]:
    """Process ids of kernels started with a connection file in ``runtime`` (that is, by our server)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.startswith(str(runtime).encode()) and part.endswith(b".json") for part in command):
            pids.append(int(entry.name))
    return pids


@pytest.fixture()
def jupyterlab(tmp_path):
    """JupyterLab on the notebook folder; always stopped (server and its kernels) at the end."""
    work = tmp_path / "lab"
    work.mkdir()
    write_notebook(work / "explorer.ipynb")
    runtime = tmp_path / "runtime"
    port = free_port()
    env = dict(
        os.environ,
        MEMSEG_OFFLINE="1",
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
    )
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run the cells through its commands
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (tmp_path / "jupyterlab.log").open("wb")
    server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited with {server.returncode}:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=5) as answer:
                    json.load(answer)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {base} within {START_TIMEOUT} s")
                time.sleep(0.5)
        yield base
    finally:
        stop_server(server, base, runtime)
        log.close()


def stop_server(server: subprocess.Popen, base: str, runtime: Path) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure: SIGTERM, SIGKILL, by process id."""
    if server.poll() is None:
        try:
            request = urllib.request.Request(
                f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {TOKEN}"}
            )
            urllib.request.urlopen(request, timeout=10).close()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
    for pid in our_kernels(runtime):  # a kernel the server failed to stop
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture()
def browser(tmp_path):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} missing); "
                    "as root, `make test` installs them: apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser test needs selenium (pip install -e '.[dev]')")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(STEP_TIMEOUT)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# The slider with a given description label, and the picture in the explorer's output area.
SLIDER = "//div[contains(@class, 'widget-slider')][.//label[normalize-space(.)='{label}']]"
PICTURE_JS = """
const images = document.querySelectorAll('.jp-OutputArea-output .widget-output img, .jupyter-widgets-output-area img');
return images.length ? images[images.length - 1].getAttribute('src') : null;
"""
PICTURE_WIDTH_JS = """
const images = document.querySelectorAll('.jp-OutputArea-output .widget-output img, .jupyter-widgets-output-area img');
const image = images[images.length - 1];
return image && image.complete ? image.naturalWidth : 0;
"""
KERNEL_IDLE_JS = """
const app = window.jupyterapp;
if (!app || !app.shell.currentWidget || !app.shell.currentWidget.sessionContext) return null;
const kernel = app.shell.currentWidget.sessionContext.session && app.shell.currentWidget.sessionContext.session.kernel;
return kernel ? kernel.status : null;
"""

# Run code in the notebook's kernel without touching the notebook; its printed text lands in window.__probe.
PROBE_JS = """
window.__probe = null;
const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
const future = kernel.requestExecute({code: arguments[0], store_history: false});
future.onIOPub = (message) => {
  if (message.header.msg_type === 'stream') window.__probe = (window.__probe || '') + message.content.text;
};
"""


def wait(driver, condition, what: str, timeout: float = STEP_TIMEOUT, shots: Path | None = None):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        if shots is not None:
            driver.save_screenshot(str(shots / "failure.png"))
        pytest.fail(
            f"timed out after {timeout} s waiting for {what}"
            + (f" (screenshot {shots / 'failure.png'})" if shots else "")
        )


def test_moving_the_delta_slider_redraws_the_picture(browser, jupyterlab, tmp_path):  # browser first: a skip is quick
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{jupyterlab}/lab/tree/explorer.ipynb?token={TOKEN}")
    wait(
        browser, lambda d: d.execute_script(KERNEL_IDLE_JS) == "idle", "the notebook's kernel to start", shots=tmp_path
    )
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    slider = wait(
        browser,
        lambda d: d.find_elements(By.XPATH, SLIDER.format(label="delta (preview)")),
        "the explorer's delta slider",
        shots=tmp_path,
    )[0]
    before = wait(browser, lambda d: d.execute_script(PICTURE_JS), "the explorer's first picture", shots=tmp_path)
    assert before.startswith("data:image/png;base64,")
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    assert readout.text.strip() == "0.50"

    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.click()  # focus the handle, as a user tabbing to it would
    for _ in range(4):
        handle.send_keys(Keys.ARROW_RIGHT)  # one step (0.05) each
    wait(browser, lambda d: readout.text.strip() != "0.50", "the slider's readout to move", shots=tmp_path)
    moved = float(readout.text)
    assert 0.5 < moved <= 1.0
    after = wait(
        browser,
        lambda d: (src := d.execute_script(PICTURE_JS)) not in (None, before) and src,
        "a redrawn picture",
        shots=tmp_path,
    )
    assert after.startswith("data:image/png;base64,") and after != before
    width = wait(browser, lambda d: d.execute_script(PICTURE_WIDTH_JS), "the redrawn picture to decode", shots=tmp_path)
    assert width > 100  # the browser decoded it: a figure of several panels, hundreds of pixels wide
    # the kernel got the value the page shows, and the picture is the result for it
    browser.execute_script(PROBE_JS, "print(explorer.controls['delta'].value, explorer.result.delta)")
    printed = wait(browser, lambda d: d.execute_script("return window.__probe;"), "the kernel's answer", shots=tmp_path)
    control, used = (float(v) for v in printed.split())
    assert control == pytest.approx(moved) and used == pytest.approx(moved)
