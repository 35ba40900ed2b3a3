"""The rendered workbook (scripts/build_book.py, ``make book``): built from tiny notebooks executed here,
then checked as files and in a real headless browser (Debian's chromium + chromedriver via selenium)."""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_book.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# name -> (title, markdown body, code cells)
NOTEBOOKS = {
    "00_intro.ipynb": (
        "00 · Intro",
        (
            "The first notebook of a tiny book.\n\nNext: [the figure notebook](01_figure.ipynb), "
            "straight to [its section](01_figure.ipynb#A-section), or [the web](https://example.org/page.ipynb)."
        ),
        ["total = 1 + 1\ntotal"],
    ),
    "01_figure.ipynb": (
        "01 · Figure",
        (
            "[< 00 · Intro](00_intro.ipynb)\n\n**Goal.** Draw a figure with $\\alpha = 1$.\n\n"
            "A figure from a code cell, and one from a file:\n\n![a square](square.png)\n\n## A section\n\n"
            "Back to [the intro](00_intro.ipynb), on to [the end](02_end.ipynb), "
            "or [the solutions](../solutions/01_figure_solutions.ipynb)."
        ),
        [
            "%matplotlib inline\nimport matplotlib.pyplot as plt\nimport numpy as np",
            "fig, ax = plt.subplots(figsize=(2, 2))\nax.imshow(np.arange(16.0).reshape(4, 4))\nplt.show()",
        ],
    ),
    "02_end.ipynb": (
        "02 · End",
        "The last notebook. [Contents](00_intro.ipynb), [the glossary](../docs/glossary.md).",
        ["print('done')"],
    ),
}


def load_script():
    """scripts/build_book.py as a module (loaded once; dataclasses need it in sys.modules)."""
    if "build_book" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_book", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_book"] = module
        spec.loader.exec_module(module)
    return sys.modules["build_book"]


def write_square_png(path: Path) -> None:
    import cv2
    import numpy as np

    image = np.zeros((12, 20, 3), np.uint8)
    image[:, :10] = (0, 128, 255)
    assert cv2.imwrite(str(path), image)


def make_notebook(title: str, markdown: str, code: list[str]):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{markdown}")]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in code]
    return notebook


GLOSSARY = "# Glossary\n\n**End.** The [last notebook](../notebooks/02_end.ipynb).\n\n![a square](figures/dot.png)\n"


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Path:
    """Three tiny notebooks, executed with nbclient (one draws a matplotlib figure), and a summary.md;
    beside them ``src/``, the folder they came from (``src/notebooks``, ``src/docs/glossary.md``)."""
    import nbformat
    from nbclient import NotebookClient

    folder = tmp_path_factory.mktemp("workbook") / "executed"
    folder.mkdir()
    (folder.parent / "src" / "notebooks").mkdir(parents=True)
    (folder.parent / "src" / "docs" / "figures").mkdir(parents=True)
    (folder.parent / "src" / "docs" / "glossary.md").write_text(GLOSSARY)
    write_square_png(folder.parent / "src" / "docs" / "figures" / "dot.png")
    write_square_png(folder / "square.png")
    for name, (title, markdown, code) in NOTEBOOKS.items():
        notebook = make_notebook(title, markdown, code)
        NotebookClient(notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(folder)}}).execute()
        nbformat.write(notebook, folder / name)
    (folder / "summary.md").write_text("# run\n\n| notebook | status |\n|---|---|\n| 00_intro.ipynb | ok |\n\n![maps](square.png)\n")
    return folder


@pytest.fixture(scope="module")
def book(executed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book") / "site"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--notebooks", str(executed), "--out", str(out),
         "--source", str(executed.parent / "src" / "notebooks")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert str((out / "index.html").resolve()) in result.stdout  # it says where the book is
    # the one link that leaves the book is reported, once
    assert result.stderr.count("../solutions/01_figure_solutions.ipynb") == 1, result.stderr
    return out


def hrefs(page: str) -> list[str]:
    return re.findall(r'href="([^"]*)"', page)


def nav_links(page: str) -> list[dict[str, str]]:
    navs = re.findall(r'<nav class="book-nav">(.*?)</nav>', page, re.DOTALL)
    return [dict(re.findall(r'rel="(\w+)" href="([^"]*)"', nav)) for nav in navs]


def test_index_lists_the_notebooks_in_order(book, executed):
    index = (book / "index.html").read_text()
    contents = re.search(r'<ol class="book-contents">(.*?)</ol>', index, re.DOTALL).group(1)
    assert re.findall(r'href="([^"]*)"', contents) == ["00_intro.html", "01_figure.html", "02_end.html"]
    assert re.findall(r'\.html">([^<]*)</a>', contents) == ["00 · Intro", "01 · Figure", "02 · End"]
    descriptions = re.findall(r'<span class="book-description">([^<]*)</span>', contents)
    assert descriptions == [
        "The first notebook of a tiny book.", "Draw a figure with alpha = 1.", "The last notebook. Contents, the glossary."
    ]
    assert sorted(p.name for p in book.glob("*.html")) == [
        "00_intro.html", "01_figure.html", "02_end.html", "glossary.html", "index.html"
    ]
    assert re.search(r'<p class="book-documents">Also: <a href="glossary.html">Glossary</a></p>', index)
    # the run's summary is on the index, its figure copied into files/
    summary = re.search(r'<section class="book-summary">(.*?)</section>', index, re.DOTALL).group(1)
    assert "<table>" in summary and "<td>00_intro.ipynb</td>" in summary and 'src="files/square.png"' in summary
    assert (book / "files" / "square.png").read_bytes() == (executed / "square.png").read_bytes()


def test_every_page_has_prev_contents_next_at_top_and_bottom(book):
    expected = {
        "00_intro.html": {"index": "index.html", "next": "01_figure.html"},
        "01_figure.html": {"prev": "00_intro.html", "index": "index.html", "next": "02_end.html"},
        "02_end.html": {"prev": "01_figure.html", "index": "index.html"},
    }
    for name, links in expected.items():
        page = (book / name).read_text()
        assert nav_links(page) == [links, links], name
        assert page.index("<body") < page.index('<nav class="book-nav">') < page.index("<main>")  # bar above the cells
        assert page.index("</main>") < page.rindex('<nav class="book-nav">') < page.index("</body>")  # and below


def test_notebook_links_point_at_pages(book):
    intro, figure = (book / "00_intro.html").read_text(), (book / "01_figure.html").read_text()
    assert "01_figure.html" in hrefs(intro) and "01_figure.html#A-section" in hrefs(intro)
    assert "https://example.org/page.ipynb" in hrefs(intro)  # absolute URLs stay as they are
    assert "00_intro.html" in hrefs(figure) and "02_end.html" in hrefs(figure)
    assert "../solutions/01_figure_solutions.ipynb" in hrefs(figure)  # outside the book: kept, reported
    for page in (intro, figure):
        assert not [h for h in hrefs(page) if re.fullmatch(r"0\d_\w+\.ipynb(#.*)?", h)]
    assert 'id="A-section"' in figure  # the anchor the intro links to exists
    # a Markdown file of the repository becomes a page, its links and pictures follow
    assert "glossary.html" in hrefs((book / "02_end.html").read_text())
    glossary = (book / "glossary.html").read_text()
    assert "02_end.html" in hrefs(glossary) and "index.html" in hrefs(glossary)
    assert 'src="files/dot.png"' in glossary and (book / "files" / "dot.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "<!-- Load mathjax -->" in glossary  # formulas typeset as on the notebook pages


def test_outputs_and_figures_are_embedded(book):
    import cv2
    import numpy as np

    figure = (book / "01_figure.html").read_text()
    sources = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', figure)
    assert len(sources) == 2, "the matplotlib figure and the markdown image"
    sizes = []
    for data in sources:
        raw = base64.b64decode(data)
        assert raw.startswith(PNG_SIGNATURE)
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        sizes.append(image.shape[:2])
    assert (12, 20) in sizes  # square.png, unchanged
    assert "<pre>done\n</pre>" in (book / "02_end.html").read_text()  # a stream output
    assert "2" in re.findall(r'<pre>(\d+)</pre>', (book / "00_intro.html").read_text())  # an execute_result


def test_rewrite_links_unit():
    module = load_script()
    pages = {"01_a.ipynb": "01_a.html"}
    text = '<a href="01_a.ipynb#x">1</a><a href="./01_a.ipynb">2</a><a href="02_b.ipynb">3</a><a href="http://h/01_a.ipynb">4</a><a href="#01_a.ipynb">5</a><a href="sub/01_a.ipynb">6</a>'
    new, unresolved = module.rewrite_links(text, pages)
    assert hrefs(new) == ["01_a.html#x", "01_a.html", "02_b.ipynb", "http://h/01_a.ipynb", "#01_a.ipynb", "sub/01_a.ipynb"]
    assert unresolved == ["02_b.ipynb", "sub/01_a.ipynb"]


def test_bad_input_gives_one_clear_error(tmp_path, capsys):
    import nbformat

    module = load_script()

    def run(*args) -> tuple[int, str]:
        code = module.main(list(args))
        return code, capsys.readouterr().err

    code, err = run("--notebooks", str(tmp_path / "nope"), "--out", str(tmp_path / "book"))
    assert code == 2 and str(tmp_path / "nope") in err and "make run" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run("--notebooks", str(empty), "--out", str(tmp_path / "b"))
    assert code == 2 and "no executed notebooks" in err and str(empty) in err
    raw = tmp_path / "raw"
    raw.mkdir()
    nbformat.write(make_notebook("00 · Raw", "text", ["x = 1"]), raw / "00_raw.ipynb")
    code, err = run("--notebooks", str(raw), "--out", str(tmp_path / "c"))
    assert code == 2 and "00_raw.ipynb was never executed" in err and not (tmp_path / "c").exists()
    code, _ = run("--notebooks", str(raw), "--out", str(tmp_path / "c"), "--allow-unexecuted")
    assert code == 0 and (tmp_path / "c" / "00_raw.html").is_file()
    code, err = run("--notebooks", str(raw), "--out", str(raw))
    assert code == 2 and "is the notebook folder" in err
    (raw / "01_broken.ipynb").write_text("{not json")
    code, err = run("--notebooks", str(raw), "--out", str(tmp_path / "d"), "--allow-unexecuted")
    assert code == 2 and "01_broken.ipynb" in err and "make run" in err


def test_a_rebuild_drops_pages_of_removed_notebooks(executed, tmp_path, capsys):
    import nbformat

    module = load_script()
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("00_intro.ipynb", "02_end.ipynb"):
        (folder / name).write_bytes((executed / name).read_bytes())
    out = tmp_path / "site"
    args = ["--notebooks", str(folder), "--out", str(out), "--source", str(tmp_path / "no-source")]
    assert module.main(args) == 0
    assert sorted(p.name for p in out.glob("*.html")) == ["00_intro.html", "02_end.html", "index.html"]
    assert nav_links((out / "02_end.html").read_text())[0] == {"prev": "00_intro.html", "index": "index.html"}
    # 00_intro links to 01_figure, not in this book: kept as .ipynb and reported
    err = capsys.readouterr().err
    assert "00_intro.ipynb links to 01_figure.ipynb, which is not in the book" in err
    assert "02_end.ipynb links to ../docs/glossary.md, which is not in the book" in err  # no such file here
    (folder / "02_end.ipynb").unlink()
    nbformat.write(nbformat.read(executed / "02_end.ipynb", as_version=4), folder / "01_middle.ipynb")
    assert module.main(args) == 0
    assert sorted(p.name for p in out.glob("*.html")) == ["00_intro.html", "01_middle.html", "index.html"]


# ---- in a real headless browser ------------------------------------------------------------------------------


def chromium_options(user_data_dir: Path):
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={user_data_dir}", "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    return options


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through chromedriver; skips with the reason when either is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} missing); "
                    "as root, `make test` installs them: apt-get install -y chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser test needs selenium (pip install -e '.[dev]')")
    service = Service(executable_path=str(CHROMEDRIVER))  # never Selenium Manager (it would download)
    driver = webdriver.Chrome(service=service, options=chromium_options(tmp_path_factory.mktemp("chromium-profile")))
    driver.set_page_load_timeout(90)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served(book):
    """The book over HTTP on a free localhost port, as a web server would publish it."""
    handler = functools.partial(QuietHandler, directory=str(book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def page_links(driver) -> list[str]:
    """Every link of the loaded page, resolved by the browser to an absolute URL."""
    return driver.execute_script("return Array.from(document.querySelectorAll('a[href]'), a => a.href);")


def images_state(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.images, i => ({complete: i.complete, width: i.naturalWidth, src: i.src.slice(0, 40)}));"
    )


def test_book_in_headless_chromium(browser, served, book):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(served + "index.html")
    assert browser.title == "memseg-lite workbook"
    contents = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "ol.book-contents a")]
    assert contents == [served + name for name in ("00_intro.html", "01_figure.html", "02_end.html")]
    index_images = images_state(browser)
    assert index_images and all(i["complete"] and i["width"] > 0 for i in index_images), index_images

    browser.get(served + "01_figure.html")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    figures = images_state(browser)
    assert len(figures) == 2 and all(i["complete"] and i["width"] > 0 for i in figures), figures

    # every link of the book resolves: crawl from the index; each page loads in the browser as a book page,
    # and an anchor, when there is one, names an element of its page
    queue, seen, anchors, outside = [served + "index.html"], set(), set(), set()
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        browser.get(url)
        name = urlparse(url).path.rsplit("/", 1)[-1]
        assert (book / name).is_file(), url
        marker = "ol.book-contents" if name == "index.html" else "nav.book-nav"
        assert browser.find_elements(By.CSS_SELECTOR, marker), f"{url} did not load a book page"
        assert all(i["complete"] and i["width"] > 0 for i in images_state(browser)), (url, images_state(browser))
        for link in page_links(browser):
            target, fragment = urldefrag(link)
            if not target.startswith(served):
                continue  # https://example.org/...: not the book's
            if target.endswith(".ipynb"):
                outside.add(target)
                continue
            queue.append(target)
            if fragment:
                anchors.add((target, fragment))
    pages = ("index.html", "00_intro.html", "01_figure.html", "02_end.html", "glossary.html")
    assert seen == {served + name for name in pages}
    assert outside == {served + "solutions/01_figure_solutions.ipynb"}  # the one link the build reported
    assert anchors  # 00_intro links to 01_figure.html#A-section
    for target, fragment in anchors:
        browser.get(target)
        assert browser.execute_script("return document.getElementById(arguments[0]) !== null;", fragment), (target, fragment)

    # prev / next / contents by clicking, as a reader would
    browser.get(served + "00_intro.html")
    browser.find_element(By.CSS_SELECTOR, "nav.book-nav a[rel=next]").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url == served + "01_figure.html")
    browser.find_elements(By.CSS_SELECTOR, "nav.book-nav a[rel=next]")[-1].click()  # the bottom bar
    WebDriverWait(browser, 30).until(lambda d: d.current_url == served + "02_end.html")
    browser.find_element(By.CSS_SELECTOR, "nav.book-nav a[rel=prev]").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url == served + "01_figure.html")
    browser.find_element(By.CSS_SELECTOR, "nav.book-nav a[rel=index]").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url == served + "index.html")


def test_book_opens_from_disk(browser, book):
    """Opened as files (file://), the pages and figures work too: nothing needs a server."""
    browser.get((book / "02_end.html").as_uri())
    browser.find_element("css selector", "nav.book-nav a[rel=prev]").click()
    assert browser.current_url == (book / "01_figure.html").as_uri()
    figures = images_state(browser)
    assert len(figures) == 2 and all(i["complete"] and i["width"] > 0 for i in figures), figures

