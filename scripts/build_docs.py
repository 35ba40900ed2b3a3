"""Build the documentation site with mkdocs (``make docs``; ``make run`` ends with it).

    python scripts/build_docs.py --notebooks outputs/workbook --out outputs/site

The site holds the pages of ``docs/``, ``README.md`` as its home page, ``CONTRIBUTING.md``, the
workbook's notebooks and an API reference generated from the docstrings (mkdocstrings), in the
mkdocs-material theme. Each notebook of ``--source`` (``notebooks/``) is shown as ``make run``
executed it when ``--notebooks`` holds an executed copy, else as stored (without outputs); it is
never executed here. Everything is staged into a temporary folder first (mkdocs wants every page
under one folder), with the links between the files rewritten to the site's pages.

The site works offline, served or opened from disk: formulas are typeset by MathJax 2.7, copied
into the site from the ``jupyter-server-mathjax`` package; no font, script or widget library comes
from a CDN (interactive widgets show their text form). The build checks that no page asks for a
remote script, style sheet or font, and fails naming the page when one does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import posixpath
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
# nbconvert's own MathJax loader (a CDN URL): the site loads its local copy on every page instead.
NBCONVERT_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
# A resource the browser would fetch on its own (not a link a reader clicks).
REMOTE_RESOURCE = re.compile(
    r"""<(?:script|img|iframe)\b[^>]*\bsrc=["'](?:https?:)?//|<link\b[^>]*\bhref=["'](?:https?:)?//|@import\s+url\(["']?(?:https?:)?//"""
)
MARKDOWN_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
MATHJAX_CONFIG = """\
// MathJax 2.7, served from this site (assets/mathjax): the combined TeX / MathML configuration.
// $...$ and \\(...\\) inline, $$...$$ and \\[...\\] displayed, as in the notebooks.
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  tex2jax: {
    inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]],
    displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  "HTML-CSS": { availableFonts: ["TeX"], preferredFont: "TeX", webFont: "TeX", imageFont: null },
  messageStyle: "none",
  showMathMenu: false,
};
"""


class BuildError(Exception):
    """Bad input or a failed build: the message says what to do."""


def mathjax_folder() -> Path:
    try:
        import jupyter_server_mathjax
    except ImportError as error:
        raise BuildError(
            "the site needs jupyter-server-mathjax for its local MathJax: pip install -e '.[docs]'"
        ) from error
    folder = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (folder / "MathJax.js").is_file():
        raise BuildError(f"{folder} holds no MathJax.js: reinstall jupyter-server-mathjax")
    return folder


def choose_notebooks(source: Path, executed: Path | None) -> list[tuple[Path, bool]]:
    """(path, executed?) per notebook of ``source`` in order: the executed copy when there is one."""
    stored = sorted(source.glob(NOTEBOOK_PATTERN))
    if not stored:
        raise BuildError(f"{source} holds no notebooks named NN_topic.ipynb: pass --source the notebooks folder")
    chosen = []
    for path in stored:
        copy = executed / path.name if executed is not None else None
        chosen.append((copy, True) if copy is not None and copy.is_file() else (path, False))
    return chosen


def rewrite_links(
    text: str, here: Path, pages: dict[str, str], page_dir: str, *, final_html: bool = False
) -> tuple[str, list[str]]:
    """Links to repository files that are pages of the site point at those pages.

    ``here`` is the folder of the file (relative to the repository root), ``pages`` maps repository
    paths to staged paths, ``page_dir`` is the staged folder of this page. ``final_html``: the link
    names the built page (``NAME.html``), for notebook cells, whose HTML mkdocs does not rewrite.
    Returns the text and the relative links to repository files that are not in the site (left alone).
    """
    missing = []

    def replace(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("/"):
            return match.group(0)
        resolved = Path(_normalise(here / target))
        staged = pages.get(resolved.as_posix())
        if staged is None:
            if resolved.suffix in (".md", ".ipynb"):
                missing.append(target)
            return match.group(0)
        new = posixpath.relpath(staged, page_dir or ".")
        fragment = match.group(3) or ""
        if final_html and new.endswith((".md", ".ipynb")):
            new = new.rsplit(".", 1)[0] + ".html"
            fragment = fragment.lower()  # mkdocs-jupyter's heading ids are lower case
        return f"{match.group(1)}{new}{fragment}{match.group(4)}"

    return MARKDOWN_LINK.sub(replace, text), missing


def _normalise(path: Path) -> str:
    parts: list[str] = []
    for part in path.as_posix().split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def api_pages(package: Path) -> dict[str, str]:
    """One Markdown page per subpackage: its docstring, then each module's (mkdocstrings)."""
    pages = {}
    for init in sorted(package.glob("*/__init__.py")):
        sub = init.parent
        modules = sorted(p for p in sub.rglob("*.py") if p.name != "__init__.py" and "checks" not in p.parts)
        dotted = f"{package.name}.{sub.name}"
        lines = [
            f"# `{dotted}`",
            "",
            f"::: {dotted}",
            "    options:",
            "      show_root_heading: false",
            "      members: false",
            "",
        ]
        for module in modules:
            name = ".".join(module.relative_to(package.parent).with_suffix("").parts)
            lines += [f"::: {name}", ""]
        pages[f"api/{sub.name}.md"] = "\n".join(lines)
    cli = package / "cli.py"
    if cli.is_file():
        pages["api/cli.md"] = f"# `{package.name}.cli`\n\n::: {package.name}.cli\n    options:\n      members: false\n"
    return pages


def notebook_title(path: Path) -> str:
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BuildError(f"{path} is not a readable notebook ({error}); rerun `make run` or restore it") from error
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            source = "".join(cell.get("source", []))
            heading = re.search(r"^#\s+(.+)$", source, re.M)
            if heading:
                return heading.group(1).strip()
    return path.stem


def stage(
    stage_dir: Path,
    *,
    docs: Path,
    readme: Path,
    contributing: Path,
    notebooks: list[tuple[Path, bool]],
    package: Path | None,
) -> tuple[list, list, list[str]]:
    """Write the site's sources into ``stage_dir``; returns the notebooks' and API's nav and the warnings."""
    warnings: list[str] = []
    repo = readme.parent
    def rel(path) -> str:  # a path as the repository names it (absolute when outside the repository)
        path = Path(path).resolve()
        return _normalise(path.relative_to(repo.resolve())) if path.is_relative_to(repo.resolve()) else str(path)

    pages: dict[str, str] = {rel(readme): "index.md", rel(contributing): "contributing.md"}
    for path in sorted(docs.rglob("*")):
        if path.is_file():
            pages[rel(path)] = path.relative_to(docs).as_posix()
    notebook_nav = []
    for path, _executed in notebooks:
        pages[f"notebooks/{path.name}"] = f"notebooks/{path.name}"  # as the repository's notebooks/ folder holds it
    # Markdown sources: their links follow the staged layout
    shutil.copytree(docs, stage_dir, dirs_exist_ok=True)
    for source, staged in ((readme, "index.md"), (contributing, "contributing.md")):
        if not source.is_file():
            raise BuildError(f"{source} is missing: the site's {staged} is made from it")
        text, missing = rewrite_links(source.read_text(encoding="utf-8"), Path(rel(source)).parent, pages, "")
        warnings += [f"{source.name} links to {m}, which is not in the site" for m in missing]
        (stage_dir / staged).write_text(text, encoding="utf-8")
    for path in sorted(stage_dir.rglob("*.md")):
        if path.name in ("index.md", "contributing.md") and path.parent == stage_dir:
            continue
        origin = docs / path.relative_to(stage_dir)
        page_dir = path.parent.relative_to(stage_dir).as_posix().strip(".")
        text, missing = rewrite_links(path.read_text(encoding="utf-8"), Path(rel(origin)).parent, pages, page_dir)
        warnings += [f"{origin} links to {m}, which is not in the site" for m in missing]
        path.write_text(text, encoding="utf-8")
    # the notebooks: widget state dropped (its renderer would come from a CDN)
    (stage_dir / "notebooks").mkdir(exist_ok=True)
    for path, executed in notebooks:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        notebook.get("metadata", {}).pop("widgets", None)
        for cell in notebook.get("cells", []):
            if cell.get("cell_type") == "markdown":
                text = "".join(cell.get("source", []))
                origin = f"notebooks/{path.name}"
                new, missing = rewrite_links(text, Path("notebooks"), pages, "notebooks", final_html=True)
                warnings += [f"{origin} links to {m}, which is not in the site" for m in missing]
                cell["source"] = new
        (stage_dir / "notebooks" / path.name).write_text(json.dumps(notebook, indent=1), encoding="utf-8")
        title = notebook_title(path) + ("" if executed else " (not executed)")
        notebook_nav.append({title: f"notebooks/{path.name}"})
    api_nav = []
    if package is not None:
        for name, text in api_pages(package).items():
            (stage_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (stage_dir / name).write_text(text, encoding="utf-8")
            api_nav.append({Path(name).stem: name})
    assets = stage_dir / "assets"
    assets.mkdir(exist_ok=True)
    (assets / "mathjax-config.js").write_text(MATHJAX_CONFIG, encoding="utf-8")
    shutil.copytree(mathjax_folder(), assets / "mathjax", dirs_exist_ok=True)
    return notebook_nav, api_nav, warnings


def fill_nav(nav: list, notebook_nav: list, api_nav: list) -> list:
    """The nav of mkdocs.yml with its empty Notebooks and API reference sections filled in."""
    filled = []
    for entry in nav:
        if isinstance(entry, dict):
            ((title, value),) = entry.items()
            if value == [] and title == "Notebooks":
                value = notebook_nav
            elif value == [] and title == "API reference":
                value = api_nav
            elif isinstance(value, list):
                value = fill_nav(value, notebook_nav, api_nav)
            filled.append({title: value})
        else:
            filled.append(entry)
    return filled


def finish_html(site: Path) -> None:
    """Notebook pages drop nbconvert's CDN MathJax loader; no page may fetch anything remote."""
    offenders = []
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        new = NBCONVERT_MATHJAX.sub("", text)
        if new != text:
            page.write_text(new, encoding="utf-8")
        if REMOTE_RESOURCE.search(new):
            offenders.append(f"{page.relative_to(site)}: {REMOTE_RESOURCE.search(new).group(0)}")
    if offenders:
        raise BuildError("pages fetch remote resources (the site must work offline): " + "; ".join(offenders))


@contextlib.contextmanager
def collect_warnings(logger_name: str):
    """The warnings a library logs while the block runs (mkdocs reports broken links this way)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger(logger_name), Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def build(
    *,
    notebooks: Path | None,
    source: Path,
    out: Path,
    config: Path,
    docs: Path,
    readme: Path,
    contributing: Path,
    package: Path | None,
) -> list[str]:
    import yaml
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    if notebooks is not None and not notebooks.is_dir():
        print(f"note: {notebooks} does not exist (no `make run` yet): showing the stored notebooks", file=sys.stderr)
        notebooks = None
    if not docs.is_dir():
        raise BuildError(f"{docs} is not a folder: pass --docs the documentation folder")
    if out.resolve() in {p.resolve() for p in (docs, source, ROOT) if p is not None}:
        raise BuildError(f"--out {out} is a source folder; choose an empty folder such as outputs/site")
    chosen = choose_notebooks(source, notebooks)
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".site-src-", dir=out.parent) as folder:
        stage_dir = Path(folder) / "docs"
        stage_dir.mkdir()
        notebook_nav, api_nav, warnings = stage(
            stage_dir, docs=docs, readme=readme, contributing=contributing, notebooks=chosen, package=package
        )
        nav = fill_nav(settings.get("nav", []), notebook_nav, api_nav)
        if not api_nav:
            nav = [entry for entry in nav if not (isinstance(entry, dict) and "API reference" in entry)]
        built = Path(folder) / "site"
        mkdocs_config = load_config(str(config), docs_dir=str(stage_dir), site_dir=str(built), nav=nav)
        if package is not None:
            handler = mkdocs_config["plugins"]["mkdocstrings"].config["handlers"]["python"]
            handler["paths"] = [str(package.parent)]
        with collect_warnings("mkdocs") as mkdocs_warnings:
            mkdocs_build(mkdocs_config)
        warnings += mkdocs_warnings
        finish_html(built)
        # swap the finished site in: an interrupted build never leaves half a site at --out
        old = Path(folder) / "old"
        if out.exists():
            out.rename(old)
        built.rename(out)
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--notebooks",
        type=Path,
        default=ROOT / "outputs" / "workbook",
        help="the executed notebooks (make run's --out)",
    )
    parser.add_argument("--source", type=Path, default=ROOT / "notebooks", help="the stored notebooks, in order")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "site")
    parser.add_argument("--config", type=Path, default=ROOT / "mkdocs.yml")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--contributing", type=Path, default=ROOT / "CONTRIBUTING.md")
    parser.add_argument("--no-api", action="store_true", help="leave out the API reference (faster)")
    args = parser.parse_args(argv)
    try:
        warnings = build(
            notebooks=args.notebooks,
            source=args.source,
            out=args.out,
            config=args.config,
            docs=args.docs,
            readme=args.readme,
            contributing=args.contributing,
            package=None if args.no_api else ROOT / "memseg_lite",
        )
    except BuildError as error:
        print(f"build_docs: error: {error}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Documentation site: {(args.out / 'index.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
