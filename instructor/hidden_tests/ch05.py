"""Hidden tests for notebook 05: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch05

DATA_ROOT = "../data/demo"
TITLES = {1: 'bilinear upsampling', 2: 'max over channels', 3: 'a coarse level vetoes the finer ones'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(upsample2x):
    """bilinear upsampling."""
    ch05.exercise_1(upsample2x)


def exercise_2(attention_with_max):
    """max over channels."""
    ch05.exercise_2(attention_with_max)


def exercise_3(maps_with_top_half_vetoed):
    """a coarse level vetoes the finer ones."""
    ch05.exercise_3(maps_with_top_half_vetoed)


# The assignment track: the core piece the student writes (assignments/05_spatial_attention_assignment.ipynb).
CORE_TITLES = {1: "the attention cascade"}
CORE_POINTS = {1: 2}


def core_1(attention_cascade):
    """M_3 = D_3, M_l = D_l * Up(M_{l+1}), with bilinear half-pixel upsampling (the decoder's), on uneven sizes."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(51)
    means = [torch.rand(2, 1, h, w, generator=generator) + 0.1 for h, w in ((20, 12), (10, 6), (5, 3))]
    got = attention_cascade(means)
    assert len(got) == 3, f"{len(got)} maps, expected 3 (M_1, M_2, M_3, finest first)"
    expected = [means[2]]
    for level in (1, 0):  # from the coarsest level down
        up = F.interpolate(expected[0], size=means[level].shape[-2:], mode="bilinear", align_corners=False)
        expected.insert(0, means[level] * up)
    for level, (mine, reference) in enumerate(zip(got, expected, strict=True), start=1):
        mine = torch.as_tensor(mine)
        assert tuple(mine.shape) == tuple(reference.shape), f"M_{level} has shape {tuple(mine.shape)}"
        assert torch.allclose(mine, reference, atol=1e-6), f"M_{level} is wrong"
