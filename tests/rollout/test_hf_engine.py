"""The hf engine: same greedy tokens as HF generate, exact behaviour log-probs, masks, stops, and
sampled tokens that do not depend on micro-batching, dropped rows, sharding or the cache kind."""

import warnings

import pytest
import torch

from postrl.learner.logprobs import completion_logprobs
from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout.batch import RolloutBatch
from postrl.rollout.engines import SamplingParams
from postrl.rollout.hf_engine import HFEngine


def test_greedy_matches_hf_generate_with_left_padding(tiny):
    tok, model, prompts = tiny
    ours = HFEngine(model, tok).generate(prompts, SamplingParams(n=1, max_new_tokens=6, greedy=True))
    for i, p in enumerate(prompts):  # HF generate one prompt at a time: no padding involved
        ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(p):]
        n = int(ours.completion_mask[i].sum())
        assert ours.completion_ids[i, :n].tolist() == ref[:n].tolist()


def test_behavior_logprobs_equal_the_learners_logprobs(tiny):
    tok, model, prompts = tiny
    batch = HFEngine(model, tok).generate(prompts, SamplingParams(n=4, temperature=0.7, max_new_tokens=6), seed=1)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, batch, temperature=0.7)
    assert torch.allclose(logp * batch.loss_mask, batch.behavior_logprobs, atol=1e-5)


def test_n_samples_per_prompt_share_a_group_and_seed_reproduces(tiny):
    tok, model, prompts = tiny
    engine = HFEngine(model, tok)
    a = engine.generate(prompts, SamplingParams(n=3, max_new_tokens=5), seed=7)
    b = engine.generate(prompts, SamplingParams(n=3, max_new_tokens=5), seed=7)
    assert a.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.prompt_ids[3], a.prompt_ids[4])


def test_micro_batches_do_not_change_greedy_results(tiny):
    tok, model, prompts = tiny
    p = SamplingParams(n=2, max_new_tokens=5, greedy=True)
    one = HFEngine(model, tok, micro_batch_size=64).generate(prompts, p)
    many = HFEngine(model, tok, micro_batch_size=2).generate(prompts, p)
    assert torch.equal(one.completion_ids, many.completion_ids)


def test_eos_ends_a_sequence_and_is_kept_in_the_mask():
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    bias = torch.zeros(len(tok))
    bias[tok.eos_token_id] = 100.0  # EOS becomes the argmax after every context
    model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    batch = HFEngine(model, tok).generate([[5, 6]], SamplingParams(n=1, max_new_tokens=4, greedy=True))
    assert batch.completion_mask.tolist() == [[1]]  # trimmed: one real token, EOS itself
    assert batch.completion_ids[0, 0] == tok.eos_token_id and batch.metadata["finish_reason"] == ["stop"]


def test_length_limit_sets_finish_reason_length(tiny):
    tok, model, prompts = tiny
    batch = HFEngine(model, tok).generate(prompts[:1], SamplingParams(n=1, max_new_tokens=2, greedy=True))
    if batch.completion_mask.sum() == 2:
        assert batch.metadata["finish_reason"] == ["length"]


def test_stop_strings_end_generation_after_the_match(tiny):
    tok, model, prompts = tiny
    engine = HFEngine(model, tok)
    free = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=8, greedy=True))
    text = tok.decode(free.completion_ids[0][free.completion_mask[0].bool()])
    stop = text[1:3] if len(text) >= 3 else text[:1]
    stopped = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=8, greedy=True, stop=[stop]))
    out = tok.decode(stopped.completion_ids[0][stopped.completion_mask[0].bool()])
    assert out.endswith(stop) and len(out) <= len(text) and stopped.metadata["finish_reason"][0] == "stop"


def test_top_k_one_is_greedy(tiny):
    tok, model, prompts = tiny
    engine = HFEngine(model, tok)
    greedy = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=5, greedy=True))
    topk = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=5, top_k=1), seed=3)
    assert torch.equal(greedy.completion_ids, topk.completion_ids)


def test_batch_concat_repads_prompts_left_and_completions_right(tiny):
    tok, model, prompts = tiny
    engine = HFEngine(model, tok)
    a = engine.generate(prompts[:1], SamplingParams(n=1, max_new_tokens=2, greedy=True))
    b = engine.generate(prompts[1:2], SamplingParams(n=1, max_new_tokens=5, greedy=True))
    both = RolloutBatch.concat([a, b])
    assert both.prompt_ids.shape[1] == max(a.prompt_ids.shape[1], b.prompt_ids.shape[1])
    assert both.prompt_mask[0, -1] == 1 and both.completion_mask[0, 0] == 1
    assert torch.equal(both.select([1]).trimmed().completion_ids, b.completion_ids[:, :both.completion_mask[1].sum()])


def test_tiny_top_p_keeps_only_the_most_likely_token(tiny):
    tok, model, prompts = tiny
    engine = HFEngine(model, tok)
    greedy = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=5, greedy=True))
    nucleus = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=5, top_p=1e-6), seed=5)
    assert torch.equal(greedy.completion_ids, nucleus.completion_ids)


def eos_prone_model(tok, bias=3.0):
    """Tiny model whose EOS logit is raised, so rows finish at scattered steps when sampling."""
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        init_seed=4)
    boost = torch.zeros(len(tok))
    boost[tok.eos_token_id] = bias
    model.lm_head.register_forward_hook(lambda module, args, out: out + boost)
    return model.eval()


def decode_batch_sizes(model):
    """Records the batch size of every forward (prefill and decode steps) into the returned list."""
    sizes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)
    return sizes


def assert_same_rollouts(a, b):
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert a.metadata["finish_reason"] == b.metadata["finish_reason"]
    assert torch.allclose(a.behavior_logprobs, b.behavior_logprobs, atol=1e-5)


def test_sampled_tokens_do_not_depend_on_the_micro_batch_size(tiny):
    tok, model, prompts = tiny
    p = SamplingParams(n=4, temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=6)
    one = HFEngine(model, tok, micro_batch_size=64).generate(prompts, p, seed=11)
    many = HFEngine(model, tok, micro_batch_size=3).generate(prompts, p, seed=11)
    assert_same_rollouts(one, many)
    assert len({tuple(r) for r in one.completion_ids.tolist()}) > 1  # rows draw from different streams


def test_a_prompt_is_prefilled_once_for_its_n_completions(tiny):
    tok, _, prompts = tiny
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        init_seed=3).eval()
    sizes = decode_batch_sizes(model)
    p = SamplingParams(n=4, temperature=1.0, top_k=50, max_new_tokens=6)
    shared = HFEngine(model, tok).generate(prompts + prompts[:1], p, seed=4)
    assert sizes[0] == 3  # 4 prompts, 3 distinct: 3 prefill rows for 16 completions
    assert max(sizes) == 16
    sizes.clear()
    separate = HFEngine(model, tok, share_prefill=False).generate(prompts + prompts[:1], p, seed=4)
    assert sizes[0] == 16
    assert_same_rollouts(shared, separate)


def test_dropping_finished_rows_changes_nothing():
    tok = build_tokenizer()
    model = eos_prone_model(tok)
    sizes = decode_batch_sizes(model)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7=", "99-3="]]
    p = SamplingParams(n=4, temperature=1.0, max_new_tokens=10)
    kept = HFEngine(model, tok, compact_fraction=2.0).generate(prompts, p, seed=2)
    assert sizes[0] == 4 and set(sizes[1:]) == {16}  # one prefill row per prompt, then all 16 rows
    sizes.clear()
    dropped = HFEngine(model, tok, compact_fraction=0.0).generate(prompts, p, seed=2)
    assert min(sizes) < 16  # rows were really dropped ...
    assert_same_rollouts(kept, dropped)  # ... and nothing changed
    lengths = kept.completion_lengths()
    assert lengths.min() < lengths.max()  # the case is a real one: rows finished at different steps


def test_sharded_calls_concatenate_to_one_call(tiny):
    tok, model, prompts = tiny
    engine = HFEngine(model, tok)
    p = SamplingParams(n=3, temperature=0.9, max_new_tokens=5)
    whole = engine.generate(prompts, p, seed=5)
    shards = [engine.generate(prompts[:1], p, seed=5, first_index=0),
              engine.generate(prompts[1:], p, seed=5, first_index=1)]
    assert shards[1].group_ids.tolist() == [0, 0, 0, 1, 1, 1]  # group ids stay local to the call
    assert_same_rollouts(whole, RolloutBatch.concat(shards))
    other = engine.generate(prompts[1:], p, seed=5, first_index=0)  # the offset is what keys the streams
    assert not torch.equal(other.completion_ids, RolloutBatch.concat(shards[1:]).completion_ids)


def test_llama_uses_the_static_cache_and_matches_hf_generate():
    tok = build_tokenizer()
    model = build_model(tok, arch="llama", hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                        intermediate_size=64, init_seed=1).eval()
    engine = HFEngine(model, tok)
    assert engine.cache_fallback is None
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["5*5=", "100+1=", "3="]]
    ours = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=6, greedy=True))
    for i, p in enumerate(prompts):
        ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(p):]
        n = int(ours.completion_mask[i].sum())
        assert ours.completion_ids[i, :n].tolist() == ref[:n].tolist()


def test_dynamic_cache_fallback_samples_the_same_tokens():
    tok = build_tokenizer()
    static_model = eos_prone_model(tok, bias=2.0)
    dynamic_model = eos_prone_model(tok, bias=2.0)
    dynamic_model._can_compile_fullgraph = False  # as a model without static-cache support declares
    with pytest.warns(UserWarning, match="dynamic KV cache"):
        fallback = HFEngine(dynamic_model, tok, compact_fraction=0.0)
    assert "_can_compile_fullgraph" in fallback.cache_fallback
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7="]]
    p = SamplingParams(n=3, temperature=0.8, top_k=20, max_new_tokens=8)
    assert_same_rollouts(HFEngine(static_model, tok).generate(prompts, p, seed=9), fallback.generate(prompts, p, seed=9))


@pytest.mark.slow
@pytest.mark.compile
def test_compiled_decode_samples_the_same_tokens():
    tok = build_tokenizer()
    model = eos_prone_model(tok, bias=2.0)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7="]]
    p = SamplingParams(n=4, temperature=0.8, max_new_tokens=8)
    eager = HFEngine(model, tok).generate(prompts, p, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # inductor's own warnings on CPU
        compiled = HFEngine(model, tok, compile=True, compact_fraction=0.0).generate(prompts, p, seed=3)
    assert_same_rollouts(eager, compiled)
