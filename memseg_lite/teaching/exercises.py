"""Self-checks for the notebook exercises.

An exercise cell calls :func:`check` with a function that asserts; the learner sees a green
pass line, or a "not solved yet" line with the reason, and the notebook keeps running either
way. The solutions notebooks (``solutions/NN_topic_solutions.ipynb``) call
``check(..., strict=True)``, so CI fails if a published solution is wrong.

The checks themselves live in :mod:`memseg_lite.teaching.checks` (one module per chapter). They
must not contain the answer, so they compare a learner's result with a stored digest of the
worked solution's result: :func:`summarise` makes the digest (shape, mean, std, min, max and a few
probe values at fixed flat indices), :func:`assert_matches` compares a value with it and says
which statistic differs.

The printed lines are for the learner only: the grader (:mod:`memseg_lite.teaching.grading`)
ignores them and runs the instructor's hidden tests on the learner's functions instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

#: how many probe values :func:`summarise` records (at evenly spaced flat indices)
PROBES = 5

def check(name: str, test: Callable[[], object], *, strict: bool = False) -> bool:
    """Run ``test``; report pass / not yet. With ``strict=True`` a failure raises."""
    try:
        test()
    except NotImplementedError:
        if strict:
            raise
        print(f"[ ] {name}: not attempted yet (replace the NotImplementedError with your code).")
        return False
    except AssertionError as error:
        if strict:
            raise
        reason = f": {error}" if str(error) else ""
        print(f"[x] {name}: not solved yet{reason}")
        return False
    print(f"[ok] {name}: passed.")
    return True


def _as_array(value) -> np.ndarray:
    """A float64 numpy copy of an array, tensor, number, bool or nested list."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"expected numbers (an array, tensor or number), got {type(value).__name__}") from error
    return array


def _round(number: float, digits: int = 6) -> float:
    """``number`` rounded to ``digits`` significant digits (digests stay short and readable)."""
    if number == 0 or not math.isfinite(number):
        return float(number)
    return float(f"{number:.{digits}g}")


def probe_indices(size: int, count: int = PROBES) -> list[int]:
    """The fixed flat indices :func:`summarise` probes: ``count`` evenly spaced ones over ``size``."""
    if size <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, size - 1, num=min(count, size)).round()})


def summarise(value) -> dict:
    """A short digest of ``value`` for storing beside a check: shape, statistics, probe values.

    ``value`` is a numpy array, torch tensor, number or nested list. The digest is a plain dict
    (``shape``, ``mean``, ``std``, ``min``, ``max``, ``probes``: ``[[flat_index, value], ...]``),
    numbers rounded to 6 significant digits, so it can be pasted into a ``chNN`` module as a literal.
    Regenerating an expected digest is one call: ``summarise(solution(...))``.
    """
    array = _as_array(value)
    flat = array.reshape(-1)
    digest: dict = {"shape": list(array.shape)}
    if flat.size == 0:
        return digest
    digest.update(
        mean=_round(float(flat.mean())),
        std=_round(float(flat.std())),
        min=_round(float(flat.min())),
        max=_round(float(flat.max())),
        probes=[[index, _round(float(flat[index]))] for index in probe_indices(flat.size)],
    )
    return digest


def _close(got: float, want: float, rtol: float, atol: float) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    return abs(got - want) <= atol + rtol * abs(want)


def assert_matches(value, expected, what: str = "the result", rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Raise ``AssertionError`` unless ``value`` matches a digest made by :func:`summarise`.

    ``expected`` is such a digest (a dict) or a plain number. Compared in this order, so the message
    names the first thing that is off: the shape, then mean, std, min, max, then each probe value,
    each within ``atol + rtol * |expected|``. ``what`` names the value in the message
    ("the noise", "M_2", ...). The message gives the learner's value and a hint, never the
    expected numbers beyond the shape (they would give the answer away).
    """
    if not isinstance(expected, Mapping):
        got = _as_array(value)
        if got.size != 1:
            raise AssertionError(f"{what} should be a single number, got an array of shape {tuple(got.shape)}")
        if not _close(float(got.reshape(-1)[0]), float(expected), rtol, atol):
            raise AssertionError(f"{what} is {float(got.reshape(-1)[0]):.6g}, which is not the expected value")
        return
    if "shape" not in expected:
        raise ValueError("assert_matches: expected must be a digest from summarise(...) (it has no 'shape')")
    array = _as_array(value)
    want_shape = tuple(expected["shape"])
    if tuple(array.shape) != want_shape:
        raise AssertionError(f"{what} has shape {tuple(array.shape)}, expected {want_shape}")
    flat = array.reshape(-1)
    if flat.size == 0:
        return
    if not np.all(np.isfinite(flat)) and all(math.isfinite(expected.get(k, 0.0)) for k in ("mean", "std")):
        raise AssertionError(f"{what} contains NaN or infinite values")
    hints = {
        "mean": "its average value is off (a missing normalisation, offset or scale?)",
        "std": "its spread is off (a wrong scale, or values clipped or constant?)",
        "min": "its smallest value is off",
        "max": "its largest value is off",
    }
    statistics = {"mean": float(flat.mean()), "std": float(flat.std()), "min": float(flat.min()),
                  "max": float(flat.max())}
    for key, hint in hints.items():
        if key in expected and not _close(statistics[key], float(expected[key]), rtol, atol):
            raise AssertionError(f"{what}: {hint} (got {key} = {statistics[key]:.6g})")
    for index, want in expected.get("probes", []):
        if index >= flat.size:
            raise AssertionError(f"{what} has too few values (no element at flat index {index})")
        if not _close(float(flat[index]), float(want), rtol, atol):
            raise AssertionError(f"{what}: the statistics match but the value at flat index {index} does not "
                                 f"(got {float(flat[index]):.6g}; elements in the wrong order, transposed or shifted?)")


def call_candidate(candidate, *args):
    """Call the learner's function; an exception other than NotImplementedError becomes a failed check."""
    try:
        return candidate(*args)
    except NotImplementedError:
        raise
    except Exception as error:  # shown to the learner as the reason
        raise AssertionError(f"your function raised {type(error).__name__}: {error}") from error


def as_tensor(value, what):
    """``value`` as a float64 CPU tensor, or a failed check saying that a torch tensor was expected."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} must be a torch tensor, got {type(value).__name__}")
    return value.detach().cpu().double()


def _agrees(mine, theirs, atol: float) -> bool:
    """Whether two results (arrays, tensors, numbers or tuples of them) are equal within ``atol``."""
    if isinstance(theirs, tuple | list):
        return isinstance(mine, tuple | list) and len(mine) == len(theirs) and all(
            _agrees(a, b, atol) for a, b in zip(mine, theirs, strict=True))
    try:
        mine, theirs = _as_array(mine), _as_array(theirs)
    except AssertionError:
        return False
    return mine.shape == theirs.shape and bool(np.allclose(mine, theirs, rtol=1e-5, atol=atol, equal_nan=True))


def use_core(mine: Callable, reference: Callable, *probe_args, atol: float = 1e-6, **probe_kwargs) -> Callable:
    """The assignment track's guard: ``mine`` if it agrees with ``reference`` on the probe input, else ``reference``.

    The later cells of a chapter use the core piece the student writes; when it raises or gives
    another result on ``probe_args``, they run on the package's function (``reference``) and a
    warning says so. The returned function keeps the student's own as ``__memseg_student__``:
    the grader grades that one, never the fallback.
    """
    name = getattr(mine, "__name__", "your function")
    try:
        agrees = _agrees(mine(*probe_args, **probe_kwargs), reference(*probe_args, **probe_kwargs), atol)
        problem = "gives another result than memseg_lite's on a test input"
    except NotImplementedError:
        agrees, problem = False, "is not written yet"
    except Exception as error:  # the student's code may raise anything
        agrees, problem = False, f"raised {type(error).__name__}: {error}"
    if agrees:
        print(f"[ok] core · {name}: agrees with memseg_lite; the cells below use yours.")
        return mine

    def fallback(*args, **kwargs):
        return reference(*args, **kwargs)

    fallback.__name__ = fallback.__qualname__ = name
    fallback.__doc__ = reference.__doc__
    fallback.__memseg_student__ = mine
    print(f"[!] core · {name} {problem}: the cells below use memseg_lite's version instead "
          "(your function is still the one graded).")
    return fallback
