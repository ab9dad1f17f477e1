"""`labtui report`: the chosen runs' evaluations against the baseline as markdown, html, csv or json,
with figures (engine/analysis/report.py, report_figures.py).

Registered by engine/cli/main.py through `register(subparsers)`. Without -o the report goes to standard
output and no figure is drawn (html excepted: its figures are inline SVG); with -o DIR (or a file) the
report and its figures (PNG; SVG too for html) are written there. --group NAME reports the runs of one
group (run.json's `group`, a sweep's) instead of RUN or --all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labtui.engine.analysis import report
from labtui.engine.cli.cli_base import UsageError, workspace_from
from labtui.engine.cli.eval_cli import add_ci_argument
from labtui.engine.rundir import fmt


def _target(output: str, form: str | None) -> tuple[Path, str, str]:
    """(folder, file name, format) for -o: a path with a report suffix is the file; anything else a folder."""
    p = Path(output)
    by_suffix = {v: k for k, v in report.SUFFIX.items()}
    if p.suffix in by_suffix and not p.is_dir():
        if form and by_suffix[p.suffix] != form:
            raise UsageError(f"-o {output} ends in {p.suffix} but --format is {form}: use a matching name or a folder")
        return p.parent if str(p.parent) else Path("."), p.name, form or by_suffix[p.suffix]
    form = form or "md"
    return p, f"report{report.SUFFIX[form]}", form


def cmd_report(args) -> int:
    ws = workspace_from(args)
    if args.group is not None and (args.all or args.refs):
        raise UsageError(f"--group {args.group} reports the runs of that group: leave out "
                         f"{'--all' if args.all else 'the runs'} (or --group)")
    if args.all and args.refs:
        raise UsageError("--all reports every run with a completed eval: leave out the runs, or --all")
    data = report.build(ws, args.refs, baseline=args.baseline, ci=args.ci, group=args.group)
    if data["skipped"]:
        n = len(data["skipped"])
        print(fmt.printable(f"skipped {n} run{'s' * (n != 1)} of group {args.group} without a completed evaluation: "
                            + ", ".join(f"{s['run']} ({s['why']})" for s in data["skipped"])), file=sys.stderr)
    if args.output:
        folder, name, form = _target(args.output, args.format)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"-o {args.output}: cannot make the folder {folder}: {e.strerror}") from None
    else:
        folder, name, form = None, None, args.format or "md"
    figures: list[dict] = []
    if folder is not None or form == "html":
        from labtui.engine.analysis import report_figures

        figures = report_figures.render(data, folder, svg=form == "html")
    text = report.render(data, form, figures)
    if folder is None:
        sys.stdout.write(text)
        return 0
    path = folder / name
    path.write_text(text)  # a file to share: the user's umask, not a private temporary file's mode
    files = [f for fig in figures for f in fig["files"].values()]
    print(fmt.printable(str(path)))
    print(fmt.printable(f"wrote {path} and {len(files)} figure file(s) in {folder} ({data['family']['text']}; "
                        f"intervals: {data['ci_method']})"), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="a report of runs' evaluations against the baseline (md, html, csv, json) "
                                      "with figures")
    p.add_argument("refs", nargs="*", metavar="RUN|EVAL",
                   help="runs (their headline evals) and evals (RUN/EVAL, eval id); default: every run with a "
                        "completed eval")
    p.add_argument("--all", action="store_true", help="every run with a completed eval (the default without RUN)")
    p.add_argument("--group", metavar="NAME", help="the runs of one group (a `labtui sweep`'s) against the baseline, "
                   "Holm over the group's comparisons; its runs without a completed eval are skipped (said on stderr)")
    p.add_argument("--baseline", metavar="RUN", help="the run (or eval) to compare with; default: the workspace's "
                                                      "baseline (marked with b in History)")
    p.add_argument("--format", choices=report.FORMATS, help="md (default; a table and a paragraph per run), html "
                   "(one self-contained page), csv or json")
    p.add_argument("-o", "--output", metavar="PATH", help="a folder (report.<format> and the figures) or a file "
                   "(the figures beside it); default: standard output, without figures (html: inline)")
    add_ci_argument(p)
    p.set_defaults(func=cmd_report)
