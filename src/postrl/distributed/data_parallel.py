"""The data-parallel learner's process group: rank, world, wrapping (DDP / FSDP2) and collectives.

Every learner process holds the whole rollout batch (it is all-gathered after generation), takes
the rows `shard(rows)` of each mini-batch, and scales its loss so that the gradients, once DDP or
FSDP2 has averaged them over ranks, equal the gradient of the whole mini-batch's loss: the
aggregation normaliser is computed from all rows of the mini-batch (not from the local shard),
so a 2-process run gives the weights of a 1-process run with the same global batch.

`DataParallel` is created from a process group that is already initialised: by `init_from_env`
under `torchrun` or `launch` (local processes), or by the Ray learner actors. gloo on CPU, NCCL on
GPU. Only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist


@dataclass
class DataParallel:
    rank: int
    world: int
    strategy: str = "ddp"  # "ddp": replicated parameters; "fsdp2": sharded (torch fully_shard)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows: list[int]) -> list[int]:
        """This rank's contiguous block of `rows` (the config check makes it divide evenly)."""
        if len(rows) % self.world:
            raise ValueError(f"{len(rows)} rows cannot be split evenly over {self.world} learner processes")
        size = len(rows) // self.world
        return rows[self.rank * size:(self.rank + 1) * size]

    def wrap(self, model):
        """The module that trains: DDP around `model`, or `model` itself sharded in place by FSDP2."""
        if self.strategy == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            for layer in _decoder_layers(model):
                fully_shard(layer)
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel

        # broadcast_buffers=False: buffers (rotary tables) are identical by construction, and a
        # broadcast inside forward would deadlock the no-grad forwards only rank 0 runs (eval).
        device_ids = [model.device.index] if model.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    def accumulate(self, train_model, last: bool):
        """No gradient all-reduce on micro-batches before the last one of an update."""
        if last:
            return contextlib.nullcontext()
        if self.strategy == "fsdp2":
            return _fsdp_no_sync(train_model)
        return train_model.no_sync()

    @property
    def loss_scale(self) -> float:
        # DDP and FSDP2 average gradients over ranks; the loss already carries the global normaliser,
        # so the per-rank losses must be *summed*: undo the average.
        return float(self.world)

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equally shaped per-rank tensors along dim 0 (rank order)."""
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of an equally shaped tensor."""
        out = tensor.detach().clone().contiguous()
        dist.all_reduce(out)
        return out / self.world

    def all_gather_objects(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


def full_state_dict(model, dp: DataParallel | None) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU weights; a collective under FSDP2 (every rank must call it)."""
    if dp is not None and dp.strategy == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's global value (FSDP2 grad norms are DTensors); plain tensors pass through."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _decoder_layers(model) -> list[torch.nn.Module]:
    """The repeated transformer blocks: each becomes one FSDP2 unit (all-gathered on its own)."""
    blocks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return list(blocks[0]) if blocks else []


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# ------------------------------------------------------------------------------ process groups
def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(strategy: str = "ddp", device: torch.device | None = None) -> DataParallel | None:
    """Join the group described by torchrun's env vars (RANK, WORLD_SIZE, MASTER_ADDR/PORT); None alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    if not dist.is_initialized():
        device = device or torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
        dist.init_process_group(backend_for(device), rank=rank, world_size=world)
    return DataParallel(rank, world, strategy)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn: Callable[..., Any], world: int, *args: Any) -> None:
    """Run `fn(*args)` in `world` local processes that form a group (what `torchrun --standalone` does).

    Each child gets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT in its environment, so `fn` calls
    `init_from_env` exactly as under torchrun. A child that fails fails the launch.
    """
    import torch.multiprocessing as mp

    port = free_port()
    mp.start_processes(_child, args=(world, port, fn, args), nprocs=world, join=True, start_method="spawn")


def _child(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # each process gets its share of the cores, or they oversubscribe and every step slows down
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    fn(*args)  # on an exception the child exits non-zero and `launch` raises; no teardown to wait for
    if dist.is_initialized():
        # every rank reaches this point before any rank tears the group down: a rank that
        # destroys its gloo group while a peer still holds the connection aborts the peer
        dist.barrier()
        dist.destroy_process_group()
    # The work is done and written (files are closed by now). Interpreter teardown can still
    # abort a child: gloo/FSDP C++ threads still joinable when static destructors run end in
    # "terminate called without an active exception" (SIGABRT) in about 1 run of 5 here, which
    # would fail a run that succeeded. Leave without that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
