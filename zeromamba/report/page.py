"""The report page: one static HTML file, its pictures in a folder beside it.

No scripts, no fonts or styles from the network: a browser opens it from disk as it is. Every
text that comes from the run (class, dataset and file names, configuration values) is
HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the in-run baselines' display names (results.json's "baseline" block)
BASELINE_NAMES = {
    "eszsl_pixels": "ESZSL on pixels (baseline)",
    "eszsl_features": "ESZSL on features (baseline)",
}
METRIC_COLUMNS = (("czsl", "CZSL"), ("S", "S"), ("U", "U"), ("H", "H"), ("ausuc", "AUSUC"))


@dataclass
class Figure:
    """A picture of the page: ``src`` relative to the page's folder."""

    src: str
    caption: str


@dataclass
class Section:
    title: str
    text: str = ""  # plain text, escaped on rendering
    figures: list[Figure] = field(default_factory=list)


@dataclass
class MetricsRow:
    name: str
    values: dict[str, float | None]  # METRIC_COLUMNS keys, percent
    gamma: float | None = None
    note: str = ""


def metrics_rows(results: Mapping[str, Any]) -> list[MetricsRow]:
    """The metrics table of a run's ``results.json``: ours on the test splits, ours on
    validation (when the run selected on it), then each in-run baseline of the ``baseline``
    block (absent: no baseline rows)."""
    rows = [
        MetricsRow(
            "ZeroMamba, test",
            {k: results.get(k) for k, _ in METRIC_COLUMNS},
            results.get("gamma"),
            _epochs_note(results.get("epochs")),
        )
    ]
    val = results.get("validation")
    if isinstance(val, Mapping):
        rows.append(
            MetricsRow(
                "ZeroMamba, validation",
                {k: val.get(k) for k, _ in METRIC_COLUMNS},
                results.get("gamma"),
                "validation classes: model and gamma selection",
            )
        )
    baseline = results.get("baseline")
    if isinstance(baseline, Mapping):
        for key, b in baseline.items():
            if not isinstance(b, Mapping):
                continue
            hyper = b.get("hyper")
            note = ""
            if isinstance(hyper, Mapping) and hyper:
                note = ", ".join(f"{k} {_fmt_value(v)}" for k, v in hyper.items())
            rows.append(
                MetricsRow(
                    BASELINE_NAMES.get(key, key),
                    {k: b.get(k) for k, _ in METRIC_COLUMNS},
                    b.get("gamma"),
                    note,
                )
            )
    return rows


def _epochs_note(epochs: Any) -> str:
    if isinstance(epochs, Mapping) and epochs:
        return "epochs: " + ", ".join(f"{k} {v}" for k, v in epochs.items())
    return ""


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _num(v: Any, digits: int = 2) -> str:
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return f"{v:.{digits}f}"
    return "–"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d232a; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d5d9de; }
p.sub { color: #555; margin: 0 0 14px; }
p.text { max-width: 900px; line-height: 1.45; }
table { border-collapse: collapse; background: white; font-size: 0.92em; }
th, td { padding: 5px 10px; border: 1px solid #d5d9de; text-align: right; }
th { background: #eef0f3; }
td.name, th.name, td.note { text-align: left; }
td.note { color: #555; font-size: 0.9em; }
tr.ours td { font-weight: 600; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 8px 0; }
dl.meta dt { color: #555; } dl.meta dd { margin: 0; }
figure { margin: 12px 0 22px; background: white; padding: 10px; border: 1px solid #d5d9de;
         display: inline-block; max-width: calc(100% - 22px); }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #444; font-size: 0.9em; margin-top: 6px; max-width: 900px; }
nav a { margin-right: 14px; }
details pre { background: white; border: 1px solid #d5d9de; padding: 10px; overflow-x: auto; }
"""


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def render(
    title: str,
    subtitle: str,
    meta: Sequence[tuple[str, str]],
    rows: Sequence[MetricsRow],
    sections: Sequence[Section],
    config: Mapping[str, Any] | None,
    metrics_note: str = "",
) -> str:
    """The page's HTML. ``meta``: (label, value) lines under the title; ``rows``: the metrics
    table; ``sections``: text and pictures in order; ``config``: shown last, folded."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        f'<p class="sub">{e(subtitle)}</p>',
        '<dl class="meta">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in meta) + "</dl>",
        "<nav>"
        + '<a href="#metrics">metrics</a>'
        + "".join(f'<a href="#{_anchor(s.title)}">{e(s.title)}</a>' for s in sections)
        + ('<a href="#configuration">configuration</a>' if config is not None else "")
        + "</nav>",
        '<h2 id="metrics">Metrics</h2>',
        "<table><tr><th class='name'></th>"
        + "".join(f"<th>{e(label)}</th>" for _, label in METRIC_COLUMNS)
        + "<th>gamma</th><th class='name'>note</th></tr>",
    ]
    for r in rows:
        cls = ' class="ours"' if r.name.startswith("ZeroMamba, test") else ""
        out.append(
            f"<tr{cls}><td class='name'>{e(r.name)}</td>"
            + "".join(f"<td>{_num(r.values.get(k))}</td>" for k, _ in METRIC_COLUMNS)
            + f"<td>{_num(r.gamma, 3)}</td><td class='note'>{e(r.note)}</td></tr>"
        )
    out.append("</table>")
    if metrics_note:
        out.append(f'<p class="text">{e(metrics_note)}</p>')
    for s in sections:
        out.append(f'<h2 id="{_anchor(s.title)}">{e(s.title)}</h2>')
        if s.text:
            out.append(f'<p class="text">{e(s.text)}</p>')
        for f in s.figures:
            out.append(
                f'<figure><a href="{e(f.src)}"><img src="{e(f.src)}" alt="{e(f.caption)}" '
                f'loading="lazy"></a><figcaption>{e(f.caption)}</figcaption></figure>'
            )
    if config is not None:
        out.append('<h2 id="configuration">Configuration</h2>')
        out.append(
            "<details open><summary>the run's settings (config.json)</summary><pre>"
            + e(json.dumps(config, indent=2, default=str))
            + "</pre></details>"
        )
    out.append("</main></body></html>\n")
    return "\n".join(out)


def referenced_files(page: str) -> list[str]:
    """Every ``src=`` and ``href=`` target of a page except in-page anchors (for checks)."""
    import re

    return [
        html.unescape(m)
        for m in re.findall(r'(?:src|href)="([^"]*)"', page)
        if not m.startswith("#")
    ]


def missing_files(page_path: str | os.PathLike) -> list[str]:
    """The page's referenced files that do not exist beside it (empty when all do)."""
    page_path = Path(page_path)
    text = page_path.read_text(encoding="utf-8")
    return [ref for ref in referenced_files(text) if not (page_path.parent / ref).is_file()]
