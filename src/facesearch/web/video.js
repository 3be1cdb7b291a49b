// The video page: upload a file or name one on the server, follow the job's progress, then the
// people of the video as a timeline with thumbnails and time ranges; "jump" shows the frame
// (the uploaded file itself, seeked in a <video>, or the server's frame for a server path)
// with each person's box.
import {
  $, ApiError, BOX_COLOURS, api, apiBlob, clear, describeError, drawBoxes, el, facts, fillCollections,
  fmtInt, fmtMs, fmtSimilarity, fmtTime, handleAuthLoss, headerSafe, jpegUrl, labelCells,
  listCollections,
  may, recordReview, reviewControls, setMessage, show, stale, state, upload, whyHeaders,
} from "./core.js";

const local = {
  files: new Map(), // job id -> object URL of the video uploaded from this page
  why: new Map(), // job id -> {purpose, caseRef} it was started with from this page
  jobSeq: 0,
  job: null,
  persons: [],
  detections: new Map(), // person -> [{t, box}]
  frameUrl: null,
  busy: false,
};

export const page = {
  id: "video",
  allowed: () => may("StartFaceSearch"),
  init,
  enter,
  reset,
};

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

function init() {
  $("video-form").addEventListener("submit", onStart);
  $("video-reload").addEventListener("click", () => loadJobs());
  for (const id of ["video-src-upload", "video-src-path"]) {
    $(id).addEventListener("change", () => {
      const path = $("video-src-path").checked;
      show($("video-path-field"), path);
      show($("video-file-field"), !path);
    });
  }
  const v = $("video-player");
  v.addEventListener("seeked", () => drawAt(v.currentTime * 1000 - startMs()));
  v.addEventListener("timeupdate", () => {
    if (v.paused) drawAt(v.currentTime * 1000 - startMs());
  });
  v.addEventListener("play", () => clear($("video-boxes")));
}

async function enter(first) {
  if (!first) return;
  const epoch = state.epoch;
  try {
    const all = await listCollections();
    if (stale(epoch)) return;
    fillCollections($("video-collection"), all);
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("video-error"), `Could not list collections: ${describeError(err)}`);
  }
  await loadJobs();
}

function reset() {
  local.jobSeq += 1;
  for (const url of local.files.values()) URL.revokeObjectURL(url);
  local.files.clear();
  local.why.clear();
  local.job = null;
  local.persons = [];
  local.detections.clear();
  local.busy = false;
  if (local.frameUrl) URL.revokeObjectURL(local.frameUrl);
  local.frameUrl = null;
  $("video-player").removeAttribute("src");
  $("video-player").load();
  $("video-form").reset();
  show($("video-path-field"), false);
  show($("video-file-field"));
  $("video-start").disabled = false;
  $("video-progress").value = 0;
  $("video-status").textContent = "";
  setMessage($("video-error"), "");
  clear($("video-collection"));
  clear($("video-jobs").tBodies[0]);
  clear($("timeline"));
  show($("video-result"), false);
}

async function loadJobs() {
  const epoch = state.epoch;
  let page;
  try {
    page = await api("/v1/video/jobs", { params: { max_results: 20 } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("video-error"), `Could not list the jobs: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  const body = $("video-jobs").tBodies[0];
  clear(body);
  const jobs = page.jobs.filter((j) => j.kind === "FACE_SEARCH");
  if (!jobs.length) {
    body.append(el("tr", {}, el("td", { colspan: 6, className: "muted", text: "No jobs yet." })));
  }
  for (const j of jobs) {
    const open = el("button", { type: "button", className: "secondary", text: "Open",
      "aria-label": `Open the job on ${j.source}` });
    open.addEventListener("click", () => follow(j.job_id));
    body.append(el("tr", { "data-job-id": j.job_id },
      el("th", { scope: "row", text: j.source }),
      el("td", { text: j.collection || "" }),
      el("td", { text: j.status === "IN_PROGRESS" ? `${j.status} ${j.progress.toFixed(0)} %`
        : j.status }),
      el("td", { className: "n",
        text: j.persons === null ? "" : `${j.persons} (${j.matched_persons})` }),
      el("td", { text: fmtTime(j.created_at) }),
      el("td", {}, open)));
  }
  labelCells($("video-jobs"));
}

// -- start ------------------------------------------------------------------------------

async function onStart(ev) {
  ev.preventDefault();
  if (local.busy) return;
  setMessage($("video-error"), "");
  const collection = $("video-collection").value;
  const purpose = $("video-purpose").value.trim();
  const caseRef = $("video-case").value.trim();
  const threshold = $("video-threshold").value;
  const fps = $("video-fps").value;
  const byPath = $("video-src-path").checked;
  const file = $("video-file").files[0];
  const path = $("video-path").value.trim();
  let problem = "";
  if (!collection) problem = "Choose a collection.";
  else if (!headerSafe(purpose) || !headerSafe(caseRef)) {
    problem = "Use plain ASCII characters in the purpose and case.";
  } else if (byPath && !path) problem = "Enter the video's path on the server.";
  else if (!byPath && !file) problem = "Choose a video file.";
  if (problem) {
    setMessage($("video-error"), problem);
    return;
  }
  const epoch = state.epoch;
  local.busy = true;
  $("video-start").disabled = true;
  const bar = $("video-progress");
  bar.value = 0;
  try {
    let job;
    const headers = whyHeaders(purpose, caseRef);
    if (byPath) {
      const json = { path, collection, sample_fps: Number(fps) || 5 };
      if (threshold !== "") json.threshold = Number(threshold);
      $("video-status").textContent = "Starting…";
      job = await api("/v1/video/search", { method: "POST", json, headers });
    } else {
      const form = new FormData();
      form.append("video", file, file.name);
      form.append("collection", collection);
      form.append("sample_fps", fps || "5");
      if (threshold !== "") form.append("threshold", threshold);
      job = await upload("/v1/video/search", form, { headers, onProgress: (f) => {
        bar.value = Math.round(f * 100);
        $("video-status").textContent = `Uploading: ${Math.round(f * 100)} %`;
      } });
      local.files.set(job.job_id, URL.createObjectURL(file));
    }
    if (stale(epoch)) return;
    local.why.set(job.job_id, { purpose, caseRef });
    await follow(job.job_id);
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    $("video-status").textContent = "";
    setMessage($("video-error"), `The video search was refused: ${describeError(err)}`);
  } finally {
    if (!stale(epoch)) {
      local.busy = false;
      $("video-start").disabled = false;
    }
  }
}

// -- follow a job -----------------------------------------------------------------------

async function follow(jobId) {
  const seq = ++local.jobSeq;
  const epoch = state.epoch;
  const bar = $("video-progress");
  show($("video-result"), false);
  for (;;) {
    let job;
    try {
      job = await api(`/v1/video/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      if (stale(epoch) || seq !== local.jobSeq || handleAuthLoss(err)) return;
      setMessage($("video-error"), `Could not follow the job: ${describeError(err)}`);
      return;
    }
    if (stale(epoch) || seq !== local.jobSeq) return;
    bar.value = job.progress;
    if (job.status === "IN_PROGRESS") {
      $("video-status").textContent = job.started_at
        ? `Analysing ${job.source}: ${job.progress.toFixed(0)} %`
        : `Waiting to start: ${job.source}`;
      await sleep(1000);
      continue;
    }
    $("video-status").textContent = `${job.source}: ${job.status.toLowerCase()}` +
      (job.status_message ? ` (${job.status_message})` : "");
    await loadJobs();
    if (job.status === "SUCCEEDED") await showResults(job, seq);
    return;
  }
}

async function showResults(job, seq) {
  const epoch = state.epoch;
  const id = encodeURIComponent(job.job_id);
  let persons;
  let thumbs;
  const detections = new Map();
  try {
    [persons, thumbs] = await Promise.all([
      api(`/v1/video/jobs/${id}/persons`),
      api(`/v1/video/jobs/${id}/thumbnails`),
    ]);
    let token = null;
    do {
      const page = await api(`/v1/video/jobs/${id}/results`,
        { params: { sort_by: "INDEX", max_results: 1000, next_token: token } });
      for (const p of page.persons || []) {
        if (!detections.has(p.person_index)) detections.set(p.person_index, []);
        detections.get(p.person_index).push({ t: p.timestamp_ms, box: p.face.box });
      }
      token = page.next_token;
    } while (token);
  } catch (err) {
    if (stale(epoch) || seq !== local.jobSeq || handleAuthLoss(err)) return;
    setMessage($("video-error"), `Could not read the results: ${describeError(err)}`);
    return;
  }
  if (stale(epoch) || seq !== local.jobSeq) return;
  local.job = job;
  local.persons = persons.persons;
  local.detections = detections;
  const thumbOf = new Map(thumbs.thumbnails.map((t) => [t.person_index, t]));
  const duration = (job.video && job.video.duration_ms) ||
    Math.max(1, ...local.persons.map((p) => p.last_ms));
  facts($("video-facts"), [
    ["Video", job.source],
    ["Collection", job.collection || ""],
    ["Length", fmtMs(duration)],
    ["Frames analysed", fmtInt(job.frames_analysed || 0)],
    ["People", `${fmtInt(job.persons || 0)}, of whom ${fmtInt(job.matched_persons || 0)} ` +
      "with candidates"],
  ]);
  const list = $("timeline");
  clear(list);
  show($("player"), false);
  local.persons.forEach((p) => {
    const thumb = thumbOf.get(p.person_index);
    const best = p.matches[0];
    const name = best ? (best.external_id || best.user_id || best.face_id) : null;
    const colour = BOX_COLOURS[p.person_index % BOX_COLOURS.length];
    const left = (100 * p.first_ms) / duration;
    const width = Math.max(1, (100 * (p.last_ms - p.first_ms)) / duration);
    const span = el("span", { className: "span" });
    span.style.left = `${Math.min(99, left)}%`;
    span.style.width = `${Math.min(100 - Math.min(99, left), width)}%`;
    span.style.background = colour;
    const at = thumb ? thumb.timestamp_ms : p.first_ms;
    // Named by its visible text (what a screen reader says is what the button shows).
    const jump = el("button", { type: "button", className: "secondary jump",
      text: `Jump to ${fmtMs(at)}` });
    jump.addEventListener("click", () => jumpTo(at, p.person_index));
    list.append(el("li", { className: "person", "data-person": p.person_index,
      "data-identity": name || "" },
      thumb ? el("img", { src: jpegUrl(thumb.data), alt: `Person ${p.person_index + 1}`,
        width: 72, height: 72, className: "thumb" })
        : el("span", { className: "no-crop thumb", text: "no picture" }),
      el("div", { className: "who" },
        el("strong", { text: `Person ${p.person_index + 1}` }),
        el("span", { className: name ? "cand" : "muted",
          text: name ? `${name}, similarity ${fmtSimilarity(best.similarity)}` +
            (p.matches.length > 1 ? ` (+${p.matches.length - 1} more)` : "")
            : "no candidate" }),
        el("span", { className: "muted small",
          text: `seen ${fmtMs(p.first_ms)}–${fmtMs(p.last_ms)}, ${p.detections} detections` })),
      el("div", { className: "track", role: "img",
        "aria-label": `Seen from ${fmtMs(p.first_ms)} to ${fmtMs(p.last_ms)} of ` +
          fmtMs(duration) },
      span),
      jump,
      p.matches.length && may("ReviewCandidate") ? reviewList(job, p) : null));
  });
  if (!local.persons.length) {
    list.append(el("li", { className: "muted", text: "Nobody was found in this video." }));
  }
  show($("video-result"));
  $("video-result-h").focus();
}

// -- jump to a frame ----------------------------------------------------------------------

function boxesAt(ms) {
  const out = [];
  const job = local.job;
  const step = 1000 / ((job && job.settings && job.settings.sample_fps) || 5);
  const halfFrame = 500 / ((job && job.video && job.video.fps) || 30);
  for (const p of local.persons) {
    // Only within the person's own span (give or take half a frame): a track ends at a cut,
    // so a box (and its name) is never carried past the cut onto the next shot's faces.
    if (ms < p.first_ms - halfFrame || ms > p.last_ms + halfFrame) continue;
    const dets = local.detections.get(p.person_index) || [];
    let best = null;
    for (const d of dets) {
      const off = Math.abs(d.t - ms);
      if (off <= step && (!best || off < Math.abs(best.t - ms))) best = d;
    }
    if (best) {
      const m = p.matches[0];
      out.push({ box: best.box, colour: BOX_COLOURS[p.person_index % BOX_COLOURS.length],
        label: `Person ${p.person_index + 1}${m ? `: ${m.external_id || m.face_id}` : ""}` });
    }
  }
  return out;
}

function drawAt(ms) {
  const v = local.job && local.job.video;
  if (!v) return;
  drawBoxes($("video-boxes"), v.width, v.height, boxesAt(ms));
}

// Where the player's clock stands when the video's first frame shows (timestamps count from
// that frame; a file's video often starts a little after its timeline does).
const startMs = () => (local.job && local.job.video && local.job.video.start_ms) || 0;

async function jumpTo(ms, person) {
  const job = local.job;
  const epoch = state.epoch;
  const seq = local.jobSeq;
  show($("player"));
  const caption = $("player-caption");
  const video = $("video-player");
  const img = $("video-frame");
  const fileUrl = local.files.get(job.job_id);
  if (fileUrl) {
    show($("video-stage"));
    show(video);
    show(img, false);
    if (video.getAttribute("src") !== fileUrl) {
      video.src = fileUrl;
      await new Promise((resolve) => {
        video.addEventListener("loadedmetadata", resolve, { once: true });
        video.addEventListener("error", resolve, { once: true });
      });
    }
    if (!video.error) {
      video.pause();
      video.currentTime = (startMs() + ms + 1) / 1000;
      caption.textContent = `Person ${person + 1} at ${fmtMs(ms)} (your video file; play it ` +
        "from here with the controls).";
      video.focus();
      return;
    }
  }
  // The server's frame, while it keeps the video (server paths).
  show(video, false);
  show($("video-stage"));
  caption.textContent = `Loading the frame at ${fmtMs(ms)}…`;
  let blob;
  try {
    blob = await apiBlob(`/v1/video/jobs/${encodeURIComponent(job.job_id)}/frame`,
      { params: { timestamp_ms: Math.round(ms) } });
  } catch (err) {
    if (stale(epoch) || seq !== local.jobSeq || handleAuthLoss(err)) return;
    show(img, false);
    show($("video-stage"), false);
    clear($("video-boxes"));
    caption.textContent = err instanceof ApiError && err.status === 404
      ? "This job's video is no longer kept on the server (an uploaded video is deleted when " +
        "its job ends). Start the search again from this page with the file to see its frames; " +
        "the timeline and the candidates above stay."
      : `The frame cannot be shown: ${describeError(err)}`;
    return;
  }
  if (stale(epoch) || seq !== local.jobSeq) return;
  if (local.frameUrl) URL.revokeObjectURL(local.frameUrl);
  local.frameUrl = URL.createObjectURL(blob);
  img.src = local.frameUrl;
  img.alt = `The video at ${fmtMs(ms)}`;
  show(img);
  drawAt(ms);
  caption.textContent = `Person ${person + 1} at ${fmtMs(ms)} (the frame from the server).`;
}

// -- review of a person's candidates --------------------------------------------------------

// A decision per candidate (confirmed, rejected, inconclusive, with a note), recorded and
// audited as for a photo search: the job is the search (its id is the search id).
function reviewList(job, p) {
  const list = el("ol", { className: "vreview",
    "aria-label": `Candidates for person ${p.person_index + 1} — leads for human review, not ` +
      "identifications" });
  p.matches.forEach((m, k) => {
    const idBase = `v-${p.person_index}-${k}`;
    const who = m.user_id || m.external_id || m.face_id;
    const { note, status, buttons } = reviewControls(idBase,
      (decision, ...ui) => reviewVideo(job, m, decision, ...ui));
    list.append(el("li", { className: "vcand", id: idBase, "data-face-id": m.face_id },
      el("span", { className: "vcand-who",
        text: `${who}, similarity ${fmtSimilarity(m.similarity)}` }),
      el("label", { for: `${idBase}-note`, className: "small",
        text: `Note on ${who}` }), note,
      el("span", { className: "decisions", role: "group",
        "aria-label": `Decision on ${who} for person ${p.person_index + 1}` }, ...buttons),
      status));
  });
  return list;
}

async function reviewVideo(job, m, decision, note, status, buttons) {
  const why = local.why.get(job.job_id) ||
    { purpose: $("video-purpose").value.trim(), caseRef: $("video-case").value.trim() };
  await recordReview({ searchId: job.job_id, faceId: m.face_id, decision, note: note.value,
    collection: job.collection, why, status, buttons });
}
