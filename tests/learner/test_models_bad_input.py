"""Bad models and tokenizers fail at load time with the key and the fix: no pad or EOS token, a chat
template that is neither text nor a file or does not render, a reference or critic backbone with
another vocabulary than the policy."""

import pytest
import torch

from postrl.config import ModelSection
from postrl.learner.models import check_vocabulary, load_model, load_reference, load_tokenizer, model_context
from postrl.learner.tiny import CHAT_TEMPLATE, SPECIALS, _bytes_to_unicode, build_model, build_tokenizer

SMALL = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 32}


def char_tokenizer(swap: tuple[str, str] | None = None, pad: str | None = "<|endoftext|>",
                   eos: str | None = "<|end|>"):
    """The tiny tokenizer (character c has id 6 + ord(c)), optionally with two characters' ids swapped
    or without pad/EOS tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    b2u = _bytes_to_unicode()
    chars = [b2u[b] for b in range(256)]
    if swap:
        i, j = ord(swap[0]), ord(swap[1])
        chars[i], chars[j] = chars[j], chars[i]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(SPECIALS + chars)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=eos)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def saved_model(path, tokenizer, **tiny):
    model = build_model(tokenizer, **{**SMALL, **tiny})
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_a_tokenizer_without_pad_or_eos_is_refused_with_the_fix(tmp_path):
    char_tokenizer(pad=None, eos=None).save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="has neither a pad nor an EOS token; give one with model.tokenizer"):
        load_tokenizer(ModelSection(tokenizer=str(tmp_path / "bare")))


def test_a_tokenizer_without_pad_pads_with_eos(tmp_path):
    char_tokenizer(pad=None).save_pretrained(tmp_path / "eos_only")
    tok = load_tokenizer(ModelSection(tokenizer=str(tmp_path / "eos_only")))
    assert tok.pad_token == "<|end|>" and tok.padding_side == "left"


def test_chat_template_is_text_or_an_existing_file(tmp_path):
    with pytest.raises(ValueError, match=r"model.chat_template = 'templates/chat.jinja' is neither a Jinja template"):
        load_tokenizer(ModelSection(chat_template="templates/chat.jinja"))
    (tmp_path / "t.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    tok = load_tokenizer(ModelSection(chat_template=str(tmp_path / "t.jinja")))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi"
    (tmp_path / "plain.txt").write_text("just words")
    with pytest.raises(ValueError, match="holds no Jinja template"):
        load_tokenizer(ModelSection(chat_template=str(tmp_path / "plain.txt")))


def test_a_chat_template_that_does_not_render_fails_at_load():
    with pytest.raises(ValueError, match=r"model.chat_template: the template fails on a one-message conversation "
                                         r"\(TemplateSyntaxError"):
        load_tokenizer(ModelSection(chat_template="{% for m in messages %}{{ m['content'] }}"))
    with pytest.raises(ValueError, match=r"\(UndefinedError"):
        load_tokenizer(ModelSection(chat_template="{{ messages[0]['content'].nope() }}"))


def test_a_reference_with_another_vocabulary_of_the_same_size_is_refused(tmp_path):
    tok = build_tokenizer()
    policy = load_model(ModelSection(tiny=SMALL), tok, torch.device("cpu"))
    other = saved_model(tmp_path / "swapped", char_tokenizer(swap=("1", "2")))
    with pytest.raises(ValueError, match=r"model.ref_model '.*swapped' has another vocabulary than the policy's "
                                         r"tokenizer \(2 tokens differ, e.g. '1': 55 vs 56, '2': 56 vs 55"):
        load_reference(ModelSection(tiny=SMALL, ref_model=other), policy, tok, torch.device("cpu"))
    same = saved_model(tmp_path / "same", char_tokenizer())
    assert load_reference(ModelSection(tiny=SMALL, ref_model=same), policy, tok, torch.device("cpu")) is not None


def test_a_reference_with_another_vocabulary_size_is_refused(tmp_path):
    tok = build_tokenizer()
    policy = load_model(ModelSection(tiny=SMALL), tok, torch.device("cpu"))
    bigger = build_model(tok, **SMALL)
    bigger.resize_token_embeddings(len(tok) + 8)
    bigger.save_pretrained(tmp_path / "bigger")  # no tokenizer files: only the sizes can be compared
    with pytest.raises(ValueError, match=r"different vocabulary size from the policy \(270 embedding rows vs 262\)"):
        load_reference(ModelSection(tiny=SMALL, ref_model=str(tmp_path / "bigger")), policy, tok, torch.device("cpu"))


def test_a_model_smaller_than_the_tokenizer_is_refused():
    tok = build_tokenizer()
    small = build_model(tok, **SMALL)
    small.resize_token_embeddings(100)
    with pytest.raises(ValueError, match=r"critic.name_or_path 'x': its embedding has 100 rows but the policy's "
                                         r"tokenizer has 262 tokens"):
        check_vocabulary("x", small, tok, "critic.name_or_path")


def test_a_critic_backbone_with_another_vocabulary_is_refused(tmp_path):
    from postrl.config import RLConfig, resolve
    from postrl.learner.critic import load_value_model

    other = saved_model(tmp_path / "swapped", char_tokenizer(swap=("a", "b")))
    cfg = resolve(RLConfig, {"model": {"tiny": SMALL}, "algorithm": {"advantage": "gae"},
                             "critic": {"name_or_path": other}})
    with pytest.raises(ValueError, match=r"critic.name_or_path '.*swapped' has another vocabulary"):
        load_value_model(cfg, build_tokenizer(), torch.device("cpu"))


def test_model_context_reads_the_positions_without_loading_weights(tmp_path):
    assert model_context(ModelSection(tiny={**SMALL, "max_position_embeddings": 64})) == 64
    path = saved_model(tmp_path / "m", build_tokenizer(), max_position_embeddings=96)
    assert model_context(ModelSection(name_or_path=path)) == 96
    assert model_context(ModelSection(name_or_path=str(tmp_path / "missing"))) is None


def test_generation_without_any_eos_token_is_refused_with_the_fix(tmp_path):
    from postrl.rollout.hf_engine import HFEngine

    tok = char_tokenizer(eos=None)  # a pad token, no EOS
    model = build_model(tok, **SMALL)
    model.generation_config.eos_token_id = None
    with pytest.raises(ValueError, match="could never stop; use a tokenizer with eos_token set"):
        HFEngine(model, tok)


def test_a_critic_estimator_whose_value_model_cannot_load_names_the_key(tmp_path):
    from postrl.config import RLConfig, resolve
    from postrl.learner.critic import load_value_model

    cfg = resolve(RLConfig, {"model": {"tiny": SMALL}, "algorithm": {"advantage": "gae"},
                             "critic": {"name_or_path": str(tmp_path / "no_such_model")}})
    with pytest.raises(ValueError, match=r"critic.name_or_path: could not load '.*no_such_model'"):
        load_value_model(cfg, build_tokenizer(), torch.device("cpu"))
