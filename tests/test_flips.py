"""The flipped examples: `labtui compare A B --flips` (text and JSON) and the Compare screen's `f`.

Two eval folders are written with the real writers (evaluate_launch.create_eval, the evaluation
worker's score_record, _write, write_summary and finish), on the real PubMedQA test questions in
../shared/data/pubmedqa: A is right where k % 3 != 0, B where k % 2 == 0, so the discordant ids are
known by construction, and so are the log-likelihood margins (a right answer +0.5, a wrong one -1.5).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_PUBMEDQA, labtui
from labtui.engine.config.experiment import resolve
from labtui.engine.rundir import store
from test_tui_app import until

DATA, GOLD = SHARED_PUBMEDQA / "ori_pqal.json", SHARED_PUBMEDQA / "test_ground_truth.json"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"PubMedQA is not at {SHARED_PUBMEDQA}")
N = 30
CHOICES = ["yes", "no", "maybe"]


def _scores(gold: str, right: bool) -> list[float]:
    """Log-likelihoods per choice: right -> gold -0.5 and the others -1.0 (margin +0.5); wrong -> another
    answer -0.5, gold -2.0, the third -3.0 (margin -1.5)."""
    if right:
        return [-0.5 if c == gold else -1.0 for c in CHOICES]
    wrong = "maybe" if gold != "maybe" else "yes"
    return [-0.5 if c == wrong else -2.0 if c == gold else -3.0 for c in CHOICES]


def _evaluated(ws: store.Workspace, name: str, right, examples: list[dict]) -> Path:
    from labtui.engine.runtime import evaluate_launch
    from labtui.engine.training.evaluate import Evaluation, score_record

    cfg = resolve({"model": {"model_name_or_path": "demo/tiny-llama"},
                   "dataset": {"path": str(DATA), "test_split": str(GOLD)}})
    run = ws.create_run(name, {"experiment": name, "kind": "train", "workspace": str(ws.root)},
                        yaml.safe_dump(cfg, sort_keys=False))
    ev = evaluate_launch.create_eval(run, {**evaluate_launch.settings_from(cfg, n=N), "base": True},
                                     argv=["labtui", "eval", run.id, "--base"])
    evaluation = Evaluation(ev)
    recs = [score_record(e, _scores(e["answer"], right(k)), CHOICES, cfg["task"]) for k, e in enumerate(examples)]
    evaluation.advance(len(recs), evaluation._write(recs))
    evaluation.write_summary({"device_name": "cpu"}, wall=1.0, partial=False)
    evaluation.finish("completed")
    return ev.path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    data = json.loads(DATA.read_text())
    ids = sorted(json.loads(GOLD.read_text()))[:N]
    examples = [{"id": i, "answer": data[i]["final_decision"]} for i in ids]
    ws = store.Workspace(tmp_path_factory.mktemp("flips"))
    a = _evaluated(ws, "a", lambda k: k % 3 != 0, examples)
    b = _evaluated(ws, "b", lambda k: k % 2 == 0, examples)
    expect_b = [i for k, i in enumerate(ids) if k % 3 != 0 and k % 2 != 0]  # A right, B wrong
    expect_c = [i for k, i in enumerate(ids) if k % 3 == 0 and k % 2 == 0]  # A wrong, B right
    return ws, a, b, data, expect_b, expect_c


def test_compare_flips_json_lists_mcnemars_discordant_examples(pair):
    ws, a, b, data, expect_b, expect_c = pair
    plain = labtui(ws, "compare", str(a), str(b), "--json", check=True)
    proc = labtui(ws, "compare", str(a), str(b), "--json", "--flips", check=True)
    r, r0 = json.loads(proc.stdout), json.loads(plain.stdout)
    assert "flips" not in r0  # only asked for
    assert (r["b"], r["c"]) == (r0["b"], r0["c"]) == (len(expect_b), len(expect_c))
    assert [e["id"] for e in r["flips"]["b"]] == expect_b
    assert [e["id"] for e in r["flips"]["c"]] == expect_c
    first = r["flips"]["b"][0]
    gold = data[first["id"]]["final_decision"]
    assert first == {"id": expect_b[0], "question": data[expect_b[0]]["QUESTION"], "gold": gold, "pred_a": gold,
                     "pred_b": "maybe" if gold != "maybe" else "yes", "margin_a": 0.5, "margin_b": -1.5}
    assert all(e["margin_a"] == -1.5 and e["margin_b"] == 0.5 and e["pred_b"] == e["gold"] for e in r["flips"]["c"])
    # swapped, b and c trade places
    swapped = json.loads(labtui(ws, "compare", str(b), str(a), "--json", "--flips", check=True).stdout)
    assert [e["id"] for e in swapped["flips"]["c"]] == expect_b and swapped["c"] == r["b"]


def test_compare_flips_text_groups_them_with_the_question(pair):
    ws, a, b, data, expect_b, expect_c = pair
    out = labtui(ws, "compare", str(a), str(b), "--flips", check=True).stdout
    head_b, head_c = f"A right, B wrong (b = {len(expect_b)})", f"A wrong, B right (c = {len(expect_c)})"
    assert head_b in out and head_c in out and out.index(head_b) < out.index(head_c)
    part_b, part_c = out.split(head_b)[1].split(head_c)
    assert all(i in part_b for i in expect_b) and all(i in part_c for i in expect_c)
    assert not any(i in part_c for i in expect_b)
    q = " ".join(data[expect_c[0]]["QUESTION"].split())
    assert (q if len(q) <= 96 else q[:95] + "…") in part_c
    assert "(+0.50)" in part_b and "(-1.50)" in part_b and "log-likelihood" in out


def test_compare_flips_without_a_data_set_say_so(pair, tmp_path):
    """A predictions file (no eval folder, so no data set): the flips are listed without their question."""
    ws, a, b, data, expect_b, expect_c = pair
    rows = [json.loads(line) for line in (a / "predictions.jsonl").read_text().splitlines()]
    plain = tmp_path / "a.jsonl"
    plain.write_text("".join(json.dumps({k: r[k] for k in ("id", "gold", "pred")}) + "\n" for r in rows))
    r = json.loads(labtui(ws, "compare", str(plain), str(b), "--json", "--flips", check=True).stdout)
    assert [e["id"] for e in r["flips"]["b"]] == expect_b
    assert r["flips"]["b"][0]["margin_a"] is None and r["flips"]["b"][0]["margin_b"] == -1.5
    assert r["flips"]["b"][0]["question"] == data[expect_b[0]]["QUESTION"]  # from B's data set
    out = labtui(ws, "compare", str(plain), str(plain), "--flips", check=True).stdout
    assert "(b = 0)" in out and "(c = 0)" in out


@pytest.mark.anyio
async def test_compare_screen_f_lists_the_flipped_examples(pair):
    from labtui.tui.app import LabApp
    from labtui.tui.screens.compare import CompareScreen
    from textual.widgets import DataTable

    ws, a, b, data, expect_b, expect_c = pair
    app = LabApp(workspace=ws, poll_interval=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = CompareScreen(a, b)
        await app.push_screen(screen)
        await until(pilot, lambda: screen.result is not None or screen.error)
        table = screen.query_one("#compare-flips", DataTable)
        assert not table.display and screen.flips is None  # read only when asked for
        await pilot.press("f")
        await until(pilot, lambda: screen.flips is not None or screen.flips_error)
        assert screen.flips_error is None and table.display and not screen.query_one("#compare-box").display
        assert table.row_count == len(expect_b) + len(expect_c) == screen.result["b"] + screen.result["c"]
        keys = [table.coordinate_to_cell_key((k, 0))[0].value for k in range(table.row_count)]
        assert keys == [f"b:{i}" for i in expect_b] + [f"c:{i}" for i in expect_c]
        row = table.get_row(f"b:{expect_b[0]}")
        assert row[0] == "A✓ B✗" and row[1] == expect_b[0] and row[3].endswith("+0.50") and row[4].endswith("-1.50")
        assert row[5].startswith(data[expect_b[0]]["QUESTION"][:40])
        # every column fits 80 columns (the question takes what is left); the line under the table shows
        # the highlighted flip's whole question
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= 80
        await pilot.pause(0.1)
        detail = str(screen.query_one("#compare-flip-detail").render())
        assert " ".join(data[expect_b[0]]["QUESTION"].split()) in " ".join(detail.split())
        # the detail follows the cursor, and a resize fits the columns again without moving it
        await pilot.press("down")
        second = table.coordinate_to_cell_key((1, 0))[0].value.split(":", 1)[1]
        await pilot.resize_terminal(120, 30)
        await until(pilot, lambda: sum(c.get_render_width(table) for c in table.columns.values()) > 80)
        assert table.cursor_row == 1 and str(screen.query_one("#compare-flip-detail").render()).startswith(second)
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: sum(c.get_render_width(table) for c in table.columns.values()) <= 80)
        title = str(screen.query_one("#compare-title").render())
        assert f"b = {len(expect_b)}" in title and f"c = {len(expect_c)}" in title
        await pilot.press("x")  # swap: read again, b and c trade places
        await until(pilot, lambda: screen.flips is not None and table.row_count
                     and table.coordinate_to_cell_key((0, 0))[0].value == f"b:{expect_c[0]}")
        await pilot.press("f")
        assert screen.query_one("#compare-box").display and not table.display

