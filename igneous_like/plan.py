"""A plan: the lazy task stream of one operation plus what --dry-run prints."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

PROCESS_OVERHEAD = 300e6  # interpreter, numpy, cloud-volume and codecs, measured RSS of an idle worker


@dataclass
class Plan:
    operation: str
    total: int
    tasks: Callable[[], Iterator[Any]]  # a fresh generator each call; never a list
    prepare: Callable[[], None] = lambda: None  # writes metadata once, before enqueueing
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"{self.operation}: {self.total} tasks"]
        for key, value in self.details.items():
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} PB"


def fmt_vec(v) -> str:
    return "x".join(str(int(x)) for x in v)
