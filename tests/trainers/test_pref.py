"""`postrl pref` on the tiny model: reference caching, reference-free runs, data formats and their
loss inputs, micro-batch accumulation, exact resume and the command line."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from postrl.algorithms import PREFERENCE_LOSSES
from postrl.algorithms.policy_losses import LossOutput
from postrl.algorithms.preference import PrefInputs
from postrl.config import PrefConfig, resolve
from postrl.data.loading import DataError
from postrl.registry import Entry
from postrl.trainers import pref
from postrl.trainers import pref_batch as pb

from helpers import kill_and_resume, same_final_weights

TINY = {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                                         "intermediate_size": 64}}


def config(tmp_path, name="run", **overrides) -> PrefConfig:
    raw = {"output_dir": str(tmp_path / name), "model": TINY,
           "data": {"source": "task:arithmetic_pairs", "task_kwargs": {"level": 1}, "limit": 24},
           "train": {"steps": 2, "batch_size": 8, "micro_batch_size": 4, "lr": 1e-3},
           "eval": {"limit": 6, "greedy": "never"}, "checkpoint": {"every": 1, "keep_last": 5},
           "logging": {"progress": False}}
    return resolve(PrefConfig, raw, overrides)


def register(monkeypatch, name, fn, needs):
    """A loss registered for one test only (the registry is restored afterwards)."""
    monkeypatch.setitem(PREFERENCE_LOSSES._entries, name, Entry(name, fn, "test", None, "test loss", {}, needs))


def no_reference(*_a, **_k):
    raise AssertionError("the reference model must not be loaded")


def logp_margin(inp: PrefInputs) -> LossOutput:  # reference-free: -log sigmoid(log pi(y_w) - log pi(y_l))
    return LossOutput(-torch.nn.functional.logsigmoid(inp.chosen_logps - inp.rejected_logps))


def kto_like(inp: PrefInputs) -> LossOutput:  # KTO's shape, beta 1, with the batch reference point z
    z = (inp.kl_logps - inp.kl_ref_logps).mean().clamp(min=0).detach()
    r = inp.chosen_logps - inp.chosen_ref_logps
    return LossOutput(torch.where(inp.labels > 0, 1 - torch.sigmoid(r - z), 1 - torch.sigmoid(z - r)))


# ------------------------------------------------------------------------------------ reference
def test_reference_runs_once_before_training_and_resume_reads_the_cache(tmp_path, monkeypatch):
    calls, loaded = [], []

    def counting_reference(*args, **kwargs):
        ref = pref_load_reference(*args, **kwargs)
        ref.register_forward_hook(lambda *_: calls.append(1))
        loaded.append(ref)
        return ref

    pref_load_reference = pref.load_reference
    monkeypatch.setattr(pref, "load_reference", counting_reference)
    cfg = config(tmp_path)
    summary = pref.train(cfg)
    n_train, n_eval = summary["train_examples"], summary["eval_examples"]
    # one forward per chunk of micro_batch_size examples, over the training and the held-out set
    assert len(loaded) == 1 and len(calls) == math.ceil(n_train / 4) + math.ceil(n_eval / 4)
    assert (cfg.run_dir / pb.CACHE_FILE).exists()

    monkeypatch.setattr(pref, "load_reference", no_reference)
    pref.train(config(tmp_path, **{"train.steps": 3}), resume=True)  # cache hit: no reference model at all


def test_a_changed_dataset_does_not_reuse_a_stale_cache(tmp_path):
    cfg = config(tmp_path)
    p = pref.Parts(cfg, torch.device("cpu"), *_model(cfg))
    pref.load_data(p)
    first = pref.reference_cache(p)
    p.examples["train"] = p.examples["train"][:5]
    assert len(pref.reference_cache(p)["train"]["sums"]) == 5 != len(first["train"]["sums"])


def test_reference_free_loss_loads_no_reference_model(tmp_path, monkeypatch):
    register(monkeypatch, "test_logp_margin", logp_margin, ())
    monkeypatch.setattr(pref, "load_reference", no_reference)
    cfg = config(tmp_path, **{"loss.name": "test_logp_margin"})
    assert not cfg.needs_reference
    summary = pref.train(cfg)
    assert not (cfg.run_dir / pb.CACHE_FILE).exists() and summary["final_loss"] > 0
    rec = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    # reference-free diagnostics are log-prob margins
    assert rec[1]["pref/margin"] == pytest.approx(rec[1]["logps/chosen"] - rec[1]["logps/rejected"], abs=1e-4)


# ----------------------------------------------------------------------------- formats -> inputs
def test_kto_style_loss_on_pairs_splits_them_and_gets_a_batch_reference_point(tmp_path, monkeypatch):
    seen = []

    def spy(inp):
        seen.append(inp)
        return kto_like(inp)

    register(monkeypatch, "test_kto", spy, ("reference", "kto_kl"))
    cfg = config(tmp_path, **{"loss.name": "test_kto"})
    summary = pref.train(cfg)
    assert summary["train_examples"] == 2 * 24  # each pair became a desirable and an undesirable example
    train_inputs = [x for x in seen if x.chosen_logps.requires_grad]
    for inp in train_inputs:
        assert inp.labels is not None and inp.rejected_logps is None
        # every micro-batch sees the whole batch's estimate: constant rows
        assert torch.all(inp.kl_logps == inp.kl_logps[0]) and torch.all(inp.kl_ref_logps == inp.kl_ref_logps[0])
        assert not inp.kl_logps.requires_grad


def test_kl_pairs_use_another_prompt(tmp_path):
    from postrl.trainers.pref_data import PrefExample, add_kl_pairs

    exs = [PrefExample([1], [[5]], "unpaired", True), PrefExample([1], [[6]], "unpaired", False),
           PrefExample([2], [[7]], "unpaired", True)]
    add_kl_pairs(exs)
    assert [e.kl_response for e in exs] == [[7], [7], [5]]
    with pytest.raises(DataError, match="every row has the same prompt"):
        add_kl_pairs(exs[:2])


def test_listwise_loss_gets_padded_lists_and_best_response_as_chosen(tmp_path, monkeypatch):
    seen = []

    def listwise(inp):  # softmax cross-entropy towards the best-scored response
        seen.append(inp)
        logits = torch.nan_to_num(inp.list_logps - inp.list_ref_logps, neginf=-1e9)
        return LossOutput(-torch.log_softmax(logits, -1).gather(-1, inp.scores.argmax(-1, keepdim=True))[:, 0])

    register(monkeypatch, "test_list", listwise, ("reference",))
    pref.train(config(tmp_path, **{"loss.name": "test_list", "data.source": "task:arithmetic_ranked",
                                   "data.task_kwargs": {"level": 1, "num_responses": 3}}))
    inp = next(x for x in seen if x.chosen_logps.requires_grad)  # not the format probe's dummy inputs
    assert inp.list_logps.shape[1] == 3 and inp.rejected_logps is None
    best = inp.scores.argmax(-1)
    assert torch.equal(inp.chosen_logps, inp.list_logps.gather(-1, best[:, None])[:, 0])


def test_token_level_inputs_match_the_sums(tmp_path, monkeypatch):
    seen = []

    def token_loss(inp):
        seen.append(inp)
        return LossOutput(-(inp.chosen_token_logps * inp.chosen_token_mask).sum(-1))

    register(monkeypatch, "test_tokens", token_loss, ("token_logps", "reference"))
    pref.train(config(tmp_path, **{"loss.name": "test_tokens", "train.steps": 1}))
    inp = seen[-1]
    assert torch.allclose((inp.chosen_token_logps * inp.chosen_token_mask).sum(-1), inp.chosen_logps)
    assert torch.equal(inp.chosen_token_mask.sum(-1), inp.chosen_lengths)
    assert torch.allclose((inp.rejected_token_ref_logps * inp.rejected_token_mask).sum(-1),
                          inp.rejected_ref_logps, atol=1e-5)


def test_margins_come_from_the_margin_column(tmp_path, monkeypatch):
    seen = []
    register(monkeypatch, "test_margin", lambda inp: seen.append(inp) or logp_margin(inp), ("margins",))
    rows = [{"prompt": f"{i}+1=", "chosen": str(i + 1), "rejected": str(i + 2), "margin": i / 10} for i in range(8)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pref.train(config(tmp_path, **{"loss.name": "test_margin", "data.source": str(data), "train.steps": 1}))
    margins = {float(torch.tensor(r["margin"])) for r in rows}
    inp = next(x for x in seen if x.chosen_logps.requires_grad)
    assert len(inp.margins) == 4 and set(inp.margins.tolist()) <= margins
    data.write_text(json.dumps({"prompt": "a", "chosen": "1", "rejected": "2"}) + "\n")
    with pytest.raises(DataError, match="column 'margin' is missing"):
        pref.train(config(tmp_path, name="run2", **{"loss.name": "test_margin", "data.source": str(data)}))


def test_ranked_data_for_a_pairwise_loss_names_the_losses_that_fit(tmp_path, monkeypatch):
    from postrl.config import ConfigError

    with pytest.raises(ConfigError, match=r"holds ranked rows, but loss.name='dpo' trains on paired data"):
        config(tmp_path, **{"data.source": "task:arithmetic_ranked"})


def test_pair_stats_by_hand():
    inp = PrefInputs(chosen_logps=torch.tensor([-1.0, -2.0]), chosen_lengths=torch.ones(2),
                     rejected_logps=torch.tensor([-3.0, -1.0]), rejected_lengths=torch.ones(2),
                     chosen_ref_logps=torch.tensor([-2.0, -2.0]), rejected_ref_logps=torch.tensor([-2.0, -2.0]))
    s = pb.pair_stats(inp)
    # chosen rewards -1-(-2)=1, -2-(-2)=0; rejected -3-(-2)=-1, -1-(-2)=1; margins 2, -1
    assert s["pref/margin"].tolist() == [2.0, -1.0] and s["pref/accuracy"].tolist() == [1.0, 0.0]
    ranked = PrefInputs(chosen_logps=torch.tensor([-1.0]), chosen_lengths=torch.ones(1),
                        list_logps=torch.tensor([[-1.0, -2.0, float("-inf")]]),
                        scores=torch.tensor([[2.0, 1.0, float("-inf")]]))
    # one scored pair (0 better than 1), reference-free: margin -1 - (-2) = 1; the absent third is ignored
    s = pb.pair_stats(ranked)
    assert s["pref/margin"].tolist() == [1.0] and s["pref/accuracy"].tolist() == [1.0]


# ---------------------------------------------------------------------- accumulation and resume
def _model(cfg):
    from postrl.learner.models import load_model, load_tokenizer

    tok = load_tokenizer(cfg.model)
    return tok, load_model(cfg.model, tok, torch.device("cpu"))


@pytest.mark.parametrize("loss", ["dpo", "test_kto"])
def test_micro_batches_accumulate_to_the_full_batch_gradient(tmp_path, monkeypatch, loss):
    register(monkeypatch, "test_kto", kto_like, ("reference", "kto_kl"))
    grads = []
    for micro in (8, 3):
        cfg = config(tmp_path, **{"loss.name": loss, "train.micro_batch_size": micro})
        p = pref.Parts(cfg, torch.device("cpu"), *_model(cfg))
        pref.load_data(p)
        p.ref = pref.reference_cache(p)
        p.model.zero_grad()
        stats = pref.train_step(p, list(range(8)))
        grads.append(([q.grad.clone() for q in p.model.parameters()], stats["loss"]))
    for a, b in zip(grads[0][0], grads[1][0]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert float(grads[0][1]) == pytest.approx(float(grads[1][1]), abs=1e-5)


def test_a_stopped_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    over = {"train.steps": 4, "train.schedule": "cosine", "train.warmup_steps": 1, "checkpoint.every": 2}
    pref.train(config(tmp_path, name="straight", **over))
    kill_and_resume(monkeypatch, pref, "train_step",
                    lambda resume: pref.train(config(tmp_path, name="stopped", **over), resume=resume))
    assert same_final_weights(tmp_path / "straight", tmp_path / "stopped")
    losses = [[json.loads(x).get("loss") for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
              for n in ("straight", "stopped")]
    assert losses[0] == losses[1]


def test_dpo_raises_the_margin_even_from_a_random_tiny_model(tmp_path):
    # measured on the data it trains on (eval_split = train): margin 0 -> 0.22, pair accuracy 0 -> 0.56
    out = pref.train(config(tmp_path, **{"data.task_kwargs": {"level": 2}, "data.limit": 256,
                                         "data.eval_split": "train", "eval.limit": 64, "train.steps": 30,
                                         "train.batch_size": 32, "train.micro_batch_size": 32}))
    assert out["pref_margin_before"] == 0.0 and out["pref_margin_after"] > 0.1
    assert out["pref_accuracy_after"] > 0.5


# ----------------------------------------------------------------------------------------- CLI
def test_cli_runs_and_reports_data_errors(tmp_path, capsys):
    from postrl.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"model": TINY, "data": {"task_kwargs": {"level": 1}, "limit": 8},
                               "train": {"steps": 1, "batch_size": 4}, "eval": {"limit": 4, "max_new_tokens": 3},
                               "logging": {"progress": False}}))
    assert main(["pref", str(cfg), "--out", str(tmp_path / "run"), "--set", "train.lr=1e-3"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["pref_steps"] == 1 and "accuracy_after" in summary  # greedy eval on the built-in task
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "chosen": "1", "reject": "2"}) + "\n")
    assert main(["pref", str(cfg), "--out", str(tmp_path / "run2"), "--set", f"data.source={data}"]) == 2
    assert "no column 'rejected' (did you mean 'reject'?" in capsys.readouterr().err


# ------------------------------------------------------------------------- every registered loss
def _offline_losses():
    from postrl.trainers.pref_data import SUPPORTED_NEEDS

    return [e.name for e in PREFERENCE_LOSSES if set(e.needs) <= set(SUPPORTED_NEEDS)]


@pytest.mark.parametrize("loss", _offline_losses())
def test_every_offline_loss_trains_on_data_it_takes(tmp_path, loss):
    from postrl.data.preference_tasks import arithmetic_pairs
    from postrl.trainers.pref_data import accepted_kinds

    ok = accepted_kinds(loss)
    source = {"paired": "task:arithmetic_pairs", "unpaired": "task:arithmetic_unpaired",
              "ranked": "task:arithmetic_ranked"}[next(k for k in ("paired", "unpaired", "ranked") if ok[k] is None)]
    if "rationales" in PREFERENCE_LOSSES.get(loss).needs:
        source = "task:arithmetic_rationale_pairs"
    if "margins" in PREFERENCE_LOSSES.get(loss).needs:  # another objective's margin: say, shorter is better
        rows = [{**r, "margin": float(len(r["rejected"]) - len(r["chosen"]))}
                for r in arithmetic_pairs("train", level=1, limit=24)]
        source = str(tmp_path / "pairs.jsonl")
        (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    online = {"online.max_new_tokens": 4} if "online_kl" in PREFERENCE_LOSSES.get(loss).needs else {}
    cfg = config(tmp_path, **{"loss.name": loss, "data.source": source, "train.steps": 2, **online})
    before = {k: v.clone() for k, v in load_file(str(_init_weights(tmp_path, cfg))).items()}
    summary = pref.train(cfg)
    after = load_file(str(cfg.run_dir / "final" / "model.safetensors"))
    assert math.isfinite(summary["final_loss"])
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (cfg.run_dir / pb.CACHE_FILE).exists() == ("reference" in PREFERENCE_LOSSES.get(loss).needs)


def _init_weights(tmp_path, cfg):
    tok, model = _model(cfg)
    model.save_pretrained(tmp_path / "init", safe_serialization=True)
    return tmp_path / "init" / "model.safetensors"


def test_lora_reference_is_the_adapter_free_policy(tmp_path):
    cfg = config(tmp_path, **{"model.lora": {"enabled": True, "r": 4}, "train.steps": 2})
    summary = pref.train(cfg)
    cache = torch.load(cfg.run_dir / pb.CACHE_FILE, weights_only=False)["splits"]
    assert len(cache["train"]["sums"]) == summary["train_examples"]
    # LoRA's B matrices start at zero, so the adapter-free reference equals the policy at step 0
    first = json.loads((cfg.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["eval/pref/margin"] == 0.0
