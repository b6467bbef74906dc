"""The vllm engine: import guard, vLLM outputs -> RolloutBatch, seeds, sampling arguments and the
LoRA-merging weight sync run on CPU with fake vLLM output objects; generation itself needs a GPU."""

import copy
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field

import pytest
import torch

from postrl.learner.tiny import build_model, build_tokenizer
from postrl.rollout import vllm_engine
from postrl.rollout.engines import SamplingParams
from postrl.rollout.vllm_engine import (INSTALL_HINT, VLLMEngine, batch_from_outputs, lora_scalings,
                                        request_seeds, sampling_kwargs, vllm_weights)

PAD = 0


# Fakes with the attributes of vllm.logprobs.Logprob, vllm.outputs.CompletionOutput/RequestOutput.
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None
    index: int = 0
    text: str = ""
    cumulative_logprob: float | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    request_id: str = "0"
    prompt: str | None = None
    finished: bool = True
    prompt_logprobs: list | None = field(default=None)


def completion(tokens, logps, finish="stop", extra=None):
    """A CompletionOutput whose per-position dict holds the sampled token (+ `extra` top tokens)."""
    steps = [{t: Logprob(lp, rank=1), **(extra or {})} for t, lp in zip(tokens, logps)]
    return CompletionOutput(token_ids=list(tokens), logprobs=steps, finish_reason=finish)


# ---------------------------------------------------------------------------------- import guard
def test_module_imports_without_vllm_and_construction_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    module = importlib.reload(vllm_engine)
    with pytest.raises(ImportError, match=r"pip install 'postrl\[vllm\]' on a CUDA machine"):
        module.VLLMEngine("some/model", build_tokenizer())
    assert "postrl[vllm]" in INSTALL_HINT


# ------------------------------------------------------------------------ outputs -> RolloutBatch
def test_outputs_become_left_padded_prompts_and_right_padded_completions():
    # 2 prompts x n=2 samples, requests prompt-major as the engine issues them
    outputs = [
        RequestOutput([5, 6, 7], [completion([10, 11, 1], [-0.1, -0.2, -0.3], "stop")]),
        RequestOutput([5, 6, 7], [completion([12], [-0.5], "stop")]),
        RequestOutput([8], [completion([13, 14], [-1.0, -2.0], "length")]),
        RequestOutput([8], [completion([15, 16], [-0.25, -0.75], "length")]),
    ]
    b = batch_from_outputs(outputs, [0, 0, 1, 1], pad_id=PAD)
    assert b.prompt_ids.tolist() == [[5, 6, 7], [5, 6, 7], [PAD, PAD, 8], [PAD, PAD, 8]]
    assert b.prompt_mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert b.completion_ids.tolist() == [[10, 11, 1], [12, PAD, PAD], [13, 14, PAD], [15, 16, PAD]]
    assert b.completion_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 0]]
    assert b.loss_mask.dtype == torch.float32 and torch.equal(b.loss_mask, b.completion_mask.float())
    expected = torch.tensor([[-0.1, -0.2, -0.3], [-0.5, 0, 0], [-1.0, -2.0, 0], [-0.25, -0.75, 0]])
    assert torch.equal(b.behavior_logprobs, expected)  # zero on padding
    assert b.group_ids.tolist() == [0, 0, 1, 1]
    assert b.metadata["finish_reason"] == ["stop", "stop", "length", "length"]
    # one contiguous sequence per row: the prompt flush right, then the completion
    assert b.input_ids()[2].tolist() == [PAD, PAD, 8, 13, 14, PAD]


def test_behavior_logprob_is_the_sampled_tokens_entry_among_top_logprobs():
    # with logprobs=k > 0 vLLM also returns the top-k tokens; only the sampled one counts
    top = {99: Logprob(-0.01, rank=1), 98: Logprob(-3.0, rank=2)}
    out = RequestOutput([4], [completion([20, 21], [-2.5, -4.0], extra=top)])
    b = batch_from_outputs([out], [0], pad_id=PAD)
    assert b.behavior_logprobs.tolist() == [[-2.5, -4.0]]


def test_several_completions_of_one_request_share_its_prompt_and_group():
    out = RequestOutput([3, 4], [completion([7], [-1.0]), completion([8, 9], [-0.5, -0.5], "length")])
    b = batch_from_outputs([out], [5], pad_id=PAD)
    assert b.group_ids.tolist() == [5, 5]
    assert b.prompt_ids.tolist() == [[3, 4], [3, 4]]
    assert b.completion_ids.tolist() == [[7, PAD], [8, 9]]


def test_an_empty_completion_is_a_row_of_padding():
    outputs = [RequestOutput([3], [CompletionOutput([], None, "abort")]),
               RequestOutput([3], [completion([6], [-1.0])])]
    b = batch_from_outputs(outputs, [0, 0], pad_id=PAD)
    assert b.completion_mask.tolist() == [[0], [1]] and b.behavior_logprobs[0].tolist() == [0.0]
    assert b.metadata["finish_reason"] == ["abort", "stop"]


def test_missing_or_short_logprobs_are_errors():
    with pytest.raises(ValueError, match="logprobs=0"):
        batch_from_outputs([RequestOutput([3], [CompletionOutput([6], None, "stop")])], [0], PAD)
    short = CompletionOutput([6, 7], [{6: Logprob(-1.0)}], "stop")
    with pytest.raises(ValueError, match="1 log-probs for 2 tokens"):
        batch_from_outputs([RequestOutput([3], [short])], [0], PAD)


# ------------------------------------------------------------------------- seeds and sampling
def test_request_seeds_of_a_shard_equal_the_whole_batchs():
    whole = request_seeds(4, 3, seed=11)
    shards = request_seeds(2, 3, seed=11, first_index=0) + request_seeds(2, 3, seed=11, first_index=2)
    assert shards == whole  # ShardedEngine: each rank generates with first_index = its offset


def test_request_seeds_are_distinct_and_fit_in_63_bits():
    seeds = [s for step in range(3) for s in request_seeds(10, 4, seed=step)]
    assert len(set(seeds)) == len(seeds) == 120
    assert all(0 <= s < 2**63 for s in seeds)
    assert request_seeds(2, 2, seed=5) == request_seeds(2, 2, seed=5)


def test_sampling_kwargs_map_postrl_params_to_vllm():
    p = SamplingParams(n=8, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=32)
    kw = sampling_kwargs(p, seed=123, eos_ids=[1, 2])
    assert kw == {"n": 1, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "seed": 123, "max_tokens": 32,
                  "logprobs": 0, "stop_token_ids": [1, 2], "stop": None, "include_stop_str_in_output": True,
                  "detokenize": False, "skip_special_tokens": False}


def test_greedy_is_temperature_zero_and_stop_strings_need_detokenizing():
    kw = sampling_kwargs(SamplingParams(temperature=0.7, top_p=0.5, top_k=3, greedy=True, stop=["\n"]),
                         seed=9, eos_ids=[1])
    assert (kw["temperature"], kw["top_p"], kw["top_k"], kw["seed"]) == (0.0, 1.0, 0, None)
    assert kw["stop"] == ["\n"] and kw["detokenize"] is True


# ------------------------------------------------------------------------------- weight sync
def _tiny(seed=1):
    tok = build_tokenizer()
    return tok, build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                            intermediate_size=64, init_seed=seed)


def test_plain_weights_pass_through_under_their_own_names():
    _, model = _tiny()
    state = model.state_dict()
    out = dict(vllm_weights(state))
    assert out.keys() == state.keys() and all(out[k] is state[k] for k in state)
    assert lora_scalings(model) is None


@pytest.mark.parametrize("rslora, scaling", [(False, 8 / 4), (True, 8 / 4**0.5)])
def test_lora_is_merged_like_peft_merge_and_unload(rslora, scaling):
    from peft import LoraConfig, get_peft_model

    _, model = _tiny()
    base_q = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_rslora=rslora, task_type="CAUSAL_LM",
                                                  target_modules=["q_proj", "down_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero: a fresh adapter would merge to nothing
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    scalings = lora_scalings(peft_model)
    assert len(scalings) == 2 and all(v == pytest.approx(scaling) for v in scalings.values())
    state = peft_model.state_dict()
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    for given in (scalings, scaling):  # per module (colocated) or one number (Ray)
        ours = dict(vllm_weights(state, given))
        assert ours.keys() == reference.keys()
        for k in reference:
            torch.testing.assert_close(ours[k], reference[k], rtol=1e-6, atol=1e-6)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(ours[q], base_q)  # the adapter did change the synced weight


def test_lora_weights_without_a_scaling_or_with_dora_are_refused():
    state = {"base_model.model.l.base_layer.weight": torch.zeros(2, 2),
             "base_model.model.l.lora_A.default.weight": torch.zeros(1, 2),
             "base_model.model.l.lora_B.default.weight": torch.zeros(2, 1)}
    with pytest.raises(ValueError, match="lora_scaling=alpha/r"):
        dict(vllm_weights(state))
    dora = {**state, "base_model.model.l.lora_magnitude_vector.default.weight": torch.ones(2)}
    with pytest.raises(ValueError, match="DoRA"):
        dict(vllm_weights(dora, 1.0))


# ------------------------------------------------------------------------ on a GPU with vLLM
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
                               reason="needs a CUDA GPU and vLLM")


@needs_gpu
def test_vllm_samples_reproducibly_with_learner_logprobs_and_follows_weight_syncs():
    from postrl.learner.logprobs import completion_logprobs

    tok = build_tokenizer()
    # head_dim 64: vLLM's attention kernels do not take the CPU tests' head_dim of 16
    model = build_model(tok, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
                        intermediate_size=256, init_seed=3).cuda().eval()
    engine = VLLMEngine(model, tok, gpu_memory_utilization=0.2, dtype="float32", enforce_eager=True)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ["1+1=", "12+34=", "7="]]
    params = SamplingParams(n=4, temperature=0.7, max_new_tokens=6)

    def check_against(model):
        batch = engine.generate(prompts, params, seed=1)
        assert batch.group_ids.tolist() == [i for i in range(3) for _ in range(4)]
        with torch.no_grad():
            logp, _ = completion_logprobs(model, batch.to("cuda"), temperature=0.7)
        torch.testing.assert_close(logp.cpu() * batch.loss_mask, batch.behavior_logprobs, atol=1e-3, rtol=0)
        return batch

    first = check_against(model)
    assert torch.equal(engine.generate(prompts, params, seed=1).completion_ids, first.completion_ids)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    engine.sync_weights(model)
    check_against(model)  # the new samples come from the new weights
