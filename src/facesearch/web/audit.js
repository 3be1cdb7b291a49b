// The audit page (auditors): filter events by key, case, purpose, operation, collection and
// time; the reviews made on each search; verify the chain; export.
import {
  $, api, apiBlob, clear, describeError, download, el, fmtInt, fmtTime, handleAuthLoss,
  labelCells, may, setMessage, show, stale, state,
} from "./core.js";

const PAGE = 50;
const SEARCHES = /^(search\.(image|face|video|stream)|users\.search(\.image)?)$/;

const local = { next: null, filters: null, count: 0, labels: new Map() };

export const page = {
  id: "audit",
  allowed: () => may("ListAuditEvents"),
  init,
  enter,
  reset,
};

function init() {
  $("audit-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(false);
  });
  $("audit-more").addEventListener("click", () => load(true));
  $("audit-verify").addEventListener("click", verify);
  $("audit-export-jsonl").addEventListener("click", () => exportEvents("jsonl"));
  $("audit-export-csv").addEventListener("click", () => exportEvents("csv"));
}

async function enter(first) {
  show($("audit-verify"), may("VerifyAudit"));
  show($("audit-export-jsonl"), may("ExportAudit"));
  show($("audit-export-csv"), may("ExportAudit"));
  if (first) {
    await loadLabels();
    await load(false);
  }
}

// Access keys' labels (GET /v1/keys, for auditors and admins), to name a key by its label.
async function loadLabels() {
  if (!may("ListKeys")) return;
  const epoch = state.epoch;
  try {
    const keys = await api("/v1/keys");
    if (stale(epoch)) return;
    local.labels = new Map(keys.filter((k) => k.label).map((k) => [k.key_id, k.label]));
  } catch (err) {
    if (stale(epoch)) return;
    handleAuthLoss(err); // without labels the key ids are shown
  }
}

// A key as people know it: its label, with the id beside it (the id alone when unlabelled).
function keyName(id) {
  const label = local.labels.get(id);
  if (!label) return el("code", { className: "small", text: id });
  return el("span", { className: "key-name", title: id }, el("strong", { text: label }), " ",
    el("code", { className: "small muted", text: id }));
}

function reset() {
  local.next = null;
  local.filters = null;
  local.count = 0;
  local.labels = new Map();
  $("audit-form").reset();
  clear($("audit-table").tBodies[0]);
  clear($("verify-result"));
  $("audit-count").textContent = "";
  $("audit-download").textContent = "";
  show($("audit-more"), false);
  setMessage($("audit-error"), "");
}

function seconds(id) {
  const v = $(id).value;
  return v ? new Date(v).getTime() / 1000 : null;
}

function filters() {
  const text = (id) => $(id).value.trim() || null;
  return { actor: text("audit-actor"), case: text("audit-case"), purpose: text("audit-purpose"),
    operation: text("audit-operation"), collection: text("audit-collection"),
    since: seconds("audit-since"), until: seconds("audit-until") };
}

async function load(more) {
  const epoch = state.epoch;
  setMessage($("audit-error"), "");
  if (!more) {
    local.filters = filters();
    local.next = null;
    local.count = 0;
    clear($("audit-table").tBodies[0]);
  }
  let page;
  try {
    page = await api("/v1/audit", { params: { ...local.filters, max_results: PAGE,
      next_token: local.next } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("audit-error"), `Could not read the audit trail: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  local.next = page.next_token;
  local.count += page.events.length;
  $("audit-count").textContent =
    `(${fmtInt(local.count)} shown${local.next ? ", more below" : ""})`;
  show($("audit-more"), Boolean(local.next));
  const body = $("audit-table").tBodies[0];
  if (!local.count) {
    body.append(el("tr", {}, el("td", { colspan: 8, className: "muted",
      text: "No events match." })));
  }
  const searches = [];
  for (const e of page.events) {
    const reviews = el("td", { className: "reviews" });
    const sid = e.details && e.details.search_id;
    if (SEARCHES.test(e.operation) && sid) searches.push([sid, reviews]);
    const row = el("tr", { "data-seq": e.seq, "data-operation": e.operation,
      "data-search-id": sid || null },
      el("td", { className: "n", text: e.seq }),
      el("td", { text: fmtTime(e.ts) }),
      el("td", {}, el("code", { text: e.operation }), summary(e)),
      el("td", {}, keyName(e.actor), e.role ? ` (${e.role})` : ""),
      el("td", { text: e.collection || "" }),
      el("td", { text: [e.purpose, e.case_ref].filter(Boolean).join(" / ") }),
      el("td", { className: "n", text: e.results.length ? fmtInt(e.results.length) : "" }),
      reviews);
    body.append(row);
  }
  labelCells($("audit-table"));
  // The reviews made on each search shown (one request per search, in turn).
  for (const [sid, cell] of searches) {
    if (stale(epoch)) return;
    await loadReviews(sid, cell, epoch);
  }
}

function summary(e) {
  const d = e.details || {};
  const bits = [];
  if (d.reason) bits.push(String(d.reason));
  if (d.decision) bits.push(`${d.decision}${d.note ? `: "${d.note}"` : ""}`);
  if (d.search_id && e.operation === "review") bits.push(`search ${d.search_id}`);
  if (d.receipt_id) bits.push(`receipt ${d.receipt_id}, ${d.faces} faces`);
  if (d.key_id) {
    const label = local.labels.get(d.key_id);
    bits.push(`key ${label ? `${label} (${d.key_id})` : d.key_id} (${d.key_role})`);
  }
  if (d.processor) bits.push(`processor ${d.processor}`);
  if (e.threshold !== null && e.threshold !== undefined) bits.push(`threshold ${e.threshold}`);
  return bits.length ? el("span", { className: "muted small detail", text: ` ${bits.join("; ")}` })
    : null;
}

async function loadReviews(searchId, cell, epoch) {
  let page;
  try {
    page = await api("/v1/audit", { params: { search_id: searchId, operation: "review",
      max_results: 100 } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    cell.textContent = "?";
    return;
  }
  if (stale(epoch)) return;
  if (!page.events.length) {
    cell.append(el("span", { className: "muted", text: "none" }));
    return;
  }
  const list = el("ul", { className: "review-list" });
  for (const r of page.events) {
    list.append(el("li", { className: `decision-${r.details.decision}` },
      el("strong", { text: r.details.decision }),
      r.details.note ? ` "${r.details.note}"` : "",
      el("span", { className: "muted small",
        text: ` by ${local.labels.get(r.actor) || r.actor}, ${fmtTime(r.ts)}` })));
  }
  cell.append(list);
}

async function verify() {
  const epoch = state.epoch;
  const out = $("verify-result");
  clear(out);
  out.append(el("p", { className: "muted", text: "Verifying…" }));
  let r;
  try {
    r = await api("/v1/audit/verify");
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    clear(out);
    out.append(el("p", { className: "error", text: `Could not verify: ${describeError(err)}` }));
    return;
  }
  if (stale(epoch)) return;
  clear(out);
  out.append(el("p", { className: r.ok ? "ok-box" : "error",
    text: r.ok ? `The chain is intact: ${fmtInt(r.events)} events, ${r.checkpoints_valid} of ` +
      `${r.checkpoints} signed checkpoints valid.`
      : `TAMPERED: ${r.problems.length} problem(s) found.` }));
  if (r.problems.length) {
    const list = el("ul");
    for (const p of r.problems) {
      list.append(el("li", { text: `#${p.seq}: ${p.kind}: ${p.message}` }));
    }
    out.append(list);
  }
}

async function exportEvents(format) {
  const epoch = state.epoch;
  const f = local.filters || filters();
  const { since, until, actor, collection, operation, purpose } = f;
  $("audit-download").textContent = "Preparing the export…";
  try {
    const blob = await apiBlob("/v1/audit/export", { params: { format, actor, case: f.case,
      collection, operation, since, until, purpose } });
    if (stale(epoch)) return;
    download(blob, `facesearch-audit.${format}`);
    $("audit-download").textContent = `Exported (${fmtInt(blob.size)} bytes, ${format}).`;
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    $("audit-download").textContent = `Could not export: ${describeError(err)}`;
  }
}
