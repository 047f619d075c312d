/* hfdav file manager: the page of /.hfdav-ui/ (plain JavaScript, no libraries). */
"use strict";

const UI = location.pathname.slice(0, location.pathname.indexOf("/.hfdav-ui") + "/.hfdav-ui".length);
const PAGE = 200;
const PARALLEL = 3;
const TEXT_MAX = 1 << 20;
const RETRY = [502, 503, 504]; // a proxy or server restarting: try again
const state = { me: null, path: "/", sort: "name", order: "asc", q: "", entries: [], total: 0, view: "files", selected: new Set() };
const share = location.pathname.startsWith(UI + "/s/") ? { token: location.pathname.slice(UI.length + 3).split("/")[0] } : null;

/* ---------- small helpers ---------- */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP, a style attribute is not
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}
const $ = (sel) => document.querySelector(sel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function size(n) {
  if (n === null || n === undefined) return "";
  const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0; let x = n;
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (i ? x.toFixed(x < 10 ? 1 : 0) : x) + " " + u[i];
}
function when(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }
function join(dir, name) { return (dir === "/" ? "" : dir) + "/" + name; }
function parentOf(p) { const i = p.lastIndexOf("/"); return i <= 0 ? "/" : p.slice(0, i); }
function nameOf(p) { return p.slice(p.lastIndexOf("/") + 1); }

class ApiError extends Error { constructor(status, body) { super(body.error || ("HTTP " + status)); this.status = status; this.body = body; } }

async function api(method, path, body, query) {
  const url = new URL(UI + "/api" + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, v);
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (state.me) opts.headers["X-CSRF-Token"] = state.me.csrf;
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(url, opts);
  let data = {};
  try { data = await r.json(); } catch (e) { data = {}; }
  if (r.status === 401 && state.me && !share && path !== "/login") { state.me = null; showLogin("Your session ended; sign in again."); }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}
function fileUrl(path, extra) {
  const base = share ? `${UI}/api/public/${share.token}/file` : `${UI}/api/file`;
  const q = new URLSearchParams({ path, ...(extra || {}) });
  return base + "?" + q;
}
function flash(msg, bad) {
  const el = h("div", { class: "status", role: "alert", style: "bottom:auto;top:12px" + (bad ? ";color:#b3261e" : "") }, msg);
  document.body.append(el); setTimeout(() => el.remove(), 4000);
}
async function guarded(fn) { try { await fn(); } catch (e) { flash(e.message, true); } }

/* ---------- dialogs ---------- */
function ask(title, fields, okText) {
  const dlg = $("#dialog");
  return new Promise((resolve) => {
    const inputs = {};
    const form = h("form", { method: "dialog" },
      h("h2", { id: "dialog-title" }, title),
      fields.map((f) => {
        const id = "f-" + f.name;
        let input;
        if (f.type === "select") input = h("select", { id, name: f.name }, f.options.map(([v, t]) => h("option", { value: v }, t)));
        else input = h("input", { id, name: f.name, type: f.type || "text", value: f.value || "", placeholder: f.placeholder || "", autocomplete: "off" });
        inputs[f.name] = input;
        return [h("label", { for: id }, f.label), input];
      }),
      h("div", { class: "buttons" },
        h("button", { type: "button", onclick: () => { dlg.close(); resolve(null); } }, "Cancel"),
        h("button", { type: "submit", class: "primary", id: "dialog-ok" }, okText || "OK")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const out = {}; for (const [k, el] of Object.entries(inputs)) out[k] = el.value;
      dlg.close(); resolve(out);
    });
    dlg.replaceChildren(form);
    dlg.onclose = () => resolve(null);
    dlg.showModal();
    const first = Object.values(inputs)[0];
    if (first) { first.focus(); if (first.select) first.select(); }
  });
}
function confirmDialog(title, text, okText) {
  const dlg = $("#dialog");
  return new Promise((resolve) => {
    dlg.replaceChildren(h("h2", { id: "dialog-title" }, title), h("p", {}, text),
      h("div", { class: "buttons" },
        h("button", { type: "button", onclick: () => { dlg.close(); resolve(false); } }, "Cancel"),
        h("button", { type: "button", class: "primary", id: "dialog-ok", onclick: () => { dlg.close(); resolve(true); } }, okText || "OK")));
    dlg.onclose = () => resolve(false);
    dlg.showModal(); $("#dialog-ok").focus();
  });
}

/* ---------- sign-in ---------- */
function showLogin(message) {
  const err = h("p", { class: "error", id: "login-error", role: "alert" }, message || "");
  const user = h("input", { id: "user", name: "user", type: "text", autocomplete: "username", required: true });
  const pw = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "login", id: "login" },
    h("h1", {}, "hfdav"), h("p", { class: "note" }, "Sign in with your WebDAV user name and password."),
    h("label", { for: "user" }, "User name"), user, h("label", { for: "password" }, "Password"), pw, err,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault(); err.textContent = "";
    try {
      state.me = null;
      const me = await api("POST", "/login", { user: user.value, password: pw.value });
      state.me = me; await startApp();
    } catch (e) { err.textContent = e.message; }
  });
  $("#app").replaceChildren(form); user.focus();
}

/* ---------- the file view ---------- */
function crumbs(path, onGo, rootName) {
  const parts = path.split("/").filter(Boolean);
  const nav = h("nav", { class: "crumbs", "aria-label": "Folder path" });
  let acc = "";
  nav.append(h("a", { href: "#/", onclick: (e) => { e.preventDefault(); onGo("/"); } }, rootName || "Drive"));
  for (const p of parts) {
    acc += "/" + p; const target = acc;
    nav.append(" / ", h("a", { href: "#" + target, onclick: (e) => { e.preventDefault(); onGo(target); } }, p));
  }
  return nav;
}
function kindOf(e) {
  if (e.dir) return "dir";
  const t = e.type || "";
  if (t.startsWith("image/")) return "img"; if (t.startsWith("video/")) return "vid"; if (t.startsWith("audio/")) return "aud";
  if (t === "application/pdf") return "pdf"; return "doc";
}
function icon(e) { return h("span", { class: "icon " + kindOf(e), "aria-hidden": "true" }); }

function renderShell() {
  const me = state.me;
  const top = h("header", { class: "top" },
    h("span", { class: "brand" }, "hfdav"),
    h("button", { type: "button", id: "nav-files", onclick: () => go(state.path) }, "Files"),
    me.can_write && h("button", { type: "button", id: "nav-trash", onclick: () => { location.hash = "trash"; } }, "Trash"),
    me.can_write && h("button", { type: "button", id: "nav-shares", onclick: () => { location.hash = "shares"; } }, "Shares"),
    h("span", { class: "spacer" }),
    h("span", { class: "note", id: "whoami" }, me.user + (me.can_write ? "" : " (read-only)")),
    h("button", { type: "button", id: "logout", onclick: async () => { await guarded(() => api("POST", "/logout")); state.me = null; showLogin(); } }, "Sign out"));
  const view = h("div", { id: "view" });
  const status = h("div", { class: "status", id: "status", "aria-live": "polite" }, "…");
  $("#app").replaceChildren(top, view, status, uploadsPanel());
  refreshStatus();
}

function renderFiles() {
  state.view = "files";
  const view = $("#view");
  const filter = h("input", { type: "search", id: "filter", placeholder: "Filter names", "aria-label": "Filter names", value: state.q });
  let timer = null;
  filter.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.q = filter.value; load(true); }, 250); });
  const sort = h("select", { id: "sort", "aria-label": "Sort by" },
    [["name", "Name"], ["size", "Size"], ["mtime", "Modified"]].map(([v, t]) => h("option", { value: v, selected: state.sort === v }, t)));
  sort.addEventListener("change", () => { state.sort = sort.value; load(true); });
  const order = h("button", { type: "button", id: "order", "aria-label": "Sort order", onclick: () => { state.order = state.order === "asc" ? "desc" : "asc"; order.textContent = state.order === "asc" ? "↑" : "↓"; load(true); } }, state.order === "asc" ? "↑" : "↓");
  const w = state.me && state.me.can_write && !share;
  const filesInput = h("input", { type: "file", multiple: true, id: "upload-input", class: "visually-hidden", tabindex: "-1" });
  filesInput.addEventListener("change", () => { const fs = [...filesInput.files]; filesInput.value = ""; enqueueAll(fs.map((f) => [f, join(state.path, f.name)])); });
  const dirInput = h("input", { type: "file", multiple: true, webkitdirectory: true, id: "upload-dir-input", class: "visually-hidden", tabindex: "-1" });
  dirInput.addEventListener("change", () => { const fs = [...dirInput.files]; dirInput.value = ""; enqueueAll(fs.map((f) => [f, join(state.path, f.webkitRelativePath || f.name)])); });
  const tools = h("div", { class: "toolbar" },
    filter, sort, order,
    w && h("button", { type: "button", id: "mkdir", onclick: newFolder }, "New folder"),
    w && h("button", { type: "button", id: "upload-files", onclick: () => filesInput.click() }, "Upload files"),
    w && h("button", { type: "button", id: "upload-folder", onclick: () => dirInput.click() }, "Upload folder"),
    h("a", { href: zipUrl(state.path), id: "zip", download: "" }, "Download folder as zip"),
    filesInput, dirInput,
    h("span", { class: "count", id: "count" }));
  const bulk = w && h("div", { class: "toolbar bulk", id: "bulk", hidden: true },
    h("span", { id: "bulk-count" }),
    h("button", { type: "button", id: "bulk-move", onclick: bulkMove }, "Move or copy selected"),
    h("button", { type: "button", id: "bulk-delete", class: "danger", onclick: bulkDelete }, "Delete selected"),
    h("button", { type: "button", id: "bulk-clear", onclick: () => { state.selected.clear(); for (const c of document.querySelectorAll("#rows input.pick")) c.checked = false; paintSelection(); } }, "Clear selection"));
  const table = h("table", { class: "files", id: "files" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "size" }, "Size"), h("th", { scope: "col", class: "mtime" }, "Modified"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
    h("tbody", { id: "rows" }));
  const more = h("div", { class: "more", id: "more" });
  const main = h("main", { id: "main" }, table, more);
  if (w) {
    main.addEventListener("dragover", (e) => { e.preventDefault(); main.classList.add("drop"); });
    main.addEventListener("dragleave", () => main.classList.remove("drop"));
    main.addEventListener("drop", (e) => { e.preventDefault(); main.classList.remove("drop"); dropped(e.dataTransfer); });
  }
  view.replaceChildren(crumbs(state.path, go, share ? state.shareName : null), tools, bulk || "", main);
  load(true);
}
function zipUrl(path) {
  return share ? `${UI}/api/public/${share.token}/zip?` + new URLSearchParams({ path }) : `${UI}/api/zip?` + new URLSearchParams({ path });
}

let loading = null;
async function load(reset) {
  if (reset) { state.entries = []; state.total = 0; state.selected.clear(); paintSelection(); }
  const ticket = {}; loading = ticket;
  const q = { path: state.path, sort: state.sort, order: state.order, q: state.q, offset: state.entries.length, limit: PAGE };
  let page;
  try {
    page = share ? await api("GET", `/public/${share.token}/list`, undefined, q) : await api("GET", "/list", undefined, q);
  } catch (e) { if (e.status !== 401) flash(e.message, true); return; }
  if (loading !== ticket) return;
  const tbody = $("#rows"); if (!tbody) return;
  if (reset) tbody.replaceChildren();
  state.total = page.total;
  for (const e of page.entries) { state.entries.push(e); tbody.append(row(e)); }
  $("#count").textContent = state.total + (state.total === 1 ? " item" : " items");
  const more = $("#more"); more.replaceChildren();
  if (!state.total) more.append(h("p", { class: "empty" }, state.q ? "Nothing matches." : "This folder is empty."));
  if (state.entries.length < state.total) {
    const btn = h("button", { type: "button", id: "load-more", onclick: () => load(false) }, `Show more (${state.entries.length} of ${state.total})`);
    more.append(btn);
    const io = new IntersectionObserver((es) => { if (es.some((x) => x.isIntersecting)) { io.disconnect(); load(false); } });
    io.observe(btn);
  }
}
function row(e) {
  const w = state.me && state.me.can_write && !share;
  const open = (ev) => { ev.preventDefault(); e.dir ? go(e.path) : preview(e); };
  const name = h("a", { href: e.dir ? "#" + e.path : fileUrl(e.path), onclick: open, class: "open" }, icon(e), e.name);
  const acts = h("td", { class: "act" },
    h("a", { href: e.dir ? zipUrl(e.path) : fileUrl(e.path, { dl: "1" }), download: e.dir ? e.name + ".zip" : e.name, class: "dl", "aria-label": "Download " + e.name + (e.dir ? " as zip" : ""), title: "Download" }, e.dir ? "Zip" : "Download"),
    w && h("button", { type: "button", class: "rename", "aria-label": "Rename " + e.name, title: "Rename", onclick: () => rename(e) }, "Rename"),
    w && h("button", { type: "button", class: "move", "aria-label": "Move or copy " + e.name, title: "Move or copy", onclick: () => move(e) }, "Move"),
    w && h("button", { type: "button", class: "share", "aria-label": "Share " + e.name, title: "Share link", onclick: () => makeShare(e) }, "Share"),
    w && h("button", { type: "button", class: "delete danger", "aria-label": "Delete " + e.name, title: "Delete", onclick: () => remove(e) }, "Delete"));
  const pick = w && h("input", { type: "checkbox", class: "pick", "aria-label": "Select " + e.name, checked: state.selected.has(e.path) });
  if (pick) pick.addEventListener("change", () => { if (pick.checked) state.selected.add(e.path); else state.selected.delete(e.path); paintSelection(); });
  return h("tr", { "data-name": e.name }, h("td", { class: "name" }, pick, name), h("td", { class: "size" }, e.dir ? "" : size(e.size)), h("td", { class: "mtime" }, when(e.mtime)), acts);
}

function go(path) {
  const target = "#" + (path || "/");
  if (location.hash !== target) location.hash = target; else route();
}
function paintSelection() {
  const bar = $("#bulk"); if (!bar) return;
  bar.hidden = state.selected.size === 0;
  $("#bulk-count").textContent = state.selected.size + " selected";
}
async function bulkMove() {
  const paths = [...state.selected];
  const v = await ask(`Move or copy ${paths.length} item(s)`, [
    { name: "dest", label: "To folder", value: state.path },
    { name: "how", label: "Action", type: "select", options: [["move", "Move"], ["copy", "Copy"]] }], "Go");
  if (!v || !v.dest) return;
  await guarded(async () => { await api("POST", v.how === "copy" ? "/copy" : "/move", { paths, dest: v.dest }); load(true); });
}
async function bulkDelete() {
  const paths = [...state.selected];
  if (!(await confirmDialog("Delete", `Move ${paths.length} item(s) to the trash?`, "Delete"))) return;
  await guarded(async () => { await api("POST", "/delete", { paths }); load(true); refreshStatus(); });
}
async function newFolder() {
  const v = await ask("New folder", [{ name: "name", label: "Name" }], "Create");
  if (!v || !v.name) return;
  await guarded(async () => { await api("POST", "/mkdir", { path: join(state.path, v.name) }); load(true); });
}
async function rename(e) {
  const v = await ask("Rename", [{ name: "name", label: "New name", value: e.name }], "Rename");
  if (!v || !v.name || v.name === e.name) return;
  await guarded(async () => { await api("POST", "/rename", { path: e.path, name: v.name }); load(true); });
}
async function move(e) {
  const v = await ask("Move or copy " + e.name, [
    { name: "dest", label: "To folder", value: parentOf(e.path) },
    { name: "how", label: "Action", type: "select", options: [["move", "Move"], ["copy", "Copy"]] }], "Go");
  if (!v || !v.dest) return;
  await guarded(async () => { await api("POST", v.how === "copy" ? "/copy" : "/move", { paths: [e.path], dest: v.dest }); load(true); });
}
async function remove(e) {
  if (!(await confirmDialog("Delete", `Move “${e.name}” to the trash?`, "Delete"))) return;
  await guarded(async () => { await api("POST", "/delete", { paths: [e.path] }); load(true); refreshStatus(); });
}
async function makeShare(e) {
  const v = await ask("Share “" + e.name + "”", [
    { name: "expires", label: "Expires", type: "select", options: [["86400", "in 1 day"], ["604800", "in 7 days"], ["2592000", "in 30 days"], ["", "never"]] },
    { name: "password", label: "Password (optional)", type: "password" }], "Create link");
  if (!v) return;
  await guarded(async () => {
    const s = await api("POST", "/shares", { path: e.path, expires_in: v.expires ? Number(v.expires) : null, password: v.password || null });
    showLink(location.origin + s.url);
  });
}
function showLink(url) {
  const dlg = $("#dialog");
  const input = h("input", { type: "text", readonly: true, value: url, class: "sharelink", id: "share-url", "aria-label": "Share link" });
  dlg.replaceChildren(h("h2", { id: "dialog-title" }, "Share link"), h("p", { class: "note" }, "Anyone with this link can view and download (read-only)."), input,
    h("div", { class: "buttons" },
      h("button", { type: "button", onclick: async () => { input.select(); try { await navigator.clipboard.writeText(url); } catch (e) { document.execCommand("copy"); } } }, "Copy"),
      h("button", { type: "button", class: "primary", id: "dialog-ok", onclick: () => dlg.close() }, "Done")));
  dlg.onclose = null; dlg.showModal(); input.select();
}

/* ---------- previews ---------- */
const CODE = /\.(py|js|mjs|ts|tsx|jsx|c|h|cc|cpp|hpp|rs|go|java|kt|rb|php|sh|bash|zsh|json|ya?ml|toml|ini|cfg|conf|css|scss|html?|xml|sql|lua|pl|r|swift|cs|scala|dockerfile|makefile|mk|md|txt|log|csv|tsv)$/i;
const KEYWORDS = new Set(("if else elif for while do return function def class import from as with try except finally catch throw raise new delete " +
  "const let var public private protected static void int float double char bool boolean true false null None True False nil " +
  "struct enum interface extends implements package fn pub mut impl trait use mod match where async await yield lambda in is not and or " +
  "switch case break continue default go defer select type func map chan this self super namespace template typename auto unsigned signed long short").split(" "));
function highlight(text) {
  const out = document.createDocumentFragment();
  const re = /(\/\*[\s\S]*?\*\/|\/\/[^\n]*|#[^\n]*|--[^\n]*)|("(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`)|(\b\d[\d_.xXa-fA-F]*\b)|([A-Za-z_$][\w$]*)/g;
  let last = 0; let m;
  while ((m = re.exec(text))) {
    if (m.index > last) out.append(text.slice(last, m.index));
    if (m[1]) out.append(h("span", { class: "c" }, m[1]));
    else if (m[2]) out.append(h("span", { class: "s" }, m[2]));
    else if (m[3]) out.append(h("span", { class: "n" }, m[3]));
    else if (KEYWORDS.has(m[4])) out.append(h("span", { class: "k" }, m[4]));
    else out.append(m[4]);
    last = re.lastIndex;
  }
  out.append(text.slice(last));
  return out;
}
async function preview(e) {
  const dlg = $("#preview");
  const url = fileUrl(e.path);
  const t = e.type || "";
  const body = h("div", { class: "body", id: "preview-body" });
  dlg.replaceChildren(h("h2", { id: "preview-title" }, e.name), body,
    h("div", { class: "buttons" },
      h("a", { href: fileUrl(e.path, { dl: "1" }), download: e.name, id: "preview-download" }, "Download"),
      h("button", { type: "button", class: "primary", id: "preview-close", onclick: () => dlg.close() }, "Close")));
  dlg.onclose = () => dlg.replaceChildren();
  dlg.showModal();
  if (t.startsWith("image/")) body.append(h("img", { src: url, alt: e.name, id: "preview-image" }));
  else if (t.startsWith("video/")) body.append(h("video", { src: url, controls: true, preload: "metadata", id: "preview-video" }));
  else if (t.startsWith("audio/")) body.append(h("audio", { src: url, controls: true, preload: "metadata", id: "preview-audio" }));
  else if (t === "application/pdf") body.append(h("iframe", { src: url, title: e.name, id: "preview-pdf" }));
  else if (t.startsWith("text/") || CODE.test(e.name) || t === "application/json" || t === "application/xml") {
    const r = await fetch(fileUrl(e.path, { text: "1" }), { headers: { Range: "bytes=0-" + (TEXT_MAX - 1) }, credentials: "same-origin" });
    const text = new TextDecoder().decode(await r.arrayBuffer());
    const pre = h("pre", { class: "code", id: "preview-text", tabindex: "0" });
    pre.append(CODE.test(e.name) && !/\.(txt|log|csv|tsv|md)$/i.test(e.name) ? highlight(text) : text);
    body.append(pre);
    if (e.size > TEXT_MAX) body.append(h("p", { class: "note" }, `Showing the first ${size(TEXT_MAX)} of ${size(e.size)}.`));
  } else body.append(h("p", { class: "note" }, "No preview for this kind of file."));
}

/* ---------- trash and shares ---------- */
async function renderTrash() {
  state.view = "trash";
  const view = $("#view");
  view.replaceChildren(h("nav", { class: "crumbs" }, h("strong", {}, "Trash")), h("main", { id: "main" }, h("p", { class: "note" }, "Loading…")));
  let data;
  try { data = await api("GET", "/trash"); } catch (e) { flash(e.message, true); return; }
  const main = $("#main");
  if (!data.enabled) { main.replaceChildren(h("p", { class: "empty" }, "The trash is off (HFDAV_TRASH_DAYS=0): deletions are final.")); return; }
  const tbody = h("tbody", { id: "trash-rows" });
  for (const e of data.entries) {
    tbody.append(h("tr", { "data-path": e.path },
      h("td", { class: "name" }, icon(e), e.path),
      h("td", { class: "size" }, size(e.size)), h("td", { class: "mtime" }, when(e.deleted_at)),
      h("td", { class: "act" },
        h("button", { type: "button", class: "restore", onclick: () => guarded(async () => { await api("POST", "/trash/restore", { trash_path: e.trash_path }); renderTrash(); refreshStatus(); }) }, "Restore"),
        h("button", { type: "button", class: "purge danger", onclick: async () => { if (await confirmDialog("Delete for good", `Delete “${e.path}” for good?`, "Delete")) guarded(async () => { await api("POST", "/trash/purge", { trash_path: e.trash_path }); renderTrash(); refreshStatus(); }); } }, "Delete for good"))));
  }
  main.replaceChildren(h("p", { class: "note" }, `Deleted items are kept for ${data.days} days.`),
    data.entries.length ? h("table", { class: "files" }, h("thead", {}, h("tr", {}, h("th", {}, "Original path"), h("th", { class: "size" }, "Size"), h("th", { class: "mtime" }, "Deleted"), h("th", {}, ""))), tbody)
      : h("p", { class: "empty" }, "The trash is empty."));
}
async function renderShares() {
  state.view = "shares";
  const view = $("#view");
  view.replaceChildren(h("nav", { class: "crumbs" }, h("strong", {}, "Share links")), h("main", { id: "main" }));
  let data;
  try { data = await api("GET", "/shares"); } catch (e) { flash(e.message, true); return; }
  const tbody = h("tbody", { id: "share-rows" });
  for (const s of data.shares) {
    const url = location.origin + UI + "/s/" + s.token;
    tbody.append(h("tr", {},
      h("td", { class: "name" }, icon({ dir: s.is_dir }), s.path, h("br"), s.live ? h("a", { href: url, class: "link" }, url) : h("span", { class: "note" }, s.revoked ? "revoked" : "expired")),
      h("td", { class: "mtime" }, s.expires_at ? "expires " + when(s.expires_at) : "no expiry", s.has_password ? " · password" : ""),
      h("td", { class: "act" }, s.live && h("button", { type: "button", class: "revoke danger", onclick: () => guarded(async () => { await api("POST", `/shares/${s.token}/revoke`); renderShares(); }) }, "Revoke"))));
  }
  $("#main").replaceChildren(data.shares.length ? h("table", { class: "files" }, tbody) : h("p", { class: "empty" }, "No share links yet: use Share on a file or folder."));
}

/* ---------- status corner ---------- */
async function refreshStatus() {
  const el = $("#status"); if (!el || share) return;
  let s;
  try { s = await api("GET", "/status"); } catch (e) { el.textContent = "status unavailable"; return; }
  const parts = [];
  if (s.quota) {
    const pct = Math.min(100, (100 * s.used) / s.quota);
    parts.push(h("div", {}, `${size(s.used)} of ${size(s.quota)} used`), h("div", { class: "bar", role: "progressbar", "aria-valuenow": Math.round(pct), "aria-valuemin": "0", "aria-valuemax": "100" }, h("div", { style: `width:${pct}%` })));
  } else parts.push(h("div", {}, `${size(s.used)} used`));
  const sync = s.sync || {};
  if (sync.remote === false) parts.push(h("div", { class: "note" }, "Local store (no Hub sync)"));
  else {
    const pending = sync.pending_changes || 0;
    parts.push(h("div", { id: "sync-state" }, pending ? `Hub: ${pending} change${pending === 1 ? "" : "s"} pending` : "Hub: in sync",
      sync.head ? h("span", { class: "note" }, ` · commit ${String(sync.head).slice(0, 8)}`) : ""));
    if (sync.last_error) parts.push(h("div", { class: "bad" }, "Hub error: " + sync.last_error));
  }
  if (s.healthy === false) parts.push(h("div", { class: "bad" }, "Degraded: see /healthz"));
  el.replaceChildren(...parts);
}
setInterval(() => { if (state.me && !share) refreshStatus(); }, 30000);

/* ---------- uploads (resumable, see gateway/webui/uploads.py) ---------- */
const uploads = [];
let running = 0;
function uploadsPanel() {
  return h("section", { class: "uploads", id: "uploads", hidden: true, "aria-label": "Uploads" },
    h("button", { type: "button", class: "hide", id: "uploads-hide", onclick: () => { $("#uploads").hidden = true; } }, "Hide"),
    h("h2", {}, "Uploads ", h("span", { id: "upload-total" })), h("div", { class: "bar", id: "upload-total-bar" }, h("div", {})), h("div", { id: "upload-list" }));
}
function enqueue(file, path) {
  const u = { file, path, sent: 0, state: "queued" };
  u.el = h("div", { class: "up" }, h("div", { class: "nm" }, path),
    h("div", { class: "bar", role: "progressbar", "aria-label": "Upload of " + path, "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, h("div", {})),
    h("div", { class: "st" }, "queued"));
  uploads.push(u);
  const panel = $("#uploads"); panel.hidden = false; $("#upload-list").append(u.el);
  paintUploads(); pump();
}
function pump() {
  while (running < PARALLEL) {
    const u = uploads.find((x) => x.state === "queued");
    if (!u) break;
    running++; u.state = "running";
    runUpload(u).then(() => { u.state = "done"; setUp(u, "done"); }, (e) => { u.state = "failed"; u.el.classList.add("err"); setUp(u, "failed: " + e.message); })
      .finally(() => { running--; paintUploads(); pump(); refreshSoon(); });
  }
}
let refreshTimer = null;
function refreshSoon() { // many small uploads finishing: one listing reload a second at most
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; if (state.view === "files") load(true); refreshStatus(); }, 700);
}
function setUp(u, text) { u.el.querySelector(".st").textContent = text; paintUploads(); }
function paintUploads() {
  let total = 0; let sent = 0;
  for (const u of uploads) {
    total += u.file.size; sent += u.state === "done" ? u.file.size : u.sent;
    const pct = u.file.size ? (100 * (u.state === "done" ? u.file.size : u.sent)) / u.file.size : 100;
    u.el.querySelector(".bar > div").style.width = pct + "%";
    u.el.querySelector(".bar").setAttribute("aria-valuenow", String(Math.round(pct)));
  }
  const t = $("#upload-total"); if (!t) return;
  const done = uploads.filter((u) => u.state === "done").length;
  t.textContent = `${done}/${uploads.length} · ${size(sent)} of ${size(total)}`;
  $("#upload-total-bar > div").style.width = (total ? (100 * sent) / total : 100) + "%";
}
function uploadKey(u) { return "hfdav-upload:" + u.path + ":" + u.file.size + ":" + u.file.lastModified; }
async function runUpload(u) {
  const key = uploadKey(u);
  const size = u.file.size;
  let id = localStorage.getItem(key);
  let offset = 0;
  if (id) {
    try { offset = (await retrying(() => api("GET", "/uploads/" + id), u)).offset; setUp(u, `resuming at ${sizeText(offset)}`); } catch (e) { if (e.status !== 404) throw e; id = null; }
  }
  if (!id) {
    const made = await retrying(() => api("POST", "/uploads", { path: u.path, size, mtime: u.file.lastModified / 1000 }), u);
    id = made.id; offset = made.offset; localStorage.setItem(key, id);
  }
  const piece = (state.me && state.me.upload_piece) || 8 << 20;
  let failures = 0;
  while (offset < size) {
    try {
      const before = offset;
      offset = await sendPiece(u, id, offset, Math.min(size, offset + piece));
      if (offset === before) { // 409: another request still holds the upload (an old tab, a cut connection)
        failures++;
        if (failures > 60) throw new Error("the upload stays busy");
        await sleep(Math.min(5000, 300 * failures));
      } else failures = 0;
    } catch (e) {
      if (e instanceof ApiError && !RETRY.includes(e.status) && e.status !== 409) { if (e.status === 404) localStorage.removeItem(key); throw e; }
      failures++;
      if (failures > 60) throw new Error("the connection keeps failing");
      setUp(u, `connection lost; retrying (${failures})…`);
      await sleep(Math.min(5000, 300 * failures));
      try { offset = (await api("GET", "/uploads/" + id)).offset; } catch (e2) { if (e2 instanceof ApiError && e2.status === 404) { localStorage.removeItem(key); throw e2; } }
    }
  }
  setUp(u, "finishing…");
  let tries = 0;
  try { await retrying(() => { tries++; return api("POST", `/uploads/${id}/finish`); }, u); }
  catch (e) {
    localStorage.removeItem(key);
    if (!(e instanceof ApiError && e.status === 404 && tries > 1)) throw e; // else: an earlier try finished it
  }
  localStorage.removeItem(key);
}
function sizeText(n) { return size(n); }
async function retrying(fn, u) {
  for (let i = 1; ; i++) {
    try { return await fn(); } catch (e) {
      if ((e instanceof ApiError && !RETRY.includes(e.status)) || i > 60) throw e;
      setUp(u, `server unreachable; retrying (${i})…`); await sleep(Math.min(5000, 300 * i));
    }
  }
}
function sendPiece(u, id, start, end) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", `${UI}/api/uploads/${id}`);
    xhr.setRequestHeader("Upload-Offset", String(start));
    xhr.setRequestHeader("X-CSRF-Token", state.me.csrf);
    xhr.upload.onprogress = (ev) => { u.sent = start + ev.loaded; setUp(u, `${size(u.sent)} of ${size(u.file.size)}`); };
    xhr.onload = () => {
      let data = {}; try { data = JSON.parse(xhr.responseText); } catch (e) { data = {}; }
      if (xhr.status === 200) { u.sent = data.offset; resolve(data.offset); }
      else if (xhr.status === 409 && typeof data.offset === "number") { u.sent = data.offset; resolve(data.offset); }
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new Error("network error"));
    xhr.onabort = () => reject(new Error("aborted"));
    xhr.send(u.file.slice(start, end));
  });
}
async function dropped(dt) {
  const items = [...(dt.items || [])].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  const files = [...dt.files];
  const out = [];
  if (items.some(Boolean)) {
    for (const entry of items) if (entry) await walkEntry(entry, state.path, out);
  } else for (const f of files) out.push([f, join(state.path, f.name)]);
  enqueueAll(out);
}
async function walkEntry(entry, dir, out) {
  if (entry.isFile) { const f = await new Promise((res, rej) => entry.file(res, rej)); out.push([f, join(dir, entry.name)]); return; }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    for (const e of batch) await walkEntry(e, join(dir, entry.name), out);
  }
}
/* files that would replace a file shown in this folder are uploaded only if the user says so */
async function enqueueAll(pairs) {
  const shown = new Set(state.entries.filter((e) => !e.dir).map((e) => e.path));
  const clash = pairs.filter(([, path]) => shown.has(path));
  let skip = new Set();
  if (clash.length) {
    const names = clash.slice(0, 5).map(([, p]) => nameOf(p)).join(", ") + (clash.length > 5 ? ", …" : "");
    const replace = await confirmDialog("Replace files?", `${clash.length} file(s) exist here already (${names}). Replace them?`, "Replace");
    if (!replace) skip = new Set(clash.map(([, p]) => p));
  }
  for (const [f, path] of pairs) if (!skip.has(path)) enqueue(f, path);
}

/* ---------- public share pages ---------- */
async function startShare() {
  let info;
  try { info = await api("GET", `/public/${share.token}`); } catch (e) {
    $("#app").replaceChildren(h("div", { class: "login" }, h("h1", {}, "Link not available"), h("p", { id: "share-error" }, e.message))); return;
  }
  if (info.locked) {
    const pw = h("input", { id: "share-password", type: "password", autocomplete: "off", required: true });
    const err = h("p", { class: "error", role: "alert" });
    const form = h("form", { class: "login", id: "unlock" }, h("h1", {}, info.name), h("label", { for: "share-password" }, "This link needs a password"), pw, err, h("button", { type: "submit", class: "primary" }, "Open"));
    form.addEventListener("submit", async (ev) => { ev.preventDefault(); try { await api("POST", `/public/${share.token}/unlock`, { password: pw.value }); startShare(); } catch (e) { err.textContent = e.message; } });
    $("#app").replaceChildren(form); pw.focus(); return;
  }
  state.shareName = info.name;
  const top = h("header", { class: "top" }, h("span", { class: "brand" }, "hfdav"), h("span", {}, "Shared: " + info.name), h("span", { class: "spacer" }),
    info.expires_at ? h("span", { class: "note" }, "until " + when(info.expires_at)) : "");
  $("#app").replaceChildren(top, h("div", { id: "view" }));
  if (info.dir) { window.addEventListener("hashchange", route); route(); return; }
  const e = { name: info.name, path: "", dir: false, size: info.size, type: info.type, mtime: info.mtime };
  $("#view").replaceChildren(h("main", { id: "main" }, h("p", {}, h("strong", { id: "shared-name" }, info.name), " · ", size(info.size)),
    h("p", {}, h("a", { href: fileUrl("", { dl: "1" }), download: info.name, id: "shared-download" }, "Download"), " ",
      h("button", { type: "button", id: "shared-preview", onclick: () => preview(e) }, "Preview"))));
}

/* ---------- routing ---------- */
function route() {
  let hash = location.hash.slice(1);
  try { hash = decodeURIComponent(hash); } catch (e) { /* not percent-encoded: taken as it is */ }
  if (!share && hash === "trash") return renderTrash();
  if (!share && hash === "shares") return renderShares();
  const path = hash.startsWith("/") ? hash.replace(/\/+$/, "") || "/" : "/";
  if (path !== state.path) state.q = "";
  state.path = path;
  renderFiles();
}
async function startApp() {
  renderShell();
  window.removeEventListener("hashchange", route);
  window.addEventListener("hashchange", route);
  route();
}
document.addEventListener("keydown", (ev) => {
  if (ev.key === "/" && document.activeElement === document.body && $("#filter")) { ev.preventDefault(); $("#filter").focus(); }
  if (ev.key === "Backspace" && document.activeElement === document.body && state.view === "files" && state.path !== "/") { ev.preventDefault(); go(parentOf(state.path)); }
});
(async function main() {
  if (share) return startShare();
  try { state.me = await api("GET", "/me"); } catch (e) { state.me = null; }
  if (state.me) startApp(); else showLogin();
})();
