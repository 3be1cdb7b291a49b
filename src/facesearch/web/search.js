// The search and review page: probe by file, drop, paste or camera; pick a face; candidates as
// a ranked gallery with the enrolled face beside the probe's; compare side by side; a decision
// per candidate.
import {
  $, ApiError, BOX_COLOURS, api, clear, cropFromImage, describeError, drawBoxes, drawMarks,
  el, facts, fillCollections, fmtInt, fmtPercent, fmtRate, fmtSimilarity, handleAuthLoss,
  headerSafe, jpegUrl, listCollections, may, recordReview, reviewControls, setMessage, show,
  stale, state, whyHeaders,
} from "./core.js";

const DEFAULT_THRESHOLD = 80;

const local = {
  collections: [],
  collection: null, // {info, policy}
  file: null,
  previewUrl: null,
  detected: null, // {width, height, faces} from /v1/detect for the current file
  fileSeq: 0,
  riskSeq: 0,
  riskTimer: null,
  searching: false,
};

export const page = {
  id: "search",
  allowed: () => may("SearchFacesByImage"),
  init,
  enter,
  reset,
};

function init() {
  $("reload-collections").addEventListener("click", () => loadCollections());
  $("collection").addEventListener("change", (ev) => chooseCollection(ev.target.value));
  $("threshold-range").addEventListener("input", onThresholdInput);
  $("threshold").addEventListener("input", onThresholdInput);
  $("max-results").addEventListener("input", () => validateField("max-results"));
  $("purpose").addEventListener("change", () => validateField("purpose"));
  $("case-ref").addEventListener("change", () => validateField("case-ref"));
  $("search-form").addEventListener("submit", onSearch);
  $("helper-form").addEventListener("submit", onHelper);
  $("probe").addEventListener("change", (ev) => acceptFile(ev.target.files[0]));
  $("probe-camera").addEventListener("change", (ev) => acceptFile(ev.target.files[0]));
  $("compare-landmarks").addEventListener("change", applyLandmarks);

  const drop = $("drop");
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
    acceptFile(ev.dataTransfer && ev.dataTransfer.files[0]);
  });
  // A photo pasted anywhere on this page becomes the probe.
  document.addEventListener("paste", (ev) => {
    if ($("page-search").hidden || !ev.clipboardData) return;
    const file = [...ev.clipboardData.files].find((f) => f.type.startsWith("image/"));
    if (file) {
      ev.preventDefault();
      acceptFile(file);
    }
  });
}

async function enter(first) {
  if (first) await loadCollections();
}

function reset() {
  clearTimeout(local.riskTimer);
  local.riskSeq += 1;
  local.fileSeq += 1;
  local.searching = false;
  local.collections = [];
  local.collection = null;
  $("search-button").disabled = false;
  $("search-status").textContent = "";
  clear($("helper-answer"));
  setMessage($("helper-error"), "");
  setProbe(null);
  $("search-form").reset();
  delete $("threshold").dataset.touched;
  clear($("collection"));
  clear($("collection-info"));
  clear($("probe-results"));
  clear($("result-summary"));
  show($("results"), false);
  for (const id of ["search-error", "collection-error"]) setMessage($(id), "");
  if ($("compare").open) $("compare").close();
}

// -- collections ------------------------------------------------------------------------

async function loadCollections() {
  const epoch = state.epoch;
  setMessage($("collection-error"), "");
  let all;
  try {
    all = await listCollections();
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("collection-error"), `Could not list collections: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  local.collections = all;
  fillCollections($("collection"), all);
  if (!all.length) {
    local.collection = null;
    clear($("collection-info"));
    renderRiskPlaceholder("There are no collections to search yet.");
    return;
  }
  await chooseCollection($("collection").value);
}

async function chooseCollection(name) {
  setMessage($("collection-error"), "");
  if (!name) return;
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
    local.collection = null;
    clear($("collection-info"));
    setMessage($("collection-error"), `Could not read collection ${name}: ${describeError(err)}`);
    return;
  }
  if (stale(epoch) || $("collection").value !== name) return; // another one was chosen
  local.collection = { info, policy: policy.effective };
  renderCollection();
  applyPolicy();
  $("gallery-size").value = String(Math.max(1, info.faces));
  scheduleRisk(0);
}

function renderCollection() {
  const { info, policy } = local.collection;
  const floor = policy.threshold_floor;
  const floorText = floor > 0
    ? `${fmtSimilarity(floor)}` +
      (policy.floor_false_match_rate !== null && policy.floor_false_match_rate !== undefined
        ? `, 1:1 false-match rate ${fmtRate(policy.floor_false_match_rate)}` : "")
    : "none";
  facts($("collection-info"), [
    ["Faces", fmtInt(info.faces)],
    ["Images", fmtInt(info.images)],
    ["Users", fmtInt(info.users)],
    ["Model", info.model_version],
    ["Threshold floor", floorText],
    ["Purpose and case", policy.require_purpose ? "required for every search" : "optional"],
    ["Candidates per search", `at most ${fmtInt(policy.max_results_cap)}`],
    ["Law-enforcement collection", policy.law_enforcement ? "yes" : "no"],
    ["Faces kept for", policy.retention_days ? `${policy.retention_days} days` : "no limit"],
  ]);
}

function applyPolicy() {
  const { policy } = local.collection;
  const required = policy.require_purpose;
  for (const id of ["purpose", "case-ref"]) {
    $(id).required = required;
    $(id).setAttribute("aria-required", String(required));
  }
  show($("purpose-req"), required);
  show($("case-req"), required);
  $("purpose-hint").textContent = required
    ? "This collection's policy requires a purpose and a case reference for every search."
    : "Optional for this collection; when given, they are recorded with the search.";

  const floor = policy.threshold_floor;
  $("threshold-range").min = String(floor);
  $("threshold").min = String(floor);
  $("floor-hint").textContent = floor > 0
    ? `This collection refuses thresholds below its floor of ${fmtSimilarity(floor)}.` : "";
  // A threshold the analyst chose is kept (and flagged if below the floor), never raised.
  const num = $("threshold");
  const current = Number(num.value);
  const start = num.dataset.touched && num.value !== "" && Number.isFinite(current)
    ? current : Math.max(DEFAULT_THRESHOLD, floor);
  setThreshold(start);

  const cap = policy.max_results_cap;
  const max = $("max-results");
  max.max = String(cap);
  if (Number(max.value) > cap) max.value = String(cap);
  validateField("threshold");
}

// -- threshold and what it means --------------------------------------------------------

function setThreshold(value) {
  $("threshold").value = String(value);
  $("threshold-range").value = String(value);
}

function renderRiskPlaceholder(text) {
  const box = $("risk");
  clear(box);
  box.append(el("p", { className: "muted", text }));
}

function scheduleRisk(delay = 200) {
  clearTimeout(local.riskTimer);
  local.riskTimer = setTimeout(updateRisk, delay);
}

async function updateRisk() {
  if (!local.collection) return;
  const t = Number($("threshold").value);
  if (!Number.isFinite(t) || t < 0 || t > 100 || $("threshold").value === "") {
    renderRiskPlaceholder("Enter a threshold between 0 and 100.");
    return;
  }
  const seq = ++local.riskSeq;
  const coll = local.collection;
  const name = coll.info.name;
  let r;
  try {
    r = await api("/v1/calibration/risk", { params: { similarity: t, collection: name } });
  } catch (err) {
    if (seq !== local.riskSeq || local.collection !== coll || handleAuthLoss(err)) return;
    if (err instanceof ApiError && err.status === 404 && err.code !== "collection_not_found") {
      renderRiskPlaceholder(`What this threshold means is not known: ${err.message}.`);
    } else {
      renderRiskPlaceholder(`Could not get this threshold's error rates: ${describeError(err)}`);
    }
    return;
  }
  if (seq !== local.riskSeq || local.collection !== coll) return; // a newer one is on its way
  renderRisk($("risk"), r, name, coll.info.faces);
}

function renderRisk(box, r, collectionName, faces) {
  clear(box);
  const approx = r.extrapolated ? "≈ " : "";
  const dl = el("dl", { className: "facts risk-facts" });
  const rows = [
    ["False-match rate (1:1)",
      el("strong", { text: approx + fmtRate(r.false_match_rate) }),
      el("span", { className: "muted", text: " of different-person pairs score this high" })],
  ];
  if (r.expected_fpir !== null && r.expected_fpir !== undefined) {
    const n = r.gallery_size;
    let where = `for ${fmtInt(n)} face${n === 1 ? "" : "s"}`;
    if (collectionName && faces === 0) where = `for ${collectionName}, empty now (counted as 1 face)`;
    else if (collectionName) where = `for ${collectionName}'s current ${fmtInt(n)} face${n === 1 ? "" : "s"}`;
    rows.push(["Expected FPIR",
      el("strong", { text: approx + fmtPercent(r.expected_fpir) }),
      el("span", { className: "muted",
        text: ` ${where}: the chance that a search for someone not in it returns a candidate` })]);
  }
  rows.push(["Missed same-person pairs (1:1 FNMR)", fmtPercent(r.false_non_match_rate)]);
  facts(dl, rows);
  box.append(el("p", { className: "risk-head", text: `At similarity ${fmtSimilarity(r.similarity)}:` }), dl);
  if (r.extrapolated) {
    box.append(el("p", { className: "warning",
      text: "Extrapolated: this false-match rate is below what the calibration data can " +
        "measure; it comes from a fitted tail meant to over-state it." }));
  }
  box.append(el("p", { className: "muted small", text: `Calibration: ${r.measured_with}` }));
}

function onThresholdInput(ev) {
  const v = ev.target.value;
  $("threshold").dataset.touched = "1";
  if (ev.target.id === "threshold-range") $("threshold").value = v;
  else if (v !== "" && Number.isFinite(Number(v))) $("threshold-range").value = v;
  validateField("threshold");
  scheduleRisk();
}

// -- the probe photo and its faces -----------------------------------------------------------

function setProbe(file) {
  if (local.previewUrl) URL.revokeObjectURL(local.previewUrl);
  local.previewUrl = null;
  local.file = file;
  local.detected = null;
  local.fileSeq += 1;
  clear($("boxes"));
  clear($("face-pick-options"));
  show($("face-pick"), false);
  $("detect-status").textContent = "";
  // An error about the previous photo (no face, refused) does not belong to this one.
  setMessage($("search-error"), "");
  setMessage($("probe-error"), "");
  if (!file) {
    $("preview-img").removeAttribute("src");
    show($("preview"), false);
    return;
  }
  local.previewUrl = URL.createObjectURL(file);
  $("preview-img").src = local.previewUrl;
  $("preview-caption").textContent = `${file.name || "Pasted photo"} ` +
    `(${fmtInt(Math.ceil(file.size / 1024))} KB)`;
  show($("preview"));
  setMessage($("probe-error"), "");
  detectFaces();
}

function acceptFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    setMessage($("probe-error"), `${file.name} is not an image.`);
    return;
  }
  setProbe(file);
}

// The probe's faces (POST /v1/detect, audited, nothing stored), to choose which to search.
async function detectFaces() {
  const seq = local.fileSeq;
  const epoch = state.epoch;
  const file = local.file;
  if (!may("DetectFaces")) return;
  $("detect-status").textContent = "Finding the faces in the photo…";
  const form = new FormData();
  form.append("image", file, file.name || "probe");
  let answer;
  try {
    answer = await api("/v1/detect", { method: "POST", form });
  } catch (err) {
    if (stale(epoch) || seq !== local.fileSeq || handleAuthLoss(err)) return;
    $("detect-status").textContent = `The faces could not be found: ${describeError(err)}`;
    return;
  }
  if (stale(epoch) || seq !== local.fileSeq) return;
  local.detected = answer;
  const n = answer.faces.length;
  $("detect-status").textContent = n === 0 ? "No face was found in this photo."
    : n === 1 ? "One face found: it will be searched."
      : `${n} faces found: choose the one to search.`;
  drawBoxes($("boxes"), answer.width, answer.height, answer.faces.map((f, i) => ({
    box: f.box, label: `Face ${i + 1}`, colour: BOX_COLOURS[i % BOX_COLOURS.length] })));
  renderFacePick(n);
}

function renderFacePick(n) {
  const box = $("face-pick-options");
  clear(box);
  if (n < 2) {
    show($("face-pick"), false);
    return;
  }
  const choices = [...Array(n).keys()].map((i) => [String(i),
    `Face ${i + 1}${i === 0 ? " (the largest)" : ""}`]);
  choices.push(["all", "Every face in the photo"]);
  choices.forEach(([value, text], k) => {
    const id = `pick-${value}`;
    box.append(el("span", { className: "pick" },
      el("input", { type: "radio", name: "face-pick", id, value, checked: k === 0 }),
      el("label", { for: id, text })));
  });
  show($("face-pick"));
}

function chosenFace() {
  const picked = document.querySelector("input[name=face-pick]:checked");
  if (!picked) return null;
  return picked.value;
}

// -- validation -------------------------------------------------------------------------

function validateField(name) {
  const policy = local.collection ? local.collection.policy : null;
  if (name === "threshold") {
    const raw = $("threshold").value;
    const t = Number(raw);
    const floor = policy ? policy.threshold_floor : 0;
    let msg = "";
    if (raw === "" || !Number.isFinite(t) || t < 0 || t > 100) {
      msg = "Enter a threshold between 0 and 100.";
    } else if (t < floor) {
      msg = `The threshold may not be below this collection's floor of ${fmtSimilarity(floor)}.`;
    }
    fieldError("threshold", "threshold-error", msg);
    return !msg;
  }
  if (name === "max-results") {
    const raw = $("max-results").value;
    const n = Number(raw);
    const cap = policy ? policy.max_results_cap : 4096;
    const msg = Number.isInteger(n) && n >= 1 && n <= cap ? ""
      : `Enter a whole number of candidates from 1 to ${fmtInt(cap)}.`;
    fieldError("max-results", "max-error", msg);
    return !msg;
  }
  if (name === "purpose" || name === "case-ref") {
    const value = $(name).value.trim();
    const what = name === "purpose" ? "a purpose" : "a case reference";
    let msg = "";
    if (policy && policy.require_purpose && !value) {
      msg = `This collection's policy requires ${what}.`;
    } else if (!headerSafe(value)) {
      msg = "Use plain ASCII characters (letters, digits, punctuation) here.";
    }
    fieldError(name, name === "purpose" ? "purpose-error" : "case-error", msg);
    return !msg;
  }
  return true;
}

function fieldError(inputId, errorId, msg) {
  setMessage($(errorId), msg);
  if (msg) $(inputId).setAttribute("aria-invalid", "true");
  else $(inputId).removeAttribute("aria-invalid");
}

// -- search -----------------------------------------------------------------------------

async function onSearch(ev) {
  ev.preventDefault();
  if (local.searching) return;
  setMessage($("search-error"), "");
  if (!local.collection) {
    setMessage($("search-error"), "Choose a collection first.");
    $("collection").focus();
    return;
  }
  const order = ["purpose", "case-ref", "threshold", "max-results"];
  const bad = order.filter((f) => !validateField(f));
  let fileMissing = false;
  if (!local.file) {
    setMessage($("probe-error"), "Choose a probe photo.");
    fileMissing = true;
  }
  if (bad.length || fileMissing) {
    setMessage($("search-error"), "Please correct the fields marked above.");
    (bad.length ? $(bad[0]) : $("probe")).focus();
    return;
  }
  const name = local.collection.info.name;
  const purpose = $("purpose").value.trim();
  const caseRef = $("case-ref").value.trim();
  const form = new FormData();
  form.append("image", local.file, local.file.name || "probe");
  form.append("threshold", $("threshold").value);
  form.append("max_results", $("max-results").value);
  const pick = chosenFace();
  if (pick === "all") form.append("all_faces", "true");
  else if (pick !== null) form.append("face", pick);

  const epoch = state.epoch;
  const fileSeq = local.fileSeq;
  local.searching = true;
  $("search-button").disabled = true;
  $("search-status").textContent = "Searching…";
  show($("results"), false);
  clear($("probe-results"));
  clear($("result-summary"));
  try {
    const answer = await api(`/v1/collections/${encodeURIComponent(name)}/search`,
      { method: "POST", form, headers: whyHeaders(purpose, caseRef) });
    if (stale(epoch)) return;
    $("search-status").textContent = "";
    drawBoxes($("boxes"), answer.width, answer.height, answer.probes.map((p, i) => ({
      box: p.face.box, label: `Face ${i + 1}`, colour: BOX_COLOURS[i % BOX_COLOURS.length] })));
    $("preview-caption").textContent =
      `${local.file.name || "Probe"}: ${answer.probes.length} face` +
      `${answer.probes.length === 1 ? "" : "s"} searched (boxes drawn from the search answer).`;
    await renderResults(answer, { collection: name, purpose, caseRef, epoch, fileSeq });
    if (stale(epoch)) return;
    show($("results"));
    $("results-h").focus();
  } catch (err) {
    if (stale(epoch)) return;
    $("search-status").textContent = "";
    if (handleAuthLoss(err)) return;
    const poor = err instanceof ApiError && /quality|recognis/i.test(`${err.code} ${err.message}`);
    const prefix = err instanceof ApiError && err.status === 422 && !poor ? "No face was found: "
      : poor ? "The search was refused because of the probe's quality: "
        : "The search was refused: ";
    setMessage($("search-error"), prefix + describeError(err));
    // A refusal may come from a policy changed since the page read it: show the current one.
    if (err instanceof ApiError && err.status === 400) await chooseCollection(name);
  } finally {
    if (!stale(epoch)) {
      local.searching = false;
      $("search-button").disabled = false;
    }
  }
}

async function renderResults(answer, ctx) {
  const known = (v) => v !== null && v !== undefined;
  const n = answer.collection_size;
  facts($("result-summary"), [
    ["Search id", el("code", { text: answer.search_id })],
    ["Collection", `${ctx.collection} (${fmtInt(n)} face${n === 1 ? "" : "s"})`],
    ["Threshold", fmtSimilarity(answer.threshold)],
    ["False-match rate (1:1)",
      known(answer.false_match_rate) ? fmtRate(answer.false_match_rate) : "unknown"],
    [`Expected FPIR at ${fmtInt(n)} face${n === 1 ? "" : "s"}`,
      known(answer.expected_fpir) ? fmtPercent(answer.expected_fpir) : "unknown"],
    ["Purpose", ctx.purpose || "(none stated)"],
    ["Case", ctx.caseRef || "(none stated)"],
    ["Model", answer.model_version],
  ]);
  // The enrolled faces' crops and what each candidate's similarity means, before drawing.
  const ids = [...new Set(answer.probes.flatMap((p) => p.matches.map((m) => m.face.face_id)))];
  const cards = new Map();
  if (ids.length && may("GetFaceCrops")) {
    try {
      // The crops of a collection whose searches need a purpose and case need them too.
      const got = await api(`/v1/collections/${encodeURIComponent(ctx.collection)}/crops`,
        { params: { face_id: ids }, headers: whyHeaders(ctx.purpose, ctx.caseRef) });
      for (const c of got.faces) cards.set(c.face.face_id, c);
    } catch (err) {
      if (handleAuthLoss(err)) return;
      // Without the crops the candidates are still listed; the page says why.
      ctx.cropError = describeError(err);
    }
  }
  const sims = [...new Set(answer.probes.flatMap((p) => p.matches.map((m) => m.similarity)))];
  const risks = new Map();
  await Promise.all(sims.map(async (s) => {
    try {
      risks.set(s, await api("/v1/calibration/risk", { params: { similarity: s } }));
    } catch (err) {
      risks.set(s, null);
    }
  }));
  if (stale(ctx.epoch)) return;
  const img = $("preview-img");
  const out = $("probe-results");
  clear(out);
  for (const w of answer.warnings || []) {
    out.append(el("p", { className: "warning",
      text: typeof w === "string" ? w : (w && w.message) || JSON.stringify(w) }));
  }
  if (ctx.cropError) {
    out.append(el("p", { className: "warning",
      text: `The enrolled faces' pictures could not be shown: ${ctx.cropError}` }));
  }
  answer.probes.forEach((probe, i) => {
    const probeCrop = ctx.fileSeq === local.fileSeq && img.naturalWidth
      ? cropFromImage(img, probe.face.box, probe.face.landmarks) : null;
    out.append(renderProbe(answer, probe, i, ctx, { cards, risks, probeCrop }));
  });
}

// The probe face's quality and the risk band that goes with it (when the server states
// them), and its warnings.
function probeQuality(answer, probe) {
  const q = probe.face.quality || {};
  const risk = probe.risk || probe.face.risk || answer.risk || {};
  const known = (v) => v !== null && v !== undefined;
  const rows = [];
  const recog = known(q.recognisability) ? q.recognisability : risk.recognisability;
  if (known(recog)) {
    rows.push(["Probe quality (recognisability)", `${Number(recog).toFixed(0)} of 100`]);
  }
  if (known(risk.quality_band)) {
    rows.push(["Risk band", `${risk.quality_band} (the rates above are this band's)`]);
  }
  const warnings = [...(probe.warnings || []), ...(probe.face.warnings || [])]
    .map((w) => (typeof w === "string" ? w : (w && w.message) || JSON.stringify(w)));
  return { rows, warnings };
}

// Candidates grouped by person: faces of one user (a person enrolled with several photos)
// make one entry, shown with that person's best face; faces of no user stay one each.
export function groupByPerson(matches) {
  const groups = [];
  const byUser = new Map();
  for (const m of matches) {
    const user = m.face.user_id;
    if (user && byUser.has(user)) {
      byUser.get(user).matches.push(m);
      continue;
    }
    const g = { user: user || null, best: m, matches: [m] };
    if (user) byUser.set(user, g);
    groups.push(g);
  }
  return groups;
}

function renderProbe(answer, probe, i, ctx, extra) {
  const colour = BOX_COLOURS[i % BOX_COLOURS.length];
  const section = el("section", { className: "probe", "aria-labelledby": `probe-h-${i}` });
  const swatch = el("span", { className: "swatch", "aria-hidden": "true" });
  swatch.style.borderColor = colour;
  const q = probe.face.quality;
  const quality = q && q.sharpness !== undefined ? `, sharpness ${q.sharpness.toFixed(0)}, ` +
    `brightness ${q.brightness.toFixed(0)}, yaw ${q.yaw.toFixed(0)}°` : "";
  section.append(
    el("h3", { id: `probe-h-${i}` }, swatch, `Face ${i + 1} of the probe`),
    el("p", { className: "muted small",
      text: `Box [${probe.face.box.map((v) => Math.round(v)).join(", ")}] px, detector score ` +
        `${probe.face.score.toFixed(2)}${quality}` }),
  );
  const pq = probeQuality(answer, probe);
  if (pq.rows.length) {
    const dl = el("dl", { className: "facts probe-quality" });
    facts(dl, pq.rows);
    section.append(dl);
  }
  for (const w of pq.warnings) section.append(el("p", { className: "warning", text: w }));
  if (!probe.matches.length) {
    section.append(el("p", { className: "empty",
      text: `No candidates at or above similarity ${fmtSimilarity(answer.threshold)}.` }));
    return section;
  }
  const groups = groupByPerson(probe.matches);
  const list = el("ol", { className: "gallery",
    "aria-label": `Candidates for face ${i + 1}, best first, one per person — leads for ` +
      "human review, not identifications" });
  groups.forEach((g, rank) => {
    list.append(renderCandidate(answer, g, i, rank, ctx, extra));
  });
  section.append(list);
  return section;
}

function cropFigure(url, alt, caption, size) {
  const stage = el("div", { className: "crop-stage" });
  if (url) stage.append(el("img", { src: url, alt, width: size || 160, height: size || 160 }));
  else stage.append(el("p", { className: "no-crop", text: "No picture kept" }));
  return el("figure", {}, stage, el("figcaption", { text: caption }));
}

function renderCandidate(answer, group, probeIndex, rank, ctx, extra) {
  const m = group.best;
  const idBase = `c-${probeIndex}-${rank}`;
  const ext = m.face.external_id;
  const card = extra.cards.get(m.face.face_id);
  const risk = extra.risks.get(m.similarity);
  const who = group.user || ext || "(no external id)";
  const { note: noteInput, status, buttons } = reviewControls(idBase,
    (decision, ...ui) => review(answer, m, decision, ...ui, ctx), "p");
  const compare = el("button", { type: "button", className: "secondary compare",
    text: "Compare side by side" });
  compare.addEventListener("click", () => openCompare(m, card, extra.probeCrop, risk, rank,
    who));
  const fmr = fmrText(risk);
  const label = `Note on candidate ${rank + 1}${who ? ` (${who})` : ""}`;
  const rows = [];
  if (group.user) {
    const n = group.matches.length;
    rows.push(el("div", {}, el("dt", { text: "Person" }),
      el("dd", { className: "person-id" }, el("strong", { text: group.user }),
        n > 1 ? ` (${n} of their faces matched: ` +
          `${group.matches.map((x) => fmtSimilarity(x.similarity)).join(", ")}; the best is shown)`
          : " (1 face matched)")));
  }
  rows.push(
    el("div", {}, el("dt", { text: "Similarity" }),
      el("dd", { className: "sim", text: fmtSimilarity(m.similarity) })),
    el("div", {}, el("dt", { text: "False-match risk at this score" }),
      el("dd", { text: fmr })),
    m.enrolled_quality_band ? el("div", {}, el("dt", { text: "Enrolled face quality" }),
      el("dd", { className: m.enrolled_poor_quality ? "poor" : "",
        text: m.enrolled_quality_band + (m.enrolled_poor_quality
          ? ": poor, the similarity overstates the evidence" : "") })) : null,
    el("div", {}, el("dt", { text: "External id" }),
      el("dd", { className: "ext", text: ext || "(none)" })),
    el("div", {}, el("dt", { text: "Source" }),
      el("dd", { text: card && card.source_name ? card.source_name : "(not recorded)" })),
    el("div", {}, el("dt", { text: "Face id" }),
      el("dd", {}, el("code", { className: "face-id", text: m.face.face_id }))));
  return el("li", { className: "candidate", id: idBase, "data-face-id": m.face.face_id,
    "data-external-id": ext || "", "data-person": group.user || "",
    "data-faces": group.matches.length, "data-similarity": m.similarity },
    el("p", { className: "rank", text: `${rank + 1}` }),
    el("div", { className: "pair" },
      cropFigure(extra.probeCrop ? extra.probeCrop.url : null, `The probe's face ${probeIndex + 1}`,
        "Probe"),
      cropFigure(card && card.crop ? jpegUrl(card.crop.data) : null,
        `The enrolled face of ${who}`, group.user ? `${group.user}'s best face` : "Enrolled")),
    el("dl", { className: "facts cand-facts" }, ...rows),
    compare,
    el("div", { className: "review" },
      el("label", { for: `${idBase}-note`, className: "small", text: label }),
      noteInput,
      el("div", { className: "decisions", role: "group",
        "aria-label": `Decision on candidate ${rank + 1}` }, ...buttons),
      status));
}

// The false-match rate at a candidate's score, the same text everywhere it is shown.
function fmrText(risk) {
  return risk ? fmtRate(risk.false_match_rate) + (risk.extrapolated ? " (extrapolated)" : "")
    : "unknown";
}

// -- compare side by side -----------------------------------------------------------------

const compareState = { probe: null, card: null };

function openCompare(m, card, probeCrop, risk, rank, who) {
  compareState.probe = probeCrop;
  compareState.card = card;
  const probeImg = $("compare-probe");
  const candImg = $("compare-candidate");
  if (probeCrop) probeImg.src = probeCrop.url;
  else probeImg.removeAttribute("src");
  if (card && card.crop) candImg.src = jpegUrl(card.crop.data);
  else candImg.removeAttribute("src");
  $("compare-candidate-caption").textContent =
    `Candidate ${rank + 1}: ${who}` +
    (card && !card.crop ? " — no picture kept for this face" : "");
  facts($("compare-facts"), [
    ["Similarity", fmtSimilarity(m.similarity)],
    ["False-match risk at this score", fmrText(risk)],
    ["Source", card && card.source_name ? card.source_name : "(not recorded)"],
  ]);
  applyLandmarks();
  $("compare").showModal();
}

function applyLandmarks() {
  const on = $("compare-landmarks").checked;
  const p = compareState.probe;
  const c = compareState.card && compareState.card.crop;
  drawMarks($("compare-probe-marks"), p ? p.size : 160, on && p ? p.landmarks : []);
  drawMarks($("compare-candidate-marks"), c ? c.size : 160, on && c ? c.landmarks : []);
}

// -- review -----------------------------------------------------------------------------

async function review(answer, m, decision, noteInput, status, buttons, ctx) {
  // Under the search's purpose and case: the review is part of the same case's record.
  await recordReview({ searchId: answer.search_id, faceId: m.face.face_id, decision,
    note: noteInput.value, collection: ctx.collection,
    why: { purpose: ctx.purpose, caseRef: ctx.caseRef }, status, buttons });
}

// -- "what does a threshold mean?" ------------------------------------------------------

async function onHelper(ev) {
  ev.preventDefault();
  const pct = Number($("target-fpir").value);
  const n = Number($("gallery-size").value);
  const out = $("helper-answer");
  clear(out);
  if (!(pct > 0 && pct < 100) || !Number.isInteger(n) || n < 1) {
    setMessage($("helper-error"), "Enter a target FPIR between 0 and 100 % and a whole number of faces.");
    return;
  }
  setMessage($("helper-error"), "");
  const epoch = state.epoch;
  let a;
  try {
    a = await api("/v1/calibration/threshold", { params: { fpir: pct / 100, gallery_size: n } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("helper-error"), `Could not answer: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  const t = a.threshold.similarity;
  out.append(el("p", {},
    "A threshold of ", el("strong", { text: fmtSimilarity(t) }),
    ` keeps the expected FPIR at or below ${fmtPercent(a.target_fpir)} on ${fmtInt(a.gallery_size)} faces`,
    ` (it needs a 1:1 false-match rate of at most ${fmtRate(a.required_fmr)}).`));
  const box = el("div", { className: "risk" });
  renderRisk(box, a.threshold, null);
  out.append(box);
  if (a.note) out.append(el("p", { className: a.threshold.extrapolated ? "warning" : "muted", text: a.note }));
  if (local.collection) {
    const floor = local.collection.policy.threshold_floor;
    if (t >= floor) {
      const use = el("button", { type: "button", className: "secondary",
        text: `Use ${fmtSimilarity(t)} for this search` });
      use.addEventListener("click", () => {
        setThreshold(t);
        $("threshold").dataset.touched = "1";
        validateField("threshold");
        scheduleRisk(0);
        $("threshold").focus();
      });
      out.append(use);
    } else {
      out.append(el("p", { className: "muted",
        text: `That is below ${local.collection.info.name}'s floor of ${fmtSimilarity(floor)}, ` +
          "which it would refuse." }));
    }
  }
}
