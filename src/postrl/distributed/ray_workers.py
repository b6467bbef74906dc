"""What runs inside the Ray actors: an engine replica, a reward scorer, a learner rank.

Plain classes; `ray_runtime` makes them actors (`ray.remote(...)(RolloutWorker)`) and is their
only caller. Each builds its heavy state (tokenizer, model, reward functions) in its own process
from the config, so only the config crosses the wire at start-up, and imports torch and
transformers inside `__init__`, so the driver importing this module stays cheap.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def _limit_threads(cpus: float) -> None:
    import torch

    # An actor that uses every core fights its neighbours on the same machine: keep to its share.
    torch.set_num_threads(max(1, int(cpus)))


class RolloutWorker:
    """One engine replica on its own copy of the policy, built from `cfg.model` and `cfg.rollout`."""

    def __init__(self, cfg):
        from postrl.learner.models import load_model, load_tokenizer, resolve_device
        from postrl.rollout.engines import build_engine

        _limit_threads(cfg.distributed.worker_cpus)
        tokenizer = load_tokenizer(cfg.model)
        self.model = load_model(cfg.model, tokenizer, resolve_device(cfg.model.device)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.engine = build_engine(cfg.rollout, self.model, tokenizer)
        self.version = 0  # which `sync_weights` of the pool the model holds (0: its own init)

    def ready(self) -> bool:
        return True

    def generate(self, prompt_ids: list[list[int]], params, seed: int, first_index: int):
        batch = self.engine.generate(prompt_ids, params, seed, first_index=first_index)
        batch.metadata["weights_version"] = [self.version] * batch.size
        return batch

    def load_weights(self, state: dict[str, Any], version: int) -> None:
        from postrl.learner.checkpoint import load_state_strict

        load_state_strict(self.model, state)
        self.engine.sync_weights(self.model)  # hf: same module, nothing to do; vLLM: copies them in
        self.version = version


class RewardWorker:
    """A `RewardSet` (user modules imported here, from the PYTHONPATH `start_ray` forwarded)."""

    def __init__(self, specs: list):
        from postrl.rewards import RewardSet

        self.rewards = RewardSet(specs)

    def names(self) -> list[str]:
        return self.rewards.names

    def score(self, prompts: list, completions: list, completion_ids: list | None, columns: dict[str, list]):
        return self.rewards(prompts, completions, completion_ids, columns)

    def take_failure_counts(self) -> dict[str, float]:
        return self.rewards.take_failure_counts()


class LearnerWorker:
    """Rank `rank` of `world` learner processes; `setup` joins the group and builds the Learner."""

    def __init__(self, cfg, rank: int, world: int):
        _limit_threads(cfg.distributed.worker_cpus)
        self.cfg, self.rank, self.world = cfg, rank, world
        self.learner = None

    def address(self) -> tuple[str, int]:
        """This node's IP and a free port: rank 0 hosts the group's rendezvous."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))  # all interfaces: ranks on other nodes connect to it
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str | None, master_port: int | None) -> None:
        from postrl.distributed.data_parallel import init_from_env
        from postrl.learner.learner import build_learner
        from postrl.learner.models import load_tokenizer, resolve_device
        from postrl.trainers.run_dir import seed_everything

        cfg = self.cfg
        device, dp = resolve_device(cfg.model.device), None
        if self.world > 1:
            # Ray shows each actor only its own GPU(s), so the local device is always index 0.
            os.environ.update(RANK=str(self.rank), LOCAL_RANK="0", WORLD_SIZE=str(self.world),
                              MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
            dp = init_from_env(cfg.distributed.strategy, device)
        seed_everything(cfg.seed)  # as the in-process trainer does before building (LoRA init draws)
        self.learner = build_learner(cfg, load_tokenizer(cfg.model), device, dp)

    def call(self, method: str, payload: tuple[tuple, dict]) -> Any:
        args, kwargs = payload
        out = getattr(self.learner, method)(*args, **kwargs)
        if method == "state_dict" and self.rank != 0:
            return None  # every rank takes part (a collective under FSDP2); one copy is enough
        return out
