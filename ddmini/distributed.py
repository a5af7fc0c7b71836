"""More than one process: torch.distributed under ``torchrun`` (gloo on CPUs, NCCL on GPUs).

``torchrun --standalone --nproc-per-node N -m ddmini run ...`` starts N copies of the command; each finds
its rank in the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and
:func:`init` joins the group. Outside torchrun :func:`init` returns the one-process world and nothing
else changes. What each stage shares out, and why the result does not depend on the number of ranks:

- training (``ddmini.train``): every rank draws the whole global batch's random choices from the same
  generator and trains on its slice of it under DistributedDataParallel, so N ranks take exactly the
  samples one process takes; only the order of the gradient reduction differs;
- the attack stage (``ddmini.attacks.stage``): chunk i is attacked by rank i mod N, each chunk's
  randomness keyed by its first image, and rank 0 merges the chunk files: byte-identical output;
- sampling (``ddmini.diffusion``): batch b goes to rank b mod N, its noise keyed by b (the global
  position of its images), and rank 0 gathers the images: identical to one process's;
- the classifier trains on rank 0 first (the others then find it cached); evaluation and reports are
  rank 0's.

Byte-identity across world sizes holds for the same number of threads per process (torchrun sets
OMP_NUM_THREADS=1 unless it is set): a matrix product may round differently on another thread count.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: Seconds a rank waits in a collective (e.g. while rank 0 trains the classifier) before giving up.
TIMEOUT_ENV = "DDMINI_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among ``size`` processes, and its rank on this host."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def gather_to_main(self, obj) -> list | None:
        """Every rank's ``obj`` in rank order on rank 0; None on the others."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over ranks (in place; a no-op in one process)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.size
        return t

    def any(self, *flags: bool, device=None) -> list[bool]:
        """For each flag, True on every rank when it is true on any rank (one collective for all)."""
        if not self.distributed:
            return [bool(f) for f in flags]
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v > 0) for v in t.tolist()]

    def agree(self, error: str | None) -> None:
        """Collective check: raise ValueError on every rank if any rank passes an error message (the
        lowest such rank's message, naming the rank), so that all ranks stop together, none hangs."""
        errors = self.gather_objects(error)
        bad = [(r, e) for r, e in enumerate(errors) if e]
        if bad:
            r, e = bad[0]
            raise ValueError(e if not self.distributed else f"rank {r}: {e}")

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. trains and caches the classifier), then the others (which
        find it cached). An exception on rank 0 still releases the others, who then fail to find it."""
        if self.is_main:
            try:
                yield
            finally:
                self.barrier()
        else:
            self.barrier()
            yield


SINGLE = World()
_world = SINGLE


def launched() -> bool:
    """Whether this process was started by torchrun (or anything that sets the env:// variables)."""
    return _env_int("WORLD_SIZE", 1, lo=1) > 1


def _env_int(name: str, default: int, lo: int = 0, hi: int = 1 << 20) -> int:
    """The integer environment variable ``name`` (``default`` when unset), in [lo, hi]; one line otherwise."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer; got {text!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}]; got {v}")
    return v


def is_other_rank() -> bool:
    """Whether this process is a rank other than 0 of a valid torchrun launch (which leaves messages to rank 0)."""
    try:
        return launched() and launch_env()[0] != 0
    except ValueError:
        return False  # a broken launch: every process says why


def launch_env() -> tuple[int, int, int, float]:
    """(rank, world size, local rank, timeout in seconds) from torchrun's variables and DDMINI_DIST_TIMEOUT,
    checked: RANK and WORLD_SIZE both set, RANK < WORLD_SIZE, a finite positive timeout."""
    size = _env_int("WORLD_SIZE", 1, lo=1)
    if "RANK" not in os.environ:
        raise ValueError(f"WORLD_SIZE={size} is set but RANK is not: start the processes with torchrun")
    rank = _env_int("RANK", 0, hi=size - 1)
    local = _env_int("LOCAL_RANK", rank)
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        timeout = float(text)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and 0 < timeout <= 7 * 86400):
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds in (0, 604800]; got {text!r}")
    return rank, size, local, timeout


def current() -> World:
    """The world :func:`init` joined (the one-process world before that or outside torchrun)."""
    return _world


def init(device: torch.device) -> World:
    """Join the process group torchrun describes (gloo for a CPU device, NCCL for CUDA, each rank on its
    LOCAL_RANK's GPU); the one-process world when not launched so. Idempotent."""
    global _world
    if not launched():
        return SINGLE
    if dist.is_initialized():
        return _world
    rank, size, local, timeout = launch_env()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    try:
        dist.init_process_group(backend, rank=rank, world_size=size, timeout=datetime.timedelta(seconds=timeout))
    except Exception as e:  # a taken port, a missing peer, a timeout: torch's message carries C++ frames
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RuntimeError(f"rank {rank} of {size} could not join the process group at {where}: {first}") from None
    _world = World(rank, size, local)
    return _world


def device_for(device: torch.device, world: World) -> torch.device:
    """Under torchrun a CUDA device means this rank's own GPU (LOCAL_RANK)."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def shutdown() -> None:
    global _world
    if dist.is_initialized():
        dist.destroy_process_group()
    _world = SINGLE


def config_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_config(world: World, obj: dict) -> None:
    """Every rank must have been launched with the same settings: compare a digest of ``obj`` (a flat or
    nested dict of the command's options) across ranks; on a difference, one line naming the first
    setting that differs and its values on rank 0 and on the rank that differs (ValueError on all ranks)."""
    if not world.distributed:
        return
    digests = world.gather_objects(config_digest(obj))
    if len(set(digests)) == 1:
        return
    objs = world.gather_objects(obj)
    r = next(i for i, d in enumerate(digests) if d != digests[0])
    a, b = flatten(objs[0]), flatten(objs[r])
    key = next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), "?")
    raise ValueError(
        f"ranks were launched with different settings: {key} is {a.get(key)!r} on rank 0 but {b.get(key)!r} on rank {r}"
    )


def join(device: torch.device, settings: dict, run_dirs=()) -> tuple[World, torch.device]:
    """Under torchrun: join the process group, check that every rank was launched with the same
    ``settings`` and can write ``run_dirs`` (one line naming the difference or the rank, on every rank);
    returns (world, this rank's device). One process: the one-process world and ``device``."""
    from .checkpoint import writable_dir

    world = init(device)
    device = device_for(device, world)
    check_same_config(world, {**settings, "run_dirs": [str(d) for d in run_dirs]})
    if world.distributed:  # one process checks its outputs itself, as each command does
        err = None
        try:
            for d in run_dirs:
                writable_dir(d)
        except OSError as e:
            err = str(e)
        world.agree(err)
    return world, device


def flatten(d, prefix: str = "") -> dict:
    """A nested dict as one level with dotted keys."""
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def shares(n: int, world: World) -> list[int]:
    """The indices 0..n-1 this rank takes when work items are dealt round-robin (item i to rank i mod N)."""
    return list(range(world.rank, n, world.size))
