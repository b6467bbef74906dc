"""Online samples inside `postrl pref`, for losses that need "online_kl" (HyPO).

"The Importance of Online Data: Understanding Preference Fine-tuning via Coverage", Song et al.,
arXiv 2406.01462: HyPO keeps DPO's offline loss and adds a reverse-KL penalty KL(pi || pi_ref)
estimated on responses sampled from the current policy. Each step, before its micro-batches, one
response y~ ~ pi(. | x) per training example is sampled with the `hf` engine on the policy itself
(`online` section: max_new_tokens, temperature, top_p, stop); then, per micro-batch, the loss gets

    kl_logps     = log pi_theta(y~ | x)   summed over the sampled tokens, WITH gradient
    kl_ref_logps = log pi_ref(y~ | x)     from the reference model, no gradient

Online responses are new every step, so their reference log-probs cannot come from the cache of
`pref_batch`: the reference model stays loaded for the whole run (only for these losses). The
sampling seed is a function of (seed, step), so a resumed run samples what the straight run did.
hypo's leave-one-out baseline is taken over the examples of one micro-batch (that is the loss's
input); with train.micro_batch_size >= train.batch_size it is the whole batch's.
"""

from __future__ import annotations

import torch

from postrl.config import RolloutSection
from postrl.learner.models import load_reference, reference_context
from postrl.rollout.engines import SamplingParams, build_engine
from postrl.trainers import pref_batch as pb
from postrl.trainers.scoring import completion_token_lists


class OnlineKL:
    """The engine, the sampling parameters and the reference model of the online responses."""

    def __init__(self, p):
        o = p.cfg.online
        self.engine = build_engine(RolloutSection(), p.model, p.tokenizer)
        self.params = SamplingParams(n=1, temperature=o.temperature, top_p=o.top_p,
                                     max_new_tokens=o.max_new_tokens, stop=list(o.stop))
        # a frozen copy of the initial policy (or model.ref_model); None under LoRA: the adapter-free policy
        self.ref = load_reference(p.cfg.model, p.model, p.tokenizer, p.device)

    def sample(self, examples, seed: int) -> list[list[int]]:
        """One response per example, sampled from the current policy after the example's prompt."""
        batch = self.engine.generate([ex.prompt_ids for ex in examples], self.params, seed=seed)
        return completion_token_lists(batch)

    @torch.no_grad()
    def reference_logps(self, p, pairs) -> torch.Tensor:
        with reference_context(p.model, self.ref), torch.autocast(p.device.type, dtype=torch.bfloat16,
                                                                  enabled=p.bf16):
            model = self.ref if self.ref is not None else p.model
            return pb.seq_logps(model, pairs, p.logprob_fn, p.pad, p.device).sums.float()


def step_seed(seed: int, step: int) -> int:
    # a pure function of the step: resuming at step s samples what the straight run sampled there
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**62)
