"""Data-parallel training (torch.distributed, gloo on the CPU, 2 processes): same batches, same losses,
same memory bank on every rank, rank 0 alone writes, interruption on any rank, exact resume.

The two-process runs start real worker processes through torchrun's elastic launcher
(``memseg_lite.training.distributed.launch``); the workers import this module to find
:class:`ProbeTrainer`, which records what a test needs without writing into the run folder.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_config
from torch import nn

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.training.data import StepBatchSampler
from memseg_lite.training.distributed import (
    DistContext,
    GlobalBatchNorm2d,
    convert_sync_batchnorm,
    launch,
    launch_training,
    rank_device,
    state_digest,
)
from memseg_lite.training.trainer import Trainer, read_log

SIGNAL_AT = "MEMSEG_TEST_SIGNAL_AT"  # "RANK:STEP": that rank sends itself SIGINT during that step
GRADS_TO = "MEMSEG_TEST_GRADS_TO"  # rank 0 saves the step-1 gradients there (outside the run folder)


@pytest.fixture(autouse=True)
def _no_host_name_lookup(monkeypatch):
    """torch's elastic agent records this machine's fully qualified name in its events
    (``socket.getfqdn``: a resolver look-up, refused by the offline guard); the bare host name does."""
    import socket

    monkeypatch.setattr(socket, "getfqdn", lambda name="": name or socket.gethostname())


# --------------------------------------------------------------------------------------------
# Helpers the worker processes import
# --------------------------------------------------------------------------------------------
def write_guard(root: str):
    """An audit hook that raises ``PermissionError`` on any write under ``root`` while ``state["on"]``.

    Writes: ``open`` for writing (also ``os.open`` with write flags, as ``tempfile`` uses),
    renames / replaces, removals and temporary files. ``sys.addaudithook`` cannot be undone, so
    the hook is switched with ``state``.
    """
    root = os.path.realpath(root)
    state = {"on": True}

    def inside(path) -> bool:
        if isinstance(path, int):
            return False
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return full == root or full.startswith(root + os.sep)

    def hook(event: str, args: tuple) -> None:
        if not state["on"]:
            return
        if event == "open":
            path, mode, flags = args
            if mode is not None:
                writes = any(char in mode for char in "wax+")
            else:
                writes = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            targets = [path] if writes else []
        elif event == "os.rename":
            targets = list(args[:2])
        elif event in ("os.remove", "tempfile.mkstemp", "tempfile.mkdtemp", "shutil.rmtree"):
            targets = [args[0]]
        else:
            return
        for target in targets:
            if inside(target):
                raise PermissionError(f"write under the run folder from a rank that must not write: {event} {target}")

    return hook, state


class ProbeTrainer(Trainer):
    """A Trainer that, on request (environment variables), interrupts itself and records gradients.

    On every rank but 0 any write under the run folder raises (see :func:`write_guard`): a run
    that finishes proves rank 1 wrote nothing there.
    """

    def __init__(self, config, progress: bool = True, dist: DistContext | None = None):
        super().__init__(config, progress=progress, dist=dist)
        if not self.dist.is_main:
            hook, _ = write_guard(config.out_dir)
            sys.addaudithook(hook)

    def _optimisation_step(self, step_fn, optimizer, scheduler, images, masks):
        record = super()._optimisation_step(step_fn, optimizer, scheduler, images, masks)
        grads_to = os.environ.get(GRADS_TO)
        if grads_to and self.step == 1 and self.dist.is_main:
            grads = {name: p.grad.detach().clone() for name, p in self.model.named_parameters() if p.grad is not None}
            torch.save(grads, grads_to)
        signal_at = os.environ.get(SIGNAL_AT)
        if signal_at:
            rank, step = (int(value) for value in signal_at.split(":"))
            if self.dist.rank == rank and self.step == step:
                os.kill(os.getpid(), signal.SIGINT)
        return record


def batchnorm_worker(seed: int) -> dict:
    """One rank of a 2-process GlobalBatchNorm2d forward + backward on its half of a fixed batch."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        inputs, weights = _batchnorm_problem(seed)
        share = inputs.shape[0] // world
        local = inputs[rank * share : (rank + 1) * share].clone().requires_grad_(True)
        norm = GlobalBatchNorm2d(3)
        with torch.no_grad():
            norm.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
            norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        output = norm(local)
        # The global objective is the sum over ranks; its gradient w.r.t. the parameters is the sum too.
        (output * weights[rank * share : (rank + 1) * share]).sum().backward()
        for parameter in norm.parameters():
            dist.all_reduce(parameter.grad)
        return {"output": output.detach(), "input_grad": local.grad, "weight_grad": norm.weight.grad,
                "bias_grad": norm.bias.grad, "running_mean": norm.running_mean, "running_var": norm.running_var}
    finally:
        dist.destroy_process_group()


def _batchnorm_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(4, 3, 5, 6, generator=generator, dtype=torch.float64).float() * 3 + 1
    weights = torch.randn(4, 3, 5, 6, generator=generator)
    return inputs, weights


def _losses(run_dir) -> list[float]:
    return [record["loss"] for record in read_log(run_dir)[0]]


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


# --------------------------------------------------------------------------------------------
# Fast: the pieces, in one process
# --------------------------------------------------------------------------------------------
def test_rank_batches_together_are_the_single_process_batch():
    single = list(StepBatchSampler(20, 8, total_steps=5, seed=3, start_step=1))
    for world in (2, 4):
        shards = [list(StepBatchSampler(20, 8, total_steps=5, seed=3, start_step=1, rank=r, world_size=world))
                  for r in range(world)]
        for step, batch in enumerate(single):
            joined = [item for shard in shards for item in shard[step]]
            assert joined == batch, f"world {world}, step {step + 1}"
            assert all(len(shard[step]) == 8 // world for shard in shards)
    # A resumed rank draws the same batches as an uninterrupted one (pure function of seed and step).
    whole = list(StepBatchSampler(20, 8, total_steps=5, seed=3, rank=1, world_size=2))
    resumed = list(StepBatchSampler(20, 8, total_steps=5, seed=3, start_step=2, rank=1, world_size=2))
    assert resumed == whole[2:]


def test_uneven_split_and_bad_ranks_are_refused():
    with pytest.raises(ValueError, match="batch-size that is a multiple of 3"):
        StepBatchSampler(20, 8, total_steps=5, seed=0, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank must be in"):
        StepBatchSampler(20, 8, total_steps=5, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="multiple of 3"):
        launch_training(Trainer, tiny_config("data", "unused", batch_size=4), nproc=3)
    with pytest.raises(ValueError, match="nproc must be"):
        launch(print, 0)
    with pytest.raises(ValueError, match="every rank needs its own"):
        rank_device("cuda:1", local_rank=0)
    assert rank_device("cpu", 1) == torch.device("cpu")


def test_single_process_context_changes_nothing():
    context = DistContext()
    assert context.is_main and not context.active
    model = nn.Linear(2, 2)
    assert context.wrap_model(model, sync_batchnorm=True) is model
    assert isinstance(model, nn.Linear)
    assert context.any_rank(True) and not context.any_rank(False)
    record = {"loss": 0.5, "l1": 0.25, "step": 3}
    assert context.mean_record(record) == record
    assert context.agree(lambda: {"score": 0.75}) == {"score": 0.75} and context.validations == [{"score": 0.75}]
    assert context.build_once(lambda: model, restore=None) is model
    context.barrier()


def test_state_digest_sees_one_changed_value():
    state = {"a": torch.arange(6, dtype=torch.float32), "b": torch.tensor(3), "c": torch.zeros(0)}
    same = {name: tensor.clone() for name, tensor in state.items()}
    assert state_digest(state) == state_digest(same)
    same["a"][4] = float(np.nextafter(np.float32(4.0), np.float32(5.0)))  # one ulp
    assert state_digest(state) != state_digest(same)
    assert state_digest(state, prefix="b") == state_digest({"b": torch.tensor(3)})


def test_sync_batchnorm_replaces_only_the_trained_batch_norms():
    from memseg_lite.network.model import build_memseg

    model = build_memseg(torch.randn(2, 3, 64, 64), backbone_weights="none")
    keys = list(model.state_dict())
    frozen = [m for m in model.encoder.frozen_modules() for m in m.modules() if isinstance(m, nn.BatchNorm2d)]
    trained = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.BatchNorm2d) and m.weight.requires_grad]
    assert frozen and trained
    parameters = {id(p) for p in model.parameters()}
    replaced = convert_sync_batchnorm(model, torch.device("cpu"))
    assert replaced == len(trained)
    modules = dict(model.named_modules())
    assert all(type(modules[name]) is GlobalBatchNorm2d for name, _ in trained)
    assert all(type(m) is nn.BatchNorm2d for m in frozen), "the frozen encoder keeps its batch norm"
    assert {id(p) for p in model.parameters()} == parameters, "the optimiser's parameters are the same objects"
    assert list(model.state_dict()) == keys


def test_global_batchnorm_is_batchnorm_in_one_process():
    inputs, _ = _batchnorm_problem(0)
    plain, mine = nn.BatchNorm2d(3), GlobalBatchNorm2d(3)
    torch.testing.assert_close(mine(inputs), plain(inputs))
    torch.testing.assert_close(mine.running_var, plain.running_var)
    plain.eval(), mine.eval()
    torch.testing.assert_close(mine(inputs + 1), plain(inputs + 1))


def test_write_guard_catches_writes_under_the_folder(tmp_path):
    guarded, elsewhere = tmp_path / "run", tmp_path / "other"
    guarded.mkdir()
    elsewhere.mkdir()
    hook, state = write_guard(str(guarded))
    sys.addaudithook(hook)
    try:
        (elsewhere / "x.txt").write_text("fine")
        with pytest.raises(PermissionError, match="must not write"):
            (guarded / "log.jsonl").open("a")
        from memseg_lite.core.io import write_text_atomic

        with pytest.raises(PermissionError):
            write_text_atomic(guarded / "config.json", "{}")
        (elsewhere / "x.txt").read_text()
        list(guarded.iterdir())  # reading is allowed
    finally:
        state["on"] = False
    assert not any(guarded.iterdir())


# --------------------------------------------------------------------------------------------
# Slow: real worker processes (gloo)
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_global_batchnorm_over_two_processes_equals_batchnorm_on_the_whole_batch():
    ranks = launch(batchnorm_worker, 2, 0)
    inputs, weights = _batchnorm_problem(0)
    inputs.requires_grad_(True)
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    output = norm(inputs)
    (output * weights).sum().backward()
    tolerance = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(torch.cat([r["output"] for r in ranks]), output.detach(), **tolerance)
    torch.testing.assert_close(torch.cat([r["input_grad"] for r in ranks]), inputs.grad, **tolerance)
    for rank in ranks:
        torch.testing.assert_close(rank["weight_grad"], norm.weight.grad, **tolerance)
        torch.testing.assert_close(rank["bias_grad"], norm.bias.grad, **tolerance)
        torch.testing.assert_close(rank["running_mean"], norm.running_mean, **tolerance)
        torch.testing.assert_close(rank["running_var"], norm.running_var, **tolerance)


@pytest.fixture(scope="module")
def two_process_run(tiny_demo, tmp_path_factory):
    """An uninterrupted 2-process run (global batch 4, synchronised batch norm), rank 1 forbidden to write."""
    import socket

    base = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:  # module scope: the function-scoped fixtures are not active yet
        patch.setenv("MEMSEG_OFFLINE", "1")
        patch.setenv(GRADS_TO, str(base / "grads_two.pt"))
        patch.setattr(socket, "getfqdn", lambda name="": name or socket.gethostname())
        summaries = launch_training(ProbeTrainer, tiny_config(tiny_demo, base / "two", sync_batchnorm=True), 2,
                                    progress=False, threads=1)
    return base, summaries


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_the_global_batch(tiny_demo, two_process_run, monkeypatch):
    """Same batches, same gradients, same losses, up to the order of floating-point sums.

    The two processes see the two halves of each global batch; with synchronised batch norm
    every layer computes what one process computes on the whole batch, and DDP's averaged
    gradient is the whole batch's gradient. What differs is only the order of the sums (half
    batches, the all-reduce): the step-1 loss agrees to ~1e-7. The backward pass amplifies that
    rounding through batch norms over very few values (64 x 64 images: layer4 is 2 x 2 pixels),
    and AdamW turns each coordinate's gradient into about +-lr whatever its size. Measured here
    (sync BN, 1 thread per process): step-1 gradients differ by 1.07e-3 in relative norm, weights
    after 6 steps by 1.5 %; the SAME one-process run with 2 threads instead of 1 differs from
    itself by 1.05e-3 and 1.5 % (same cause, no data parallelism involved). The bounds below
    are those numbers with a margin; a wrong split (another batch) or a wrong gradient average
    (a factor 2) gives differences of order 1. Without synchronised batch norm each rank
    normalises with its half-batch statistics: a real, intended difference, not tested for equality.
    """
    base, summaries = two_process_run
    monkeypatch.setenv(GRADS_TO, str(base / "grads_one.pt"))
    torch.set_num_threads(1)
    ProbeTrainer(tiny_config(tiny_demo, base / "one", sync_batchnorm=True), progress=False).fit()

    assert [s["rank"] for s in summaries] == [0, 1] and all(s["step"] == 6 and not s["interrupted"] for s in summaries)
    one, two = _losses(base / "one"), _losses(base / "two")
    assert len(one) == len(two) == 6
    np.testing.assert_allclose(two[0], one[0], rtol=1e-6)  # step 1: the same batch through the same network
    np.testing.assert_allclose(two, one, rtol=0.05)
    grads_one = torch.load(base / "grads_one.pt", weights_only=True)
    grads_two = torch.load(base / "grads_two.pt", weights_only=True)
    assert grads_one.keys() == grads_two.keys() and len(grads_one) > 50
    names = sorted(grads_one)
    flat_one = torch.cat([grads_one[name].flatten() for name in names])
    flat_two = torch.cat([grads_two[name].flatten() for name in names])
    assert float((flat_two - flat_one).norm() / flat_one.norm()) < 5e-3
    for name in names:
        assert float((grads_two[name] - grads_one[name]).norm() / grads_one[name].norm()) < 2e-2, name
    weights_one, weights_two = _weights(base / "one"), _weights(base / "two")
    trained = [n for n in weights_one if n.startswith(("msff.", "decoder.", "encoder.layer4.")) and "running" not in n
               and weights_one[n].is_floating_point()]
    difference = torch.cat([(weights_two[n] - weights_one[n]).flatten() for n in trained])
    size = torch.cat([weights_one[n].flatten() for n in trained])
    assert float(difference.norm() / size.norm()) < 0.04
    for name in weights_one:  # the frozen encoder and the memory bank: bit for bit
        if not name.startswith(("msff.", "decoder.", "encoder.layer4.")):
            torch.testing.assert_close(weights_two[name], weights_one[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_memory_bank_and_validation_are_identical_on_both_ranks(tiny_demo, two_process_run):
    base, summaries = two_process_run
    rank0, rank1 = summaries
    torch.set_num_threads(1)  # as in the workers: the same summation order
    single = Trainer(tiny_config(tiny_demo, base / "unused"), progress=False)._build_model()
    assert rank0["memory_digest"] == rank1["memory_digest"] == state_digest(single.state_dict(), prefix="memory.")
    assert rank0["model_digest"] == rank1["model_digest"], "the final weights are the same on both ranks"
    def timeless(records):  # the seconds a validation took differ between processes; every number else must not
        return [{k: v for k, v in record.items() if k != "seconds"} for record in records]

    assert len(rank0["validations"]) == 2 and timeless(rank0["validations"]) == timeless(rank1["validations"])  # exact
    logged = read_log(base / "two")[1]
    assert [{k: r[k] for k in rank0["validations"][0]} for r in logged] == rank0["validations"]
    # Only rank 0 wrote (rank 1 ran under write_guard and finished); what rank 0 wrote is complete.
    for name in ("config.json", "split.json", "log.jsonl", "checkpoint.pt", "best.pt"):
        assert (base / "two" / name).is_file(), name


@pytest.mark.slow
def test_interrupted_on_rank_1_and_resumed_equals_uninterrupted(tiny_demo, two_process_run, monkeypatch):
    from memseg_lite.cli import main as cli

    base, _ = two_process_run
    run = base / "interrupted"
    monkeypatch.setenv(SIGNAL_AT, "1:2")  # Ctrl-C reaches rank 1 only, during step 2
    first = launch_training(ProbeTrainer, tiny_config(tiny_demo, run, sync_batchnorm=True), 2, progress=False,
                            threads=1)
    monkeypatch.delenv(SIGNAL_AT)
    assert [s["interrupted"] for s in first] == [True, True], "both ranks stop"
    assert first[0]["step"] == first[1]["step"] == 2
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2, "rank 0 saved at the step all ranks stopped"
    assert [r["step"] for r in read_log(run)[0]] == [1, 2]

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli(["train", "--out", str(run), "--resume", "--nproc", "2", "--no-progress"]) == 0
    assert _losses(run) == _losses(base / "two"), "the resumed run repeats the uninterrupted losses exactly"
    whole, resumed = _weights(base / "two"), _weights(run)
    for name, tensor in whole.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
