"""``rollguard report``: one deployment's story from the coordinator's stored events.

``build_report(deployment, events, hosts, generated=...)`` turns what the API returns
into a :class:`Report`; ``render(report, fmt)`` writes it as a self-contained HTML page
(with an inline SVG chart), Markdown or JSON. All pure, so tests feed them data.
"""

from __future__ import annotations

import json
from typing import Final, Literal

from coordinator.report.html import render_html
from coordinator.report.markdown import render_markdown
from coordinator.report.model import Report, build_report, report_json
from coordinator.report.svg import chart_svg

Format = Literal["html", "md", "json"]
FORMATS: Final = ("html", "md", "json")
EXTENSIONS: Final = {"html": "html", "md": "md", "json": "json"}


def render(report: Report, fmt: Format) -> str:
    if fmt == "html":
        return render_html(report)
    if fmt == "md":
        return render_markdown(report)
    return json.dumps(report_json(report), indent=2, sort_keys=False) + "\n"


__all__ = [
    "FORMATS",
    "Format",
    "Report",
    "build_report",
    "chart_svg",
    "render",
    "render_html",
    "render_markdown",
    "report_json",
]
