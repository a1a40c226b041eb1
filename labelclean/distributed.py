"""One cleaning run across processes: ``torchrun`` and torch.distributed.

``torchrun --nproc-per-node N -m labelclean run data/ --out cleaned/`` starts N
copies of the command; each reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``
from the environment torchrun sets and joins one process group (NCCL on GPUs,
gloo on CPUs) through :func:`setup`. Without those variables (or with
``WORLD_SIZE=1``) nothing here does anything and a run is the one-process run,
bit for bit.

Who does what (docs/distributed.md has the reasoning):

* every rank trains on its part of each *global* minibatch (the one-process
  run's batch of ``batch_size`` samples, strided over the ranks), and
  DistributedDataParallel averages the gradients, so an SGD step is the
  one-process step up to float summation order;
* the per-sample evaluation is split into contiguous blocks, one per rank, and
  the rows are gathered back (:func:`gather_rows`): every sample measured once
  per epoch, never a padding duplicate;
* rank 0 alone fits the mixtures, decides ``t_c``, probes the order parameters
  and writes the outputs; the other ranks wait for its stop decision
  (:func:`stop_together`), which every rank obeys in the same epoch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import LabelcleanError

#: Seconds a rank waits in a collective before giving up (environment override:
#: ``LABELCLEAN_DIST_TIMEOUT``). It bounds how long survivors of a dead rank hang
#: when nothing else stops them, so it must exceed the longest wait a healthy run
#: has: rank 0 decoding into the cache while the others wait, or one epoch's
#: decision and probe on rank 0.
DEFAULT_TIMEOUT_S = 1800
TIMEOUT_ENV = "LABELCLEAN_DIST_TIMEOUT"
#: The file ``labelclean run --nproc N`` gives rank 0 for its exit status: torchrun
#: reports any failed child as 1, so the launcher reads the status from there
#: (:func:`record_status`, :func:`relaunch`) and exits with it, as the one-process run would.
STATUS_ENV = "LABELCLEAN_STATUS_FILE"

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the run: its rank among ``world_size``.

    ``device`` is where collective tensors live (NCCL reduces CUDA tensors
    only); ``owns_group`` says :func:`setup` created the process group, so
    :func:`teardown` may destroy it.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


#: The one-process run.
SINGLE = Dist()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise LabelcleanError(f"{name}={value!r} is not an integer") from None


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE > 1``)."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_main_process() -> bool:
    """Rank 0 of a distributed run, or the only process: the one that writes outputs."""
    return _env_int("RANK", 0) == 0


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return float(DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise LabelcleanError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


def setup(device: str) -> tuple[Dist, str]:
    """Join the process group torchrun describes; ``(Dist, this rank's device)``.

    Outside torchrun: ``(SINGLE, device)`` unchanged. Under it, ``"auto"`` and
    ``"cuda"`` mean ``cuda:LOCAL_RANK`` with NCCL when CUDA is available,
    otherwise the CPU with gloo; a fixed ``cuda:N`` is refused, since every
    rank would then share one GPU.
    """
    if not launched():
        return SINGLE, device
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", rank)
    if device not in ("auto", "cpu", "cuda"):
        raise LabelcleanError(
            f"--device {device} under torchrun: each rank takes cuda:LOCAL_RANK; "
            "pass --device auto, cuda or cpu"
        )
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise LabelcleanError("CUDA was asked for but is not available")
        if local >= torch.cuda.device_count():
            raise LabelcleanError(
                f"rank {rank} has LOCAL_RANK {local} but this machine shows "
                f"{torch.cuda.device_count()} GPUs; start at most that many processes per node"
            )
        torch.cuda.set_device(local)
        where, backend = torch.device("cuda", local), "nccl"
    else:
        where, backend = torch.device("cpu"), "gloo"
    owns = not dist.is_initialized()
    if owns:
        try:
            # The timeout is what ends a rank whose peer died without torchrun noticing.
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
        except (ValueError, RuntimeError) as e:  # a launch without MASTER_ADDR, no rendezvous
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LabelcleanError(
                f"rank {rank} could not join the {backend} process group: {first}"
            ) from None
    elif dist.get_world_size() != world:
        raise LabelcleanError(
            f"the process group has {dist.get_world_size()} ranks, WORLD_SIZE says {world}"
        )
    return Dist(rank, world, local, where, owns), str(where)


def teardown(d: Dist) -> None:
    """Leave the process group :func:`setup` created (a caller's own is left alone)."""
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def node_first(d: Dist, load: Callable[[], T]) -> T:
    """``load()`` on each node's local rank 0 first, then on the node's other ranks.

    With a decode cache, the first call decodes into it and the others read
    (or memory-map) what it wrote, so a node decodes once, not once per rank.
    """
    if not d.enabled:
        return load()
    if d.local_rank == 0:
        out = load()
        dist.barrier()
        return out
    dist.barrier()
    return load()


def stop_together(d: Dist, stop: bool) -> bool:
    """Rank 0's ``stop``, on every rank (the others' argument is ignored)."""
    if not d.enabled:
        return stop
    flag = torch.tensor([1 if stop else 0], dtype=torch.int32, device=d.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def share(d: Dist, obj: T | None) -> T:
    """Rank 0's ``obj`` (a picklable object, its tensors on the CPU), on every rank."""
    if not d.enabled:
        return obj  # type: ignore[return-value]
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0, device=d.device if d.device.type == "cuda" else None)
    return box[0]  # type: ignore[return-value]


def all_reduce_sum(d: Dist, values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (in place; returned for chaining)."""
    if d.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)``: rank's contiguous block of ``n`` rows; the blocks tile ``0..n``
    exactly, sizes differing by at most one. Contiguous, so a memory-mapped
    input is read in long runs."""
    return rank * n // world_size, (rank + 1) * n // world_size


def gather_rows(d: Dist, values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Assemble an ``(n, k)`` table, on every rank, from each rank's rows.

    Each rank holds ``values[i]`` for sample ``index[i]``. Ranks may hold
    different numbers of rows: they are padded to the longest for the
    collective and the padding is dropped again, so no row is ever counted
    twice. Raises when the ranks' indices do not cover ``0..n-1`` exactly once
    (a sharding bug would otherwise duplicate or lose samples silently).
    """
    if not d.enabled:
        out = torch.full((n, values.shape[1]), float("nan"), device=values.device,
                         dtype=values.dtype)
        out[index.to(values.device)] = values
        return out
    values = values.to(d.device)
    index = index.to(d.device, torch.long)
    counts = [torch.zeros(1, dtype=torch.long, device=d.device) for _ in range(d.world_size)]
    dist.all_gather(counts, torch.tensor([len(index)], dtype=torch.long, device=d.device))
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    pad = longest - len(index)
    padded_v = torch.cat([values, values.new_zeros((pad, values.shape[1]))])
    padded_i = torch.cat([index, index.new_full((pad,), -1)])
    all_v = [torch.empty_like(padded_v) for _ in range(d.world_size)]
    all_i = [torch.empty_like(padded_i) for _ in range(d.world_size)]
    dist.all_gather(all_v, padded_v)
    dist.all_gather(all_i, padded_i)
    rows = torch.cat([v[:s] for v, s in zip(all_v, sizes, strict=True)])
    idx = torch.cat([i[:s] for i, s in zip(all_i, sizes, strict=True)])
    seen = torch.bincount(idx.clamp_min(0), minlength=n) if len(idx) else idx.new_zeros(n)
    if len(idx) != n or bool((idx < 0).any()) or bool((seen != 1).any()):
        raise RuntimeError(
            f"gathered {len(idx)} rows for {n} samples, not each exactly once (sharding bug)"
        )
    out = torch.empty((n, values.shape[1]), dtype=values.dtype, device=d.device)
    out[idx] = rows
    return out


def batch_sizes(n: int, batch_size: int, world_size: int = 1) -> list[int]:
    """The sizes of one epoch's global minibatches.

    A trailing batch too small to give every rank two samples is folded into
    the one before: a batch of one breaks batch norm in training mode. With
    one process that is exactly the historical rule (fold a batch of one).
    """
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if len(sizes) > 1 and sizes[-1] < 2 * world_size:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return sizes


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The command ``labelclean run --nproc N ...`` hands over to: torchrun on this
    machine (``--standalone``: a local rendezvous on a free port) running the
    same ``labelclean`` arguments, ``--nproc`` removed."""
    rest: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={int(nproc)}", "-m", "labelclean", *rest]


def record_status(status: int) -> bool:
    """On rank 0 of a job ``run --nproc`` started, leave the command's exit status for
    the launcher (:data:`STATUS_ENV`); True when it was recorded there. Elsewhere (one
    process, another rank, a torchrun started by hand) it does nothing."""
    path = os.environ.get(STATUS_ENV)
    if not path or not launched() or not is_main_process():
        return False
    with open(path, "w") as f:
        f.write(f"{int(status)}\n")
    return True


def relaunch(nproc: int, args: Sequence[str]) -> int:
    """Run :func:`torchrun_command` and return the command's exit status: the one rank 0
    recorded (:func:`record_status`: 3 for a withheld run, 2 for bad input), else
    torchrun's own (a recorded 0 never hides a failed rank)."""
    fd, path = tempfile.mkstemp(prefix="labelclean-status-")
    os.close(fd)
    try:
        code = subprocess.call(torchrun_command(nproc, args), env={**os.environ, STATUS_ENV: path})
        with open(path) as f:
            recorded = f.read().strip()
    finally:
        os.unlink(path)
    if recorded and int(recorded) != 0:
        return int(recorded)
    return code
