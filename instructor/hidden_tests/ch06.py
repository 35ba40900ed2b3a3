"""Hidden tests for notebook 06: the grader calls each ``exercise_N`` with the student's functions, by parameter name.

Instructor material: never part of the handout. ``DATA_ROOT`` is set by the grader (the working copy's demo data).
"""

from memseg_lite.teaching.checks import ch06

DATA_ROOT = "../data/demo"
TITLES = {1: 'squeeze-and-excitation gate', 2: 'top-down fusion', 3: 'energy inside the anomaly'}
POINTS = {1: 1, 2: 1, 3: 1}


def exercise_1(se_gate):
    """squeeze-and-excitation gate."""
    ch06.exercise_1(se_gate)


def exercise_2(fuse):
    """top-down fusion."""
    ch06.exercise_2(fuse)


def exercise_3(energy_inside_mask):
    """energy inside the anomaly."""
    ch06.exercise_3(energy_inside_mask)


# The assignment track: the core piece the student writes (assignments/06_msff_assignment.ipynb).
CORE_TITLES = {1: "coordinate attention (the row and column gates)"}
CORE_POINTS = {1: 2}


def core_1(coordinate_gates):
    """The gates of a trained-looking block (random weights, non-trivial BN statistics), written out with einsum."""
    import torch

    from memseg_lite.network.attention import CoordinateAttention

    torch.manual_seed(61)
    module = CoordinateAttention(24, reduction=2, min_hidden=8)  # hidden 12
    with torch.no_grad():
        module.norm.running_mean.uniform_(-0.5, 0.5)
        module.norm.running_var.uniform_(0.5, 2.0)
        module.norm.weight.uniform_(0.5, 1.5)
        module.norm.bias.uniform_(-0.3, 0.3)
    module.eval()
    x = torch.randn(2, 24, 6, 9)
    with torch.no_grad():
        got_h, got_w = coordinate_gates(module, x)
        rows, columns = x.mean(dim=3), x.mean(dim=2)  # [B, C, H], [B, C, W]
        norm = module.norm

        def shared(z):  # 1x1 conv without bias, eval-mode BN, hard-swish
            y = torch.einsum("kc,bcn->bkn", module.shared.weight[:, :, 0, 0], z)
            y = (y - norm.running_mean[:, None]) / torch.sqrt(norm.running_var[:, None] + norm.eps)
            y = y * norm.weight[:, None] + norm.bias[:, None]
            return y * torch.clamp(y + 3, 0, 6) / 6

        def gate(conv, f):
            return torch.sigmoid(torch.einsum("ck,bkn->bcn", conv.weight[:, :, 0, 0], f) + conv.bias[:, None])

        expected_h = gate(module.conv_h, shared(rows))[..., None]  # [B, C, H, 1]
        expected_w = gate(module.conv_w, shared(columns))[:, :, None, :]  # [B, C, 1, W]
    for name, got, expected in (("g_h", got_h, expected_h), ("g_w", got_w, expected_w)):
        got = torch.as_tensor(got)
        assert got.shape == expected.shape, f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        assert torch.allclose(got, expected, atol=1e-5), f"{name} is wrong"
