"""bench/plot.py: tables read back from what the benchmarks print and from the docs."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("bench_plot", REPO / "bench" / "plot.py")
assert spec is not None and spec.loader is not None
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)


@pytest.mark.parametrize(("cell", "value"), [
    ("1,383,518", 1383518.0), ("88 040", 88040.0), ("4.11\u00d7", 4.11), ("0.72 s", 0.72),
    ("**512,283**", 512283.0), ("3.1x", 3.1), ("22 vs 23 MB", None), ("met", None),
    ("", None), ("-", None)])
def test_cells_read_as_numbers(cell: str, value: float | None) -> None:
    assert plot.numeric(cell) == value


def test_a_range_is_a_span() -> None:
    assert plot.span("16.4\u201321.2") == (16.4, 21.2)
    assert plot.span("7") == (7.0, 7.0) and plot.span("a\u2013b") is None


def test_markdown_and_rich_tables_are_found_in_output() -> None:
    table = Table(title="t")
    table.add_column("path")
    table.add_column("p99 ms", justify="right")
    table.add_row("floor", "3.1")
    table.add_row("pipeline", "26.4")
    buf = io.StringIO()
    Console(file=buf, width=80).print(table)
    lines = ["text before", "| | run 1 | ratio |", "|---|--:|---|", "| a | 1 | 2x |",
             "| b | 3 | 4x |", "", *buf.getvalue().splitlines()]
    assert plot.printed_tables(lines) == [
        (["", "run 1", "ratio"], [["a", "1", "2x"], ["b", "3", "4x"]]),
        (["path", "p99 ms"], [["floor", "3.1"], ["pipeline", "26.4"]])]


def test_every_benchmark_section_of_the_docs_has_a_table() -> None:
    tables = plot.markdown_tables((REPO / "docs" / "benchmarks.md").read_text())
    # helper modules of other benchmarks, not benchmarks of their own
    benches = {p.stem for p in (REPO / "bench").glob("*.py")} - {"plot", "log_children",
                                                                 "mirror_pg"}
    assert benches <= set(tables), sorted(benches - set(tables))
    for _heading, head, rows in tables.values():
        assert head and rows


def test_a_table_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots extra is not installed")
    path = plot.plot_table("t", "title", ["row", "rec/s", "same"],
                           [["a", "1,000", "5"], ["b", "2\u20133", "5"]], out_dir=tmp_path)
    assert path == tmp_path / "t.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert plot.plot_table("u", "title", ["row", "x"], [["a", "n/a"]], out_dir=tmp_path) is None


def test_nothing_is_drawn_without_matplotlib(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert plot.plot_table("t", "title", ["row", "n"], [["a", "1"]], out_dir=tmp_path) is None
    assert not list(tmp_path.iterdir())
