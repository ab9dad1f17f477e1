"""The training worker: `python -m labtui.engine.training.worker RUN_DIR [--resume]`.

Loads the run's resolved config, the model (AutoModelForCausalLM.from_pretrained: a hub id or a
local folder), applies LoRA, trains with trl.SFTTrainer or transformers.Trainer, checkpoints,
and records everything through LabtuiCallback. Runs under the supervisor (engine/runtime/supervisor.py),
which owns state.json; this process writes progress.json, metrics.jsonl and its log.

Under torchrun / accelerate (engine/training/distributed.py) every rank runs this; world rank 0 alone
writes env.json and the records (LabtuiCallback), the Trainer saves checkpoints from all ranks together,
and a rank that fails leaves its traceback in torchrun's error.json (`record`), which names the root
cause of the run's failure.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from pathlib import Path

from labtui.engine.config.experiment import resolve_path
from labtui.engine.rundir import store
from labtui.engine.training.errors import explain


def _record(fn):
    """torchrun's `record` around `fn` when running under torchrun (TORCHELASTIC_ERROR_FILE set): a failure
    that escapes `fn` lands in the rank's error.json. torch is imported only then."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
            return fn(*args, **kwargs)
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(fn)(*args, **kwargs)

    return wrapper


@_record
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labtui.engine.training.worker")
    ap.add_argument("run_dir")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    run = store.Run(Path(args.run_dir))
    return train(run, resume=args.resume)


def environment(device: str | None = None) -> dict:
    import platform
    import socket

    env = {"python": platform.python_version(), "platform": platform.platform(), "host": socket.gethostname(),
           "argv": sys.argv, "pid": os.getpid()}
    for mod in ("torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            env[mod] = None
    try:
        import torch

        env["cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        env["device"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if env["device"].startswith("cuda"):
            env["device_name"] = torch.cuda.get_device_name(torch.device(env["device"]))
            env["device_count"] = torch.cuda.device_count()
        else:  # the CPU, also where a GPU is but the run was told to use the CPU (training.use_cpu)
            env["device_name"] = platform.processor() or platform.machine()
        env["torch_threads"] = torch.get_num_threads()
    except Exception:
        pass
    return env


def train(run: store.Run, resume: bool = False) -> int:
    from labtui.engine.training.callback import LabtuiCallback
    from labtui.engine.training.watchdog import Watchdog

    cfg = run.config()
    info = run.info()
    workspace = Path(info.get("workspace") or os.getcwd())
    eng = cfg.get("engine", {})
    cb = LabtuiCallback(run.path, empty_cache_every=int(eng.get("empty_cache_every") or 0),
                        sample_interval=float(eng.get("sample_interval") or 5.0))
    try:
        watchdog = Watchdog(run, cfg, cb)
        cb.watchdog = watchdog
        trainer = build_trainer(run, cfg, workspace, cb)
        if cb.is_main:
            store.atomic_write_json(run.file(store.ENV_FILE), {**environment(str(trainer.args.device)), "workspace_git": _git_commit(workspace),
                                                               "command": info.get("command")})
        checkpoint = None
        if resume:
            cp = run.latest_checkpoint()  # the newest *complete* one: a save cut short by a kill is skipped
            if cp is None:
                raise RuntimeError(f"nothing to resume from: {run.checkpoint_note()} (use `labtui retry` to start it again)")
            checkpoint = str(cp)
            print(f"[labtui] resuming from {run.checkpoint_note()} ({cp})", flush=True)
        print(f"[labtui] training {info.get('experiment')} ({run.id})", flush=True)
        watchdog.on_trainer(trainer)  # checks before the first step (engine/training/watchdog.py)
        trainer.train(resume_from_checkpoint=checkpoint)
        status = "stopped" if cb.stop_requested else "completed"
        if status == "completed" and cfg.get("lora") is not None:
            trainer.save_model(str(run.file("adapter")))
        cb.finish(status)
        print(f"[labtui] {status} at step {cb.progress.get('step')}", flush=True)
        return 0
    except BaseException as e:  # noqa: BLE001 - everything is recorded, then turned into an exit code
        _record_error(e)
        return failed(e, lambda status, message, where: cb.finish(status, error=message, where=where))


def _record_error(e: BaseException) -> None:
    """Under torchrun (TORCHELASTIC_ERROR_FILE set): the exception and its traceback into this rank's
    error.json, as `record` writes it, so the agent reports this rank's root cause. Call inside `except`."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE") or isinstance(e, KeyboardInterrupt):
        return
    try:
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(e)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - the log still has the traceback
        pass


def failed(e: BaseException, finish) -> int:
    """The one failure epilogue of the training and the evaluation worker: the traceback goes to
    worker.log, `finish(status, message, where)` records the one-line explanation (errors.explain;
    status "stopped" for an interrupt, else "failed"), that line is printed last; exit code 1."""
    traceback.print_exc()
    sys.stdout.flush()
    message, where = explain(e)
    status = "stopped" if isinstance(e, KeyboardInterrupt) else "failed"
    try:
        finish(status, message, where)
    except Exception:  # noqa: BLE001 - the line below still says what happened
        traceback.print_exc()
    print(f"[labtui] {status}: {message}", flush=True)
    return 1


def _git_commit(path: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


# --- model and trainer --------------------------------------------------------------------


def load_model_and_tokenizer(cfg: dict, workspace: Path, device_map=None, dtype_override: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = cfg["model"]
    name = m["model_name_or_path"]
    local = resolve_path(name, workspace)
    source = str(local) if local is not None and local.exists() else name
    kwargs = {"trust_remote_code": bool(m.get("trust_remote_code")), "revision": m.get("revision")}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    dtype = dtype_override or m.get("dtype") or "auto"
    model_kwargs = dict(kwargs)
    if dtype != "auto":
        model_kwargs["dtype"] = getattr(torch, dtype)
    else:
        model_kwargs["dtype"] = "auto"
    if m.get("attn_implementation"):
        model_kwargs["attn_implementation"] = m["attn_implementation"]
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(source, **model_kwargs)
    set_pad_token(tokenizer, model)
    return model, tokenizer


PAD_TOKEN = "<|labtui_pad|>"


def set_pad_token(tokenizer, model, not_eos: bool = False) -> None:
    """The one pad-token policy of training and evaluation. A tokenizer without a pad token gets its
    unk token (when that is not EOS), else a new PAD_TOKEN; with `not_eos` (left-padded batched
    generation, where padding that is EOS reads as the end) a pad equal to EOS is replaced the same
    way. Training keeps a pad equal to EOS: padded labels are -100, so EOS is still learned. The
    embeddings grow to hold a new token; model.config.pad_token_id is set when the model has none."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad is None or (not_eos and pad == eos):
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id != eos:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


# Defaults labtui brings to TrainingArguments / SFTConfig (the user's `training:` wins).
TRAINING_DEFAULTS = {
    "logging_steps": 10,
    "disable_tqdm": True,
    "save_total_limit": 3,
}


def training_args(cfg: dict, run: store.Run, has_eval: bool) -> dict:
    from labtui.engine.training.libcheck import with_platform_defaults

    training = with_platform_defaults({**TRAINING_DEFAULTS, **(cfg.get("training") or {})}, cfg["trainer"])
    if has_eval and "eval_strategy" not in training and "evaluation_strategy" not in training:
        training["eval_strategy"] = "steps"
        training.setdefault("eval_steps", training.get("logging_steps", 10) * 5)
    training.update(
        output_dir=str(run.file(store.CHECKPOINTS_DIR)),
        logging_nan_inf_filter=False,  # a NaN loss must be recorded as NaN, not replaced by the mean
        report_to="none",
        include_num_input_tokens_seen="non_padding",  # count real tokens, per optimizer step
        prediction_loss_only=True,  # in-training eval keeps no logits (no OOM at eval)
        seed=int(cfg["engine"].get("seed", 42)),
    )
    return training


def loss_on_of(cfg: dict) -> str:
    """task.loss_on; configs written before the key existed get their trainer's default."""
    from labtui.engine.config.experiment import loss_on_default

    return (cfg.get("task") or {}).get("loss_on") or loss_on_default(cfg.get("trainer"))


def plain_trainer_features(tokenizer, prompt: str, completion: str, max_length: int, loss_on: str) -> dict:
    """One example for the plain Trainer: input ids = prompt + answer + EOS, cut to max_length by
    dropping the prompt's start. loss_on "all" labels every token, as the causal-LM collator
    (DataCollatorForLanguageModeling, mlm=False) does in a typical plain Trainer set-up; "answer"
    masks the prompt (-100) so only the answer and EOS are learnt, as SFTTrainer does."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    answer = tokenizer(completion, add_special_tokens=False)["input_ids"] + eos
    prompt_ids = prompt_ids[-max(1, max_length - len(answer)):]
    ids = (prompt_ids + answer)[:max_length]
    masked = [-100] * len(prompt_ids) if loss_on == "answer" else list(prompt_ids)
    labels = (masked + answer)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def build_trainer(run: store.Run, cfg: dict, workspace: Path, cb):
    import datasets
    import transformers
    from labtui.engine.training.data import load_splits, to_prompt_completion

    transformers.set_seed(int(cfg["engine"].get("seed", 42)))
    transformers.logging.set_verbosity_warning()
    splits = load_splits(cfg, workspace)
    print(f"[labtui] data: {len(splits.train)} train, {len(splits.eval)} eval, {len(splits.test)} test from {splits.source}", flush=True)
    model, tokenizer = load_model_and_tokenizer(cfg, workspace)
    task = cfg["task"]
    args = training_args(cfg, run, has_eval=bool(splits.eval))
    peft_config = None
    if cfg.get("lora") is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**cfg["lora"])
    train_rows = [to_prompt_completion(e, task) for e in splits.train]
    eval_rows = [to_prompt_completion(e, task) for e in splits.eval]

    if cfg["trainer"] == "sft":
        from trl import SFTConfig, SFTTrainer

        args.setdefault("max_length", task.get("max_length"))
        args["completion_only_loss"] = loss_on_of(cfg) == "answer"  # task.loss_on, validated to agree
        sft_args = SFTConfig(**args)
        return SFTTrainer(
            model=model, args=sft_args, processing_class=tokenizer,
            train_dataset=datasets.Dataset.from_list(train_rows),
            eval_dataset=datasets.Dataset.from_list(eval_rows) if eval_rows else None,
            peft_config=peft_config, callbacks=[cb],
        )

    # The plain transformers.Trainer baseline: labtui's own tokenisation (prompt, then answer + EOS;
    # an over-long prompt loses its start, never the answer) and a padding collator. The loss
    # target is task.loss_on (see `plain_trainer_features`).
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    max_length = int(task.get("max_length") or 512)
    loss_on = loss_on_of(cfg)

    def tokenize(row):
        return plain_trainer_features(tokenizer, row["prompt"], row["completion"], max_length, loss_on)

    def dataset(rows):
        return datasets.Dataset.from_list(rows).map(tokenize, remove_columns=["prompt", "completion"])

    collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, label_pad_token_id=-100, padding=True)
    return Trainer(
        model=model, args=TrainingArguments(**args), data_collator=collator, processing_class=tokenizer,
        train_dataset=dataset(train_rows), eval_dataset=dataset(eval_rows) if eval_rows else None, callbacks=[cb],
    )


if __name__ == "__main__":
    sys.exit(main())
