// promptlake search page: the filters offered from what the store holds (with counts), the
// message when a search finds nothing, and the refine panel.
"use strict";

const LABELS = { source_site: "source site", origin: "origin", model_name: "model containing",
  tool: "tool", min_width: "min width", min_height: "min height" };

function field(name) {
  return document.querySelector(`[name="${name}"][form="search"], #search [name="${name}"]`);
}

// a select keeps a value it does not list (from an address, or a store that changed)
function setField(name, value) {
  const control = field(name);
  if (!control) return;
  if (control.tagName === "SELECT" && value && ![...control.options].some((o) => o.value === value)) {
    control.append(new Option(value, value));
  }
  control.value = value;
}

// --- facets: each filter's values in the store of the current target, with counts ---------
async function loadFacets() {
  const target = $("target").value;
  try {
    state.facets[target] = state.facets[target] || await api("/api/facets?target=" + target);
  } catch (_) {
    return; // the filters stay as they are; the next search tries again
  }
  if ($("target").value === target) showFacets(state.facets[target]);
  if (state.fields && !state.hits.length) showZero(); // now it can say what the store holds
}

function showFacets(facets) {
  for (const list of document.querySelectorAll("[data-facet]")) {
    const name = list.dataset.facet;
    const values = (facets[name] || []).filter(([v]) => v !== "");
    if (list.tagName === "DATALIST") {
      list.replaceChildren(...values.map(([v, n]) => new Option(`${n.toLocaleString()} rows`, v)));
      continue;
    }
    const chosen = list.value;
    const none = values.length ? "any" : "none recorded";
    list.replaceChildren(new Option(none, ""),
      ...values.map(([v, n]) => new Option(`${v} (${n.toLocaleString()})`, v)));
    setField(name, chosen);
    list.disabled = !values.length && !chosen;
  }
}

function activeFilters(fields) {
  return filterNames().filter((name) => fields && fields.get(name));
}

function showFilterCount() {
  const n = activeFilters(formFields()).length;
  $("filters-count").textContent = n ? `(${n} in force)` : "";
  if (n) $("filters").open = true;
}

// --- nothing found: say which filters did it, and offer the search without them ------------
function showZero() {
  const zero = $("zero");
  zero.hidden = state.hits.length > 0;
  if (zero.hidden) return;
  const target = state.fields.get("target") || "prompts";
  const facets = state.facets[target];
  const active = activeFilters(state.fields);
  $("unfilter").hidden = !active.length;
  if (!active.length) {
    $("zero-text").textContent = facets && facets.rows === 0
      ? `The store holds no ${target} yet.` : `No ${target} found.`;
    return;
  }
  const said = active.map((name) => `${LABELS[name] || name} ${state.fields.get(name)}` +
    why(name, state.fields.get(name), facets));
  $("zero-text").textContent = `No ${target} match ${said.join(" and ")}.`;
}

// what the store says about one filter's value (nothing when the facets are not loaded)
function why(name, value, facets) {
  if (!facets) return "";
  const has = (facets[name] || []).map(([v]) => v);
  if (name === "min_width" || name === "min_height") {
    const most = name === "min_width" ? facets.max_width : facets.max_height;
    return Number(value) > most ? ` (the ${name === "min_width" ? "widest" : "tallest"} image ` +
      `here is ${most} px)` : "";
  }
  if (name === "model_name") {
    const low = value.toLowerCase();
    return has.some((v) => v.toLowerCase().includes(low)) ? "" : " (no model here contains it)";
  }
  return has.includes(value) ? "" : ` (no row here has this ${LABELS[name] || name})`;
}

function unfilter() {
  for (const name of filterNames()) setField(name, "");
  showFilterCount();
  newSearch(state.fields && state.fields.get("like") ? { like: state.fields.get("like") } : {});
}

// --- refine -----------------------------------------------------------------------------------
async function refine(e) {
  e.preventDefault();
  const fields = new URLSearchParams(new FormData($("refine-form")));
  const search = formFields();
  for (const name of filterNames()) if (search.get(name)) fields.set(name, search.get(name));
  setStatus($("refine-status"), "refining…");
  try {
    const data = await api("/api/refine?" + fields);
    const byId = new Map(data.sources.map((h) => [h.id, h]));
    $("variants").replaceChildren(...data.variants.map((v) => variant(v, byId)));
    const got = data.variants.length;
    const count = got < data.asked ? `${got} of ${data.asked} variants` : `${got} variants`;
    const short = data.shortfall ? ` — ${data.shortfall}` : "";
    setStatus($("refine-status"), `${count} by ${data.refiner}, from ${data.sources.length} ` +
      `neighbours, in ${Math.round(data.took_ms)} ms${short}`);
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
  const sources = [...byId.values()];
  li.querySelector(".mini").append(...v.drawn_from.map((id) => {
    const hit = byId.get(id);
    const item = el("li");
    const pic = el("img");
    if (hit) thumb(pic, hit);
    item.append(pic, el("span", hit ? hit.prompt : id));
    item.title = id;
    if (hit) item.addEventListener("click", () => showDetail(sources.indexOf(hit), sources));
    return item;
  }));
  return li;
}

function wirePanels() {
  $("refine-form").addEventListener("submit", refine);
  $("unfilter").addEventListener("click", unfilter);
  $("filters").addEventListener("change", showFilterCount);
  $("filters").open = window.matchMedia("(min-width: 50rem)").matches;
}
