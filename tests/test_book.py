"""The documentation site (scripts/build_docs.py, ``make docs``): the real pages of docs/, README and
CONTRIBUTING, the API reference, and tiny notebooks executed here; checked as files and in headless
Chromium (Debian's chromium + chromedriver via selenium): pages load, MathJax typesets the formulas
from the site's own copy with no request leaving it, navigation works, images are present."""

from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag

import pytest
from conftest import execute_notebook, fetched_urls, images_state, make_notebook, serve_folder, start_chromium

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_docs.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

NOTEBOOKS = {
    "00_intro.ipynb": (
        "00 · Intro",
        "The first notebook. Next: [the figure](01_figure.ipynb#A-section), [the glossary](../docs/glossary.md).",
        ["total = 1 + 1\ntotal"],
    ),
    "01_figure.ipynb": (
        "01 · Figure",
        "Draw a figure with $\\alpha = 1$ and\n\n$$\\sum_{i=1}^{n} x_i^2$$\n\n"
        "## A section\n\nBack to [the intro](00_intro.ipynb).",
        [
            "%matplotlib inline\nimport matplotlib.pyplot as plt\nimport numpy as np",
            "fig, ax = plt.subplots(figsize=(2, 2))\nax.imshow(np.arange(16.0).reshape(4, 4))\nplt.show()",
        ],
    ),
    "02_end.ipynb": ("02 · End", "The last notebook, never executed here.", ["print('done')"]),
}


def load_script():
    if "build_docs" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_docs", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_docs"] = module
        spec.loader.exec_module(module)
    return sys.modules["build_docs"]


# ---- fast: the pieces of the build ---------------------------------------------------------------------------


def test_rewrite_links_follow_the_staged_layout():
    module = load_script()
    pages = {"README.md": "index.md", "docs/glossary.md": "glossary.md", "notebooks/01_a.ipynb": "notebooks/01_a.ipynb"}
    unchanged = " [n](notebooks/01_a.ipynb) [w](https://h/docs/glossary.md) [m](docs/nope.md) [d](data/README.txt)"
    text = "[g](docs/glossary.md#x)" + unchanged
    new, missing = module.rewrite_links(text, Path("."), pages, "")
    assert new == "[g](glossary.md#x)" + unchanged
    assert missing == ["docs/nope.md"]  # only a page that should have been in the site is reported
    # from a notebook cell: relative to notebooks/, and naming the built HTML page
    new, missing = module.rewrite_links(
        "[a](01_a.ipynb#S-t) [g](../docs/glossary.md) [r](../README.md)",
        Path("notebooks"),
        pages,
        "notebooks",
        final_html=True,
    )
    assert new == "[a](01_a.html#s-t) [g](../glossary.html) [r](../index.html)" and missing == []


def test_executed_copies_win_and_stored_notebooks_fill_in(tmp_path):
    module = load_script()
    stored, executed = tmp_path / "stored", tmp_path / "executed"
    stored.mkdir(), executed.mkdir()
    for name in ("00_a.ipynb", "01_b.ipynb", "notes.ipynb"):
        (stored / name).write_text("{}")
    (executed / "01_b.ipynb").write_text("{}")
    assert module.choose_notebooks(stored, executed) == [
        (stored / "00_a.ipynb", False),
        (executed / "01_b.ipynb", True),
    ]
    assert module.choose_notebooks(stored, None) == [(stored / "00_a.ipynb", False), (stored / "01_b.ipynb", False)]
    with pytest.raises(module.BuildError, match="holds no notebooks"):
        module.choose_notebooks(executed / "nothing", None)


def test_nav_sections_are_filled_in_place():
    module = load_script()
    nav = [{"Home": "index.md"}, {"Workbook": [{"Run times": "r.md"}, {"Notebooks": []}]}, {"API reference": []}]
    filled = module.fill_nav(nav, [{"00": "notebooks/00.ipynb"}], [{"core": "api/core.md"}])
    assert filled == [
        {"Home": "index.md"},
        {"Workbook": [{"Run times": "r.md"}, {"Notebooks": [{"00": "notebooks/00.ipynb"}]}]},
        {"API reference": [{"core": "api/core.md"}]},
    ]


def test_a_page_fetching_from_a_cdn_fails_the_build(tmp_path):
    module = load_script()
    (tmp_path / "notebooks").mkdir()
    page = tmp_path / "notebooks" / "00.html"
    page.write_text(
        '<p>x</p><!-- Load mathjax --><script src="https://cdn.example/mathjax.js"></script>'
        '<!-- End of mathjax configuration --><a href="https://arxiv.org/abs/1">a paper</a>'
    )
    module.finish_html(tmp_path)  # nbconvert's CDN MathJax loader is dropped; a link to read is fine
    assert "cdn.example" not in page.read_text() and "arxiv.org" in page.read_text()
    (tmp_path / "font.html").write_text('<link rel="stylesheet" href="//fonts.example/css">')
    with pytest.raises(module.BuildError, match="font.html"):
        module.finish_html(tmp_path)


def test_bad_input_gives_one_clear_error(tmp_path, capsys):
    module = load_script()
    code = module.main(["--source", str(tmp_path / "nope"), "--out", str(tmp_path / "site"), "--no-api"])
    assert code == 2 and str(tmp_path / "nope") in capsys.readouterr().err and not (tmp_path / "site").exists()
    code = module.main(["--out", str(ROOT / "docs"), "--no-api"])
    assert code == 2 and "is a source folder" in capsys.readouterr().err


# ---- slow: the whole site, built and browsed -----------------------------------------------------------------


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> tuple[Path, Path]:
    """(stored, executed): three tiny notebooks stored without outputs; two of them executed with nbclient."""
    import nbformat

    base = tmp_path_factory.mktemp("workbook")
    stored, executed = base / "notebooks", base / "executed"
    stored.mkdir(), executed.mkdir()
    for name, (title, markdown, code) in NOTEBOOKS.items():
        nbformat.write(make_notebook(title, markdown, code), stored / name)
        if name != "02_end.ipynb":
            nbformat.write(execute_notebook(make_notebook(title, markdown, code), executed), executed / name)
    return stored, executed


@pytest.fixture(scope="module")
def site(notebooks, tmp_path_factory) -> Path:
    stored, executed = notebooks
    out = tmp_path_factory.mktemp("site") / "site"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--notebooks", str(executed), "--source", str(stored), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert str((out / "index.html").resolve()) in result.stdout
    return out


@pytest.mark.slow
def test_site_files(site):
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file()
    assert (site / "assets" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    for name in (
        "index",
        "workbook",
        "run-times",
        "deployment",
        "gpu",
        "grading",
        "ablations",
        "instructor",
        "own-product",
        "data",
        "package",
        "what-to-expect",
        "glossary",
        "contributing",
    ):
        assert (site / f"{name}.html").is_file(), name
    figure = (site / "notebooks" / "01_figure.html").read_text()
    sources = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', figure)
    assert sources and base64.b64decode(sources[0]).startswith(PNG_SIGNATURE)  # the matplotlib figure
    assert 'id="a-section"' in figure
    intro = (site / "notebooks" / "00_intro.html").read_text()
    assert 'href="01_figure.html#a-section"' in intro and 'href="../glossary.html"' in intro
    index = (site / "index.html").read_text()
    assert "02 · End (not executed)" in index  # the nav says which notebook shows no outputs
    assert 'href="deployment.html"' in index and 'href="contributing.html"' in index
    api = (site / "api" / "training.html").read_text()
    assert "TrainConfig" in api and "memseg_lite.training.trainer" in api  # docstrings became the reference
    for page in site.rglob("*.html"):
        assert not re.search(r'<script[^>]*src="(https?:)?//', page.read_text()), page


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_mathjax(driver, timeout: float = 60):
    """Until MathJax has typeset the page; returns (rendered elements, errors)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "return window.MathJax !== undefined && MathJax.Hub !== undefined && MathJax.isReady === true"
            " && MathJax.Hub.queue.pending === 0 && MathJax.Hub.queue.running === 0;"
        )
    )
    return driver.execute_script(
        "return [document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML').length,"
        " document.querySelectorAll('.MathJax_Error, merror, .merror').length];"
    )


@pytest.mark.slow
def test_site_in_headless_chromium(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with serve_folder(site) as served:
        # formulas: typeset by MathJax on a notebook page and on a Markdown page, from the site only
        for page in ("notebooks/01_figure.html", "own-product.html"):
            browser.get(served + page)
            rendered, errors = wait_for_mathjax(browser)
            assert rendered >= 2 and errors == 0, (page, rendered, errors)
            remote = [url for url in fetched_urls(browser) if not url.startswith(served)]
            assert remote == [], (page, remote)
            assert any("assets/mathjax/" in url for url in fetched_urls(browser))
            images = images_state(browser)
            assert all(i["complete"] and i["width"] > 0 for i in images), images
        browser.get(served + "notebooks/01_figure.html")
        figures = [i for i in images_state(browser) if i["src"].startswith("data:image/png")]
        assert figures and all(i["complete"] and i["width"] > 0 for i in figures), figures

        # every link between the site's pages resolves, anchors included (crawled over HTTP from the home page)
        queue, seen, anchors = [served + "index.html"], set(), set()
        while queue:
            url = queue.pop()
            if url in seen:
                continue
            seen.add(url)
            with urllib.request.urlopen(url, timeout=30) as response:
                assert response.status == 200, url
                text = response.read().decode("utf-8", "replace")
            for href in re.findall(r'href="([^"]+)"', text):
                target, fragment = urldefrag(urllib.parse.urljoin(url, href))
                if target.startswith(served) and target.endswith(".html"):
                    queue.append(target)
                    if fragment and "notebooks/" in target:
                        anchors.add((target, fragment))
        assert served + "notebooks/02_end.html" in seen and served + "api/network.html" in seen
        for target, fragment in anchors:
            with urllib.request.urlopen(target, timeout=30) as response:
                assert f'id="{fragment}"' in response.read().decode(), (target, fragment)

        # navigation as a reader clicks it: the nav to a notebook, then the footer's next / previous
        browser.get(served + "index.html")
        links = browser.find_elements(By.XPATH, "//nav//a[contains(., '00 · Intro')]")
        if not any(link.is_displayed() for link in links):  # the Notebooks section starts folded: open it
            next(
                e for e in browser.find_elements(By.XPATH, "//nav//label[contains(., 'Notebooks')]") if e.is_displayed()
            ).click()
        WebDriverWait(browser, 10).until(lambda d: any(link.is_displayed() for link in links))
        next(link for link in links if link.is_displayed()).click()
        WebDriverWait(browser, 30).until(lambda d: d.current_url == served + "notebooks/00_intro.html")
        browser.find_element(By.CSS_SELECTOR, "a.md-footer__link--next").click()
        WebDriverWait(browser, 30).until(lambda d: d.current_url == served + "notebooks/01_figure.html")
        browser.find_element(By.CSS_SELECTOR, "a.md-footer__link--prev").click()
        WebDriverWait(browser, 30).until(lambda d: d.current_url == served + "notebooks/00_intro.html")


@pytest.mark.slow
def test_site_opens_from_disk(browser, site):
    """Opened as files (file://), the pages, figures and links work too: nothing needs a server."""
    from selenium.webdriver.common.by import By

    browser.get((site / "notebooks" / "01_figure.html").as_uri())
    figures = [i for i in images_state(browser) if i["src"].startswith("data:image/png")]
    assert figures and all(i["complete"] and i["width"] > 0 for i in figures), figures
    previous = browser.find_element(By.CSS_SELECTOR, "a.md-footer__link--prev")
    browser.get(previous.get_attribute("href"))  # (a click can land on the sidebar that file:// pages lay over it)
    assert browser.current_url == (site / "notebooks" / "00_intro.html").as_uri()
    assert browser.find_elements(By.CSS_SELECTOR, "a.md-footer__link--next")
