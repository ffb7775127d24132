// promptlake search page: plain JS over the JSON API (/api/search, /api/facets, /api/refine,
// /img/<id>). This file: helpers, the image to search with, searching, "More". history.js:
// Back and Forward; detail.js: a hit's dialog; panels.js: filters, zero hits, refine.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  image: null, imageName: "", imageUrl: "", targetChosen: false, likePrompt: "",
  fields: null, hits: [], exact: null, perPage: 24, pages: 1, tookMs: 0, note: "",
  entry: 0, nextEntry: 1, entries: new Map(), current: -1, shown: null, facets: {},
};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function setStatus(node, text, kind) {
  node.textContent = text;
  node.className = "status" + (kind ? " " + kind : "");
}

async function api(url, options) {
  let res;
  try {
    res = await fetch(url, options);
  } catch (err) {
    throw new Error("the search page did not answer: " + err.message);
  }
  const body = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) {
    const err = new Error(body.error || res.statusText);
    err.busy = Boolean(body.busy);
    throw err;
  }
  return body;
}

function showError(node, err) {
  const text = err.busy ? "the store is busy: " + err.message : err.message;
  setStatus(node, text, err.busy ? "warn" : "error");
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) { // not a secure context (another host over http): the old way
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "copied";
  setTimeout(() => { button.textContent = label; }, 1200);
}

// --- the image to search with: dropped, pasted or chosen -----------------------------------
function setImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus($("status"), "that is not an image", "error");
    return;
  }
  const most = Number(document.body.dataset.maxBytes);
  if (file.size > most) {
    setStatus($("status"), `the image is ${file.size.toLocaleString()} bytes; the page ` +
      `accepts up to ${most.toLocaleString()}`, "error");
    return;
  }
  showImage(file, file.name || "pasted image", URL.createObjectURL(file));
  $("text").value = ""; // a new image starts a new search: type to add words to it
  if (!state.targetChosen) $("target").value = "prompts"; // its prompt, unless chosen otherwise
  newSearch();
}

function showImage(file, name, url) {
  Object.assign(state, { image: file, imageName: name, imageUrl: url });
  $("preview").hidden = !file;
  $("drop-hint").hidden = Boolean(file);
  if (file) $("preview-img").src = url;
  else $("file").value = "";
}

function chooseFile() { $("file").click(); }

function wireImageInput() {
  const drop = $("drop");
  window.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  window.addEventListener("dragleave", () => drop.classList.remove("over"));
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) setImage(item.getAsFile());
  });
  $("choose").addEventListener("click", chooseFile);
  drop.addEventListener("keydown", (e) => { // the drop zone itself opens the chooser too
    if (e.target === drop && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      chooseFile();
    }
  });
  $("file").addEventListener("change", (e) => { // nothing chosen (cancelled): nothing to do
    if (e.target.files.length) setImage(e.target.files[0]);
  });
  $("clear-image").addEventListener("click", () => showImage(null, "", ""));
  $("without-image").addEventListener("click", () => { // and search again with the text alone
    showImage(null, "", "");
    if ($("text").value.trim()) $("search").requestSubmit();
  });
}

// --- searching ------------------------------------------------------------------------------
// every control of the search form (those outside it carry form="search")
function formFields() {
  const fields = new URLSearchParams();
  for (const [key, value] of new FormData($("search"))) if (value !== "") fields.set(key, value);
  return fields;
}

function filterNames() {
  const own = ["text", "target", "k"];
  return [...$("search").elements].map((e) => e.name).filter((n) => n && !own.includes(n));
}

// a new search from the controls (and ``extra``, e.g. like=<id>): a new history entry
async function newSearch(extra) {
  const fields = formFields();
  for (const [key, value] of Object.entries(extra || {})) fields.set(key, value);
  const perPage = Number(fields.get("k")) || Number(document.body.dataset.k);
  fields.delete("k");
  if (!fields.get("text") && !state.image && !fields.get("like")) {
    setStatus($("status"), "type something, or drop an image", "error");
    return;
  }
  state.note = "";
  await run(fields, perPage, 1, "push");
}

function more() {
  return run(state.fields, state.perPage, state.pages + 1, "more");
}

function depth(perPage, pages) {
  return Math.min(perPage * pages, Number(document.body.dataset.maxK));
}

// "More" asks again, deeper: the grid is always one query's answer, the new tail appended
async function run(fields, perPage, pages, how) {
  const query = new URLSearchParams(fields);
  query.set("k", String(depth(perPage, pages)));
  setStatus($("status"), how === "more" ? "loading more…" : "searching…");
  let data;
  try {
    if (state.image && !fields.get("like")) {
      const body = new FormData();
      for (const [key, value] of query) body.set(key, value);
      body.set("image", state.image, state.imageName);
      data = await api("/api/search", { method: "POST", body });
    } else {
      data = await api("/api/search?" + query);
    }
  } catch (err) {
    showError($("status"), err);
    return false;
  }
  const before = how === "more" ? state.hits : [];
  const kept = before.every((h, i) => data.hits[i] && data.hits[i].id === h.id);
  Object.assign(state, { fields, perPage, pages, hits: data.hits, exact: data.exact,
                         tookMs: data.took_ms });
  if (how !== "more") followSearch(fields, data.exact);
  loadFacets(); // the target's (it may have changed): cached, or loaded now
  render(kept ? before.length : 0);
  remember(how);
  if (how === "more" && kept && state.hits.length > before.length) {
    $("grid").children[before.length].querySelector(".open").focus({ preventScroll: true });
  }
  return true;
}

// the refine box and the target follow the search now shown
function followSearch(fields, exact) {
  $("idea").value = fields.get("text") || (exact && exact.prompt) ||
    (fields.get("like") ? state.likePrompt : "") || "";
}

function render(from) {
  const grid = $("grid");
  if (!from) {
    grid.replaceChildren();
    window.scrollTo(0, 0);
  }
  state.hits.slice(from).forEach((hit, j) => grid.append(card(hit, from + j)));
  showExact(state.exact);
  const asked = depth(state.perPage, state.pages);
  const all = state.hits.length < asked;
  const target = state.fields.get("target") || "prompts";
  const like = state.fields.get("like") ? ` like ${state.fields.get("like")}` : "";
  const pages = state.pages > 1 ? `, ${state.pages} pages` : "";
  let text = `${state.hits.length} ${target}${like} in ${Math.round(state.tookMs)} ms${pages}`;
  if (all && state.pages > 1) text += " (all)";
  if (!all && asked >= Number(document.body.dataset.maxK)) {
    text += ` — that is as deep as a search goes (${asked}): narrow it with a filter or words`;
  }
  setStatus($("status"), text + state.note);
  $("more").hidden = !canMore();
  $("more").textContent = `More (next ${state.perPage})`;
  showZero(); // panels.js
}

function canMore() {
  const asked = depth(state.perPage, state.pages);
  return state.hits.length >= asked && asked < Number(document.body.dataset.maxK);
}

function thumb(img, hit) {
  if (hit.thumbnail) img.src = hit.thumbnail;
  else img.classList.add("none");
  img.alt = hit.prompt.slice(0, 120);
}

function card(hit, index) {
  const node = $("card").content.firstElementChild.cloneNode(true);
  thumb(node.querySelector("img"), hit);
  node.querySelector(".prompt").textContent = hit.prompt;
  node.querySelector(".sim").textContent = (1 - Math.max(hit.distance, 0)).toFixed(3);
  node.querySelector(".sim").title = "similarity (1 - cosine distance)";
  node.querySelector(".site").textContent = hit.source_site || hit.origin;
  node.querySelector(".copy").addEventListener("click", (e) => copy(hit.prompt, e.target));
  node.querySelector(".open").addEventListener("click", () => showDetail(index, state.hits));
  node.querySelector(".open").setAttribute("aria-label", `hit ${index + 1}: details`);
  node.querySelector(".open").dataset.id = hit.id;
  return node;
}

function generic(dl, entries) {
  dl.replaceChildren();
  for (const [key, value] of entries) {
    if (value === null || value === undefined || value === "" ||
        (typeof value === "object" && Object.keys(value).length === 0)) continue;
    dl.append(el("dt", key.replaceAll("_", " ")));
    const text = typeof value === "object" && !Array.isArray(value)
      ? Object.entries(value).map(([k, v]) => `${k}: ${v}`).join(", ")
      : Array.isArray(value) ? value.join(", ") : String(value);
    dl.append(el("dd", text));
  }
}

function showExact(exact) {
  $("exact").hidden = !exact;
  if (!exact) return;
  $("exact-prompt").textContent = exact.prompt;
  $("exact-tool").textContent = `from the image's ${exact.tool} metadata`;
  // the tool's own settings line says seed, steps, sampler, CFG and size already; the
  // normalised copies of those facts (for search filters) would only repeat it here
  const shown = ["negative_prompt", "model_name", "settings"];
  const entries = Object.entries(exact).filter(([k]) => shown.includes(k));
  const others = (exact.prompts || []).slice(1); // a graph with several samplers
  if (others.length) {
    entries.push(["other prompts", others.map(([p, n]) => (n ? `${p} (negative: ${n})` : p)).join(" | ")]);
  }
  generic($("exact-extra"), entries);
}

// a stored row's own image is the query: no text, no dropped image
function likeSearch(hit, target) {
  $("detail").close();
  showImage(null, "", "");
  $("text").value = "";
  $("target").value = target;
  state.targetChosen = false; // chosen by the action, not the person: a dropped image resets it
  state.likePrompt = hit.prompt;
  newSearch({ like: hit.id });
}

// --- start ----------------------------------------------------------------------------------
function start() {
  history.scrollRestoration = "manual";
  wireImageInput();
  wireDetail(); // detail.js
  wirePanels(); // panels.js
  $("search").addEventListener("submit", (e) => { e.preventDefault(); newSearch(); });
  $("more").addEventListener("click", more);
  $("target").addEventListener("change", () => { state.targetChosen = true; loadFacets(); });
  $("exact-copy").addEventListener("click", (e) => copy($("exact-prompt").textContent, e.target));
  window.addEventListener("scroll", () => {
    const snap = state.entries.get(state.entry);
    if (snap) snap.scrollY = window.scrollY;
  }, { passive: true });
  fromAddress("replace");
  loadFacets(); // panels.js
}

document.addEventListener("DOMContentLoaded", start);
