// promptlake search page: a hit's detail dialog. ← and → step through the hits (→ past the last
// loaded one loads more), the cached copy shows at its own size, the original is a link.
"use strict";

const LINEAGE = ["parent_ids", "trigger", "created_at"];

// ``list``: the hits to step through (the grid's, or a refine's sources); default: as before
function showDetail(index, list) {
  if (list) state.shown = list;
  const hits = state.shown || state.hits;
  const hit = hits[index];
  if (!hit) return;
  const grid = hits === state.hits;
  state.current = index;
  showPicture(hit);
  $("detail-prompt").textContent = hit.prompt;
  $("detail-copy").onclick = (e) => copy(hit.prompt, e.target);
  for (const [id, target] of [["more-like", "images"], ["prompts-for", "prompts"]]) {
    $(id).disabled = !hit.thumbnail;
    $(id).onclick = () => likeSearch(hit, target);
  }
  showOriginal(hit);
  const extra = hit.extra || {};
  generic($("detail-meta"), [
    ["id", hit.id], ["similarity", (1 - Math.max(hit.distance, 0)).toFixed(4)],
    ["source site", hit.source_site], ["origin", hit.origin],
    ["original size", hit.width ? `${hit.width}×${hit.height}` : ""],
    ["negative prompt", hit.negative_prompt], ["model", hit.model_name], ["tool", hit.tool],
    ...Object.entries(hit.settings || {}),
    ...Object.entries(extra).filter(([k]) => !LINEAGE.includes(k)),
  ]);
  showLineage(extra);
  const further = grid && canMore();
  $("detail-pos").textContent = `${index + 1} of ${hits.length}${further ? "+" : ""}`;
  $("prev").disabled = index === 0;
  $("next").disabled = index === hits.length - 1 && !further;
  if (!$("detail").open) $("detail").showModal();
  const card = grid && $("grid").children[index];
  if (card) card.scrollIntoView({ block: "nearest" });
}

// the largest copy the cache has, at its own size; or one line saying why there is none
function showPicture(hit) {
  const img = $("detail-img");
  img.removeAttribute("src");
  for (const a of ["width", "height"]) img.removeAttribute(a);
  $("detail-caption").textContent = "";
  if (!hit.thumbnail) {
    noPicture(whyNoImage(hit));
    return;
  }
  $("detail-body").classList.remove("no-image");
  $("detail-fig").hidden = false;
  $("detail-noimg").hidden = true;
  if (hit.image && hit.image.width) {
    img.width = hit.image.width;
    img.height = hit.image.height;
  }
  img.alt = hit.prompt.slice(0, 120);
  img.onload = () => {
    const orig = hit.width ? ` of the original ${hit.width}×${hit.height}` : "";
    $("detail-caption").textContent =
      `cached copy ${img.naturalWidth}×${img.naturalHeight}${orig}`;
  };
  img.onerror = () => { if (img.getAttribute("src")) noPicture("The cached image could not be read."); };
  img.src = hit.thumbnail;
}

function noPicture(reason) {
  $("detail-body").classList.add("no-image");
  $("detail-fig").hidden = true;
  $("detail-noimg").hidden = false;
  $("detail-noimg").textContent = reason;
}

function whyNoImage(hit) {
  if (hit.origin === "feedback") {
    return hit.url ? "The generated image is not in the page's image cache."
      : "No image: the feedback flow wrote this prompt, and no image was generated for it.";
  }
  if (!hit.url) return "No image: this row has no image URL.";
  const rec = hit.image;
  if (!rec) return "No image yet: this row's image has not been fetched.";
  const http = rec.http_status ? ` (HTTP ${rec.http_status})` : "";
  return `No image: fetching it ended ${rec.status}${http}${rec.error ? ": " + rec.error : ""}.`;
}

// a web original opens where it lives; a local file (a browser will not open file:// from a
// page) opens the cached copy, with its path said
function showOriginal(hit) {
  const link = $("detail-orig");
  const web = /^https?:\/\//i.test(hit.url);
  $("detail-orig-row").hidden = !hit.url;
  link.removeAttribute("href");
  link.textContent = web ? hit.url : localPath(hit.url);
  $("detail-orig-note").textContent = "";
  if (web) link.href = hit.url;
  else if (hit.thumbnail) {
    link.href = hit.thumbnail;
    $("detail-orig-note").textContent = "(a local file: the link opens the cached copy)";
  }
}

function localPath(url) {
  if (!url.startsWith("file:")) return url;
  try {
    return decodeURIComponent(new URL(url).pathname);
  } catch (_) {
    return url;
  }
}

function showLineage(extra) {
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
}

async function step(by) {
  const hits = state.shown || state.hits;
  const next = state.current + by;
  if (next < 0) return;
  if (next >= hits.length) {
    if (hits !== state.hits || !canMore()) return;
    if (await more()) showDetail(Math.min(next, state.hits.length - 1), state.hits);
    return;
  }
  showDetail(next);
}

function wireDetail() {
  const dialog = $("detail");
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  dialog.addEventListener("keydown", (e) => {
    if (e.target.matches("input, textarea, select") || e.altKey || e.ctrlKey || e.metaKey) return;
    const moves = { ArrowRight: 1, ArrowLeft: -1 };
    if (e.key in moves) step(moves[e.key]);
    else if (e.key === "Home") showDetail(0);
    else if (e.key === "End") showDetail((state.shown || state.hits).length - 1);
    else return;
    e.preventDefault();
  });
  // closed: focus returns to the hit last shown, not the one first opened
  dialog.addEventListener("close", () => {
    const card = state.shown === state.hits && $("grid").children[state.current];
    if (card && document.activeElement !== $("text")) card.querySelector(".open").focus();
  });
}
