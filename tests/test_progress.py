"""Progress lines: redrawn on a terminal, whole lines now and then in a log, nothing with -q."""

import io
import sys

import emocam.progress
from emocam.progress import progress


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def run(monkeypatch, tty: bool, items: int = 20, stop_at: int | None = None, quiet: bool = False) -> str:
    monkeypatch.setattr(emocam.progress, "QUIET", quiet)  # an earlier `main([... "-q"])` may have set it
    stream = Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    clock = iter(range(0, 10_000, 5))  # each item takes 5 s
    monkeypatch.setattr(emocam.progress.time, "monotonic", lambda: next(clock))
    for i in progress(range(items), desc="work"):
        if i == stop_at:
            break
    return stream.getvalue()


def test_a_log_gets_a_whole_line_every_30_s_and_no_carriage_returns(monkeypatch):
    out = run(monkeypatch, tty=False)
    lines = out.splitlines()
    assert "\r" not in out and out.endswith("\n")
    assert 3 <= len(lines) <= 4 and lines[-1].startswith("work 20/20 (100%)")  # 100 s of work


def test_a_terminal_line_is_redrawn_and_ended_even_when_the_work_stops_half_way(monkeypatch):
    out = run(monkeypatch, tty=True, stop_at=7)
    assert out.count("\r") >= 5 and out.endswith("\n") and "work 7/20" in out


def test_quiet_means_no_progress(monkeypatch):
    assert run(monkeypatch, tty=True, quiet=True) == ""
