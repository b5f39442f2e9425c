"""What every benchmark script writes alongside its figures: the machine, and its own marked
section of docs/benchmarks.md (the other sections are left as they are)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> dict[str, str]:
    import psutil

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "cpu": model,
        "python": platform.python_version(),
    }


def split_doc(open_marker: str, close_marker: str) -> tuple[str, str | None, str]:
    """(text before the section, the section's current body or None, text after it)."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if open_marker in text and close_marker in text:
        head, rest = text.split(open_marker, 1)
        body, tail = rest.split(close_marker, 1)
        return head, body, tail
    return text.rstrip("\n") + "\n\n", None, "\n"


def write_section(open_marker: str, close_marker: str, section: str) -> None:
    """Replace (or append) the section; ``section`` includes both markers."""
    head, _, tail = split_doc(open_marker, close_marker)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(head + section + tail)
