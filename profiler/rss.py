"""Process memory on Linux: resident set size now and at its peak, and resetting that peak."""
from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["process_rss", "reset_peak_rss", "limit_address_space"]

_STATUS = Path("/proc/self/status")


def process_rss() -> dict[str, int]:
    """{"rss_bytes", "peak_rss_bytes"} from /proc/self/status (VmRSS, VmHWM); elsewhere the peak
    from getrusage (kilobytes on Linux) and no current figure."""
    try:
        fields = dict(line.split(":", 1) for line in _STATUS.read_text().splitlines() if ":" in line)
        kib = {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}
        return {"rss_bytes": kib["VmRSS"] * 1024, "peak_rss_bytes": kib["VmHWM"] * 1024}
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"rss_bytes": 0, "peak_rss_bytes": peak}


def reset_peak_rss() -> bool:
    """Reset the peak (VmHWM) to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def limit_address_space(extra_bytes: int) -> None:
    """Let this process grow by at most `extra_bytes` of address space from now on (RLIMIT_AS):
    a CPU stand-in for a smaller device, so that an allocation beyond it fails as an OOM would."""
    fields = dict(line.split(":", 1) for line in _STATUS.read_text().splitlines() if ":" in line)
    now = int(fields["VmSize"].split()[0]) * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = now + int(extra_bytes)
    resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
