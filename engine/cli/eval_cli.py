"""The evaluation commands of `labtui`: eval, evals, compare, export-predictions, parity, doctor.

Registered by engine/cli/main.py through `register(subparsers)`. Bad input raises UsageError (or the
schema's ConfigError), which the CLI prints as `labtui: error: ...` with exit code 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from labtui.engine.analysis import evalstore
from labtui.engine.analysis.evalstore import ERROR_KINDS
from labtui.engine.cli.cli_base import UsageError, get_run, print_json, workspace_from
from labtui.engine.cli.follow import follow_progress, progress_head, slurm_refresh
from labtui.engine.config.experiment import CHOICES, ConfigError
from labtui.engine.rundir import fmt, store
from labtui.engine.runtime import lifecycle


def _run(ws: store.Workspace, ref: str) -> store.Run:
    """A run by id, unique prefix, `last`, or its folder."""
    p = Path(ref)
    if (p / store.RUN_FILE).is_file() and not evalstore.is_eval_dir(p):
        return store.Run(p.resolve())
    return get_run(ws, ref)


def _print(*parts, **kw) -> None:
    """print with every part made printable: run data (ids, errors, warnings) carries no terminal escapes."""
    print(*(fmt.printable(p) for p in parts), **kw)


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _kind(k: str) -> str:
    return {"yes_no_swap": "yes/no swap", "hedged_maybe": "hedged maybe", "missed_maybe": "missed maybe"}.get(k, k)


def _ci(ci) -> str:
    return "" if not ci else f"[{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"


# --- labtui eval ------------------------------------------------------------------------------------


def cmd_eval(args) -> int:
    from labtui.engine.config.experiment import load_experiment
    from labtui.engine.runtime import evaluate_launch as el

    ws = workspace_from(args)
    ref = args.run
    run = holder = None
    experiment_file = None
    if ref.endswith((".yaml", ".yml")) and Path(ref).is_file():
        if not args.base:
            raise UsageError(f"{ref} is an experiment file: it has no trained weights. Add --base to evaluate "
                             f"its base model, or give a run id (see `labtui runs`)")
        exp = load_experiment(ref)
        from labtui.engine.config.experiment import check_files

        check_files(exp.config, ws.root, ref)
        cfg = exp.config
        experiment_file = ref
    else:
        run = _run(ws, ref)
        cfg = run.config()
        if run.info().get("kind") == "base":
            holder, run = run, None
            args.base = True
    if args.base and args.checkpoint not in (None, "latest", "base"):
        raise UsageError("--base evaluates the model without an adapter; leave out --checkpoint")
    settings = el.settings_from(
        cfg, n=args.n, mode=args.mode, device=args.device, split=args.split, temperatures=args.temperature,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, dtype=args.dtype, seed=args.seed,
    )
    settings["base"] = bool(args.base)
    if settings["device"].startswith("cuda") and not args.slurm:  # refused now, not 20 s later in the worker with a failed eval left behind
        ok, why = cuda_available()
        if not ok:
            given = f"--device {settings['device']}" if args.device else "eval.device: cuda (the experiment's)"
            raise UsageError(f"{given}: no GPU here ({why}); use --device cpu (or auto)")
    if experiment_file is not None:
        holder = el.create_base_holder(ws, exp, args.argv)
    ev = el.create_eval(run, settings, checkpoint=args.checkpoint or "latest", argv=args.argv,
                        holder=holder, workspace=ws.root, config=cfg if experiment_file else None)
    if run is not None and run.state().get("status") in store.LIVE:
        _print(f"note: {run.id} is still training; this eval shares its machine", file=sys.stderr)
    if args.slurm:  # its own job.sbatch in the eval folder, with the run's slurm: section
        from labtui.engine.runtime import slurm, slurm_runs

        try:
            job = slurm_runs.submit_eval(ev, cfg)
        except slurm.SlurmError as e:
            _print(f"labtui: error: {ev.id}: {fmt.printable(str(e))}", file=sys.stderr)
            return 1
        started = f"submitted to Slurm as job {job}: {ev.path}"
    else:
        el.start_eval(ev)
        started = f"started detached: {ev.path}"
    if not args.foreground:
        _print(ev.id)
        where = f"{(run or holder).id}/{ev.id}"
        _print(f"{started}\nfollow with `labtui evals {where}`; compare with `labtui compare`", file=sys.stderr)
        return 0
    if not args.json:
        _print(ev.id)
    state = follow_eval(ev)
    summary = evalstore.read_summary(ev.path)
    if args.json:
        print_json(summary if summary else {"status": state.get("status"), "error": state.get("error")})
    else:
        print_eval(ev.path)
    return 0 if state.get("status") == "completed" else 1


def follow_eval(ev: store.Run, out=sys.stderr) -> dict:
    """Wait for an eval with a progress line; Ctrl-C stops it (Ctrl-C again leaves it running)."""
    state = follow_progress(ev, lambda st, prog: progress_line(ev.id, st, prog), lifecycle.stop,
                            refresh=slurm_refresh(ev), worth_a_line=lambda before, prog: _decile(prog) != _decile(before),  # a line per 10%
                            stopping=" after this batch", poll_s=0.3, out=out)
    if state is None:
        return ev.state()
    if state.get("status") != "completed":
        out.write(fmt.printable(f"{ev.id}: {state.get('status')}" + (f" - {state['error']}" if state.get("error") else ""))
                  + "\n")
        for line in store.tail_lines(ev.file(store.LOG_FILE), 8):
            out.write(fmt.printable(f"  | {line}") + "\n")
    return state


def _decile(prog: dict) -> int:
    return int(10 * (prog.get("done") or 0) / prog["total"]) if prog.get("total") else -1


def progress_line(eval_id: str, state: dict, prog: dict) -> str:
    parts = [progress_head(eval_id, state.get("status"), prog.get("done") or 0, prog.get("total") or 0)]
    if prog.get("accuracy_so_far") is not None:
        parts.append(f"acc {prog['accuracy_so_far'] * 100:.1f}%")
    if prog.get("examples_per_s"):
        parts.append(f"{prog['examples_per_s']:.1f} ex/s")
    return " ".join(parts)


def print_eval(path: Path) -> None:
    row = evalstore.eval_row(path)
    summ = evalstore.read_summary(path)
    settings = evalstore.read_settings(path)
    cp = settings.get("checkpoint")
    cp_name = "base model" if cp == "base" else Path(cp).name if cp else "?"
    _print(f"{row['id']}  [{row['status']}]" + (f"  {row['error']}" if row.get("error") else ""))
    _print(f"  run         {row.get('run') or '-'}   checkpoint {cp_name} (step {settings.get('checkpoint_step')})")
    _print(f"  settings    {settings.get('mode')} mode, {settings.get('split')} split, device {settings.get('device')}"
          f" -> {settings.get('device_actual') or '?'}, dtype {settings.get('dtype_actual') or settings.get('dtype') or 'auto'},"
          f" batch {settings.get('batch_size')}")
    if not summ:
        prog = store.Run(path).progress()
        _print(f"  progress    {prog.get('done', 0)}/{prog.get('total', '?')}")
        return
    f1 = f"   macro-F1 {summ['macro_f1']:.3f}" if summ.get("macro_f1") is not None else ""
    _print(f"  accuracy    {_pct(summ['accuracy'])} {_ci(summ['ci'])} (95% Wilson, n={summ['n']}){f1}")
    errs = summ.get("errors") or {}
    _print("  answers     " + "  ".join(f"{_kind(k)} {errs.get(k, 0)}" for k in ERROR_KINDS if k != "other" or errs.get(k)))
    conf = summ.get("confusion") or {}
    if conf:
        order = list(summ.get("labels") or [])
        first = next(iter(conf.values()))
        cols = [c for c in order if c in first] + [c for c in first if c not in order]
        conf = {g: conf[g] for g in [*[x for x in order if x in conf], *[x for x in conf if x not in order]]}
        _print("  confusion   " + "gold \\ pred".ljust(12) + "".join(c[:13].rjust(14) for c in cols))
        for g, row_counts in conf.items():
            _print("              " + str(g).ljust(12) + "".join(str(row_counts[c]).rjust(14) for c in cols))
    if summ.get("per_temperature") and len(summ["per_temperature"]) > 1:
        for t, block in summ["per_temperature"].items():
            e = block.get("errors") or {}
            _print(f"  T={t:<8}  {_pct(block['accuracy'])} {_ci(block['ci'])}  empty {e.get('empty', 0)}  "
                  f"unparseable {e.get('unparseable', 0)}  hedged maybe {e.get('hedged_maybe', 0)}")
    speed = []
    if summ.get(store.TOKENS_PER_S):
        speed.append(f"{summ['tokens_per_s']:,.0f} tokens/s")
    if summ.get("examples_per_s"):
        speed.append(f"{summ['examples_per_s']:.1f} examples/s")
    if summ.get("wall_s") is not None:
        speed.append(f"wall {summ['wall_s']:.1f}s")
    _print(f"  speed       {', '.join(speed) or '-'}  on {summ.get('device_name') or summ.get('device')}")
    for w in summ.get("warnings") or []:
        _print(f"  WARNING     {w}")


# --- labtui evals ---------------------------------------------------------------------------------------


def cmd_evals(args) -> int:
    ws = workspace_from(args)
    from labtui.engine.runtime import slurm_runs

    slurm_runs.sync(ws)  # evaluations submitted with --slurm: their state as Slurm has it
    if args.ref:
        p = Path(args.ref)
        is_eval = (p.is_dir() and evalstore.is_eval_dir(p)) or ("/" in args.ref and not (p / store.RUN_FILE).is_file())
        if not is_eval:
            try:
                run = store.Run(p.resolve()) if (p / store.RUN_FILE).is_file() else ws.run(args.ref)
                rows = evalstore.list_evals(run)
            except store.RunNotFound:
                is_eval = True
        if is_eval:
            path = evalstore.find_eval(ws, args.ref)
            if args.stop:
                try:
                    _print(lifecycle.stop(store.Run(path)), file=sys.stderr)
                except lifecycle.LifecycleError as e:  # not running (any more): nothing to stop
                    _print(str(e), file=sys.stderr)
                return 0
            if args.json:
                print_json({**evalstore.eval_row(path), "settings": evalstore.read_settings(path),
                             "summary": evalstore.read_summary(path)})
            else:
                print_eval(path)
            return 0
    else:
        rows = [r for run in ws.iter_runs() for r in evalstore.list_evals(run)]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        _print("no evaluations yet - start one with `labtui eval RUN`")
        return 0
    _print(f"{'RUN/EVAL':<70} {'STATUS':<10} {'MODE':<8} {'DEVICE':<6} {'SPLIT':<5} {'STEP':>6} {'N':>5} {'ACCURACY':>9}  95% CI")
    for r in rows:
        name = f"{r['run'] or '-'}/{r['id']}"
        flag = "  !" if r["degenerate"] else ""
        step = "base" if r.get("checkpoint") == "base" else r[store.CHECKPOINT_STEP] if r[store.CHECKPOINT_STEP] is not None else "-"
        _print(f"{name[:70]:<70} {r['status']!s:<10} {r['mode'] or '-'!s:<8} {r['device'] or '-'!s:<6} "
               f"{r.get('split') or '-'!s:<5} {step!s:>6} {r['n'] or '-'!s:>5} {_pct(r['accuracy']):>9}  {_ci(r['ci'])}{flag}")
    return 0


# --- labtui compare -------------------------------------------------------------------------------------


def cmd_compare(args) -> int:
    from labtui.engine.analysis.stats import UnpairedError, format_p, h_magnitude, significance_marks

    ws = workspace_from(args)
    if args.gold and not Path(args.gold).exists():
        raise UsageError(f"--gold {args.gold}: no such file")
    a, b, ha, hb = evalstore.headline_pair(evalstore.resolve_ref(ws, args.a), evalstore.resolve_ref(ws, args.b))
    for tag, head in (("A", ha), ("B", hb)):
        if head is not None:
            _print(f"{tag}: {evalstore.which_line(head)}", file=sys.stderr)
    same = Path(a).resolve() == Path(b).resolve()
    if same:
        _print(f"warning: A and B are the same eval ({evalstore.source_name(a)}): every difference is 0 by "
              f"construction", file=sys.stderr)
    try:
        res = evalstore.compare_sources(a, b, gold=args.gold, method=args.method, temperature=args.temperature, ci=args.ci,
                                       flips=args.flips)
    except UnpairedError as e:
        raise UsageError(f"cannot compare {args.a} and {args.b}: {e}") from None
    res["source_a"], res["source_b"] = str(a), str(b)
    # compare takes one pair: a family of one comparison, so the Holm-adjusted p is the raw p (`labtui report`
    # adjusts over the runs it compares with one baseline)
    res["holm_p"], res["holm_family"] = res["mcnemar_p"], 1
    res["same_source"] = same
    res["headline_a"], res["headline_b"] = ({"id": h["id"], "why": h["why"]} if h else None for h in (ha, hb))
    if args.json:
        print_json(res)
        return 0
    w = max(len(res["name_a"]), len(res["name_b"]), 1)
    _print(f"A  {res['name_a']:<{w}}  accuracy {_pct(res['acc_a']):>6} {_ci(res['ci_a'])}  macro-F1 {res['macro_f1_a']:.3f}")
    _print(f"B  {res['name_b']:<{w}}  accuracy {_pct(res['acc_b']):>6} {_ci(res['ci_b'])}  macro-F1 {res['macro_f1_b']:.3f}")
    _print(f"   n = {res['n']} paired examples (95% Wilson intervals)")
    lo, hi = res["diff_ci"]
    _print(f"difference B - A   {res['diff'] * 100:+.1f} points, 95% CI [{lo * 100:+.1f}, {hi * 100:+.1f}] ({res['diff_ci_method']})")
    _print(f"McNemar ({res['mcnemar_method']})   b = {res['b']} (A right, B wrong), c = {res['c']} (A wrong, B right), "
          f"p {'' if format_p(res['mcnemar_p']).startswith('<') else '= '}{format_p(res['mcnemar_p'])} "
          f"{significance_marks(res['holm_p'])}".rstrip())
    _print("Holm-adjusted p    = the raw p: a family of 1 comparison (`labtui report` adjusts over several runs)")
    _print(f"Cohen's h          {res['cohens_h']:+.3f} ({h_magnitude(res['cohens_h'])})")
    _print()
    _print(f"  {'answers':<16}{'A':>8}{'B':>8}")
    for k in ERROR_KINDS:
        va, vb = res["errors_a"].get(k, 0), res["errors_b"].get(k, 0)
        if k == "other" and not (va or vb):
            continue
        _print(f"  {_kind(k):<16}{va:>8}{vb:>8}")
    _print()
    _print(f"verdict: {res['verdict']}")
    if args.flips:
        print_flips(res["flips"])
    return 0


FLIP_HEADS = {"b": "A right, B wrong", "c": "A wrong, B right"}


def _flip_answer(pred, margin) -> str:
    """`no (-1.42)`: a prediction with its log-likelihood margin (score mode), `""` for an empty output."""
    text = repr(pred) if not pred else str(pred)
    return text + (f" ({margin:+.2f})" if isinstance(margin, (int, float)) else "")


def print_flips(flips: dict, width: int = 100) -> None:
    """`compare --flips`: the discordant examples, b then c, one line of answers and one of question each."""
    margins = any(isinstance(e.get("margin_a"), (int, float)) for side in flips.values() for e in side)
    for k in ("b", "c"):
        _print()
        _print(f"{FLIP_HEADS[k]} ({k} = {len(flips[k])})" + (":" if flips[k] else ""))
        for e in flips[k]:
            _print(f"  {e['id']}  gold {e['gold']}  A {_flip_answer(e['pred_a'], e['margin_a'])}  "
                   f"B {_flip_answer(e['pred_b'], e['margin_b'])}")
            q = e.get("question")
            _print(f"    {fmt.clip(' '.join(q.split()), width - 4) if q else '(question not in the data set read)'}")
    if margins:
        _print()
        _print("(margin: the gold answer's log-likelihood minus the best other answer's; > 0 = right)")


# --- labtui export-predictions -------------------------------------------------------------------------


def cmd_export(args) -> int:
    ws = workspace_from(args)
    path, head = evalstore.resolve_with_why(ws, args.eval)
    if head is not None:
        _print(evalstore.which_line(head), file=sys.stderr)
    records = evalstore.load_predictions(path, temperature=args.temperature)
    if args.format == "pubmedqa":
        text = json.dumps({i: r["pred"] for i, r in records.items()}, indent=1) + "\n"
    else:
        text = "".join(json.dumps({k: r.get(k) for k in ("id", "gold", "pred", "raw", "correct", "temperature")}) + "\n"
                       for r in records.values())
    odd = sum(1 for r in records.values() if r["pred"] in (evalstore.EMPTY, evalstore.UNPARSEABLE))
    if args.output:
        store.atomic_write_text(Path(args.output), text)
        _print(f"wrote {len(records)} predictions to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if odd:
        _print(f"note: {odd} prediction(s) are empty or unparseable and are written as \"\" / \"unparseable\"",
              file=sys.stderr)
    return 0


# --- labtui parity ---------------------------------------------------------------------------------------


def cuda_available() -> tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        return True, torch.cuda.get_device_name(0)
    why = ("torch is a CPU-only build" if torch.version.cuda is None else "torch sees no CUDA device")
    return False, why


def cmd_parity(args) -> int:
    from labtui.engine.runtime import evaluate_launch as el

    ws = workspace_from(args)
    run = _run(ws, args.run)
    ok, name = cuda_available()
    if not ok:
        _print(f"parity: no GPU on this machine ({name}), so there is no CPU/GPU difference to check; "
              f"evaluations here run on the CPU. Nothing to do.")
        return 0
    cfg = run.config()
    evs = []
    for device in ("cpu", "cuda"):
        s = el.settings_from(cfg, n=args.n, mode="score", device=device, batch_size=args.batch_size,
                             dtype=args.dtype, purpose="parity")
        s["base"] = args.base
        evs.append(el.create_eval(run, s, checkpoint=args.checkpoint or "latest", argv=args.argv))
    _print(f"parity on {name}: {args.n} examples, score mode, checkpoint {args.checkpoint or 'latest'}", file=sys.stderr)
    for ev in evs:
        el.start_eval(ev)
    states = [follow_eval(ev) for ev in evs]
    for ev, st in zip(evs, states):
        if st.get("status") != "completed":
            _print(f"parity: the {evalstore.read_settings(ev.path).get('device')} eval {st.get('status')}: {st.get('error')}")
            return 1
    report = parity_report(evs[0].path, evs[1].path)
    if args.json:
        print_json(report)
    else:
        _print(f"CPU  accuracy {_pct(report['acc_cpu'])}   GPU accuracy {_pct(report['acc_gpu'])}   ({report['n']} examples)")
        _print(f"predictions agree on {report['agree']}/{report['n']} ({_pct(report['agreement'])}); "
              f"largest log-likelihood difference {report['max_loglik_diff']:.4g}")
        _print(report["verdict"])
    return 0 if report["ok"] else 1


def parity_report(cpu_dir: Path, gpu_dir: Path) -> dict:
    a = evalstore.load_predictions(cpu_dir)
    b = evalstore.load_predictions(gpu_dir)
    ids = sorted(set(a) & set(b))
    agree = sum(1 for i in ids if a[i]["pred"] == b[i]["pred"])
    diffs = [abs(float(a[i]["loglik"][c]) - float(b[i]["loglik"][c])) for i in ids for c in a[i].get("loglik", {})
             if c in b[i].get("loglik", {})]
    n = len(ids)
    max_diff = max(diffs) if diffs else float("nan")
    agreement = agree / n if n else 0.0
    ok = n > 0 and agreement >= 0.95
    if ok and agree == n:
        verdict = "ok: GPU inference matches the CPU."
    elif ok:
        verdict = (f"ok, with {n - agree} disagreement(s) near ties (reduced precision on the GPU); "
                   f"GPU results can be trusted.")
    else:
        verdict = ("PROBLEM: GPU inference disagrees with the CPU. Run evaluations with --device cpu until this "
                   "is fixed; then try --dtype float32 on the GPU, another attn_implementation (model."
                   "attn_implementation: eager), or a torch/CUDA driver update.")
    return {"n": n, "agree": agree, "agreement": agreement, "max_loglik_diff": max_diff,
            "acc_cpu": sum(a[i]["correct"] for i in ids) / n if n else None,
            "acc_gpu": sum(b[i]["correct"] for i in ids) / n if n else None,
            "cpu_eval": str(cpu_dir), "gpu_eval": str(gpu_dir), "ok": ok, "verdict": verdict}


# --- labtui doctor ---------------------------------------------------------------------------------------


def doctor_checks(ws: store.Workspace) -> list[dict]:
    """Each check: {name, ok, detail, fix}. `ok` None is information, not a problem."""
    import shutil

    checks: list[dict] = []

    def add(name, ok, detail, fix=None):
        checks.append({"name": name, "ok": ok, "detail": detail, "fix": fix})

    py = sys.version_info
    add("python", py >= (3, 10), f"{py.major}.{py.minor}.{py.micro}", "use Python 3.10 or newer")
    torch = None
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        add("torch", False, f"cannot import torch: {e}", "pip install torch (https://pytorch.org/get-started/locally/)")
    if torch is not None:
        add("torch", True, f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")
        for mod, pkg in (("transformers", "transformers"), ("peft", "peft"), ("trl", "trl")):
            try:
                add(mod, True, __import__(mod).__version__)
            except Exception as e:  # noqa: BLE001
                add(mod, False, f"cannot import {mod}: {e}", f"pip install {pkg}")
    from labtui.engine.runtime import sysmon

    gpus = sysmon.gpus()
    cuda = bool(torch is not None and torch.cuda.is_available())
    if cuda:
        add("cuda", True, f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}")
    elif gpus:
        fix = ("install a CUDA build of torch (https://pytorch.org/get-started/locally/)" if torch is not None and torch.version.cuda is None
               else "check that the NVIDIA driver matches torch's CUDA version (nvidia-smi; python -c 'import torch; torch.cuda.init()')")
        add("cuda", False, f"NVML sees {len(gpus)} GPU(s) ({gpus[0]['name']}) but torch cannot use them", fix)
    else:
        add("cuda", None, "no GPU: training and evaluation run on the CPU")
    if gpus:
        add("nvml", True, f"{len(gpus)} GPU(s) monitored ({gpus[0]['name']}, {gpus[0]['mem_total'] / 2**30:.0f} GiB)")
    elif cuda:
        add("nvml", False, f"GPU monitoring unavailable: {sysmon.nvml_error()}", "pip install nvidia-ml-py")
    else:
        add("nvml", None, "no GPU to monitor" + (f" ({sysmon.nvml_error()})" if sysmon.nvml_error() else ""))
    if cuda:
        checks.append(_gpu_numerics(torch))
    try:
        du = shutil.disk_usage(ws.root)
        free = du.free / 2**30
        add("disk", free >= 5, f"{free:.1f} GiB free in {ws.root}",
            "free some space: delete old checkpoints (logs/*/checkpoints) or move logs/ to a bigger disk")
    except OSError as e:
        add("disk", False, f"cannot read disk usage of {ws.root}: {e}", "check the workspace path")
    target = ws.logs if ws.logs.is_dir() else ws.root
    try:
        import tempfile

        with tempfile.NamedTemporaryFile(dir=target, prefix=".labtui-doctor-"):
            pass
        add("workspace", True, f"{target} is writable")
    except OSError as e:
        add("workspace", False, f"cannot write in {target}: {e.strerror}",
            "run labtui from a folder you can write to, or pass --workspace DIR")
    checks.extend(_experiment_checks(ws))
    return checks


def _gpu_numerics(torch) -> dict:
    """A small CPU-vs-GPU check of the operations inference rests on (matmul, softmax) in float32
    and bfloat16; `labtui parity RUN` is the full check with a model."""
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 256, generator=g)
        w = torch.randn(256, 512, generator=g) / 16
        worst = {}
        for dt in (torch.float32, torch.bfloat16):
            cpu = torch.log_softmax((x.to(dt) @ w.to(dt)).float(), -1)
            gpu = torch.log_softmax((x.to(dt).cuda() @ w.to(dt).cuda()).float(), -1).cpu()
            worst[str(dt).replace("torch.", "")] = float((cpu - gpu).abs().max())
        ok = worst["float32"] < 1e-2 and worst["bfloat16"] < 0.5 and all(math.isfinite(v) for v in worst.values())
        detail = "matmul + log_softmax CPU vs GPU, max difference " + ", ".join(f"{k} {v:.2g}" for k, v in worst.items())
        return {"name": "gpu numerics", "ok": ok, "detail": detail,
                "fix": None if ok else "GPU results differ from the CPU: evaluate with --device cpu and run `labtui parity RUN`; "
                                       "update the driver / torch build"}
    except Exception as e:  # noqa: BLE001
        return {"name": "gpu numerics", "ok": False, "detail": f"a small computation on the GPU failed: {e}",
                "fix": "evaluate with --device cpu; check the driver with nvidia-smi"}


# Data files the shipped experiments name that a fresh clone does not have, and where to get them.
DATA_SOURCES = {
    "ori_pqal.json": "PubMedQA's expert-labelled set: data/ori_pqal.json of the GitHub repository pubmedqa/pubmedqa "
                     "(or the hub's qiaojin/PubMedQA, config pqa_labeled, with dataset.format: hub)",
    "test_ground_truth.json": "PubMedQA's official test split: data/test_ground_truth.json of the same repository "
                              "(pubmedqa/pubmedqa)",
}


def _missing_data(cfg: dict, ws: store.Workspace) -> list[Path]:
    """The dataset files an experiment names that do not exist (a fresh clone has no data/)."""
    from labtui.engine.config.experiment import resolve_path

    ds = cfg.get("dataset") or {}
    if ds.get("format") == "hub":
        return []
    found = [resolve_path(ds.get(key), ws.root) for key in ("path", "test_split") if ds.get(key)]
    return [p for p in found if p is not None and not p.exists()]


def _experiment_checks(ws: store.Workspace) -> list[dict]:
    from labtui.engine.config.experiment import check_files, load_experiment

    files = sorted(ws.experiments.glob("*.y*ml")) if ws.experiments.is_dir() else []
    if not files:
        return [{"name": "experiments", "ok": None, "detail": f"no experiment files in {ws.experiments}", "fix": None}]
    out, bad, needs = [], 0, {}
    for f in files:
        try:
            exp = load_experiment(f)
            try:
                check_files(exp.config, ws.root, str(f.relative_to(ws.root)))
            except ConfigError as e:
                if "demo/" in str(e):  # the demo assets are built on first use
                    continue
                missing = _missing_data(exp.config, ws)
                if not missing:
                    raise
                for p in missing:  # data to download: information, not a problem of the file
                    needs.setdefault(p, []).append(f.name)
        except ConfigError as e:
            bad += 1
            out.append({"name": f"experiment {f.name}", "ok": False, "detail": str(e),
                        "fix": f"edit {f} (`labtui run {f.relative_to(ws.root)}` shows the same message)"})
    if not bad:
        out.append({"name": "experiments", "ok": True, "detail": f"{len(files)} file(s) in {ws.experiments} parse"})
    for p, names in needs.items():
        try:
            shown = p.relative_to(ws.root)
        except ValueError:
            shown = p
        how = DATA_SOURCES.get(p.name, "the data set the experiment was written for")
        out.append({"name": "data", "ok": None, "fix": None,
                    "detail": f"{', '.join(names)} need{'s' if len(names) == 1 else ''} {shown} (how to get it: {how})"})
    return out


def cmd_doctor(args) -> int:
    ws = workspace_from(args)
    checks = doctor_checks(ws)
    problems = [c for c in checks if c["ok"] is False]
    if args.json:
        print_json({"ok": not problems, "checks": checks})
        return 1 if problems else 0
    for c in checks:
        mark = "ok  " if c["ok"] else "FAIL" if c["ok"] is False else "--  "
        _print(f"{mark} {c['name']:<14} {c['detail']}")
        if c["ok"] is False and c.get("fix"):
            _print(f"     {'':<14} fix: {c['fix']}")
    if problems:
        _print(f"\n{len(problems)} problem(s) found")
        return 1
    _print("\nall fine")
    return 0


# --- registration --------------------------------------------------------------------------------------


def add_ci_argument(p) -> None:
    """--ci wald|bootstrap: the interval of the accuracy difference (compare and report)."""
    p.add_argument("--ci", choices=("wald", "bootstrap"), default="wald",
                   help="the difference's 95%% interval: paired Wald (default) or paired bootstrap "
                        "(10,000 resamples, seed 0); the output says which")


def _choices(key: str) -> str:
    return "{" + ",".join(CHOICES[f"eval.{key}"]) + "}"


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a run's checkpoint (or a base model) on the test split")
    p.add_argument("run", help="run id, unique prefix or 'last'; or an experiment file with --base")
    p.add_argument("--checkpoint", "-c", help="latest (default), best, a step number, or a checkpoint folder")
    p.add_argument("--base", action="store_true", help="the base model without the adapter (the baseline row)")
    # the choices come from the experiment schema (engine.config.CHOICES) and are checked by settings_from,
    # so `--split tset` and `eval.split: tset` in a file are refused in the same words
    p.add_argument("--device", metavar=_choices("device"), help="auto (default) picks the GPU when there is one; "
                   "cuda:N a GPU by its index")
    p.add_argument("--n", type=int, help="number of examples, 0 for all (default: the experiment's eval.n)")
    p.add_argument("--split", metavar=_choices("split"), help="default test")
    p.add_argument("--mode", metavar=_choices("mode"), help="score: log-likelihood of each choice (default); "
                   "generate: parse the generated answer")
    p.add_argument("--temperature", type=float, nargs="+", metavar="T", help="generate mode: one or more temperatures (0 = greedy)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dtype", metavar=_choices("dtype"), help="default: model.dtype of the experiment")
    p.add_argument("--max-new-tokens", type=int, help="generate mode (default 5)")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--foreground", "-f", action="store_true", help="wait, show progress, print the summary")
    p.add_argument("--json", action="store_true", help="with --foreground: print summary.json")
    p.add_argument("--slurm", action="store_true", help="submit the evaluation to Slurm (its own job.sbatch in the "
                   "eval folder, with the run's slurm: settings)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("evals", help="list evaluations (of a run), or show one")
    p.add_argument("ref", nargs="?", help="a run (lists its evals) or an eval: RUN/EVAL, eval id or prefix")
    p.add_argument("--json", action="store_true")
    p.add_argument("--stop", action="store_true", help="stop a running eval")
    p.set_defaults(func=cmd_evals)

    p = sub.add_parser("compare", help="paired comparison of two evaluations: McNemar, Cohen's h, intervals")
    p.add_argument("a", help="run (its headline eval), RUN/EVAL, eval id, eval folder, or predictions file")
    p.add_argument("b")
    p.add_argument("--gold", help="gold answers for {PMID: label} prediction files (PubMedQA test_ground_truth.json)")
    p.add_argument("--method", choices=("exact", "chi2"), default="exact", help="McNemar: exact binomial (default) or chi-square with continuity correction")
    p.add_argument("--temperature", type=float, help="for generate-mode evals: which temperature (default the first)")
    add_ci_argument(p)
    p.add_argument("--flips", action="store_true", help="list the discordant examples (A right & B wrong, and the "
                   "reverse): id, question, gold, both answers and, in score mode, both log-likelihood margins")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export-predictions", help="write an eval's predictions, e.g. as PubMedQA's {PMID: label} file")
    p.add_argument("eval", help="RUN/EVAL, eval id, run (its headline eval) or eval folder")
    p.add_argument("--format", choices=("pubmedqa", "jsonl"), default="pubmedqa")
    p.add_argument("--temperature", type=float)
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("parity", help="run the same examples on CPU and GPU and compare (catches broken GPU inference)")
    p.add_argument("run")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--checkpoint", "-c")
    p.add_argument("--base", action="store_true")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dtype", metavar=_choices("dtype"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("doctor", help="check the environment: torch, CUDA, NVML, disk, workspace, experiments")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)
