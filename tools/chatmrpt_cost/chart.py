"""The cost report as a bar chart (SVG, no plotting library): per environment, the monthly
cost now and with the Auto Scaling group at its maximum, and the environment's monthly
budget (its yearly budget / 12) as a line across its bars.

Every bar and budget line carries `data-environment`, `data-series` (now, max, budget) and
`data-value` (dollars per month), so what the picture shows can be read back and checked.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

WIDTH_PER_ENV = 220
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 50, 60
PLOT_HEIGHT = 280
BAR = 60
COLOURS = {"now": "#4878a8", "max": "#a8c4e0", "budget": "#c0392b"}
LABELS = {"now": "now (ASG at desired)", "max": "ASG at maximum", "budget": "budget / 12"}


def _money(value: float) -> str:
    return f"${value:,.0f}"


def chart_svg(report: dict) -> str:
    environments = report["environments"]
    values = [(e["environment"], e["monthly"]["desired"], e["monthly"]["max"], e["budget_yearly"] / 12)
              for e in environments]
    top = max(max(now, at_max, budget) for _n, now, at_max, budget in values) * 1.15 or 1.0
    width = LEFT + RIGHT + WIDTH_PER_ENV * len(values)
    height = TOP + PLOT_HEIGHT + BOTTOM
    base = TOP + PLOT_HEIGHT

    def y(value: float) -> float:
        return round(base - value / top * PLOT_HEIGHT, 2)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<title>ChatMRPT monthly cost per environment (prices of {escape(report["prices"]["region"])} '
           f'as of {escape(str(report["prices"]["as_of"]))})</title>',
           f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">ChatMRPT monthly cost per environment</text>']
    # The value axis: 5 ticks.
    for i in range(6):
        value = top * i / 5
        out.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y(value)}" y2="{y(value)}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(value) + 4}" text-anchor="end">{_money(value)}</text>')
    for index, (name, now, at_max, budget) in enumerate(values):
        x0 = LEFT + WIDTH_PER_ENV * index + (WIDTH_PER_ENV - 2 * BAR - 10) / 2
        for series, value, x in (("now", now, x0), ("max", at_max, x0 + BAR + 10)):
            out.append(f'<rect data-environment="{escape(name)}" data-series="{series}" data-value="{value:.2f}" '
                       f'x="{x}" y="{y(value)}" width="{BAR}" height="{round(base - y(value), 2)}" '
                       f'fill="{COLOURS[series]}"><title>{escape(name)}, {LABELS[series]}: '
                       f'{_money(value)} a month</title></rect>')
            out.append(f'<text x="{x + BAR / 2}" y="{y(value) - 4}" text-anchor="middle">{_money(value)}</text>')
        out.append(f'<line data-environment="{escape(name)}" data-series="budget" data-value="{budget:.2f}" '
                   f'x1="{x0 - 10}" x2="{x0 + 2 * BAR + 20}" y1="{y(budget)}" y2="{y(budget)}" '
                   f'stroke="{COLOURS["budget"]}" stroke-width="2" stroke-dasharray="6 3">'
                   f'<title>{escape(name)}, budget: {_money(budget)} a month</title></line>')
        out.append(f'<text x="{x0 + BAR + 5}" y="{base + 20}" text-anchor="middle" font-weight="bold">'
                   f'{escape(name)}</text>')
    for i, series in enumerate(("now", "max", "budget")):
        x = LEFT + 160 * i
        out.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{COLOURS[series]}"/>')
        out.append(f'<text x="{x + 16}" y="{height - 12}">{LABELS[series]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
