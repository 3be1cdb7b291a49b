// The transparency report page (auditors): a period's aggregates with charts, and the same
// report as HTML or PDF for an oversight body.
import {
  $, api, apiBlob, clear, describeError, download, el, fmtInt, handleAuthLoss, may,
  setMessage, show, stale, state, svg,
} from "./core.js";

const CHARTS = [
  ["searches_by_kind", "Searches by kind"],
  ["searches_by_purpose", "Searches by stated purpose"],
  ["searches_by_collection", "Searches by collection"],
  ["refusals_by_reason", "Refused searches by rule"],
  ["review_outcomes", "Review outcomes of candidates returned"],
  ["stream_matches_by_collection", "Live-stream matches by watchlist"],
  ["stream_review_outcomes", "Review outcomes of live-stream matches"],
  ["faces_erased_by_reason", "Faces erased by reason"],
  ["keys_issued_by_role", "Access keys issued by role"],
  ["keys_revoked_by_role", "Access keys revoked by role"],
];

export const page = {
  id: "report",
  allowed: () => may("GetTransparencyReport"),
  init,
  enter,
  reset,
};

function isoDay(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function defaults() {
  const today = new Date();
  const from = new Date(today.getTime() - 29 * 86400_000);
  $("report-from").value = isoDay(from);
  $("report-to").value = isoDay(today);
}

function init() {
  defaults();
  $("report-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    make();
  });
  $("report-html").addEventListener("click", () => fetchAs("html"));
  $("report-pdf").addEventListener("click", () => fetchAs("pdf"));
}

async function enter(first) {
  if (first) await make();
}

function reset() {
  defaults();
  show($("report-view"), false);
  setMessage($("report-error"), "");
  $("report-status").textContent = "";
}

// The period as seconds since the epoch: from the first day's local midnight to the day
// after the last one (whole days, as the CLI's --from/--to dates).
function period() {
  const from = $("report-from").value;
  const to = $("report-to").value;
  if (!from || !to) return null;
  const [fy, fm, fd] = from.split("-").map(Number);
  const [ty, tm, td] = to.split("-").map(Number);
  const start = new Date(fy, fm - 1, fd).getTime() / 1000;
  const end = new Date(ty, tm - 1, td + 1).getTime() / 1000;
  return end > start ? { from: start, to: end } : null;
}

async function make() {
  const p = period();
  if (!p) {
    setMessage($("report-error"), "Choose a period whose end is not before its start.");
    return;
  }
  setMessage($("report-error"), "");
  const epoch = state.epoch;
  $("report-status").textContent = "Counting…";
  let r;
  try {
    r = await api("/v1/audit/report", { params: { ...p, format: "json" } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    $("report-status").textContent = "";
    setMessage($("report-error"), `Could not make the report: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  $("report-status").textContent = "";
  render(r);
}

function render(r) {
  const day = (t) => new Date(t * 1000).toLocaleString();
  $("report-period").textContent = `From ${day(r.period_start)} to ${day(r.period_end)} ` +
    `(end excluded); made ${day(r.generated_at)} from the audit trail.`;
  const reviewed = r.review_outcomes.filter((t) => t.label !== "never reviewed")
    .reduce((a, t) => a + t.count, 0);
  const sum = (rows) => rows.reduce((a, t) => a + t.count, 0);
  const live = r.stream_review_outcomes || [];
  const liveReviewed = sum(live.filter((t) => t.label !== "never reviewed"));
  const rows = [
    ["Searches", fmtInt(r.searches)],
    ["Refused searches", fmtInt(r.refusals)],
    ["Candidates returned", fmtInt(r.candidates_returned)],
    ["Searches with at least one candidate", fmtInt(r.searches_with_candidates)],
    ["Candidates reviewed", `${fmtInt(reviewed)} of ${fmtInt(r.candidates_returned)}`],
    ["Live-stream searches / matches",
      `${fmtInt(r.stream_searches)} / ${fmtInt(r.stream_matches)}`],
    ["Live matches reviewed", `${fmtInt(liveReviewed)} of ${fmtInt(sum(live))}`],
    ["Faces erased", `${fmtInt(r.faces_erased)} (in ${fmtInt(r.erasure_requests)} ` +
      `erasure${r.erasure_requests === 1 ? "" : "s"})`],
    ["Keys issued / revoked",
      `${fmtInt(sum(r.keys_issued_by_role))} / ${fmtInt(sum(r.keys_revoked_by_role))}`],
    ["Policy changes", fmtInt(r.policy_changes)],
    ["Audit trail intact", r.audit_chain_ok ? "yes" : "NO: tampering detected"],
  ];
  const dl = $("report-facts");
  clear(dl);
  for (const [k, v] of rows) dl.append(el("div", {}, el("dt", { text: k }), el("dd", { text: v })));
  const charts = $("report-charts");
  clear(charts);
  for (const [field, title] of CHARTS) charts.append(chart(title, r[field] || []));
  const notes = $("report-notes");
  clear(notes);
  for (const n of r.notes) notes.append(el("li", { text: n }));
  show($("report-view"));
  $("report-h").focus();
}

// A horizontal bar chart (SVG), with the same numbers as a table for screen readers.
function chart(title, rows) {
  const fig = el("figure", { className: "chart" }, el("figcaption", { text: title }));
  if (!rows.some((t) => t.count)) {
    fig.append(el("p", { className: "muted", text: "None in this period." }));
    return fig;
  }
  const top = Math.max(1, ...rows.map((t) => t.count));
  const h = 24;
  const labelW = 190;
  const barW = 180;
  const node = svg("svg", { viewBox: `0 0 ${labelW + barW + 50} ${h * rows.length + 4}`,
    role: "img", "aria-label": rows.map((t) => `${t.label}: ${t.count}`).join(", ") });
  rows.forEach((t, i) => {
    const y = i * h + 2;
    const w = t.count ? Math.max(2, Math.round((barW * t.count) / top)) : 0;
    const label = t.label.length > 26 ? `${t.label.slice(0, 25)}…` : t.label;
    node.append(
      svg("text", { x: labelW - 8, y: y + 16, "text-anchor": "end", text: label }),
      svg("rect", { x: labelW, y: y + 4, width: w, height: h - 8, class: "bar" }),
      svg("text", { x: labelW + w + 6, y: y + 16, text: fmtInt(t.count) }));
  });
  fig.append(node);
  return fig;
}

async function fetchAs(format) {
  const p = period();
  if (!p) {
    setMessage($("report-error"), "Choose a period whose end is not before its start.");
    return;
  }
  const epoch = state.epoch;
  $("report-status").textContent = `Preparing the ${format.toUpperCase()}…`;
  try {
    const blob = await apiBlob("/v1/audit/report", { params: { ...p, format } });
    if (stale(epoch)) return;
    download(blob, `facesearch-transparency-report.${format}`);
    $("report-status").textContent = `Downloaded the ${format.toUpperCase()} ` +
      `(${fmtInt(blob.size)} bytes).`;
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    $("report-status").textContent = "";
    setMessage($("report-error"),
      `Could not make the ${format.toUpperCase()}: ${describeError(err)}`);
  }
}
