"""Peak memory of one phase of a benchmark process (Linux), not of the whole process.

The billing benchmarks load their data set in the same process before the timed phase; the
process's lifetime peak (`ru_maxrss`) would count the loader. Linux lets a process reset its
own peak RSS (`VmHWM`) by writing 5 to `/proc/self/clear_refs`, so a phase's peak is the
`VmHWM` read after it, starting from the RSS the process already had when it began.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK = "5"


def _status_mib(field: str) -> float | None:
    try:
        lines = _STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return None


@dataclass(frozen=True)
class PhaseMemory:
    """RSS when a phase started and the peak RSS during it, in MiB. `phase_only` is False
    where the kernel cannot reset the peak: `peak_mib` is then the process's lifetime peak."""

    start_mib: float
    peak_mib: float
    phase_only: bool

    def __str__(self) -> str:
        scope = "" if self.phase_only else " (process lifetime)"
        return f"rss_start={self.start_mib:.0f}MiB peak_rss={self.peak_mib:.0f}MiB{scope}"


class PeakRss:
    """`with PeakRss() as rss: ...` then `rss.result()`: the peak RSS of the block."""

    def __enter__(self) -> PeakRss:
        try:
            _CLEAR_REFS.write_text(_RESET_PEAK)
            self._phase_only = True
        except OSError:
            self._phase_only = False
        self._start = _status_mib("VmRSS") or 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak = _status_mib("VmHWM") if self._phase_only else None
        self._result = PhaseMemory(
            self._start, lifetime if peak is None else peak, peak is not None
        )

    def result(self) -> PhaseMemory:
        """The block's memory; call after it has exited."""
        return self._result
