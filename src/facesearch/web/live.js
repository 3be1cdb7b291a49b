// The live page: cameras and stream processors (create, start, stop, delete), the event feed
// with snapshots, and a live view of the newest frame with each face's box and name.
import {
  $, BOX_COLOURS, api, apiBlob, clear, describeError, drawBoxes, el, fillCollections,
  fmtSimilarity, handleAuthLoss, headerSafe, jpegUrl, labelCells, listCollections, may,
  recordReview, reviewControls, setMessage, show,
  sse, stale, state, whyHeaders,
} from "./core.js";

const FEED_MAX = 50;

const local = {
  watching: null, // processor name
  abort: null, // AbortController of the watched feeds
  snapshotUrls: [],
  why: new Map(), // processor name -> {purpose, caseRef} it was created with from this page
};

export const page = {
  id: "live",
  allowed: () => may("CreateStreamProcessor") || may("StopStreamProcessor"),
  init,
  enter,
  reset,
  leave,
};

function init() {
  $("live-reload").addEventListener("click", () => loadProcessors());
  $("proc-form").addEventListener("submit", onCreate);
}

async function enter(first) {
  show($("proc-create"), may("CreateStreamProcessor"));
  if (!first) return;
  const epoch = state.epoch;
  if (may("CreateStreamProcessor")) {
    try {
      const all = await listCollections();
      if (stale(epoch)) return;
      fillCollections($("proc-collection"), all);
    } catch (err) {
      if (stale(epoch) || handleAuthLoss(err)) return;
    }
  }
  await loadProcessors();
}

function leave() {
  stopWatching();
}

function reset() {
  stopWatching();
  clear($("proc-table").tBodies[0]);
  clear($("proc-collection"));
  $("proc-form").reset();
  $("proc-status").textContent = "";
  setMessage($("live-error"), "");
}

async function loadProcessors() {
  const epoch = state.epoch;
  let page;
  try {
    page = await api("/v1/streams", { params: { max_results: 100 } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("live-error"), `Could not list the stream processors: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  setMessage($("live-error"), "");
  const body = $("proc-table").tBodies[0];
  clear(body);
  if (!page.processors.length) {
    body.append(el("tr", {}, el("td", { colspan: 5, className: "muted",
      text: "No stream processors yet." })));
  }
  for (const p of page.processors) {
    const actions = el("div", { className: "row-actions" });
    const add = (text, handler, cls = "secondary") => {
      const b = el("button", { type: "button", className: cls, text,
        "aria-label": `${text} ${p.name}` });
      b.addEventListener("click", handler);
      actions.append(b);
    };
    const running = p.status === "RUNNING" || p.status === "STARTING";
    if (!running && may("StartStreamProcessor")) add("Start", () => control(p.name, "start"));
    if (running && may("StopStreamProcessor")) add("Stop", () => control(p.name, "stop"));
    if (may("GetStreamProcessorEvents")) add("Watch", () => watch(p.name));
    if (may("DeleteStreamProcessor")) add("Delete", () => remove(p.name), "danger");
    const m = p.metrics;
    const status = p.status + (p.status_message ? ` (${p.status_message})` : "") +
      (m ? `, ${m.fps_processed} frames/s, ${m.events} events` : "");
    body.append(el("tr", { "data-name": p.name },
      el("th", { scope: "row", text: p.name }),
      el("td", {}, el("code", { text: p.settings.input_url })),
      el("td", { text: p.settings.collection }),
      el("td", { className: "status", text: status }),
      el("td", {}, actions)));
  }
  labelCells($("proc-table"));
}

async function control(name, what) {
  const epoch = state.epoch;
  try {
    await api(`/v1/streams/${encodeURIComponent(name)}/${what}`, { method: "POST" });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("live-error"), `Could not ${what} ${name}: ${describeError(err)}`);
  }
  if (!stale(epoch)) await loadProcessors();
}

async function remove(name) {
  const epoch = state.epoch;
  if (local.watching === name) stopWatching();
  try {
    await api(`/v1/streams/${encodeURIComponent(name)}`, { method: "DELETE" });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("live-error"), `Could not delete ${name}: ${describeError(err)}`);
  }
  if (!stale(epoch)) await loadProcessors();
}

async function onCreate(ev) {
  ev.preventDefault();
  const status = $("proc-status");
  const name = $("proc-name").value.trim();
  const input = $("proc-input").value.trim();
  const collection = $("proc-collection").value;
  const purpose = $("proc-purpose").value.trim();
  const caseRef = $("proc-case").value.trim();
  let problem = "";
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(name)) {
    problem = "A name is 1-128 letters, digits, '_', '.' or '-'.";
  }
  else if (!input) problem = "Name the camera: a URL or a video file on the server.";
  else if (!collection) problem = "Choose a watchlist collection.";
  else if (!headerSafe(purpose) || !headerSafe(caseRef)) {
    problem = "Use plain ASCII in the purpose and case.";
  }
  if (problem) {
    status.className = "field-error";
    status.textContent = problem;
    return;
  }
  const settings = { input_url: input, collection, snapshots: $("proc-snapshots").checked };
  if ($("proc-threshold").value !== "") settings.threshold = Number($("proc-threshold").value);
  const epoch = state.epoch;
  status.className = "muted";
  status.textContent = "Creating…";
  try {
    await api("/v1/streams", { method: "POST", json: { name, settings },
      headers: whyHeaders(purpose, caseRef) });
    if (stale(epoch)) return;
    local.why.set(name, { purpose, caseRef });
    status.textContent = `Created ${name}; start it to watch the camera.`;
    $("proc-name").value = "";
    await loadProcessors();
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    status.className = "field-error";
    status.textContent = `Not created: ${describeError(err)}`;
  }
}

// -- watching ---------------------------------------------------------------------------

function stopWatching() {
  if (local.abort) local.abort.abort();
  local.abort = null;
  local.watching = null;
  for (const url of local.snapshotUrls) URL.revokeObjectURL(url);
  local.snapshotUrls = [];
  clear($("feed"));
  clear($("live-boxes"));
  $("live-img").removeAttribute("src");
  $("live-caption").textContent = "Waiting for a frame…";
  $("feed-status").textContent = "";
  show($("watch"), false);
}

function watch(name) {
  stopWatching();
  const abort = new AbortController();
  local.abort = abort;
  local.watching = name;
  $("watch-h").textContent = `Watching ${name}`;
  show($("watch"));
  $("watch-h").focus();
  const epoch = state.epoch;
  const mine = () => !stale(epoch) && local.abort === abort;
  $("feed-status").textContent = "Connecting to the event feed…";
  sse(`/v1/streams/${encodeURIComponent(name)}/events`, { signal: abort.signal,
    onEvent: (kind, data) => {
      if (!mine()) return;
      if (kind === "subscribed") {
        $("feed-status").textContent = "Connected: events appear here as they happen.";
      }
      else if (kind === "face_match") addEvent(name, data, mine);
      else if (kind === "end") $("feed-status").textContent = `The feed ended: ${data.reason}`;
    } }).catch((err) => feedError(err, mine, "feed-status", "The event feed stopped"));
  if (may("GetStreamProcessorLiveView")) {
    sse(`/v1/streams/${encodeURIComponent(name)}/live`, { signal: abort.signal,
      onEvent: (kind, data) => {
        if (!mine()) return;
        if (kind === "frame") showFrame(data);
        else if (kind === "end") {
          $("live-caption").textContent = `The live view ended: ${data.reason}`;
        }
      } }).catch((err) => feedError(err, mine, "live-caption", "The live view stopped"));
  } else {
    $("live-caption").textContent = "This key may not see the live view.";
  }
}

function feedError(err, mine, statusId, what) {
  if (!mine() || (err && err.name === "AbortError")) return;
  if (handleAuthLoss(err)) return;
  $(statusId).textContent = `${what}: ${describeError(err)}`;
}

function showFrame(f) {
  $("live-img").src = jpegUrl(f.data);
  drawBoxes($("live-boxes"), f.width, f.height, f.tracks.map((t) => ({
    box: t.box, colour: BOX_COLOURS[t.track_id % BOX_COLOURS.length],
    label: t.identity ? `${t.identity} ${fmtSimilarity(t.similarity)}` : "",
  })));
  const named = f.tracks.filter((t) => t.identity).map((t) => t.identity);
  const at = new Date(f.captured_at * 1000).toLocaleTimeString();
  $("live-caption").textContent = `Frame at ${at}: ` +
    `${f.tracks.length} face${f.tracks.length === 1 ? "" : "s"}` +
    (named.length ? `; candidates: ${named.join(", ")}` : "") +
    " (candidates for human review, not identifications).";
}

async function addEvent(name, ev, mine) {
  const feed = $("feed");
  const pic = el("span", { className: "no-crop thumb",
    text: ev.snapshot ? "loading…" : "no snapshot" });
  const at = new Date(ev.emitted_at * 1000).toLocaleTimeString();
  const item = el("li", { className: "event", "data-identity": ev.identity,
    "data-search-id": ev.search_id || null, "data-face-id": ev.match ? ev.match.face_id : null },
    pic,
    el("div", {},
      el("strong", { className: "ident", text: ev.identity }),
      el("span", { text: ` similarity ${fmtSimilarity(ev.similarity)}` }),
      el("span", { className: "muted small", text: ` — ${at}, ` +
        `track ${ev.track_id}; a candidate for human review, not an identification` }),
      ev.search_id && ev.match && may("ReviewCandidate") ? reviewBox(name, ev) : null));
  feed.prepend(item);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  if (!ev.snapshot) return;
  try {
    const blob = await apiBlob(`/v1/streams/${encodeURIComponent(name)}/events/` +
      `${encodeURIComponent(ev.event_id)}/snapshot`);
    if (!mine()) return;
    const url = URL.createObjectURL(blob);
    local.snapshotUrls.push(url);
    pic.replaceWith(el("img", { src: url, alt: `Snapshot of ${ev.identity}`, width: 72,
      height: 72, className: "thumb" }));
  } catch (err) {
    if (!mine() || handleAuthLoss(err)) return;
    pic.textContent = "snapshot gone";
  }
}

// -- review of a live match -------------------------------------------------------------

// A decision on the event's matched face (confirmed, rejected, inconclusive, with a note),
// recorded and audited as for a photo search: the processor's run is the search.
function reviewBox(name, ev) {
  const idBase = `e-${ev.event_id}`;
  const { note, status, buttons } = reviewControls(idBase,
    (decision, ...ui) => reviewEvent(name, ev, decision, ...ui));
  return el("div", { className: "review live-review" },
    el("label", { for: `${idBase}-note`, className: "small",
      text: `Note on ${ev.identity} (track ${ev.track_id})` }), note,
    el("div", { className: "decisions", role: "group",
      "aria-label": `Decision on ${ev.identity}, track ${ev.track_id}` }, ...buttons),
    status);
}

async function reviewEvent(name, ev, decision, note, status, buttons) {
  const why = local.why.get(name) ||
    { purpose: $("proc-purpose").value.trim(), caseRef: $("proc-case").value.trim() };
  await recordReview({ searchId: ev.search_id, faceId: ev.match.face_id, decision,
    note: note.value, collection: ev.collection, why, status, buttons });
}
