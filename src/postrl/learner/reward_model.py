"""The scalar reward model: building it, rendering what it scores, the Bradley–Terry loss, scoring.

A reward model is a causal-LM backbone with a one-output linear head on the last non-pad token:
transformers' `AutoModelForSequenceClassification` with `num_labels=1` and `config.pad_token_id`
set (Qwen2, Llama, Mistral, ... have one), built by the critic's `load_scalar_model` from
`model.name_or_path` (a hub id, a directory, or the `tiny` spec). A fresh head starts at zero, so
every reward starts at 0 and the first loss is log 2.

What it scores is rendered one way, in training and in use (`encode_response`): the prompt as
`render_prompt` renders it for the policy (chat template with the generation prompt for message
prompts, raw text for strings, per `data.chat_template` and `data.system_prompt`), then the
response's tokens, then EOS: the token stream a policy produces, ending on the token whose
hidden state the head reads. The rendering settings travel with the weights in
`config.json` under `postrl_rm` (with the held-out reward mean and std used by `normalize`), so
`RewardModel.load(path)` scores a completion exactly as `postrl rm` trained on it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from postrl.config import DataSection, ModelSection
from postrl.learner.models import quiet_transformers

RM_CONFIG_KEY = "postrl_rm"
"""Key of `config.json` holding the rendering settings and reward statistics of a postrl RM."""


# ---------------------------------------------------------------------------------------- loss
@dataclass
class BTLossOutput:
    """Per-pair values of the Bradley–Terry loss ([B] each; the trainer takes the mean)."""

    loss: torch.Tensor
    """bt + center: what is minimised."""
    bt: torch.Tensor
    """-log sigmoid(r_w - r_l - m)."""
    center: torch.Tensor
    """center_coef * (r_w + r_l)^2 (0 when center_coef is 0)."""
    correct: torch.Tensor
    """1.0 where r_w > r_l (a tie counts as wrong), else 0.0: the pair accuracy."""
    margin: torch.Tensor
    """r_w - r_l (detached)."""


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, *,
                       margin: torch.Tensor | float = 0.0, center_coef: float = 0.0) -> BTLossOutput:
    """Bradley–Terry reward-model loss, per pair (InstructGPT, arXiv 2203.02155, eq. 1):

        bt     = -log sigmoid(r(x, y_w) - r(x, y_l) - m)
        center = center_coef * (r(x, y_w) + r(x, y_l))^2

    m is a margin (Llama 2, arXiv 2307.09288, eq. 2: a larger required gap for pairs rated far
    apart; 0 gives the plain model P(y_w > y_l) = sigmoid(r_w - r_l)); a float or one value per
    pair. The centring term (Eisenstein et al., "Helping or Herding?", arXiv 2312.09244, eq. 2;
    TRL's `center_rewards_coefficient`, recommended 0.01) pins the otherwise free offset of the
    rewards near 0, which the pairwise term cannot see. Written with `logsigmoid`, so a large
    negative gap gives a finite loss and gradient.
    """
    gap = r_chosen - r_rejected
    bt = -torch.nn.functional.logsigmoid(gap - margin)
    center = center_coef * (r_chosen + r_rejected) ** 2 if center_coef else torch.zeros_like(bt)
    return BTLossOutput(loss=bt + center, bt=bt, center=center, correct=(gap > 0).float(),
                        margin=gap.detach())


# ----------------------------------------------------------------------------------- rendering
@dataclass
class RenderSpec:
    """How a (prompt, response) pair becomes tokens: the `data` settings `render_prompt` reads."""

    chat_template: str = "auto"
    system_prompt: str | None = None
    max_tokens: int = 1024
    """Longer sequences lose tokens from the left, so the response's end and EOS are kept."""

    def data_section(self) -> DataSection:
        return DataSection(chat_template=self.chat_template, system_prompt=self.system_prompt)

    def to_dict(self) -> dict:
        return {"chat_template": self.chat_template, "system_prompt": self.system_prompt,
                "max_tokens": self.max_tokens}


def response_text(response) -> str:
    """A response's text: a string, or the content of its (last) assistant message."""
    from postrl.rewards.builtin import completion_text

    return completion_text(response)


def encode_responses(tokenizer, prompts: Sequence, responses: Sequence, spec: RenderSpec) -> list[list[int]]:
    """Token ids of rendered prompt + response + EOS for each pair (the one rendering of an RM).

    `prompts` are strings or message lists, `responses` strings or assistant message lists."""
    from postrl.data.chat import render_prompt

    if tokenizer.eos_token_id is None:
        raise ValueError("the reward model's tokenizer has no EOS token, which ends every scored response; "
                         "use a tokenizer with eos_token set")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    data = spec.data_section()
    cache: dict[int, list[int]] = {}  # a group's completions share one prompt object: render it once
    out, cut = [], 0
    texts = [response_text(r) for r in responses]
    resp_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    for prompt, ids in zip(prompts, resp_ids):
        key = id(prompt)
        if key not in cache:
            text = render_prompt(tokenizer, prompt, data)
            cache[key] = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        seq = cache[key] + list(ids) + [tokenizer.eos_token_id]
        if len(seq) > spec.max_tokens:
            seq, cut = seq[-spec.max_tokens:], cut + 1
        out.append(seq)
    if cut:
        warnings.warn(f"reward model: {cut} of {len(out)} sequences were longer than {spec.max_tokens} tokens "
                      "and lost their first tokens; raise train.max_seq_tokens", stacklevel=2)
    return out


# ------------------------------------------------------------------------------------ building
def load_reward_model(name: str, model_cfg: ModelSection, tokenizer, device: torch.device):
    """The trainable RM: `AutoModelForSequenceClassification(num_labels=1)` on the backbone `name`."""
    from transformers import AutoModelForSequenceClassification

    from postrl.learner.critic import load_scalar_model

    model = load_scalar_model(AutoModelForSequenceClassification, name, model_cfg, tokenizer, device,
                              key="model.name_or_path", kind="sequence-classification (reward head)",
                              user="reward model")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model {name!r} has {rows} embedding "
                         "rows; use the tokenizer that belongs to the model (model.tokenizer)")
    return model


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] input ids right-padded with `pad_id`, and the attention mask."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        attn[i, :len(s)] = 1
    return ids, attn


def forward_rewards(model, seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> torch.Tensor:
    """r of each sequence ([B] float32, with grad when enabled): the head on its last non-pad token."""
    ids, attn = right_pad(seqs, pad_id)
    out = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False)
    return out.logits[:, 0].float()


# ------------------------------------------------------------------------------------- scoring
@dataclass
class RewardModel:
    """A reward model ready to score: weights, tokenizer and rendering, all from one place.

    `score` takes rendered texts or token ids; `score_responses` renders (prompt, response) pairs
    as in training. Batches of `batch_size` sequences; no gradient; returns [B] float32 on CPU.
    """

    model: torch.nn.Module
    tokenizer: object
    spec: RenderSpec = field(default_factory=RenderSpec)
    stats: dict = field(default_factory=dict)
    """Held-out reward statistics saved by `postrl rm`: `reward_mean`, `reward_std`."""
    device: torch.device = torch.device("cpu")
    batch_size: int = 32
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu", batch_size: int = 32,
             trust_remote_code: bool = False) -> "RewardModel":
        """A saved RM (`postrl rm`'s `final/` or any `checkpoints/step_*`, or any HF sequence-
        classification model with one label). A directory without a trained head is an error."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from postrl.learner.models import resolve_device

        quiet_transformers()
        where = str(path)
        if not Path(where).is_dir():
            raise FileNotFoundError(f"reward model path {where!r} is not a directory; give the `final` directory "
                                    "(or a checkpoints/step_* directory) of a `postrl rm` run")
        device = resolve_device(device) if isinstance(device, str) else device
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                where, num_labels=1, output_loading_info=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ValueError(f"reward model {where!r}: could not load it as a sequence-classification model "
                             f"with its tokenizer: {e}") from None
        if any(k.split(".")[0] in ("score", "classifier") for k in info["missing_keys"]):
            raise ValueError(f"reward model {where!r} has no trained reward head (it looks like a plain language "
                             "model); train one with `postrl rm CONFIG.yaml` and give its `final` directory")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        saved = dict(getattr(model.config, RM_CONFIG_KEY, None) or {})
        spec = RenderSpec(**{k: saved[k] for k in ("chat_template", "system_prompt", "max_tokens") if k in saved})
        stats = {k: saved[k] for k in ("reward_mean", "reward_std") if saved.get(k) is not None}
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, tokenizer, spec, stats, device, batch_size, where)

    def encode(self, prompts: Sequence, responses: Sequence) -> list[list[int]]:
        return encode_responses(self.tokenizer, prompts, responses, self.spec)

    @torch.no_grad()
    def score(self, inputs: Sequence[str] | Sequence[Sequence[int]]) -> torch.Tensor:
        """[B] rewards of already-rendered texts (tokenised as they are) or token-id lists."""
        if not len(inputs):
            return torch.zeros(0)
        if isinstance(inputs[0], str):
            inputs = self.tokenizer(list(inputs), add_special_tokens=False)["input_ids"]
        vocab = self.model.get_input_embeddings().weight.shape[0]
        top = max((max(s) for s in inputs if len(s)), default=0)
        if top >= vocab:
            raise ValueError(f"token id {top} is outside the reward model's vocabulary ({vocab} ids, "
                             f"{self.path or 'reward model'}); the ids come from another tokenizer")
        was_training = self.model.training
        self.model.eval()
        try:
            out = [forward_rewards(self.model, inputs[i:i + self.batch_size], self.tokenizer.pad_token_id,
                                   self.device).cpu() for i in range(0, len(inputs), self.batch_size)]
        finally:
            self.model.train(was_training)
        return torch.cat(out)

    def score_responses(self, prompts: Sequence, responses: Sequence, *, normalize: bool = False) -> torch.Tensor:
        """[B] rewards of (prompt, response) pairs rendered as in training; `normalize`:
        (r - mean) / std with the held-out statistics saved with the model."""
        r = self.score(self.encode(prompts, responses))
        return self.normalize(r) if normalize else r

    def normalize(self, r: torch.Tensor) -> torch.Tensor:
        if "reward_mean" not in self.stats or "reward_std" not in self.stats:
            raise ValueError(f"reward model {self.path!r} has no saved reward statistics (only `postrl rm` runs "
                             "save them, after their final evaluation); drop normalize")
        return (r - self.stats["reward_mean"]) / max(self.stats["reward_std"], 1e-8)


def reward_stats(rewards: torch.Tensor) -> dict[str, float]:
    """Mean and std (floored at 1e-8) of held-out rewards, as OpenRLHF saves them for normalising."""
    if rewards.numel() < 2:
        return {"reward_mean": float(rewards.mean()) if rewards.numel() else 0.0, "reward_std": 1.0}
    std = float(rewards.float().std())
    return {"reward_mean": float(rewards.float().mean()), "reward_std": std if math.isfinite(std) and std > 1e-8
            else 1e-8}


def store_rm_config(model, spec: RenderSpec, stats: dict | None = None) -> None:
    """Put the rendering (and statistics) into `model.config`, so every `save_pretrained` carries them."""
    saved = dict(getattr(model.config, RM_CONFIG_KEY, None) or {})
    saved.update(spec.to_dict())
    saved.update(stats or {})
    setattr(model.config, RM_CONFIG_KEY, saved)

