"""Creating runs and starting them detached. Used by the CLI and the TUI; imports nothing heavy.

A run is started as `python -m labtui.engine.runtime.supervisor RUN_DIR -- python -m labtui.engine.training.worker RUN_DIR` in a
new session with stdin closed and output appended to the run's log, so closing the terminal, a
dropped SSH connection, or quitting the TUI never stops it.

A run whose `launch.launcher` is torchrun or accelerate runs `python -m labtui.engine.training.distributed
RUN_DIR` instead: that shim calls the launcher in its own process (torchrun's `run()`, accelerate's
`launch_command`) with the arguments `launcher_args` builds here, so it can catch a rank's failure and
write it down (`ranks/failure.json`). The plan (launcher, resolved process count, accelerate config,
the launcher's command line) is `launch_plan`, recorded as state.json's `launch` for every run.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml
from labtui.engine.config.experiment import ACCELERATE_PRESETS, LAUNCHERS, Experiment, accelerate_config_path, launch_settings
from labtui.engine.rundir import ranks, store
from labtui.engine.runtime import sysmon


def create_training_run(ws: store.Workspace, exp: Experiment, argv: list[str] | None = None,
                        parent: str | None = None, status: str = "queued", group: str | None = None) -> store.Run:
    """A new run folder for `exp`; `group`: run.json's group (the runs of one `labtui sweep`)."""
    cfg = exp.config
    parent_name = exp.parent_config.get("name") if exp.parent_config else None
    info = {
        "experiment": exp.name,
        "experiment_file": str(exp.path),
        "chain": [str(p) for p in exp.chain],
        "description": cfg.get("description") or "",
        "kind": "train",
        "parent": parent,
        "parent_experiment": parent_name,
        "changed": exp.changed,
        "overrides": exp.overrides,
        "command": argv or [],
        "workspace": str(ws.root),
    }
    if group:
        info["group"] = group
    run = ws.create_run(exp.name, info, yaml.safe_dump(cfg, sort_keys=False))
    if status != "queued":
        run.update_state(status=status)
    return run


def create_script_run(ws: store.Workspace, command: list[str], argv: list[str] | None = None,
                      name: str | None = None) -> store.Run:
    name = name or store.slugify(_script_name(command))  # the name its id carries, everywhere
    info = {
        "experiment": name, "kind": "script", "description": shlex.join(command), "parent": None,
        "changed": {}, "script_command": command, "command": argv or [], "workspace": str(ws.root),
        "cwd": os.getcwd(),
    }
    return ws.create_run(name, info, None)


def _script_name(command: list[str]) -> str:
    for part in command[1:]:
        if part.endswith(".py") or "/" in part:
            return Path(part).stem
    return Path(command[0]).name


# --- more than one process: torchrun / accelerate -------------------------------------------

WORKER_MODULE = "labtui.engine.training.worker"
DISTRIBUTED_MODULE = "labtui.engine.training.distributed"
STOP_FILE = "stop.json"  # written by `labtui stop` before it signals (read by the supervisor and the worker)
FAILURE_FILE = "failure.json"  # ranks/failure.json: the shim's record of the ranks that failed
ACCELERATE_CONFIGS = Path(__file__).resolve().parent / "accelerate_configs"  # the shipped presets
DEEPSPEED_PRESETS = ("zero2", "zero3")


class LaunchError(Exception):
    """The run's `launch` settings cannot start here; the message says what to change."""


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set (CUDA stops at the first invalid id, "-1"
    hides them all), else the NVML device count (0 without a driver or pynvml). Torch-free."""
    total = sysmon.gpu_count()
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is None:
        return total
    n = 0
    for part in cvd.split(","):
        part = part.strip()
        if not part or part.startswith("-"):
            break
        n += 1
    return min(n, total)


def resolve_nproc(value, gpus: int | None = None) -> int:
    """`launch.nproc_per_node`: an int as it is; "auto" = the visible GPUs, 1 without a GPU."""
    gpus = visible_gpus() if gpus is None else gpus
    if value in (None, "auto"):
        return max(1, gpus)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise LaunchError(f"launch.nproc_per_node is {value!r}: use a whole number of processes or auto") from None
    if n < 1:
        raise LaunchError(f"launch.nproc_per_node is {n}: use at least 1 (or auto)")
    if gpus and n > gpus:
        raise LaunchError(f"launch.nproc_per_node is {n} but this machine shows {gpus} GPU(s) (CUDA_VISIBLE_DEVICES "
                          f"included): use at most {gpus}, or auto")
    return n


def accelerate_config_file(value: str | None, workspace: Path | None = None) -> str | None:
    """A preset name (ACCELERATE_PRESETS: the files in ACCELERATE_CONFIGS) or the user's own file (relative
    to the workspace) as the file to hand to `accelerate launch --config_file`."""
    if not value:
        return None
    path = accelerate_config_path(value, workspace or Path.cwd())
    if path is None:
        path = ACCELERATE_CONFIGS / f"{value}.yaml"
    if not path.is_file():
        raise LaunchError(f"launch.accelerate_config: no such file {path} (a YAML file, or a preset: "
                          f"{', '.join(ACCELERATE_PRESETS)})")
    return str(path)


def launcher_args(run_dir: Path, launch: dict, nproc: int, resume: bool = False, config_file: str | None = None,
                  rendezvous: dict | None = None) -> list[str]:
    """The arguments after `torchrun` or `accelerate launch`: one node, `nproc` processes, a free port
    (torchrun --standalone; accelerate's presets say main_process_port 0), the per-rank logs in
    ranks/torchrun/ (--tee 3: each rank's stdout and stderr in its own file there, and in worker.log with
    a rank prefix), the user's extra_args, then the worker module.

    With `rendezvous` ({nnodes, endpoint "host:port", id, node_rank}: one launcher per node of a Slurm
    job, started by srun), the launcher's own c10d rendezvous forms the world instead of --standalone:
    torchrun `--nnodes N --rdzv-backend c10d --rdzv-endpoint host:port --rdzv-id ID`; accelerate
    `--num_machines N --machine_rank R --main_process_ip host --main_process_port port --rdzv_backend c10d`
    (its --num_processes counts every node's)."""
    log_dir = str(Path(run_dir) / ranks.RANKS_DIR / ranks.TORCHRUN_LOG_DIR)
    worker = ["-m", WORKER_MODULE, str(run_dir), *(["--resume"] if resume else [])]
    extra = [str(a) for a in launch.get("extra_args") or []]
    if launch["launcher"] == "torchrun":
        if rendezvous:
            world = ["--nnodes", str(rendezvous["nnodes"]), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
                     "--rdzv-endpoint", str(rendezvous["endpoint"]), "--rdzv-id", str(rendezvous["id"])]
        else:
            world = ["--standalone", "--nproc-per-node", str(nproc)]
        return [*world, "--log-dir", log_dir, "--tee", "3", *extra, *worker]
    if launch["launcher"] == "accelerate":
        config = ["--config_file", config_file] if config_file else ["--multi_gpu"] if nproc > 1 or rendezvous else []
        if rendezvous:
            host, _, port = str(rendezvous["endpoint"]).rpartition(":")
            nodes = int(rendezvous["nnodes"])
            world = ["--num_processes", str(nproc * nodes), "--num_machines", str(nodes),
                     "--machine_rank", str(rendezvous.get("node_rank") or 0), "--main_process_ip", host,
                     "--main_process_port", port, "--rdzv_backend", "c10d"]
        else:
            world = ["--num_processes", str(nproc), "--num_machines", "1"]
        return [*config, *world, "--log_dir", log_dir, "--tee", "3", *extra, *worker]
    raise LaunchError(f"launch.launcher {launch['launcher']!r} is not one of {', '.join(LAUNCHERS)}")


def launch_plan(cfg: dict | None, run_dir: Path, resume: bool = False, workspace: Path | None = None,
                gpus: int | None = None, rendezvous: dict | None = None) -> dict:
    """What starts the run: {launcher, nproc, accelerate_config, command}. For torchrun and accelerate,
    `command` is the launcher's command line (what `python -m labtui.engine.training.distributed` runs
    in-process); for python, the worker's. Raises LaunchError for settings that cannot start here.
    With `rendezvous` (a Slurm job's, see launcher_args) the plan also has `nnodes` and `rendezvous`
    ("c10d host:port"); `nproc` stays the processes of one node."""
    launch = launch_settings(cfg)
    name = launch["launcher"]
    if name == "python":
        return {"launcher": "python", "nproc": 1, "accelerate_config": None,
                "command": _module_command(WORKER_MODULE, run_dir, resume)}
    if name not in LAUNCHERS:
        raise LaunchError(f"launch.launcher {name!r} is not one of {', '.join(LAUNCHERS)}")
    nproc = resolve_nproc(launch["nproc_per_node"], gpus)
    config_file = None
    if name == "accelerate":
        if importlib.util.find_spec("accelerate") is None:
            raise LaunchError("launch.launcher accelerate needs the accelerate package: pip install accelerate")
        config_file = accelerate_config_file(launch["accelerate_config"], workspace)
        if _needs_deepspeed(launch["accelerate_config"], config_file) and importlib.util.find_spec("deepspeed") is None:
            raise LaunchError(f"launch.accelerate_config {launch['accelerate_config']} runs DeepSpeed ZeRO, which is "
                              f"not installed: pip install deepspeed (or use multi_gpu or fsdp)")
        head = [sys.executable, "-m", "accelerate.commands.launch"]
    else:
        head = [sys.executable, "-m", "torch.distributed.run"]
    args = launcher_args(run_dir, launch, nproc, resume, config_file, rendezvous)
    plan = {"launcher": name, "nproc": nproc, "accelerate_config": launch["accelerate_config"] if config_file else None,
            "command": [*head, *args]}
    if rendezvous:
        plan.update(nnodes=int(rendezvous["nnodes"]), rendezvous=f"c10d {rendezvous['endpoint']}")
    return plan


def _needs_deepspeed(value: str | None, config_file: str | None) -> bool:
    if value in DEEPSPEED_PRESETS:
        return True
    if not config_file:
        return False
    try:
        data = yaml.safe_load(Path(config_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and str(data.get("distributed_type", "")).upper() == "DEEPSPEED"


def checkpoint_nproc(path: Path) -> int | None:
    """How many processes wrote a checkpoint: its rng_state_<rank>.pth files (the Trainer writes one per
    rank under DDP, rng_state.pth alone for one process); None when it holds neither."""
    path = Path(path)
    per_rank = [p for p in path.glob("rng_state_*.pth") if p.stem.rsplit("_", 1)[-1].isdigit()]
    if per_rank:
        return len(per_rank)
    return 1 if (path / "rng_state.pth").is_file() else None


def check_resume(run: store.Run, plan: dict) -> None:
    """A resume must use as many processes as wrote the checkpoint (its data order, optimizer shards and
    random states are per rank); raises LaunchError naming both numbers and what to do."""
    cp = run.latest_checkpoint()
    wrote = checkpoint_nproc(cp) if cp is not None else None
    if wrote is None:
        recorded = run.raw_state().get("launch")
        wrote = store.as_whole(recorded.get("nproc")) if isinstance(recorded, dict) else None
    world = plan["nproc"] * int(plan.get("nnodes") or 1)
    if wrote is not None and wrote != world:
        nodes = f" on each of {plan['nnodes']} nodes" if int(plan.get("nnodes") or 1) > 1 else ""
        raise LaunchError(f"{run.id}: {cp.name if cp else 'its checkpoint'} was written by {wrote} process(es), but this "
                          f"resume would start {world} ({plan['launcher']}, launch.nproc_per_node "
                          f"resolves to {plan['nproc']} here{nodes}); resume where {wrote} can run (set CUDA_VISIBLE_DEVICES, "
                          f"slurm.nodes), or use `labtui retry {run.id}` to start again with the new number")


def worker_command(run: store.Run, resume: bool = False) -> list[str]:
    info = run.info()
    if info.get("kind") == "script":
        return list(info["script_command"])
    module = WORKER_MODULE if launch_settings(run.config())["launcher"] == "python" else DISTRIBUTED_MODULE
    return _module_command(module, run.path, resume)


def _module_command(module: str, run_dir: Path, resume: bool) -> list[str]:
    """`python -m MODULE RUN_DIR [--resume]`: the worker, or the distributed shim around it."""
    return [sys.executable, "-m", module, str(run_dir), *(["--resume"] if resume else [])]


def plan_for(run: store.Run, resume: bool = False, rendezvous: dict | None = None) -> dict | None:
    """state.json's `launch` for a training run (None for script and eval runs); LaunchError when its
    settings cannot start here. `rendezvous`: see launcher_args (a Slurm job's ranks on every node)."""
    if run.info().get("kind") != "train":
        return None
    ws = run.info().get("workspace")
    return launch_plan(run.config(), run.path, resume, Path(ws) if isinstance(ws, str) else None, rendezvous=rendezvous)


def start(run: store.Run, resume: bool = False, command: list[str] | None = None) -> subprocess.Popen:
    """Start the run's supervisor detached; returns at once. A training run's state.json gets `launch`
    (`launch_plan`); settings that cannot start here leave it null, and the worker or the distributed
    shim fails the run with the reason."""
    launch = None
    if command is None:
        try:
            launch = plan_for(run, resume)
        except LaunchError:
            launch = None
    command = command or worker_command(run, resume)
    run.update_state(status="starting", supervisor_pid=None, pid=None, error=None, ended=None, queued=False,
                     queued_resume=None, **({"launch": launch} if run.info().get("kind") == "train" else {}))
    cwd = run.info().get("workspace")
    if not (isinstance(cwd, str) and os.path.isdir(cwd)):  # a run folder copied from another machine
        cwd = str(home_workspace(run))
    log = open(run.file(store.LOG_FILE), "ab")
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "labtui.engine.runtime.supervisor", str(run.path), "--", *command],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, cwd=cwd, env=env,
        )
    finally:
        log.close()
    _children.append(proc)
    _reap()
    return proc


def home_workspace(run: store.Run) -> Path:
    """The workspace a run folder lives in (`WS/logs/RUN`, an eval `WS/logs/RUN/evals/EVAL`), whatever its
    run.json says: a folder copied from elsewhere names a workspace that may not exist here."""
    return run.path.parents[3] if run.path.parent.name == store.EVALS_DIR else run.path.parent.parent


_children: list[subprocess.Popen] = []


def _reap() -> None:
    """Long-lived callers (the TUI) collect exited supervisors so no zombies pile up."""
    for p in list(_children):
        if p.poll() is not None:
            _children.remove(p)


def wait_started(run: store.Run, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = run.raw_state()
        if st.get("status") not in ("queued", "starting") or st.get("supervisor_pid"):
            return st
        time.sleep(0.1)
    return run.raw_state()

