// promptlake search page: plain JS over the JSON API (/api/search, /api/refine, /img/<id>).
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = ["source_site", "origin", "min_width", "min_height", "k"];
const LINEAGE = ["parent_ids", "trigger", "created_at"];
const state = { image: null, imageName: "", sources: new Map() };

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
  if (file.size > Number(document.body.dataset.maxBytes)) {
    setStatus($("status"), `the image is ${file.size.toLocaleString()} bytes; the page ` +
      `accepts up to ${Number(document.body.dataset.maxBytes).toLocaleString()}`, "error");
    return;
  }
  state.image = file;
  state.imageName = file.name || "pasted image";
  $("text").value = ""; // a new image starts a new search: type to add words to it
  $("preview-img").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("drop-hint").hidden = true;
  search();
}

function clearImage() {
  state.image = null;
  $("preview").hidden = true;
  $("drop-hint").hidden = false;
  $("file").value = "";
}

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
  $("file").addEventListener("change", (e) => setImage(e.target.files[0]));
  $("clear-image").addEventListener("click", clearImage);
}

// --- searching --------------------------------------------------------------------------------
function formFields(extra) {
  const fields = new URLSearchParams();
  const form = new FormData($("search"));
  for (const [key, value] of form) if (value !== "") fields.set(key, value);
  for (const [key, value] of Object.entries(extra || {})) fields.set(key, value);
  return fields;
}

async function search(extra) {
  const fields = formFields(extra);
  if (!fields.get("text") && !state.image && !fields.get("like")) {
    setStatus($("status"), "type something, or drop an image", "error");
    return;
  }
  setStatus($("status"), "searching…");
  let request;
  if (state.image && !fields.get("like")) {
    const body = new FormData();
    for (const [key, value] of fields) body.set(key, value);
    body.set("image", state.image, state.imageName);
    request = api("/api/search", { method: "POST", body });
  } else {
    history.replaceState(null, "", "/?" + fields);
    request = api("/api/search?" + fields);
  }
  try {
    const data = await request;
    showExact(data.exact);
    showHits(data.hits);
    const what = fields.get("like") ? ` like ${fields.get("like")}` : "";
    setStatus($("status"), `${data.hits.length} ${fields.get("target") || "prompts"}${what} ` +
      `in ${Math.round(data.took_ms)} ms`);
    if (!$("idea").value) $("idea").value = (data.exact && data.exact.prompt) || fields.get("text") || "";
  } catch (err) {
    showError($("status"), err);
  }
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
  const others = (exact.prompts || []).slice(1);  // a graph with several samplers
  if (others.length) {
    entries.push(["other prompts", others.map(([p, n]) => (n ? `${p} (negative: ${n})` : p)).join(" | ")]);
  }
  generic($("exact-extra"), entries);
}

function thumb(img, hit) {
  if (hit.thumbnail) img.src = hit.thumbnail;
  else if (/^https?:/.test(hit.url)) img.src = hit.url;
  else img.classList.add("none");
  img.alt = hit.prompt.slice(0, 120);
}

function showHits(hits) {
  const grid = $("grid");
  grid.replaceChildren();
  for (const hit of hits) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    thumb(card.querySelector("img"), hit);
    card.querySelector(".prompt").textContent = hit.prompt;
    card.querySelector(".sim").textContent = (1 - hit.distance).toFixed(3);
    card.querySelector(".sim").title = "similarity (1 - cosine distance)";
    card.querySelector(".site").textContent = hit.source_site || hit.origin;
    card.querySelector(".copy").addEventListener("click", (e) => copy(hit.prompt, e.target));
    card.querySelector(".open").addEventListener("click", () => showDetail(hit));
    grid.append(card);
  }
}

// a stored row's own image is the query: no text, no dropped image
function likeSearch(id, target) {
  $("detail").close();
  clearImage();
  $("text").value = "";
  $("target").value = target;
  search({ like: id });
}

// --- a hit's detail -----------------------------------------------------------------------------
function showDetail(hit) {
  const img = $("detail-img");
  img.removeAttribute("src");
  img.className = "";
  thumb(img, hit);
  $("detail-prompt").textContent = hit.prompt;
  $("detail-copy").onclick = (e) => copy(hit.prompt, e.target);
  for (const [id, target] of [["more-like", "images"], ["prompts-for", "prompts"]]) {
    $(id).disabled = !hit.thumbnail;
    $(id).onclick = () => likeSearch(hit.id, target);
  }
  const extra = hit.extra || {};
  generic($("detail-meta"), [
    ["id", hit.id], ["similarity", (1 - hit.distance).toFixed(4)],
    ["source site", hit.source_site], ["origin", hit.origin],
    ["size", hit.width ? `${hit.width}×${hit.height}` : ""], ["url", hit.url],
    ["negative prompt", hit.negative_prompt], ["model", hit.model_name], ["tool", hit.tool],
    ...Object.entries(hit.settings || {}),
    ...Object.entries(extra).filter(([k]) => !LINEAGE.includes(k)),
  ]);
  const parents = extra.parent_ids || [];
  $("lineage").hidden = !(parents.length || extra.trigger);
  generic($("lineage-meta"), [["trigger", extra.trigger], ["created at", extra.created_at]]);
  $("parents").replaceChildren(...parents.map((id) => {
    const li = el("li");
    const pic = el("img");
    pic.src = "/img/" + encodeURIComponent(id);
    pic.alt = pic.title = id;
    li.append(pic, el("span", id));
    return li;
  }));
  $("detail").showModal();
}

// --- refine -------------------------------------------------------------------------------------
async function refine(e) {
  e.preventDefault();
  const fields = new URLSearchParams(new FormData($("refine-form")));
  for (const key of ["source_site", "origin", "min_width", "min_height"]) {
    const value = formFields().get(key);
    if (value) fields.set(key, value);
  }
  setStatus($("refine-status"), "refining…");
  try {
    const data = await api("/api/refine?" + fields);
    const byId = new Map(data.sources.map((h) => [h.id, h]));
    $("variants").replaceChildren(...data.variants.map((v) => variant(v, byId)));
    setStatus($("refine-status"), `${data.variants.length} variants by ${data.refiner}, from ` +
      `${data.sources.length} neighbours, in ${Math.round(data.took_ms)} ms`);
  } catch (err) {
    showError($("refine-status"), err);
  }
}

function variant(v, byId) {
  const li = $("variant").content.firstElementChild.cloneNode(true);
  li.querySelector(".prompt-full").textContent = v.prompt;
  li.querySelector(".tokens").textContent = `${v.tokens} CLIP tokens`;
  li.querySelector(".copy").addEventListener("click", (e) => copy(v.prompt, e.target));
  li.querySelector("summary").textContent = `drew from ${v.drawn_from.length}`;
  li.querySelector(".mini").append(...v.drawn_from.map((id) => {
    const hit = byId.get(id);
    const item = el("li");
    const pic = el("img");
    if (hit) thumb(pic, hit);
    item.append(pic, el("span", hit ? hit.prompt : id));
    item.title = id;
    if (hit) item.addEventListener("click", () => showDetail(hit));
    return item;
  }));
  return li;
}

// --- start --------------------------------------------------------------------------------------
function start() {
  wireImageInput();
  $("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("refine-form").addEventListener("submit", refine);
  $("exact-copy").addEventListener("click", (e) => copy($("exact-prompt").textContent, e.target));
  const given = new URLSearchParams(location.search);
  for (const key of ["text", "target", ...FILTERS]) {
    const field = document.querySelector(`[name="${key}"][form="search"], #search [name="${key}"]`);
    if (field && given.get(key)) field.value = given.get(key);
  }
  if (given.get("text") || given.get("like")) {
    search(given.get("like") ? { like: given.get("like") } : undefined);
  }
}

document.addEventListener("DOMContentLoaded", start);
