"""Score and generate mode in-process on the demo base model: batch-size invariance, agreement with
an independent unbatched computation, left padding and position ids, answer parsing, checkpoints."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from labtui.engine.config.experiment import ConfigError, load_experiment
from labtui.engine.rundir import store
from labtui.engine.training import evaluate as E

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base(demo_assets):
    """(cfg, workspace root, model, tokenizer, 40 test examples) for the demo base model on the CPU."""
    import torch

    torch.set_num_threads(1)
    ws = demo_assets.parent
    cfg = load_experiment(ROOT / "experiments" / "demo-baseline.yaml").config
    model, tok, dtype = E.load_for_eval(cfg, ws, "base", "cpu", None)
    examples = E.select_examples(cfg, ws, "test", 40)
    return cfg, ws, model, tok, examples


def naive_loglik(model, ctx: list[int], cont: list[int]) -> float:
    """One unpadded forward pass over prompt + continuation, no cache: the reference."""
    import torch

    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + t, cont[t]]) for t in range(len(cont)))


def run_scores(model, tok, examples, task, choices, bs):
    out = {}
    for batch in E.score_examples(model, tok, examples, task, choices, bs):
        for e, sc, _ in batch:
            out[e["id"]] = sc
    return out


def test_score_mode_predictions_do_not_depend_on_batch_size(base):
    cfg, ws, model, tok, examples = base
    task = cfg["task"]
    # " maybe" and " not sure" are several tokens in the demo tokenizer: the cached continuation pass is used
    choices = ["yes", "no", "maybe", "not sure"]
    assert max(len(E.encode_pair(tok, "Answer:", " " + c)[1]) for c in choices) > 1
    results = {bs: run_scores(model, tok, examples, task, choices, bs) for bs in (1, 8, 32)}
    preds = {bs: {i: E.score_record({"id": i, "answer": "yes"}, sc, choices, task)["pred"] for i, sc in r.items()}
             for bs, r in results.items()}
    assert preds[1] == preds[8] == preds[32]
    for i in results[1]:
        for bs in (8, 32):
            assert results[bs][i] == pytest.approx(results[1][i], abs=1e-4)
    assert len(set(preds[1].values())) >= 1 and len(preds[1]) == 40


def test_score_mode_matches_an_unbatched_forward_pass(base):
    cfg, ws, model, tok, examples = base
    task = cfg["task"]
    choices = ["yes", "no", "maybe", "not sure"]
    from labtui.engine.training.data import format_answer, format_prompt

    got = run_scores(model, tok, examples[:12], task, choices, 8)
    for e in examples[:12]:
        prompt = format_prompt(e, task)
        ref = []
        for c in choices:
            ctx, cont = E.encode_pair(tok, prompt, format_answer({"answer": c}, task))
            ref.append(naive_loglik(model, ctx, cont))
        assert got[e["id"]] == pytest.approx(ref, abs=1e-4)


def test_the_cache_free_fallback_gives_the_same_scores(base):
    cfg, ws, model, tok, examples = base
    from labtui.engine.training.data import format_answer, format_prompt

    choices = ["yes", "no", "maybe", "not sure"]
    prompts, conts = [], []
    for e in examples[:9]:
        pairs = [E.encode_pair(tok, format_prompt(e, cfg["task"]), format_answer({"answer": c}, cfg["task"])) for c in choices]
        prompts.append(pairs[0][0])
        conts.append([p[1] for p in pairs])
    cached = E.score_batch(model, prompts, conts, tok.pad_token_id)
    full = E.score_full(model, prompts, conts, tok.pad_token_id)
    for a, b in zip(cached, full):
        assert a == pytest.approx(b, abs=1e-4)


def test_left_padding_uses_real_positions_with_absolute_position_embeddings(base):
    """GPT-2 adds a learned embedding per position: wrong position ids under left padding would change
    every score, so this pins the batched path to the unpadded one on such a model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg, ws, _, tok, examples = base
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=2,
                                      pad_token_id=tok.pad_token_id)).eval()
    task = cfg["task"]
    choices = ["yes", "no", "maybe"]
    from labtui.engine.training.data import format_answer, format_prompt

    got = run_scores(gpt2, tok, examples[:10], task, choices, 10)
    for e in examples[:10]:
        prompt = format_prompt(e, task)
        ref = [naive_loglik(gpt2, *E.encode_pair(tok, prompt, format_answer({"answer": c}, task))) for c in choices]
        assert got[e["id"]] == pytest.approx(ref, abs=1e-4)


def test_greedy_generation_is_the_same_batched_and_alone(base):
    cfg, ws, model, tok, examples = base
    from labtui.engine.training.data import format_prompt

    assert tok.padding_side == "left" and tok.pad_token_id != tok.eos_token_id
    prompts = [list(tok(format_prompt(e, cfg["task"]))["input_ids"]) for e in examples[:8]]
    batched, n_tokens = E.generate_batch(model, tok, prompts, 0.0, 6)
    alone = [E.generate_batch(model, tok, [p], 0.0, 6)[0][0] for p in prompts]
    assert batched == alone
    assert 0 < n_tokens <= 8 * 6


def test_sampling_is_seeded(base):
    import transformers

    cfg, ws, model, tok, examples = base
    from labtui.engine.training.data import format_prompt

    prompts = [list(tok(format_prompt(e, cfg["task"]))["input_ids"]) for e in examples[:4]]
    runs = []
    for _ in range(2):
        transformers.set_seed(7)
        runs.append(E.generate_batch(model, tok, prompts, 1.0, 6)[0])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("text, expected", [
    (" yes", "yes"), ("Yes.", "yes"), (" No, it does not", "no"), ("MAYBE", "maybe"),
    (" the answer is no", "no"), ("  \n ", ""), ("", ""), (None, ""), (" nope", "unparseable"),
    (" yesterday", "unparseable"), (" maybe-yes", "maybe"), (" Is zinc", "unparseable"),
])
def test_parse_answer_takes_the_first_choice_word(text, expected):
    assert E.parse_answer(text, ["yes", "no", "maybe"]) == expected


def test_pick_device_cpu_is_the_cpu_even_when_cuda_exists(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU this machine lacks
    assert E.pick_device("cpu") == "cpu"
    assert E.pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert E.pick_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="--device cpu"):
        E.pick_device("cuda")


# --- checkpoint resolution (no model needed) -------------------------------------------------------


def _fake_run(tmp_path: Path, steps=(5, 10), adapter_step: int | None = 10, best_step=5) -> store.Run:
    ws = store.Workspace(tmp_path)
    run = ws.create_run("fake", {"experiment": "fake", "kind": "train", "workspace": str(tmp_path)}, "model: {}\n")
    for s in steps:
        d = run.file("checkpoints") / f"checkpoint-{s}"
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text("{}")
        (d / "trainer_state.json").write_text("{}")  # a complete checkpoint (store.checkpoint_problem)
        (d / "adapter_model.safetensors").write_bytes(b"weights")
        os.utime(d, (time.time() - 100 + s, time.time() - 100 + s))
    if adapter_step is not None:
        (run.file("adapter")).mkdir()
        (run.file("adapter") / "adapter_config.json").write_text("{}")
    run.write_progress({"step": adapter_step or max(steps, default=0), "best_step": best_step})
    return run


def test_checkpoint_resolution(tmp_path):
    from labtui.engine.runtime.evaluate_launch import resolve_checkpoint

    run = _fake_run(tmp_path)
    assert resolve_checkpoint(run, "latest") == (str(run.file("adapter")), 10)
    assert resolve_checkpoint(run, "best") == (str(run.file("checkpoints/checkpoint-5")), 5)
    assert resolve_checkpoint(run, "10") == (str(run.file("checkpoints/checkpoint-10")), 10)
    assert resolve_checkpoint(run, 5) == (str(run.file("checkpoints/checkpoint-5")), 5)
    assert resolve_checkpoint(run, "base") == ("base", 0)
    folder = run.file("checkpoints/checkpoint-5")
    assert resolve_checkpoint(run, str(folder)) == (str(folder.resolve()), 5)
    with pytest.raises(ConfigError, match="available steps: 5, 10"):
        resolve_checkpoint(run, "7")
    with pytest.raises(ConfigError, match="expected latest, best"):
        resolve_checkpoint(run, "newest")


def test_latest_checkpoint_without_adapter_and_without_anything(tmp_path):
    from labtui.engine.runtime.evaluate_launch import resolve_checkpoint

    run = _fake_run(tmp_path / "a", adapter_step=None, best_step=None)
    assert resolve_checkpoint(run, "latest") == (str(run.file("checkpoints/checkpoint-10")), 10)
    with pytest.raises(ConfigError, match="no best checkpoint"):
        resolve_checkpoint(run, "best")
    empty = _fake_run(tmp_path / "b", steps=(), adapter_step=None)
    with pytest.raises(ConfigError, match="--base"):
        resolve_checkpoint(empty, "latest")


def test_settings_defaults_come_from_the_experiment_and_bad_values_are_refused():
    from labtui.engine.runtime.evaluate_launch import settings_from

    cfg = load_experiment(ROOT / "experiments" / "demo-baseline.yaml").config
    s = settings_from(cfg)
    assert (s["n"], s["batch_size"], s["mode"], s["device"], s["temperatures"]) == (300, 16, "score", "auto", [0.0])
    s = settings_from(cfg, n=20, mode="generate", temperatures=[0, 0.7])
    assert s["n"] == 20 and s["temperatures"] == [0.0, 0.7]
    for bad, match in (({"batch_size": 0}, "batch-size"), ({"mode": "greedy"}, "--mode"),
                       ({"temperatures": [0.3]}, "--mode generate"), ({"n": -1}, "--n")):
        with pytest.raises(ConfigError, match=match):
            settings_from(cfg, **bad)
