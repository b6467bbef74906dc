"""Prompt rendering and tokenisation: rows -> the exact token ids the trainer keeps.

Rendering follows TRL's rule (`data.chat_template`):
  auto    message prompts go through the tokenizer's chat template with the generation prompt;
          string prompts stay raw text (`system_prompt + "\\n"` prepended when set).
  always  string prompts become one user message (and a system message) and are templated.
  never   everything is plain text; messages become "role: content" lines ending "assistant: ".
Message prompts already carry `data.system_prompt` (load_prompt_dataset prepends it), so only
string prompts get it here. An empty string prompt (an SFT `text` row) renders as "".

Text is tokenised once with `add_special_tokens=False` (the template already holds any special
tokens) and the trainer keeps these ids, so nothing is re-tokenised later.
"""

from __future__ import annotations

import warnings
from typing import Sequence

from postrl.config import DataSection
from postrl.data.loading import DataError, PromptRow, SFTRow


def render_prompt(tokenizer, prompt: str | list[dict], cfg: DataSection) -> str:
    """The text the model sees before its completion."""
    if isinstance(prompt, str):
        if prompt == "":
            return ""
        if cfg.chat_template == "always":
            system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
            return _apply_template(tokenizer, system + [{"role": "user", "content": prompt}])
        return f"{cfg.system_prompt}\n{prompt}" if cfg.system_prompt else prompt
    if cfg.chat_template == "never":
        return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: "
    return _apply_template(tokenizer, prompt)


def _apply_template(tokenizer, messages: list[dict]) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError("the prompts need a chat template but the tokenizer has none; set "
                        "model.chat_template (a Jinja template or a .jinja file), or set "
                        "data.chat_template: never to use plain 'role: content' text")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_prompts(tokenizer, rows: Sequence[PromptRow], cfg: DataSection, *, context: int | None = None,
                   new_tokens: int = 0) -> tuple[list[list[int]], list[int]]:
    """Token ids of each kept row and the `index` of each kept row.

    A prompt longer than `cfg.max_prompt_tokens`, or (when the model's `context` in positions is
    known) one that leaves fewer than `new_tokens` positions for the completion, is an error under
    `long_prompts: error` and is dropped (its index not returned) under `long_prompts: skip`, with
    one `UserWarning` giving the count.
    """
    ids = _tokenize(tokenizer, [render_prompt(tokenizer, r.prompt, cfg) for r in rows])
    kept_ids, kept_index = [], []
    where = getattr(rows, "source", None)
    for row, row_ids in zip(rows, ids):
        problem = _too_long(len(row_ids), cfg, context, new_tokens)
        if problem:
            if cfg.long_prompts == "skip":
                continue
            raise DataError(f"row {row.index + 1}{f' of {where}' if where else ''}: {problem}, or set "
                            "data.long_prompts: skip to drop such rows")
        kept_ids.append(row_ids)
        kept_index.append(row.index)
    if len(kept_ids) < len(ids):  # never a silent drop
        warnings.warn(f"encode_prompts: {len(ids) - len(kept_ids)} of {len(ids)} prompts were longer than "
                      f"data.max_prompt_tokens={cfg.max_prompt_tokens}"
                      + (f" or the model's context ({context} positions) less {new_tokens} new tokens"
                         if context is not None else "")
                      + " and were dropped (data.long_prompts: skip)", stacklevel=2)
    return kept_ids, kept_index


def context_limits(cfg) -> dict:
    """`encode_prompts` keywords for a run config: the policy's context and the longest completion
    it samples (rollout.max_new_tokens, or eval.max_new_tokens if longer). Nothing for multi-turn
    runs (`env`), whose rollout enforces env.max_total_tokens itself, or configs without a rollout."""
    rollout = getattr(cfg, "rollout", None)
    if rollout is None or getattr(cfg, "env", None) is not None:
        return {}
    from postrl.learner.models import model_context

    longest = max(rollout.max_new_tokens, getattr(getattr(cfg, "eval", None), "max_new_tokens", None) or 0)
    return {"context": model_context(cfg.model), "new_tokens": longest}


def _too_long(n: int, cfg: DataSection, context: int | None, new_tokens: int) -> str | None:
    if n > cfg.max_prompt_tokens:
        return (f"the prompt has {n} tokens, more than data.max_prompt_tokens={cfg.max_prompt_tokens}; "
                "raise data.max_prompt_tokens")
    if context is not None and n + new_tokens > context:
        return (f"the prompt has {n} tokens, and with {new_tokens} new tokens (rollout.max_new_tokens, or "
                f"eval.max_new_tokens if larger) the sequence can reach {n + new_tokens} tokens, more than the "
                f"model's context of {context} positions "
                "(max_position_embeddings); shorten the prompt, lower rollout.max_new_tokens or use a "
                "longer-context model")
    return None


def encode_sft(tokenizer, rows: Sequence[SFTRow], cfg: DataSection,
               max_tokens: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels_mask) per row: rendered prompt, then completion + EOS.

    The completion is tokenised on its own and followed by `tokenizer.eos_token_id`, which for
    chat models is the end of the assistant turn (`<|end|>` for the tiny tokenizer).
    `labels_mask` is 1 on completion and EOS tokens and 0 on prompt tokens. A row longer than
    `max_tokens` is cut from the right; if its prompt alone fills `max_tokens`, the prompt is cut
    from the left instead so that one completion token remains. The number of cut rows is
    reported in one `UserWarning` per call.
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token, so SFT cannot teach the model to stop; "
                        "use a tokenizer with eos_token set")
    if max_tokens < 2:
        raise ValueError(f"encode_sft: max_tokens must be at least 2, got {max_tokens}")
    prompt_ids = _tokenize(tokenizer, [render_prompt(tokenizer, r.prompt, cfg) for r in rows])
    completion_ids = _tokenize(tokenizer, [r.completion for r in rows])
    out, cut = [], 0
    for p, c in zip(prompt_ids, completion_ids):
        c = c + [tokenizer.eos_token_id]
        if len(p) + len(c) > max_tokens:
            cut += 1
            if len(p) >= max_tokens:
                p = p[len(p) - (max_tokens - 1):]
            c = c[:max_tokens - len(p)]
        out.append((p + c, [0] * len(p) + [1] * len(c)))
    if cut:
        warnings.warn(f"encode_sft: {cut} of {len(rows)} rows were longer than {max_tokens} tokens "
                      "and were truncated; raise train.max_seq_tokens to keep them whole",
                      stacklevel=2)
    return out
