"""Data-parallel training over several processes (``torch.distributed``, DistributedDataParallel).

One process per device ("rank"); every rank holds the whole model and trains on its share of
each global batch; the gradients are averaged across ranks after every backward pass, so all
ranks keep identical weights. What this module adds to PyTorch's own machinery:

- :class:`DistContext`: rank / world helpers the trainer calls unconditionally; in a single
  process every method is a no-op, so the trainer has one code path;
- :func:`init_distributed` / :func:`teardown`: the process group from the environment torchrun
  sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); NCCL on CUDA,
  gloo on the CPU;
- :meth:`DistContext.build_once`: the model and its memory bank are built on rank 0 only and
  broadcast; :meth:`DistContext.check_identical` compares a digest of every weight and buffer
  on all ranks and stops with an error if one differs;
- :meth:`DistContext.wrap_model`: DistributedDataParallel (the memory bank is left out of
  DDP's per-step buffer broadcast: it never changes), optionally with synchronised batch norm in
  the trained parts (:func:`convert_sync_batchnorm`; PyTorch's ``SyncBatchNorm`` on CUDA, the
  differentiable all-reduce of :class:`GlobalBatchNorm2d` on the CPU, where PyTorch's has no kernel);
- :meth:`DistContext.any_rank`: the stop flag (Ctrl-C / SIGTERM on any rank) all-reduced each
  step, so every rank stops after the same step and rank 0 saves once;
- :func:`launch` / :func:`launch_training`: ``memseg-lite train --nproc N`` starts N local
  workers through torchrun's elastic launcher (the same agent ``torchrun`` runs).

The step batch sampler (:class:`memseg_lite.training.data.StepBatchSampler`) draws each step's
global batch from ``(seed, step)`` exactly as in one process and gives rank ``r`` the
``r``-th contiguous slice, so the union of the ranks' batches is the single-process batch and
``--resume`` stays exact.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import signal
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from memseg_lite.core.runtime import auto_device_setting
from memseg_lite.training.config import TrainConfig
from memseg_lite.training.data import StepBatchSampler

# Buffers that never change during training and must not be broadcast by DDP every step.
STATIC_BUFFER_PREFIXES = ("memory.",)
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------
def launched_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets; ``(0, 1, 0)`` outside it."""

    def number(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError as error:
            raise ValueError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from error

    rank, world, local = number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def under_torchrun() -> bool:
    """True inside a worker started by torchrun (or :func:`launch`) with more than one process."""
    return launched_world()[1] > 1


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(requested: str, local_rank: int) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is requested (or "auto" finds it), else the CPU.

    An explicit ``cuda:N`` is not allowed with several ranks (each rank takes its own GPU).
    ``"auto"`` follows ``MEMSEG_DEVICE`` when it is set (:func:`memseg_lite.core.runtime.auto_device_setting`).
    """
    if requested == "auto":
        requested = auto_device_setting()
    if requested.startswith("cuda:"):
        raise ValueError(
            f"device={requested!r} names one GPU, but every rank needs its own; use device='cuda' or 'auto' "
            "(rank r takes cuda:LOCAL_RANK), or restrict the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"LOCAL_RANK={local_rank} but only {count} GPU(s) are visible; start at most {count} "
                             "processes per machine (--nproc / --nproc_per_node)")
        return torch.device("cuda", local_rank)
    if requested == "cuda":
        raise ValueError("device='cuda' was requested but CUDA is not available here; use device='auto' or 'cpu'")
    if requested == "mps":
        raise ValueError("data-parallel training does not support MPS; use device='cpu' (gloo) or CUDA GPUs")
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Digests: are two ranks' tensors the same, bit for bit?
# --------------------------------------------------------------------------------------------
def state_digest(tensors: dict[str, torch.Tensor], prefix: str = "") -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors`` (keys starting with ``prefix``)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        if not name.startswith(prefix):
            continue
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Synchronised batch norm
# --------------------------------------------------------------------------------------------
class _SumOverRanks(torch.autograd.Function):
    """``y = sum over ranks of x`` (every rank gets ``y``); backward: the same sum of the gradients.

    Each rank's loss depends on ``y``, so ``x`` on rank ``r`` affects every rank's loss: its
    gradient is the sum of all ranks' gradients with respect to ``y``.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch over all ranks.

    Mean and variance are computed in two passes, each an all-reduce that autograd
    differentiates (:class:`_SumOverRanks`): with equal local batches
    the forward and backward pass equal those of ``nn.BatchNorm2d`` on the concatenated batch.
    Works with gloo on the CPU (PyTorch's ``SyncBatchNorm`` needs a GPU); in eval mode, or in one
    process, it is plain ``BatchNorm2d``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        all_reduce = _SumOverRanks.apply
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = (0, 2, 3)
        local_count = input.numel() // channels
        counted = torch.tensor([float(local_count)], dtype=input.dtype, device=input.device)
        first = all_reduce(torch.cat([input.sum(dims), counted]))
        count = first[channels]
        mean = first[:channels] / count
        centred = input - mean.view(1, -1, 1, 1)
        variance = all_reduce(centred.square().sum(dims)) / count  # biased, as batch norm normalises
        output = centred * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if self.affine:
            output = output * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                total = float(count)
                unbiased = variance.detach() * (total / max(total - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return output


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> int:
    """Replace, in place, every ``BatchNorm2d`` with trainable weights by a synchronised one.

    The frozen encoder's batch norms (eval mode, no gradients) stay as they are. The new modules
    share the old ones' parameters and buffers (the optimiser and ``state_dict`` keys are
    unchanged). CUDA: ``torch.nn.SyncBatchNorm``; elsewhere :class:`GlobalBatchNorm2d`.
    Returns the number of modules replaced.
    """
    factory = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm2d
    replaced = 0
    for name, child in list(module.named_children()):
        trainable = type(child) is nn.BatchNorm2d and child.weight is not None and child.weight.requires_grad
        if trainable:
            new = factory(child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                          track_running_stats=child.track_running_stats)
            new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
            replaced += 1
        else:
            replaced += convert_sync_batchnorm(child, device)
    return replaced


# --------------------------------------------------------------------------------------------
# The context the trainer talks to
# --------------------------------------------------------------------------------------------
class DistContext:
    """Rank and world of this process, and the collective steps the trainer needs.

    ``DistContext()`` is the single-process context: rank 0 of 1, every method a no-op (or the
    identity), so ``Trainer`` code reads the same with and without data parallelism.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 device: torch.device | None = None, backend: str | None = None):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device if device is not None else torch.device("cpu")
        self.backend = backend
        self.validations: list[dict] = []  # this rank's own validation results (see agree)
        self.memory_digest: str | None = None  # the memory bank checked identical on every rank

    def __repr__(self) -> str:
        return f"DistContext(rank={self.rank}, world_size={self.world_size}, backend={self.backend})"

    @property
    def active(self) -> bool:
        """More than one process: collectives are real."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files, logs and shows progress."""
        return self.rank == 0

    # ---- collectives ---------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (one all-reduce of one number)."""
        if not self.active:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean_record(self, record: dict, keys: Sequence[str] = ("loss", "l1", "focal")) -> dict:
        """``record`` with ``keys`` averaged over the ranks: the loss of the global batch.

        With equal local batches and per-element mean losses, the mean of the ranks' losses is
        the single-process loss of the whole batch.
        """
        if not self.active:
            return record
        present = [key for key in keys if key in record]
        values = torch.tensor([float(record[key]) for key in present], dtype=torch.float64 if self.backend == "gloo"
                              else torch.float32, device=self.device)
        dist.all_reduce(values)
        return {
            **record,
            **{key: float(value) / self.world_size for key, value in zip(present, values.tolist(), strict=True)},
        }

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (pickled; for small objects and the initial model)."""
        if not self.active:
            return value
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0, device=self.device if self.backend == "nccl" else None)
        return holder[0]

    def gather_object(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    # ---- the model ----------------------------------------------------------------------------
    def build_once(self, build: Callable[[], nn.Module], restore: Callable[[dict], nn.Module]) -> nn.Module:
        """The model built by ``build()`` on rank 0 only and sent to every rank.

        The other ranks receive ``{"model_config", "model"}`` and rebuild it with ``restore``;
        then :meth:`check_identical` proves the memory bank and all weights equal everywhere.
        """
        if not self.active:
            return build()
        model = build() if self.is_main else None
        payload = None
        if self.is_main:
            payload = {"model_config": model.config(),
                       "model": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}}
        payload = self.broadcast_object(payload)
        if not self.is_main:
            model = restore(payload)
        self.check_identical(model, "model (weights and memory bank) after building it on rank 0")
        return model

    def check_identical(self, model: nn.Module, what: str = "model") -> str:
        """Digest of ``model``'s state on this rank; raises ``RuntimeError`` if any rank's differs."""
        state = model.state_dict()
        digest = state_digest(state)
        self.memory_digest = state_digest(state, prefix=STATIC_BUFFER_PREFIXES[0])
        digests = self.gather_object(digest)
        if len(set(digests)) > 1:
            different = [rank for rank, value in enumerate(digests) if value != digests[0]]
            raise RuntimeError(
                f"{what} differs between ranks: ranks {different} do not match rank 0. Every rank must read the "
                "same data folder and the same checkpoint; check that the run folder and --data-root are on a "
                "file system all machines share"
            )
        return digest

    def wrap_model(self, model: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
        """The model to step with: itself in one process, else DistributedDataParallel around it.

        The model's state is checked identical first (a resumed run loads the checkpoint on every
        rank). ``sync_batchnorm``: batch norm in the trained parts uses the global batch's statistics.
        """
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        self.check_identical(model, "model (weights and memory bank) before data-parallel training")
        if sync_batchnorm:
            convert_sync_batchnorm(model, self.device)
        static = [name for name, _ in model.named_buffers() if name.startswith(STATIC_BUFFER_PREFIXES)]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, static)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers (batch-norm statistics) are sent from rank 0 at every forward pass (DDP's default).
        return DistributedDataParallel(model, device_ids=device_ids)

    def agree(self, run: Callable[[], dict], model: nn.Module | None = None) -> dict:
        """Run ``run()`` (validation) on every rank, with rank 0's batch-norm statistics; rank 0's result everywhere.

        Without synchronised batch norm, each rank's running statistics also saw its own last
        local batch; they are first replaced by rank 0's (which its checkpoint holds), so every
        rank validates the same model. Each rank's own result is kept in ``self.validations``;
        the one returned (and used to keep the best model) is rank 0's on every rank.
        """
        if not self.active:
            result = run()
            self.validations.append(dict(result))
            return result
        if model is not None:
            with torch.no_grad():
                for name, buffer in model.named_buffers():
                    if not name.startswith(STATIC_BUFFER_PREFIXES):
                        dist.broadcast(buffer, src=0)
        result = run()
        self.validations.append(dict(result))
        return self.broadcast_object(dict(result))


# --------------------------------------------------------------------------------------------
# Process group
# --------------------------------------------------------------------------------------------
def init_distributed(device: str = "auto", timeout: datetime.timedelta = DEFAULT_TIMEOUT,
                     threads: int | None = None) -> DistContext:
    """The context of this process; with more than one rank, joins the process group torchrun prepared.

    ``threads``: CPU threads per rank (default: ``OMP_NUM_THREADS``, else the machine's cores shared
    evenly by the local ranks).
    """
    rank, world, local_rank = launched_world()
    if world == 1:
        return DistContext()
    target = rank_device(device, local_rank)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if target.type == "cpu":
        threads = threads or _positive_int(os.environ.get("OMP_NUM_THREADS"))
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // max(1, local_world)))
    else:
        torch.cuda.set_device(target)
    backend = backend_for(target)
    if not dist.is_initialized():
        options = {"device_id": target} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout, **options)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=target, backend=backend)


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value) if value else 0
    except ValueError:
        return None
    return number if number > 0 else None


def teardown(context: DistContext) -> None:
    """Leave the process group (after a last barrier so no rank exits while others still talk)."""
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Launching local workers with torchrun's elastic agent
# --------------------------------------------------------------------------------------------
def launch(function: Callable[..., Any], nproc: int, *args: Any, max_restarts: int = 0) -> list[Any]:
    """Run ``function(*args)`` in ``nproc`` new processes on this machine, as ``torchrun --standalone`` would.

    The processes get torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...);
    ``function`` must be importable (defined at module level). Returns the return values in rank
    order. A worker that fails makes the agent stop the others and raise ``ChildFailedError``.
    """
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be an integer >= 1, got {nproc!r}")
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=max_restarts, monitor_interval=0.2, start_method="spawn",
        local_addr="localhost",  # one machine: no look-up of this host's name
        # Ctrl-C reaches the workers directly (same terminal): each finishes its step and rank 0 saves.
        # The agent must not also answer it with SIGTERM, which the workers would take as "abort now".
        signals_to_handle="SIGTERM,SIGHUP,SIGQUIT",
    )
    from torch.distributed.elastic.multiprocessing.api import SignalException

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _note_interrupt) if main_thread else None
    try:
        results = elastic_launch(config, function)(*args)
    except SignalException as error:
        # The agent passed the signal on to the workers (SIGTERM) and waited for them to save and exit.
        name = signal.Signals(error.sigval).name
        raise LaunchStopped(name, f"stopped by {name}: the workers saved a checkpoint at the step they had "
                                  "reached; continue with --resume") from None
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
    return [results[rank] for rank in sorted(results)]


class LaunchStopped(RuntimeError):
    """The launcher itself got SIGTERM (or SIGHUP / SIGQUIT) and stopped its workers (they saved first)."""

    def __init__(self, signal_name: str, message: str):
        super().__init__(message)
        self.signal_name = signal_name


def _note_interrupt(signum, frame) -> None:
    print("\nCtrl-C: the workers finish their step, rank 0 saves a checkpoint, then all stop", flush=True)


def fit_on_rank(trainer_class: type, config_dict: dict, resume: bool = False, stop_after: int | None = None,
                progress: bool = True, threads: int | None = None, restart: bool = False) -> dict:
    """One rank's share of a data-parallel run: join the group, train, leave; returns what this rank saw.

    ``trainer_class`` is :class:`memseg_lite.training.trainer.Trainer` (or a subclass); it is passed
    in rather than imported because the trainer imports this module.
    """
    config = TrainConfig.from_dict(config_dict)
    context = init_distributed(config.device, threads=threads)
    try:
        if context.active:
            config.device = str(context.device)
        trainer = trainer_class(config, progress=progress and context.is_main, dist=context)
        result = trainer.fit(resume=resume, stop_after=stop_after, restart=restart)
        context.barrier()
        return {
            "rank": context.rank,
            "world_size": context.world_size,
            "step": result.step,
            "interrupted": result.interrupted,
            "stop_signal": getattr(result, "stop_signal", None),
            "seconds": result.seconds,
            "memory_digest": context.memory_digest,
            "model_digest": state_digest(trainer.model.state_dict()),
            "validations": context.validations,
            "out_dir": str(result.out_dir),
        }
    finally:
        teardown(context)


def launch_training(trainer_class: type, config: TrainConfig, nproc: int, resume: bool = False,
                    stop_after: int | None = None, progress: bool = True, threads: int | None = None,
                    restart: bool = False) -> list[dict]:
    """Train ``config`` with ``nproc`` local processes (``memseg-lite train --nproc N``); per-rank summaries.

    ``nproc`` must divide ``config.batch_size`` (the global batch). On CUDA, one GPU per process.
    """
    StepBatchSampler(1, config.batch_size, 1, config.seed, rank=0, world_size=nproc)  # fails early on a bad split
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and config.device in ("auto", "cuda") else 0
    if gpus and nproc > gpus:
        raise ValueError(f"--nproc {nproc} but only {gpus} GPU(s) are visible; use at most one process per GPU")
    return launch(fit_on_rank, nproc, trainer_class, config.to_dict(), resume, stop_after, progress, threads, restart)
