"""`c`: two evaluations side by side, as `labtui compare` prints them: accuracies with Wilson
intervals, the paired difference with its interval, McNemar's test, Cohen's h, the answer kinds
of both, the smallest difference this N can detect, and the verdict. B minus A throughout.
`f` switches to the flipped examples (`labtui compare --flips`): McNemar's b and c, one row each."""

from __future__ import annotations

import math
from pathlib import Path

from labtui.engine.analysis import evalstore
from labtui.engine.rundir.fmt import printable
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Static

from .. import evals
from .. import format as fmt
from ..widgets.footer import LabFooter

KINDS = ("correct", "hedged_maybe", "yes_no_swap", "missed_maybe", "empty", "unparseable", "other")
KIND_NAMES = {"correct": "right", "hedged_maybe": "hedged maybe", "yes_no_swap": "yes/no swapped",
              "missed_maybe": "missed maybe", "empty": "empty", "unparseable": "unparseable", "other": "other"}


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _ci(ci) -> str:
    return "" if not ci else f"[{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"


def compare_text(res: dict, name_a: str, name_b: str, notes: tuple[str, ...] = ()) -> Content:
    """The comparison (pure, for the screen and the tests); fits 78 columns. Run data (the names,
    the verdict, `notes`) goes in through Content's $variables, never as markup."""
    values = {"name_a": printable(name_a), "name_b": printable(name_b),
              "verdict": printable(res.get("verdict") or ""), "ci_method": printable(res.get("diff_ci_method") or "")}

    def side(tag: str, name: str, acc, ci, f1) -> list[str]:
        f1_text = f" · macro-F1 {f1:.3f}" if f1 is not None else ""
        return [f"[b]{tag}[/b]  ${name}", f"   accuracy [b]{_pct(acc)}[/b] {_ci(ci)}{f1_text}"]

    lines = []
    for k, note in enumerate(notes):
        values[f"note{k}"] = printable(note)
        lines.append(f"[$warning]$note{k}[/]")
    if notes:
        lines.append("")
    lines += side("A", "name_a", res["acc_a"], res.get("ci_a"), res.get("macro_f1_a"))
    lines += side("B", "name_b", res["acc_b"], res.get("ci_b"), res.get("macro_f1_b"))
    lines += [f"   n = {res['n']} paired examples (95% Wilson intervals)", ""]
    lo, hi = res.get("diff_ci") or (math.nan, math.nan)
    sig = res.get("significant")
    p = fmt.p_value(res.get("mcnemar_p"))
    p_text = f"p {p}" if p.startswith("<") else f"p = {p}"
    lines += [
        f"B − A       [b]{res['diff'] * 100:+.1f} points[/b], 95% CI [{lo * 100:+.1f}, {hi * 100:+.1f}] "
        f"($ci_method)",
        f"McNemar     [{'$success' if sig else '$text-muted'}][b]{p_text}[/b][/] ({res.get('mcnemar_method', 'exact')})",
        f"            b = {res.get('b')} A right & B wrong, c = {res.get('c')} A wrong & B right",
        f"Cohen's h   {res['cohens_h']:+.3f} ({_h_magnitude(res['cohens_h'])})",
    ]
    det = res.get("detectable_diff")
    if det is not None:
        if math.isinf(det):
            note = f"N = {res['n']} is too small to detect any difference with 80% power: evaluate on more examples"
        else:
            note = f"N = {res['n']} is too small to detect differences under {det * 100:.1f} points (80% power)"
        lines.append(f"[{'$text-muted' if sig else '$warning'}]{note}[/]")
    lines += ["", f"  {'answers':<18}{'A':>8}{'B':>8}"]
    ea, eb = res.get("errors_a") or {}, res.get("errors_b") or {}
    for k in KINDS:
        va, vb = ea.get(k, 0), eb.get(k, 0)
        if k == "other" and not (va or vb):
            continue
        mark = "" if k == "correct" or va == vb else (" [$success]↓[/]" if vb < va else " [$error]↑[/]")
        lines.append(f"  {KIND_NAMES[k]:<18}{va:>8}{vb:>8}{mark}")
    lines += ["", "[b]verdict[/b] $verdict"]
    return Content.from_markup("\n".join(lines), **values)


FLIP_MARKS = {"b": "A✓ B✗", "c": "A✗ B✓"}  # b: A right & B wrong; c: A wrong & B right
FLIP_COLUMNS = (("", "flip"), ("id", "id"), ("gold", "gold"), ("A", "a"), ("B", "b"), ("question", "question"))
QUESTION_WIDTH = 60


def _answer(pred, margin) -> str:
    """`no -1.42`: an answer with its log-likelihood margin (score mode; > 0: right), `''` for an empty one."""
    text = printable(pred) if pred else "''"
    return text + (f" {margin:+.2f}" if isinstance(margin, (int, float)) else "")


def flipped(flips: dict) -> list[tuple[str, dict]]:
    """(side, example) in the flips table's order: b's, then c's."""
    return [(side, e) for side in ("b", "c") for e in flips.get(side) or []]


def flip_rows(flips: dict) -> list[tuple[str, tuple[str, ...]]]:
    """(row key, cells) of the flips table (pure, for the screen and the tests), in `flipped`'s order."""
    rows = []
    for side, e in flipped(flips):
        q = " ".join(str(e.get("question") or "").split())
        rows.append((f"{side}:{e['id']}", (FLIP_MARKS[side], printable(str(e["id"])), printable(str(e.get("gold"))),
                                            _answer(e.get("pred_a"), e.get("margin_a")),
                                            _answer(e.get("pred_b"), e.get("margin_b")),
                                            printable(fmt.clip(q, QUESTION_WIDTH)) if q else "-")))
    return rows


def _h_magnitude(h: float) -> str:
    a = abs(h)
    return "negligible" if a < 0.2 else "small" if a < 0.5 else "medium" if a < 0.8 else "large"


class CompareScreen(Screen):
    HELP_TITLE = "Compare"
    BINDINGS = [
        Binding("x", "swap", "Swap A/B", id="swap"),
        Binding("f", "flips", "Flips", id="flips"),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b
        self.result: dict | None = None
        self.error: str | None = None
        self.notes: tuple[str, ...] = ()  # the headline evals' reasons, a same-eval warning
        self.flips: dict | None = None  # {"b": [...], "c": [...]} once read (evalstore.flipped_example)
        self.flips_error: str | None = None
        self.showing_flips = False

    def compose(self) -> ComposeResult:
        yield Static("[b]Compare[/b] · computing…", id="compare-title", classes="screen-title")
        with VerticalScroll(id="compare-box"):
            yield Static(id="compare-body")
        yield DataTable(id="compare-flips", cursor_type="row", zebra_stripes=True)
        yield Static("", id="compare-flip-detail")
        yield LabFooter()

    def on_mount(self) -> None:
        self.query_one("#compare-flips", DataTable).display = False
        self.query_one("#compare-flip-detail").display = False
        self.compute(self.a, self.b)

    def action_swap(self) -> None:
        self.a, self.b = self.b, self.a
        self.flips = self.flips_error = None
        self.compute(self.a, self.b)
        if self.showing_flips:
            self.load_flips(self.a, self.b)

    def action_flips(self) -> None:
        """Between the numbers and the flipped examples (read once, in a worker)."""
        self.showing_flips = not self.showing_flips
        self.query_one("#compare-box").display = not self.showing_flips
        self.query_one("#compare-flips").display = self.showing_flips
        self.query_one("#compare-flip-detail").display = self.showing_flips
        if self.showing_flips:
            self.query_one("#compare-flips").focus()
            if self.flips is None and self.flips_error is None:
                self.load_flips(self.a, self.b)
        self._title()

    @work(thread=True, group="compare-flips", exclusive=True, exit_on_error=False, description="read the flipped examples")
    def load_flips(self, a, b) -> None:
        try:
            a, b, _, _ = evals.pair(a, b)
            flips = evalstore.compare_sources(a, b, flips=True)["flips"]
            self.app.call_from_thread(self._show_flips, flips, None)
        except Exception as e:  # noqa: BLE001 - the engine's message is for the user
            self.app.call_from_thread(self._show_flips, None, str(e))

    @work(thread=True, group="compare", exclusive=True, exit_on_error=False, description="compare two evals")
    def compute(self, a, b) -> None:
        try:
            a, b, ha, hb = evals.pair(a, b)  # a run stands for its headline eval, paired with the other side
            res = evals.compare(a, b)
            names = (evals.describe(a), evals.describe(b))
            notes = [f"{tag}: headline eval of its run: {h['why']}" for tag, h in (("A", ha), ("B", hb)) if h]
            if Path(a).resolve() == Path(b).resolve():
                notes.insert(0, "A and B are the same eval: every difference is 0 by construction")
            self.app.call_from_thread(self._show, res, names, None, tuple(notes))
        except Exception as e:  # noqa: BLE001 - the engine's message is for the user
            self.app.call_from_thread(self._show, None, (str(a), str(b)), str(e))

    def _show_flips(self, flips: dict | None, error: str | None) -> None:
        self.flips, self.flips_error = flips, error
        table = self.query_one("#compare-flips", DataTable)
        cursor = table.cursor_row  # kept when the table is fitted again (on_resize)
        table.clear(columns=True)
        rows = flip_rows(flips or {})
        widths = [max([len(label)] + [len(cells[i]) for _, cells in rows]) for i, (label, _) in enumerate(FLIP_COLUMNS)]
        room = (self.size.width or self.app.size.width) - 2 * len(FLIP_COLUMNS) - 1  # cell padding, the scrollbar
        widths[-1] = max(12, min(widths[-1], room - sum(widths[:-1])))  # the question takes what is left
        for (label, key), width in zip(FLIP_COLUMNS, widths):
            table.add_column(label, key=key, width=width)
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
        self._flip_detail(table.cursor_row)
        self._title()

    def on_resize(self) -> None:
        if self.flips is not None:  # the columns are fitted to the width
            self._show_flips(self.flips, self.flips_error)

    def _flip_detail(self, index: int) -> None:
        """The highlighted flip whole, under the table: its question is clipped in the row."""
        entries = flipped(self.flips or {})
        detail = self.query_one("#compare-flip-detail", Static)
        if not 0 <= index < len(entries):
            detail.update("")
            return
        e = entries[index][1]
        detail.update(Content.from_markup(
            "[b]$id[/b] gold $gold · A $a · B $b\n$question", id=printable(str(e["id"])),
            gold=printable(str(e.get("gold"))), a=_answer(e.get("pred_a"), e.get("margin_a")),
            b=_answer(e.get("pred_b"), e.get("margin_b")),
            question=printable(" ".join(str(e.get("question") or "-").split()))))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "compare-flips":
            self._flip_detail(event.cursor_row)

    def _title(self) -> None:
        title = self.query_one("#compare-title", Static)
        if not self.showing_flips:
            same = " · [$warning]the same eval twice[/]" if self.notes and "same eval" in self.notes[0] else ""
            title.update(Content.from_markup("[b]Compare[/b]" if self.error else "[b]Compare[/b] · computing…"
                                             if self.result is None else "[b]Compare[/b] · differences are B − A" + same))
        elif self.flips_error:
            title.update(Content.from_markup("[b]Compare[/b] · flipped examples: [$error]$message[/]",
                                             message=printable(self.flips_error)))
        elif self.flips is None:
            title.update(Content.from_markup("[b]Compare[/b] · reading the flipped examples…"))
        else:
            title.update(Content.from_markup(
                f"[b]Compare[/b] · flipped b = {len(self.flips['b'])} A✓ B✗, c = {len(self.flips['c'])} A✗ B✓"
                " · margin: gold − best (log-lik)"))

    def _show(self, res: dict | None, names: tuple[str, str], error: str | None, notes: tuple[str, ...] = ()) -> None:
        self.result, self.error, self.notes = res, error, notes
        self._title()
        body = self.query_one("#compare-body", Static)
        if error:
            body.update(Content.from_markup("[$error]$message[/]", message=printable(error)))
            return
        body.update(compare_text(res, *names, notes=notes))
