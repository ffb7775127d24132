// promptlake search page: history. Every search is an address and a history entry; Back and
// Forward show an entry again from memory (its hits, image and scroll), a reload or a link runs
// the address's search again.
"use strict";

function remember(how) {
  const url = new URLSearchParams(state.fields);
  url.set("k", String(state.perPage));
  if (state.pages > 1) url.set("pages", String(state.pages));
  if (state.image && !state.fields.get("like")) url.set("image", state.imageName);
  const snap = { fields: state.fields, hits: state.hits, exact: state.exact, image: state.image,
    imageName: state.imageName, imageUrl: state.imageUrl, perPage: state.perPage,
    pages: state.pages, tookMs: state.tookMs, note: state.note, idea: $("idea").value,
    scrollY: how === "more" ? window.scrollY : 0 };
  if (how !== "more" || !state.entry) { // a new search is a new entry; "More" keeps its own
    state.entry = state.nextEntry++;
    history[how === "push" ? "pushState" : "replaceState"]({ entry: state.entry }, "", "/?" + url);
  } else {
    history.replaceState({ entry: state.entry }, "", "/?" + url);
  }
  state.entries.set(state.entry, snap); // in memory: a File cannot live in history.state
}

function restore(id, snap) {
  Object.assign(state, { entry: id, fields: snap.fields, hits: snap.hits, exact: snap.exact,
    perPage: snap.perPage, pages: snap.pages, tookMs: snap.tookMs, note: snap.note });
  setControls(snap.fields, snap.perPage);
  showImage(snap.image, snap.imageName, snap.imageUrl);
  $("idea").value = snap.idea;
  loadFacets();
  render(0);
  window.scrollTo(0, snap.scrollY);
}

// the controls as ``fields`` says (absent: their defaults)
function setControls(fields, perPage) {
  $("text").value = fields.get("text") || "";
  $("target").value = fields.get("target") || "prompts";
  for (const name of filterNames()) setField(name, fields.get(name) || "");
  document.querySelector('[name="k"][form="search"]').value = String(perPage);
  showFilterCount(); // panels.js
}

// a search from the address (a reload, a link, an entry made before a reload)
function fromAddress(how) {
  const given = new URLSearchParams(location.search);
  const perPage = Number(given.get("k")) || Number(document.body.dataset.k);
  const pages = Math.max(1, Number(given.get("pages")) || 1);
  const fields = new URLSearchParams();
  for (const name of ["text", "target", "like", ...filterNames()]) {
    if (given.get(name)) fields.set(name, given.get(name));
  }
  setControls(fields, perPage);
  showImage(null, "", "");
  state.note = given.get("image") ? ` — this search used an image (${given.get("image")}) ` +
    "that a reload does not keep: drop it again" : "";
  if (fields.get("text") || fields.get("like")) return run(fields, perPage, pages, how);
  Object.assign(state, { fields: null, hits: [], exact: null, entry: 0 });
  $("grid").replaceChildren();
  $("more").hidden = true;
  $("zero").hidden = true;
  showExact(null);
  setStatus($("status"), state.note ? state.note.slice(3) : "Type an idea, or drop an image.");
  return null;
}

window.addEventListener("popstate", (e) => {
  if ($("detail").open) $("detail").close();
  const id = e.state && e.state.entry;
  const snap = id && state.entries.get(id);
  if (snap) restore(id, snap);
  else fromAddress("replace");
});
