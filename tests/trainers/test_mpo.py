"""MPO's two stages on the tiny model (docs/preference_guide.md, "MPO"): DPO on the easy pairs with
`postrl pref`, then PPO with `postrl train` on the hard pairs' prompts, the DPO model as reference."""

import json

from postrl.config import PrefConfig, RLConfig, resolve
from postrl.trainers import pref, rl

from trainers.test_pref import TINY


def test_dpo_on_easy_pairs_then_ppo_on_hard_prompts_with_the_dpo_model_as_reference(tmp_path):
    stage1 = pref.train(resolve(PrefConfig, {
        "output_dir": str(tmp_path / "dpo"), "model": TINY,
        "data": {"source": "task:arithmetic_pairs", "task_kwargs": {"level": 1, "margin": True}, "limit": 40,
                 "select": {"keep": "easy", "threshold": 5}},
        "train": {"steps": 2, "batch_size": 8, "micro_batch_size": 8, "lr": 1e-3},
        "eval": {"limit": 8, "greedy": "never"}, "logging": {"progress": False}}))
    # carry slips (margin 10, 11) are easy, last-digit slips (1, 2) hard; DPO trained on the easy ones only
    hard = [json.loads(x) for x in (tmp_path / "dpo" / "select" / "hard_prompts.jsonl").read_text().splitlines()]
    assert stage1["train_examples"] == stage1["select_easy"] and stage1["select_easy"] + len(hard) == 40
    assert hard and all(r["margin"] < 5 and r["answer"] for r in hard)

    def stage2(name, policy):
        out = rl.train(resolve(RLConfig, {
            "output_dir": str(tmp_path / name), "model": {**TINY, "name_or_path": policy,
                                                          "ref_model": stage1["model_dir"]},
            "data": {"source": str(tmp_path / "dpo" / "select" / "hard_prompts.jsonl")},
            "algorithm": {"preset": "ppo"}, "rollout": {"n": 4, "max_new_tokens": 4},
            "train": {"steps": 2, "prompts_per_step": 4, "lr": 1e-4, "micro_batch_size": 16},
            "eval": {"before": False}, "logging": {"progress": False}}))
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return out, [r["kl"] for r in rows if "kl" in r]

    # the policy starts from the DPO model: at the first update it IS the reference (KL 0)
    out, kl = stage2("ppo_from_dpo", stage1["model_dir"])
    assert len(kl) == 2 and abs(kl[0]) < 1e-6 and out["rl_steps"] == 2
    # the policy starts from another checkpoint (the untrained model): the DPO reference differs from it
    _, kl = stage2("ppo_from_base", "tiny")
    assert kl[0] > 1e-4
