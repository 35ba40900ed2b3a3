"""Self-checks for the workbook's exercises: one module per chapter, ``chNN`` for notebook ``NN``.

Each module holds one function ``exercise_N(candidate, ...)`` per exercise of its notebook. It
builds its own seeded inputs (or takes the notebook objects it needs as explicit arguments), calls
the learner's ``candidate`` and raises ``AssertionError`` with a helpful message when the result is
wrong; a ``NotImplementedError`` from an untouched stub passes through, so
:func:`memseg_lite.teaching.exercises.check` reports "not attempted". A check never contains the
answer: it compares with stored digests of the worked solution's results (dict literals made by
:func:`memseg_lite.teaching.exercises.summarise`), with properties and invariants, or with an
independent construction. The worked solutions are in ``solutions/NN_topic_solutions.ipynb``.

Every ``exercise_N`` is wrapped in :func:`memseg_lite.teaching.checks.support.robust` and calls the
candidate only through :func:`memseg_lite.teaching.exercises.call_candidate` (or
:func:`~memseg_lite.teaching.checks.support.call_avoiding`), so an error in the learner's function,
or a result of an unexpected type, is a failed check with its reason and never stops the notebook.
Expected single numbers are stored sealed (a hash, :class:`~memseg_lite.teaching.checks.support.Sealed`),
so printing a module's constants does not show them, and no failure message shows an expected value.

Modules (only chapters with exercises have one):

- ``support``: what the chapters share (:func:`~memseg_lite.teaching.checks.support.robust`, sealed
  numbers, :func:`~memseg_lite.teaching.checks.support.call_avoiding`, which fails a function that
  uses the package function or library the exercise asks to do without).

- ``ch00``: notebook 00, the overview (defective pixels, object fraction, the blend by hand).
- ``ch01``: notebook 01, Perlin noise (fade curve, noise, masks).
- ``ch02``: notebook 02, foreground masks (thresholds, Otsu).
- ``ch03``: notebook 03, the anomaly simulation (blend, structure noise).
- ``ch04``: notebook 04, the memory pool (difference information, selection rules).
- ``ch05`` .. ``ch09``: notebooks 05-09 (spatial attention, MSFF, decoder and losses, training,
  evaluation).
- ``ch10``: notebook 10, your own product (normalised scores, an F1-optimal threshold, a letterboxed
  map back to the photo).
- ``ch11``: notebook 11, the ablations (Welch's t over seeds, the paired per-seed difference).

May import: every stage (core .. training), and :mod:`memseg_lite.teaching.exercises`.
"""
