// headstart app: a small hand-written front end over the JSON API (no framework, no build step).
"use strict";

const $main = () => document.getElementById("main");
let timer = null;

function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : "";
}

// Build DOM nodes; text always goes in as text, never as HTML.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

async function api(method, url, body, raw) {
  const headers = {"x-csrf-token": cookie("hs_csrf")};
  let payload;
  if (raw !== undefined) { payload = raw; }
  else if (body !== undefined) { headers["content-type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(url, {method, headers, body: payload, credentials: "same-origin"});
  if (res.status === 401 && !url.startsWith("/api/login")) { location.href = "/login"; throw new Error("Log in first."); }
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((data && data.error && data.error.message) || `The server answered ${res.status}.`);
  return data;
}

// Replace an element's children; arrays are spread and null / false / undefined left out.
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false)
    .map((k) => (k instanceof Node ? k : document.createTextNode(String(k)))));
}

function flash(message, kind) {
  const el = document.getElementById("flash");
  fill(el);
  if (message) el.append(h("div", {class: kind || "error", "data-testid": "flash"}, message));
}

function pct(x, digits = 1) { return x === null || x === undefined ? "–" : (100 * x).toFixed(digits) + "%"; }
function ci(c) { return c ? ` (${pct(c[0] ?? c.low, 0)}–${pct(c[1] ?? c.high, 0)})` : ""; }
function setCrumbs(...links) {
  document.getElementById("crumbs").replaceChildren(...links.map(([t, href]) => h("a", {href}, t)));
}
function statusEl(s) { return h("span", {class: `status status-${s}`, "data-status": s}, s); }

// ---------------------------------------------------------------------------------------------- routes

let nextFlash = null;  // a message for the page a change navigates to
function flashAfter(message) { nextFlash = message; }

async function route() {
  clearInterval(timer);
  timer = null;
  flash(nextFlash || "", nextFlash ? "ok" : undefined);
  nextFlash = null;
  const parts = (location.hash.replace(/^#\/?/, "") || "").split("/").filter(Boolean);
  try {
    if (parts[0] === "p") await projectPage(+parts[1], parts[2] || "data");
    else if (parts[0] === "run") await runPage(+parts[1]);
    else await homePage();
  } catch (e) { flash(e.message); }
}
window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);

// ---------------------------------------------------------------------------------------------- home

async function homePage() {
  setCrumbs();
  const data = await api("GET", "/api/projects");
  const name = h("input", {name: "name", placeholder: "e.g. Support tickets", required: true, "aria-label": "Project name"});
  const form = h("form", {class: "card row", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const p = await api("POST", "/api/projects", {name: name.value});
      location.hash = `#/p/${p.id}/data`;
    } catch (e) { flash(e.message); }
  }}, h("label", {}, "New project ", name), h("button", {type: "submit"}, "Create project"));
  const rows = data.projects.map((p) => h("tr", {},
    h("td", {}, h("a", {href: `#/p/${p.id}/data`}, p.name)), h("td", {}, p.modality || "no data yet"),
    h("td", {}, p.versions), h("td", {}, p.runs)));
  fill($main(), 
    h("h1", {}, "Projects"),
    h("p", {class: "muted"}, "A project holds one data set (and its versions), the checks, the models trained on it and how they compare."),
    form,
    rows.length ? h("table", {}, h("tr", {}, h("th", {}, "project"), h("th", {}, "data"), h("th", {}, "versions"), h("th", {}, "models")), rows)
                : h("p", {class: "muted"}, "No projects yet."));
}

// ---------------------------------------------------------------------------------------------- project

const TABS = [["data", "Data"], ["check", "Check"], ["ladder", "Labels needed"], ["train", "Train"],
              ["runs", "Models"], ["relabel", "Relabel"], ["jobs", "Jobs"]];

async function projectPage(pid, tab) {
  const p = await api("GET", `/api/projects/${pid}`);
  setCrumbs(["Projects", "#/"], [p.name, `#/p/${pid}/data`]);
  const tabs = h("div", {class: "tabs"}, TABS.map(([k, t]) => h("a", {href: `#/p/${pid}/${k}`, class: k === tab ? "on" : ""}, t)));
  const body = h("div", {id: "tab"});
  fill($main(), h("h1", {}, p.name, " ", h("span", {class: "muted"}, p.modality ? `(${p.modality}s)` : "")), tabs, body);
  const views = {data: dataTab, check: checkTab, ladder: ladderTab, train: trainTab, runs: runsTab, relabel: relabelTab, jobs: jobsTab};
  await (views[tab] || dataTab)(p, body);
}

function latestVersion(p) { return p.data_versions[0]; }
function needData(p, body) {
  if (p.data_versions.length) return false;
  fill(body, h("p", {}, "Upload data first: ", h("a", {href: `#/p/${p.id}/data`}, "go to Data"), "."));
  return true;
}

// Keep a job panel fresh while its job is queued or running.
function jobPanel(jobId, onDone) {
  const box = h("div", {class: "card", "data-job": jobId});
  let last = null;
  async function refresh() {
    let j;
    try { j = await api("GET", `/api/jobs/${jobId}`); } catch (e) { return; }
    const active = j.status === "queued" || j.status === "running";
    const secs = j.started ? Math.round(((j.finished ? new Date(j.finished) : new Date()) - new Date(j.started)) / 1000) : 0;
    const budget = j.params && j.params.budget_s;
    const kids = [h("div", {class: "row"}, h("strong", {}, `${j.kind} #${j.id}`), statusEl(j.status),
      j.started ? h("span", {class: "muted"}, `${secs} s` + (budget ? ` of a ${budget} s budget` : "")) : null,
      active ? h("button", {class: "danger", onclick: async () => {
        try { await api("POST", `/api/jobs/${jobId}/cancel`); refresh(); } catch (e) { flash(e.message); }
      }}, "Cancel") : null)];
    if (budget && j.status === "running") {
      const bar = h("div", {class: "bar"}, h("span"));
      bar.firstChild.style.width = Math.min(100, 100 * secs / budget) + "%";
      kids.push(bar);
    }
    if (j.error) kids.push(h("div", {class: "error"}, j.error));
    kids.push(h("pre", {class: "log"}, j.log || (j.status === "queued" ? "Waiting for a worker…" : "Starting…")));
    fill(box, ...kids);
    const pre = box.querySelector("pre");
    pre.scrollTop = pre.scrollHeight;
    if (!active) {
      clearInterval(box._timer);
      if (last !== null && onDone) onDone(j);
    }
    last = j.status;
  }
  refresh();
  box._timer = setInterval(() => { if (!document.body.contains(box)) clearInterval(box._timer); else refresh(); }, 1000);
  return box;
}

// ---- data

async function dataTab(p, body) {
  const versions = p.data_versions.map((v) => h("tr", {},
    h("td", {}, `v${v.number}`), h("td", {}, v.note), h("td", {}, v.n_items),
    h("td", {}, Object.entries(v.class_counts).map(([k, n]) => `${k}: ${n}`).join(", "))));
  const status = h("div", {id: "upload-status"});
  const file = h("input", {type: "file", id: "file", accept: ".zip,.csv,.tsv,.jsonl,.ndjson,.parquet"});
  const drop = h("div", {class: "drop"}, h("p", {}, "Drop a .zip of class folders (one folder per class) or a CSV here, or "), file);
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });
  file.addEventListener("change", () => { if (file.files[0]) upload(file.files[0]); });

  async function upload(f) {
    flash("");
    fill(status, h("p", {class: "muted"}, `Uploading ${f.name} (${(f.size / 1e6).toFixed(1)} MB)…`));
    try {
      const staged = await api("POST", `/api/projects/${p.id}/uploads?filename=${encodeURIComponent(f.name)}`, undefined, f);
      await confirm(staged);
    } catch (e) { fill(status); flash(e.message); }
  }
  async function confirm(staged) {
    if (staged.kind === "zip") return finish(staged, {});
    const opts = (sel) => staged.columns.map((c) => h("option", {value: c, selected: c === sel}, c));
    const text = h("select", {id: "text-column"}, opts(staged.guess.text));
    const label = h("select", {id: "label-column"}, opts(staged.guess.label));
    const enc = h("select", {id: "encoding"}, ["", "utf-8", "cp1252", "latin-1", "utf-16"].map((e) => h("option", {value: e}, e || "detect")));
    fill(status, h("form", {class: "card", onsubmit: (ev) => {
      ev.preventDefault(); finish(staged, {text_column: text.value, label_column: label.value, encoding: enc.value});
    }}, h("p", {}, `${staged.filename}: choose the columns.`), h("div", {class: "row"},
      h("label", {}, "Text column ", text), h("label", {}, "Label column ", label), h("label", {}, "Encoding ", enc),
      h("button", {type: "submit", id: "use-columns"}, "Use this table"))));
  }
  async function finish(staged, cols) {
    try {
      const out = await api("POST", `/api/projects/${p.id}/versions`, {upload_id: staged.upload_id, ...cols});
      flashAfter(`Version ${out.version.number} made: ${out.version.n_items} items. The check is running.`);
      location.hash = `#/p/${p.id}/check`;
    } catch (e) { fill(status); flash(e.message); }
  }
  const examples = h("div", {class: "row"}, h("span", {class: "muted"}, "No data at hand? Use an example:"),
    h("button", {class: "secondary", onclick: () => example("mnist")}, "Digits (images)"),
    h("button", {class: "secondary", onclick: () => example("bbc-news")}, "News topics (texts)"));
  async function example(name) {
    fill(status, h("p", {class: "muted"}, "Preparing the example…"));
    try { await confirm(await api("POST", `/api/projects/${p.id}/examples`, {name, per_class: 20})); }
    catch (e) { fill(status); flash(e.message); }
  }
  fill(body, 
    h("h2", {}, "Upload"), drop, status, p.data_versions.length ? null : examples,
    h("p", {class: "muted"}, "A table needs a text column and a label column (Excel: Save As “CSV UTF-8”). Each upload makes a new version; nothing is ever overwritten."),
    h("h2", {}, "Versions"),
    versions.length ? h("table", {}, h("tr", {}, h("th", {}, "version"), h("th", {}, "from"), h("th", {}, "items"), h("th", {}, "classes")), versions)
                    : h("p", {class: "muted"}, "No data yet."));
}

// ---- check

function findingCard(f, vid, modality) {
  const items = (f.items || []).map((it) => modality === "image"
    ? h("div", {class: "thumb"}, h("img", {src: `/api/versions/${vid}/file?id=${encodeURIComponent(it.id)}`, alt: it.id, loading: "lazy"}), it.id)
    : h("div", {class: "snippet"}, h("strong", {}, it.id + (it.label ? ` [${it.label}]` : "") + ": "), it.text));
  const more = f.where.length > (f.items || []).length ? h("p", {class: "muted"}, `Also: ${f.where.slice((f.items || []).length, 12).join(", ")}${f.where.length > 12 ? " …" : ""}`) : null;
  return h("div", {class: `card level-${f.level}`, "data-finding": f.code},
    h("strong", {}, f.level === "error" ? "Must fix: " : f.level === "warning" ? "Worth a look: " : "Note: "), f.message,
    f.fix ? h("p", {class: "muted"}, "How to fix: " + f.fix) : null,
    h("div", {class: modality === "image" ? "thumbs" : ""}, items), more);
}

function deepCard(c, vid, modality) {
  const it = c.preview || {id: c.item};
  const what = {"label-issue": `Labelled '${c.label}', looks like '${c.suggested}'`, "near-duplicate": `Nearly the same as ${c.other} (${c.detail})`,
                "near-duplicate-test": `Nearly the same as test item ${c.other}`, "outlier": `Unlike the rest of '${c.label}'`}[c.kind] || c.detail;
  return h("div", {class: "item", "data-kind": c.kind},
    modality === "image" ? h("img", {src: `/api/versions/${vid}/file?id=${encodeURIComponent(it.id)}`, alt: it.id, loading: "lazy"}) : h("div", {class: "snippet"}, it.text || ""),
    h("div", {class: "muted"}, it.id), h("div", {}, what));
}

async function checkTab(p, body) {
  if (needData(p, body)) return;
  const v = latestVersion(p);
  const done = p.latest[`check:${v.id}`];
  const deep = p.latest[`deep:${v.id}`];
  const active = (kind) => p.jobs.find((j) => j.kind === kind && j.version_id === v.id && (j.status === "queued" || j.status === "running"));
  const submit = (kind) => async () => {
    try { await api("POST", `/api/projects/${p.id}/jobs`, {kind, version_id: v.id}); route(); } catch (e) { flash(e.message); }
  };
  const again = h("button", {class: "secondary", onclick: submit("check")}, "Check again");
  const running = active("check");
  if (running) { fill(body, h("p", {}, `Checking version ${v.number}…`), jobPanel(running.id, () => route())); return; }
  if (!done) { fill(body, h("p", {}, `Version ${v.number} has not been checked yet.`), again); return; }
  const r = done.result;
  const deepBox = h("div", {id: "deep"});
  const deepRunning = active("deep");
  if (deepRunning) fill(deepBox, jobPanel(deepRunning.id, () => route()));
  else if (deep) {
    const d = deep.result;
    const issues = d.candidates.filter((c) => c.kind === "label-issue");
    const others = d.candidates.filter((c) => c.kind !== "label-issue").slice(0, 24);
    fill(deepBox, h("p", {class: "card", "data-testid": "deep-summary"}, d.summary),
      issues.length ? h("p", {}, h("a", {href: `#/p/${p.id}/relabel`, id: "review-labels"}, `Review the ${issues.length} label(s) that look wrong`)) : null,
      h("div", {class: "grid"}, issues.slice(0, 24).map((c) => deepCard(c, v.id, d.modality))),
      others.length ? h("details", {}, h("summary", {}, "Near-duplicates and outliers"), h("div", {class: "grid"}, others.map((c) => deepCard(c, v.id, d.modality)))) : null);
  } else {
    fill(deepBox, h("button", {class: "secondary", id: "run-deep", onclick: submit("deep")}, "Look for wrong labels"),
      h("span", {class: "muted"}, " A model trained on the rest of the data judges each label (takes a minute or more)."));
  }
  fill(body, 
    h("h2", {}, `Check of version ${v.number}`),
    h("p", {class: "card", "data-testid": "check-summary"}, r.summary),
    r.findings.length ? r.findings.map((f) => findingCard(f, v.id, r.modality)) : h("p", {class: "ok"}, "Nothing to fix."),
    again, h("h2", {}, "Labels that look wrong"), deepBox);
}

// ---- ladder

async function ladderTab(p, body) {
  if (needData(p, body)) return;
  const v = latestVersion(p);
  const done = p.latest[`ladder:${v.id}`];
  const running = p.jobs.find((j) => j.kind === "ladder" && j.version_id === v.id && (j.status === "queued" || j.status === "running"));
  const start = h("button", {id: "run-ladder", onclick: async () => {
    try { await api("POST", `/api/projects/${p.id}/jobs`, {kind: "ladder", version_id: v.id, params: {budgets: [0, 8, 32, "all"], seeds: 1}}); route(); }
    catch (e) { flash(e.message); }
  }}, done ? "Measure again" : "Measure what labels buy");
  const intro = h("p", {}, "What would zero labels (class names only), 8, 32 or all labels per class give on this data? Each rung trains quick models and tests them on the same held-out items.");
  if (running) { fill(body, intro, jobPanel(running.id, () => route())); return; }
  if (!done) { fill(body, intro, start); return; }
  const r = done.result;
  const rows = r.summary.map((s) => h("tr", {}, h("td", {}, s.budget === "0" ? "0 (class names only)" : s.budget),
    h("td", {}, s.strategy), h("td", {}, pct(s.mean) + (s.runs > 1 ? ` ± ${pct(s.std)}` : "")), h("td", {}, s.seconds.toFixed(1) + " s")));
  fill(body, intro,
    h("p", {class: "card", "data-testid": "ladder-recommendation"}, "Recommendation: ", r.recommendation, "."),
    ...(r.warnings || []).map((w) => h("p", {class: "muted"}, w)),
    h("table", {id: "ladder-table"}, h("tr", {}, h("th", {}, "labels per class"), h("th", {}, "method"), h("th", {}, "test accuracy"), h("th", {}, "time")), rows),
    h("p", {class: "muted"}, `Chance: ${pct(r.chance)}; ${r.n_test} test items; backbone ${r.backbone}.`), start);
}

// ---- train

async function trainTab(p, body) {
  if (needData(p, body)) return;
  const v = latestVersion(p);
  const meta = await api("GET", "/api/projects");
  const active = p.jobs.find((j) => j.kind === "fit" && (j.status === "queued" || j.status === "running"));
  const budget = h("select", {id: "budget"}, [[60, "1 minute"], [300, "5 minutes"], [900, "15 minutes"], [3600, "1 hour"]]
    .map(([s, t]) => h("option", {value: s, selected: s === 300}, t)));
  const strategy = h("select", {id: "strategy"}, meta.strategies.map((s) => h("option", {value: s}, s === "auto" ? "auto (recommended)" : s)));
  const backbone = h("select", {id: "backbone"}, h("option", {value: ""}, "default for the data"), h("option", {value: "auto"}, "auto: rank them on the data"),
    meta.backbones.filter((b) => !p.modality || b.modality === p.modality).map((b) => h("option", {value: b.name}, `${b.name} — ${b.description}`)));
  const panel = h("div", {id: "fit-job"});
  const form = h("form", {class: "card", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const j = await api("POST", `/api/projects/${p.id}/jobs`, {kind: "fit", version_id: v.id,
        params: {budget_s: +budget.value, strategy: strategy.value, backbone: backbone.value || null}});
      fill(panel, jobPanel(j.id, (jj) => { if (jj.status === "done") location.hash = `#/run/${jj.result.run_id}`; }));
    } catch (e) { flash(e.message); }
  }}, h("p", {}, `Train on version ${v.number} (${v.n_items} items).`),
    h("label", {}, "Time budget ", budget),
    h("details", {}, h("summary", {}, "Advanced"), h("label", {}, "Method ", strategy), h("label", {}, "Pre-trained network ", backbone)),
    h("button", {type: "submit", id: "start-fit"}, "Train a model"));
  fill(body, form, panel);
  if (active) fill(panel, jobPanel(active.id, (jj) => { if (jj.status === "done") location.hash = `#/run/${jj.result.run_id}`; }));
}

// ---- runs

async function runsTab(p, body) {
  if (!p.run_list.length) { fill(body, h("p", {}, "No models yet: ", h("a", {href: `#/p/${p.id}/train`}, "train one"), ".")); return; }
  const rows = p.run_list.map((r) => { const s = r.summary; return h("tr", {},
    h("td", {}, h("a", {href: `#/run/${r.id}`}, `model ${r.id}`)), h("td", {}, `v${s.version}`),
    h("td", {}, s.chosen), h("td", {}, s.backbone), h("td", {}, pct(s.accuracy) + ci(s.accuracy_ci95)),
    h("td", {}, pct(s.baseline_accuracy)), h("td", {}, s.gain === null || s.gain === undefined ? "–" : (s.gain >= 0 ? "+" : "") + (100 * s.gain).toFixed(1) + " pts"),
    h("td", {}, `${s.seconds} s`)); });
  fill(body, h("h2", {}, "Compare models"),
    h("table", {id: "runs-table"}, h("tr", {}, ["model", "data", "method", "network", "test accuracy (95% interval)", "without transfer", "transfer gain", "time"].map((t) => h("th", {}, t))), rows));
}

// ---- jobs

async function jobsTab(p, body) {
  const rows = p.jobs.map((j) => h("tr", {}, h("td", {}, `#${j.id}`), h("td", {}, j.kind), h("td", {}, statusEl(j.status)),
    h("td", {}, j.error || j.last_line), h("td", {}, (j.status === "queued" || j.status === "running")
      ? h("button", {class: "danger", onclick: async () => { await api("POST", `/api/jobs/${j.id}/cancel`); route(); }}, "Cancel") : "")));
  fill(body, h("table", {}, h("tr", {}, ["job", "kind", "state", "last line", ""].map((t) => h("th", {}, t))), rows));
  if (p.jobs.some((j) => j.status === "queued" || j.status === "running")) timer = setInterval(route, 2000);
}

// ---- relabel

async function relabelTab(p, body) {
  if (needData(p, body)) return;
  const v = latestVersion(p);
  const deep = p.latest[`deep:${v.id}`];
  const suspects = deep ? deep.result.candidates.filter((c) => c.kind === "label-issue").map((c) => ({id: c.item, suggested: c.suggested})) : null;
  const suggested = Object.fromEntries((suspects || []).map((s) => [s.id, s.suggested]));
  const filter = h("select", {id: "label-filter"}, h("option", {value: ""}, "all classes"));
  const grid = h("div", {class: "grid", id: "relabel-grid"});
  const changes = {};
  const save = h("button", {id: "save-labels", disabled: true, onclick: async () => {
    try {
      const out = await api("POST", `/api/versions/${v.id}/relabel`, {changes});
      flashAfter(`Saved as version ${out.version.number} (${Object.keys(changes).length} label(s) changed). Version ${v.number} is kept as it was.`);
      location.hash = `#/p/${p.id}/data`;
    } catch (e) { flash(e.message); }
  }}, "Save as a new version");
  let offset = 0;
  async function load() {
    const q = new URLSearchParams({offset, limit: 60, label: filter.value});
    if (suspects && suspects.length && !filter.value) q.set("ids", JSON.stringify(suspects.map((s) => s.id)));
    const data = await api("GET", `/api/versions/${v.id}/items?${q}`);
    if (filter.options.length === 1) data.labels.forEach((l) => filter.append(h("option", {value: l}, l)));
    fill(grid, ...data.items.map((it) => {
      const sel = h("select", {"data-id": it.id, "aria-label": `label of ${it.id}`}, data.labels.map((l) => h("option", {value: l, selected: l === (changes[it.id] || it.label)}, l)));
      const card = h("div", {class: "item" + (changes[it.id] ? " changed" : "")},
        data.modality === "image" ? h("img", {src: `/api/versions/${v.id}/file?id=${encodeURIComponent(it.id)}`, alt: it.id, loading: "lazy"}) : h("div", {class: "snippet"}, it.text),
        h("div", {class: "muted"}, it.id), suggested[it.id] ? h("div", {}, `Looks like '${suggested[it.id]}'`) : null, sel);
      sel.addEventListener("change", () => {
        if (sel.value === it.label) delete changes[it.id]; else changes[it.id] = sel.value;
        card.classList.toggle("changed", !!changes[it.id]);
        save.disabled = !Object.keys(changes).length;
        save.textContent = `Save as a new version (${Object.keys(changes).length} change(s))`;
      });
      return card;
    }));
    fill(pager, h("span", {class: "muted"}, `${data.total ? offset + 1 : 0}–${Math.min(offset + 60, data.total)} of ${data.total}`),
      offset > 0 ? h("button", {class: "secondary", onclick: () => { offset -= 60; load(); }}, "Previous") : null,
      offset + 60 < data.total ? h("button", {class: "secondary", onclick: () => { offset += 60; load(); }}, "Next") : null);
  }
  const pager = h("div", {class: "row"});
  filter.addEventListener("change", () => { offset = 0; load(); });
  fill(body, 
    h("p", {}, suspects ? "These items' labels look wrong to a model trained on the rest. Fix the ones that are wrong; saving makes a new version."
                        : "Change any label; saving makes a new version of the data (the upload is kept). Run “Look for wrong labels” on the Check tab to see the suspects first."),
    h("div", {class: "row"}, h("label", {}, "Show ", filter), save), grid, pager);
  await load();
}

// ---------------------------------------------------------------------------------------------- run

async function runPage(rid) {
  const r = await api("GET", `/api/runs/${rid}`);
  const p = await api("GET", `/api/projects/${r.project_id}`);
  setCrumbs(["Projects", "#/"], [p.name, `#/p/${p.id}/runs`], [`model ${rid}`, `#/run/${rid}`]);
  const s = r.summary;
  const gain = s.gain === null || s.gain === undefined ? null
    : h("p", {}, `Transfer gain over a model trained without a pre-trained network: ${(s.gain >= 0 ? "+" : "") + (100 * s.gain).toFixed(1)} points` + (s.gain_ci95 ? ` (95% interval ${(100 * s.gain_ci95[0]).toFixed(1)} to ${(100 * s.gain_ci95[1]).toFixed(1)})` : "") + ".");
  const headline = h("div", {class: "card"},
    h("div", {class: "big", "data-testid": "accuracy"}, `${pct(s.accuracy)} test accuracy`),
    h("p", {class: "muted"}, `95% interval${ci(s.accuracy_ci95)} on ${s.n_test} test items; ${s.chosen} on ${s.backbone}; ${s.seconds} s.`),
    gain, s.reasons && s.reasons.length ? h("details", {}, h("summary", {}, "Why this method"), h("ul", {}, s.reasons.map((x) => h("li", {}, x)))) : null);

  // Try it
  const out = h("div", {id: "prediction"});
  async function show(promise) {
    fill(out, h("p", {class: "muted"}, "Predicting…"));
    try {
      const res = await promise;
      fill(out, h("p", {class: "big", "data-testid": "predicted"}, res.label, " ", h("span", {class: "muted"}, pct(res.confidence))),
        res.unsure ? h("p", {class: "error"}, "Unsure: this input is unlike the training data.") : null,
        h("table", {}, res.probabilities.slice(0, 10).map((x) => { const bar = h("div", {class: "bar"}, h("span")); bar.firstChild.style.width = (100 * x.p) + "%";
          return h("tr", {}, h("td", {}, x.label), h("td", {}, bar), h("td", {}, pct(x.p))); })), whyButton, why);
    } catch (e) { fill(out, h("p", {class: "error"}, e.message)); }
  }
  let tryBox;
  let lastInput = null;
  const why = h("div", {id: "explanation"});
  async function explain() {
    fill(why, h("p", {class: "muted"}, "Working out why (a few seconds)…"));
    try {
      const e = lastInput.text !== undefined ? await api("POST", `/api/runs/${rid}/explain`, {text: lastInput.text})
                                             : await api("POST", `/api/runs/${rid}/explain`, undefined, lastInput.file);
      const intro = h("p", {}, `Evidence for '${e.label}' (${e.method}): `);
      if (e.overlay) fill(why, intro, h("img", {src: e.overlay, alt: "heat map of the evidence", id: "overlay"}));
      else {
        const peak = Math.max(1e-9, ...e.words.map((w) => Math.abs(w.score)));
        fill(why, intro, h("p", {class: "snippet", id: "words"}, e.words.map((w) => {
          const span = h("span", {title: w.score.toFixed(3)}, w.word + " ");
          const a = Math.abs(w.score) / peak;
          span.style.background = w.score >= 0 ? `rgba(230,120,0,${a.toFixed(2)})` : `rgba(40,110,220,${a.toFixed(2)})`;
          return span;
        })));
      }
    } catch (err) { fill(why, h("p", {class: "error"}, err.message)); }
  }
  const whyButton = h("button", {class: "secondary", id: "why-button", onclick: explain}, "Why?");
  if (s.modality === "text") {
    const ta = h("textarea", {id: "try-text", rows: 4, cols: 80, placeholder: "Type or paste a text"});
    tryBox = h("form", {onsubmit: (ev) => { ev.preventDefault(); lastInput = {text: ta.value}; fill(why); show(api("POST", `/api/runs/${rid}/predict`, {text: ta.value})); }}, ta, h("div", {}, h("button", {type: "submit", id: "try-button"}, "Predict")));
  } else {
    const f = h("input", {type: "file", id: "try-file", accept: "image/*"});
    const preview = h("img", {class: "thumb", alt: ""});
    const send = (file) => { lastInput = {file}; fill(why); preview.src = URL.createObjectURL(file); show(api("POST", `/api/runs/${rid}/predict`, undefined, file)); };
    f.addEventListener("change", () => f.files[0] && send(f.files[0]));
    tryBox = h("div", {class: "drop"}, h("p", {}, "Drop an image here or choose one: "), f, preview);
    tryBox.addEventListener("dragover", (e) => e.preventDefault());
    tryBox.addEventListener("drop", (e) => { e.preventDefault(); if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]); });
  }

  // Downloads
  const exportBtn = h("button", {class: "secondary", id: "export-onnx", onclick: async () => {
    try { const j = await api("POST", `/api/projects/${p.id}/jobs`, {kind: "export", run_id: rid}); fill(exportBox, jobPanel(j.id, () => runPage(rid))); }
    catch (e) { flash(e.message); }
  }}, "Export to ONNX");
  const exportBox = h("div");
  const downloads = h("div", {class: "row"}, h("a", {class: "button", href: `/api/runs/${rid}/download`, id: "download-model", download: ""}, "Download the model folder"),
    r.onnx ? h("a", {class: "button", href: `/api/runs/${rid}/onnx`, id: "download-onnx", download: ""}, "Download the ONNX export") : exportBtn);

  const perClass = r.metrics && r.metrics.test && r.metrics.test.per_class;
  const classTable = perClass ? h("table", {}, h("tr", {}, ["class", "precision", "recall", "F1", "items"].map((t) => h("th", {}, t))),
    Object.entries(perClass).map(([k, m]) => h("tr", {}, h("td", {}, k), h("td", {}, pct(m.precision)), h("td", {}, pct(m.recall)), h("td", {}, pct(m.f1)), h("td", {}, m.support)))) : null;

  fill($main(), h("h1", {}, `Model ${rid}`), headline,
    h("h2", {}, "Try it"), tryBox, out,
    h("h2", {}, "Download"), downloads, exportBox,
    h("h2", {}, "Report"),
    r.report_url ? h("p", {}, h("a", {href: r.report_url, target: "_blank", rel: "noopener"}, "Open the full HTML report")) : null,
    classTable, h("details", {}, h("summary", {}, "Transfer card (how this model was made)"), h("pre", {class: "card-text", id: "transfer-card"}, r.card)));
}
