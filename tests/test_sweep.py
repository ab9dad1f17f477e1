"""`labtui sweep FILE --grid ...`: the product queued as the runs of one group, each evaluated after
training; bad grid input refused before anything is made; the group in the run list and History.

No training is waited for: a bring-your-own command run holds the workspace's one slot (concurrency 1),
so the sweep's runs stay queued; the test reads them and cancels them with `labtui queue --cancel`.
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import labtui
from labtui.engine.rundir import store
from test_tui_app import until

FILE = "experiments/demo-baseline.yaml"
GRID = ["--grid", "training.learning_rate=2e-4,5e-5", "--grid", "lora.r=16,64"]


def _runs(ws: store.Workspace) -> list[str]:
    return sorted(p.name for p in ws.logs.iterdir() if (p / store.RUN_FILE).exists()) if ws.logs.is_dir() else []


@pytest.fixture
def held(workspace):
    """The workspace with its one slot taken by a sleeping command run (stopped at the end)."""
    (workspace.root / "labtui.yaml").write_text("concurrency: 1\n")
    proc = labtui(workspace, "run", "--name", "holder", "--", sys.executable, "-c", "import time; time.sleep(300)",
                  check=True)
    holder = workspace.run(proc.stdout.split()[0])
    yield workspace, holder
    labtui(workspace, "stop", "--now", holder.id)


def test_sweep_queues_the_product_as_one_group(held):
    ws, holder = held
    proc = labtui(ws, "sweep", FILE, *GRID, "--set", "training.max_steps=4", "--name", "lr-r", "--json", check=True)
    out = json.loads(proc.stdout)
    assert out["group"] == "lr-r" and out["dry_run"] is False and out["started"] == []
    ids = [r["id"] for r in out["runs"]]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert [r["values"] for r in out["runs"]] == [
        {"training.learning_rate": lr, "lora.r": r} for lr in (2e-4, 5e-5) for r in (16, 64)]
    assert [r.id for r in ws.runs_in_group("lr-r")] == sorted(ids)
    for entry in out["runs"]:
        run = ws.run(entry["id"])
        cfg = run.config()
        assert cfg["training"]["learning_rate"] == entry["values"]["training.learning_rate"]
        assert cfg["lora"]["r"] == entry["values"]["lora.r"] and cfg["training"]["max_steps"] == 4
        assert cfg["eval"]["after_training"] is True  # evaluated when training completes
        info = store.read_json(run.file(store.RUN_FILE))
        assert info["group"] == "lr-r" and "sweep lr-r" in info["description"]
        assert set(info["changed"]) == {"training.learning_rate", "lora.r", "training.max_steps"}
        assert run.state()["status"] == "queued"
    listed = {r["id"]: r for r in json.loads(labtui(ws, "runs", "--json", check=True).stdout)}
    assert {i: listed[i]["group"] for i in ids} == dict.fromkeys(ids, "lr-r") and listed[holder.id]["group"] is None
    queued = json.loads(labtui(ws, "queue", "--json", check=True).stdout)["queued"]
    assert [q if isinstance(q, str) else q["id"] for q in queued] == ids  # in the grid's order
    for i in ids:
        labtui(ws, "queue", "--cancel", i, check=True)
    assert {ws.run(i).state()["status"] for i in ids} == {"stopped"}

    # the text output: the ids, one per line; a derived group name starts with the file's name
    proc = labtui(ws, "sweep", FILE, "--grid", "lora.r=8,32", "--set", "training.max_steps=4", check=True)
    new = proc.stdout.split()
    assert len(new) == 2 and all(len(ws.run(i).id) > 20 for i in new)
    group = store.read_json(ws.run(new[0]).file(store.RUN_FILE))["group"]
    assert group.startswith("demo-baseline-") and f"group {group}" in proc.stderr
    for i in new:
        labtui(ws, "queue", "--cancel", i, check=True)


def test_dry_run_prints_the_grid_and_queues_nothing(workspace):
    before = _runs(workspace)
    proc = labtui(workspace, "sweep", FILE, *GRID, "--name", "g1", "--dry-run", check=True)
    lines = proc.stdout.splitlines()
    assert "4 runs" in lines[0] and "(2 x 2)" in lines[0] and "g1" in lines[0]
    assert lines[1:] == ["    1  training.learning_rate=2e-4  lora.r=16", "    2  training.learning_rate=2e-4  lora.r=64",
                         "    3  training.learning_rate=5e-5  lora.r=16", "    4  training.learning_rate=5e-5  lora.r=64"]
    out = json.loads(labtui(workspace, "sweep", FILE, *GRID, "--dry-run", "--json", check=True).stdout)
    assert out["dry_run"] is True and len(out["runs"]) == 4 and all(r["id"] is None for r in out["runs"])
    assert _runs(workspace) == before


@pytest.mark.parametrize("args, message", [
    (["--grid", "lora.rr=16,64"], "unknown key 'rr'"),
    (["--grid", "lora.r=16,x"], "lora.r must be an integer"),
    (["--grid", "training.learning_rate=2e-4,fast"], "learning_rate"),
    (["--grid", "lora.r"], "expected KEY=V1,V2"),
    (["--grid", "lora.r=16,,64"], "an empty value"),
    (["--grid", "lora.r=16", "--grid", "lora.r=64"], "given twice"),
    (["--grid", "lora.r=16", "--set", "lora.r=8"], "both in --set and in --grid"),
    (["--grid", "lora.r=16", "--name", "bad name!"], "group name"),
    (["--grid", "lora.r=16", "--set", "launch.executor=slurm"], "this machine only"),
    ([], "at least one --grid"),
])
def test_bad_grid_input_is_one_error_and_nothing_queued(workspace, args, message):
    before = _runs(workspace)
    proc = labtui(workspace, "sweep", FILE, *args)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("labtui: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert proc.stdout == "" and _runs(workspace) == before


def test_a_group_name_in_use_is_refused(ws):
    ws.create_run("x", {"experiment": "x", "kind": "train", "group": "taken"})
    proc = labtui(ws, "sweep", "nowhere.yaml", "--grid", "lora.r=16", "--name", "taken")
    assert proc.returncode == 2 and "group 'taken' already has 1 run(s)" in proc.stderr


# --- the group in the run list and History ---------------------------------------------------------------


def _grouped(ws: store.Workspace):
    from test_tui_data import T0, make_eval, make_run, paired_sets

    a, b = paired_sets(n=60, b=3, c=9, both_right=30)
    plain = make_run(ws, "20261122-010000-demo-baseline-a001", "demo-baseline", created=T0)
    swept = make_run(ws, "20261122-020000-demo-baseline-b002", "demo-baseline", created=T0 + 3600)
    info = store.read_json(swept.file(store.RUN_FILE))
    store.atomic_write_json(swept.file(store.RUN_FILE), {**info, "group": "lr-sweep"})
    make_eval(plain, "20261122-030000-eval-c001", a)
    make_eval(swept, "20261122-031000-eval-d002", b)
    return plain, swept


@pytest.mark.anyio
async def test_run_list_and_history_show_and_filter_the_group(ws):
    from labtui.tui.app import LabApp
    from labtui.tui.widgets.run_list import RunList
    from test_tui_data import clock

    plain, swept = _grouped(ws)
    app = LabApp(workspace=ws, poll_interval=0.05, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(app.runs) == 2)
        table = app.screen.query_one(RunList)
        await until(pilot, lambda: table.row_count == 2)
        assert table.get_cell(swept.id, "run").plain == "lr-sweep·b002"
        assert table.get_cell(plain.id, "run").plain == "demo-baseline·a001"
        await pilot.press("slash", *"lr-sweep", "enter")
        await until(pilot, lambda: table.row_count == 1)
        assert table.current_id == swept.id
        await pilot.press("escape")
        await pilot.press("h")
        screen = app.screen
        await until(pilot, lambda: getattr(screen, "loaded", False) and len(screen.rows) == 2)
        row = next(r for r in screen.rows if r.run_id == swept.id)
        assert row.label == "lr-sweep·b002" and row.group == "lr-sweep"
        await pilot.press("slash", *"sweep")
        assert [r.run_id for r in screen.visible()] == [swept.id]
        app.set_baseline(swept.id)  # the headers name a swept baseline as its rows do
        await until(pilot, lambda: "★ lr-sweep·b002" in str(screen.query_one("#history-title").render()))
        await app.pop_screen()
        await until(pilot, lambda: "baseline ★ lr-sweep·b002" in str(app.screen.query_one("#title").render()))



def test_run_label_keeps_the_tail_and_clips_the_group():
    from labtui.engine.rundir import fmt
    from labtui.tui.format import run_label

    assert run_label is fmt.run_label  # one implementation: the TUI's names are the CLI's and the report's
    rid = "20261122-020000-demo-baseline-b002"
    assert run_label(rid, "demo-baseline") == "demo-baseline·b002"
    assert run_label(rid, "demo-baseline", "lr") == "lr·b002"
    long = run_label(rid, "demo-baseline", "a-very-long-group-name-for-a-sweep")
    assert long.endswith("…·b002") and len(long) == 28


# --- report --group: the group's runs against the baseline, Holm over the group alone ---------------------


def test_report_group_compares_its_runs_with_the_baseline_holm_over_the_group(held):
    """A real sweep's four runs (cancelled before training; three given evaluations the way the engine writes
    them), a marked baseline and an evaluated run outside the group: `report --group` reports the three, the
    fourth skipped on stderr, and its Holm p are statsmodels' over the group's three raw p alone."""
    from labtui.engine.analysis import baseline
    from statsmodels.stats.multitest import multipletests
    from test_report import BASE, against
    from test_tui_data import T0, make_eval, make_run, paired_sets

    ws, holder = held
    out = json.loads(labtui(ws, "sweep", FILE, "--grid", "lora.r=8,16,32,64", "--set", "training.max_steps=4",
                            "--name", "r-sweep", "--json", check=True).stdout)
    ids = [r["id"] for r in out["runs"]]
    for i in ids:
        labtui(ws, "queue", "--cancel", i, check=True)
    a, _ = paired_sets()
    make_eval(make_run(ws, BASE, "demo-baseline", created=T0), "20261122-030000-eval-c001", a)
    baseline.set(ws, BASE)
    outside = make_run(ws, "20261122-013000-demo-tuned-b002", "demo-tuned", created=T0 + 600)
    make_eval(outside, "20261122-031000-eval-x001", against(a, 12, 20))
    for k, (i, correct) in enumerate(zip(ids, [against(a, 20, 28), against(a, 18, 14), against(a, 8, 24)])):
        make_eval(ws.run(i), f"20261122-04{k}000-eval-g00{k}", correct)

    proc = labtui(ws, "report", "--group", "r-sweep", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["group"] == "r-sweep" and [r["run"] for r in data["rows"]] == [BASE, *ids[:3]]
    assert data["rows"][0]["is_baseline"] and all(r["group"] == "r-sweep" for r in data["rows"][1:])
    assert data["family"]["size"] == 3
    assert data["family"]["text"] == "3 comparisons vs ★ demo-baseline baseline, Holm, group r-sweep"
    raw = [r["mcnemar_p"] for r in data["rows"][1:]]
    assert [r["holm_p"] for r in data["rows"][1:]] == pytest.approx(list(multipletests(raw, method="holm")[1]),
                                                                     rel=1e-12)
    assert data["skipped"] == [{"run": ids[3], "why": "stopped"}]
    assert f"skipped 1 run of group r-sweep without a completed evaluation: {ids[3]} (stopped)" in proc.stderr
    assert data["rows"][3]["significant"] is True  # 8 vs 24 flips: Holm p 0.021 over the group
    # the whole workspace is a family of four (the run outside the group too): the same raw p, larger adjusted p
    everything = json.loads(labtui(ws, "report", "--format", "json", check=True).stdout)
    assert everything["family"]["size"] == 4 and everything["group"] is None
    whole = {r["run"]: r for r in everything["rows"]}
    assert [whole[i]["mcnemar_p"] for i in ids[:3]] == raw
    assert all(whole[i]["holm_p"] > r["holm_p"] for i, r in zip(ids, data["rows"][1:]))

    md = labtui(ws, "report", "--group", "r-sweep", check=True).stdout
    assert "3 comparisons vs ★ demo-baseline baseline, Holm, group r-sweep ·" in md
    labels = [line.split(" | ")[0].removeprefix("| ") for line in md.splitlines() if line.startswith("| ")][1:]
    assert labels == ["★ demo-baseline", *(f"r-sweep·{i.rsplit('-', 1)[1]}" for i in ids[:3])]
    assert "demo-tuned" not in md
    assert f"r-sweep·{ids[0].rsplit('-', 1)[1]} (experiment demo-baseline, {ids[0]}, eval 20261122-040000-eval-g000)" in md

    # the group in `runs` and `show`, text and JSON
    table = labtui(ws, "runs", check=True).stdout.splitlines()
    assert table[0].split()[-1] == "GROUP"
    by_id = {line.split()[0]: line for line in table[1:]}
    assert all(by_id[i].split()[-1] == "r-sweep" for i in ids)
    assert by_id[holder.id].split()[-1] == "-" and by_id[BASE].split()[-1] == "-"
    shown = labtui(ws, "show", ids[0], check=True).stdout.splitlines()
    assert "  group       r-sweep  (`labtui report --group r-sweep`)" in shown
    assert not any(line.startswith("  group") for line in labtui(ws, "show", BASE, check=True).stdout.splitlines())
    assert json.loads(labtui(ws, "show", ids[0], "--json", check=True).stdout)["group"] == "r-sweep"

    # bad input: one line, exit 2
    for args, words in ((["--group", "nope"], "no runs in group 'nope'"), (["--group", "nope"], "the groups here: r-sweep"),
                        (["--group", "r-sweep", "--all"], "leave out --all"),
                        (["--group", "r-sweep", BASE], "leave out the runs")):
        bad = labtui(ws, "report", *args)
        lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
        assert bad.returncode == 2 and bad.stdout == "" and words in lines[-1], bad.stderr


def test_report_group_without_an_evaluated_run_says_why(ws):
    for k, status in enumerate(("queued", "completed")):
        run = ws.create_run(f"r{k}", {"experiment": "x", "kind": "train", "group": "g"})
        run.update_state(status=status)
    proc = labtui(ws, "report", "--group", "g")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "none of the 2 run(s) of group 'g' has a completed evaluation yet" in proc.stderr
    assert "(queued)" in proc.stderr and "(trained, not evaluated)" in proc.stderr


def test_a_sweep_trains_and_evaluates_each_point_then_reports_as_its_group(workspace):
    """End to end on the demo model: both points train, each is evaluated when its training completes,
    and `report --group` compares them with the numbers of `compare --json` (a family of one)."""
    import time

    from conftest import fast_overrides, wait_for
    from labtui.engine.analysis import evalstore

    out = json.loads(labtui(workspace, "sweep", FILE, "--grid", "training.learning_rate=2e-3,3e-4", *fast_overrides(6),
                            "--set", "eval.n=30", "--set", "eval.batch_size=8", "--name", "e2e", "--json",
                            check=True).stdout)
    runs = [workspace.run(r["id"]) for r in out["runs"]]
    for run in runs:
        assert wait_for(run, timeout=300)["status"] == "completed"
        deadline = time.time() + 180
        while evalstore.headline_eval(run) is None and time.time() < deadline:
            time.sleep(0.5)
        assert evalstore.headline_eval(run) is not None, f"{run.id}: no evaluation after training"
    data = json.loads(labtui(workspace, "report", "--group", "e2e", "--baseline", runs[0].id, "--format", "json",
                             check=True).stdout)
    assert [r["run"] for r in data["rows"]] == [r.id for r in runs] and data["family"]["size"] == 1
    row = data["rows"][1]
    pair = json.loads(labtui(workspace, "compare", runs[0].id, runs[1].id, "--json", check=True).stdout)
    assert row["n"] == 30 and row["mcnemar_p"] == pytest.approx(pair["mcnemar_p"]) == pytest.approx(row["holm_p"])
    assert row["accuracy"] == pytest.approx(pair["acc_b"])
