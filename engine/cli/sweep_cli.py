"""`labtui sweep FILE --grid KEY=V1,V2 ...`: the product of the grid queued as the runs of one group.

Each point of the grid is `labtui run FILE --set KEY=V ...` (the values parse as --set's do, and the
whole experiment is validated the same way) with `eval.after_training: true`, so every run is
evaluated when its training completes. Every point is validated before anything is made: a bad key
or value is one `labtui: error: ...` line, exit code 2, and nothing is queued. The group is
run.json's `group` (store.Workspace.runs_in_group lists it; the run list and History show it).
Registered by engine/cli/main.py through `register(subparsers)`.
"""

from __future__ import annotations

import itertools
import re
import secrets
import sys
from pathlib import Path

from labtui.engine.cli.cli_base import UsageError, print_json, workspace_from
from labtui.engine.config.experiment import load_experiment, parse_overrides, set_dotted
from labtui.engine.rundir import fmt, store

GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}\Z")
AFTER_TRAINING = "eval.after_training"


def split_values(text: str) -> list[str]:
    """`2e-4,5e-5` -> ["2e-4", "5e-5"]; commas inside brackets stay (`[q_proj, v_proj],all-linear`)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth <= 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """[(key, [value texts])] from `--grid KEY=V1,V2` flags, in the order given. UsageError on a flag
    without `=`, an empty value, a repeated value or key."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not p for p in key.split(".")):
            raise UsageError(f"--grid {item}: expected KEY=V1,V2,..., for example --grid lora.r=16,64")
        values = split_values(text)
        if any(not v for v in values):
            raise UsageError(f"--grid {item}: an empty value (write {key}=null for the default)")
        if len(set(values)) != len(values):
            raise UsageError(f"--grid {item}: a value is listed twice")
        if any(k == key for k, _ in grid):
            raise UsageError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2")
        grid.append((key, values))
    return grid


def group_name(args, file: Path) -> str:
    if args.name is None:
        return f"{store.slugify(file.stem)[:30]}-{secrets.token_hex(2)}"
    if not GROUP_NAME.match(args.name):
        raise UsageError(f"--name {args.name!r}: a group name is 1-40 letters, digits, '.', '_' or '-', starting "
                         f"with a letter or digit")
    return args.name


def cmd_sweep(args) -> int:
    from labtui.engine.cli.runs import load_and_validate

    ws = workspace_from(args)
    file = Path(args.file)
    grid = parse_grid(args.grid)
    if not grid:
        raise UsageError("labtui sweep needs at least one --grid KEY=V1,V2 (e.g. --grid training.learning_rate=2e-4,5e-5)")
    set_keys = {s.partition("=")[0].strip() for s in args.set}
    both = [k for k, _ in grid if k in set_keys]
    if both:
        raise UsageError(f"{both[0]} is given both in --set and in --grid; keep it in --grid")
    name = group_name(args, file)
    if args.name is not None and not args.dry_run:
        taken = ws.runs_in_group(name)
        if taken:
            raise UsageError(f"group '{name}' already has {len(taken)} run(s) in {ws.logs}; choose another --name")
    points = [dict(zip([k for k, _ in grid], combo)) for combo in itertools.product(*(v for _, v in grid))]
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    desc = load_experiment(file).config.get("description") or ""
    exps = []
    for point in points:
        typed = [*args.set, *(f"{k}={v}" for k, v in point.items())]
        over = parse_overrides(typed)  # as `labtui run --set` parses them
        if "description" not in over:  # what the run tests: the file's hypothesis and this point
            over["description"] = f"{desc} · " * bool(desc) + f"sweep {name}: " + ", ".join(typed)
        set_dotted(over, AFTER_TRAINING, True)
        exp = load_and_validate(ws, file, over, log=log)
        if (exp.config.get("launch") or {}).get("executor") == "slurm":
            raise UsageError(f"{file}: launch.executor is slurm; labtui sweep queues runs on this machine only "
                             f"(submit each point with `labtui run --slurm FILE --set ...`)")
        if exp.parent_config is not None:  # the evaluation is the sweep's, not a change the run tests
            set_dotted(exp.parent_config, AFTER_TRAINING, True)
        exps.append(exp)
    rows = [{"id": None, "values": {k: _get(exp.config, k) for k in point}} for point, exp in zip(points, exps)]
    if args.dry_run:
        if args.json:
            print_json({"group": name, "file": str(file), "dry_run": True, "runs": rows})
            return 0
        shape = " x ".join(str(len(v)) for _, v in grid)
        print(fmt.printable(f"sweep {name}: {len(points)} runs of {file} ({shape}), each evaluated after training"))
        for k, point in enumerate(points, 1):  # as typed
            print(fmt.printable(f"  {k:>3}  " + "  ".join(f"{key}={v}" for key, v in point.items())))
        print("dry run: nothing queued", file=sys.stderr)
        return 0
    from labtui.engine.runtime import launcher, queue

    runs = [launcher.create_training_run(ws, exp, args.argv, group=name) for exp in exps]
    for run, row in zip(runs, rows):
        queue.enqueue(ws, run)
        row["id"] = run.id
    started = queue.advance(ws)
    if args.json:
        print_json({"group": name, "file": str(file), "dry_run": False, "runs": rows, "started": started})
    else:
        for run in runs:
            print(run.id)
    log(fmt.printable(f"queued {len(runs)} run{'s' * (len(runs) != 1)} as group {name} ({len(started)} started), each "
                      f"evaluated after training; watch with `labtui` or `labtui runs`"))
    return 0


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def register(sub) -> None:
    p = sub.add_parser("sweep", help="queue the product of a grid of values as runs of one group, each evaluated "
                       "after training")
    p.add_argument("file", help="the experiment file")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a key and its values, e.g. training.learning_rate=2e-4,5e-5 (repeatable: the product is run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key in every run, "
                   "as `labtui run --set`")
    p.add_argument("--name", help="the group's name (default: the file's name and a short id)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the grid; queue nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)
