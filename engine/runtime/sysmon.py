"""Machine samples: psutil for CPU, RAM and the run's processes; NVML (`pynvml`) for NVIDIA GPUs.

Where NVML is missing (no driver, no GPU, no `pynvml`) `gpus()` returns [] rather than an error.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil

_nvml_state: dict = {"ok": None, "error": None}


def nvml_init() -> bool:
    if _nvml_state["ok"] is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_state["ok"] = True
        except Exception as e:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded...
            _nvml_state["ok"] = False
            _nvml_state["error"] = f"{type(e).__name__}: {e}"
    return bool(_nvml_state["ok"])


def nvml_error() -> str | None:
    nvml_init()
    return _nvml_state["error"]


def gpu_count() -> int:
    """NVIDIA GPUs on this machine (NVML's count, CUDA_VISIBLE_DEVICES not applied); 0 without NVML."""
    if not nvml_init():
        return 0
    import pynvml

    try:
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def gpus() -> list[dict]:
    """Every GPU of the node (all of them, whichever ranks use them; CUDA_VISIBLE_DEVICES not applied), per
    device: index, name, mem_used, mem_total (bytes), util (%), temp (C), power (W), power_limit (W)."""
    if not nvml_init():
        return []
    import pynvml

    out = []
    try:
        count = pynvml.nvmlDeviceGetCount()
    except Exception:
        return []
    for i in range(count):
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            rec = {"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                   "mem_used": int(mem.used), "mem_total": int(mem.total)}
        except Exception:
            continue
        for key, fn in (("util", lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                        ("temp", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
                        ("power", lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
                        ("power_limit", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0)):
            try:
                rec[key] = fn()
            except Exception:
                rec[key] = None
        out.append(rec)
    return out


class Sampler:
    """Samples the machine and one process tree (the run's worker and its children)."""

    def __init__(self, pid: int | None, disk_path: Path | None = None):
        self.disk_path = disk_path
        self._procs: dict[int, psutil.Process] = {}
        self.root = None
        if pid:
            try:
                self.root = psutil.Process(pid)
                self.root.cpu_percent(None)
            except psutil.Error:
                self.root = None
        psutil.cpu_percent(None)

    def _tree(self) -> list[psutil.Process]:
        if self.root is None:
            return []
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []
        live = {}
        for p in procs:
            known = self._procs.get(p.pid)
            if known is None:
                try:
                    p.cpu_percent(None)
                except psutil.Error:
                    continue
                known = p
            live[p.pid] = known
        self._procs = live
        return list(live.values())

    def kill_leftovers(self) -> list[int]:
        """SIGKILL what is still alive of the tree last sampled (psutil checks each is the same process, not
        a reused pid): the ranks of a multi-process run whose launcher died first. Returns their pids."""
        killed = []
        for p in self._procs.values():
            if p is self.root:
                continue
            try:
                if p.is_running():
                    p.kill()
                    killed.append(p.pid)
            except psutil.Error:
                continue
        return killed

    def sample(self) -> dict:
        vm = psutil.virtual_memory()
        rec = {"kind": "system", "t": time.time(), "cpu": psutil.cpu_percent(None), "cpu_count": psutil.cpu_count(),
               "ram_used": vm.total - vm.available, "ram_total": vm.total, "ram_percent": vm.percent}
        rss = cpu = 0.0
        n = 0
        for p in self._tree():
            try:
                rss += p.memory_info().rss
                cpu += p.cpu_percent(None)
                n += 1
            except psutil.Error:
                continue
        if self.root is not None:
            rec.update(proc_rss=int(rss), proc_cpu=cpu, proc_count=n)
        if self.disk_path is not None:
            try:
                du = shutil.disk_usage(self.disk_path)
                rec.update(disk_free=du.free, disk_total=du.total)
            except OSError:
                pass
        rec["gpus"] = gpus()
        return rec


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo's first `model name`), else what `platform` says."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
