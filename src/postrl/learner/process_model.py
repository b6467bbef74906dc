"""The process reward model (PRM): rendering steps, the per-step loss, loading and scoring.

A PRM is a causal-LM backbone with a one-output token head (transformers'
`AutoModelForTokenClassification`, `num_labels=1`, built by the critic's `load_scalar_model`),
read at the end of every step. What it scores is rendered one way, in training and in use
(`encode_steps`, TRL's PRMTrainer convention): the prompt as the policy sees it (`render_prompt`:
chat template for message prompts, raw text for strings), then each step's tokens followed by
the separator's tokens; the label of a step sits on the last token of its separator. The head's
logit there is the log-odds that the step is correct (still correct: first-error labelling), so
a step's score is sigmoid(logit) in (0, 1).

The rendering (separator, chat template, system prompt, max length) travels with the weights
in `config.json` under `postrl_prm`, so `ProcessRewardModel.load(path)` scores steps exactly as
`postrl prm` trained on them. A TRL PRM (`num_labels=2`, the label-1 probability is the score)
loads too; give its separator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from postrl.learner.reward_model import RenderSpec, right_pad

PRM_CONFIG_KEY = "postrl_prm"
"""Key of `config.json` holding a postrl PRM's separator and rendering settings."""


def split_steps(text: str, separator: str = "\n") -> list[str]:
    """The steps of a completion text: split at `separator`, stripped, blank ones dropped (the
    text-side rule of `rewards.process.token_steps`, so both count the same steps)."""
    if not separator:
        raise ValueError("process reward separator must be a non-empty string (e.g. '\\n')")
    return [s.strip() for s in text.split(separator) if s.strip()]


@dataclass
class StepExample:
    """One rendered example: token ids, the index of each step's scored token, the labels."""

    ids: list[int]
    positions: list[int]
    labels: list[bool] | None = None


def encode_steps(tokenizer, prompt, steps: Sequence[str], separator: str, spec: RenderSpec,
                 labels: Sequence[bool] | None = None) -> StepExample:
    """prompt tokens, then for each step: tokens(step) + tokens(separator); a step is scored on
    the last separator token. Steps are tokenised one by one, so a step's tokens never depend on
    the next step (the same ids in training and in use)."""
    from postrl.data.chat import render_prompt

    if isinstance(prompt, list) and spec.system_prompt and (not prompt or prompt[0]["role"] != "system"):
        prompt = [{"role": "system", "content": spec.system_prompt}] + prompt  # as load_prompt_dataset does
    text = render_prompt(tokenizer, prompt, spec.data_section())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    sep = tokenizer(separator, add_special_tokens=False)["input_ids"]
    if not sep:
        raise ValueError(f"the PRM tokenizer encodes the separator {separator!r} to no tokens; choose another")
    ids, positions = list(ids), []
    step_ids = tokenizer(list(steps), add_special_tokens=False)["input_ids"] if steps else []
    for s in step_ids:
        ids += list(s) + sep
        positions.append(len(ids) - 1)
    return StepExample(ids, positions, list(labels) if labels is not None else None)


def step_logits(model, examples: Sequence[StepExample], pad_id: int, device) -> list[torch.Tensor]:
    """The head's logit at every scored position, one [n_steps] float32 tensor per example
    (with grad when enabled). A two-label head gives logit(label 1) - logit(label 0)."""
    ids, attn = right_pad([e.ids for e in examples], pad_id)
    out = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).logits.float()
    if out.shape[-1] == 2:  # TRL's PRMs: softmax over (wrong, right); its log-odds is the difference
        out = out[..., 1:] - out[..., :1]
    return [out[i, torch.tensor(e.positions, dtype=torch.long, device=out.device), 0]
            for i, e in enumerate(examples)]


def step_loss(logits: list[torch.Tensor], examples: Sequence[StepExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-step binary cross-entropies, number of correct predictions) over the examples:
    -[y log sigmoid(z) + (1 - y) log sigmoid(-z)] per step, as TRL's PRMTrainer trains its
    token-classification head (cross-entropy over the labelled tokens only)."""
    z = torch.cat(logits)
    y = torch.tensor([float(l) for e in examples for l in e.labels], device=z.device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum")
    return loss, ((z > 0).float() == y).float().sum()


def first_error(flags: Sequence[bool]) -> int:
    """Index of the first False step, or len(flags) when every step is correct (ProcessBench's
    "first error" target: -1 there means no error; a full length is used here)."""
    return next((k for k, ok in enumerate(flags) if not ok), len(flags))


@dataclass
class ProcessRewardModel:
    """A PRM ready to score steps: weights, tokenizer and rendering, all from one place.

    `score_steps` renders (prompt, steps) pairs as in training and returns each step's
    probability of being correct. Batches of `batch_size` examples; no gradient; CPU floats.
    """

    model: torch.nn.Module
    tokenizer: object
    separator: str = "\n"
    spec: RenderSpec = field(default_factory=RenderSpec)
    device: torch.device = torch.device("cpu")
    batch_size: int = 32
    path: str | None = None

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu", batch_size: int = 32,
             separator: str | None = None) -> "ProcessRewardModel":
        """A saved PRM (`postrl prm`'s `final/` or a `checkpoints/step_*`), or a TRL token-
        classification PRM with one or two labels (then `separator` is required)."""
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

        from postrl.learner.models import quiet_transformers, resolve_device

        quiet_transformers()
        where = str(path)
        if not Path(where).is_dir():
            raise FileNotFoundError(f"process reward model path {where!r} is not a directory; give the `final` "
                                    "directory (or a checkpoints/step_* directory) of a `postrl prm` run")
        device = resolve_device(device) if isinstance(device, str) else device
        try:
            config = AutoConfig.from_pretrained(where)
            labels = config.num_labels if getattr(config, "num_labels", 1) in (1, 2) else 1
            tokenizer = AutoTokenizer.from_pretrained(where)
            model, info = AutoModelForTokenClassification.from_pretrained(where, num_labels=labels,
                                                                          output_loading_info=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"process reward model {where!r}: could not load it as a token-classification "
                             f"model with its tokenizer: {e}") from None
        if any(k.split(".")[0] in ("score", "classifier") for k in info["missing_keys"]):
            raise ValueError(f"process reward model {where!r} has no trained step head (it looks like a plain "
                             "language model); train one with `postrl prm CONFIG.yaml` and give its `final` directory")
        saved = dict(getattr(model.config, PRM_CONFIG_KEY, None) or {})
        if separator is None and "separator" not in saved:
            raise ValueError(f"process reward model {where!r} was not trained by `postrl prm` (no {PRM_CONFIG_KEY!r} "
                             "in its config.json), so its step separator is unknown; pass separator (e.g. '\\n')")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        spec = RenderSpec(**{k: saved[k] for k in ("chat_template", "system_prompt", "max_tokens") if k in saved})
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, tokenizer, separator or saved["separator"], spec, device, batch_size, where)

    @torch.no_grad()
    def score_steps(self, prompts: Sequence, steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """P(step is correct) for every step of every (prompt, steps) pair; [] for no steps."""
        examples = [encode_steps(self.tokenizer, p, s, self.separator, self.spec) for p, s in zip(prompts, steps)]
        scored = [i for i, e in enumerate(examples) if e.positions]
        out: list[list[float]] = [[] for _ in examples]
        for k in range(0, len(scored), self.batch_size):
            chunk = scored[k:k + self.batch_size]
            logits = step_logits(self.model, [examples[i] for i in chunk], self.tokenizer.pad_token_id, self.device)
            for i, z in zip(chunk, logits):
                out[i] = torch.sigmoid(z).cpu().tolist()
        return out


def store_prm_config(model, separator: str, spec: RenderSpec) -> None:
    """Put the separator and rendering into `model.config`, so every `save_pretrained` carries them."""
    setattr(model.config, PRM_CONFIG_KEY, {"separator": separator, **spec.to_dict()})
