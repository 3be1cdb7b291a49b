// facesearch web app: what every page shares. Plain JavaScript modules, no build step, no
// third-party code.
//
// Every API call goes to this server (same origin, relative to the page) and carries the
// user's key as `Authorization: Bearer <key id>:<secret>`. The key is kept in this page's
// memory only (never in any storage): a reload or a closed tab forgets it. Everything the API returns is put into the page with textContent / DOM
// nodes, never parsed as HTML; images come as base64 JPEG (data: URLs) or blobs.

export const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
// The API lives next to the page: /ui/ -> /v1/...
const API_ROOT = new URL("../", document.baseURI);

export const state = {
  key: null, // {id, secret}
  role: null,
  operations: new Set(),
  epoch: 0, // bumped by "Sign out": answers to an earlier session's requests are dropped
};

export const stale = (epoch) => epoch !== state.epoch;

export const $ = (id) => document.getElementById(id);

/** Whether the signed-in key may call an operation (the server's role table says). */
export const may = (op) => state.operations.has(op);

// -- small DOM helpers: text and nodes only, never markup ----------------------------------

export function el(tag, attrs, ...children) {
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

export function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, String(v));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
}

export function show(node, on = true) {
  node.hidden = !on;
}

export function setMessage(node, text) {
  node.textContent = text || "";
  show(node, Boolean(text));
}

export function facts(dl, rows) {
  clear(dl);
  for (const [term, ...desc] of rows) {
    dl.append(el("div", {}, el("dt", { text: term }), el("dd", {}, ...desc)));
  }
}

/** An erasure receipt (POST /v1/collections/{c}/erase) as facts. */
export function receiptFacts(dl, r) {
  facts(dl, [
    ["Receipt", el("code", { text: r.receipt_id })],
    ["Collection", r.collection],
    ["Faces erased", fmtInt(r.face_ids.length)],
    ["Pictures (crops) erased", fmtInt(r.crops_erased)],
    ["Images erased", fmtInt(r.images_erased)],
    ["Derived records erased", `${fmtInt(r.derived_erased)} (stream snapshots, video results)`],
    ["When", fmtTime(r.erased_at)],
    ["Face ids", el("span", { className: "small" }, ...r.face_ids.flatMap((f) => [
      el("code", { text: f }), " "]))],
  ]);
}

/** Name each body cell after its column (data-label), for the narrow layout in which a
 *  table's rows become blocks (CSS, table.stack). */
export function labelCells(table) {
  // Columns named for screen readers only (buttons) get no visible label.
  const heads = [...table.tHead.rows[0].cells].map((c) =>
    (c.querySelector(".visually-hidden") ? "" : c.textContent.trim()));
  for (const row of table.tBodies[0].rows) {
    [...row.cells].forEach((cell, i) => {
      if (heads[i] && row.cells.length === heads.length) cell.setAttribute("data-label", heads[i]);
    });
  }
}

export function jpegUrl(base64) {
  return `data:image/jpeg;base64,${base64}`;
}

// -- numbers ----------------------------------------------------------------------------

const intFmt = new Intl.NumberFormat("en");

export function fmtInt(n) {
  return intFmt.format(n);
}

// Similarities with two decimals, or up to four near 100, where the scale saturates.
export function fmtSimilarity(s) {
  const v = Number(s);
  if (v >= 99 && v < 100) return v.toFixed(4).replace(/(\.\d\d\d*?)0+$/, "$1");
  return v.toFixed(2);
}

export function fmtPercent(rate) {
  const p = rate * 100;
  if (p === 0) return "0 %";
  if (p >= 99 && p < 100) return `${p.toFixed(2) === "100.00" ? "over 99.99" : p.toFixed(2)} %`;
  if (p >= 10) return `${p.toFixed(0)} %`;
  return `${Number(p.toPrecision(2))} %`;
}

// A rate as "1.2e-5 (about 1 in 83,000)"
export function fmtRate(rate) {
  if (rate === null || rate === undefined) return "unknown";
  if (rate === 0) return "0";
  if (rate >= 0.01) return fmtPercent(rate);
  // "1 in N" from the rate as shown (two significant figures), so that two panels showing
  // the same rate (rounded or not by the API) always say the same N.
  const exp = rate.toExponential(1);
  const rounded = Number((1 / Number(exp)).toPrecision(2));
  return `${exp} (about 1 in ${fmtInt(rounded)})`;
}

export function fmtTime(ts) {
  return new Date(ts * 1000).toLocaleString();
}

// Milliseconds of video as m:ss.s
export function fmtMs(ms) {
  const s = ms / 1000;
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

// -- the API ----------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export function describeError(err) {
  if (err instanceof ApiError) {
    const what = err.status ? `${err.code}, HTTP ${err.status}` : err.code;
    return `${err.message} (${what})`;
  }
  return String(err && err.message ? err.message : err);
}

export function apiUrl(path, params) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, String(x)));
    else url.searchParams.set(k, String(v));
  }
  if (url.origin !== window.location.origin) throw new Error("refusing a cross-origin URL");
  return url;
}

function authHeaders(headers, key) {
  const creds = key || state.key;
  const h = new Headers(headers || {});
  if (creds) h.set("Authorization", `Bearer ${creds.id}:${creds.secret}`);
  return h;
}

async function errorOf(resp) {
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  const code = data && typeof data.code === "string" ? data.code : `http_${resp.status}`;
  let message = data && typeof data.message === "string" ? data.message : "";
  if (!message) message = resp.statusText || "The request failed";
  if (resp.status === 503 && resp.headers.get("Retry-After")) {
    message += ` Try again in ${resp.headers.get("Retry-After")} s.`;
  }
  return new ApiError(code, message, resp.status);
}

async function send(path, { method = "GET", params, json, form, headers, key, signal } = {}) {
  const h = authHeaders(headers, key);
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
      signal,
    });
  } catch (e) {
    if (e && e.name === "AbortError") throw e;
    throw new ApiError("network_error", `The server could not be reached: ${e.message}`, 0);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

/** A JSON call. */
export async function api(path, opts = {}) {
  const resp = await send(path, opts);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** A call whose answer is a file (an image, an export, a report): a Blob. */
export async function apiBlob(path, opts = {}) {
  const resp = await send(path, opts);
  return resp.blob();
}

/** Server-Sent Events from a /v1 route, read with fetch (EventSource cannot send the key):
 *  calls onEvent(name, data) for each event until the feed ends or `signal` aborts. */
export async function sse(path, { signal, onEvent, params }) {
  const resp = await send(path, { signal, params, headers: { Accept: "text/event-stream" } });
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

/** A multipart POST with upload progress (XMLHttpRequest: fetch reports none). Resolves
 *  with the JSON answer; onProgress(fraction) while the body is sent. */
export function upload(path, form, { headers, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl(path).href);
    for (const [k, v] of authHeaders(headers)) xhr.setRequestHeader(k, v);
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable && onProgress) onProgress(ev.loaded / ev.total);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch (e) {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(data);
        return;
      }
      const code = data && typeof data.code === "string" ? data.code : `http_${xhr.status}`;
      const msg = data && typeof data.message === "string" ? data.message : "The upload failed";
      reject(new ApiError(code, msg, xhr.status));
    });
    xhr.addEventListener("error", () => reject(new ApiError("network_error",
      "The server could not be reached", 0)));
    xhr.send(form);
  });
}

// Header values must be plain printable ASCII.
export function headerSafe(value) {
  return /^[\x20-\x7e]*$/.test(value);
}

/** X-Facesearch-Purpose and -Case headers for the values given (empty ones left out). */
export function whyHeaders(purpose, caseRef) {
  const h = {};
  if (purpose) h["X-Facesearch-Purpose"] = purpose;
  if (caseRef) h["X-Facesearch-Case"] = caseRef;
  return h;
}

// An answer of 401 in the middle of the work: the key was revoked or expired. The app signs
// out (it listens for this event).
// The controls of one candidate's review: a note, a status line (``statusTag``) and one button
// per decision; a click calls ``onDecide(decision, note, status, buttons)``.
export function reviewControls(idBase, onDecide, statusTag = "span") {
  const note = el("input", { id: `${idBase}-note`, type: "text", maxlength: 4000,
    autocomplete: "off", className: "note" });
  const status = el(statusTag, { className: "review-status", role: "status",
    id: `${idBase}-status` });
  const buttons = ["confirmed", "rejected", "inconclusive"].map((decision) => {
    const b = el("button", { type: "button", className: `decision ${decision}`,
      text: decision, "aria-describedby": `${idBase}-status` });
    b.addEventListener("click", () => onDecide(decision, note, status, buttons));
    return b;
  });
  return { note, status, buttons };
}

// A reviewer's decision on one candidate, recorded under the purpose and case of the search it
// came from (POST /v1/reviews); ``status`` and ``buttons`` show its progress and outcome.
export async function recordReview({ searchId, faceId, decision, note, collection, why,
  status, buttons }) {
  const epoch = state.epoch;
  buttons.forEach((b) => { b.disabled = true; });
  status.className = "review-status";
  status.textContent = "Recording…";
  try {
    await api("/v1/reviews", { method: "POST", headers: whyHeaders(why.purpose, why.caseRef),
      json: { search_id: searchId, face_id: faceId, decision, note, collection } });
    if (stale(epoch)) return;
    status.className = "review-status ok";
    status.textContent = `Recorded: ${decision}` + (note ? ` ("${note}")` : "") +
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

export function handleAuthLoss(err) {
  if (err instanceof ApiError && err.status === 401) {
    document.dispatchEvent(new CustomEvent("facesearch:auth-lost", { detail: err }));
    return true;
  }
  return false;
}

/** Offer a blob as a download. */
export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// -- collections, shared by the pages ------------------------------------------------------

export async function listCollections() {
  const all = [];
  let token = null;
  do {
    const page = await api("/v1/collections", { params: { max_results: 1000, next_token: token } });
    all.push(...page.collections);
    token = page.next_token;
  } while (token);
  return all;
}

/** Fill a <select> with collections, keeping the chosen one. */
export function fillCollections(select, collections) {
  const previous = select.value;
  clear(select);
  if (!collections.length) {
    select.append(el("option", { value: "", text: "(no collections)" }));
    return;
  }
  for (const c of collections) {
    select.append(el("option", { value: c.name, text: `${c.name} (${fmtInt(c.faces)} faces)` }));
  }
  if (collections.some((c) => c.name === previous)) select.value = previous;
}

// -- boxes over a picture ---------------------------------------------------------------

export const BOX_COLOURS = ["#d4351c", "#1d70b8", "#00703c", "#912b88", "#f47738", "#28a197"];

/** Draw labelled boxes ([{box:[x1,y1,x2,y2], label, colour}]) on an SVG laid over a picture
 *  of width x height pixels. */
export function drawBoxes(node, width, height, boxes) {
  clear(node);
  node.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const font = Math.max(12, Math.max(width, height) / 40);
  for (const b of boxes) {
    const [x1, y1, x2, y2] = b.box;
    node.append(svg("rect", { x: x1, y: y1, width: Math.max(1, x2 - x1),
      height: Math.max(1, y2 - y1), stroke: b.colour, class: "box" }));
    if (b.label) {
      // Above the box, or below it at the top edge; ending at the box's right side when it
      // would run out of the picture.
      const wide = b.label.length * font * 0.6;
      const right = x1 + wide > width;
      const y = y1 - font * 0.3 >= font ? y1 - font * 0.3 : Math.min(height - 2, y2 + font);
      node.append(svg("text", { x: right ? Math.min(width - 2, x2) : Math.max(0, x1), y,
        "text-anchor": right ? "end" : "start", fill: b.colour, "font-size": font,
        class: "box-label", text: b.label }));
    }
  }
}

// -- face crops -------------------------------------------------------------------------

// The framing every crop uses (facesearch.vision.crop): the square around the face box's
// centre of 1.5 x its longer side, at most 160 px.
export const CROP_MARGIN = 0.25;
export const CROP_MAX_PX = 160;

export function cropSquare(box) {
  const [x1, y1, x2, y2] = box;
  const side = Math.max(x2 - x1, y2 - y1, 1) * (1 + 2 * CROP_MARGIN);
  const cx = (x1 + x2) / 2;
  const cy = (y1 + y2) / 2;
  const l = Math.floor(cx - side / 2);
  const t = Math.floor(cy - side / 2);
  return { x0: l, y0: t, side: Math.max(1, Math.ceil(side)) };
}

/** Crop a face from a loaded <img> the way the server crops enrolled faces: a JPEG data URL,
 *  its size, and the face's box and landmarks in its pixels. */
export function cropFromImage(img, box, landmarks) {
  const sq = cropSquare(box);
  const size = Math.min(CROP_MAX_PX, sq.side);
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#808080";
  ctx.fillRect(0, 0, size, size);
  const k = size / sq.side;
  ctx.drawImage(img, sq.x0, sq.y0, sq.side, sq.side, 0, 0, size, size);
  const map = ([x, y]) => [(x - sq.x0) * k, (y - sq.y0) * k];
  return {
    url: canvas.toDataURL("image/jpeg", 0.9),
    size,
    box: [...map([box[0], box[1]]), ...map([box[2], box[3]])],
    landmarks: (landmarks || []).map(map),
  };
}

/** Draw five landmarks as dots on an SVG over a crop of `size` pixels. */
export function drawMarks(node, size, landmarks) {
  clear(node);
  node.setAttribute("viewBox", `0 0 ${size} ${size}`);
  const r = Math.max(1.5, size / 60);
  for (const [x, y] of landmarks || []) {
    node.append(svg("circle", { cx: x, cy: y, r, class: "mark" }));
  }
}
