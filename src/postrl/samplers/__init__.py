"""Prompt samplers: which dataset rows the next rollout batch uses.

A sampler is a small class registered in `SAMPLERS`: `__init__(dataset_size, seed, **hparams)`,
`next(k) -> list[int]` row indices, `update(indices, rewards_G)` with the rewards each prompt's
group received, and `state_dict()` / `load_state_dict()` so a resumed run continues exactly.
A filtering sampler (`filters_groups = True`) also answers `keep(rewards_G)`; see `base.py`.
A sampler may add hints or answer prefixes to prompts (`decorate`, `rescue`: an `Addition`).
A sampler may act on the scored batch (`select`: D3S, PC-GRPO) or split the rollout budget
unevenly across prompts (`first_n`, `allocate`: XRPO).
"""

from postrl.samplers.base import SAMPLERS, Addition, Sampler, build_sampler  # noqa: F401
from postrl.samplers import dynamic, uniform  # noqa: F401  (fills the registry)
from postrl.samplers import dr_po, ghpo, scaf_grpo  # noqa: F401  (prompt additions: hints, dataset resets)
from postrl.samplers import clpo  # noqa: F401  (prompt additions: restructured problems)
from postrl.samplers import mopps, pass_rate, pcl, spo, vade  # noqa: F401  (statistical samplers)
from postrl.samplers import d3s, pc_grpo, xrpo  # noqa: F401  (batch-level selection and allocation)
