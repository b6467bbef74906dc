"""Learner side: model loading (HF, LoRA, reference), log-probs, the update step, checkpoints."""
