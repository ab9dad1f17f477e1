"""Synthetic workspaces for the benchmarks, written through labtui's own store code into a temp folder.

  workspace(n_runs=1000, eval_n=500)  a workspace of finished runs, each with metrics, machine
                                      samples, a log and one completed score-mode evaluation
                                      (predictions.jsonl + summary.json), and a baseline mark
  huge_run(n_records=1_000_000)       one run whose metrics.jsonl holds that many records (about
                                      300 bytes each, as LabtuiCallback writes them, index included)
  huge_overlay(n_records, others=2)   huge_run's run (hard-linked) and `others` small finished runs,
                                      for the dashboard's overlay of marked runs
  predictions(n)                      two paired prediction sets of n examples (eval dirs)

Everything is deterministic (seeded) and cached under `cache_dir()` by its parameters, so the
benchmarks share one copy; `python bench/synth.py --clean` removes the cache.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT  # noqa: E402
from labtui.engine.rundir import store  # noqa: E402

GEN_VERSION = 3  # bump when what the generators write changes
T_START = 1_767_225_600.0  # 2026-01-01 00:00 UTC: runs spread over the year after
GIB = 2**30
EXPERIMENTS = ["pqa-baseline", "pqa-tuned", "pqa-sft", "pqa-r64", "pqa-lr5e-5", "pqa-long", "gemma-sft",
               "gemma-lora16", "llama-qlora", "mistral-sft"]
CONFIG_TEXT = """\
name: {experiment}
description: {description}
model:
  model_name_or_path: google/gemma-3-4b-it
  dtype: bfloat16
  trust_remote_code: false
trainer: sft
lora:
  r: 64
  lora_alpha: 128
  lora_dropout: 0.05
  target_modules: all-linear
training:
  learning_rate: 5.0e-05
  max_steps: {max_steps}
  per_device_train_batch_size: 4
  gradient_accumulation_steps: 4
  logging_steps: 10
  save_steps: 200
dataset:
  format: pubmedqa
  path: data/ori_pqal.json
  test_split: data/test_ground_truth.json
  eval_size: 50
task:
  template: "Context: {{context}}\\nQuestion: {{question}}\\nAnswer:"
  choices: [yes, no, maybe]
  max_length: 512
eval:
  n: 500
  mode: score
  device: auto
  batch_size: 8
engine:
  seed: 42
  sample_interval: 5
  heartbeat_interval: 5
"""


def cache_dir(given: str | os.PathLike | None = None) -> Path:
    d = Path(given or os.environ.get("LABTUI_BENCH_CACHE") or Path(tempfile.gettempdir()) / "labtui-bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached(name: str, build: Callable[[Path], None], cache: str | os.PathLike | None = None,
           log: Callable[[str], object] = print) -> Path:
    """`cache/<name>-v<GEN_VERSION>`, built by `build(folder)` once (into a temp folder, then renamed)."""
    root = cache_dir(cache)
    final = root / f"{name}-v{GEN_VERSION}"
    if (final / ".complete").exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    t = time.time()
    log(f"[bench] generating {final.name} ...")
    build(tmp)
    (tmp / ".complete").write_text(f"{time.time() - t:.1f} s\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    log(f"[bench] generated {final.name} in {time.time() - t:.1f} s")
    return final


# --- one run ----------------------------------------------------------------------------------


def _train_record(rng: random.Random, step: int, max_steps: int, t: float, t_start: float, tokens: int) -> dict:
    frac = step / max_steps
    loss = 0.35 + 2.2 * math.exp(-5 * frac) + rng.uniform(-0.04, 0.04)
    return {"kind": "train", "t": t, "step": step, "max_steps": max_steps, "epoch": round(step / 250, 4),
            "loss": loss, "grad_norm": 0.4 + rng.random() * 0.3, "learning_rate": 5e-5 * (1 - frac),
            "tokens": tokens, "tokens_per_s": 16000 + rng.uniform(-400, 400), "tokens_per_s_avg": 16000.0,
            "samples_per_s": 16.0 + rng.uniform(-0.2, 0.2), "steps_per_s": 1.0, "elapsed": t - t_start}


def write_run(ws: store.Workspace, i: int, rng: random.Random, *, records: int = 120, eval_n: int = 500,
              statuses=("completed",) * 17 + ("failed", "stopped", "crashed")) -> store.Run:
    experiment = EXPERIMENTS[i % len(EXPERIMENTS)]
    created = T_START + i * 3 * 3600 + rng.uniform(0, 600)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(created))}-{experiment}-{i:04x}"
    path = ws.logs / run_id
    path.mkdir(parents=True)
    status = statuses[i % len(statuses)]
    max_steps = 1000
    description = f"run {i}: {experiment} with lr {5e-5 * (1 + i % 4):.0e}"
    changed = {"training.learning_rate": [2e-4, 5e-5 * (1 + i % 4)]} if i % 3 else {}
    store.atomic_write_json(path / store.RUN_FILE, {
        "id": run_id, "created": created, "experiment": experiment, "experiment_file": f"experiments/{experiment}.yaml",
        "chain": [f"experiments/{experiment}.yaml"], "description": description, "kind": "train",
        "parent": None, "parent_experiment": "pqa-baseline" if i % 10 else None, "changed": changed,
        "overrides": {}, "command": ["labtui", "run", f"experiments/{experiment}.yaml"], "workspace": str(ws.root)})
    (path / store.CONFIG_FILE).write_text(CONFIG_TEXT.format(experiment=experiment, description=description,
                                                             max_steps=max_steps))
    started = created + 4
    steps = max_steps if status == "completed" else rng.randint(100, max_steps - 100)
    w = store.IndexedJsonlWriter(path / store.METRICS_FILE, path / store.METRICS_INDEX_FILE)
    w.write({"kind": "start", "t": started, "step": 0, "max_steps": max_steps, "resumed": False})
    every = max(1, steps // max(1, records - records // 6))
    t, tokens, loss, best, best_step = started, 0, None, None, None
    for step in range(every, steps + 1, every):
        t = started + step * 1.0
        tokens += 16000 * every
        rec = _train_record(rng, step, max_steps, t, started, tokens)
        loss = rec["loss"]
        w.write(rec)
        if step % (every * 5) == 0:
            ev = loss + 0.05
            w.write({"kind": "eval", "t": t + 0.5, "step": step, "eval_loss": ev})
            if best is None or ev < best:
                best, best_step = ev, step
    ended = t + 3
    w.write({"kind": "end", "t": ended, "step": steps, "status": status, "error": None})
    w.close()
    with open(path / store.SYSTEM_FILE, "w") as f:
        for k in range(12):
            f.write(store.dumps({"kind": "system", "t": started + k * 5, "cpu": 40.0 + k, "cpu_count": 16,
                                 "ram_used": 20 * GIB, "ram_total": 128 * GIB, "ram_percent": 16.0,
                                 "proc_rss": 6 * GIB, "proc_cpu": 98.0, "proc_count": 3, "disk_free": 400 * GIB,
                                 "disk_total": 1000 * GIB, "gpus": []}) + "\n")
    (path / store.LOG_FILE).write_text(f"[labtui] training {experiment} ({run_id})\n[labtui] {status} at step {steps}\n")
    error = {"failed": "CUDA out of memory", "crashed": "killed by SIGKILL"}.get(status)
    checkpoint = str(path / "checkpoints" / f"checkpoint-{steps - steps % 200}")
    store.atomic_write_json(path / store.PROGRESS_FILE, {
        "step": steps, "max_steps": max_steps, "epoch": steps / 250, "train_loss": loss, "best_eval_loss": best,
        "best_step": best_step, "tokens": tokens, "tokens_per_s": 16000.0, "checkpoint": checkpoint,
        "started": started, "updated": ended,
        "result": {"status": status, "error": error, "error_where": None, "ended": ended}})
    store.atomic_write_json(path / store.STATE_FILE, {
        "status": status, "created": created, "started": started, "ended": ended, "updated": ended,
        "heartbeat": ended, "host": socket.gethostname(), "pid": 100000 + i, "pgid": 100000 + i,
        "supervisor_pid": 99000 + i, "exit_code": 0 if status == "completed" else (None if status == "crashed" else 1),
        "exit_signal": "SIGKILL" if status == "crashed" else None, "error": error})
    store.atomic_write_json(path / store.ENV_FILE, {"python": "3.11.7", "torch": "2.13.0", "host": "gpu-node-7"})
    if i % 7 == 0:
        (path / store.NOTES_FILE).write_text(f"Run {i}: lr sweep point; loss curve looks fine.\n")
    if eval_n:
        write_eval(store.Run(path), rng, eval_n, created=ended + 60, skill=0.55 + 0.25 * rng.random())
    return store.Run(path)


def write_eval(run: store.Run, rng: random.Random, n: int, *, created: float, skill: float,
               eval_id: str | None = None) -> Path:
    """A completed score-mode eval as engine.evaluate leaves it (examples p000000.., gold fixed per id)."""
    from labtui.engine.analysis import evalstore

    eval_id = eval_id or f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(created))}-cpu-score-{rng.getrandbits(16):04x}"
    path = run.file(store.EVALS_DIR) / eval_id
    path.mkdir(parents=True)
    labels = ["yes", "no", "maybe"]
    records = []
    for k in range(n):
        gold = labels[(k * 7919) % 100 // 45] if (k * 7919) % 100 < 90 else "maybe"
        correct = rng.random() < skill
        pred = gold if correct else rng.choice([x for x in labels if x != gold])
        ll = {c: -rng.uniform(0.05, 4.0) for c in labels}
        ll[pred] = max(ll.values()) + 0.1
        records.append({"id": f"p{k:06d}", "gold": gold, "pred": pred, "raw": f" {pred}", "correct": correct,
                        "temperature": None, "loglik": ll})
    with open(path / evalstore.PREDICTIONS_FILE, "w") as f:
        f.writelines(store.dumps(r) + "\n" for r in records)
    summary = evalstore.summarize(records, labels, mode="score", device="cpu", device_name="AMD EPYC",
                                  checkpoint="latest", checkpoint_step=1000, wall_s=n / 40, tokens=n * 300,
                                  created=created)
    summary.update(dtype="float32", load_s=4.0, split="test", eval_id=eval_id, run=run.id)
    store.atomic_write_json(path / evalstore.SUMMARY_FILE, summary)
    store.atomic_write_json(path / evalstore.EVAL_FILE, {
        "mode": "score", "device": "cpu", "device_actual": "cpu", "n": n, "n_requested": n, "split": "test",
        "checkpoint": "latest", "checkpoint_step": 1000, "choices": labels, "batch_size": 8, "purpose": "eval",
        "dtype_actual": "float32"})
    store.atomic_write_json(path / store.RUN_FILE, {"id": eval_id, "kind": "eval", "run": run.id, "created": created,
                                                    "workspace": str(run.path.parent.parent)})
    store.atomic_write_json(path / store.STATE_FILE, {"status": "completed", "created": created,
                                                      "started": created + 1, "ended": created + 60})
    evalstore.columns(path)  # as the eval worker leaves it when it completes
    store.atomic_write_json(path / store.PROGRESS_FILE, {
        "done": n, "total": n, "step": n, "max_steps": n, "status": "completed",
        "result": {"status": "completed", "error": None, "error_where": None, "ended": created + 60}})
    return path


# --- the data sets --------------------------------------------------------------------------


def workspace(n_runs: int = 1000, eval_n: int = 500, records: int = 120, cache=None, log=print) -> Path:
    """A workspace root with `n_runs` finished runs, each evaluated, and the oldest marked as baseline."""

    def build(root: Path) -> None:
        ws = store.Workspace(root)
        ws.logs.mkdir(parents=True)
        (root / "experiments").mkdir()
        rng = random.Random(7)
        first = None
        for i in range(n_runs):
            run = write_run(ws, i, rng, records=records, eval_n=eval_n)
            first = first or run.id
        if first:
            (ws.logs / ".labtui-baseline").write_text(first + "\n")

    return cached(f"ws-{n_runs}runs-{eval_n}ex-{records}rec-cols", build, cache, log)


def huge_run(n_records: int = 1_000_000, cache=None, log=print) -> Path:
    """A workspace root with one run of `n_records` metric records: a train record per step, an eval
    every 1,000 steps, a GPU memory sample every 200, a checkpoint every 5,000, written through
    engine.store.IndexedJsonlWriter as LabtuiCallback writes them (about 300 bytes a record)."""

    def build(root: Path) -> None:
        ws = store.Workspace(root)
        ws.logs.mkdir(parents=True)
        (root / "experiments").mkdir()
        rng = random.Random(11)
        run = write_run(ws, 0, rng, records=2, eval_n=0)
        for name in (store.METRICS_FILE, store.METRICS_INDEX_FILE):
            run.file(name).unlink()
        fill_metrics(run.path, n_records, rng)
        state = run.raw_state()
        state.update(status="completed")
        store.atomic_write_json(run.file(store.STATE_FILE), state)

    return cached(f"huge-{n_records}rec", build, cache, log)


def huge_overlay(n_records: int = 1_000_000, others: int = 2, records: int = 2000, cache=None, log=print) -> Path:
    """A workspace root with `huge_run`'s run (its files hard-linked, not copied: appends to the original
    show here too, which bench_huge_run's ingest undoes) and `others` finished runs of `records` records:
    what the dashboard overlays when the big run and the others are marked."""
    huge = huge_run(n_records, cache=cache, log=log)

    def build(root: Path) -> None:
        ws = store.Workspace(root)
        ws.logs.mkdir(parents=True)
        (root / "experiments").mkdir()
        for src in (huge / "logs").glob("2*"):
            try:
                shutil.copytree(src, ws.logs / src.name, copy_function=os.link)
            except OSError:  # another file system: a copy
                shutil.rmtree(ws.logs / src.name, ignore_errors=True)
                shutil.copytree(src, ws.logs / src.name)
        rng = random.Random(13)
        for i in range(1, others + 1):
            write_run(ws, i, rng, records=records, eval_n=0, statuses=("completed",))

    return cached(f"overlay-{n_records}rec-{others}x{records}", build, cache, log)


def fill_metrics(run_dir: Path, n_records: int, rng: random.Random, *, t0: float = T_START,
                 step_s: float = 0.25) -> int:
    """Append `n_records` records to run_dir/metrics.jsonl (and its index); returns the last step."""
    w = store.IndexedJsonlWriter(run_dir / store.METRICS_FILE, run_dir / store.METRICS_INDEX_FILE)
    max_steps = int(n_records * 0.995)
    w.write({"kind": "start", "t": t0, "step": 0, "max_steps": max_steps, "resumed": False})
    written, step, tokens = 1, 0, 0
    while written < n_records:
        step += 1
        t = t0 + step * step_s
        tokens += 4096
        w.write(_train_record(rng, step, max_steps, t, t0, tokens))
        written += 1
        if step % 1000 == 0 and written < n_records:
            w.write({"kind": "eval", "t": t + 0.1, "step": step, "eval_loss": 0.4 + 2.0 * math.exp(-5 * step / max_steps)})
            written += 1
        if step % 200 == 0 and written < n_records:
            w.write({"kind": "memory", "t": t, "devices": [{"index": 0, "allocated": 30 * GIB, "reserved": 36 * GIB,
                                                            "peak": 41 * GIB}]})
            written += 1
        if step % 5000 == 0 and written < n_records:
            w.write({"kind": "checkpoint", "t": t, "step": step, "path": str(run_dir / "checkpoints" / f"checkpoint-{step}")})
            written += 1
    w.close()
    return step


def tensorboard_events(n_records: int = 1_000_000, cache=None, log=print) -> Path:
    """The same train and eval losses as `huge_run`, written by torch.utils.tensorboard.SummaryWriter
    (one scalar per train record, one per eval record, with their steps and wall times)."""
    src = huge_run(n_records, cache, log)

    def build(root: Path) -> None:
        import numpy as np
        from torch.utils.tensorboard import SummaryWriter

        run = store.Workspace(src).runs()[0]
        entries, _ = store.read_metrics_index(run.file(store.METRICS_FILE))
        code = entries["kind"] & store.KIND_MASK
        w = SummaryWriter(log_dir=str(root / "tb"), max_queue=1000, flush_secs=30)
        for tag, c in (("train/loss", 1), ("eval/loss", 2)):
            sel = entries[code == c]
            for step, value, t in zip(sel["step"].astype(np.int64).tolist(), sel["value"].tolist(), sel["t"].tolist()):
                w.add_scalar(tag, value, step, walltime=t)
        w.close()

    return cached(f"tb-{n_records}rec", build, cache, log)


def prediction_sets(n: int = 100_000, cache=None, log=print) -> tuple[Path, Path]:
    """Two eval dirs with `n` paired predictions each (same example ids, different skill)."""

    def build(root: Path) -> None:
        ws = store.Workspace(root)
        ws.logs.mkdir(parents=True)
        rng = random.Random(3)
        for i, skill in enumerate((0.62, 0.66)):
            run = write_run(ws, i, rng, records=10, eval_n=0)
            write_eval(run, random.Random(100 + i), n, created=T_START + 86400 * (i + 1), skill=skill,
                       eval_id=f"eval-{'ab'[i]}")

    root = cached(f"preds-{n}-cols", build, cache, log)
    runs = store.Workspace(root).runs()
    return runs[0].file(store.EVALS_DIR) / "eval-a", runs[1].file(store.EVALS_DIR) / "eval-b"


def demo_workspace(cache=None, log=print) -> Path:
    """A workspace with the offline demo (engine.demo: the ~1M-parameter Llama and synthetic
    PubMedQA-style data) whose test split has 500 examples, and the shipped experiment files."""

    def build(root: Path) -> None:
        from labtui.engine.training import demo

        demo.prepare(root, n=1400, test_n=500, log=lambda m: None)
        shutil.copytree(ROOT / "experiments", root / "experiments")
        (root / "logs").mkdir()

    return cached("demo-500test", build, cache, log)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Build (or --clean) the benchmarks' synthetic data.")
    ap.add_argument("--clean", action="store_true")
    ap.add_argument("--cache")
    args = ap.parse_args()
    if args.clean:
        shutil.rmtree(cache_dir(args.cache), ignore_errors=True)
    else:
        print(workspace(cache=args.cache))
        print(huge_run(cache=args.cache))
        print(prediction_sets(cache=args.cache))
    _ = ROOT
