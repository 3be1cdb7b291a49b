// facesearch analyst page: plain JavaScript, no build step, no third-party code.
//
// Every API call goes to this server (same origin, relative to the page) and carries the
// analyst's key as `Authorization: Bearer <key id>:<secret>`. The key is kept in this tab's
// sessionStorage only; "Sign out" removes it. Everything the API returns is put into the page
// with textContent / DOM nodes, never parsed as HTML.
"use strict";

(() => {
  const STORAGE_KEY = "facesearch.key";
  const DEFAULT_THRESHOLD = 80;
  const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
  const BOX_COLOURS = ["#d4351c", "#1d70b8", "#00703c", "#912b88", "#f47738", "#28a197"];
  // The API lives next to the page: /ui/ -> /v1/...
  const API_ROOT = new URL("../", document.baseURI);

  const state = {
    key: null, // {id, secret}
    role: null,
    collections: [],
    collection: null, // {info, policy}
    file: null,
    previewUrl: null,
    riskSeq: 0,
    riskTimer: null,
    searching: false,
    epoch: 0, // bumped by "Sign out": answers to an earlier session's requests are dropped
  };

  const stale = (epoch) => epoch !== state.epoch;

  const $ = (id) => document.getElementById(id);

  // -- small DOM helpers: text and nodes only, never markup ----------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
  }

  function show(node, on = true) {
    node.hidden = !on;
  }

  function setMessage(node, text) {
    node.textContent = text || "";
    show(node, Boolean(text));
  }

  function facts(dl, rows) {
    clear(dl);
    for (const [term, ...desc] of rows) {
      dl.append(el("div", {}, el("dt", { text: term }), el("dd", {}, ...desc)));
    }
  }

  // -- numbers ----------------------------------------------------------------------------

  const intFmt = new Intl.NumberFormat("en");

  function fmtInt(n) {
    return intFmt.format(n);
  }

  // Similarities with two decimals, or up to four near 100, where the scale saturates.
  function fmtSimilarity(s) {
    const v = Number(s);
    if (v >= 99 && v < 100) return v.toFixed(4).replace(/(\.\d\d\d*?)0+$/, "$1");
    return v.toFixed(2);
  }

  function fmtPercent(rate) {
    const p = rate * 100;
    if (p === 0) return "0 %";
    if (p >= 99 && p < 100) return `${p.toFixed(2) === "100.00" ? "over 99.99" : p.toFixed(2)} %`;
    if (p >= 10) return `${p.toFixed(0)} %`;
    return `${Number(p.toPrecision(2))} %`;
  }

  // A rate as "1.2e-5 (about 1 in 83,000)"
  function fmtRate(rate) {
    if (rate === null || rate === undefined) return "unknown";
    if (rate === 0) return "0";
    if (rate >= 0.01) return fmtPercent(rate);
    const exp = rate.toExponential(1);
    const oneIn = 1 / rate;
    const rounded = oneIn >= 1000 ? Number(oneIn.toPrecision(2)) : Math.round(oneIn);
    return `${exp} (about 1 in ${fmtInt(rounded)})`;
  }

  function fmtTime(ts) {
    return new Date(ts * 1000).toLocaleString();
  }

  // -- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  function describeError(err) {
    if (err instanceof ApiError) {
      const what = err.status ? `${err.code}, HTTP ${err.status}` : err.code;
      return `${err.message} (${what})`;
    }
    return String(err && err.message ? err.message : err);
  }

  function apiUrl(path, params) {
    const url = new URL(path.replace(/^\//, ""), API_ROOT);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, String(v));
    }
    if (url.origin !== window.location.origin) throw new Error("refusing a cross-origin URL");
    return url;
  }

  async function api(path, { method = "GET", params, json, form, headers, key } = {}) {
    const creds = key || state.key;
    const h = new Headers(headers || {});
    if (creds) h.set("Authorization", `Bearer ${creds.id}:${creds.secret}`);
    let body;
    if (json !== undefined) {
      h.set("Content-Type", "application/json");
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    let resp;
    try {
      resp = await fetch(apiUrl(path, params), {
        method, headers: h, body, credentials: "omit", cache: "no-store", redirect: "error",
      });
    } catch (e) {
      throw new ApiError("network_error", `The server could not be reached: ${e.message}`, 0);
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!resp.ok) {
      const code = data && typeof data.code === "string" ? data.code : `http_${resp.status}`;
      let message = data && typeof data.message === "string" ? data.message : "";
      if (!message) message = resp.statusText || "The request failed";
      if (resp.status === 503 && resp.headers.get("Retry-After")) {
        message += ` Try again in ${resp.headers.get("Retry-After")} s.`;
      }
      throw new ApiError(code, message, resp.status);
    }
    return data;
  }

  // Header values must be plain printable ASCII.
  function headerSafe(value) {
    return /^[\x20-\x7e]*$/.test(value);
  }

  // -- sign in / out ----------------------------------------------------------------------

  function loadKey() {
    try {
      const raw = sessionStorage.getItem(STORAGE_KEY);
      if (!raw) return null;
      const k = JSON.parse(raw);
      return k && typeof k.id === "string" && typeof k.secret === "string" ? k : null;
    } catch (e) {
      return null;
    }
  }

  async function signIn(key, { quiet = false } = {}) {
    const who = await api("/v1/whoami", { key });
    state.key = key;
    state.role = who.role;
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(key));
    $("key-secret").value = "";
    $("who-key").textContent = who.key_id;
    $("who-role").textContent = who.role || "unknown";
    show($("session"));
    show($("signin"), false);
    show($("workspace"));
    const roles = who.roles || (who.role ? who.role.split(",") : []);
    const warn = roles.includes("searcher") ? "" :
      `This key's role is ${who.role}: it can look at collections and thresholds, but only a ` +
      "searcher key can search and record reviews.";
    setMessage($("role-warning"), warn);
    await loadCollections();
    if (!quiet) $("collection").focus();
  }

  function signOut() {
    sessionStorage.removeItem(STORAGE_KEY);
    state.epoch += 1;
    clearTimeout(state.riskTimer);
    state.riskSeq += 1;
    state.searching = false;
    $("search-button").disabled = false;
    $("search-status").textContent = "";
    clear($("helper-answer"));
    setMessage($("helper-error"), "");
    state.key = null;
    state.role = null;
    state.collections = [];
    state.collection = null;
    setProbe(null);
    $("signin-form").reset();
    $("search-form").reset();
    clear($("collection"));
    clear($("collection-info"));
    clear($("probe-results"));
    clear($("result-summary"));
    show($("results"), false);
    show($("workspace"), false);
    show($("session"), false);
    show($("signin"));
    for (const id of ["signin-error", "search-error", "collection-error", "role-warning"]) {
      setMessage($(id), "");
    }
    $("key-id").focus();
  }

  async function onSignIn(ev) {
    ev.preventDefault();
    const id = $("key-id").value.trim();
    const secret = $("key-secret").value;
    if (!id || !secret) {
      setMessage($("signin-error"), "Enter the access key id and its secret.");
      return;
    }
    if (!headerSafe(id) || !headerSafe(secret)) {
      setMessage($("signin-error"), "An access key id and secret are plain ASCII characters.");
      return;
    }
    setMessage($("signin-error"), "");
    $("sign-in").disabled = true;
    try {
      await signIn({ id, secret });
    } catch (err) {
      setMessage($("signin-error"), `Sign-in failed: ${describeError(err)}`);
    } finally {
      $("sign-in").disabled = false;
    }
  }

  // An answer of 401 in the middle of the work: the key was revoked or expired.
  function handleAuthLoss(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut();
      setMessage($("signin-error"), `Your key was refused; sign in again. ${describeError(err)}`);
      return true;
    }
    return false;
  }

  // -- collections ------------------------------------------------------------------------

  async function loadCollections() {
    const select = $("collection");
    const epoch = state.epoch;
    setMessage($("collection-error"), "");
    const all = [];
    let token = null;
    try {
      do {
        const page = await api("/v1/collections", { params: { max_results: 1000, next_token: token } });
        all.push(...page.collections);
        token = page.next_token;
      } while (token);
    } catch (err) {
      if (stale(epoch) || handleAuthLoss(err)) return;
      setMessage($("collection-error"), `Could not list collections: ${describeError(err)}`);
      return;
    }
    if (stale(epoch)) return;
    const previous = select.value;
    state.collections = all;
    clear(select);
    if (!all.length) {
      select.append(el("option", { value: "", text: "(no collections)" }));
      state.collection = null;
      clear($("collection-info"));
      renderRiskPlaceholder("There are no collections to search yet.");
      return;
    }
    for (const c of all) {
      select.append(el("option", { value: c.name, text: `${c.name} (${fmtInt(c.faces)} faces)` }));
    }
    if (all.some((c) => c.name === previous)) select.value = previous;
    await chooseCollection(select.value);
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
      state.collection = null;
      clear($("collection-info"));
      setMessage($("collection-error"), `Could not read collection ${name}: ${describeError(err)}`);
      return;
    }
    if (stale(epoch) || $("collection").value !== name) return; // another one was chosen
    state.collection = { info, policy: policy.effective };
    renderCollection();
    applyPolicy();
    $("gallery-size").value = String(Math.max(1, info.faces));
    scheduleRisk(0);
  }

  function renderCollection() {
    const { info, policy } = state.collection;
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
    const { policy } = state.collection;
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
    const range = $("threshold-range");
    const num = $("threshold");
    range.min = String(floor);
    num.min = String(floor);
    $("floor-hint").textContent = floor > 0
      ? `This collection refuses thresholds below its floor of ${fmtSimilarity(floor)}.`
      : "";
    // A threshold the analyst chose is kept (and flagged if below the floor), never raised.
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
    clearTimeout(state.riskTimer);
    state.riskTimer = setTimeout(updateRisk, delay);
  }

  async function updateRisk() {
    if (!state.collection) return;
    const t = Number($("threshold").value);
    if (!Number.isFinite(t) || t < 0 || t > 100 || $("threshold").value === "") {
      renderRiskPlaceholder("Enter a threshold between 0 and 100.");
      return;
    }
    const seq = ++state.riskSeq;
    const coll = state.collection;
    const name = coll.info.name;
    let r;
    try {
      r = await api("/v1/calibration/risk", { params: { similarity: t, collection: name } });
    } catch (err) {
      if (seq !== state.riskSeq || state.collection !== coll || handleAuthLoss(err)) return;
      if (err instanceof ApiError && err.status === 404 && err.code !== "collection_not_found") {
        renderRiskPlaceholder(`What this threshold means is not known: ${err.message}.`);
      } else {
        renderRiskPlaceholder(`Could not get this threshold's error rates: ${describeError(err)}`);
      }
      return;
    }
    if (seq !== state.riskSeq || state.collection !== coll) return; // a newer one is on its way
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

  // -- the probe photo --------------------------------------------------------------------

  function setProbe(file) {
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
    state.file = file;
    clear($("boxes"));
    if (!file) {
      $("preview-img").removeAttribute("src");
      show($("preview"), false);
      return;
    }
    state.previewUrl = URL.createObjectURL(file);
    $("preview-img").src = state.previewUrl;
    $("preview-caption").textContent = `${file.name} (${fmtInt(Math.ceil(file.size / 1024))} KB)`;
    show($("preview"));
    setMessage($("probe-error"), "");
  }

  function acceptFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      setMessage($("probe-error"), `${file.name} is not an image.`);
      return;
    }
    setProbe(file);
  }

  function drawBoxes(answer) {
    const svg = $("boxes");
    clear(svg);
    svg.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
    const size = Math.max(answer.width, answer.height);
    const font = Math.max(12, size / 28);
    answer.probes.forEach((p, i) => {
      const [x1, y1, x2, y2] = p.face.box;
      const colour = BOX_COLOURS[i % BOX_COLOURS.length];
      const rect = document.createElementNS(SVG_NS, "rect");
      rect.setAttribute("x", x1);
      rect.setAttribute("y", y1);
      rect.setAttribute("width", Math.max(1, x2 - x1));
      rect.setAttribute("height", Math.max(1, y2 - y1));
      rect.setAttribute("stroke", colour);
      rect.setAttribute("class", "box");
      const label = document.createElementNS(SVG_NS, "text");
      label.setAttribute("x", x1);
      label.setAttribute("y", Math.max(font, y1 - font * 0.3));
      label.setAttribute("fill", colour);
      label.setAttribute("font-size", font);
      label.setAttribute("class", "box-label");
      label.textContent = `Face ${i + 1}`;
      svg.append(rect, label);
    });
    $("preview-caption").textContent =
      `${state.file ? state.file.name : "Probe"}: ${answer.probes.length} face` +
      `${answer.probes.length === 1 ? "" : "s"} searched (boxes drawn from the search answer).`;
  }

  // -- validation -------------------------------------------------------------------------

  function validateField(name) {
    const policy = state.collection ? state.collection.policy : null;
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
      const input = $(name);
      const value = input.value.trim();
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
    if (state.searching) return;
    setMessage($("search-error"), "");
    if (!state.collection) {
      setMessage($("search-error"), "Choose a collection first.");
      $("collection").focus();
      return;
    }
    const order = ["purpose", "case-ref", "threshold", "max-results"];
    const bad = order.filter((f) => !validateField(f));
    let fileMissing = false;
    if (!state.file) {
      setMessage($("probe-error"), "Choose a probe photo.");
      fileMissing = true;
    }
    if (bad.length || fileMissing) {
      const first = bad.length ? $(bad[0]) : $("probe");
      setMessage($("search-error"), "Please correct the fields marked above.");
      first.focus();
      return;
    }
    const name = state.collection.info.name;
    const purpose = $("purpose").value.trim();
    const caseRef = $("case-ref").value.trim();
    const headers = {};
    if (purpose) headers["X-Facesearch-Purpose"] = purpose;
    if (caseRef) headers["X-Facesearch-Case"] = caseRef;
    const form = new FormData();
    form.append("image", state.file, state.file.name || "probe");
    form.append("threshold", $("threshold").value);
    form.append("max_results", $("max-results").value);
    form.append("all_faces", $("all-faces").checked ? "true" : "false");

    const epoch = state.epoch;
    state.searching = true;
    $("search-button").disabled = true;
    $("search-status").textContent = "Searching…";
    clear($("boxes"));
    show($("results"), false);
    clear($("probe-results"));
    clear($("result-summary"));
    try {
      const answer = await api(`/v1/collections/${encodeURIComponent(name)}/search`,
        { method: "POST", form, headers });
      if (stale(epoch)) return;
      $("search-status").textContent = "";
      renderResults(answer, { collection: name, purpose, caseRef });
      drawBoxes(answer);
      show($("results"));
      $("results-h").focus();
    } catch (err) {
      if (stale(epoch)) return;
      $("search-status").textContent = "";
      if (handleAuthLoss(err)) return;
      const prefix = err instanceof ApiError && err.status === 422 ? "No face was found: "
        : "The search was refused: ";
      setMessage($("search-error"), prefix + describeError(err));
      // A refusal may come from a policy changed since the page read it: show the current one.
      if (err instanceof ApiError && err.status === 400) await chooseCollection(name);
    } finally {
      if (!stale(epoch)) {
        state.searching = false;
        $("search-button").disabled = false;
      }
    }
  }

  function renderResults(answer, ctx) {
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
    const out = $("probe-results");
    clear(out);
    answer.probes.forEach((probe, i) => {
      out.append(renderProbe(answer, probe, i, ctx));
    });
  }

  function renderProbe(answer, probe, i, ctx) {
    const colour = BOX_COLOURS[i % BOX_COLOURS.length];
    const section = el("section", { className: "probe", "aria-labelledby": `probe-h-${i}` });
    const swatch = el("span", { className: "swatch", "aria-hidden": "true" });
    swatch.style.borderColor = colour;
    const q = probe.face.quality;
    const quality = q ? `, sharpness ${q.sharpness.toFixed(0)}, brightness ${q.brightness.toFixed(0)}, ` +
      `yaw ${q.yaw.toFixed(0)}°` : "";
    section.append(
      el("h3", { id: `probe-h-${i}` }, swatch, `Face ${i + 1} of the probe`),
      el("p", { className: "muted small",
        text: `Box [${probe.face.box.map((v) => Math.round(v)).join(", ")}] px, detector score ` +
          `${probe.face.score.toFixed(2)}${quality}` }),
    );
    if (!probe.matches.length) {
      section.append(el("p", { className: "empty",
        text: `No candidates at or above similarity ${fmtSimilarity(answer.threshold)}.` }));
      return section;
    }
    const table = el("table", { className: "candidates" },
      el("caption", { text: `Candidates for face ${i + 1}, best first — leads for human review, not identifications` }),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col", text: "Rank" }),
        el("th", { scope: "col", text: "Similarity" }),
        el("th", { scope: "col", text: "External id" }),
        el("th", { scope: "col", text: "Face id" }),
        el("th", { scope: "col", text: "Your review" }))));
    const tbody = el("tbody");
    probe.matches.forEach((m, rank) => {
      tbody.append(renderCandidate(answer, m, i, rank, ctx));
    });
    table.append(tbody);
    section.append(el("div", { className: "table-wrap" }, table));
    return section;
  }

  function renderCandidate(answer, m, probeIndex, rank, ctx) {
    const idBase = `c-${probeIndex}-${rank}`;
    const ext = m.face.external_id;
    const noteInput = el("input", { id: `${idBase}-note`, type: "text", maxlength: 4000,
      autocomplete: "off", className: "note" });
    const status = el("p", { className: "review-status", role: "status", id: `${idBase}-status` });
    const buttons = ["confirmed", "rejected", "inconclusive"].map((decision) => {
      const b = el("button", { type: "button", className: `decision ${decision}`, text: decision,
        "aria-describedby": `${idBase}-status` });
      b.addEventListener("click", () => review(answer, m, decision, noteInput, status, buttons, ctx));
      return b;
    });
    const label = `Note on candidate ${rank + 1}${ext ? ` (${ext})` : ""}`;
    return el("tr", {},
      el("td", { className: "rank", text: String(rank + 1) }),
      el("td", { className: "sim", text: fmtSimilarity(m.similarity) }),
      el("td", {}, ext ? el("span", { className: "ext", text: ext }) :
        el("span", { className: "muted", text: "(none)" })),
      el("td", {}, el("code", { className: "face-id", text: m.face.face_id })),
      el("td", { className: "review" },
        el("label", { for: `${idBase}-note`, className: "small", text: label }),
        noteInput,
        el("div", { className: "decisions", role: "group", "aria-label": `Decision on candidate ${rank + 1}` },
          ...buttons),
        status));
  }

  async function review(answer, m, decision, noteInput, status, buttons, ctx) {
    const epoch = state.epoch;
    buttons.forEach((b) => { b.disabled = true; });
    status.className = "review-status";
    status.textContent = "Recording…";
    try {
      await api("/v1/reviews", { method: "POST", json: {
        search_id: answer.search_id, face_id: m.face.face_id, decision,
        note: noteInput.value, collection: ctx.collection,
      } });
      if (stale(epoch)) return;
      status.className = "review-status ok";
      status.textContent = `Recorded: ${decision}` +
        (noteInput.value ? ` ("${noteInput.value}")` : "") +
        ` at ${new Date().toLocaleTimeString()}.`;
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.textContent === decision)));
    } catch (err) {
      if (stale(epoch) || handleAuthLoss(err)) return;
      status.className = "review-status bad";
      status.textContent = `Not recorded: ${describeError(err)}`;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
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
    if (state.collection) {
      const floor = state.collection.policy.threshold_floor;
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
          text: `That is below ${state.collection.info.name}'s floor of ${fmtSimilarity(floor)}, ` +
            "which it would refuse." }));
      }
    }
  }

  // -- wiring -----------------------------------------------------------------------------

  function wire() {
    $("signin-form").addEventListener("submit", onSignIn);
    $("sign-out").addEventListener("click", signOut);
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
      const file = ev.dataTransfer && ev.dataTransfer.files[0];
      acceptFile(file);
    });
    // A photo dropped anywhere else must not make the browser navigate away from the page.
    window.addEventListener("dragover", (ev) => ev.preventDefault());
    window.addEventListener("drop", (ev) => ev.preventDefault());
  }

  async function start() {
    wire();
    const key = loadKey();
    if (key) {
      try {
        await signIn(key, { quiet: true });
        return;
      } catch (err) {
        sessionStorage.removeItem(STORAGE_KEY);
        setMessage($("signin-error"), `Sign in again: ${describeError(err)}`);
      }
    }
    show($("signin"));
  }

  document.documentElement.dataset.ready = "false";
  start().finally(() => {
    document.documentElement.dataset.ready = "true";
  });
})();
