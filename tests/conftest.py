"""Shared fixtures (a tiny demo data set, no network access for any test) and helpers for notebook and browser tests."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

# Names that resolve through the hosts file, never through DNS, and literal loopback addresses
# (the tests' own HTTP server on 127.0.0.1, and Jupyter kernels talking over loopback) stay allowed.
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_loopback(host) -> bool:
    if host is None:  # getaddrinfo(None, port): the wildcard / local address, no look-up
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _offline() -> bool:
    return os.environ.get("MEMSEG_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


class OfflineNetworkAccess(OSError):
    """Raised by the test guard for a connection or name look-up while MEMSEG_OFFLINE=1."""


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    # Tests never download: "auto" backbone weights fall back to random init without trying.
    monkeypatch.setenv("MEMSEG_OFFLINE", "1")
    # Tests run on the CPU on a GPU machine too: device="auto" means the CPU (memseg_lite.core.runtime),
    # in this process and in the processes it starts. CPU runs repeat bit for bit; GPU runs do not.
    monkeypatch.setenv("MEMSEG_DEVICE", "cpu")


@pytest.fixture
def network_attempts(_offline_env):
    """The connections and name look-ups attempted during this test (a test may clear it)."""
    return _ATTEMPTS


_ATTEMPTS: list[tuple[str, str]] = []


@pytest.fixture(autouse=True)
def _no_network_when_offline(_offline_env, monkeypatch):
    """While MEMSEG_OFFLINE=1, any connection or name look-up that could leave the machine fails.

    The patched calls raise :class:`OfflineNetworkAccess` (an ``OSError``, as a real network
    failure would be), and the test fails at teardown even when the code under test swallowed
    that error. Loopback literals and ``localhost`` are allowed: the download tests serve archives
    from 127.0.0.1, and notebook kernels talk to Jupyter over loopback (ZMQ, not Python sockets).
    """
    _ATTEMPTS.clear()

    def refuse(kind: str, target) -> None:
        _ATTEMPTS.append((kind, repr(target)))
        raise OfflineNetworkAccess(
            f"MEMSEG_OFFLINE=1: the test tried {kind}({target!r}); tests must not use the network"
        )

    getaddrinfo, create_connection = socket.getaddrinfo, socket.create_connection
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    gethostbyname, gethostbyname_ex, gethostbyaddr = socket.gethostbyname, socket.gethostbyname_ex, socket.gethostbyaddr

    def guarded_getaddrinfo(host, *args, **kwargs):
        if _offline() and not _is_loopback(host):
            refuse("getaddrinfo", host)
        return getaddrinfo(host, *args, **kwargs)

    def guarded_create_connection(address, *args, **kwargs):
        if _offline() and not _is_loopback(address[0]):
            refuse("create_connection", address)
        return create_connection(address, *args, **kwargs)

    def _check_address(kind, sock, address):
        if _offline() and sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            refuse(kind, address)

    def guarded_connect(self, address):
        _check_address("connect", self, address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        _check_address("connect_ex", self, address)
        return connect_ex(self, address)

    def by_name(kind, original):
        def guarded(host, *args):
            if _offline() and not _is_loopback(host):
                refuse(kind, host)
            return original(host, *args)

        return guarded

    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "gethostbyname", by_name("gethostbyname", gethostbyname))
    monkeypatch.setattr(socket, "gethostbyname_ex", by_name("gethostbyname_ex", gethostbyname_ex))
    monkeypatch.setattr(socket, "gethostbyaddr", by_name("gethostbyaddr", gethostbyaddr))
    yield
    if _ATTEMPTS:
        seen = list(_ATTEMPTS)
        _ATTEMPTS.clear()
        pytest.fail(f"network access while MEMSEG_OFFLINE=1 (no socket may be opened): {seen}", pytrace=False)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """Demo data at 64 x 64: 16 train/good, 4 test/good and 2 per defect type per category."""
    from memseg_lite.datasets.demo.writer import write_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root, categories=["button", "mesh"], size=64, n_train=16, n_test_good=4, n_per_defect=2, seed=0)
    return root


def tiny_config(root, out_dir, **overrides):
    """A TrainConfig that trains in about a second per step on 2 CPU cores (on the CPU, whatever the machine)."""
    from memseg_lite.training.config import TrainConfig

    options = dict(
        data_root=str(root), category="button", out_dir=str(out_dir), image_size=64, steps=6, batch_size=4,
        memory_size=4, val_images=3, val_every=3, checkpoint_every=3, backbone_weights="none", seed=0,
        device="cpu",
    )
    options.update(overrides)
    return TrainConfig(**options)


# ---- shared helpers: tiny notebooks, a folder served over HTTP, headless Chromium -------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def make_notebook(title: str, markdown: str, code: list[str]):
    """A notebook with one markdown cell (``# title`` then ``markdown``) and the given code cells."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{markdown}")]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in code]
    return notebook


def execute_notebook(notebook, folder, timeout: int = 120):
    """Run ``notebook`` in place with nbclient on the python3 kernel, its working folder ``folder``."""
    from nbclient import NotebookClient

    resources = {"metadata": {"path": str(folder)}}
    NotebookClient(notebook, kernel_name="python3", timeout=timeout, resources=resources).execute()
    return notebook


def chromium_options(user_data_dir, extra_flags=()):
    """Headless Chromium that never phones home (no background networking, updates or sync)."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={user_data_dir}", "--window-size=1280,1000", *extra_flags,
    ):
        options.add_argument(flag)
    return options


def start_chromium(user_data_dir):
    """A selenium driver for Debian's chromium, or ``pytest.skip`` saying what is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        pytest.skip(f"browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} missing); "
                    "as root, `make test` installs them: apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser test needs selenium (pip install -e '.[dev]')")
    service = Service(executable_path=CHROMEDRIVER)  # never Selenium Manager (it would download a driver)
    driver = webdriver.Chrome(service=service, options=chromium_options(user_data_dir))
    driver.set_page_load_timeout(90)
    return driver


def serve_folder(folder):
    """Serve ``folder`` over HTTP on a free localhost port: a context manager yielding the base URL."""
    import contextlib
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    @contextlib.contextmanager
    def serving():
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()

    return serving()


def images_state(driver) -> list[dict]:
    """Every image of the loaded page: loaded?, natural width, the start of its source."""
    return driver.execute_script(
        "return Array.from(document.images,"
        " i => ({complete: i.complete, width: i.naturalWidth, src: i.src.slice(0, 60)}));"
    )


def fetched_urls(driver) -> list[str]:
    """Every resource the loaded page fetched (scripts, styles, fonts, images, XHR), as the browser saw it."""
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")


# ---- test tiers: `make test-fast` runs `-m "not slow"` --------------------------------------------------------
# Tests that train a model or execute notebooks are slow. Mark new ones with @pytest.mark.slow next to the
# test; these modules and tests (measured at 5 s or more each on 2 CPU cores) are marked here so that the
# files other work is editing need no change. A name that no longer exists fails the collection.
SLOW_MODULES = {"test_ablation.py", "test_notebooks.py", "test_train.py", "test_predict.py"}
SLOW_TESTS = {
    "test_bad_input_cli.py::test_train_refuses_a_folder_holding_a_run",
    "test_bad_input_cli.py::test_restart_starts_over_and_keeps_other_files",
    "test_bad_input_cli.py::test_truncated_checkpoint_then_restart",
    "test_exercise_checks.py::test_ch08_exercise_3_resume_losses",
    "test_evaluate.py::test_reproduce_trains_evaluates_and_skips_finished_categories",
}


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        module = item.path.name
        test = f"{module}::{item.originalname}"
        if module in SLOW_MODULES or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        seen.update({module, test})
    whole_suite = {item.path.name for item in items} >= {name.split("::")[0] for name in SLOW_TESTS} | SLOW_MODULES
    stale = (SLOW_MODULES | SLOW_TESTS) - seen
    if whole_suite and stale:
        raise pytest.UsageError(f"tests/conftest.py marks tests slow that do not exist: {sorted(stale)}")
