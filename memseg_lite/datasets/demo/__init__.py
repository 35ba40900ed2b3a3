"""Procedural demo categories in the MVTec AD layout, so the workbook runs offline.

MVTec AD cannot be downloaded here, so three small "products" stand in for it:

- ``button``: an ivory button on a dark slate table (an *object* category, RGB): it moves, turns,
  catches the light from slightly different sides and varies a little in colour;
- ``wood``: a full-frame wooden surface (a *texture* category, RGB) with warped growth rings and
  fibres;
- ``mesh``: a woven wire mesh (a *texture* category, grey-level like MVTec's grid, screw and
  zipper), with jittered wires and uneven lighting.

Every image is rendered in two stages. The *albedo* is what the surface looks like under flat
light; the *capture* step multiplies it by a lighting field, adds camera noise and rounds to
8 bits. A defect only changes the albedo, inside its own antialiased footprint (its *coverage*),
and the capture step is shared, so the ``clean`` and defective ``image`` of a sample differ only
where the ground-truth mask says, plus at most a one-pixel antialiasing rim. The mask holds the
pixels whose centre lies inside the defect (coverage >= 0.5).

The defects are geometry: strokes, shaded pits, polar blobs, chipped edges, removed or displaced
wires. None is made the way MemSeg simulates anomalies for training (textures or shuffled
patches pasted through thresholded Perlin noise), so a model that does well here has learnt the
product, not the simulator.

Seeds: each image has its own ``numpy.random.SeedSequence`` derived from
``(seed, category, split, index)`` (see :func:`sample_seed`), so adding a category or changing
the counts leaves every other image byte-identical.

Modules: ``catalogue`` (categories, seeds), ``drawing`` (primitives), ``scenes`` (good images),
``defects`` (the defect types), ``render`` (one sample), ``writer`` (the data set on disk).
May import: ``memseg_lite.core``.
"""
