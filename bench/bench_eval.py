"""Target 5: score mode against generate mode on the same 500 examples and model, and score mode
against the floor of one batched forward pass per example.

The demo's tiny Llama (the base model) on the 500 test examples of the demo data, CPU, the same
batch size for all three, in one process, interleaved:
  score     engine.evaluate.Evaluation.score: what `labtui eval RUN --mode score` runs once the
            model is loaded (tokenising, longest-first batches, one left-padded forward pass with the
            KV cache kept, a second short pass over multi-token choices, predictions.jsonl written)
  generate  Evaluation.generate at temperature 0 (greedy, max_new_tokens from the eval settings)
  floor     one forward pass per batch over the same prompts, in the same order and padding
            (position ids, last-position logits only, no cache): the least any scorer could do
            once the prompts are tokens
Figures: examples/s of each, score/generate (how many times faster score mode is), and
floor/score examples/s (1.0 means score mode costs no more than one forward pass per example).

--model wide runs the same on a randomly initialised Llama of 26 M parameters (hidden 512,
8 layers, the demo's tokenizer): on the 1 M-parameter demo model a forward pass costs little more
than its fixed per-call overhead, so any second pass doubles the time; on a model where the work
grows with the tokens, as on every model a user evaluates, score mode's short second pass is
small next to the prompt pass. Weights do not change the cost of a pass, only the predictions.
"""

from __future__ import annotations

import contextlib
import io
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import synth  # noqa: E402
from common import Report, parser, wait_quiet  # noqa: E402


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--model", choices=("demo", "wide"), default="demo",
                    help="demo: the demo's tiny Llama; wide: a random 26M-parameter Llama (see above)")
    args = ap.parse_args()
    n = 48 if args.quick else args.n
    repeats = 1 if args.quick else args.repeats
    import warnings

    import torch
    import transformers

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)

    from labtui.engine.config.experiment import load_experiment
    from labtui.engine.rundir import store
    from labtui.engine.runtime import evaluate_launch
    from labtui.engine.training import evaluate

    ws_root = synth.demo_workspace(cache=args.cache)
    ws = store.Workspace(ws_root)
    cfg = load_experiment(ws_root / "experiments" / "demo-baseline.yaml").config
    holder = ws.create_run("bench-eval", {"experiment": "bench-eval", "kind": "base", "workspace": str(ws_root)},
                           config_text=__import__("yaml").safe_dump(cfg, sort_keys=False))
    with contextlib.redirect_stdout(io.StringIO()):
        model, tokenizer, dtype = evaluate.load_for_eval(cfg, ws_root, "base", "cpu", None)
        examples = evaluate.select_examples(cfg, ws_root, "test", n)
    if args.model == "wide":
        torch.manual_seed(0)
        wide = transformers.LlamaConfig(
            vocab_size=model.config.vocab_size, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
            num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=model.config.max_position_embeddings,
            bos_token_id=model.config.bos_token_id, eos_token_id=model.config.eos_token_id,
            pad_token_id=model.config.pad_token_id)
        model = transformers.LlamaForCausalLM(wide).eval()
    task = cfg["task"]
    choices = task["choices"]
    bs = args.batch_size

    def evaluation(mode: str) -> evaluate.Evaluation:
        settings = evaluate_launch.settings_from(cfg, n=n, mode=mode, device="cpu", split="test", batch_size=bs)
        ev = evaluate_launch.create_eval(None, settings, holder=holder, config=cfg, workspace=ws_root)
        return evaluate.Evaluation(ev)

    # the floor's inputs: the prompts exactly as score mode builds and orders them
    from labtui.engine.training.data import format_answer, format_prompt

    limit = evaluate.model_max_positions(model, tokenizer)
    prompts = []
    for e in examples:
        pairs = [evaluate.encode_pair(tokenizer, format_prompt(e, task), format_answer({"answer": c}, task)) for c in choices]
        ctx, longest = pairs[0][0], max(len(p[1]) for p in pairs)
        prompts.append(ctx[-(limit - longest):] if len(ctx) + longest > limit else ctx)
    prompts.sort(key=len, reverse=True)

    def floor() -> None:
        with torch.inference_mode():
            for start in range(0, len(prompts), bs):
                ids, mask = evaluate._left_pad(prompts[start:start + bs], tokenizer.pad_token_id, "cpu")
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)

    def score() -> None:
        evaluation("score").score(model, tokenizer, examples)

    def generate() -> None:
        evaluation("generate").generate(model, tokenizer, examples, 0.0)

    floor()  # warm-up (allocator, kernels)
    wait_quiet(timeout=args.wait_quiet)
    what = "demo tiny Llama" if args.model == "demo" else "random 26M-parameter Llama"
    rep = Report("eval" if args.model == "demo" else "eval_wide", args, f"Evaluation: score vs generate on {n} examples ({what}, CPU)")
    times: dict[str, list[float]] = {"score": [], "generate": [], "floor": []}
    for r in range(repeats):
        order = [("score", score), ("generate", generate), ("floor", floor)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                fn()
            times[name].append(time.perf_counter() - t)
    eps = {k: [n / t for t in v] for k, v in times.items()}
    rep.add("score_eps", eps["score"], "examples/s", better="higher", label="score mode, examples/s")
    rep.add("generate_eps", eps["generate"], "examples/s", better="higher", label="generate mode, examples/s")
    rep.add("floor_eps", eps["floor"], "examples/s", better="higher", label="floor: one forward pass per example")
    rep.add("score_vs_generate", [s / g for s, g in zip(eps["score"], eps["generate"])], "x", better="higher",
            label="score / generate (examples/s)")
    rep.add("floor_vs_score", [f / s for f, s in zip(eps["floor"], eps["score"])], "x",
            label="floor / score (examples/s; 1.0 = no cost beyond one pass)")
    rep.extra.update(model="demo tiny Llama (engine.demo)" if args.model == "demo" else "random Llama, hidden 512, 8 layers", params=sum(p.numel() for p in model.parameters()),
                     dtype=dtype, batch_size=bs, torch_threads=torch.get_num_threads(),
                     max_new_tokens=evaluate_launch.settings_from(cfg, mode="generate").get("max_new_tokens") or 5,
                     mean_prompt_tokens=sum(map(len, prompts)) / len(prompts),
                     choice_tokens={c: len(evaluate.encode_pair(tokenizer, "Answer:", format_answer({"answer": c}, task))[1])
                                    for c in choices})
    rep.finish(args.out)


if __name__ == "__main__":
    main()
