"""The run report: one self-contained HTML page beside its figures.

The page links its figures by relative path (the folder can be moved or
zipped), escapes every string it shows, and needs no network. When loaded it
marks ``<body data-figures-loaded="N">`` with the number of figures the
browser could decode, so a headless browser can check that it renders.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from temflow.analysis.tables import column_units

__all__ = ["write_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { margin-bottom: 0.2rem; } .sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 1rem; margin: 1rem 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; min-width: 9rem; }
.card .v { font-size: 1.5rem; font-weight: 600; } .card .k { color: #666; font-size: 0.85rem; }
.verdict { background: #f4f8ff; border-left: 4px solid #3a6fd8; padding: 0.8rem 1rem; margin: 1rem 0; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var ok = 0;
  document.querySelectorAll('figure img').forEach(function (img) {
    if (img.complete && img.naturalWidth > 0) { ok += 1; }
  });
  document.body.setAttribute('data-figures-loaded', String(ok));
});
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        # no number is no number: a dash, never "nan"
        return f"{value:.4g}" if math.isfinite(value) else "\u2014"
    return str(value)


def _table(frame: pd.DataFrame, max_rows: int = 30) -> str:
    shown = frame.head(max_rows)
    units = column_units(shown.columns)
    head = "".join(
        f"<th>{html.escape(str(c))}" + (f" <span class='unit'>({html.escape(units[str(c)])})</span>" if str(c) in units else "")
        + "</th>"
        for c in shown.columns
    )
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in shown.itertuples(index=False)
    )
    more = f"<p class='sub'>{len(frame) - max_rows} more rows in the parquet file.</p>" if len(frame) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{more}"


def write_report(
    path: str | os.PathLike[str],
    *,
    title: str,
    cards: Mapping[str, Any],
    verdict: str | None = None,
    figures: Sequence[tuple[str, str]] = (),
    tables: Mapping[str, pd.DataFrame] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the HTML report.

    Parameters
    ----------
    path : str or path
        The ``.html`` file to write; figure paths are relative to its folder.
    title : str
        Page title (the movie's name, say).
    cards : mapping
        Headline numbers, label -> value.
    verdict : str, optional
        The coarsening verdict and its evidence, one paragraph.
    figures : sequence of (caption, relative path)
        Figures in order.
    tables : mapping of str to DataFrame, optional
        Small tables (first rows shown).
    notes : sequence of str
        Lines for the provenance footer.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = write_report(pathlib.Path(tempfile.mkdtemp()) / "r.html", title="demo", cards={"particles": 3})
    >>> "demo" in out.read_text()
    True
    """
    out = Path(path)
    if out.suffix != ".html":
        raise ValueError(f"the report must be an .html file; got {str(out)!r}")
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head>",
        "<body data-figures-loaded='0'>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='sub'>temflow report, {html.escape(time.strftime('%Y-%m-%d %H:%M'))}</p>",
        "<div class='cards'>",
    ]
    for key, value in cards.items():
        parts.append(
            f"<div class='card'><div class='v'>{html.escape(_fmt(value))}</div><div class='k'>{html.escape(key)}</div></div>"
        )
    parts.append("</div>")
    if verdict:
        parts.append(f"<div class='verdict' id='verdict'>{html.escape(verdict)}</div>")
    for caption, src in figures:
        parts.append(
            f"<figure><img src='{html.escape(src)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    for name, frame in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_table(frame)}")
    if notes:
        parts.append("<h2>Provenance</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    from temflow._nofollow import write_file

    page = "\n".join(parts).encode("utf-8")
    write_file(out, lambda file: file.write(page))  # never through a symbolic link
    return out
