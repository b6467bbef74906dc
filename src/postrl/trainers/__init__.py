"""The loops: `rl.train` (online RL), `sft.train`, `evaluate.evaluate`, and the demo pipeline."""
