"""Writing the demo data set in the MVTec AD layout, atomically (staging folder, then swap)."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from memseg_lite.core.io import staging_folder, write_image
from memseg_lite.datasets.demo.catalogue import (
    CATEGORIES,
    GENERATOR_VERSION,
    CategorySpec,
    DemoDatasetSummary,
    check_categories,
    check_int,
    check_size,
    sample_seed,
)
from memseg_lite.datasets.demo.render import render_sample


def write_demo_dataset(
    out: str | os.PathLike,
    categories: str | Iterable[str] | None = None,
    size: int = 256,
    n_train: int = 60,
    n_test_good: int = 20,
    n_per_defect: int = 10,
    seed: int = 0,
    force: bool = False,
) -> DemoDatasetSummary:
    """Write the demo categories to ``out`` in the MVTec AD layout and return what was written.

    ``<out>/<category>/train/good/000.png``, ``test/good/...``, ``test/<defect>/...`` and
    ``ground_truth/<defect>/000_mask.png`` (single-channel uint8, 0 or 255), then
    ``<out>/manifest.json`` last. The set is built in a hidden sibling folder and swapped in when
    complete, so an interrupted run never leaves a half-written set at ``out``. Same arguments,
    byte-identical files.

    ``force`` replaces an existing demo set (one with this generator's ``manifest.json``), and
    only when it holds nothing but the files its manifest describes: any file or folder you added
    (notes, extra images, a results folder) makes it refuse with a ``FileExistsError`` that lists
    them, so ``--force`` never deletes your files. Move them out (or delete them) and run it again.
    """
    out = Path(out)
    names = check_categories(categories)
    size = check_size(size)
    n_train = check_int("n_train", n_train, minimum=1)
    n_test_good = check_int("n_test_good", n_test_good, minimum=1)
    n_per_defect = check_int("n_per_defect", n_per_defect, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out={out} is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} already exists and is not empty; pass --force (or force=True) to replace it")
        if not _is_demo_folder(out):
            # --force replaces demo data, never a folder of someone's own files.
            raise FileExistsError(
                f"{out} is not empty and holds no demo-data manifest.json, so it was not written by "
                "`memseg-lite demo-data`; refusing to delete it even with --force. Choose another --out, "
                "or empty the folder yourself"
            )
        foreign = _foreign_entries(out)
        if foreign:
            shown = "\n  ".join(foreign[:20]) + (f"\n  ... and {len(foreign) - 20} more" if len(foreign) > 20 else "")
            raise FileExistsError(
                f"{out} holds files that `memseg-lite demo-data` did not write; --force would delete them, so "
                f"nothing was changed. Move them out of {out} (or delete them) and run it again:\n  {shown}"
            )
    target = out.resolve()
    if target.parent == target:
        raise ValueError(f"out={out} is a filesystem root; choose a folder such as data/demo")
    working = Path.cwd().resolve()
    if target.exists() and (working == target or target in working.parents):
        raise ValueError(f"refusing to replace {out}: it holds the current working directory; choose another --out")

    start = time.perf_counter()
    jobs = [
        (name, split, index, defect)
        for name in names
        for split, count, defect in _splits(CATEGORIES[name], n_train, n_test_good, n_per_defect)
        for index in range(count)
    ]
    # Built in full beside the target, then renamed into place (an old set is deleted only then).
    with staging_folder(target.parent, prefix=f".{target.name}.partial-") as staging:
        built = staging.path / target.name
        digits = max(3, len(str(max(n_train, n_test_good, n_per_defect) - 1)))
        for name, split, index, defect in tqdm(jobs, desc="demo data", unit="img", disable=None, leave=False):
            sample = render_sample(name, size, sample_seed(seed, name, split, index), defect)
            stem = f"{index:0{digits}d}"
            write_image(built / name / split / f"{stem}.png", sample.image)
            if defect is not None:
                mask = sample.mask.astype(np.uint8) * np.uint8(255)
                write_image(built / name / "ground_truth" / defect / f"{stem}_mask.png", mask)
        counts = {
            name: {split: count for split, count, _ in _splits(CATEGORIES[name], n_train, n_test_good, n_per_defect)}
            for name in names
        }
        manifest = {
            "generator": "memseg_lite.demo_data",
            "generator_version": GENERATOR_VERSION,
            "layout": "MVTec AD",
            "seed": seed,
            "size": size,
            "categories": {
                name: {
                    "kind": CATEGORIES[name].kind,
                    "grayscale": CATEGORIES[name].grayscale,
                    "defects": list(CATEGORIES[name].defects),
                    "description": CATEGORIES[name].description,
                    "counts": counts[name],
                }
                for name in names
            },
        }
        (built / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.swap_in([(built, target)])
    return DemoDatasetSummary(root=out, seed=seed, size=size, counts=counts, seconds=time.perf_counter() - start)


def _is_demo_folder(folder: Path) -> bool:
    """True when ``folder`` holds a manifest written by this generator."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") == "memseg_lite.demo_data"


def _foreign_entries(folder: Path) -> list[str]:
    """Paths under ``folder`` (relative, sorted) that its demo-data manifest does not account for.

    The generator's files follow from the manifest's counts: ``<category>/<split>/<NNN>.png``
    and ``<category>/ground_truth/<defect>/<NNN>_mask.png``, with as many digits as the largest
    count needs (at least 3). A manifest without readable counts accounts for nothing but itself.
    """
    expected = {"manifest.json"}
    try:
        categories = json.loads((folder / "manifest.json").read_text())["categories"]
        for name, entry in categories.items():
            counts = {str(split): int(count) for split, count in entry["counts"].items()}
            digits = max(3, len(str(max(counts.values()) - 1)))
            for split, count in counts.items():
                defect = split.removeprefix("test/") if split.startswith("test/") and split != "test/good" else None
                for index in range(count):
                    expected.add(f"{name}/{split}/{index:0{digits}d}.png")
                    if defect is not None:
                        expected.add(f"{name}/ground_truth/{defect}/{index:0{digits}d}_mask.png")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    folders = {parent.as_posix() for path in expected for parent in Path(path).parents}
    foreign = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            if relative not in folders:
                foreign.append(relative + "/")
        elif relative not in expected:
            foreign.append(relative)
    # A foreign folder is listed once, not with everything inside it.
    return [p for p in foreign if not any(p != q and q.endswith("/") and p.startswith(q) for q in foreign)]


def _splits(spec: CategorySpec, n_train: int, n_test_good: int, n_per_defect: int):
    yield "train/good", n_train, None
    yield "test/good", n_test_good, None
    for defect in spec.defects:
        yield f"test/{defect}", n_per_defect, defect


def ensure_demo_data(root: str | os.PathLike = "data/demo", **kwargs) -> Path:
    """Return ``root`` after making sure a finished demo set is there (its ``manifest.json`` exists).

    A missing or empty ``root`` is generated with :func:`write_demo_dataset` (``kwargs`` are passed
    on); a non-empty ``root`` without a manifest is not touched (``FileExistsError``). An existing
    set is reused as it is; if ``categories`` asks for ones it lacks, a ``ValueError`` says how to
    regenerate it.
    """
    if "force" in kwargs:
        raise TypeError("ensure_demo_data never replaces data; call write_demo_dataset(..., force=True) to do that")
    root = Path(root)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            present = set(manifest["categories"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{manifest_path} is not a demo-data manifest ({error}); delete {root} and run ensure_demo_data again"
            ) from error
        if manifest.get("generator_version") != GENERATOR_VERSION:
            warnings.warn(
                f"the demo data in {root} was made by generator version {manifest.get('generator_version')}, "
                f"this is version {GENERATOR_VERSION}; regenerate it with `memseg-lite demo-data --out {root} --force`",
                stacklevel=2,
            )
        missing = [name for name in check_categories(kwargs.get("categories")) if name not in present]
        if missing:
            raise ValueError(
                f"the demo data in {root} lacks categories {', '.join(missing)}; regenerate it with "
                f"`memseg-lite demo-data --out {root} --force` (all categories) or write_demo_dataset(..., force=True)"
            )
        return root
    empty = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    summary = write_demo_dataset(root, force=empty, **kwargs)
    print(summary)
    return root
