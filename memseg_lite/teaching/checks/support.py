"""What every chapter's checks share: robust calls, sealed expected numbers, forbidden shortcuts.

- :func:`robust` wraps an ``exercise_N``: whatever goes wrong while it looks at the learner's
  result (a ``TypeError`` on a ``None``, an ``IndexError`` on a wrong shape) becomes a failed check
  with the reason, never an exception that stops "Run all". ``NotImplementedError`` (an untouched
  stub) passes through, so :func:`memseg_lite.teaching.exercises.check` says "not attempted".
- :func:`seal` / :func:`assert_sealed`: an expected *number* is stored as a hash of its value
  rounded to a grid (:class:`Sealed`), so a learner who prints a check module's constants does not
  read the answer off them. The comparison accepts values within about one grid step and says only
  that the value is not the expected one.
- :func:`call_avoiding` calls the learner's function like
  :func:`memseg_lite.teaching.exercises.call_candidate`, and fails the check when the function
  (directly or through others) runs one of the package functions or libraries that the exercise
  asks to do without. It watches calls with :func:`sys.setprofile`; it never calls them itself.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from memseg_lite.teaching.exercises import call_candidate


def robust(exercise: Callable) -> Callable:
    """``exercise`` with every error other than a failed check or a stub turned into a failed check."""

    @functools.wraps(exercise)
    def checked(*args, **kwargs):
        try:
            return exercise(*args, **kwargs)
        except (AssertionError, NotImplementedError):
            raise
        except Exception as error:  # shown to the learner as the reason: the result had an unexpected form
            raise AssertionError(f"your result could not be checked ({type(error).__name__}: {error}); "
                                 "look at what your function returns (type, shape)") from error

    return checked


# --------------------------------------------------------------------------------------------------
# Sealed numbers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sealed:
    """An expected number as ``digest`` = hash of ``round(value / step)``; ``exact``: no neighbouring step."""

    step: float
    digest: str
    exact: bool = False


def _digest(bucket: int, step: float) -> str:
    return hashlib.sha256(f"memseg-lite {bucket} {step!r}".encode()).hexdigest()[:20]


def seal(value: float, step: float | None = None, exact: bool = False) -> Sealed:
    """Seal ``value``; ``step`` defaults to 1e-4 of its decade (about 4 significant digits), 1e-6 for 0.

    To regenerate a stored one: ``seal(solution(inputs))`` and paste the printed ``Sealed(...)``.
    Use ``exact=True`` with ``step=1`` for whole numbers (no neighbouring value is accepted).
    """
    value = float(value)
    if step is None:
        step = 1e-6 if value == 0 else 10.0 ** (math.floor(math.log10(abs(value))) - 4)
    return Sealed(step=step, digest=_digest(round(value / step), step), exact=exact)


def matches_sealed(value: float, sealed: Sealed) -> bool:
    """Whether ``value`` rounds to the sealed grid point (or, unless exact, one of its two neighbours)."""
    value = float(value)
    if not math.isfinite(value):
        return False
    bucket = round(value / sealed.step)
    offsets = (0,) if sealed.exact else (0, -1, 1)
    return any(_digest(bucket + offset, sealed.step) == sealed.digest for offset in offsets)


def assert_sealed(value, sealed: Sealed, what: str, hint: str = "") -> None:
    """Raise ``AssertionError`` unless ``value`` (one number) matches ``sealed``; never shows the expected value."""
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise AssertionError(f"{what} must be one number, got {type(value).__name__}") from error
    if not matches_sealed(number, sealed):
        raise AssertionError(f"{what} is {number:.6g}, which is not the expected value{f' ({hint})' if hint else ''}")


# --------------------------------------------------------------------------------------------------
# Forbidden shortcuts
# --------------------------------------------------------------------------------------------------
class _Watcher:
    """A profile function that notes the first forbidden call (by code object, C name or module)."""

    def __init__(self, functions: Iterable[Callable], c_names: Iterable[str], modules: Iterable[str]):
        self.codes = {}
        for function in functions:
            function = inspect.unwrap(function)
            self.codes[function.__code__] = function.__qualname__
        self.c_names = set(c_names)
        self.modules = tuple(modules)
        self.seen: str | None = None

    def __call__(self, frame, event, arg):
        if self.seen is not None:
            return
        if event == "call":
            code = frame.f_code
            if code in self.codes:
                self.seen = self.codes[code]
            elif self.modules and code.co_name != "<module>":  # importing a module is not using it
                module = frame.f_globals.get("__name__", "")
                for prefix in self.modules:
                    if module == prefix or module.startswith(prefix + "."):
                        self.seen = prefix
                        break
        elif event == "c_call" and getattr(arg, "__name__", None) in self.c_names:
            self.seen = arg.__name__


def call_avoiding(candidate, *args, functions=(), c_names=(), modules=(), why: str = ""):
    """``call_candidate(candidate, *args)``, failing if it ran one of ``functions`` (Python functions),
    a C function or method named in ``c_names`` (``"topk"``) or code of a module in ``modules``
    (``"scipy.stats"``); ``why`` says what the exercise asks instead."""
    watcher = _Watcher(functions, c_names, modules)
    previous = sys.getprofile()
    sys.setprofile(watcher)
    try:
        result = call_candidate(candidate, *args)
    finally:
        sys.setprofile(previous)
    if watcher.seen is not None:
        raise AssertionError(f"your function uses {watcher.seen}{f': {why}' if why else ''}")
    return result
