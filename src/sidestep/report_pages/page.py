"""The frame every report page shares: one static HTML file, its style inline, its files by relative path (so the
page still works after the folder is moved or copied), written under a temporary name and renamed."""

import html
import time
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import quote

from sidestep.atomic import atomic_file

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; } h3 { font-size: 1em; }
table { border-collapse: collapse; } td, th { padding: .25em .7em; border-bottom: 1px solid #eee; text-align: left;
  vertical-align: top; }
th { background: #f6f6f6; } .num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: .1em .3em; border-radius: 3px; } .cmd { user-select: all; }
.state { padding: .1em .5em; border-radius: 3px; color: white; background: #777; font-size: .85em; }
.finished { background: #2a7d2a; } .running { background: #2060b0; } .stopped { background: #b07a10; }
.failed { background: #b02020; } .reason { color: #b02020; } .best { font-weight: bold; background: #fff7d6; }
.row { display: flex; flex-wrap: wrap; gap: .8em; padding-bottom: .5em; }
figure { margin: 0; min-width: 250px; max-width: 300px; border: 1px solid #e4e4e4; border-radius: 4px; padding: .4em; }
figure.base { background: #f7f7f7; } figure.mini { min-width: 200px; margin-bottom: .3em; }
figcaption { font-size: .85em; margin-bottom: .3em; }
figure img { width: 100%; height: 80px; display: block; margin-top: .3em; } audio { width: 100%; }
.meta { color: #666; font-size: .85em; } img.chart { max-width: 100%; }
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def href(path: Path) -> str:
    """A relative path as a URL: forward slashes, spaces and other characters escaped."""
    return quote(Path(path).as_posix())


def state_badge(state: str, error: Optional[str] = None) -> str:
    badge = f'<span class="state {esc(state)}">{esc(state)}</span>'
    return badge + (f' <span class="reason">{esc(error)}</span>' if error else "")


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], row_classes: Iterable[str] = ()) -> str:
    """Cells are HTML already (escape text with `esc`)."""
    classes = list(row_classes)
    head = "".join(f"<th>{h}</th>" for h in headers)
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = "".join(f'<tr class="{classes[i] if i < len(classes) else ""}">' + "".join(f"<td>{c}</td>" for c in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f"<table>{head}<tbody>{body}</tbody></table>"


def write_page(path: Path, title: str, body: str) -> Path:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    document = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
                f'<body>{body}<p class="meta">Written {stamp} by Side-Step; '
                f"<code>python -m sidestep.report &lt;this folder&gt;</code> writes it again.</p></body></html>\n")
    with atomic_file(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return path
