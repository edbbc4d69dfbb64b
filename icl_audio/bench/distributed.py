"""Scale-out for `bench` under torchrun: rank and world from the environment, barriers, per-rank devices."""

from __future__ import annotations

import os
from dataclasses import dataclass

from icl_audio.errors import ICLAudioError

# Rank 0 builds every support set while the others wait at a barrier, and merges only once all
# ranks have finished their shards: both waits can last hours on full datasets, far beyond the
# 30-minute default of torch.distributed. Override with ICL_AUDIO_DIST_TIMEOUT (seconds).
DEFAULT_TIMEOUT_S = 48 * 3600


@dataclass
class Dist:
    """This process's place in a (possibly one-process) benchmark run.

    ``rank``/``world``/``local_rank`` come from torchrun's RANK, WORLD_SIZE and LOCAL_RANK;
    a plain run is rank 0 of 1 and never touches torch.distributed.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this is the process that builds support sets, merges and reports."""
        return self.rank == 0

    def owns(self, position: int) -> bool:
        """Whether the query at ``position`` of an evaluation unit belongs to this rank's shard."""
        return position % self.world == self.rank

    def device(self, requested: str) -> str:
        """The device this rank runs on: ``auto`` -> ``cuda:LOCAL_RANK`` when GPUs exist, else cpu.

        ``cuda`` without an index is pinned to this rank's GPU too; anything else is kept.
        """
        if requested not in ("auto", "cuda"):
            return requested
        import torch

        if torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        if requested == "cuda":
            raise ICLAudioError("--device cuda: no CUDA device is available")
        return "cpu"

    def start(self, device: str) -> None:
        """Join the process group (only when WORLD_SIZE > 1): nccl for GPU devices, gloo otherwise."""
        if self.world <= 1:
            return
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        self.backend = "nccl" if device.startswith("cuda") and dist.is_nccl_available() else "gloo"
        if self.backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        timeout = timedelta(seconds=float(os.environ.get("ICL_AUDIO_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend=self.backend, timeout=timeout)

    def barrier(self) -> None:
        """Wait until every rank reaches this point (no-op in a one-process run)."""
        if self.world <= 1:
            return
        import torch
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def stop(self) -> None:
        """Leave the process group, if this process joined one."""
        if self.world <= 1:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def from_env() -> Dist:
    """The :class:`Dist` described by torchrun's environment variables (rank 0 of 1 without them)."""

    def read(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value is None or value.strip() == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ICLAudioError(f"environment variable {name} must be an integer, got {value!r}") from None

    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local_rank = read("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ICLAudioError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return Dist(rank=rank, world=world, local_rank=local_rank)
