// Persons on the collections page: a person (the API's "user") groups several photos of one
// individual, as a records unit keeps several booking photos of a person. Create a person,
// enrol photos to them (one face per photo: the largest that passes the quality checks), see
// their faces, erase them with the receipt.
import {
  $, api, clear, describeError, el, fmtInt, fmtTime, handleAuthLoss, jpegUrl, labelCells,
  may, receiptFacts, setMessage, show, stale, state,
} from "./core.js";

const PERSON_ID = /^[a-zA-Z0-9_.\-:]{1,128}$/;

const local = {
  collection: null,
  person: null, // the person shown
  busy: false,
  onChange: null, // called after faces were added or erased (the collection's counts)
};

const enc = encodeURIComponent;

/** Wire the section's controls; `onChange` refreshes the collection's other sections. */
export function initPersons(onChange) {
  local.onChange = onChange;
  $("person-create-form").addEventListener("submit", onCreate);
  $("person-upload-form").addEventListener("submit", onUpload);
  $("person-erase").addEventListener("click", onErase);
}

export function resetPersons() {
  local.collection = null;
  local.person = null;
  local.busy = false;
  $("person-create-form").reset();
  $("person-upload-form").reset();
  $("person-create-status").textContent = "";
  clear($("person-table").tBodies[0]);
  clear($("person-faces"));
  clear($("person-log"));
  show($("person-detail"), false);
  show($("person-receipt"), false);
  setMessage($("person-error"), "");
}

/** Show the persons of `collection` (when the key may list them). */
export async function showPersons(collection) {
  const allowed = may("ListUsers") && may("ListFaces");
  show($("coll-persons"), allowed);
  if (!allowed) return;
  if (local.collection !== collection) {
    resetPersons();
    local.collection = collection;
  }
  show($("person-create-form"), may("CreateUser"));
  await loadPersons();
}

// A person's id from what was typed: spaces become '_' (Kofi Annan -> Kofi_Annan).
export function personId(text) {
  return text.trim().replace(/\s+/g, "_");
}

async function loadPersons() {
  const name = local.collection;
  const epoch = state.epoch;
  const users = [];
  try {
    let token = null;
    do {
      const page = await api(`/v1/collections/${enc(name)}/users`,
        { params: { max_results: 500, next_token: token } });
      users.push(...page.users);
      token = page.next_token;
    } while (token);
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("person-error"), `Could not list the persons: ${describeError(err)}`);
    return;
  }
  if (stale(epoch) || local.collection !== name) return;
  const body = $("person-table").tBodies[0];
  clear(body);
  if (!users.length) {
    body.append(el("tr", {}, el("td", { colspan: 4, className: "muted",
      text: "No persons in this collection yet." })));
  }
  for (const u of users) {
    const open = el("button", { type: "button", className: "secondary", text: "Open",
      "aria-label": `Open ${u.user_id}` });
    open.addEventListener("click", () => openPerson(u.user_id));
    body.append(el("tr", { "data-person": u.user_id },
      el("th", { scope: "row", text: u.user_id }),
      el("td", { className: "n", text: fmtInt(u.faces) }),
      el("td", { text: fmtTime(u.created_at) }),
      el("td", {}, open)));
  }
  labelCells($("person-table"));
}

async function onCreate(ev) {
  ev.preventDefault();
  const id = personId($("person-id").value);
  const status = $("person-create-status");
  if (!PERSON_ID.test(id)) {
    status.className = "field-error";
    status.textContent = "A person's id is 1-128 letters, digits, '_', '.', '-' or ':' " +
      "(spaces become '_').";
    $("person-id").focus();
    return;
  }
  const epoch = state.epoch;
  status.className = "muted";
  status.textContent = "Creating…";
  try {
    await api(`/v1/collections/${enc(local.collection)}/users`,
      { method: "POST", json: { user_id: id } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    status.className = "field-error";
    status.textContent = `Not created: ${describeError(err)}`;
    return;
  }
  if (stale(epoch)) return;
  status.textContent = `Created ${id}: add their photos below.`;
  $("person-create-form").reset();
  await loadPersons();
  await openPerson(id);
}

async function openPerson(id) {
  local.person = id;
  clear($("person-log"));
  show($("person-receipt"), false);
  setMessage($("person-error"), "");
  $("person-h").textContent = `Person ${id}`;
  show($("person-upload-form"), may("IndexFaces") && may("AssociateFaces"));
  show($("person-erase"), may("EraseFaces"));
  show($("person-detail"));
  await loadPersonFaces();
  $("person-h").focus();
}

async function loadPersonFaces() {
  const name = local.collection;
  const id = local.person;
  const epoch = state.epoch;
  const grid = $("person-faces");
  let faces;
  let cards = new Map();
  try {
    faces = (await api(`/v1/collections/${enc(name)}/faces`,
      { params: { user_id: id, max_results: 100 } })).faces;
    if (faces.length && may("GetFaceCrops")) {
      const got = await api(`/v1/collections/${enc(name)}/crops`,
        { params: { face_id: faces.map((f) => f.face_id) } });
      cards = new Map(got.faces.map((c) => [c.face.face_id, c]));
    }
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("person-error"), `Could not list ${id}'s faces: ${describeError(err)}`);
    return;
  }
  if (stale(epoch) || local.person !== id) return;
  clear(grid);
  $("person-faces-status").textContent = faces.length
    ? `${faces.length} face${faces.length === 1 ? "" : "s"} of ${id}`
    : `No faces of ${id} yet.`;
  for (const f of faces) {
    const card = cards.get(f.face_id);
    grid.append(el("li", { className: "face-tile", "data-face-id": f.face_id },
      card && card.crop
        ? el("img", { src: jpegUrl(card.crop.data), alt: `A face of ${id}`, width: 96,
          height: 96 })
        : el("span", { className: "no-crop", text: "No picture kept" }),
      el("span", { className: "muted small",
        text: card && card.source_name ? card.source_name : fmtTime(f.created_at) })));
  }
}

// -- enrol photos to the person -------------------------------------------------------------

async function onUpload(ev) {
  ev.preventDefault();
  if (local.busy) return;
  const files = [...$("person-files").files];
  const name = local.collection;
  const id = local.person;
  const log = $("person-log");
  if (!files.length) {
    $("person-upload-status").textContent = "Choose photos of this person first.";
    return;
  }
  const epoch = state.epoch;
  local.busy = true;
  $("person-upload").disabled = true;
  clear(log);
  const bar = $("person-progress");
  bar.max = files.length;
  bar.value = 0;
  let added = 0;
  for (const [i, file] of files.entries()) {
    if (stale(epoch) || local.person !== id) break;
    $("person-upload-status").textContent = `Enrolling ${i + 1} of ${files.length}: ${file.name}`;
    const line = await enrolOne(name, id, file);
    if (stale(epoch)) return;
    if (line.ok) added += 1;
    log.append(el("li", { className: line.ok ? "" : "bad", text: line.text }));
    bar.value = i + 1;
  }
  if (stale(epoch)) return;
  local.busy = false;
  $("person-upload").disabled = false;
  $("person-files").value = "";
  $("person-upload-status").textContent = `Done: ${added} of ${files.length} photo` +
    `${files.length === 1 ? "" : "s"} added to ${id}.`;
  await loadPersons();
  await loadPersonFaces();
  if (local.onChange) await local.onChange();
}

// One photo: index its largest face that passes the quality checks (labelled with the
// person's id), then give that face to the person. A face the person's other faces do not
// match is erased again rather than left in the collection unlabelled.
async function enrolOne(name, id, file) {
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("source", file.name.slice(0, 255));
  form.append("external_id", id);
  form.append("max_faces", "1");
  let r;
  try {
    r = await api(`/v1/collections/${enc(name)}/faces`, { method: "POST", form });
  } catch (err) {
    if (handleAuthLoss(err)) return { ok: false, text: "" };
    return { ok: false, text: `${file.name}: refused: ${describeError(err)}` };
  }
  if (r.duplicate) return { ok: false, text: `${file.name}: already in the collection` };
  const others = r.unindexed.length;
  const why = [...new Set(r.unindexed.flatMap((u) => u.reasons))].join(", ");
  if (!r.indexed.length) {
    return { ok: false, text: `${file.name}: no face enrolled (${why || "no face found"})` };
  }
  const faceId = r.indexed[0].face.face_id;
  let a;
  try {
    a = await api(`/v1/collections/${enc(name)}/users/${enc(id)}/faces`,
      { method: "POST", json: { face_ids: [faceId] } });
  } catch (err) {
    if (handleAuthLoss(err)) return { ok: false, text: "" };
    a = { done: [], failed: [{ face_id: faceId, reasons: [describeError(err)] }] };
  }
  if (!a.done.includes(faceId)) {
    const reasons = a.failed.flatMap((f) => f.reasons).join(", ");
    let erased = "";
    try {
      await api(`/v1/collections/${enc(name)}/faces/delete`,
        { method: "POST", json: { face_ids: [faceId] } });
      erased = "; the face was erased again";
    } catch (err) {
      erased = `; the face stays in the collection unassigned (${describeError(err)})`;
    }
    const hint = reasons.includes("LOW_MATCH_CONFIDENCE")
      ? ` (it does not match ${id}'s other faces: is it the same person?)` : "";
    return { ok: false, text: `${file.name}: not added to ${id}: ${reasons}${hint}${erased}` };
  }
  const more = others
    ? ` (${others + 1} faces in the photo: the largest was enrolled; ${why})` : "";
  return { ok: true, text: `${file.name}: 1 face added to ${id}${more}` };
}

// -- erase the person -------------------------------------------------------------------------

async function onErase() {
  const name = local.collection;
  const id = local.person;
  const epoch = state.epoch;
  setMessage($("person-error"), "");
  let r;
  try {
    r = await api(`/v1/collections/${enc(name)}/erase`, { method: "POST", json: { user_id: id } });
  } catch (err) {
    if (stale(epoch) || handleAuthLoss(err)) return;
    setMessage($("person-error"), `Not erased: ${describeError(err)}`);
    return;
  }
  if (stale(epoch)) return;
  receiptFacts($("person-receipt-facts"), r);
  show($("person-receipt"));
  clear($("person-faces"));
  $("person-faces-status").textContent = `${id} was erased.`;
  show($("person-upload-form"), false);
  show($("person-erase"), false);
  await loadPersons();
  if (local.onChange) await local.onChange();
  $("person-receipt").focus();
}
