"""Plots of benchmark tables: each bench script calls ``plot_table`` with the table it
prints, and ``python bench/plot.py docs/benchmarks.md`` draws the latest table of every
benchmark section of the docs (the figures recorded there, not a new run).

Strategy: a table is what the scripts already print (markdown, or a rich table), so a
script calls ``plot_printed_tables("<bench>")`` once at its start: its standard output is
copied (the last ``MAX_LINES`` lines) and, when the script ends, every table it printed
is drawn into ``bench/out/plots/<bench>[-<n>].png``; a script that prints an aligned
text table instead calls ``plot_rows`` with its rows. The docs' pictures are drawn from
the figures recorded in docs/benchmarks.md instead (below), so a smoke run never
replaces them. Every column whose cells read as numbers
("1,383,518", "88 040", "4.11x", "0.72 s") gets a panel of horizontal bars, one bar per
row (a range "16.4-21.2" (en dash) as a bar with its upper part lighter); other cells ("22 vs
23 MB") are left out. matplotlib is
optional (``pip install 'edgestream[plots]'``): without it nothing is drawn and the
bench runs as before.

    python bench/plot.py docs/benchmarks.md              # -> docs/plots/<bench>.png
    python bench/plot.py docs/benchmarks.md --out /tmp/p
"""

from __future__ import annotations

import argparse
import atexit
import re
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ROOT / "docs" / "plots"
RUN_PLOTS = ROOT / "bench" / "out" / "plots"
MAX_PANELS = 4
MAX_LINES = 5_000  # of a bench's output kept for its tables
MAX_TABLES = 6
_FIRST = re.compile(r"/s|\bvs\b|ratio|p\d\d|CPU|\u00b5s|us/|\bms\b|result", re.IGNORECASE)
TIMES, DASH = "\u00d7", "\u2013"  # as the docs' tables write "4.11x" and ranges
_NUMBER = re.compile(r"^[-+]?\d[\d,\u202f ]*(?:\.\d+)?\s*(?:x|\u00d7|s|ms|\u00b5s|us|MB|GB|kB|%)?$")


def numeric(cell: str) -> float | None:
    """The number a table cell shows, or None when it is not one number."""
    text = cell.replace("*", "").replace("&nbsp;", "").strip()
    if not _NUMBER.match(text):
        return None
    digits = re.sub(r"[^\d.+-]", "", text.rstrip("x%s\u00b5umMGkB " + TIMES))
    try:
        return float(digits)
    except ValueError:
        return None


def span(cell: str) -> tuple[float, float] | None:
    """(low, high) of a cell showing a number or a range of them (an en dash between)."""
    parts = cell.replace("*", "").split(DASH)
    if len(parts) == 2:
        lo, hi = numeric(parts[0]), numeric(parts[1])
        return None if lo is None or hi is None else (lo, hi)
    v = numeric(cell)
    return None if v is None else (v, v)


def plot_table(bench: str, title: str, head: Sequence[str], rows: Sequence[Sequence[str]],
               columns: Sequence[str] | None = None, out_dir: Path = PLOTS) -> Path | None:
    """Draw the numeric columns of a table (``columns``, or the first MAX_PANELS that are
    numeric) as bar panels into ``out_dir/<bench>.png``; None without matplotlib or data."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return None
    labels = [_label(r[0]) for r in rows]
    panels = []
    for i, name in enumerate(head[1:], start=1):
        if columns is not None and name not in columns:
            continue
        values = [span(r[i]) if i < len(r) else None for r in rows]
        known = {v for v in values if v is not None}
        if known and (len(known) > 1 or len(rows) == 1):  # a constant column tells nothing
            panels.append((name.replace("*", ""), values))
    # the figures a reader compares first (rates, ratios, percentiles, CPU), then the rest
    keep = sorted(range(len(panels)), key=lambda k: (not _FIRST.search(panels[k][0]), k))
    panels = [panels[k] for k in sorted(keep[:MAX_PANELS])]
    if not panels or not rows:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 3.5,
                                                      0.42 * len(rows) + 1.4), squeeze=False)
    for k, (ax, (name, values)) in enumerate(zip(axes[0], panels, strict=True)):
        ys = list(range(len(rows)))[::-1]
        lows = [v[0] if v else 0 for v in values]
        ax.barh(ys, lows, color="#2a7ae2")  # a range: its low end solid, the rest light
        ax.barh(ys, [v[1] - v[0] if v else 0 for v in values], left=lows, color="#a9c8f5")
        for y, v in zip(ys, values, strict=True):
            text = DASH if v is None else _short(v[0]) + (
                f"{DASH}{_short(v[1])}" if v[1] != v[0] else "")
            ax.text(v[1] if v else 0, y, f" {text}", va="center", fontsize=7)
        ax.xaxis.set_major_formatter(FuncFormatter(_axis))
        ax.set_yticks(ys, labels if k == 0 else [""] * len(rows), fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.margins(x=0.25)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{bench}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(cell: str) -> str:
    text = re.sub(r"[*`]|&nbsp;", "", cell).strip()
    return text if len(text) <= 48 else text[:47] + "…"


def _axis(v: float, _pos: object) -> str:
    for size, unit in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:g}{unit}"
    return f"{v:g}"


def _short(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def printed_tables(lines: Sequence[str]) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every markdown or rich table in ``lines``."""
    tables: list[tuple[list[str], list[list[str]]]] = []
    current: list[list[str]] = []
    for line in [*lines, ""]:
        text = line.strip()
        if current and text and re.fullmatch(r"[|:\-\s\u2500-\u257f]+", text):
            continue  # a rule inside a table (markdown's |---|, rich's box lines)
        sep = next((c for c in ("\u2503", "\u2502") if c in text),  # rich: header, rows
                   "|" if text.startswith("|") else None)
        if sep is not None:
            text = text.removeprefix(sep).removesuffix(sep)  # keep an empty first cell
            current.append([c.strip() for c in text.split(sep)])
            continue
        if sep is None and current:
            if len(current) > 1:
                tables.append((current[0], current[1:]))
            current = []
    return tables


class _Tee:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self._partial = ""

    def write(self, text: str) -> int:
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(done)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.out, name)


def plot_rows(bench: str, head: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """For a script that prints an aligned text table: draw ``rows`` now."""
    path = plot_table(bench, f"bench/{bench}.py", [str(h) for h in head],
                      [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r]
                       for r in rows], out_dir=RUN_PLOTS)
    if path is not None:
        print(f"plot: {path}")


def plot_printed_tables(bench: str, out_dir: Path = RUN_PLOTS) -> None:
    """Draw every table the running script prints, when it exits (see the docstring)."""
    tee = _Tee(sys.stdout)
    sys.stdout = tee

    def draw() -> None:
        sys.stdout = tee.out
        for n, (head, rows) in enumerate(printed_tables(tee.lines)[:MAX_TABLES], start=1):
            name = bench if n == 1 else f"{bench}-{n}"
            path = plot_table(name, f"bench/{bench}.py", head, rows, out_dir=out_dir)
            if path is not None:
                print(f"plot: {path}")

    atexit.register(draw)


def markdown_tables(text: str) -> dict[str, tuple[str, list[str], list[list[str]]]]:
    """The first table of each ``## ... (`bench/<name>.py`)`` section: name -> (heading,
    header, rows)."""
    out: dict[str, tuple[str, list[str], list[list[str]]]] = {}
    for section in re.split(r"^(?=## )", text, flags=re.MULTILINE):
        m = re.match(r"## (.*\(`bench/(\w+)\.py[^`]*`\).*)", section)
        tables = printed_tables(section.splitlines()) if m else []
        if m and tables and m.group(2) not in out:
            out[m.group(2)] = (m.group(1), *tables[0])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("doc", type=Path)
    p.add_argument("--out", type=Path, default=PLOTS)
    args = p.parse_args(argv)
    for bench, (heading, head, rows) in markdown_tables(args.doc.read_text()).items():
        path = plot_table(bench, heading, head, rows, out_dir=args.out)
        print(f"{bench}: {path or 'nothing to plot (or no matplotlib)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
