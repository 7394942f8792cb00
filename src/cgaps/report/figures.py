"""The report's figures as hand-written inline SVG.

Why not matplotlib: the report needs four chart kinds (histogram, bar chart, heatmap, small
multiples of histograms), all of them a few rectangles and labels. Writing the SVG here keeps
the report offline and small (no embedded fonts, no path data for glyphs), makes the output
byte-for-byte deterministic for tests, and spares the project a plotting dependency.

Every function returns :class:`markupsafe.Markup` (already safe to insert into the HTML
template). Every piece of text that can come from the data (benchmark names, titles) goes
through :func:`_esc`, so a benchmark called ``<script>`` cannot break out of the SVG.
Figures carry ``data-*`` attributes (``data-figure``, ``data-median``) so that tests and
scripts can check what is drawn without parsing geometry.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
from markupsafe import Markup

# Colours: one hue per meaning, readable on white and in greyscale print.
BAR = "#4c78a8"
BAR_ALT = "#9c755f"
MEDIAN = "#e45756"
AXIS = "#555"
GRID = "#e6e6e6"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(x: float) -> str:
    """Short tick label: 0.25, 1.5e-03, 12k."""
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e4:
        return f"{x / 1e3:.0f}k"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 0.01:
        return f"{x:.3g}"
    return f"{x:.1e}"


def _n(x: float) -> str:
    """Coordinates with one decimal keep the SVG small and stable."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _svg_open(width: int, height: int, figure: str, title: str, extra: str = "") -> list[str]:
    return [
        f'<svg class="fig" data-figure="{_esc(figure)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_esc(title)}" style="{FONT}"{extra}>',
        f"<title>{_esc(title)}</title>",
    ]


def histogram(
    values: Sequence[float] | np.ndarray,
    *,
    figure: str,
    title: str,
    xlabel: str,
    bins: int = 40,
    value_range: tuple[float, float] | None = None,
    log_y: bool = False,
    median: bool = False,
    width: int = 520,
    height: int = 260,
    color: str = BAR,
) -> Markup:
    """A histogram of the finite ``values``; ``median=True`` draws and labels the median.

    With ``log_y`` the bar heights are log10(count) (a count of 1 still shows as a short bar),
    which is how the paper shows the long right tail of χ_bench.
    """
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    small = width < 400
    ml, mr, mt, mb = (38, 8, 22, 34) if small else (52, 12, 28, 42)
    pw, ph = width - ml - mr, height - mt - mb
    med = float(np.median(v)) if median and v.size else None
    extra = f' data-median="{med:.6g}"' if med is not None else ""
    extra += f' data-n="{v.size}"'
    out = _svg_open(width, height, figure, title, extra)
    fs_title, fs = (11, 9) if small else (13, 11)
    out.append(
        f'<text x="{ml}" y="{fs_title + 4}" font-size="{fs_title}" font-weight="600">{_esc(title)}</text>'
    )
    if v.size == 0:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" font-size="{fs}" text-anchor="middle" fill="{AXIS}">'
            "no values (the concepts never fire here)</text></svg>"
        )
        return Markup("".join(out))
    lo, hi = value_range if value_range is not None else (float(v.min()), float(v.max()))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    cmax = int(counts.max())
    if log_y:
        # The floor 10**-0.3 lets a single concept show as a visible bar above the axis.
        floor = -0.3
        top = math.log10(max(cmax, 1)) * 1.05 + 0.05

        def yof(c: float) -> float:
            return mt + ph - ph * (math.log10(c) - floor) / (top - floor) if c > 0 else mt + ph

        yticks = [10**k for k in range(0, int(math.floor(top)) + 1)]
    else:
        top = cmax * 1.05 or 1

        def yof(c: float) -> float:
            return mt + ph - ph * c / top

        yticks = [t for t in _nice_ticks(0, top, 4) if t == int(t)]

    def xof(x: float) -> float:
        return ml + pw * (x - lo) / (hi - lo)

    for t in yticks:
        y = yof(t)
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{_n(y)}" y2="{_n(y)}" stroke="{GRID}"/>')
        out.append(
            f'<text x="{ml - 4}" y="{_n(y + 3)}" font-size="{fs}" text-anchor="end" fill="{AXIS}">'
            f"{_fmt(t)}</text>"
        )
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        if c == 0:
            continue
        x0, x1, y = xof(a), xof(b), yof(c)
        out.append(
            f'<rect x="{_n(x0)}" y="{_n(y)}" width="{_n(max(x1 - x0 - 0.5, 0.5))}" height="{_n(mt + ph - y)}" '
            f'fill="{color}"><title>{_fmt(a)}–{_fmt(b)}: {c} concepts</title></rect>'
        )
    out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" stroke="{AXIS}"/>')
    for t in _nice_ticks(lo, hi, 3 if small else 5):
        x = xof(t)
        out.append(f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="{AXIS}"/>')
        out.append(
            f'<text x="{_n(x)}" y="{mt + ph + 4 + fs}" font-size="{fs}" text-anchor="middle" '
            f'fill="{AXIS}">{_fmt(t)}</text>'
        )
    out.append(
        f'<text x="{ml + pw / 2}" y="{height - 4}" font-size="{fs}" text-anchor="middle">{_esc(xlabel)}</text>'
    )
    ylabel = "concepts (log)" if log_y else "concepts"
    out.append(
        f'<text transform="translate({fs + 1},{mt + ph / 2}) rotate(-90)" font-size="{fs}" '
        f'text-anchor="middle">{ylabel}</text>'
    )
    if med is not None:
        x = xof(med)
        anchor = "end" if x > ml + pw * 0.75 else "start"
        dx = -3 if anchor == "end" else 3
        out.append(
            f'<line class="median" x1="{_n(x)}" x2="{_n(x)}" y1="{mt}" y2="{mt + ph}" stroke="{MEDIAN}" '
            'stroke-width="2" stroke-dasharray="4 2"/>'
        )
        out.append(
            f'<text x="{_n(x + dx)}" y="{mt + fs}" font-size="{fs}" text-anchor="{anchor}" fill="{MEDIAN}">'
            f"median {med:.3f}</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    figure: str,
    title: str,
    xlabel: str,
    highlight: Sequence[bool] | None = None,
    value_fmt: str = "{:.1f}%",
    width: int = 620,
) -> Markup:
    """Horizontal bars, one per label, value printed at the bar's end; ``highlight`` recolours some bars."""
    n = len(labels)
    row = 22
    longest = max((len(str(label)) for label in labels), default=4)
    ml = min(12 + 7 * longest, 220)
    mr, mt, mb = 60, 30, 34
    height = mt + mb + row * max(n, 1)
    pw = width - ml - mr
    out = _svg_open(width, height, figure, title)
    out.append(f'<text x="8" y="17" font-size="13" font-weight="600">{_esc(title)}</text>')
    vmax = max([float(v) for v in values if math.isfinite(v)] + [1e-9])
    for t in _nice_ticks(0, vmax, 4):
        x = ml + pw * t / vmax
        if x > ml + pw + 0.5:
            continue
        out.append(f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{mt}" y2="{mt + row * n}" stroke="{GRID}"/>')
        out.append(
            f'<text x="{_n(x)}" y="{mt + row * n + 14}" font-size="11" text-anchor="middle" '
            f'fill="{AXIS}">{_fmt(t)}</text>'
        )
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = mt + i * row
        color = BAR_ALT if highlight is not None and highlight[i] else BAR
        w = pw * v / vmax if math.isfinite(v) else 0
        out.append(f'<text x="{ml - 6}" y="{y + 15}" font-size="11" text-anchor="end">{_esc(label)}</text>')
        out.append(
            f'<rect x="{ml}" y="{y + 3}" width="{_n(max(w, 0.5))}" height="{row - 6}" fill="{color}">'
            f"<title>{_esc(label)}: {_esc(value_fmt.format(v))}</title></rect>"
        )
        out.append(
            f'<text x="{_n(ml + w + 4)}" y="{y + 15}" font-size="11">{_esc(value_fmt.format(v))}</text>'
        )
    out.append(
        f'<text x="{ml + pw / 2}" y="{height - 4}" font-size="11" text-anchor="middle">{_esc(xlabel)}</text>'
    )
    out.append("</svg>")
    return Markup("".join(out))


def _seq_color(t: float) -> str:
    """White → dark blue for t in [0, 1]."""
    t = min(max(t, 0.0), 1.0)
    r, g, b = (round(255 + (a - 255) * t) for a in (8, 69, 148))
    return f"#{r:02x}{g:02x}{b:02x}"


def _div_color(t: float) -> str:
    """Red (−1) → white (0) → blue (+1)."""
    t = min(max(t, -1.0), 1.0)
    end = (33, 102, 172) if t >= 0 else (178, 24, 43)
    r, g, b = (round(255 + (a - 255) * abs(t)) for a in end)
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    names: Sequence[str],
    matrix: np.ndarray,
    *,
    figure: str,
    title: str,
    diverging: bool = False,
    cell: int = 46,
) -> Markup:
    """A square matrix with the value printed in every cell (NaN cells are grey with '–').

    Sequential colours for [0, 1] quantities (Jaccard), diverging ones for correlations.
    """
    n = len(names)
    longest = max((len(str(s)) for s in names), default=4)
    ml = min(14 + 7 * longest, 200)
    mt = 30 + min(6 * longest, 150)  # rotated column labels
    # Wide enough for the title too (about 8 px per character, bold 13 px).
    width, height = max(ml + n * cell + 12, int(16 + 8 * len(title))), mt + n * cell + 12
    out = _svg_open(width, height, figure, title)
    out.append(f'<text x="8" y="17" font-size="13" font-weight="600">{_esc(title)}</text>')
    for i, name in enumerate(names):
        y = mt + i * cell + cell / 2 + 4
        out.append(f'<text x="{ml - 6}" y="{_n(y)}" font-size="11" text-anchor="end">{_esc(name)}</text>')
        x = ml + i * cell + cell / 2 + 4
        out.append(
            f'<text transform="translate({_n(x)},{mt - 6}) rotate(-60)" font-size="11">{_esc(name)}</text>'
        )
    for i in range(n):
        for j in range(n):
            v = float(matrix[i, j])
            x, y = ml + j * cell, mt + i * cell
            if math.isfinite(v):
                fill = _div_color(v) if diverging else _seq_color(v)
                dark = abs(v) > 0.55
                label = f"{v:.2f}"
            else:
                fill, dark, label = "#ddd", False, "–"
            tip = f"{names[i]} × {names[j]}: {label}"
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
                f"<title>{_esc(tip)}</title></rect>"
            )
            out.append(
                f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" font-size="11" text-anchor="middle" '
                f'fill="{"#fff" if dark else "#222"}">{label}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))
