"""How a Slurm run's job is spelled in the TUI: `slurm job 123 on node vm · RUNNING`, `PENDING: Priority`.

The engine writes the job into state.json's `slurm` (records.SlurmJob: job id, cluster, Slurm's
state, the node, and `reason`: runtime.slurm.describe's one line, e.g. "Slurm job 101 waiting for
resources (...)") and reconciles it with Slurm (runtime.slurm_runs, called by the monitor's tick);
these functions only read a run's row. Pure; no Textual.
"""

from __future__ import annotations

import re
from pathlib import Path

from labtui.engine.rundir import fmt

SBATCH_FILE = "job.sbatch"  # runtime.slurm.SBATCH_FILE: the TUI reads the run directory, it does not import the runtime
OUTPUT_FILE = "slurm-{job}.out"  # runtime.slurm.OUTPUT_PATTERN with the job id


def _text(slurm: dict | None, key: str) -> str | None:
    value = (slurm or {}).get(key)
    return fmt.printable(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) \
        else None


def job_id(row) -> str | None:
    return _text(row.slurm, "job_id") if row is not None and row.on_slurm else None


def pending_code(line: str | None, job: str | None) -> str | None:
    """Slurm's own word for why a job waits (`Resources`, `Priority`, `Dependency`...) from the
    engine's line for it (runtime.slurm.describe: "Slurm job 101 waiting for resources (...)", or
    "Slurm job 101 waiting (Licenses)" for a reason it has no words for); a bare word as it is."""
    if not line or line == "None":
        return None
    if re.fullmatch(r"[A-Za-z_]+", line):
        return line
    m = re.fullmatch(r"Slurm job (\S+) (.+)", line)
    if m is None or (job is not None and m[1] != job):
        return None
    from labtui.engine.runtime.slurm import PENDING_REASONS  # the standard library only

    words = m[2]
    for code, text in PENDING_REASONS.items():
        if words == text.replace("JOBID", m[1]):
            return code
    other = re.fullmatch(r"waiting \(([A-Za-z_]+)\)", words)
    return other[1] if other else None


def reason(row) -> str | None:
    """Why a queued Slurm run waits, in Slurm's word (Resources, Priority, Dependency...), or None."""
    if row is None or not row.on_slurm or row.status != "queued":
        return None
    slurm = row.slurm or {}
    if _text(slurm, "state") not in (None, "PENDING"):
        return None
    return pending_code(_text(slurm, "reason"), _text(slurm, "job_id"))


def job_line(row) -> str | None:
    """`slurm job 123 on node vm · RUNNING`, `slurm job 123 · PENDING: Priority`, `slurm: not submitted
    yet`; None for a local run."""
    if row is None or not row.on_slurm:
        return None
    slurm = row.slurm or {}
    job = _text(slurm, "job_id")
    if job is None:
        return "slurm: not submitted yet"
    cluster, node, state = _text(slurm, "cluster"), _text(slurm, "node"), _text(slurm, "state")
    text = f"slurm job {job}" + (f" ({cluster})" if cluster else "") + (f" on node {node}" if node else "")
    if state:
        why = pending_code(_text(slurm, "reason"), job) if state == "PENDING" else None
        text += f" · {state}" + (f": {why}" if why else "")
    return text


def sbatch_path(run_dir: str | Path) -> Path:
    """The batch script labtui wrote for the run (`<run>/job.sbatch`)."""
    return Path(run_dir) / SBATCH_FILE


def output_path(run_dir: str | Path, row) -> Path | None:
    """Slurm's output file of the run's job (`<run>/slurm-123.out`), None before it is submitted."""
    job = job_id(row)
    return Path(run_dir) / OUTPUT_FILE.format(job=job) if job else None


def detail_lines(row, run_dir: str | Path) -> list[str]:
    """The run detail screen's lines for a Slurm run: the job, its batch script, Slurm's output file."""
    line = job_line(row)
    if line is None:
        return []
    out = [line]
    said = _text(row.slurm, "reason")
    if said and said != "None" and not re.fullmatch(r"[A-Za-z_]+", said) and said != row.error:
        out.append(said)  # the engine's line: why it waits, or what Slurm said last
    out.append(f"sbatch script {fmt.printable(str(sbatch_path(run_dir)))}")
    output = output_path(run_dir, row)
    if output is not None:
        out.append(f"slurm output  {fmt.printable(str(output))}")
    return out
