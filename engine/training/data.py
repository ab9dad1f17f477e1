"""Datasets: PubMedQA (original PQA-L JSON or the hub), JSONL question/context/answer, JSONL SFT.

Every QA loader returns examples as dicts {id, question, context, answer, long_answer}; SFT JSONL
returns {id, prompt, completion} or {id, messages}. `load_splits` gives train / eval / test lists
deterministically. Imports `datasets` only for the hub path.
"""

from __future__ import annotations

import json
import os
import random
import stat
from dataclasses import dataclass
from pathlib import Path

from labtui.engine.config.experiment import ConfigError, resolve_path


@dataclass
class Splits:
    train: list[dict]
    eval: list[dict]  # in-training evaluation (eval_loss), carved from the training half
    test: list[dict]  # held-out test set for `labtui eval`
    source: str


# --- loaders ----------------------------------------------------------------------------------


def _pqal_example(pmid: str, item: dict) -> dict:
    return {
        "id": str(pmid),
        "question": item.get("QUESTION", ""),
        "context": " ".join(item.get("CONTEXTS") or []),
        "answer": item.get("final_decision", ""),
        "long_answer": item.get("LONG_ANSWER", ""),
    }


def load_pqal_json(path: Path) -> list[dict]:
    """The original PubMedQA PQA-L file: {PMID: {QUESTION, CONTEXTS, final_decision, LONG_ANSWER, ...}}."""
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a JSON object keyed by PubMed id (PubMedQA ori_pqal.json format)")
    first = next(iter(data.values()))
    if not isinstance(first, dict) or "QUESTION" not in first:
        raise ConfigError(f"{path}: entries have no QUESTION field; is this PubMedQA's ori_pqal.json format?")
    return [_pqal_example(k, v) for k, v in data.items()]


def load_split_ids(path: Path) -> list[str]:
    """`test_ground_truth.json` ({PMID: label}) or a JSON list of ids."""
    data = _read_json(path)
    if isinstance(data, dict):
        return [str(k) for k in data]
    if isinstance(data, list):
        return [str(k) for k in data]
    raise ConfigError(f"{path}: expected {{id: label}} or a list of ids")


def load_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        with open(_regular(path)) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    return rows


def load_jsonl_qa(path: Path) -> list[dict]:
    out = []
    for n, row in enumerate(load_jsonl(path), 1):
        missing = [k for k in ("question", "answer") if k not in row]
        if missing:
            raise ConfigError(f"{path}:{n}: missing {', '.join(missing)} (format jsonl_qa wants question, context, answer)")
        ctx = row.get("context", "")
        if isinstance(ctx, list):
            ctx = " ".join(ctx)
        out.append({"id": str(row.get("id", n)), "question": row["question"], "context": ctx, "answer": str(row["answer"]).strip().lower(), "long_answer": row.get("long_answer", "")})
    return out


def load_jsonl_sft(path: Path) -> list[dict]:
    out = []
    for n, row in enumerate(load_jsonl(path), 1):
        if "messages" in row:
            out.append({"id": str(row.get("id", n)), "messages": row["messages"]})
        elif "prompt" in row and "completion" in row:
            out.append({"id": str(row.get("id", n)), "prompt": row["prompt"], "completion": row["completion"]})
        else:
            raise ConfigError(f"{path}:{n}: expected prompt/completion or messages (format jsonl_sft)")
    return out


def load_hub(name: str, config: str | None, split: str) -> list[dict]:
    """PubMedQA from the Hugging Face hub (`qiaojin/PubMedQA`, `pqa_labeled`), for users who are online."""
    import datasets

    ds = datasets.load_dataset(name, config, split=split)
    out = []
    for row in ds:
        ctx = row.get("context")
        if isinstance(ctx, dict):
            ctx = " ".join(ctx.get("contexts") or [])
        out.append({
            "id": str(row.get("pubid", row.get("id", len(out)))),
            "question": row.get("question", ""),
            "context": ctx or "",
            "answer": row.get("final_decision", row.get("answer", "")),
            "long_answer": row.get("long_answer", ""),
        })
    return out


def _regular(path: Path) -> Path:
    """Only regular files are read: a device (/dev/zero never ends), a FIFO or a folder is refused."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(f"{path}: not a regular file")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    return path


def _read_json(path: Path):
    try:
        with open(_regular(path)) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


# --- splits -----------------------------------------------------------------------------------


def load_splits(cfg: dict, workspace: Path) -> Splits:
    ds = cfg["dataset"]
    fmt = ds["format"]
    path = resolve_path(ds.get("path"), workspace)
    if fmt == "pubmedqa":
        examples = load_pqal_json(path)
        source = str(path)
    elif fmt == "hub":
        examples = load_hub(ds["name"], ds.get("config"), ds.get("split") or "train")
        source = f"hub:{ds['name']}/{ds.get('config') or ''}"
    elif fmt == "jsonl_qa":
        examples = load_jsonl_qa(path)
        source = str(path)
    else:
        examples = load_jsonl_sft(path)
        source = str(path)

    test_ids_path = resolve_path(ds.get("test_split"), workspace)
    rng = random.Random(ds.get("seed", 0))
    if test_ids_path is not None:
        test_ids = set(load_split_ids(test_ids_path))
        by_id = {e["id"]: e for e in examples}
        unknown = test_ids - set(by_id)
        if unknown:
            raise ConfigError(f"{test_ids_path}: {len(unknown)} test ids are not in the dataset (e.g. {sorted(unknown)[0]})")
        test = [e for e in examples if e["id"] in test_ids]
        pool = [e for e in examples if e["id"] not in test_ids]
    elif fmt == "jsonl_sft":
        test, pool = [], list(examples)
    else:
        shuffled = list(examples)
        rng.shuffle(shuffled)
        cut = len(shuffled) // 5
        test, pool = sorted(shuffled[:cut], key=lambda e: e["id"]), shuffled[cut:]

    pool = list(pool)
    rng.shuffle(pool)
    n_eval = min(int(ds.get("eval_size") or 0), max(0, len(pool) - 1))
    eval_set, train = pool[:n_eval], pool[n_eval:]
    if ds.get("max_train_samples"):
        train = train[: ds["max_train_samples"]]
    if not train:
        raise ConfigError(f"{source}: no training examples left after the test and eval splits")
    return Splits(train=train, eval=eval_set, test=test, source=source)


def gold_label(example: dict) -> str:
    """The answer as the evaluation compares it with task.choices."""
    return str(example.get("answer", "")).strip().lower()


def check_splits(cfg: dict, workspace: Path) -> Splits | None:
    """Before a run starts: the data loads, its labels are answers the task can score, and the
    splits training and evaluation need are not empty. Raises ConfigError (exit 2). The hub format
    is not checked here (it needs the network and `datasets`); returns None for it."""
    ds, task = cfg["dataset"], cfg["task"]
    if ds["format"] == "hub":
        return None
    splits = load_splits(cfg, workspace)
    if ds["format"] != "jsonl_sft":
        choices = list(task["choices"])
        examples = splits.train + splits.eval + splits.test
        bad = [e for e in examples if gold_label(e) not in choices]
        if bad:
            seen = sorted({gold_label(e) for e in bad})
            shown = ", ".join(repr(x) for x in seen[:5]) + (", ..." if len(seen) > 5 else "")
            raise ConfigError(f"{splits.source}: {len(bad)} of {len(examples)} examples have a label outside "
                              f"task.choices {choices}: {shown} (e.g. id {bad[0]['id']}); they can never be scored "
                              f"right - fix the data or list those answers in task.choices")
        if not splits.test:
            raise ConfigError(f"{splits.source}: the split leaves 0 test examples ({len(examples)} in all), so "
                              f"`labtui eval` has nothing to score - use more data or a dataset.test_split file")
    if int(ds.get("eval_size") or 0) > 0 and not splits.eval:
        raise ConfigError(f"{splits.source}: dataset.eval_size is {ds['eval_size']} but the split leaves 0 eval "
                          f"examples ({len(splits.train)} train); use more data or set dataset.eval_size: 0")
    ev = cfg.get("eval") or {}
    if ev.get("after_training"):
        split = ev.get("split") or "test"
        if not getattr(splits, split):
            raise ConfigError(f"{splits.source}: eval.after_training evaluates the {split} split, which is empty")
    return splits


# --- prompts ----------------------------------------------------------------------------------


def format_prompt(example: dict, task: dict) -> str:
    if "prompt" in example:
        return example["prompt"]
    context = example.get("context", "")
    limit = task.get("max_context_chars") or 0
    if limit and len(context) > limit:
        context = "..." + context[-limit:]  # results and conclusions come last in an abstract
    return task["template"].format(context=context, question=example.get("question", ""))


def format_answer(example: dict, task: dict) -> str:
    if "completion" in example:
        return example["completion"]
    return task.get("answer_prefix", " ") + str(example["answer"])


def to_prompt_completion(example: dict, task: dict) -> dict:
    if "messages" in example:
        return {"messages": example["messages"]}
    return {"prompt": format_prompt(example, task), "completion": format_answer(example, task)}
