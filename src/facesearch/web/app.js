// facesearch web app: sign in, the pages a key's role may use, and moving between them.
// Plain JavaScript modules, no build step, no third-party code (see core.js for how the page
// talks to the API; the key is kept in memory only).
import {
  $, api, describeError, headerSafe, setMessage, show, state,
} from "./core.js";
import { page as audit } from "./audit.js";
import { page as collections } from "./collections.js";
import { page as live } from "./live.js";
import { page as report } from "./report.js";
import { page as search } from "./search.js";
import { page as video } from "./video.js";

const PAGES = [search, collections, video, live, audit, report];
const entered = new Set(); // pages shown once since signing in
let current = null;

const allowedPages = () => PAGES.filter((p) => p.allowed());

async function signIn(key) {
  const who = await api("/v1/whoami", { key });
  state.key = key;
  state.role = who.role;
  state.operations = new Set(who.operations || []);
  $("key-secret").value = "";
  $("who-key").textContent = who.key_id;
  $("who-role").textContent = who.role || "unknown";
  for (const li of document.querySelectorAll("#nav li[data-page]")) {
    const p = PAGES.find((x) => x.id === li.dataset.page);
    show(li, Boolean(p && p.allowed()));
  }
  show($("session"));
  show($("nav"));
  show($("signin"), false);
  show($("workspace"));
  show($("no-pages"), !allowedPages().length);
  await route({ focus: false });
}

function signOut() {
  state.epoch += 1;
  if (current && current.leave) current.leave();
  for (const p of PAGES) p.reset();
  entered.clear();
  current = null;
  state.key = null;
  state.role = null;
  state.operations = new Set();
  $("signin-form").reset();
  // The next person to sign in starts on their own first page.
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  for (const p of PAGES) show($(`page-${p.id}`), false);
  show($("workspace"), false);
  show($("session"), false);
  show($("nav"), false);
  show($("signin"));
  setMessage($("signin-error"), "");
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

// The page named by the URL's #fragment, or the first this key may use.
async function route({ focus = true } = {}) {
  if (!state.key) return;
  const pages = allowedPages();
  const wanted = window.location.hash.replace(/^#/, "");
  const next = pages.find((p) => p.id === wanted) || pages[0];
  if (!next) return;
  if (current && current !== next && current.leave) current.leave();
  current = next;
  for (const p of PAGES) show($(`page-${p.id}`), p === next);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#${next.id}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const link = document.querySelector(`#nav a[href="#${next.id}"]`);
  document.title = `facesearch: ${link.textContent}`;
  const first = !entered.has(next.id);
  entered.add(next.id);
  if (focus) $(`page-${next.id}`).querySelector("h1").focus();
  await next.enter(first);
}

function wire() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => route());
  document.addEventListener("facesearch:auth-lost", (ev) => {
    signOut();
    setMessage($("signin-error"),
      `Your key was refused; sign in again. ${describeError(ev.detail)}`);
  });
  for (const p of PAGES) p.init();
  // A file dropped outside a drop zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
}

async function start() {
  wire();
  // The key is never stored: every page load starts signed out.
  show($("signin"));
}

document.documentElement.dataset.ready = "false";
start().finally(() => {
  document.documentElement.dataset.ready = "true";
});
