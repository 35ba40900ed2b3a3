"""Self-checks for the workbook's exercises: one module per chapter, ``chNN`` for notebook ``NN``.

Each module holds one function ``exercise_N(candidate, ...)`` per exercise of its notebook. It
builds its own seeded inputs (or takes the notebook objects it needs as explicit arguments), calls
the learner's ``candidate`` and raises ``AssertionError`` with a helpful message when the result is
wrong; a ``NotImplementedError`` from an untouched stub passes through, so
:func:`memseg_lite.teaching.exercises.check` reports "not attempted". A check never contains the
answer: it compares with stored digests of the worked solution's results (dict literals made by
:func:`memseg_lite.teaching.exercises.summarise`), with properties and invariants, or with an
independent construction. The worked solutions are in ``solutions/NN_topic_solutions.ipynb``.

Modules (only chapters with exercises have one):

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
