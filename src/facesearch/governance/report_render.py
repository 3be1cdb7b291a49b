"""The transparency report laid out for people: the headline figures, HTML with bar charts,
PDF, or JSON (:func:`render`); the figures are :mod:`facesearch.governance.report`'s."""

from __future__ import annotations

import html
import io
import textwrap
import time
from collections.abc import Sequence

from facesearch.errors import InvalidParameterError
from facesearch.governance.report import (
    Tally,
    TransparencyReport,
)


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _period(r: TransparencyReport) -> str:
    return f"{_day(r.period_start)} to {_day(r.period_end)} (local time, end excluded)"


def headline(r: TransparencyReport) -> list[tuple[str, str]]:
    """The report's key figures as (label, value) rows."""
    reviewed = sum(t.count for t in r.review_outcomes if t.label != "never reviewed")
    live = sum(t.count for t in r.stream_review_outcomes)
    live_reviewed = sum(t.count for t in r.stream_review_outcomes
                        if t.label != "never reviewed")
    return [
        ("Searches", f"{r.searches:,}"),
        ("Refused searches", f"{r.refusals:,}"),
        ("Candidates returned", f"{r.candidates_returned:,}"),
        ("Searches with at least one candidate", f"{r.searches_with_candidates:,}"),
        ("Candidates reviewed", f"{reviewed:,} of {r.candidates_returned:,}"),
        ("Live-stream searches / matches", f"{r.stream_searches:,} / {r.stream_matches:,}"),
        ("Live matches reviewed", f"{live_reviewed:,} of {live:,}"),
        ("Faces erased", (f"{r.faces_erased:,} (in {r.erasure_requests:,} erasure"
                          f"{'' if r.erasure_requests == 1 else 's'})")),
        ("Keys issued / revoked", (f"{sum(t.count for t in r.keys_issued_by_role):,} / "
                                   f"{sum(t.count for t in r.keys_revoked_by_role):,}")),
        ("Policy changes", f"{r.policy_changes:,}"),
        ("Search-volume alerts", f"{r.volume_alerts:,}"),
        ("Audit events in the period", f"{r.audit_events:,}"),
        ("Audit trail intact", "yes" if r.audit_chain_ok else "NO: tampering detected"),
    ]


CHARTS: tuple[tuple[str, str], ...] = (
    ("searches_by_kind", "Searches by kind"),
    ("searches_by_purpose", "Searches by stated purpose"),
    ("searches_by_collection", "Searches by collection"),
    ("refusals_by_reason", "Refused searches by rule"),
    ("review_outcomes", "Review outcomes of candidates returned"),
    ("stream_matches_by_collection", "Live-stream matches by watchlist"),
    ("stream_review_outcomes", "Review outcomes of live-stream matches"),
    ("faces_erased_by_reason", "Faces erased by reason"),
    ("keys_issued_by_role", "Access keys issued by role"),
    ("keys_revoked_by_role", "Access keys revoked by role"),
)
"""The report's charts: (field, title)."""

_BAR = "#1d4f91"


def _svg_bars(rows: Sequence[Tally]) -> str:
    """A horizontal bar chart as inline SVG (every text escaped)."""
    if not any(t.count for t in rows):
        return '<p class="none">None in this period.</p>'
    top = max(max(t.count for t in rows), 1)
    h, label_w, bar_w = 26, 260, 320
    height = h * len(rows) + 4
    described = html.escape(", ".join(f"{t.label}: {t.count}" for t in rows))
    out = [(f'<svg class="chart" role="img" viewBox="0 0 {label_w + bar_w + 80} {height}" '
            f'width="{label_w + bar_w + 80}" height="{height}" aria-label="{described}">')]
    for i, t in enumerate(rows):
        y = i * h + 2
        w = 0 if t.count == 0 else max(2, round(bar_w * t.count / top))
        label = t.label if len(t.label) <= 40 else t.label[:39] + "\u2026"
        out.append(f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
                   f'{html.escape(label)}</text>'
                   f'<rect x="{label_w}" y="{y + 4}" width="{w}" height="{h - 8}" '
                   f'fill="{_BAR}"/>'
                   f'<text x="{label_w + w + 6}" y="{y + 17}">{t.count:,}</text>')
    out.append("</svg>")
    return "".join(out)


def _table(rows: Sequence[Tally]) -> str:
    if not rows:
        return ""
    body = "".join(f"<tr><td>{html.escape(t.label)}</td><td class=\"n\">{t.count:,}</td></tr>"
                   for t in rows)
    return f'<table class="data"><thead><tr><th scope="col">Category</th>' \
           f'<th scope="col">Count</th></tr></thead><tbody>{body}</tbody></table>'


_CSS = """
body{font-family:system-ui,"DejaVu Sans",Arial,sans-serif;color:#1b1b1b;max-width:960px;
margin:2rem auto;padding:0 1rem;line-height:1.5}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;
border-bottom:2px solid #1d4f91}
.period{color:#4a4f55}.facts{border-collapse:collapse;margin:1rem 0}
.facts th{text-align:left;font-weight:600;padding:.3rem 1.5rem .3rem 0}
.facts td{padding:.3rem 0;font-variant-numeric:tabular-nums}
table.data{border-collapse:collapse;margin:.5rem 0 1rem}
table.data th,table.data td{border:1px solid #b1b4b6;padding:.25rem .6rem;text-align:left}
table.data td.n{text-align:right;font-variant-numeric:tabular-nums}
svg.chart{max-width:100%;height:auto;font-size:13px}svg.chart text{fill:#1b1b1b}
.none{color:#4a4f55}.notes li{margin:.3rem 0}.bad{color:#b3261e;font-weight:700}
"""


def render_html(r: TransparencyReport) -> str:
    """The report as one self-contained HTML page (inline style and SVG charts; no script,
    nothing fetched). Every text from the trail is escaped."""
    facts = "".join(f"<tr><th scope=\"row\">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in headline(r))
    sections = []
    for name, title in CHARTS:
        rows: list[Tally] = getattr(r, name)
        table = _table(rows) if any(t.count for t in rows) else ""
        sections.append(f"<section><h2>{html.escape(title)}</h2>{_svg_bars(rows)}"
                        f"{table}</section>")
    chain = "" if r.audit_chain_ok else (
        '<p class="bad">The audit trail did not verify: these numbers may rest on a '
        'tampered record.</p>')
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in r.notes)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(r.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(r.title)}</h1>"
        f"<p class=\"period\">Period: {html.escape(_period(r))}. Made "
        f"{html.escape(_day(r.generated_at))} from the audit trail.</p>{chain}"
        f"<h2>Key figures</h2><table class=\"facts\"><tbody>{facts}</tbody></table>"
        f"{''.join(sections)}"
        f"<h2>How to read this report</h2><ul class=\"notes\">{notes}</ul>"
        "</body></html>\n")


def render_pdf(r: TransparencyReport) -> bytes:
    """The report as a PDF (matplotlib, offline): the key figures, then the charts."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": r.title, "Creator": "facesearch"}) as pdf:
        fig = Figure(figsize=(8.27, 11.69))  # A4, inches
        fig.text(0.08, 0.95, r.title, fontsize=18, weight="bold", va="top")
        fig.text(0.08, 0.915, f"Period: {_period(r)}", fontsize=10, va="top")
        fig.text(0.08, 0.895, f"Made {_day(r.generated_at)} from the audit trail.",
                 fontsize=10, va="top")
        y = 0.85
        for k, v in headline(r):
            fig.text(0.08, y, k, fontsize=11, va="top")
            fig.text(0.62, y, v, fontsize=11, va="top", weight="bold")
            y -= 0.03
        y -= 0.02
        fig.text(0.08, y, "How to read this report", fontsize=12, weight="bold", va="top")
        y -= 0.03
        for note in r.notes:
            wrapped = _wrap(note, 95)
            fig.text(0.08, y, wrapped, fontsize=9, va="top")
            y -= 0.015 * (wrapped.count("\n") + 1) + 0.01
        pdf.savefig(fig)
        charts = [(title, getattr(r, name)) for name, title in CHARTS]
        for first in range(0, len(charts), 3):
            fig = Figure(figsize=(8.27, 11.69))
            for k, (title, rows) in enumerate(charts[first:first + 3]):
                ax = fig.add_axes((0.38, 0.71 - 0.31 * k, 0.52, 0.22))
                ax.set_title(title, fontsize=12, loc="left")
                if not any(t.count for t in rows):
                    ax.text(0.0, 0.5, "None in this period.", fontsize=10)
                    ax.set_axis_off()
                    continue
                labels = [t.label if len(t.label) <= 40 else t.label[:39] + "\u2026"
                          for t in rows][::-1]
                counts = [t.count for t in rows][::-1]
                bars = ax.barh(range(len(rows)), counts, height=0.6, color=_BAR)
                ax.set_yticks(range(len(rows)), labels, fontsize=9)
                ax.set_ylim(-0.5, max(len(rows), 4) - 0.5)
                ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=3, fontsize=9)
                ax.set_xlim(0, max(counts) * 1.2 or 1)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.spines[["top", "right"]].set_visible(False)
            pdf.savefig(fig)
    return buf.getvalue()


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def render(r: TransparencyReport, fmt: str) -> tuple[bytes, str]:
    """The report as ``fmt`` (json, html or pdf): its bytes and media type."""
    if fmt == "json":
        return r.model_dump_json(indent=2).encode(), "application/json"
    if fmt == "html":
        return render_html(r).encode(), "text/html; charset=utf-8"
    if fmt == "pdf":
        return render_pdf(r), "application/pdf"
    raise InvalidParameterError(f"a report's format is json, html or pdf, not {fmt!r}")
