"""Progress that works everywhere: log lines that a rich bar prints above itself, and a bar
whose epoch total is the epochs the fit can still spend."""

from __future__ import annotations

import io
import logging
import sys

from rich.console import Console
from rich.progress import Progress

from pl_pruning.callbacks.logs import ConsoleHandler
from pl_pruning.callbacks.progress import PruningProgressBar


def _emit(handler: logging.Handler, message: str) -> None:
    handler.emit(logging.LogRecord("pl_pruning", logging.INFO, __file__, 1, message, None, None))


def test_a_console_line_goes_through_the_bar_not_under_it(capsys):
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    fixed = logging.StreamHandler(sys.stdout)  # what logging's own handler keeps: the stream at its start
    with Progress(console=console, redirect_stdout=True) as progress:
        progress.add_task("Epoch 0/9", total=10)
        _emit(ConsoleHandler("stdout"), "[PhaseController] a step")
        _emit(fixed, "[PhaseController] drawn over")
    drawn = console.file.getvalue()
    assert "[PhaseController] a step" in drawn  # printed by the bar's console, above the bar
    assert "drawn over" not in drawn  # the fixed stream bypasses the bar, which then draws over it
    assert "drawn over" in capsys.readouterr().out


class _Trainer:
    def __init__(self, max_epochs, callbacks=()):
        self.max_epochs, self.callbacks = max_epochs, list(callbacks)


def test_the_bar_counts_to_the_planned_end(monkeypatch):
    from pl_pruning import PhaseController

    controller = PhaseController()
    bar = PruningProgressBar()
    monkeypatch.setattr(PruningProgressBar, "trainer", _Trainer(300, [controller]), raising=False)
    assert bar._get_train_description(4).startswith("Epoch 4/299")
    monkeypatch.setattr(controller, "planned_epochs", lambda trainer: 25)  # a final fine-tune ending at 25
    assert bar._get_train_description(24).strip() == "Epoch 24/24"
    monkeypatch.setattr(PruningProgressBar, "trainer", _Trainer(20), raising=False)  # no controller: max_epochs
    assert bar._get_train_description(3).strip() == "Epoch 3/19"
