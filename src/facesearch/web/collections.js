// The collections page: create (incl. law enforcement), policy, enrol many photos with a
// progress bar, browse faces as thumbnails a page at a time, erase with the receipt shown;
// persons (persons.js).
import {
  $, api, clear, describeError, el, facts, fmtInt, fmtSimilarity, fmtTime, handleAuthLoss,
  jpegUrl, labelCells, listCollections, may, receiptFacts, setMessage, show, stale, state,
} from "./core.js";
import { initPersons, resetPersons, showPersons } from "./persons.js";

const FACES_PER_PAGE = 24;

const local = {
  collections: [],
  current: null, // collection name
  tokens: [null], // next tokens of the pages seen; the last is the current page's
  selected: new Set(),
  uploading: false,
};

export const page = {
  id: "collections",
  allowed: () => may("CreateCollection") || may("IndexFaces") || may("EraseFaces"),
  init,
  enter,
  reset,
};

function init() {
  $("coll-create-form").addEventListener("submit", onCreate);
  $("policy-form").addEventListener("submit", onPolicy);
  $("upload-form").addEventListener("submit", onUpload);
  $("upload-files").addEventListener("change", () => {
    const n = $("upload-files").files.length;
    $("upload-count").textContent = n ? `${n} photo${n === 1 ? "" : "s"} chosen` : "";
  });
  const drop = $("upload-drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    if (ev.dataTransfer && ev.dataTransfer.files.length) {
      $("upload-files").files = ev.dataTransfer.files;
      $("upload-files").dispatchEvent(new Event("change"));
    }
  });
  $("faces-next").addEventListener("click", () => pageFaces(+1));
  $("faces-prev").addEventListener("click", () => pageFaces(-1));
  $("erase-form").addEventListener("submit", onEraseExternal);
  $("erase-selected").addEventListener("click", onEraseSelected);
  initPersons(loadCollectionsQuietly);
}

async function enter(first) {
  show($("coll-create"), may("CreateCollection"));
  if (first) await loadCollections();
}

function reset() {
  local.collections = [];
  local.current = null;
  local.tokens = [null];
  local.selected.clear();
  local.uploading = false;
  clear($("coll-table").tBodies[0]);
  for (const id of ["coll-create-form", "policy-form", "upload-form", "erase-form"]) $(id).reset();
  clear($("upload-log"));
  clear($("face-grid"));
  resetPersons();
  show($("coll-detail"), false);
  show($("receipt"), false);
  for (const id of ["coll-error", "erase-error"]) setMessage($(id), "");
  for (const id of ["coll-create-status", "policy-status", "upload-count", "faces-status"]) {
    $(id).textContent = "";
  }
}

async function loadCollections() {
  const epoch = state.epoch;
  setMessage($("coll-error"), "");
  let all;
  try {
    all = await listCollections();
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("coll-error"), `Could not list collections: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  local.collections = all;
  const policies = new Map();
  await Promise.all(all.map(async (c) => {
    try {
      policies.set(c.name, (await api(`/v1/collections/${encodeURIComponent(c.name)}/policy`))
        .effective);
    } catch (err) {
      policies.set(c.name, null);
    }
  }));
  if (stale(epoch)) return;
  const body = $("coll-table").tBodies[0];
  clear(body);
  if (!all.length) {
    body.append(el("tr", {}, el("td", { colspan: 6, className: "muted",
      text: "No collections yet." })));
  }
  for (const c of all) {
    const p = policies.get(c.name);
    const open = el("button", { type: "button", className: "secondary",
      text: "Open", "aria-label": `Open ${c.name}` });
    open.addEventListener("click", () => openCollection(c.name));
    body.append(el("tr", { "data-name": c.name },
      el("th", { scope: "row", text: c.name }),
      el("td", { className: "n", text: fmtInt(c.faces) }),
      el("td", { className: "n", text: fmtInt(c.images) }),
      el("td", { text: p ? (p.law_enforcement ? "yes" : "no") : "?" }),
      el("td", { text: p && p.retention_days ? `${p.retention_days} days` : "no limit" }),
      el("td", {}, open)));
  }
  labelCells($("coll-table"));
  if (local.current && all.some((c) => c.name === local.current)) {
    await renderDetail(local.current);
  }
}

// -- create -----------------------------------------------------------------------------

function policyFrom(prefix) {
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const p = { law_enforcement: $(`${prefix}-le`).checked };
  if ($(`${prefix}-purpose`).checked) p.require_purpose = true;
  const floor = num(`${prefix}-floor`);
  const cap = num(`${prefix}-cap`);
  const days = num(`${prefix}-retention`);
  if (floor !== null) p.threshold_floor = floor;
  if (cap !== null) p.max_results_cap = cap;
  if (days !== null) p.retention_days = days;
  return p;
}

async function onCreate(ev) {
  ev.preventDefault();
  const name = $("new-coll-name").value.trim();
  const status = $("coll-create-status");
  if (!/^[A-Za-z0-9_.-]{1,255}$/.test(name)) {
    status.className = "field-error";
    status.textContent = "A collection name is 1-255 letters, digits, '_', '.' or '-'.";
    $("new-coll-name").focus();
    return;
  }
  const epoch = state.epoch;
  $("coll-create-button").disabled = true;
  status.className = "muted";
  status.textContent = "Creating…";
  try {
    await api("/v1/collections", { method: "POST",
      json: { name, policy: policyFrom("new-coll") } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    status.className = "field-error";
    status.textContent = `Not created: ${describeError(err)}`;
    return;
  } finally {
    $("coll-create-button").disabled = false;
  }
  if (stale(epoch)) return;
  status.textContent = `Created ${name}.`;
  $("coll-create-form").reset();
  local.current = name;
  await loadCollections();
  await openCollection(name);
}

// -- one collection ---------------------------------------------------------------------

async function openCollection(name) {
  local.current = name;
  local.tokens = [null];
  local.selected.clear();
  clear($("upload-log"));
  show($("receipt"), false);
  setMessage($("erase-error"), "");
  $("upload-progress").value = 0;
  $("upload-count").textContent = "";
  await renderDetail(name);
  $("coll-detail-h").focus();
}

async function renderDetail(name) {
  const epoch = state.epoch;
  let info;
  let policy;
  try {
    [info, policy] = await Promise.all([
      api(`/v1/collections/${encodeURIComponent(name)}`),
      api(`/v1/collections/${encodeURIComponent(name)}/policy`),
    ]);
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("coll-error"), `Could not read ${name}: ${describeError(err)}`);
    return;
  }
  if (stale(epoch) || local.current !== name) return;
  const p = policy.effective;
  $("coll-detail-h").textContent = `Collection ${name}`;
  facts($("coll-facts"), [
    ["Faces", fmtInt(info.faces)],
    ["Images", fmtInt(info.images)],
    ["Users", fmtInt(info.users)],
    ["Model", info.model_version],
    ["Created", fmtTime(info.created_at)],
    ["Law-enforcement collection", p.law_enforcement ? "yes" : "no"],
    ["Purpose and case", p.require_purpose ? "required for every search" : "optional"],
    ["Threshold floor", p.threshold_floor > 0 ? fmtSimilarity(p.threshold_floor) : "none"],
    ["Candidates per search", `at most ${fmtInt(p.max_results_cap)}`],
    ["Faces kept for", p.retention_days ? `${p.retention_days} days` : "no limit"],
  ]);
  const s = policy.stated;
  $("pol-le").checked = Boolean(s.law_enforcement);
  $("pol-purpose").checked = Boolean(s.require_purpose);
  $("pol-floor").value = s.threshold_floor ?? "";
  $("pol-cap").value = s.max_results_cap ?? "";
  $("pol-retention").value = s.retention_days ?? "";
  show($("coll-policy"), may("SetPolicy"));
  show($("coll-upload"), may("IndexFaces"));
  show($("coll-faces"), may("ListFaces"));
  show($("coll-erase"), may("EraseFaces"));
  show($("erase-selected"), may("EraseFaces") && may("ListFaces"));
  show($("coll-detail"));
  if (may("ListFaces")) await loadFaces();
  await showPersons(name);
}

async function onPolicy(ev) {
  ev.preventDefault();
  const name = local.current;
  const status = $("policy-status");
  const epoch = state.epoch;
  status.className = "muted";
  status.textContent = "Saving…";
  try {
    await api(`/v1/collections/${encodeURIComponent(name)}/policy`,
      { method: "PUT", json: policyFrom("pol") });
    if (stale(epoch)) return;
    status.textContent = "Saved.";
    await renderDetail(name);
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    status.className = "field-error";
    status.textContent = `Not saved: ${describeError(err)}`;
  }
}

// -- enrol ----------------------------------------------------------------------------------

async function onUpload(ev) {
  ev.preventDefault();
  if (local.uploading) return;
  const files = [...$("upload-files").files];
  const name = local.current;
  const log = $("upload-log");
  if (!files.length) {
    $("upload-count").textContent = "Choose photos first.";
    return;
  }
  const common = $("upload-external-id").value.trim();
  const epoch = state.epoch;
  local.uploading = true;
  $("upload-button").disabled = true;
  clear(log);
  const bar = $("upload-progress");
  bar.max = files.length;
  bar.value = 0;
  let faces = 0;
  for (const [i, file] of files.entries()) {
    if (stale(epoch) || local.current !== name) break;
    $("upload-count").textContent = `Enrolling ${i + 1} of ${files.length}: ${file.name}`;
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("source", file.name.slice(0, 255));
    const ext = common || file.name.replace(/\.[^.]*$/, "").slice(0, 255);
    if (ext) form.append("external_id", ext);
    let line;
    try {
      const r = await api(`/v1/collections/${encodeURIComponent(name)}/faces`,
        { method: "POST", form });
      faces += r.indexed.length;
      line = enrolled(file.name, r);
    } catch (err) {
      if (stale(epoch) || handleAuthLoss(err)) return;
      line = `${file.name}: refused: ${describeError(err)}`;
    }
    log.append(el("li", { text: line }));
    bar.value = i + 1;
  }
  if (stale(epoch)) return;
  $("upload-count").textContent = `Done: ${files.length} photo${files.length === 1 ? "" : "s"}, ` +
    `${faces} face${faces === 1 ? "" : "s"} enrolled.`;
  local.uploading = false;
  $("upload-button").disabled = false;
  $("upload-files").value = "";
  local.tokens = [null];
  await loadCollectionsQuietly(); // the list's counts, and this collection's details
}

// What enrolling one photo did, in words.
function enrolled(name, r) {
  if (r.duplicate) return `${name}: already in the collection`;
  const n = r.indexed.length;
  const why = [...new Set(r.unindexed.flatMap((u) => u.reasons))].join(", ");
  if (!n) return `${name}: no face enrolled (${why || "none found"})`;
  const left = r.unindexed.length ? `, ${r.unindexed.length} left out (${why})` : "";
  return `${name}: ${n} face${n === 1 ? "" : "s"} enrolled${left}`;
}

async function loadCollectionsQuietly() {
  try {
    await loadCollections();
  } catch (err) {
    handleAuthLoss(err);
  }
}

// -- browse -----------------------------------------------------------------------------

async function pageFaces(step) {
  if (step < 0 && local.tokens.length > 1) local.tokens.pop();
  else if (step > 0 && local.nextToken) local.tokens.push(local.nextToken);
  await loadFaces();
}

async function loadFaces() {
  const name = local.current;
  const epoch = state.epoch;
  const token = local.tokens[local.tokens.length - 1];
  const grid = $("face-grid");
  $("faces-status").textContent = "Loading faces…";
  let page;
  try {
    page = await api(`/v1/collections/${encodeURIComponent(name)}/faces`,
      { params: { max_results: FACES_PER_PAGE, next_token: token } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    $("faces-status").textContent = `Could not list the faces: ${describeError(err)}`;
    return;
  }
  let cards = new Map();
  if (page.faces.length && may("GetFaceCrops")) {
    try {
      const got = await api(`/v1/collections/${encodeURIComponent(name)}/crops`,
        { params: { face_id: page.faces.map((f) => f.face_id) } });
      cards = new Map(got.faces.map((c) => [c.face.face_id, c]));
    } catch (err) {
      if (stale(epoch) || handleAuthLoss(err)) return;
    }
  }
  if (stale(epoch) || local.current !== name) return;
  local.nextToken = page.next_token;
  clear(grid);
  const first = (local.tokens.length - 1) * FACES_PER_PAGE;
  $("faces-status").textContent = page.faces.length
    ? `Faces ${first + 1}-${first + page.faces.length}` : "No faces in this collection.";
  $("faces-page").textContent = `Page ${local.tokens.length}`;
  $("faces-prev").disabled = local.tokens.length <= 1;
  $("faces-next").disabled = !page.next_token;
  for (const f of page.faces) {
    const card = cards.get(f.face_id);
    const who = f.external_id || "(no external id)";
    const pic = card && card.crop
      ? el("img", { src: jpegUrl(card.crop.data), alt: `Face of ${who}`, width: 96, height: 96,
        loading: "lazy" })
      : el("span", { className: "no-crop", text: "No picture kept" });
    const box = el("input", { type: "checkbox", id: `sel-${f.face_id}`,
      checked: local.selected.has(f.face_id) });
    box.addEventListener("change", () => {
      if (box.checked) local.selected.add(f.face_id);
      else local.selected.delete(f.face_id);
    });
    grid.append(el("li", { className: "face-tile", "data-face-id": f.face_id }, pic,
      el("span", { className: "who", text: who }),
      el("span", { className: "muted small",
        text: card && card.source_name ? card.source_name : fmtTime(f.created_at) }),
      may("EraseFaces") ? el("span", { className: "pick" }, box,
        el("label", { for: box.id, text: "Select", "aria-label": `Select the face of ${who}` }))
        : null));
  }
}

// -- erase ------------------------------------------------------------------------------

async function erase(body) {
  const name = local.current;
  const epoch = state.epoch;
  setMessage($("erase-error"), "");
  show($("receipt"), false);
  let r;
  try {
    r = await api(`/v1/collections/${encodeURIComponent(name)}/erase`,
      { method: "POST", json: body });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("erase-error"), `Not erased: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  receiptFacts($("receipt-facts"), r);
  show($("receipt"));
  local.selected.clear();
  local.tokens = [null];
  await loadCollectionsQuietly(); // the list's counts, and this collection's details
  $("receipt").focus();
}

async function onEraseExternal(ev) {
  ev.preventDefault();
  const ext = $("erase-external-id").value.trim();
  if (!ext) {
    setMessage($("erase-error"), "Enter the external id of the faces to erase.");
    $("erase-external-id").focus();
    return;
  }
  await erase({ external_id: ext });
}

async function onEraseSelected() {
  if (!local.selected.size) {
    setMessage($("erase-error"), "Tick the faces to erase first.");
    return;
  }
  await erase({ face_ids: [...local.selected] });
}
