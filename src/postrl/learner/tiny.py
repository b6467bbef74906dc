"""The embedded default model: a tiny Qwen2/Llama from a config and a character tokenizer.

Nothing here downloads anything. `build_tokenizer()` returns a real `PreTrainedTokenizerFast`
(one token per character, Qwen-style special tokens and chat template) that saves and reloads
through `AutoTokenizer`; `build_model()` returns a real `Qwen2ForCausalLM`/`LlamaForCausalLM`
that saves to safetensors and reloads through `AutoModelForCausalLM`. Demo and tests use them,
so the same loading code serves the tiny model and a hub model.
"""

from __future__ import annotations

import torch

PAD, EOS = "<|endoftext|>", "<|end|>"
ROLES = ("system", "user", "assistant", "tool")
SPECIALS = [PAD, EOS] + [f"<|{r}|>" for r in ROLES]

# A compact chat template: one special token opens each turn and <|end|> (EOS) closes the
# assistant's. "12+34=" renders as <|user|>12+34=<|assistant|>: 8 tokens where a Qwen-style
# template takes 23, which matters when the model itself is this small.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ '<|end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable-character map, the alphabet of byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def build_tokenizer():
    """A character-level fast tokenizer with a chat template; EOS is `<|end|>`.

    It is a byte-level BPE with the 256 single-byte tokens and no merges: one token per ASCII
    character. Being byte-level is what makes it reload identically through `AutoTokenizer`
    next to a Qwen2 config (transformers maps qwen2 to `Qwen2Tokenizer`, a byte-level BPE).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    b2u = _bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIALS + [b2u[b] for b in range(256)])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, *, arch: str = "qwen2", hidden_size: int = 128, num_layers: int = 4,
                num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 512,
                max_position_embeddings: int = 512, init_seed: int = 0):
    """A randomly initialised causal LM of the given size, deterministic in `init_seed`."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = cls(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, tie_word_embeddings=True,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(init_seed)
    try:
        model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model
