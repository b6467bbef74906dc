"""STaR rationalisation: retry the prompts a round failed with the answer as a hint, train without it.

"STaR: Bootstrapping Reasoning With Reasoning", Zelikman et al., arXiv 2203.14465, Sec. 3.2:
for the problems on which the model's own samples are wrong, the model is prompted again with
the correct answer given as a hint and generates a rationale for it; rationales that reach the
right answer are added to the fine-tuning set "as if the model had come up with them without the
hint", i.e. the training example is the ORIGINAL prompt followed by the rationale.

In `postrl raft` (`raft.rationalize: true`): the prompts of a round for which the selection rule
kept nothing are rendered again with `raft.hint_template` (a format string over `{prompt}`, the
text of the prompt's last user turn or the string prompt, `{answer}`, the reference answer, and
the row's other columns), `rollout.n` completions are sampled after the hinted prompt, scored
against the original row, and kept by the round's own rule and threshold. Each kept completion's
sampled token ids are then trained after the original (hint-free) prompt's token ids.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from postrl.data.chat import encode_prompts
from postrl.data.loading import DataError


def hinted_prompt(row, template: str):
    """`row.prompt` with its last user turn (or the string prompt) replaced by `template` rendered."""
    if row.answer is None:
        raise DataError(f"row {row.index + 1}: raft.rationalize needs the reference answer, but the row has no answer "
                        "(set data.columns.answer to the column holding it, or turn raft.rationalize off)")
    if isinstance(row.prompt, str):
        return _render(template, row, row.prompt)
    messages = copy.deepcopy(row.prompt)
    last = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if last is None:
        raise DataError(f"row {row.index + 1}: raft.hint_template replaces the prompt's last user message, but the "
                        "prompt has none")
    last["content"] = _render(template, row, last["content"])
    return messages


def _render(template: str, row, prompt_text: str) -> str:
    fields = {**row.columns, "answer": row.answer, "prompt": prompt_text}
    try:
        return template.format(**fields)
    except KeyError as e:
        raise DataError(f"row {row.index + 1}: raft.hint_template uses {{{e.args[0]}}} but the row has no column "
                        f"{e.args[0]!r}; available fields: {', '.join(sorted(fields))}") from None
    except (IndexError, ValueError, AttributeError) as e:
        raise DataError(f"raft.hint_template {template!r} is not a valid format string ({e}); use named fields "
                        "like {prompt} and {answer}, and write literal braces as {{ and }}") from None


@dataclass
class Rationalized:
    """What a rationalisation pass adds to a round."""

    examples: list[tuple[list[int], list[int]]]
    """(input ids, completion mask): original prompt ids, then the completion sampled after the hint."""
    failed: int
    """Prompts of the round with nothing kept (the ones re-prompted)."""
    solved: int
    """Failed prompts for which at least one hinted completion was kept."""


def rationalize(engine, tokenizer, rewards, rows: list, prompt_ids: list[list[int]], failed: list[int], params,
                *, data_cfg, template: str, keep: str, threshold: float, seed: int) -> Rationalized:
    """Hinted retries of the prompts `failed` (indices into `rows` / `prompt_ids`)."""
    from postrl.trainers.raft import select_completions, sft_examples
    from postrl.trainers.scoring import score_batch

    if not failed:
        return Rationalized([], 0, 0)
    hinted = [copy.copy(rows[i]) for i in failed]
    for h in hinted:
        h.prompt = hinted_prompt(h, template)
    ids, kept_index = encode_prompts(tokenizer, hinted, data_cfg)  # data.long_prompts applies to hinted prompts
    encoded = set(kept_index)
    retry = [i for i in failed if rows[i].index in encoded]
    if not retry:
        return Rationalized([], len(failed), 0)
    batch = engine.generate(ids, params, seed=seed)
    result = score_batch(batch, [rows[i] for i in retry], tokenizer, rewards)
    kept = select_completions(result.total, batch.group_ids, keep=keep, threshold=threshold)
    examples = sft_examples(batch, kept, prompts=[prompt_ids[i] for i in retry])
    return Rationalized(examples, len(failed), len({int(batch.group_ids[k]) for k in kept}))
