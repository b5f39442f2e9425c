"""The one progress protocol of long work (generate, ingest, features, train, score).

A producer calls ``progress(stage, done, total, note)`` whenever a stage moves; a renderer (the
command line's rich bars, a benchmark's timer, a test's recorder) decides what to show. Producers
never look at what kind of renderer they were given.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None: ...


def silent(stage: str, done: int, total: int, note: str = "") -> None:
    """The default renderer: shows nothing."""


class Steps:
    """Counts the steps of one stage for a producer: ``step(note)`` advances by one."""

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress = progress or silent
        self.stage, self.total, self.done = stage, total, 0
        self.progress(stage, 0, total, "")

    def __call__(self, note: str = "") -> None:
        self.done += 1
        self.progress(self.stage, self.done, self.total, note)
