"""Algorithm registries: advantage estimators, policy losses, presets.

Importing this package fills the registries. Add a method by writing one registered function
in the module of its family; nothing else in postrl changes.
"""

from postrl.algorithms.registries import ADVANTAGES, POLICY_LOSSES, PREFERENCE_LOSSES, PRESETS  # noqa: F401
from postrl.algorithms import advantages, advantages_baselines, advantages_value  # noqa: F401  (fill registries)
from postrl.algorithms import losses_entropy, losses_ratio, losses_sequence, losses_supervised  # noqa: F401
from postrl.algorithms import advantages_segment, losses_qvalue, presets_credit  # noqa: F401  (SPO, ROVER)
from postrl.algorithms import policy_losses, preference, presets  # noqa: F401
from postrl.algorithms import (preference_auxiliary, preference_listwise, preference_pairwise,  # noqa: F401
                               preference_reference_free, preference_unpaired)
from postrl.algorithms import advantages_loop, presets_loop  # noqa: F401  (ReMax, TempSamp; loop-feature presets)
from postrl.algorithms import advantages_selfplay, preference_online, presets_selfplay  # noqa: F401  (self-play)
from postrl.algorithms import advantages_process  # noqa: F401  (PRIME, PURE: credit from step rewards)
from postrl.algorithms import losses_history  # noqa: F401  (HCPO: full/compressed-history branches)
from postrl.algorithms import advantages_agent, advantages_archer, presets_agent  # noqa: F401  (agent credit)
from postrl.algorithms import advantages_aspo, advantages_igpo, advantages_spa  # noqa: F401  (IGPO, SPA-RL, ASPO)
from postrl.algorithms import advantages_truncation  # noqa: F401  (Skywork-OR1 truncation masks)
from postrl.algorithms import advantages_xrpo  # noqa: F401  (XRPO novelty sharpening)
from postrl.algorithms.aggregation import AGG_MODES, aggregate  # noqa: F401
from postrl.algorithms.kl import kl_penalty  # noqa: F401
from postrl.algorithms.policy_losses import LossOutput  # noqa: F401
