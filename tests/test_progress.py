"""Progress bars: drawn on stderr when asked, and nothing at all for scripts."""

from __future__ import annotations

from cpcdrl_deploy.core.progress import no_ticker, progress_bars


def test_bars_draw_each_task_on_stderr(capsys) -> None:
    with progress_bars(True) as tick:
        assert tick is not no_ticker
        tick("[cpcdrl] proposals", 3, 10)  # brackets are text, not rich markup
        tick("[cpcdrl] proposals", 10, 10)
        tick("greedy", 2, None)  # unknown total
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "[cpcdrl] proposals" in captured.err and "10/10" in captured.err and "greedy" in captured.err


def test_no_bars_for_scripts(capsys) -> None:
    with progress_bars(False) as tick:
        assert tick is no_ticker
        tick("anything", 1, 2)
    assert capsys.readouterr() == ("", "")
