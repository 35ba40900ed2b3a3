"""``memseg-lite predict``: verdicts, scores, defect masks and overlays for files, folders and globs.

Inputs (:func:`expand_inputs`): image files, folders (their images, in name order; ``recursive``
for sub-folders too) and glob patterns (``"photos/*.JPG"``, ``"line3/**/*.png"``). A path that
does not exist and matches nothing is an error before anything is predicted.

Written to the output folder::

    predictions.jsonl   one JSON object per input image, in input order, with the keys of CSV_COLUMNS:
                        path, verdict ("normal" / "defective"; "error" for an image that could not be
                        read, whose "error" says why), score, normalised_score, defect_fraction (of
                        the mask), height, width, mask and overlay (paths relative to the folder);
                        null where a value does not apply
    predictions.csv     the same as a table
    provenance.json     checkpoint name and SHA-256, step, thresholds, backend, time (UTC)
    masks/<name>_mask.png        binary defect mask at the image's own size (255 = defect)
    overlays/<name>_overlay.png  the image, the anomaly map and the mask outline side by side

An unreadable image (missing, corrupt, not an image) is reported (a line on stderr, an ``error``
record) and skipped; the others are written. Exit codes of the command: 0 every image predicted,
3 some images failed (the rest written), 1 nothing could be predicted (nothing written).

Re-running into the same folder never mixes old and new results and never deletes a file predict
did not write: the new files are written to a staging folder beside it, then each replaces its
old version in one rename; the earlier run's outputs that were not replaced are deleted, and
nothing else (``.predict-manifest.json`` lists the files predict wrote; a folder from before
that list is read through its ``predictions.jsonl``). Refused, before anything is predicted: an
input image inside the output folder, a folder holding files but no ``predictions.jsonl`` (not
written by predict), and an output name taken by a file predict did not write.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from memseg_lite.core.io import IMAGE_SUFFIXES, list_images, staging_folder, write_image, write_text_atomic
from memseg_lite.core.overlays import draw_mask_outline, heatmap_overlay
from memseg_lite.deployment.inferencer import Inferencer, InferenceResult

RESULTS_NAME = "predictions.jsonl"
TABLE_NAME = "predictions.csv"
PROVENANCE_NAME = "provenance.json"  # checkpoint SHA-256, thresholds, backend, time
#: The hidden list of the files predict wrote in the output folder: the only files a re-run replaces or deletes.
MANIFEST_NAME = ".predict-manifest.json"
EXIT_OK, EXIT_SOME_FAILED, EXIT_NOTHING = 0, 3, 1
CSV_COLUMNS = ("path", "verdict", "score", "normalised_score", "defect_fraction", "height", "width", "mask",
               "overlay", "error")


@dataclass
class PredictReport:
    """What a prediction run produced: results in input order, failures, and where the files are."""

    results: list[InferenceResult]
    failed: list[tuple[Path, str]]
    out_dir: Path | None = None
    records: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if not self.results:
            return EXIT_NOTHING
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


def _is_pattern(text: str) -> bool:
    return any(char in text for char in "*?[")


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return list_images(folder)
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def expand_inputs(items, recursive: bool = False) -> list[Path]:
    """Files, folders and glob patterns -> image paths (duplicates dropped, order kept).

    A named file is kept whatever its extension (so a bad file is reported, not silently
    dropped); folders and patterns contribute image files only. Raises ``FileNotFoundError`` for a
    path that does not exist or a pattern that matches nothing, ``ValueError`` when no image is found.
    """
    paths: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = _images_in(path, recursive)
            if not found:
                raise FileNotFoundError(
                    f"folder {path} holds no images ({' '.join(IMAGE_SUFFIXES)}, any case)"
                    + ("" if recursive else "; pass --recursive to look in its sub-folders")
                )
            paths += found
        elif path.is_file():
            paths.append(path)
        elif _is_pattern(text):
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            matches = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES]
            if not matches:
                raise FileNotFoundError(f"the pattern {text!r} matches no image files")
            paths += matches
        else:
            raise FileNotFoundError(f"no such image file or folder: {path}")
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise ValueError("no images given; pass image files, folders or glob patterns")
    return unique


def _output_names(paths: list[Path]) -> list[str]:
    """A distinct file-name stem per input (``name``, ``name_2``, ... for equal names in different folders)."""
    used, names = set(), []
    for path in paths:
        name, copy = path.stem, 1
        while name.lower() in used:
            copy += 1
            name = f"{path.stem}_{copy}"
        used.add(name.lower())
        names.append(name)
    return names


def overlay_panel(result: InferenceResult) -> np.ndarray:
    """Image | anomaly map (jet) | image with the map blended and the mask outlined in green."""
    jet = heatmap_overlay(np.zeros_like(result.image), result.anomaly_map, alpha=1.0)
    blended = heatmap_overlay(result.image, result.anomaly_map)
    if result.mask is not None:
        thickness = max(1, round(max(result.image.shape[:2]) / 256))
        blended = draw_mask_outline(blended, result.mask, thickness=thickness)
    return np.concatenate([result.image, jet, blended], axis=1)


def _listed_outputs(out: Path) -> set[str]:
    """The files (relative POSIX paths) an earlier ``predict`` wrote in ``out``: its manifest's list.

    A folder written before the manifest existed is recognised by its ``predictions.jsonl``: the
    two tables and the mask and overlay files its records name. Entries that would point outside
    ``out`` are ignored (they were never written by predict).
    """
    manifest = out / MANIFEST_NAME
    if manifest.is_file():
        try:
            listed = json.loads(manifest.read_text()).get("files", [])
        except (OSError, ValueError, AttributeError) as error:
            raise ValueError(
                f"--out {out}: its list of predict's files {manifest} is unreadable ({error}); nothing was changed. "
                "Choose another --out, or delete the folder if you no longer need it"
            ) from None
    else:
        listed = [RESULTS_NAME, TABLE_NAME, PROVENANCE_NAME]
        for line in (out / RESULTS_NAME).read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                listed += [record[key] for key in ("mask", "overlay") if isinstance(record.get(key), str)]
    safe = set()
    for name in listed:
        relative = PurePosixPath(str(name))
        if name and not relative.is_absolute() and ".." not in relative.parts:
            safe.add(relative.as_posix())
    return safe


def _planned_outputs(names: list[str]) -> set[str]:
    """Every file a run over ``names`` may write (a mask only where the checkpoint has thresholds)."""
    return {RESULTS_NAME, TABLE_NAME, PROVENANCE_NAME, *(f"masks/{n}_mask.png" for n in names),
            *(f"overlays/{n}_overlay.png" for n in names)}


def _check_inputs_outside(paths: list[Path], out: Path) -> None:
    """Predict replaces files in ``out``: an input image inside it could be one of them, so refuse."""
    folder = out.resolve()
    for path in paths:
        if path.resolve().is_relative_to(folder):
            raise ValueError(
                f"input image {path} lies inside --out {out}; predict writes and replaces files there, so "
                "nothing was predicted. Choose an --out outside the input folders"
            )


def _prepare_out(out: Path, names: list[str]) -> set[str]:
    """Check ``out`` may receive the outputs; return the files predict wrote there before.

    Nothing in ``out`` is changed here. A folder holding files and no ``predictions.jsonl`` (not
    written by predict) is refused, and so is an output name that is taken by a file predict did not write.
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; give a folder for the predictions")
    previous: set[str] = set()
    if out.is_dir() and any(out.iterdir()):
        if not (out / RESULTS_NAME).is_file() and not (out / MANIFEST_NAME).is_file():
            raise FileExistsError(
                f"--out {out} already holds files that predict did not write (no {RESULTS_NAME}); "
                "choose another or an empty folder"
            )
        previous = _listed_outputs(out)
        taken = sorted(name for name in _planned_outputs(names) - previous if (out / name).exists())
        if taken:
            raise FileExistsError(
                f"--out {out} already holds {out / taken[0]}"
                + (f" (and {len(taken) - 1} more)" if len(taken) > 1 else "")
                + ", which predict did not write; nothing was changed. Move it, or choose another --out"
            )
    return previous


def _write_manifest(out: Path, files: set[str]) -> None:
    write_text_atomic(out / MANIFEST_NAME, json.dumps(
        {"written_by": "memseg-lite predict", "files": sorted(files)}, indent=1) + "\n")


def _move_in(staging: Path, out: Path, previous: set[str]) -> None:
    """Move the new outputs from ``staging`` into ``out``, then delete the earlier run's outputs that are not replaced.

    Only files predict wrote are replaced or deleted (the manifest's list); anything else in ``out``
    is kept. Each file is replaced in one rename, the tables last, so ``predictions.jsonl`` never
    names a picture that is not there yet. The manifest lists old and new files while they are
    mixed, so an interrupted move is cleaned up by the next run.
    """
    written = {path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file()}
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, previous | written)
    tables = (TABLE_NAME, RESULTS_NAME)
    for name in [*sorted(written - set(tables)), *(t for t in tables if t in written)]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out / name)
    for name in sorted(previous - written):
        stale = out / name
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
        with contextlib.suppress(OSError):  # an emptied masks/ or overlays/ folder goes too
            if stale.parent != out:
                stale.parent.rmdir()
    _write_manifest(out, written)


def _write_pictures(folder: Path, record: dict, result: InferenceResult, name: str) -> None:
    if result.mask is not None:
        write_image(folder / "masks" / f"{name}_mask.png", result.mask)
        record["mask"] = f"masks/{name}_mask.png"
    write_image(folder / "overlays" / f"{name}_overlay.png", overlay_panel(result))
    record["overlay"] = f"overlays/{name}_overlay.png"


def _write_tables(folder: Path, records: list[dict]) -> None:
    write_text_atomic(folder / RESULTS_NAME, "".join(json.dumps(r) + "\n" for r in records))
    with (folder / TABLE_NAME).open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow({key: ("" if record.get(key) is None else record.get(key)) for key in CSV_COLUMNS})


def predict_images(
    inputs,
    checkpoint: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 8,
    recursive: bool = False,
    inferencer: Inferencer | None = None,
    backend: str = "fast",
    report_errors: bool = True,
    keep_arrays: bool | None = None,
    threads: int | None = None,
) -> PredictReport:
    """Predict every image of ``inputs`` (files, folders, globs); with ``out_dir``, write the files above.

    Give ``checkpoint`` or a ready ``inferencer``. Unreadable images are reported on stderr (when
    ``report_errors``) and listed in ``PredictReport.failed``; the rest are predicted. When no image
    at all can be read, ``ValueError`` is raised and nothing is written. ``keep_arrays`` (default: only
    without ``out_dir``) keeps each result's image, map and mask in memory; when writing, the pictures
    go to disk batch by batch and the results keep scores and verdicts only (large folders fit in memory).
    ``threads``: the backend's CPU threads (:class:`~memseg_lite.deployment.inferencer.Inferencer`).
    """
    paths = expand_inputs(inputs, recursive=recursive)
    out = Path(out_dir) if out_dir is not None else None
    names = _output_names(paths)
    if out is not None:
        _check_inputs_outside(paths, out)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} is a file; give a folder for the predictions")
    if inferencer is None:
        if checkpoint is None:
            raise ValueError("predict_images needs a checkpoint or an inferencer")
        inferencer = Inferencer(checkpoint, device=device, backend=backend, batch_size=batch_size, threads=threads)
    previous = _prepare_out(out, names) if out is not None else set()
    keep_arrays = out is None if keep_arrays is None else keep_arrays
    # The outputs are written beside ``out`` first; _move_in then moves them in file by file (not the
    # whole folder: files predict did not write stay), so the staging folder's swap_in is not used.
    scratch = staging_folder(out.parent, prefix=f".{out.name}.staging-") if out is not None else None
    with scratch if scratch is not None else contextlib.nullcontext() as area:
        staging = area.path if area is not None else None
        records: list[dict] = []
        done: dict[int, InferenceResult] = {}
        failed: list[tuple[Path, str]] = []
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            chunk = inferencer.predict_arrays([image for _, image in pending], [paths[i] for i, _ in pending])
            for (index, _), result in zip(pending, chunk, strict=True):
                records[index].update(result.to_record())
                if staging is not None:
                    _write_pictures(staging, records[index], result, names[index])
                if not keep_arrays:
                    result.image = result.anomaly_map = result.mask = None
                done[index] = result
            pending.clear()

        from memseg_lite.core.io import read_image

        for index, path in enumerate(paths):
            records.append({**dict.fromkeys(CSV_COLUMNS), "path": str(path)})  # every key in every record
            try:
                pending.append((index, read_image(path)))
            except (OSError, ValueError) as error:
                failed.append((path, str(error)))
                records[index].update(verdict="error", error=str(error))
                if report_errors:
                    print(f"memseg-lite predict: skipped {path}: {error}", file=sys.stderr)
            if len(pending) >= inferencer.batch_size:
                flush()
        if pending:
            flush()
        if not done:
            raise ValueError(
                f"none of the {len(paths)} image(s) could be read (first: {failed[0][0]}: {failed[0][1]}); nothing "
                "written"
            )
        results = [done[i] for i in sorted(done)]
        if staging is not None:
            _write_tables(staging, records)
            write_text_atomic(staging / PROVENANCE_NAME, json.dumps(inferencer.provenance(), indent=2) + "\n")
            _move_in(staging, out, previous)
    return PredictReport(results=results, failed=failed, out_dir=out, records=records)
