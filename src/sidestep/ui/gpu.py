"""The GPU gauge (utilisation, memory) and the card size that picks a `vram=` profile.

The monitor asks `nvidia-smi`, the driver's own tool, rather than CUDA: a CUDA context in the monitor would take
GPU memory from the run it watches, and `nvidia-smi` also sees memory held by other processes. No `nvidia-smi`
(no NVIDIA GPU, or a CPU box): no gauge.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional

QUERY = "index,name,utilization.gpu,memory.used,memory.total"
GIB = 1024 ** 3


@dataclass(frozen=True)
class GpuGauge:
    index: int
    name: str
    utilization: Optional[float]  # percent busy over the driver's last sample period
    memory_used_mib: Optional[float]
    memory_total_mib: Optional[float]

    def describe(self) -> str:
        busy = "?" if self.utilization is None else f"{self.utilization:.0f}%"
        if self.memory_used_mib is None or self.memory_total_mib is None:
            memory = "memory ?"
        else:
            memory = f"{self.memory_used_mib / 1024:.1f} / {self.memory_total_mib / 1024:.1f} GiB"
        return f"{self.name}: {busy} busy, {memory}"


def read_gauges(timeout: float = 5.0) -> List[GpuGauge]:
    """One reading per GPU, or [] when `nvidia-smi` is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gauges = []
    for line in out.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 5 and cells[0].isdigit():
            gauges.append(GpuGauge(int(cells[0]), cells[1], *(_number(c) for c in cells[2:])))
    return gauges


def _number(cell: str) -> Optional[float]:
    try:
        return float(cell)
    except ValueError:  # "[N/A]" (MIG slices, some laptops)
        return None


def detected_gpu() -> Optional[tuple]:
    """(name, total memory in GiB) of the first CUDA device torch sees, or None on a CPU-only box."""
    import torch  # here: the monitor reads its gauges from nvidia-smi and never loads torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / GIB


def profile_for(memory_gib: float, profiles: List[str]) -> str:
    """The largest `vram=` profile the card holds: `12gb` needs about 12 GiB (5 % slack, as cards report a little
    less than their label), `24gb_plus` 24 GiB or more; the smallest profile for anything under it."""
    sizes: Dict[str, int] = {p: int(re.match(r"\d+", p).group()) for p in profiles if re.match(r"\d+gb", p)}
    fitting = [p for p, gib in sizes.items() if memory_gib >= 0.95 * gib]
    return max(fitting, key=sizes.get) if fitting else min(sizes, key=sizes.get)
