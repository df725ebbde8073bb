"""Training on several processes (PyTorch DDP): a torchrun launch read from its environment, the process group,
and the few collectives the trainer needs.

    torchrun --nproc_per_node 2 -m mail_policy_node.cli train CONFIG.yaml train.device=cuda   # 2 GPUs, NCCL
    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 -m mail_policy_node.cli train CONFIG.yaml   # 2 CPU, gloo

torchrun starts one process per device and tells each one who it is through RANK, WORLD_SIZE and LOCAL_RANK
(MASTER_ADDR / MASTER_PORT say where they meet). Without those variables, or with WORLD_SIZE 1, nothing is
initialised: rank 0 of 1, every collective here is a no-op and `mail-il train` runs exactly as one process.

Backend: NCCL when train.device is cuda (each rank on cuda:LOCAL_RANK, whatever index train.device names),
gloo on the CPU. The process group is set up once per process (`setup` is idempotent) and torn down by
`shutdown`, which the train command calls when it ends.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import ConfigError

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the launch: rank ``rank`` of ``world_size`` (``local_rank`` on its host).
    The default is the single process of a plain launch."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there are other processes to agree with (and a process group to do it through)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates, writes checkpoints, logs and prints."""
        return self.rank == 0

    def describe(self) -> str:
        """``rank 1/2`` (for messages that every rank prints), empty for a single process."""
        return f"rank {self.rank}/{self.world_size}" if self.enabled else ""

    def barrier(self) -> None:
        """Wait until every rank got here (no-op for one process)."""
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks, in place and returned (unchanged for one process). On NCCL the
        tensor must live on this rank's GPU."""
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values


def launch_from_env(env: Mapping[str, str] | None = None) -> Distributed:
    """This process's place in a torchrun launch, from RANK, WORLD_SIZE and LOCAL_RANK; a single process
    when WORLD_SIZE is unset or 1. Values that do not fit together are a ConfigError naming them (a half-set
    environment would otherwise hang at the first collective)."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    if world <= 1:
        return Distributed()
    rank = _env_int(env, "RANK", None)
    local = _env_int(env, "LOCAL_RANK", rank)
    if not 0 <= rank < world or local < 0:
        raise ConfigError(f"torchrun environment: RANK={rank} LOCAL_RANK={local} do not fit WORLD_SIZE={world}")
    return Distributed(rank=rank, world_size=world, local_rank=local)


def _env_int(env: Mapping[str, str], name: str, default: int | None) -> int:
    text = env.get(name)
    if text is None or text == "":
        if default is None:
            raise ConfigError(f"torchrun environment: WORLD_SIZE is set but {name} is not")
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"torchrun environment: {name} must be an integer, got {text!r}") from None


def device_for(launch: Distributed, device: str) -> torch.device:
    """The device this rank trains on: ``device`` itself for one process; under torchrun with CUDA, this
    rank's own GPU cuda:LOCAL_RANK (every rank reads the same config, so one index cannot serve them all)."""
    requested = torch.device(device)
    if not launch.enabled or requested.type != "cuda":
        return requested
    if launch.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"train.device is {device!r} under torchrun, and LOCAL_RANK {launch.local_rank} needs "
                          f"cuda:{launch.local_rank}, but this host has {torch.cuda.device_count()} GPU(s): "
                          f"start at most that many processes per node (--nproc_per_node)")
    return torch.device("cuda", launch.local_rank)


def setup(device: str, launch: Distributed | None = None) -> tuple[Distributed, torch.device]:
    """Join the torchrun launch (``launch``, default the environment's; nothing to do for a single process):
    the process group (NCCL on CUDA, gloo on the CPU) and this rank's device. Joining twice reuses the group."""
    launch = launch_from_env() if launch is None else launch
    target = device_for(launch, device)
    if not launch.enabled:
        return launch, target
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        if target.type == "cuda":  # bound to this rank's GPU: NCCL need not guess it (barrier, first collective)
            dist.init_process_group(backend="nccl", device_id=target)
        else:
            dist.init_process_group(backend="gloo")
    if dist.get_world_size() != launch.world_size or dist.get_rank() != launch.rank:
        raise ConfigError(f"a process group of {dist.get_world_size()} (rank {dist.get_rank()}) already exists, "
                          f"but the environment says rank {launch.rank} of {launch.world_size}")
    return launch, target


def shutdown() -> None:
    """Leave the process group, if this process joined one (the end of `mail-il train`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, step: int, rank: int, purpose: str) -> int:
    """A seed that is a pure function of (seed, step, rank, purpose): each rank's own random numbers for one
    step (DDPM noise, dropout, image shifts), different across ranks and purposes, and the same again when a
    run is resumed (whatever random state the checkpoint saved)."""
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}/{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch seeds are < 2**64; keep it positive in an int64 too
