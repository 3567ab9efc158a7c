"""Data-parallel runs on PyTorch's own stack: ``torchrun`` launches, ``torch.distributed`` talks (NCCL on
GPUs, gloo on CPUs), and the student step (``fastcae.steps``) averages the processes' gradients with one
all-reduce, as DistributedDataParallel would, outside the compiled graphs.

``World`` is the one object the rest of fastcae asks "who am I, how many are we"; a single process is a world
of one, where every collective below is the identity and costs nothing, so the loop reads the same either
way. ``join()`` is what ``distill`` calls first: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) it
starts the process group if the user's script has not, so ``distill(...)`` in a torchrun-launched script
needs no new arguments.

What each rank does (the reasoning is in docs/distributed.md):

- synthesis: its own generator, seeded per rank (``rank_seed``), and its own slice of the global class-
  balanced batch: the ranks' slices together are exactly the one-process batch;
- its own pool of what it synthesised, sampled for its share of the global student batch;
- the plan, the stopping decision and the re-sizing are made once (rank 0, or a vote) and shared, so every
  rank runs the same number of steps and the collectives never wait on a rank that left.

A bottom module: it imports nothing else of fastcae.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that prints, evaluates and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # --- collectives (the identity in a world of one) -------------------------------------------------
    def broadcast(self, obj, src: int = 0):
        """``obj`` as rank ``src`` has it, on every rank (any picklable object; tensors travel on the CPU)."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def decide(self, fn):
        """``fn()`` run on rank 0 only; every rank returns its result, or raises its exception (so a refusal
        on rank 0, such as a budget too small, ends every rank with the same message instead of a hang)."""
        if not self.distributed:
            return fn()
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except Exception as err:  # noqa: BLE001 - re-raised on every rank below
                error = err
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank: a decision all ranks act on at the same step."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t.item()) / self.size

    def gather(self, obj) -> list | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def scatter(self, objs: list | None):
        """Rank ``r`` gets ``objs[r]`` from rank 0's list (the other ranks pass None)."""
        if not self.distributed:
            return objs[0]
        box = [None]
        dist.scatter_object_list(box, objs if self.main else None, src=0)
        return box[0]

    def average_gradients(self, params) -> None:
        """Each parameter's ``.grad`` becomes its mean over the processes, in place: one all-reduce of all of
        them flattened into one buffer (DDP's arithmetic for one bucket). Every process must hold the same
        parameters with gradients, as the student step guarantees (the same graph on every process)."""
        if not self.distributed:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def share_tensors(self, tensors) -> None:
        """Overwrite ``tensors`` (in place) with rank 0's values: the student and head at the start, their
        BatchNorm buffers (which each process updates from its own batches) at the end."""
        if self.distributed:
            with torch.no_grad():  # parameters are leaves that require gradients: overwrite them as data
                for t in tensors:
                    dist.broadcast(t.data, src=0)

    @contextlib.contextmanager
    def main_first(self):
        """The block runs on rank 0 first, then on the others (rank 0 fills a cache that the others read)."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo CPU ones
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def current() -> World:
    """The world as ``torch.distributed`` sees it now (a world of one when no process group is running)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return World(dist.get_rank(), dist.get_world_size(), local)
    return World()


def backend() -> str:
    """The running process group's backend ("nccl", "gloo"), or "none"."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else "none"


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets the same variables) as one
    of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_type: str) -> World:
    """Start the process group if a launcher asked for one and nobody started it yet: NCCL when the run is on
    CUDA, gloo otherwise. Returns the world (of one, outside torchrun). A group started here is closed when
    the process exits."""
    if launched() and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        store, rank, size = next(dist.rendezvous("env://"))
        # torchrun keeps one store across the restarts of a job: a restarted process could read the addresses
        # that the processes of the attempt before it left there and wait on a peer that is gone (gloo:
        # "connectFullMesh failed ... Connection refused"). Each attempt gets keys of its own.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"fastcae/attempt-{attempt}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=size)
        atexit.register(_close)
    return current()


def _close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def node_gpus(device: torch.device) -> list[int]:
    """The indices of the GPUs this node's processes run on: under torchrun one per local process
    (``cuda:LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` of them), else the run's own device."""
    device = torch.device(device)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cuda" and launched() and local > 1:
        return list(range(local))
    return [device.index or 0]


def to_cpu(obj):
    """``obj`` with every tensor in it (in dicts, lists and tuples) moved to the CPU: what object collectives
    and checkpoints carry, whatever device the run is on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself on rank 0 (a one-process run is unchanged),
    distinct, far-apart values elsewhere, so no two ranks draw the same noise or the same generators."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7_919_993) % (2**31 - 1)


def local_share(total: int, world: World, what: str) -> int:
    """``total / world.size``, the per-rank share of a global batch; a clear error when it does not divide (the
    global batch is what the config fixes, so that results do not depend on the number of ranks)."""
    if total % world.size:
        raise ValueError(f"{what}={total} does not divide among {world.size} processes: use a multiple of "
                         f"{world.size} (the config's batch sizes are global; each process takes an equal share)")
    return total // world.size
