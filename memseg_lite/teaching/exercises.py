"""Self-checks for the notebook exercises.

An exercise cell calls :func:`check` with a function that asserts; the learner sees a green
pass line, or a "not solved yet" line with the reason, and the notebook keeps running either
way. The solutions at the end of each notebook call ``check(..., strict=True)``, so CI fails
if a published solution is wrong.
"""

from __future__ import annotations

from collections.abc import Callable


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
