"""Build the rendered workbook: a static HTML site of the executed notebooks (``make book``).

    python scripts/build_book.py --notebooks outputs/workbook --out outputs/book

Input: the executed notebooks that ``make run`` writes (``NN_topic.ipynb``, in that order).
Output: ``index.html`` (the notebooks in sequence, with the run's ``summary.md`` when there is
one) and one page per notebook, rendered with nbconvert's HTML exporter (JupyterLab look) with
every output and figure embedded in the page, a bar of previous / contents / next links at the
top and the bottom, and the notebooks' links to each other (``01_perlin_noise.ipynb``)
rewritten to the pages (``01_perlin_noise.html``). Their links to other files of the repository
are followed too: a Markdown file (``../docs/glossary.md``) becomes a page of the site, anything
else is copied to ``files/``; links to notebooks outside the book (``../solutions/``) are
reported and left alone. The site is self-contained: copy the folder anywhere, or open
``index.html`` from disk. Formulas are typeset by MathJax, which the pages
load from its public CDN (``--mathjax-url`` points elsewhere); without a connection they show
as LaTeX source.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
BODY_OPEN = re.compile(r"<body[^>]*>")
NAV_CSS = """
<style type="text/css">
nav.book-nav { display: flex; justify-content: space-between; gap: 1em; max-width: 1100px;
  margin: 0.8em auto; padding: 0.5em 1em; font: 14px/1.4 system-ui, sans-serif;
  border: 1px solid #d0d7de; border-radius: 6px; background: #f6f8fa; }
nav.book-nav a { text-decoration: none; color: #0b57d0; }
nav.book-nav span.book-missing { color: #8c959f; }
</style>
"""
INDEX_CSS = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 900px; margin: 2em auto; padding: 0 1em; color: #1f2328; }
ol.book-contents li { margin: 0.4em 0; }
ol.book-contents .book-description { color: #57606a; }
table { border-collapse: collapse; } td, th { border: 1px solid #d0d7de; padding: 0.2em 0.6em; }
img { max-width: 100%; }
a.anchor-link { visibility: hidden; margin-left: 0.2em; text-decoration: none; }
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link, h4:hover a.anchor-link { visibility: visible; }
"""
# The MathJax loader and configuration of nbconvert's pages, reused for the Markdown documents' pages.
MATHJAX_BLOCK = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)


@dataclass(frozen=True)
class Chapter:
    source: Path
    page: str  # file name of the HTML page
    title: str
    description: str


def find_notebooks(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"notebook folder not found: {folder}; run `make run` first (it writes the executed notebooks "
            "to outputs/workbook), or pass --notebooks DIR"
        )
    paths = sorted(folder.glob(NOTEBOOK_PATTERN))
    if not paths:
        raise FileNotFoundError(
            f"no executed notebooks (NN_topic.ipynb) in {folder}; run `make run` first, or pass --notebooks DIR"
        )
    return paths


def read_notebook(path: Path, allow_unexecuted: bool):
    import nbformat

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several kinds for a broken file
        raise ValueError(f"cannot read notebook {path}: {error}; re-run `make run` to write it again") from error
    code = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]
    if code and not allow_unexecuted and all(cell.get("execution_count") is None for cell in code):
        raise ValueError(
            f"{path} was never executed (no code cell has run): the book shows executed notebooks; "
            "run `make run` first, or pass --allow-unexecuted"
        )
    return notebook


def plain_text(markdown: str) -> str:
    """Markdown to plain text, enough for a title or a one-line description."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", markdown)  # images
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: keep their text
    text = re.sub(r"\$([^$]*)\$", lambda m: m.group(1).replace("\\", ""), text)  # $\delta$ -> delta
    text = re.sub(r"[*_`]+", "", text)
    return " ".join(text.split())


def chapter_info(path: Path, notebook) -> Chapter:
    """The title (the first level-1 heading, else the file name) and a description: the first
    plain paragraph of the cell with the title (a leading bold label such as "Goal." dropped)."""
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        blocks = [block.strip() for block in re.split(r"\n\s*\n", cell.source) if block.strip()]
        for position, block in enumerate(blocks):
            heading = re.match(r"#\s+(.+)", block)
            if heading:
                title = plain_text(heading.group(1).splitlines()[0])
                return Chapter(path, path.with_suffix(".html").name, title, first_paragraph(blocks[position + 1 :]))
    return Chapter(path, path.with_suffix(".html").name, path.stem, "")


def first_paragraph(blocks: list[str]) -> str:
    for block in blocks:
        if re.match(r"(#|\||\[|<|>|\$\$|[-*+]\s|\d+\.\s)", block):
            continue  # headings, tables, navigation links, HTML, quotes, display maths, lists
        text = plain_text(re.sub(r"^\*\*[^*]{1,30}\.\*\*\s*", "", block))
        return text if len(text) <= 240 else text[:237].rsplit(" ", 1)[0] + " ..."
    return ""


def is_external(target: str) -> bool:
    """An absolute URL (``https:``, ``mailto:``, ``data:``), an absolute path or a same-page anchor."""
    return bool(re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)) or target.startswith(("/", "#"))


def rewrite_links(page_html: str, pages: dict[str, str], other=None, attribute: str = "href") -> tuple[str, list[str]]:
    """Point links to notebooks of the book (``NN_topic.ipynb[#anchor]``) at their pages.

    ``other(target)`` (optional) gives the new address of any other relative link, or ``None``
    when it has none. Returns the new HTML and the relative links that found no target in the
    book (left as they are, reported by the caller).
    """
    unresolved: list[str] = []
    pattern = re.compile(rf'(\b{attribute}=")([^"]*)(")')

    def replace(match: re.Match) -> str:
        target = html.unescape(match.group(2))
        if not target or is_external(target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        name = path.rsplit("/", 1)[-1]
        if name in pages and path in (name, "./" + name):
            new = pages[name] + (f"#{anchor}" if anchor else "")
        else:
            new = other(target) if other is not None else None
        if new is None:
            if other is not None or name.endswith(".ipynb"):
                unresolved.append(target)
            return match.group(0)
        return match.group(1) + html.escape(new, quote=True) + match.group(3)

    return pattern.sub(replace, page_html), unresolved


class Linker:
    """Resolves the notebooks' other relative links (``../docs/glossary.md``, a picture) for the site.

    A link is looked up relative to the folder of the document it is in; for the executed
    notebooks also relative to ``source`` (the folder they were executed from, ``notebooks/``).
    A Markdown file found there becomes a page of the site (``glossary.html``, rendered and
    linked itself); any other file is copied to ``files/``; a notebook that is a chapter links to
    its page. Only files inside ``allowed`` folders are taken (never, say, ``../../etc``).
    """

    def __init__(self, out: Path, pages: dict[str, str], notebook_dirs: list[Path], allowed: list[Path]):
        self.out, self.pages = out, pages
        self.notebook_dirs = [d.resolve() for d in notebook_dirs]
        self.allowed = [d.resolve() for d in allowed]
        self.docs: dict[Path, str] = {}  # Markdown file -> its page
        self.files: dict[Path, str] = {}  # other file -> its copy, relative to out
        self.taken = set(pages.values()) | {"index.html"}

    def resolver(self, bases: list[Path]):
        def resolve(target: str) -> str | None:
            path, _, anchor = target.partition("#")
            suffix = f"#{anchor}" if anchor else ""
            for base in bases:
                source = (base / path).resolve()
                if source.name in self.pages and source.parent in self.notebook_dirs:
                    return self.pages[source.name] + suffix  # a chapter, e.g. ../notebooks/01_x.ipynb
                if not source.is_file() or not any(source.is_relative_to(root) for root in self.allowed):
                    continue
                if source.suffix == ".ipynb":
                    return None  # a notebook that is not a chapter (e.g. solutions/): not published
                if source.suffix.lower() == ".md":
                    if source not in self.docs:
                        self.docs[source] = self.unique(source.stem + ".html")
                    return self.docs[source] + suffix
                if source not in self.files:
                    self.files[source] = "files/" + self.unique(source.name, folder="files/")[len("files/") :]
                return self.files[source] + suffix
            return None

        return resolve

    def unique(self, name: str, folder: str = "") -> str:
        stem, dot, extension = name.rpartition(".")
        candidate, number = folder + name, 2
        while candidate in self.taken:
            candidate, number = f"{folder}{stem}-{number}{dot}{extension}", number + 1
        self.taken.add(candidate)
        return candidate


def navigation(chapters: list[Chapter], index: int) -> str:
    def link(position: int, label: str, rel: str) -> str:
        if 0 <= position < len(chapters):
            chapter = chapters[position]
            text = html.escape(label.format(title=chapter.title))
            return f'<a class="book-{rel}" rel="{rel}" href="{html.escape(chapter.page)}">{text}</a>'
        return f'<span class="book-{rel} book-missing"></span>'

    return (
        '<nav class="book-nav">'
        + link(index - 1, "< {title}", "prev")
        + '<a class="book-index" rel="index" href="index.html">Contents</a>'
        + link(index + 1, "{title} >", "next")
        + "</nav>"
    )


def render_page(exporter, notebook, chapters: list[Chapter], index: int, linker: Linker, source: Path) -> tuple[str, list[str]]:
    chapter = chapters[index]
    resources = {"metadata": {"name": chapter.title, "path": str(chapter.source.parent)}}
    body, _ = exporter.from_notebook_node(notebook, resources=resources)
    resolve = linker.resolver([chapter.source.parent, source])
    body, unresolved = rewrite_links(body, linker.pages, resolve)
    body, missing = rewrite_links(body, linker.pages, resolve, attribute="src")  # pictures not embedded
    unresolved += missing
    nav = navigation(chapters, index)
    if not BODY_OPEN.search(body) or "</body>" not in body:
        raise RuntimeError(f"nbconvert produced HTML without <body> for {chapter.source}; this is a bug")
    body = body.replace("</head>", NAV_CSS + "</head>", 1)
    body = BODY_OPEN.sub(lambda m: m.group(0) + "\n" + nav, body, count=1)
    head, _, tail = body.rpartition("</body>")
    return head + nav + "\n</body>" + tail, unresolved


def summary_html(folder: Path, linker: Linker) -> str:
    """The run's summary.md (metrics table, figure) as HTML for the index."""
    path = folder / "summary.md"
    if not path.is_file():
        return ""
    from nbconvert.filters.markdown import markdown2html

    text = re.sub(r"^# .*\n", "", path.read_text(), count=1)  # the index has its own title
    resolve = linker.resolver([folder])
    rendered, _ = rewrite_links(markdown2html(text), linker.pages, resolve)
    rendered, _ = rewrite_links(rendered, linker.pages, resolve, attribute="src")
    return '<section class="book-summary">\n<h2>The last run</h2>\n' + rendered + "\n</section>\n"


def document_html(source: Path, linker: Linker, book_title: str, mathjax: str = "") -> tuple[str, str, list[str]]:
    """A Markdown file of the repository (the glossary, say) as a page: title, HTML, unresolved links."""
    from nbconvert.filters.markdown import markdown2html

    text = source.read_text()
    heading = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
    title = plain_text(heading.group(1)) if heading else source.stem
    resolve = linker.resolver([source.parent])
    body, unresolved = rewrite_links(markdown2html(text), linker.pages, resolve)
    body, missing = rewrite_links(body, linker.pages, resolve, attribute="src")
    nav = '<nav class="book-nav"><span></span><a class="book-index" rel="index" href="index.html">Contents</a><span></span></nav>'
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
        f"<title>{html.escape(title)} · {html.escape(book_title)}</title>\n<style>{INDEX_CSS}</style>\n{NAV_CSS}{mathjax}\n</head>\n"
        f"<body>\n{nav}\n<main>\n{body}\n</main>\n{nav}\n</body>\n</html>\n"
    )
    return title, page, unresolved + missing


def index_html(title: str, chapters: list[Chapter], summary: str, documents: list[tuple[str, str]] = ()) -> str:
    items = "\n".join(
        f'<li><a href="{html.escape(c.page)}">{html.escape(c.title)}</a>'
        + (f'<br><span class="book-description">{html.escape(c.description)}</span>' if c.description else "")
        + "</li>"
        for c in chapters
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
        f"<title>{html.escape(title)}</title>\n<style>{INDEX_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        "<p>The executed notebooks of the workbook, in order: every output and figure as the run left it. "
        "Each page has links to the previous and the next notebook.</p>\n"
        f'<ol class="book-contents">\n{items}\n</ol>\n'
        + (
            '<p class="book-documents">Also: '
            + ", ".join(f'<a href="{html.escape(page)}">{html.escape(name)}</a>' for name, page in documents)
            + "</p>\n"
            if documents
            else ""
        )
        + f"{summary}</body>\n</html>\n"
    )


def build_book(
    notebooks: Path,
    out: Path,
    title: str = "memseg-lite workbook",
    mathjax_url: str | None = None,
    allow_unexecuted: bool = False,
    source: Path | None = None,
) -> Path:
    """Build the site from the notebooks in ``notebooks`` into ``out``; returns the index's path.

    ``source``: the folder the notebooks were executed from (default ``notebooks/``), where their
    relative links to other files (``../docs/glossary.md``) are looked up too.
    """
    from nbconvert import HTMLExporter

    from memseg_lite.core.io import atomic_output, write_text_atomic

    notebooks, out = Path(notebooks), Path(out)
    source = Path(source) if source is not None else ROOT / "notebooks"
    if out.resolve() == notebooks.resolve():
        raise ValueError(f"--out {out} is the notebook folder; choose another folder for the book")
    paths = find_notebooks(notebooks)
    loaded = [read_notebook(path, allow_unexecuted) for path in paths]
    chapters = [chapter_info(path, notebook) for path, notebook in zip(paths, loaded)]
    pages = {chapter.source.name: chapter.page for chapter in chapters}
    exporter = HTMLExporter(template_name="lab", embed_images=True, exclude_anchor_links=False)
    if mathjax_url:
        exporter.mathjax_url = mathjax_url
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("[0-9][0-9]_*.html"):  # pages of notebooks no longer in the folder
        if stale.name not in pages.values():
            stale.unlink()
    allowed = [ROOT, notebooks, source.parent] if source.is_dir() else [ROOT, notebooks]
    linker = Linker(out, pages, [notebooks, source], allowed)

    def warn(document: str, targets: list[str]) -> None:
        for target in dict.fromkeys(targets):
            print(f"warning: {document} links to {target}, which is not in the book", file=sys.stderr)

    mathjax = ""
    for index, notebook in enumerate(loaded):
        page, unresolved = render_page(exporter, notebook, chapters, index, linker, source)
        warn(paths[index].name, unresolved)
        mathjax = mathjax or next((m.group(0) for m in [MATHJAX_BLOCK.search(page)] if m), "")
        publish(write_text_atomic(out / chapters[index].page, page))
    summary = summary_html(notebooks, linker)
    documents, done = [], set()
    while set(linker.docs) - done:  # a document may link further documents
        document = min(set(linker.docs) - done)
        done.add(document)
        name, page, unresolved = document_html(document, linker, title, mathjax)
        warn(document.name, unresolved)
        publish(write_text_atomic(out / linker.docs[document], page))
        documents.append((name, linker.docs[document]))
    for original, copy in linker.files.items():
        with atomic_output(out / copy) as temporary:
            shutil.copyfile(original, temporary)
        publish(out / copy)
    return publish(write_text_atomic(out / "index.html", index_html(title, chapters, summary, documents)))


def publish(path: Path) -> Path:
    """Give a written file the usual permissions (atomic writes create it readable by the owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "outputs" / "workbook", help="folder of executed notebooks")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "book", help="folder for the site")
    parser.add_argument("--title", default="memseg-lite workbook")
    parser.add_argument("--mathjax-url", help="where the pages load MathJax from (default: nbconvert's CDN URL)")
    parser.add_argument("--allow-unexecuted", action="store_true", help="also render notebooks that never ran")
    parser.add_argument(
        "--source", type=Path, default=ROOT / "notebooks",
        help="folder the notebooks were executed from: their links to other files are resolved there (default notebooks/)",
    )
    args = parser.parse_args(argv)
    try:
        index = build_book(args.notebooks, args.out, args.title, args.mathjax_url, args.allow_unexecuted, args.source)
    except (FileNotFoundError, ValueError) as error:
        print(f"build_book: {error}", file=sys.stderr)
        return 2
    print(f"Book: {index.resolve()} (open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
