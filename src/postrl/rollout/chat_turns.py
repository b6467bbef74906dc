"""Token ids of a conversation that grows one message at a time, never re-tokenising the past.

A multi-turn episode is `prompt ids + action_1 + observation_1 + action_2 + ...`, where the
actions are exactly the tokens the engine sampled and each observation's ids are the chat
template's rendering of the new message plus the assistant generation prompt, computed as a
SUFFIX of the rendered conversation:

    before = render([..., assistant: X])                     (no generation prompt)
    after  = render([..., assistant: X, role: observation], add_generation_prompt=True)
    suffix = after[len(before):]                             (an error unless `after` starts with `before`)

with a fixed stand-in X for the model's text, so a template that rewrites earlier turns (say,
strips reasoning from past assistant messages) cannot change a token already sampled. The
template closes an assistant message with some text (`<|im_end|>\\n` for Qwen): when the action
ended with the EOS token that starts that text, only the rest (`\\n`) is added; an action cut by
a length limit or stop string gets the whole closing text. Observation ids = tokens of
`rest of the closing + suffix`; they are context, never trained on (loss_mask 0).

Without a chat template (or with `data.chat_template: never`) the plain format is used:
messages are `role: content` lines, the first observation ends with `assistant: `, and each
later observation is `\\n{role}: {text}\\nassistant: `.
"""

from __future__ import annotations

_STANDIN = "\u2063postrl-action\u2063"  # text no template rewrites and no model emits
_TASK = "\u2063postrl-task\u2063"


class ChatRenderer:
    """Renders the first observation and each later one to token ids for one tokenizer."""

    def __init__(self, tokenizer, *, plain: bool | None = None, tools: list[str] | tuple = (),
                 system_prompt: str | None = None):
        """`plain`: use the plain format (default: when the tokenizer has no chat template);
        `tools`: tool names shown in the first observation (`envs.tools.render_chat`);
        `system_prompt`: a system message put before a text first observation."""
        self.tokenizer = tokenizer
        self.plain = getattr(tokenizer, "chat_template", None) is None if plain is None else plain
        self.tools = list(tools)
        self.system_prompt = system_prompt
        self._roles: dict[str, str] = {}

    # -------------------------------------------------------------------------------- first
    def first_messages(self, first: str | list[dict]) -> list[dict]:
        """The first observation as chat messages (text becomes a user message)."""
        if isinstance(first, str):
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            return system + [{"role": "user", "content": first}]
        if not isinstance(first, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                  for m in first):
            raise TypeError(f"env.reset must return a str or a list of {{'role', 'content'}} messages, "
                            f"got {type(first).__name__}: {str(first)[:80]!r}")
        return list(first)

    def first_ids(self, first: str | list[dict]) -> list[int]:
        """Token ids of the first observation, ending with the assistant generation prompt."""
        messages = self.first_messages(first)
        if self.plain:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        elif self.tools:
            from postrl.envs.tools import render_chat

            text = render_chat(self.tokenizer, messages, self.tools, add_generation_prompt=True)
        else:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.encode(text)

    # ----------------------------------------------------------------------------- later turns
    def role(self, wanted: str) -> str:
        """`wanted` if the template renders that role, else "user" (checked once per role)."""
        if self.plain or wanted == "user":
            return wanted
        if wanted not in self._roles:
            try:
                text = self._render([{"role": "user", "content": _TASK},
                                     {"role": "assistant", "content": _STANDIN},
                                     {"role": wanted, "content": _TASK + "2"}], True)
                self._roles[wanted] = wanted if _TASK + "2" in text else "user"
            except Exception:  # noqa: BLE001 - a template that rejects the role cannot show it
                self._roles[wanted] = "user"
        return self._roles[wanted]

    def observation_text(self, role: str, text: str, *, action_ended_with: str | None) -> str:
        """The text appended after an action: the rest of the assistant closing, the new message
        and the generation prompt. `action_ended_with`: the decoded last action token if it was
        an EOS/stop token, else None."""
        role = self.role(role)
        if self.plain:
            return f"\n{role}: {text}\nassistant: "
        base = [{"role": "user", "content": _TASK}, {"role": "assistant", "content": _STANDIN}]
        before = self._render(base, False)
        after = self._render(base + [{"role": role, "content": text}], True)
        if not after.startswith(before):
            raise ValueError("the chat template renders earlier turns differently once a new message is added, "
                             "so observation tokens cannot be appended as a suffix; use a template whose "
                             "rendering of a conversation is a prefix of the rendering of its continuation")
        closing = before[before.rindex(_STANDIN) + len(_STANDIN):]
        if action_ended_with and closing.startswith(action_ended_with):
            closing = closing[len(action_ended_with):]
        return closing + after[len(before):]

    def observation_ids(self, role: str, text: str, *, action_ended_with: str | None) -> list[int]:
        return self.encode(self.observation_text(role, text, action_ended_with=action_ended_with))

    def message_ids(self, role: str, text: str) -> list[int]:
        """Ids of a new message + generation prompt after a CLOSED assistant turn (history policies
        that insert text, e.g. a placeholder for dropped observations)."""
        return self.observation_ids(role, text, action_ended_with=None if self.plain else self._closing())

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _closing(self) -> str:
        before = self._render([{"role": "user", "content": _TASK}, {"role": "assistant", "content": _STANDIN}], False)
        return before[before.rindex(_STANDIN) + len(_STANDIN):]

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
