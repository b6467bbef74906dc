"""Rollout: the batch types and the generation engines (registered in `ENGINES`)."""

from postrl.rollout.batch import PreferenceBatch, RolloutBatch  # noqa: F401
from postrl.rollout.engines import ENGINES  # noqa: F401
