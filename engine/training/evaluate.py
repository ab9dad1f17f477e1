"""The eval worker: `python -m labtui.engine.training.evaluate EVAL_DIR`.

Loads the evaluated model (the run's base model, plus its LoRA adapter or a full checkpoint) on the
requested device, runs the examples of the split, appends one record per example and temperature
to predictions.jsonl, and writes summary.json. Runs under the supervisor like the training worker;
this process writes progress.json, env.json, predictions.jsonl and summary.json.

score mode (as lm-evaluation-harness scores PubMedQA): the prompt goes through the model once per
example (left-padded batch, explicit position ids, KV cache kept); the first token of every choice
is scored from the prompt's last logits, the rest of each choice from one short pass over the
choices on top of the repeated cache. The prediction is the choice with the highest summed
log-likelihood. Deterministic and independent of the batch size.

generate mode: left-padded batched generation (pad is not EOS), greedy at temperature 0, else
sampled (top_k 0, top_p 1) with a seed per temperature; the first yes/no/maybe word of the output
is the answer; empty and unparseable outputs are kept as such.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from pathlib import Path

from labtui.engine.analysis import evalstore
from labtui.engine.rundir import store

PROGRESS_EVERY_S = 1.0


class Stopped(Exception):
    """SIGTERM (`labtui stop`, Ctrl-C in the foreground): stop at the next batch."""


# --- pure helpers (tested in-process) -------------------------------------------------------------


def parse_answer(text: str | None, choices: list[str]) -> str:
    """The first choice word in the output; "" for no text, "unparseable" for text without a choice."""
    if text is None or not text.strip():
        return evalstore.EMPTY
    alts = "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True))
    m = re.search(rf"(?<![A-Za-z0-9])({alts})(?![A-Za-z0-9])", text, flags=re.IGNORECASE)
    if not m:
        return evalstore.UNPARSEABLE
    word = m.group(1).lower()
    return next(c for c in choices if c.lower() == word)


def pick_device(requested: str) -> str:
    import torch

    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {requested}, but torch sees no GPU (torch.cuda.is_available() is False); "
                               "use --device cpu or auto")
        index = requested.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise RuntimeError(f"--device {requested}, but torch sees {torch.cuda.device_count()} GPU(s) "
                               f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_max_positions(model, tokenizer) -> int:
    limits = []
    cfg = getattr(model, "config", None)
    for c in (cfg, getattr(cfg, "text_config", None)):
        v = getattr(c, "max_position_embeddings", None) if c is not None else None
        if isinstance(v, int) and v > 0:
            limits.append(v)
    v = getattr(tokenizer, "model_max_length", None)
    if isinstance(v, int) and 0 < v < 10_000_000:
        limits.append(v)
    return min(limits) if limits else 4096


def encode_pair(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the continuation as they are tokenized together (the harness's
    way: encode the whole, cut at the prompt's length), falling back to separate encoding when the
    tokenizer merges across the boundary."""
    ctx, (cont,) = encode_choices(tokenizer, prompt, [continuation])
    return ctx, cont


def encode_choices(tokenizer, prompt: str, continuations: list[str]) -> tuple[list[int], list[list[int]]]:
    """`encode_pair` for several continuations of one prompt: the prompt tokenized once, the
    prompt + continuation texts in one batched call."""
    eos = tokenizer.eos_token_id

    def strip(ids: list[int]) -> list[int]:
        ids = list(ids)
        if ids and eos is not None and ids[-1] == eos and eos != tokenizer.bos_token_id:
            ids = ids[:-1]  # tokenizers that append EOS
        return ids

    ctx = strip(tokenizer(prompt)["input_ids"])
    wholes = tokenizer([prompt + c for c in continuations])["input_ids"]
    conts = []
    for c, whole in zip(continuations, wholes):
        whole = strip(whole)
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            conts.append(whole[len(ctx):])
        else:
            conts.append(list(tokenizer(c, add_special_tokens=False)["input_ids"]))
    return ctx, conts


def _left_pad(rows: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def score_batch(model, prompts: list[list[int]], conts: list[list[list[int]]], pad_id: int) -> list[list[float]]:
    """Summed log-likelihood of every continuation after its prompt: [example][choice].

    One forward pass over the left-padded prompts (logits of the last position only, KV cache kept),
    then, where a choice has more than one token, one pass over those choices' further tokens on the
    cache rows of their prompts. Position ids count real tokens only, so padding changes nothing.
    """
    import torch

    device = next(model.parameters()).device
    B, C = len(prompts), len(conts[0])
    ids, mask = _left_pad(prompts, pad_id, device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    T = max(len(c) for row in conts for c in row)
    keep = T > 1  # the cache is only needed for a second pass
    with torch.inference_mode():
        try:
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=keep, logits_to_keep=1)
        except TypeError:  # remote code without logits_to_keep
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=keep)
        last = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        scores = last[torch.arange(B, device=last.device).unsqueeze(1),
                      torch.tensor([[c[0] for c in row] for row in conts], device=last.device)].tolist()
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        del out
        if T > 1 and not hasattr(cache, "batch_repeat_interleave"):
            return score_full(model, prompts, conts, pad_id)  # no reusable cache: one pass per choice
        if T > 1:
            # only the choices with more tokens go on: their rows of the cache, in (example, choice) order
            rows = [(i, j) for i in range(B) for j in range(C) if len(conts[i][j]) > 1]
            if hasattr(cache, "reorder_cache"):
                cache.reorder_cache(torch.tensor([i for i, _ in rows], device=device))
            else:
                cache.batch_repeat_interleave(C)
                rows = [(i, j) for i in range(B) for j in range(C)]
            cin = torch.full((len(rows), T - 1), pad_id, dtype=torch.long)
            cmask = torch.zeros((len(rows), T - 1), dtype=torch.long)
            for r, (i, j) in enumerate(rows):
                c = conts[i][j]
                if len(c) > 1:
                    cin[r, : len(c) - 1] = torch.tensor(c[:-1])
                    cmask[r, : len(c) - 1] = 1
            cin, cmask = cin.to(device), cmask.to(device)
            which = torch.tensor([i for i, _ in rows], device=device)
            full_mask = torch.cat([mask[which], cmask], dim=1)
            cpos = mask.sum(-1)[which].unsqueeze(1) + torch.arange(T - 1, device=device).unsqueeze(0)
            out2 = model(input_ids=cin, attention_mask=full_mask, position_ids=cpos, use_cache=False,
                         **{_cache_keyword(model): cache})
            logp = torch.log_softmax(out2.logits.float(), dim=-1)
            for r, (i, j) in enumerate(rows):
                c = conts[i][j]
                for t in range(1, len(c)):
                    scores[i][j] += float(logp[r, t - 1, c[t]])
    return scores


def _cache_keyword(model) -> str:
    """forward()'s keyword for a KV cache: `cache` in newer transformers (where `past_key_values` is
    deprecated, to be removed in 5.40), `past_key_values` before."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # through a PEFT wrapper
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def score_full(model, prompts: list[list[int]], conts: list[list[list[int]]], pad_id: int) -> list[list[float]]:
    """The same scores without a KV cache: one left-padded pass over prompt + choice per choice.
    The fallback for models whose cache cannot be repeated, and the reference in the tests."""
    import torch

    device = next(model.parameters()).device
    B, C = len(prompts), len(conts[0])
    scores = [[0.0] * C for _ in range(B)]
    with torch.inference_mode():
        for j in range(C):
            rows = [prompts[i] + conts[i][j] for i in range(B)]
            ids, mask = _left_pad(rows, pad_id, device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float(), dim=-1)
            width = ids.shape[1]
            for i in range(B):
                c = conts[i][j]
                first = width - len(c)  # position of the choice's first token
                scores[i][j] = sum(float(logp[i, first + t - 1, c[t]]) for t in range(len(c)))
    return scores


def generate_batch(model, tokenizer, prompts: list[list[int]], temperature: float, max_new_tokens: int) -> tuple[list[str], int]:
    """Decoded new text per prompt and the number of generated tokens (left padding, pad != EOS)."""
    import torch

    device = next(model.parameters()).device
    ids, mask = _left_pad(prompts, tokenizer.pad_token_id, device)
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    new = out[:, ids.shape[1]:]
    texts, n_tokens = [], 0
    for row in new.tolist():
        kept = []
        for t in row:
            if t == tokenizer.eos_token_id or t == tokenizer.pad_token_id:
                break
            kept.append(t)
        n_tokens += len(kept) + (1 if len(kept) < len(row) else 0)
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts, n_tokens


def score_examples(model, tokenizer, examples: list[dict], task: dict, choices: list[str], batch_size: int):
    """Yields batches of (example, [loglik per choice], tokens processed), longest prompts first
    (little padding, and an out-of-memory error shows at once rather than at the end)."""
    from labtui.engine.training.data import format_answer, format_prompt

    limit = model_max_positions(model, tokenizer)
    items = []
    for e in examples:
        prompt = format_prompt(e, task)
        ctx, conts = encode_choices(tokenizer, prompt, [format_answer({"answer": c}, task) for c in choices])
        longest = max(len(c) for c in conts)
        if len(ctx) + longest > limit:
            ctx = ctx[-(limit - longest):]  # keep the end of the prompt, where the question is
        items.append((e, ctx, conts))
    order = sorted(range(len(items)), key=lambda i: -len(items[i][1]))
    for start in range(0, len(order), batch_size):
        batch = [items[i] for i in order[start:start + batch_size]]
        scores = score_batch(model, [b[1] for b in batch], [b[2] for b in batch], tokenizer.pad_token_id)
        yield [(e, sc, len(ctx) + sum(len(c) for c in conts)) for (e, ctx, conts), sc in zip(batch, scores)]


def score_record(example: dict, scores: list[float], choices: list[str], task: dict) -> dict:
    """The predictions.jsonl record of one scored example; ties go to the first choice."""
    from labtui.engine.training.data import format_answer

    best = max(range(len(choices)), key=lambda j: (scores[j], -j))
    gold = str(example["answer"]).strip().lower()
    return {"id": example["id"], "gold": gold, "pred": choices[best],
            "raw": format_answer({"answer": choices[best]}, task), "correct": choices[best] == gold,
            "temperature": None, "loglik": store.jsonable({c: float(v) for c, v in zip(choices, scores)})}


# --- model loading ----------------------------------------------------------------------------------


def load_for_eval(cfg: dict, workspace: Path, checkpoint: str, device: str, dtype: str | None):
    """(model, tokenizer, dtype name) on `device`: the base model, a PEFT adapter on it, or a full checkpoint."""
    import copy

    import torch
    from labtui.engine.training.worker import load_model_and_tokenizer, set_pad_token

    dtype = dtype or cfg["model"].get("dtype") or "auto"
    # weights straight onto the GPU (cuda:N: that one)
    device_map = {"": torch.device(device).index if torch.device(device).index is not None else torch.cuda.current_device()} \
        if device.startswith("cuda") else None
    cp = None if checkpoint == "base" else Path(checkpoint)
    if cp is not None and not (cp / "adapter_config.json").exists():
        # a full fine-tune: the checkpoint folder is a model of its own
        full = copy.deepcopy(cfg)
        full["model"]["model_name_or_path"] = str(cp)
        try:
            model, tokenizer = load_model_and_tokenizer(full, workspace, device_map=device_map, dtype_override=dtype)
        except OSError:  # a checkpoint saved without its tokenizer
            _, tokenizer = load_model_and_tokenizer(cfg, workspace, dtype_override=dtype)
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(cp), device_map=device_map,
                                                         dtype="auto" if dtype == "auto" else getattr(torch, dtype))
        cp = None
    else:
        model, tokenizer = load_model_and_tokenizer(cfg, workspace, device_map=device_map, dtype_override=dtype)
    if device == "cpu" and next(model.parameters()).dtype == torch.float16:
        print("[labtui] float16 on the CPU is slow and inexact; using float32", flush=True)
        model = model.float()
    model.to(device)
    if cp is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(cp), is_trainable=False)
        model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    set_pad_token(tokenizer, model, not_eos=True)  # generation would take padding that is EOS for the end
    actual = str(next(model.parameters()).dtype).replace("torch.", "")
    return model, tokenizer, actual


def eval_environment(device: str, dtype: str) -> dict:
    import torch
    from labtui.engine.training.worker import environment

    env = environment(device)
    env["device"] = device
    env["dtype"] = dtype
    if os.environ.get("LABTUI_CUDA_HIDDEN"):
        env["cuda_hidden"] = True  # --device cpu: CUDA_VISIBLE_DEVICES was emptied for this process
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        env["device_name"] = torch.cuda.get_device_name(index)
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu_capability"] = list(torch.cuda.get_device_capability(index))
    else:
        from labtui.engine.runtime.sysmon import cpu_name

        env["device_name"] = cpu_name()
    return env


# --- the eval -------------------------------------------------------------------------------------------


def select_examples(cfg: dict, workspace: Path, split: str, n: int | None) -> list[dict]:
    from labtui.engine.config.experiment import ConfigError
    from labtui.engine.training.data import load_splits

    splits = load_splits(cfg, workspace)
    examples = {"test": splits.test, "eval": splits.eval, "train": splits.train}[split]
    examples = [e for e in examples if e.get("answer") not in (None, "")]
    if not examples:
        raise ConfigError(f"the {split} split of {splits.source} has no examples with an answer to evaluate "
                          f"(evaluation needs a question-answer dataset: format pubmedqa, hub or jsonl_qa)")
    return examples[:n] if n else examples


class Evaluation:
    def __init__(self, ev: store.Run):
        self.ev = ev
        self.settings = evalstore.read_settings(ev.path)
        self.info = ev.info()
        self.cfg = ev.config()
        self.workspace = Path(self.info.get("workspace") or os.getcwd())
        self.stop = False
        self.progress: dict = {"done": 0, "total": 0, "step": 0, "max_steps": 0, "status": "running", "started": time.time()}
        self._last_write = 0.0
        self.records: list[dict] = []
        self.tokens = 0
        self.t0 = time.time()

    def on_sigterm(self, signum, frame) -> None:
        self.stop = True

    def write_progress(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_write < PROGRESS_EVERY_S:
            return
        self._last_write = now
        self.progress["updated"] = now
        store.atomic_write_text(self.ev.file(store.PROGRESS_FILE), store.dumps(self.progress))

    def advance(self, k: int, correct: int) -> None:
        p = self.progress
        p["done"] += k
        p["step"] = p["done"]
        p["correct"] = p.get("correct", 0) + correct
        p["accuracy_so_far"] = p["correct"] / p["done"] if p["done"] else None
        elapsed = max(time.time() - self.t0, 1e-9)
        p["examples_per_s"] = p["done"] / elapsed
        p[store.TOKENS_PER_S] = self.tokens / elapsed
        self.write_progress()
        if self.stop:
            raise Stopped()

    def run(self) -> int:
        if threading_main():
            signal.signal(signal.SIGTERM, self.on_sigterm)
        s = self.settings
        try:
            import transformers

            transformers.logging.set_verbosity_error()
            device = pick_device(s.get("device") or "auto")
            examples = select_examples(self.cfg, self.workspace, s.get("split") or "test", s.get("n"))
            temps = [None] if s["mode"] == "score" else list(s.get("temperatures") or [0.0])
            total = len(examples) * len(temps)
            self.progress.update(total=total, max_steps=total, n=len(examples))
            self.write_progress(force=True)
            print(f"[labtui] eval {self.ev.id}: {s['mode']} mode, {len(examples)} {s.get('split')} examples, "
                  f"checkpoint {s.get('checkpoint')}, device {device}", flush=True)
            t_load = time.time()
            model, tokenizer, dtype = load_for_eval(self.cfg, self.workspace, s["checkpoint"], device, s.get("dtype"))
            env = eval_environment(device, dtype)
            store.atomic_write_json(self.ev.file(store.ENV_FILE), env)
            s.update(device_actual=device, dtype_actual=dtype, n_requested=s.get("n"), n=len(examples),
                     load_s=time.time() - t_load)
            store.atomic_write_json(self.ev.file(evalstore.EVAL_FILE), s)
            print(f"[labtui] loaded in {s['load_s']:.1f}s ({env.get('device_name')}, {dtype})", flush=True)
            self.t0 = time.time()
            status, error = "completed", None
            try:
                if self.stop:  # asked to stop while the model was loading
                    raise Stopped()
                if s["mode"] == "score":
                    self.score(model, tokenizer, examples)
                else:
                    for t in temps:
                        self.generate(model, tokenizer, examples, float(t))
            except Stopped:
                status, error = "stopped", "stopped on request"
            wall = time.time() - self.t0
            self.write_summary(env, wall, partial=status != "completed")
            if status == "completed" and self.records:
                try:  # compare and History read these, not every record; they remake them if missing
                    evalstore.columns(self.ev.path)
                except Exception as e:  # noqa: BLE001 - the eval itself is done and recorded
                    print(f"[labtui] could not cache the columns of {evalstore.PREDICTIONS_FILE}: {e}", flush=True)
            self.finish(status, error)
            print(f"[labtui] {status}: accuracy {self.summary_line()}", flush=True)
            return 0
        except BaseException as e:  # noqa: BLE001 - recorded, then turned into an exit code
            from labtui.engine.training.worker import failed

            return failed(e, self.finish)

    def summary_line(self) -> str:
        summ = evalstore.read_summary(self.ev.path)
        acc, ci = summ.get("accuracy"), summ.get("ci") or [0, 0]
        return "-" if acc is None else f"{acc:.1%} [{ci[0]:.1%}, {ci[1]:.1%}] n={summ.get('n')}"

    def finish(self, status: str, error: str | None = None, where: str | None = None) -> None:
        now = time.time()
        self.progress["status"] = status
        self.progress["result"] = {"status": status, "error": error, "error_where": where, "ended": now}
        self.write_progress(force=True)

    def write_summary(self, env: dict, wall: float, partial: bool) -> None:
        from labtui.engine.runtime.evaluate_launch import rerun_command

        s = self.settings
        cmd = rerun_command(self.info.get("run"), s, None)
        summary = evalstore.summarize(
            self.records, s.get("choices") or ["yes", "no", "maybe"], mode=s["mode"], device=s.get("device_actual"),
            device_name=env.get("device_name"), checkpoint=s.get("checkpoint"), checkpoint_step=s.get(store.CHECKPOINT_STEP),
            wall_s=wall, tokens=self.tokens, rerun_command=cmd if self.info.get("run") else None, partial=partial,
        )
        summary["dtype"] = s.get("dtype_actual")
        summary["load_s"] = s.get("load_s")
        summary["split"] = s.get("split")
        summary["eval_id"] = self.ev.id
        summary["run"] = self.info.get("run")
        store.atomic_write_json(self.ev.file(evalstore.SUMMARY_FILE), summary)

    def _write(self, records: list[dict]) -> int:
        for r in records:
            store.append_jsonl(self.ev.file(evalstore.PREDICTIONS_FILE), r)
        self.records.extend(records)
        return sum(1 for r in records if r["correct"])

    # --- score mode ---

    def score(self, model, tokenizer, examples: list[dict]) -> None:
        task = self.cfg["task"]
        choices = self.settings.get("choices") or task["choices"]
        bs = int(self.settings.get("batch_size") or 8)
        for batch in score_examples(model, tokenizer, examples, task, choices, bs):
            self.tokens += sum(n for _, _, n in batch)
            recs = [score_record(e, sc, choices, task) for e, sc, _ in batch]
            self.advance(len(recs), self._write(recs))

    # --- generate mode ---

    def generate(self, model, tokenizer, examples: list[dict], temperature: float) -> None:
        import transformers
        from labtui.engine.training.data import format_prompt

        task = self.cfg["task"]
        choices = self.settings.get("choices") or task["choices"]
        max_new = int(self.settings.get("max_new_tokens") or 5)
        limit = model_max_positions(model, tokenizer) - max_new
        transformers.set_seed(int(self.settings.get("seed") or 0))
        prompts = []
        for e in examples:
            ids = list(tokenizer(format_prompt(e, task))["input_ids"])
            if tokenizer.eos_token_id is not None and ids and ids[-1] == tokenizer.eos_token_id:
                ids = ids[:-1]
            prompts.append(ids[-limit:])
        order = sorted(range(len(examples)), key=lambda i: -len(prompts[i]))
        bs = int(self.settings.get("batch_size") or 8)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            texts, n_new = generate_batch(model, tokenizer, [prompts[i] for i in idx], temperature, max_new)
            self.tokens += n_new + sum(len(prompts[i]) for i in idx)
            recs = []
            for i, text in zip(idx, texts):
                e = examples[i]
                gold = str(e["answer"]).strip().lower()
                pred = parse_answer(text, choices)
                recs.append({"id": e["id"], "gold": gold, "pred": pred, "raw": text, "correct": pred == gold,
                             "temperature": temperature})
            self.advance(len(recs), self._write(recs))


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labtui.engine.training.evaluate")
    ap.add_argument("eval_dir")
    args = ap.parse_args(argv)
    path = Path(args.eval_dir)
    if not (path / evalstore.EVAL_FILE).exists():
        print(f"{path}: not an eval directory (no {evalstore.EVAL_FILE}); create one with `labtui eval RUN`", file=sys.stderr)
        return 2
    if (evalstore.read_settings(path).get("device") or "auto") == "cpu":
        # --device cpu: hide the GPUs from this process, so nothing (a library, a stray .cuda()) can use them
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["LABTUI_CUDA_HIDDEN"] = "1"
    return Evaluation(store.Run(path)).run()


if __name__ == "__main__":
    sys.exit(main())
