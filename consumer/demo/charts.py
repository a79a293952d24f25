"""A self-contained HTML report: text, tables and charts drawn as inline SVG by the small
functions below (no JavaScript, no network, no plotting library), so the file opens
anywhere, is diffable, and can be mailed.

>>> r = Report("demo")
>>> r.add_table("tiers", ["tier", "users"], [["vip", 3]])
>>> r.add_chart("trend", stacked_area([0, 86_400_000], {"vip": [1, 2]}, {"vip": "#e15759"}))
>>> page = r.html()
>>> page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

__all__ = ["PALETTE", "Report", "heatmap", "nice_ticks", "stacked_area", "tier_colors"]

#: Colours for ordered tiers, lowest first: greys to blues to warm (colour-blind safe
#: enough for 4-6 tiers; Tableau 10 hues).
PALETTE: Final = ("#bab0ac", "#4e79a7", "#59a14f", "#f28e2b", "#e15759", "#b07aa1", "#76b7b2")
_FONT: Final = "font-family='system-ui, sans-serif' font-size='11'"

_CSS: Final = """
body { font-family: system-ui, -apple-system, sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
p.note, figcaption { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; font-weight: 600; }
figure { margin: 0.8em 0; }
"""


def tier_colors(tiers: Sequence[str]) -> dict[str, str]:
    """A colour per tier, lowest first.

    >>> tier_colors(["dormant", "vip"])
    {'dormant': '#bab0ac', 'vip': '#4e79a7'}
    """
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tiers)}


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``, about ``count`` of them.

    >>> nice_ticks(4321), nice_ticks(0.9)
    ([0, 1000, 2000, 3000, 4000, 5000], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    """
    if top <= 0:
        return [0, 1]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    if step >= 1:
        return [int(i * step) for i in range(n + 1)]
    return [round(i * step, 10) for i in range(n + 1)]


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def stacked_area(
    times_ms: Sequence[int],
    series: Mapping[str, Sequence[float]],
    colors: Mapping[str, str],
    *,
    width: int = 900,
    height: int = 320,
    y_label: str = "users",
) -> str:
    """A stacked area chart (first series at the bottom) over event time, as SVG."""
    left, right, top, bottom = 56, 130, 12, 34
    w, h = width - left - right, height - top - bottom
    n = len(times_ms)
    names = list(series)
    totals = [sum(series[s][i] for s in names) for i in range(n)]
    ticks = nice_ticks(max(totals, default=0))
    y_max = ticks[-1] or 1
    t0, t1 = (times_ms[0], times_ms[-1]) if n else (0, 1)
    span = (t1 - t0) or 1

    def x(i: int) -> float:
        return left + (times_ms[i] - t0) / span * w

    def y(v: float) -> float:
        return top + h - v / y_max * h

    parts = [_svg_open(width, height, "stacked area chart")]
    for t in ticks:
        parts.append(
            f"<line x1='{left}' x2='{left + w}' y1='{_num(y(t))}' y2='{_num(y(t))}' "
            "stroke='#e5e5e5'/>"
            f"<text x='{left - 6}' y='{_num(y(t) + 4)}' text-anchor='end' {_FONT}>{t:,}</text>"
        )
    below = [0.0] * n
    for name in names:
        above = [below[i] + series[name][i] for i in range(n)]
        if n:
            upper = " ".join(f"{_num(x(i))},{_num(y(above[i]))}" for i in range(n))
            lower = " ".join(f"{_num(x(i))},{_num(y(below[i]))}" for i in reversed(range(n)))
            parts.append(
                f"<polygon points='{upper} {lower}' fill='{colors.get(name, '#999')}' "
                f"fill-opacity='0.9'><title>{html.escape(name)}</title></polygon>"
            )
        below = above
    parts.extend(_month_ticks(times_ms, x, top + h))
    parts.append(
        f"<text transform='translate(14,{top + h / 2}) rotate(-90)' text-anchor='middle' "
        f"{_FONT}>{html.escape(y_label)}</text>"
    )
    for k, name in enumerate(reversed(names)):
        ly = top + 8 + 18 * k
        parts.append(
            f"<rect x='{left + w + 14}' y='{ly}' width='12' height='12' "
            f"fill='{colors.get(name, '#999')}'/>"
            f"<text x='{left + w + 32}' y='{ly + 10}' {_FONT}>{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _month_ticks(times_ms: Sequence[int], x: Callable[[int], float], baseline: float) -> list[str]:
    """Ticks at the first sample of each month (UTC); the first and January's say the year."""
    out: list[str] = []
    seen: set[tuple[int, int]] = set()
    for i, t in enumerate(times_ms):
        d = datetime.fromtimestamp(t / 1000, UTC)
        key = (d.year, d.month)
        if key in seen:
            continue
        seen.add(key)
        px = _num(x(i))
        label = d.strftime("%b %Y" if d.month == 1 or len(seen) == 1 else "%b")
        out.append(
            f"<line x1='{px}' x2='{px}' y1='{baseline}' y2='{baseline + 5}' stroke='#666'/>"
            f"<text x='{px}' y='{baseline + 18}' text-anchor='middle' {_FONT}>{label}</text>"
        )
    return out


def heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    row_title: str = "",
    column_title: str = "",
    cell: int = 64,
    scale: str = "all",
) -> str:
    """A table of numbers as coloured cells, as SVG.

    ``scale``: ``"all"`` shades counts against the largest (square-root scale, so small
    counts stay visible), ``"row"`` against their row's total (shares of a row),
    ``"diverging"`` signed values blue (negative) to red (positive) around 0.
    """
    label_w = max((len(r) for r in rows), default=4) * 7 + 24
    top = 44
    ch = cell // 2
    width = label_w + cell * len(columns) + 10
    height = top + ch * len(rows) + 10
    peak = max((abs(v) for row in values for v in row), default=0) or 1
    parts = [_svg_open(width, height, "heatmap")]
    if column_title:
        parts.append(
            f"<text x='{label_w + cell * len(columns) / 2}' y='12' text-anchor='middle' "
            f"{_FONT} fill='#555'>{html.escape(column_title)}</text>"
        )
    if row_title:
        parts.append(
            f"<text x='4' y='{top - 6}' {_FONT} fill='#555'>{html.escape(row_title)}</text>"
        )
    for j, c in enumerate(columns):
        parts.append(
            f"<text x='{label_w + cell * j + cell / 2}' y='{top - 8}' text-anchor='middle' "
            f"{_FONT} font-weight='600'>{html.escape(c)}</text>"
        )
    for i, r in enumerate(rows):
        ry = top + ch * i
        parts.append(
            f"<text x='{label_w - 8}' y='{ry + ch / 2 + 4}' text-anchor='end' {_FONT} "
            f"font-weight='600'>{html.escape(r)}</text>"
        )
        row_total = sum(values[i]) or 1
        for j, v in enumerate(values[i]):
            if scale == "diverging":
                level = min(1.0, abs(v) / peak)
                fill = _blend("#ffffff", "#b2182b" if v > 0 else "#2166ac", level)
                text = f"{v:+.2f}"
            else:
                level = v / row_total if scale == "row" else math.sqrt(v / peak)
                fill = _blend("#ffffff", "#08519c", level)
                text = f"{v:,.0f}"
            ink = "#fff" if level > 0.55 else "#222"
            cx = label_w + cell * j
            parts.append(
                f"<rect x='{cx}' y='{ry}' width='{cell - 2}' height='{ch - 2}' fill='{fill}' "
                f"stroke='#ddd'><title>{html.escape(r)} / {html.escape(c)}: {text}</title></rect>"
                f"<text x='{cx + (cell - 2) / 2}' y='{ry + ch / 2 + 3}' text-anchor='middle' "
                f"{_FONT} fill='{ink}'>{text}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _blend(a: str, b: str, t: float) -> str:
    """The colour ``t`` of the way from ``a`` to ``b``.

    >>> _blend("#000000", "#ffffff", 0.5)
    '#808080'
    """
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(p + (q - p) * t):02x}" for p, q in zip(ca, cb, strict=True))


def _svg_open(width: int, height: int, label: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='{label}'>"
    )


class Report:
    """Sections appended in order, rendered as one HTML page."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._body: list[str] = []

    def add_facts(self, facts: Sequence[tuple[str, str]]) -> None:
        """A two-column list of labelled figures."""
        items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts)
        self._body.append(f"<dl class='facts'>{items}</dl>")

    def add_heading(self, text: str, note: str = "") -> None:
        """A section heading, with an optional explanatory note."""
        self._body.append(f"<h2>{html.escape(text)}</h2>")
        if note:
            self._body.append(f"<p class='note'>{html.escape(note)}</p>")

    def add_chart(self, caption: str, svg: str) -> None:
        """An SVG figure with its caption."""
        self._body.append(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>")

    def add_table(
        self, caption: str, header: Sequence[str], rows: Sequence[Sequence[object]]
    ) -> None:
        """A table; numbers are formatted with thousands separators."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._body.append(
            f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )

    def add_text(self, text: str) -> None:
        """A paragraph of plain text."""
        self._body.append(f"<p>{html.escape(text)}</p>")

    def html(self) -> str:
        """The whole page."""
        sub = f"<p class='note'>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>{sub}{''.join(self._body)}</body></html>\n"
        )


def _cell(v: object) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)
