"""`labtui report` end to end through the real CLI, on runs and evaluations written the way the engine
writes them (tests/test_tui_data.py: make_run, make_eval): the markdown table holds the numbers of
`labtui compare --json`, the Holm-adjusted p equals statsmodels', the figures are valid PNGs of the size
the report states, html is one self-contained file, csv parses, bad input is refused in one line."""

from __future__ import annotations

import csv
import io
import json
import re
import struct
from pathlib import Path

import pytest
import yaml
from conftest import labtui
from labtui.engine.analysis import baseline, report
from labtui.engine.analysis.stats import format_p, significance_marks
from labtui.engine.rundir import store
from statsmodels.stats.multitest import multipletests
from test_tui_data import T0, make_eval, make_run, paired_sets

BASE = "20261122-010000-demo-baseline-a001"


def against(base: list[bool], b: int, c: int) -> list[bool]:
    """Correctness with b of the base's right answers made wrong and c of its wrong answers made right."""
    right = [i for i, ok in enumerate(base) if ok]
    wrong = [i for i, ok in enumerate(base) if not ok]
    flip = set(right[:b]) | set(wrong[:c])
    return [ok != (i in flip) for i, ok in enumerate(base)]


def fill(ws: store.Workspace) -> None:
    """A baseline (54% right) and five evaluated runs against it: four on the same 300 examples (a family of
    four comparisons; demo-drop significant before Holm only), one on 100 examples (not comparable), and a
    run never evaluated. The baseline is marked."""
    ws.logs.mkdir(parents=True, exist_ok=True)
    a, b = paired_sets()  # b: 12 A right / B wrong, c: 36 A wrong / B right (p < 0.001)
    base = make_run(ws, BASE, "demo-baseline", created=T0, notes="the reference run")
    make_eval(base, "20261122-030000-eval-c001", a)
    runs = [("20261122-013000-demo-tuned-b002", "demo-tuned", b, {"lora.r": [4, 16]}, "r=16 helps"),
            ("20261122-014000-demo-lr-c003", "demo-lr", against(a, 20, 28), {"training.learning_rate": [2e-3, 5e-4]}, ""),
            ("20261122-015000-demo-warm-d004", "demo-warm", against(a, 18, 14), {"training.warmup_ratio": [0.0, 0.1]}, ""),
            ("20261122-016000-demo-drop-e005", "demo-drop", against(a, 10, 25), {"lora.dropout": [0.05, 0.1]}, "a | pipe")]
    for k, (run_id, exp, correct, changed, notes) in enumerate(runs, 1):
        run = make_run(ws, run_id, exp, created=T0 + 600 * k, seed=k, changed=changed, parent_experiment="demo-baseline",
                       notes=notes)
        make_eval(run, f"20261122-03{k}000-eval-x00{k}", correct)
    small = make_run(ws, "20261122-017000-demo-small-f006", "demo-small", created=T0 + 4000, seed=9)
    make_eval(small, "20261122-036000-eval-s006", a[:100])
    cfg = small.config()
    cfg["training"]["learning_rate"] = 5e-5
    small.file(store.CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False))
    make_run(ws, "20261122-018000-demo-none-g007", "demo-none", created=T0 + 5000)
    baseline.set(ws, BASE)


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> store.Workspace:
    ws = store.Workspace(tmp_path_factory.mktemp("report"))
    fill(ws)
    return ws


def _md_rows(md: str) -> dict[str, list[str]]:
    """The markdown table's rows by their first cell (the baseline's without its star)."""
    out = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| experiment"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0].removeprefix("★ ")] = cells
    return out


def test_markdown_table_holds_the_numbers_of_compare_json(night):
    proc = labtui(night, "report")
    assert proc.returncode == 0, proc.stderr
    md = proc.stdout
    assert "4 comparisons vs ★ demo-baseline baseline, Holm" in md and "Wald (paired)" in md
    rows = _md_rows(md)
    assert set(rows) == {"demo-baseline", "demo-tuned", "demo-lr", "demo-warm", "demo-drop", "demo-small"}
    col = {name: k for k, name in enumerate(report.COLUMNS)}
    for exp, run_id in (("demo-tuned", "20261122-013000-demo-tuned-b002"), ("demo-drop", "20261122-016000-demo-drop-e005")):
        res = json.loads(labtui(night, "compare", BASE, run_id, "--json", check=True).stdout)
        cells = rows[exp]
        lo, hi = res["diff_ci"]
        assert cells[col["accuracy [95% CI]"]] == f"{res['acc_b'] * 100:.1f}% [{res['ci_b'][0] * 100:.1f}, {res['ci_b'][1] * 100:.1f}]"
        assert cells[col["Δ points [95% CI]"]] == f"{res['diff'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"
        assert cells[col["McNemar p"]] == format_p(res["mcnemar_p"])
        assert cells[col["Cohen's h"]] == f"{res['cohens_h']:+.3f}"
        assert cells[col["macro-F1"]] == f"{res['macro_f1_b']:.3f}"
        assert cells[col["N"]] == str(res["n"])
    assert rows["demo-tuned"][col["changed"]] == "lora.r 4→16"
    assert rows["demo-small"][col["changed"]] == "vs baseline: learning_rate 0.002→5e-05"  # no parent: the config diff
    assert rows["demo-baseline"][col["changed"]] == "-"
    assert rows["demo-tuned"][col["notes"]] == "r=16 helps" and rows["demo-drop"][col["notes"]] == "a \\| pipe"
    assert rows["demo-small"][col["Δ points [95% CI]"]] == "- (N 100 vs 300)"
    assert rows["demo-baseline"][col["Δ points [95% CI]"]] == "baseline"
    assert "## Runs" in md and "demo-tuned (20261122-013000-demo-tuned-b002, eval" in md
    assert "demo-none" not in md  # never evaluated
    assert not (night.root / "loss.png").exists()  # no -o: no figure written


def test_holm_adjusted_p_equals_statsmodels_and_drives_the_marks(night):
    data = json.loads(labtui(night, "report", "--format", "json", check=True).stdout)
    assert data["family"]["size"] == 4 and data["family"]["method"] == "holm"
    compared = [r for r in data["rows"] if r["mcnemar_p"] is not None]
    assert len(compared) == 4
    expected = multipletests([r["mcnemar_p"] for r in compared], method="holm")[1]
    assert [r["holm_p"] for r in compared] == pytest.approx(list(expected), rel=1e-12)
    for r in compared:
        assert r["significant"] == (r["holm_p"] < 0.05)
    # raw p significant, adjusted not: the stars follow the adjusted p
    drop = next(r for r in compared if r["experiment"] == "demo-drop")
    assert drop["mcnemar_p"] < 0.05 <= drop["holm_p"] and drop["significant"] is False  # significant only unadjusted
    md_rows = _md_rows(labtui(night, "report", check=True).stdout)
    holm_col = report.COLUMNS.index("Holm p")
    for r in compared:
        marks = significance_marks(r["holm_p"])
        assert md_rows[r["experiment"]][holm_col] == (format_p(r["holm_p"]) + (f" {marks}" if marks else ""))
    small = next(r for r in data["rows"] if r["experiment"] == "demo-small")
    assert small["mcnemar_p"] is None and small["holm_p"] is None and small["not_comparable"] == "N 100 vs 300"


def test_chosen_runs_and_baseline_make_the_family(night):
    data = json.loads(labtui(night, "report", "20261122-013000-demo-tuned-b002", "20261122-014000-demo-lr-c003/20261122-032000-eval-x002",
                             "--baseline", "20261122-015000-demo-warm-d004", "--format", "json", check=True).stdout)
    assert [r["experiment"] for r in data["rows"]] == ["demo-warm", "demo-tuned", "demo-lr"]
    assert data["rows"][0]["is_baseline"] and data["family"]["size"] == 2
    assert data["family"]["text"] == "2 comparisons vs ★ demo-warm baseline, Holm"


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_output_folder_holds_the_report_and_pngs_of_the_stated_size(night, tmp_path):
    out = tmp_path / "rep"
    proc = labtui(night, "report", "--format", "json", "-o", str(out), "--ci", "bootstrap")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "report.json")
    data = json.loads((out / "report.json").read_text())
    assert data["ci_method"] == "paired bootstrap (10,000 resamples, seed 0)"
    assert all(r["diff_ci_method"] == data["ci_method"] for r in data["rows"] if r["diff"] is not None)
    names = {f["name"] for f in data["figures"]}
    assert {"loss", "accuracy"} <= names and sum(n.startswith("confusion-") for n in names) == 6
    for f in data["figures"]:
        assert _png_size(out / f["files"]["png"]) == (f["width"], f["height"])
    assert _png_size(out / "loss.png") == (800, 450)
    import matplotlib.image

    assert matplotlib.image.imread(out / "accuracy.png").shape[:2] == (data["figures"][1]["height"], 800)
    md = labtui(night, "report", "-o", str(tmp_path / "post.md"), check=True)
    assert md.stdout.strip() == str(tmp_path / "post.md")
    text = (tmp_path / "post.md").read_text()
    assert "![Loss curves](loss.png)" in text and (tmp_path / "loss.png").is_file()


def test_html_is_one_self_contained_file(night, tmp_path):
    proc = labtui(night, "report", "--format", "html")
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<svg") >= 8  # loss, accuracy, six confusion matrices, inline
    for ref in ("<link", "<script", "url(http", "@import"):
        assert ref not in page
    targets = re.findall(r'(?:href|src)="([^"]*)"', page)
    assert targets and all(t.startswith(("#", "data:")) for t in targets)  # within the page, or inline data
    assert "4 comparisons vs ★ demo-baseline baseline, Holm" in page
    assert not list(tmp_path.iterdir())


def test_csv_parses_with_dictreader(night):
    text = labtui(night, "report", "--format", "csv", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["experiment"] for r in rows][0] == "demo-baseline" and len(rows) == 6
    tuned = next(r for r in rows if r["experiment"] == "demo-tuned")
    assert float(tuned["accuracy"]) == pytest.approx(0.62) and float(tuned["diff"]) == pytest.approx(0.08)
    assert tuned["diff_ci_method"] == "Wald (paired)" and tuned["changed"] == "lora.r 4→16"
    assert float(tuned["holm_p"]) >= float(tuned["mcnemar_p"])
    assert next(r for r in rows if r["experiment"] == "demo-small")["mcnemar_p"] == ""


@pytest.mark.parametrize("args, words", [
    (("no-such-run",), "no-such-run"),
    (("--format", "pdf"), "invalid choice: 'pdf'"),
    (("--all", BASE), "--all"),
    (("20261122-018000-demo-none-g007",), "has no completed evaluation"),
    (("--baseline", "nope"), "nope"),
    (("-o", "x.md", "--format", "csv"), "--format is csv"),
])
def test_bad_input_is_one_clear_message_and_exit_2(night, args, words):
    proc = labtui(night, "report", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert words in lines[-1] and proc.stdout == ""


def test_no_completed_evals_is_refused(ws):
    make_run(ws, "20261122-010000-demo-x-a001", "demo-x")
    proc = labtui(ws, "report")
    assert proc.returncode == 2 and "no completed evaluations" in proc.stderr and "labtui eval" in proc.stderr


def test_compare_names_its_interval_and_the_family_of_one(night):
    text = labtui(night, "compare", BASE, "20261122-013000-demo-tuned-b002", "--ci", "bootstrap", check=True).stdout
    assert "(paired bootstrap (10,000 resamples, seed 0))" in text and "a family of 1 comparison" in text
    res = json.loads(labtui(night, "compare", BASE, "20261122-013000-demo-tuned-b002", "--json", check=True).stdout)
    assert res["holm_p"] == res["mcnemar_p"] and res["holm_family"] == 1 and res["diff_ci_method"] == "Wald (paired)"


# --- History: the family in the header, the adjusted p on screen, R writes the report ---------------------


@pytest.mark.anyio
async def test_history_adjusts_over_the_rows_shown_and_r_writes_their_report(ws, anyio_backend):
    from labtui.tui import format as tfmt
    from labtui.tui.app import LabApp
    from test_tui_data import clock

    fill(ws)
    data = json.loads(labtui(ws, "report", "--format", "json", check=True).stdout)
    drop = next(r for r in data["rows"] if r["experiment"] == "demo-drop")
    app = LabApp(workspace=ws, poll_interval=0.05, clock=clock)
    async with app.run_test(size=(160, 40)) as pilot:
        async def until(cond, what):
            for _ in range(300):
                if cond():
                    return
                await pilot.pause(0.05)
            raise AssertionError(f"timed out waiting for {what}")

        await until(lambda: len(app.runs) == 7, "the runs")
        await pilot.press("h")
        screen = app.screen
        table = screen.query_one("#history")
        await until(lambda: screen.loaded and any(r.p is not None for r in screen.rows)
                    and not any(r.pending for r in screen.rows), "the comparisons")
        title = lambda: str(screen.query_one("#history-title").render())  # noqa: E731
        await until(lambda: "4 comparisons vs ★ demo-baseline·a001, Holm" in title(), "the family in the header")
        key = next(r.key for r in screen.rows if r.run_id == drop["run"])
        assert table.get_cell(key, "Holm p").plain == tfmt.p_value(drop["holm_p"]) == f"{drop['holm_p']:#.3g}"  # no star
        assert table.get_cell(key, "McNemar p").plain == f"{drop['mcnemar_p']:#.3g}"  # raw, below 0.05
        # filtered down to one run, the family is one comparison: the adjusted p is the raw one, starred
        await pilot.press("slash", *"demo-drop", "enter")
        await until(lambda: "1 comparison vs ★ demo-baseline·a001, Holm" in title(), "a family of one")
        assert table.get_cell(key, "Holm p").plain == f"{drop['mcnemar_p']:#.3g} *"
        await pilot.press("R")
        await until(lambda: screen.last_report is not None, "the report")
        assert screen.last_report.ok, screen.last_report.stderr
        written = Path(screen.last_report.stdout.strip())
        assert written.parent.parent == ws.root / "reports" and (written.parent / "loss.png").is_file()
        md = written.read_text()
        assert "1 comparison vs ★ demo-baseline baseline, Holm" in md
        assert set(_md_rows(md)) == {"demo-baseline", "demo-drop"}


def test_matplotlib_is_loaded_only_to_draw():
    """The CLI's parser, the report module and the whole TUI leave matplotlib unimported (figures only)."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("from labtui.engine.cli.main import build_parser; build_parser(); import labtui.engine.analysis.report; "
            "import labtui.engine.analysis.report_figures; import labtui.tui.app, labtui.tui.screens.history; "
            "import sys; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_report_of_a_trained_run_against_its_base_model(workspace, tmp_path):
    """The one real run of this module: the demo trained for 20 steps and evaluated, against the base model
    evaluated on the same 60 examples: its losses drawn, its numbers those of `labtui compare --json`."""
    from conftest import fast_overrides

    labtui(workspace, "run", "experiments/demo-baseline.yaml", "--foreground", *fast_overrides(20), check=True)
    run_id = json.loads(labtui(workspace, "runs", "--json", check=True).stdout)[0]["id"]
    labtui(workspace, "eval", run_id, "--foreground", "--device", "cpu", "--n", "60", check=True)
    labtui(workspace, "eval", "experiments/demo-baseline.yaml", "--base", "--foreground", "--device", "cpu", "--n", "60",
           check=True)
    holder = next(r["id"] for r in json.loads(labtui(workspace, "runs", "--json", check=True).stdout) if r["kind"] == "base")
    out = tmp_path / "night"
    proc = labtui(workspace, "report", run_id, "--baseline", holder, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "1 comparison vs ★ demo-baseline baseline, Holm" in md
    res = json.loads(labtui(workspace, "compare", holder, run_id, "--json", check=True).stdout)
    row = next(cells for line in md.splitlines() if line.startswith("| demo-baseline")
               for cells in [[c.strip() for c in line.strip("|").split(" | ")]])
    col = {name: k for k, name in enumerate(report.COLUMNS)}
    lo, hi = res["diff_ci"]
    assert row[col["Δ points [95% CI]"]] == f"{res['diff'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    assert row[col["McNemar p"]] == format_p(res["mcnemar_p"]) and row[col["N"]] == "60"
    assert row[col["step"]] == "20" and row[col["loss"]] != "-" and row[col["duration"]] != "-"
    assert _png_size(out / "loss.png") == (800, 450)
