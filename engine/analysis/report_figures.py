"""The figures of `labtui report`, drawn with matplotlib (Agg): the loss curves of the report's runs
overlaid, accuracy with its 95% interval per row against the baseline, and each eval's confusion matrix.

matplotlib is imported inside the functions that draw, never when this module is imported (the CLI's
parser imports the report command; the TUI never imports matplotlib at all). Each figure has a fixed
size in pixels (FIGURE_DPI x its size in inches, no tight bounding box), which the report states.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Mapping

from labtui.engine.analysis import smoothing
from labtui.engine.rundir import fmt, store

FIGURE_DPI = 100
LOSS_SIZE = (8.0, 4.5)  # inches: 800 x 450 pixels
CONFUSION_SIZE = (4.8, 4.0)  # 480 x 400
ACCURACY_WIDTH = 8.0  # 800 pixels wide, 0.4 inch per row + 1.6 high
EMA_WEIGHT = 0.6  # the TUI's light smoothing (tui/series.SMOOTHING): TensorBoard's debiased EMA


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _loss_series(run_dir: str) -> tuple[list[int], list[float], list[int], list[float]]:
    history = store.metrics_history(store.Run(Path(run_dir)))
    ts, tl, es, el = [], [], [], []
    for rec in history:
        step = store.as_whole(rec.get("step"))
        if step is None:
            continue
        if rec.get("kind") == "train" and store.as_finite(rec.get("loss")) is not None:
            ts.append(step)
            tl.append(float(rec["loss"]))
        elif rec.get("kind") == "eval" and store.as_finite(rec.get("eval_loss")) is not None:
            es.append(step)
            el.append(float(rec["eval_loss"]))
    return ts, tl, es, el


def _label(row: Mapping) -> str:
    """`experiment·tail` (a run of a group: `GROUP·tail`, fmt.run_label), the baseline starred."""
    run = row.get("run") or ""
    name = fmt.run_label(run, row.get("experiment"), row.get("group")) if run else f"{row.get('experiment')}"
    return ("★ " if row.get("is_baseline") else "") + name


def loss_figure(rows: list[Mapping]):
    """Train loss (EMA-smoothed, the raw values faint) and eval loss (markers) of each run, x = step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=LOSS_SIZE, dpi=FIGURE_DPI)
    seen = set()
    drawn = 0
    for k, row in enumerate(rows):
        if not row.get("run_dir") or row["run_dir"] in seen:
            continue
        seen.add(row["run_dir"])
        ts, tl, es, el = _loss_series(row["run_dir"])
        if not ts and not es:
            continue
        color = f"C{drawn % 10}"
        drawn += 1
        if ts:
            ax.plot(ts, tl, color=color, alpha=0.2, linewidth=0.8)
            ax.plot(ts, smoothing.ema(tl, EMA_WEIGHT), color=color, linewidth=1.6, label=f"{_label(row)} train")
        if es:
            ax.plot(es, el, color=color, marker="o", linestyle="--", linewidth=1.0, markersize=4,
                    label=f"{_label(row)} eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"Loss (train: EMA {EMA_WEIGHT:g}, debiased; raw faint)")
    if drawn:
        ax.legend(fontsize=7, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.92, bottom=0.12)
    return fig


def accuracy_figure(rows: list[Mapping]):
    """Each row's accuracy with its 95% Wilson interval; the baseline's as a shaded band."""
    plt = _plt()
    height = 0.4 * len(rows) + 1.6
    fig, ax = plt.subplots(figsize=(ACCURACY_WIDTH, height), dpi=FIGURE_DPI)
    ys = list(range(len(rows)))[::-1]
    for y, row in zip(ys, rows):
        acc = row.get("accuracy")
        if acc is None:
            continue
        ci = row.get("ci") or [acc, acc]
        color = "black" if row.get("is_baseline") else ("C3" if row.get("significant") else "C0")
        ax.errorbar([acc * 100], [y], xerr=[[(acc - ci[0]) * 100], [(ci[1] - acc) * 100]], fmt="o", color=color,
                    capsize=4)
        if row.get("is_baseline") and row.get("ci"):
            ax.axvspan(ci[0] * 100, ci[1] * 100, color="0.85", zorder=0)
            ax.axvline(acc * 100, color="0.5", linestyle="--", linewidth=1, zorder=0)
    ax.set_yticks(ys)
    ax.set_yticklabels([_label(r) for r in rows], fontsize=8)
    ax.set_xlabel("accuracy, % (95% Wilson interval; red: Holm-adjusted p < 0.05 vs the baseline)")
    ax.set_title("Accuracy vs the baseline (grey band: the baseline's interval)")
    ax.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(left=0.3, right=0.97, top=1 - 0.45 / height, bottom=0.7 / height)
    return fig


def confusion_figure(row: Mapping):
    """The eval's confusion matrix (gold rows, predicted columns), counts in the cells."""
    plt = _plt()
    conf = row.get("confusion") or {}
    order = list(row.get("labels") or [])  # yes, no, maybe as the eval lists them, then the rest

    def ordered(keys) -> list:
        return [x for x in order if x in keys] + [x for x in keys if x not in order]

    golds = ordered(list(conf))
    preds = ordered(list(next(iter(conf.values())))) if conf else []
    counts = [[conf[g].get(p, 0) for p in preds] for g in golds]
    fig, ax = plt.subplots(figsize=CONFUSION_SIZE, dpi=FIGURE_DPI)
    if counts:
        im = ax.imshow(counts, cmap="Blues")
        top = max(max(r) for r in counts) or 1
        for i, r in enumerate(counts):
            for j, v in enumerate(r):
                ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=9)
        ax.set_xticks(range(len(preds)))
        ax.set_xticklabels(preds, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(golds)))
        ax.set_yticklabels(golds, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{_label(row)}\n{row['eval']}", fontsize=8)
    fig.subplots_adjust(left=0.18, right=0.92, top=0.86, bottom=0.2)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "eval"


def figures(report: Mapping) -> list[tuple[str, str, str, Any]]:
    """(file stem, title, caption, matplotlib figure) for each figure of the report."""
    rows = report["rows"]
    out = [("loss", "Loss curves",
            f"Train loss of each run (EMA {EMA_WEIGHT:g}, debiased, as the TUI's light smoothing; the raw values "
            f"faint) and eval loss (markers) against the training step.", loss_figure(rows)),
           ("accuracy", "Accuracy vs the baseline",
            "Accuracy of each evaluation with its 95% Wilson interval; the baseline's interval shaded; red where "
            "the Holm-adjusted McNemar p is below 0.05.", accuracy_figure(rows))]
    for k, row in enumerate(rows, 1):
        if row.get("confusion"):
            out.append((f"confusion-{k:02d}-{_slug(row['eval'])}", f"Confusion matrix: {_label(row)}",
                        f"Confusion matrix of eval {row['eval']} ({row.get('evaluated')}): gold answer by row, "
                        f"prediction by column.", confusion_figure(row)))
    return out


def render(report: Mapping, out_dir: Path | None, svg: bool = False) -> list[dict]:
    """Draw the report's figures: written as PNG (and SVG when svg) into out_dir when it is given; with
    svg the SVG text is kept in the entry (`svg`) for an html page. Each entry: name, title, caption,
    width, height (pixels), files {png, svg} (names relative to out_dir)."""
    plt = _plt()
    entries = []
    for stem, title, caption, fig in figures(report):
        w, h = (round(x * FIGURE_DPI) for x in fig.get_size_inches())
        entry: dict[str, Any] = {"name": stem, "title": title, "caption": caption, "width": w, "height": h, "files": {}}
        if out_dir is not None:
            fig.savefig(out_dir / f"{stem}.png", dpi=FIGURE_DPI)
            entry["files"]["png"] = f"{stem}.png"
        if svg:
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
            text = buf.getvalue()
            text = text[text.index("<svg"):]  # inline: no XML declaration or doctype
            entry["svg"] = text
            if out_dir is not None:
                (out_dir / f"{stem}.svg").write_text(text)
                entry["files"]["svg"] = f"{stem}.svg"
        plt.close(fig)
        entries.append(entry)
    return entries
