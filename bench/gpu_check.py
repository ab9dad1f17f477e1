"""GPU acceptance: labtui's GPU path proven on real hardware, in one command, with one report.

    python bench/gpu_check.py OUT [--cpu] [--workspace DIR] [--steps N] [--n N]
    make gpu-check GPU_CHECK_OUT=OUT [GPU_CHECK_ARGS=--cpu] [PY=python3]

Runs, in order, each step timed and checked, through the real `labtui` command in a fresh workspace
(the offline demo's data; no download):
  1 doctor     `labtui doctor --json`: CUDA, NVML and the CPU-vs-GPU numeric check pass
  2 train      a LoRA run on CUDA in bf16 on a random 26M-parameter Llama (hidden 512, 8 layers, the
               demo's tokenizer: the model `bench_eval --model wide` builds), then one in float32 and a
               one-rank torchrun run; read back from the run directory: NVML used/total, utilisation,
               power, temperature, and torch's allocated/reserved/peak samples are present and
               plausible (non-zero, peak >= allocated, used <= total); tokens/s of each
  3 resume     stop -> `stopped` with a checkpoint -> resume -> `completed`, on CUDA (the float32 run)
  4 parity     evaluations in score and generate mode on the GPU and the same N on the CPU, and
               `labtui parity` in float32 (must agree) and bf16 (reported): agreement, the largest
               log-likelihood difference, examples/s on each device
  5 empty_cache `engine.empty_cache_every` has an effect: the bf16 run's `empty_cache` records show
               reserved memory dropping at those steps
  6 tui        the dashboard drawn headless for the bf16 run (the real LabApp at 120x40): the GPU panel
               with real figures; its text goes into the report (dashboard.txt, dashboard.svg)
Writes OUT/gpu_check.json (every step: ok / failed / skipped, seconds, detail, figures; the machine:
GPU, driver, torch, CUDA), OUT/gpu_check.txt (a short table) and the dashboard capture; exits 1 when
a step failed. The whole script takes a few minutes on one H200 (the device tool's limit: 8).

--cpu runs every step on the CPU with the demo's tiny model and few steps: the checks that need CUDA
say "skipped: no GPU" and the rest runs for real (tests/test_gpu_check.py runs it in `make test`, so
the script cannot rot). Without --cpu on a machine with no GPU, it says so and exits 2.

On a GPU machine with labtui installed (`make install`): `make gpu-check`. On this workplace's device
machine (Python 3.12 with torch, transformers, peft, accelerate, nvidia-ml-py, matplotlib; no internet,
no trl, datasets, textual, plotext), first, here: `scripts/gpu-wheels` (downloads the missing packages as
wheels into .whl/, git-ignored through .git/info/exclude), then run, with carry [".whl"]:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . && PYTHONUNBUFFERED=1 make gpu-check PY=python3 GPU_CHECK_OUT=$OUT

(docs/gpu-check.md says the same, with what each figure means.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

NO_GPU = "skipped: no GPU"
STEPS = ("doctor", "train", "resume", "parity", "empty_cache", "tui")
WIDE = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8)


class CheckFailed(Exception):
    """A check that did not hold: the step fails with this message."""


def require(cond: Any, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


class Report:
    """The steps as they run: each with ok (True / False / None for skipped), seconds, detail, figures."""

    def __init__(self, out: Path, mode: str):
        self.out = out
        self.data: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "mode": mode,
                           "command": [sys.executable, *sys.argv], "machine": {}, "steps": []}

    @contextlib.contextmanager
    def step(self, name: str):
        """Times the block; CheckFailed or any error fails the step with its message (the next steps still run)."""
        rec: dict = {"name": name, "ok": True, "seconds": None, "detail": "", "figures": {}, "checks": []}
        self.data["steps"].append(rec)
        print(f"gpu-check: {name} ...", flush=True)
        t = time.monotonic()
        try:
            yield rec
        except CheckFailed as e:
            rec.update(ok=False, detail=str(e))
        except Exception as e:  # noqa: BLE001  (a step that breaks is a failed step, reported, not a crash)
            rec.update(ok=False, detail=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        rec["seconds"] = round(time.monotonic() - t, 1)
        mark = {True: "ok", False: "FAILED", None: "skipped"}[rec["ok"]]
        print(f"gpu-check: {name} {mark} in {rec['seconds']} s{': ' + rec['detail'] if rec['detail'] else ''}", flush=True)

    @property
    def ok(self) -> bool:
        return all(s["ok"] is not False for s in self.data["steps"])

    def write(self) -> None:
        self.data["ok"] = self.ok
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.out / "gpu_check.txt").write_text(self.table() + "\n")

    def table(self) -> str:
        m = self.data["machine"]
        lines = [f"labtui gpu-check ({self.data['mode']}) {self.data['date']}",
                 f"GPU {m.get('gpu') or 'none'} · driver {m.get('driver') or '-'} · torch {m.get('torch')} "
                 f"(CUDA {m.get('cuda') or 'none'}) · Python {m.get('python')}", ""]
        for s in self.data["steps"]:
            mark = {True: "ok", False: "FAILED", None: "skipped"}[s["ok"]]
            lines.append(f"{s['name']:<12} {mark:<8} {s['seconds'] or 0:>6.1f} s  {s['detail']}")
            for c in s["checks"]:
                lines.append(f"{'':<12} {'':<8} {'':>8}  {c}")
        lines.append("")
        lines.append("all checks passed" if self.ok else "FAILED: see the steps above and gpu_check.json")
        return "\n".join(lines)


def check(rec: dict, what: str, cond: Any, detail: str = "") -> None:
    """One check of a step: listed in the report; a failed one fails the step."""
    rec["checks"].append(f"{'ok  ' if cond else 'FAIL'} {what}{': ' + detail if detail else ''}")
    require(cond, f"{what}{': ' + detail if detail else ''}")


# --- the labtui command and the run directory -----------------------------------------------------


class Labtui:
    """The real `labtui` command (`python -m labtui`) in the check's workspace."""

    def __init__(self, ws_root: Path, log: Path):
        self.root = ws_root
        self.log = log

    def env(self) -> dict:
        return dict(os.environ, LABTUI_WORKSPACE=str(self.root), PYTHONUNBUFFERED="1")

    def __call__(self, *args: str, timeout: float = 300, ok_codes: tuple = (0,)) -> subprocess.CompletedProcess:
        cp = subprocess.run([sys.executable, "-m", "labtui", "-w", str(self.root), *args], cwd=self.root,
                            env=self.env(), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        with open(self.log, "a") as f:
            f.write(f"$ labtui {' '.join(args)}  -> {cp.returncode}\n{cp.stdout}{cp.stderr}\n")
        if cp.returncode not in ok_codes:
            tail = (cp.stderr.strip() or cp.stdout.strip()).splitlines()[-3:]
            raise CheckFailed(f"`labtui {' '.join(args)}` exited {cp.returncode}: {' | '.join(tail)}")
        return cp

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "labtui", "-w", str(self.root), *args], cwd=self.root,
                                env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def json(self, *args: str, **kw) -> Any:
        return json.loads(self(*args, **kw).stdout)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def wait_final(run, timeout: float) -> dict:
    from labtui.engine.rundir import store

    state = wait_until(lambda: (s := run.state()).get("status") in store.FINAL and s, timeout, f"{run.id} to end")
    wait_until(lambda: not run.state().get("after_run"), 60, f"{run.id}'s after-run step")
    return state


def records(run, kind: str, file: str | None = None) -> list[dict]:
    from labtui.engine.rundir import store

    return [r for r in store.read_jsonl(run.file(file or store.METRICS_FILE)) if r.get("kind") == kind]


def outcome(state: dict, run) -> str:
    """A run's status; with its error and the end of its log when it did not complete."""
    from labtui.engine.rundir import store

    if state.get("status") == "completed":
        return "completed"
    return f"{state.get('status')}: {state.get('error') or ''} | " + " | ".join(store.tail_lines(run.file(store.LOG_FILE), 4))


# --- the workspace -----------------------------------------------------------------------------------


def machine(cuda: bool) -> dict:
    import torch

    m: dict = {"python": platform.python_version(), "host": platform.node(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "cpu_count": os.cpu_count()}
    for pkg in ("transformers", "peft", "trl", "accelerate", "datasets", "textual", "nvidia-ml-py"):
        try:
            m[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            m[pkg] = None
    if cuda:
        m["gpu"] = torch.cuda.get_device_name(0)
        m["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            import pynvml

            pynvml.nvmlInit()
            driver = pynvml.nvmlSystemGetDriverVersion()
            m["driver"] = driver.decode() if isinstance(driver, bytes) else driver
        except Exception as e:  # noqa: BLE001
            m["driver"] = f"unknown ({e})"
    return m


def build_wide_model(ws_root: Path) -> str:
    """A randomly initialised 26M-parameter Llama with the demo's tokenizer, saved where an experiment
    names it (`from_pretrained(local_dir)`, the real loading path)."""
    import torch
    import transformers

    out = ws_root / "models" / "wide-llama"
    if (out / "config.json").exists():
        return "models/wide-llama"
    tiny = ws_root / "demo" / "tiny-llama"
    base = transformers.AutoConfig.from_pretrained(tiny)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=base.vocab_size, max_position_embeddings=base.max_position_embeddings,
                                   bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
                                   pad_token_id=base.pad_token_id, **WIDE)
    transformers.LlamaForCausalLM(cfg).save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
    return "models/wide-llama"


def experiment(model: str, dtype: str, steps: int, save_steps: int, batch: int, max_length: int, n: int,
               cpu: bool, **engine: Any) -> dict:
    training: dict = {"max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 3e-4,
                      "lr_scheduler_type": "linear", "warmup_steps": max(1, steps // 20),
                      "logging_steps": max(1, steps // 40), "save_steps": save_steps, "eval_steps": max(1, steps // 2)}
    if dtype == "bfloat16":
        training["bf16"] = True
    if cpu:
        training["use_cpu"] = True
    return {"description": f"gpu-check: {dtype} on {'the CPU' if cpu else 'CUDA'}",
            "model": {"model_name_or_path": model, "dtype": dtype}, "trainer": "trainer",
            "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"},
            "training": training,
            "dataset": {"format": "pubmedqa", "path": "demo/ori_pqal.json", "test_split": "demo/test_ground_truth.json",
                        "eval_size": 32},
            "task": {"max_length": max_length}, "eval": {"n": n, "batch_size": 32},
            "engine": {"seed": 42, "sample_interval": 1, "heartbeat_interval": 1, **engine}}


def write_experiment(ws_root: Path, name: str, cfg: dict) -> str:
    import yaml

    path = ws_root / "experiments" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return f"experiments/{name}.yaml"


def start(lab: Labtui, ws, file: str, *sets: str):
    args = ["run", file, "--now"]
    for s in sets:
        args += ["--set", s]
    run_id = lab(*args).stdout.strip().splitlines()[-1]
    return ws.run(run_id)


# --- the steps ---------------------------------------------------------------------------------------


def step_doctor(rec: dict, lab: Labtui, cuda: bool) -> None:
    out = lab.json("doctor", "--json", ok_codes=(0, 1))
    by = {c["name"]: c for c in out["checks"]}
    rec["figures"] = {name: {"ok": c["ok"], "detail": c["detail"]} for name, c in by.items()}
    check(rec, "torch imports", by.get("torch", {}).get("ok") is True, by.get("torch", {}).get("detail", "missing"))
    if not cuda:
        check(rec, "doctor sees no GPU and says so", by.get("cuda", {}).get("ok") is None, by.get("cuda", {}).get("detail", ""))
        rec["detail"] = f"CUDA/NVML/numerics {NO_GPU}; doctor ran ({len(by)} checks)"
        return
    for name in ("cuda", "nvml", "gpu numerics"):
        c = by.get(name) or {}
        check(rec, name, c.get("ok") is True, c.get("detail", "missing from doctor's checks"))
    rec["detail"] = by["gpu numerics"]["detail"]


def gpu_figures(run) -> dict:
    """The NVML samples (system.jsonl) and torch memory samples (metrics.jsonl) of a run, summarised."""
    from labtui.engine.rundir import store

    nvml = [g for r in records(run, "system", store.SYSTEM_FILE) for g in (r.get("gpus") or []) if g.get("index") == 0]
    mem = [d for r in records(run, "memory") for d in (r.get("devices") or []) if d.get("index") == 0]

    def top(xs: list, key: str) -> Any:
        vals = [x[key] for x in xs if isinstance(x.get(key), (int, float))]
        return max(vals) if vals else None

    return {"nvml_samples": len(nvml), "torch_samples": len(mem), "mem_used_max": top(nvml, "mem_used"),
            "mem_total": top(nvml, "mem_total"), "util_max": top(nvml, "util"), "power_max": top(nvml, "power"),
            "power_limit": top(nvml, "power_limit"), "temp_max": top(nvml, "temp"), "torch_allocated_max": top(mem, "allocated"),
            "torch_reserved_max": top(mem, "reserved"), "torch_peak_max": top(mem, "peak"),
            "nvml": nvml, "torch": mem}


def check_gpu_samples(rec: dict, run) -> dict:
    f = gpu_figures(run)
    nvml, mem = f.pop("nvml"), f.pop("torch")
    check(rec, "NVML samples", f["nvml_samples"] >= 3, f"{f['nvml_samples']} in system.jsonl")
    check(rec, "NVML used <= total, non-zero", all(0 < g["mem_used"] <= g["mem_total"] for g in nvml
                                                   if g.get("mem_used") is not None and g.get("mem_total")),
          f"max {f['mem_used_max']} of {f['mem_total']} bytes")
    check(rec, "GPU busy (utilisation > 0)", (f["util_max"] or 0) > 0, f"max {f['util_max']}%")
    check(rec, "power and temperature read", (f["power_max"] or 0) > 0 and (f["temp_max"] or 0) > 0,
          f"max {f['power_max']} W, {f['temp_max']} °C")
    check(rec, "torch memory samples", f["torch_samples"] >= 3, f"{f['torch_samples']} in metrics.jsonl")
    check(rec, "torch peak >= allocated > 0, reserved >= allocated",
          all(0 < d["allocated"] <= d["peak"] and d["allocated"] <= d["reserved"] for d in mem),
          f"max allocated {f['torch_allocated_max']}, reserved {f['torch_reserved_max']}, peak {f['torch_peak_max']}")
    return f


def train_figures(run) -> dict:
    train = records(run, "train")
    tps = [r["tokens_per_s"] for r in train[1:] if isinstance(r.get("tokens_per_s"), (int, float))]
    state = run.state()
    return {"id": run.id, "status": state.get("status"), "steps": train[-1]["step"] if train else None,
            "first_loss": train[0].get("loss") if train else None, "last_loss": train[-1].get("loss") if train else None,
            "tokens_per_s_median": sorted(tps)[len(tps) // 2] if tps else None,
            "wall_s": round(state["ended"] - state["started"], 1) if state.get("ended") and state.get("started") else None,
            "device": run_env(run).get("device")}


def run_env(run) -> dict:
    from labtui.engine.rundir import store

    env = store.read_json(run.file(store.ENV_FILE))
    return env if isinstance(env, dict) else {}


def step_train(rec: dict, lab: Labtui, ws, ctx: dict) -> None:
    cuda, timeout = ctx["cuda"], ctx["timeout"]
    runs: dict = {}
    main = start(lab, ws, ctx["files"]["main"])
    ctx["main"] = main
    state = wait_final(main, timeout)
    check(rec, f"{ctx['main_dtype']} run completed", state.get("status") == "completed",
          outcome(state, main))
    device = run_env(main).get("device")
    check(rec, "trained on " + ("CUDA" if cuda else "the CPU"), (device or "").startswith("cuda") == cuda, f"env.json device {device}")
    runs["main"] = train_figures(main)
    train = records(main, "train")
    check(rec, "losses logged and finite", len(train) >= 2 and all(isinstance(r.get("loss"), float) for r in train),
          f"{len(train)} train records, loss {runs['main']['first_loss']} -> {runs['main']['last_loss']}")
    if cuda:
        runs["main"]["gpu"] = check_gpu_samples(rec, main)
    else:
        rec["checks"].append(f"--   NVML and torch memory samples: {NO_GPU}")
    # a one-rank torchrun run (issue 13's launcher on the real device: rank 0 on cuda:0)
    tr = start(lab, ws, ctx["files"]["torchrun"])
    state = wait_final(tr, timeout)
    check(rec, "one-rank torchrun run completed", state.get("status") == "completed",
          outcome(state, tr))
    launch = tr.state().get("launch") or {}
    check(rec, "started by torchrun, one process", launch.get("launcher") == "torchrun" and launch.get("nproc") == 1,
          f"state.json launch {launch.get('launcher')} x {launch.get('nproc')}")
    from labtui.engine.rundir import store

    dev = run_env(tr).get("device")
    check(rec, "rank 0 trained on " + ("CUDA" if cuda else "the CPU"),
          (dev or "").startswith("cuda") == cuda and "[default0]:" in tr.file(store.LOG_FILE).read_text(errors="replace"),
          f"env.json device {dev}, rank 0's output in worker.log")
    runs["torchrun"] = train_figures(tr)
    rec["figures"] = runs
    tps = runs["main"]["tokens_per_s_median"]
    rec["detail"] = (f"{ctx['main_dtype']}: {runs['main']['steps']} steps, {tps:.0f} tokens/s" if tps else f"{ctx['main_dtype']} run done") + \
        ("" if cuda else f"; bf16 {NO_GPU}")


def step_resume(rec: dict, lab: Labtui, ws, ctx: dict) -> None:
    timeout = ctx["timeout"]
    run = start(lab, ws, ctx["files"]["resume"])
    ctx["resume"] = run
    wait_until(lambda: run.latest_checkpoint() is not None or run.state().get("status") in ("completed", "failed", "crashed"),
               timeout, f"{run.id}'s first checkpoint")
    check(rec, "a checkpoint before the stop", run.latest_checkpoint() is not None, run.state().get("status") or "")
    lab("stop", run.id)
    state = wait_final(run, timeout)
    cp = run.latest_checkpoint()
    check(rec, "stop -> stopped", state.get("status") == "stopped", state.get("status") or "")
    check(rec, "stopped with a checkpoint", cp is not None, str(cp))
    stopped_at = max((r["step"] for r in records(run, "train")), default=0)
    lab("resume", run.id, "--now")
    wait_until(lambda: run.state().get("status") not in ("stopped",), 60, f"{run.id} to start again")
    state = wait_final(run, timeout)
    check(rec, "resume -> completed", state.get("status") == "completed", outcome(state, run))
    starts = records(run, "start")
    check(rec, "resumed from the checkpoint", any(s.get("resumed") for s in starts), f"{len(starts)} start records")
    f = train_figures(run)
    f.update(stopped_at=stopped_at, checkpoint=str(cp.name) if cp else None)
    rec["figures"] = f
    rec["detail"] = f"stopped at step {stopped_at} ({cp.name if cp else '?'}), resumed to {f['steps']} ({ctx['resume_dtype']})"


def step_parity(rec: dict, lab: Labtui, ws, ctx: dict) -> None:
    from labtui.engine.analysis import evalstore
    from labtui.engine.rundir import store

    cuda, n, main = ctx["cuda"], ctx["n"], ctx.get("main")
    require(main is not None and main.state().get("status") == "completed", "no completed training run to evaluate")
    devices = ["cpu", "cuda"] if cuda else ["cpu"]
    ids = {}
    for device in devices:  # started together, detached, as a user would from the Evaluate screen
        for mode in ("score", "generate"):
            out = lab("eval", main.id, "--device", device, "--mode", mode, "--n", str(n)).stdout.split()
            ids[(device, mode)] = out[-1]
    evals = {}
    for key, eid in ids.items():
        path = evalstore.find_eval(ws, eid)
        state = wait_final(store.Run(path), ctx["timeout"])
        check(rec, f"{key[1]} eval on {key[0]} completed", state.get("status") == "completed", outcome(state, store.Run(path)))
        s = evalstore.read_summary(path)
        evals[key] = {"path": str(path), "n": s.get("n"), "accuracy": s.get("accuracy"),
                      "examples_per_s": s.get("examples_per_s"), "device_name": s.get("device_name")}
    figs: dict = {"evals": {f"{d}/{m}": v for (d, m), v in evals.items()}}
    for mode in ("score", "generate"):
        speeds = {d: evals[(d, mode)]["examples_per_s"] for d in devices}
        figs[f"{mode}_examples_per_s"] = speeds
    if not cuda:
        cp = lab("parity", main.id, "--n", str(n))
        check(rec, "`labtui parity` says there is no GPU to compare", "no GPU" in cp.stdout, cp.stdout.strip()[:120])
        rec["figures"] = figs
        rec["detail"] = (f"CPU score {evals[('cpu', 'score')]['examples_per_s']:.1f} ex/s, generate "
                         f"{evals[('cpu', 'generate')]['examples_per_s']:.1f} ex/s; GPU evals and parity {NO_GPU}")
        return
    from labtui.engine.cli.eval_cli import parity_report

    for mode in ("score", "generate"):  # the same N on both devices, in the experiment's dtype (bf16)
        r = parity_report(Path(evals[("cpu", mode)]["path"]), Path(evals[("cuda", mode)]["path"]))
        figs[f"{mode}_cpu_vs_gpu"] = {k: r[k] for k in ("n", "agree", "agreement", "max_loglik_diff", "acc_cpu", "acc_gpu")}
    procs = {dtype: lab.popen("parity", main.id, "--n", str(n), "--dtype", dtype, "--json") for dtype in ("float32", "bfloat16")}
    for dtype, p in procs.items():
        out, err = p.communicate(timeout=ctx["timeout"])
        try:
            r = json.loads(out)
        except json.JSONDecodeError:
            raise CheckFailed(f"labtui parity --dtype {dtype} exited {p.returncode}: {err.strip()[-300:]}") from None
        figs[f"parity_{dtype}"] = {k: r.get(k) for k in ("n", "agree", "agreement", "max_loglik_diff", "acc_cpu", "acc_gpu", "verdict", "ok")}
        if dtype == "float32":
            check(rec, "parity in float32: GPU agrees with the CPU", r.get("ok") is True,
                  f"{r.get('agree')}/{r.get('n')}, max log-likelihood difference {r.get('max_loglik_diff')}")
        else:  # reduced precision may flip near-ties on a barely trained random model: reported, not required
            rec["checks"].append(f"info bf16 parity: {r.get('agree')}/{r.get('n')} agree, max log-likelihood difference "
                                 f"{r.get('max_loglik_diff')}: {r.get('verdict')}")
    rec["figures"] = figs
    sp = figs["score_examples_per_s"]
    rec["detail"] = (f"score ex/s GPU {sp['cuda']:.0f} CPU {sp['cpu']:.0f}; float32 parity "
                     f"{figs['parity_float32']['agree']}/{figs['parity_float32']['n']}, max Δloglik "
                     f"{figs['parity_float32']['max_loglik_diff']:.3g}")


def step_empty_cache(rec: dict, ctx: dict) -> None:
    main = ctx.get("main")
    require(main is not None, "no training run")
    recs = records(main, "empty_cache")
    every = ctx["empty_cache_every"]
    if not ctx["cuda"]:
        check(rec, "no empty_cache records on the CPU (nothing to empty)", not recs, f"{len(recs)} records")
        rec.update(ok=None, detail=f"{NO_GPU} (engine.empty_cache_every acts on the CUDA cache only)")
        return
    steps = [r["step"] for r in recs]
    check(rec, f"an empty_cache record every {every} steps", bool(recs) and all(s % every == 0 for s in steps),
          f"steps {steps[:6]}{'...' if len(steps) > 6 else ''}")
    check(rec, "reserved memory never grows across empty_cache", all(r["reserved_after"] <= r["reserved_before"] for r in recs))
    dropped = [r for r in recs if r["reserved_after"] < r["reserved_before"]]
    check(rec, "reserved memory drops at those steps", bool(dropped), f"{len(dropped)} of {len(recs)} released memory")
    freed = [r["reserved_before"] - r["reserved_after"] for r in recs]
    rec["figures"] = {"records": len(recs), "dropped": len(dropped), "freed_bytes_max": max(freed),
                      "freed_bytes_median": sorted(freed)[len(freed) // 2]}
    rec["detail"] = f"{len(dropped)}/{len(recs)} calls released memory, up to {max(freed) / 2**20:.0f} MiB"


def step_tui(rec: dict, ws, ctx: dict, out: Path) -> None:
    main = ctx.get("main")
    require(main is not None, "no training run to show")
    text, svg, gpu = asyncio.run(_draw_dashboard(ws, main.id, ctx["timeout"]))
    (out / "dashboard.txt").write_text(text + "\n")
    (out / "dashboard.svg").write_text(svg)
    check(rec, "the dashboard lists the run", main.id[-4:] in text or ctx["main_name"] in text)
    if ctx["cuda"]:
        check(rec, "GPU panel: GPU0 with NVML memory", "GPU0" in gpu and "NVML" in gpu, gpu.replace("\n", " / ")[:160])
        check(rec, "GPU panel: the run's torch memory", "torch" in gpu, gpu.replace("\n", " / ")[:160])
        rec["detail"] = "GPU panel: " + " / ".join(ln.strip() for ln in gpu.splitlines()[:3])
    else:
        check(rec, "GPU panel says there is no GPU", "no NVIDIA GPU" in gpu, gpu.replace("\n", " / ")[:160])
        rec["detail"] = "dashboard drawn (GPU panel: no NVIDIA GPU)"


async def _draw_dashboard(ws, run_id: str, timeout: float) -> tuple[str, str, str]:
    from labtui.tui.app import LabApp

    app = LabApp(workspace=ws, poll_interval=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + min(timeout, 60)

        async def until(cond, what):
            while not cond():
                if time.monotonic() > deadline:
                    raise CheckFailed(f"the dashboard did not show {what} in time")
                await pilot.pause(0.1)

        await until(lambda: app.screen.query("#gpu"), "its GPU panel")
        app.select_run(run_id)
        await until(lambda: app.snapshot is not None and app.snapshot.run_id == run_id and app.snapshot.caught_up
                    and app.snapshot.last_system, "the run's machine samples")
        await pilot.pause(0.5)
        lines = [strip.text.rstrip() for strip in app.screen._compositor.render_strips()]
        panel = app.screen.query_one("#gpu")
        r = panel.content_region
        gpu = "\n".join(ln[r.x:r.right].rstrip() for ln in lines[r.y:r.bottom])
        svg = app.export_screenshot()
    return "\n".join(lines), svg, gpu


# --- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for gpu_check.json, gpu_check.txt and the dashboard capture")
    ap.add_argument("--cpu", action="store_true", help="every step on the CPU (tiny model, few steps); CUDA checks skipped")
    ap.add_argument("--workspace", type=Path, help="the workspace to build and run in (default: a new temporary folder)")
    ap.add_argument("--steps", type=int, help="steps of the main training run (default 800 on a GPU, 12 with --cpu)")
    ap.add_argument("--n", type=int, help="examples per evaluation (default 200 on a GPU, 16 with --cpu)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds any one run or evaluation may take")
    args = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); run with --cpu to check the "
              "script itself on the CPU", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, "cuda" if cuda else "cpu")
    report.data["machine"] = machine(cuda)
    ws_root = (args.workspace or Path(tempfile.mkdtemp(prefix="labtui-gpu-check-"))).resolve()
    ws_root.mkdir(parents=True, exist_ok=True)
    report.data["workspace"] = str(ws_root)
    lab = Labtui(ws_root, out / "commands.log")
    (out / "commands.log").write_text("")
    from labtui.engine.rundir import store

    ws = store.Workspace(ws_root)
    steps = args.steps or (800 if cuda else 12)
    n = args.n or (200 if cuda else 16)
    every = max(2, steps // 16)
    ctx: dict = {"cuda": cuda, "n": n, "timeout": args.timeout, "empty_cache_every": every,
                 "main_dtype": "bfloat16" if cuda else "float32", "resume_dtype": "float32", "main_name": "gpu-check-main"}
    report.data["settings"] = {"steps": steps, "n": n, "empty_cache_every": every}
    try:
        lab("demo", "--prepare-only")
        model = build_wide_model(ws_root) if cuda else "demo/tiny-llama"
        batch, length = (32, 256) if cuda else (4, 96)
        ctx["files"] = {
            "main": write_experiment(ws_root, "gpu-check-main", experiment(
                model, ctx["main_dtype"], steps, max(steps // 2, 1), batch, length, n, not cuda, empty_cache_every=every)),
            "resume": write_experiment(ws_root, "gpu-check-resume", experiment(
                model, "float32", max(steps // 2, 12), max(steps // 8, 4), batch, length, n, not cuda)),
            "torchrun": write_experiment(ws_root, "gpu-check-torchrun", {
                **experiment(model, ctx["main_dtype"], max(steps // 8, 8), max(steps // 8, 8), batch, length, n, not cuda),
                "launch": {"launcher": "torchrun", "nproc_per_node": 1}}),
        }
        report.data["model"] = {"path": model, **({"wide": WIDE} if cuda else {"tiny": "the demo's ~1M-parameter Llama"})}
    except Exception as e:  # noqa: BLE001
        with report.step("setup") as rec:
            raise CheckFailed(f"the workspace could not be built: {e}")
        report.write()
        print(report.table())
        return 1
    with report.step("doctor") as rec:
        step_doctor(rec, lab, cuda)
    with report.step("train") as rec:
        step_train(rec, lab, ws, ctx)
    with report.step("resume") as rec:
        step_resume(rec, lab, ws, ctx)
    with report.step("parity") as rec:
        step_parity(rec, lab, ws, ctx)
    with report.step("empty_cache") as rec:
        step_empty_cache(rec, ctx)
    with report.step("tui") as rec:
        step_tui(rec, ws, ctx, out)
    report.write()
    print(report.table())
    if not args.workspace and report.ok:
        shutil.rmtree(ws_root, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
