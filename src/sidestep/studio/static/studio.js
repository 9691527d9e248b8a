// Side-Step Studio's pages. Everything shown is built with createElement/textContent: no run name, caption,
// prompt or error ever becomes HTML. Live pages listen to server-sent events; nothing here polls.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const params = new URLSearchParams(location.search);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(body)};
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(data.error || data.detail || response.statusText);
  return data;
}

function showError(err) { $("#error").textContent = err ? String(err.message || err) : ""; }

function guarded(action) {
  return async (event) => {
    if (event) event.preventDefault();
    showError("");
    try { await action(event); } catch (err) { showError(err); }
  };
}

function listen(path, onData) {
  const source = new EventSource(path);
  source.onmessage = (event) => onData(JSON.parse(event.data));
  return source;
}

const fmt = (value, digits = 4) => value === null || value === undefined ? "" :
  typeof value === "number" ? Number(value.toPrecision(digits)).toString() : String(value);

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
       : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// ---- Runs -------------------------------------------------------------------------------------------------
function runsPage() {
  let rows = [], sortKey = "started", descending = true;
  if (params.get("sweep")) $("#filter").value = params.get("sweep");
  const draw = () => {
    const words = $("#filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    const state = $("#state").value;
    const shown = rows.filter((r) => (!state || r.state === state) && words.every((w) =>
      [r.name, r.ref, r.state, r.adapter, r.error, ...(r.overrides || [])].join(" ").toLowerCase().includes(w)));
    shown.sort((a, b) => {
      const x = a[sortKey] ?? "", y = b[sortKey] ?? "";
      return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
    });
    $("#runs tbody").replaceChildren(...shown.map((r) => el("tr", {"data-ref": r.ref},
      el("td", {}, el("a", {href: `/run?ref=${encodeURIComponent(r.ref)}`}, r.name),
         el("div", {class: "sub"}, r.ref, r.sweep ? " · " : "",
            r.sweep ? el("a", {href: `/report?ref=${encodeURIComponent(r.sweep)}`}, "sweep report") : "")),
      el("td", {class: `state ${r.state}`}, r.state, r.error ? el("div", {class: "reason"}, r.error) : ""),
      el("td", {}, r.total_steps ? `${r.step}/${r.total_steps}` : String(r.step ?? ""),
         r.state === "running" && r.eta_s != null ? el("div", {class: "sub"}, `ETA ${duration(r.eta_s)}`) : ""),
      el("td", {}, r.adapter), el("td", {}, fmt(r.rank)), el("td", {}, fmt(r.lr, 3)),
      el("td", {}, fmt(r.loss)), el("td", {}, fmt(r.val_loss)),
      el("td", {}, new Date(r.started * 1000).toLocaleString()))));
    $("#count").textContent = `${shown.length} of ${rows.length} run(s)`;
  };
  document.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
    descending = sortKey === th.dataset.sort ? !descending : true;
    sortKey = th.dataset.sort;
    draw();
  }));
  $("#filter").addEventListener("input", draw);
  $("#state").addEventListener("change", draw);
  listen("/api/runs/events", (data) => { rows = data.runs; draw(); });
  const folders = (list) => $("#folders").replaceChildren(...list.map(([, path]) => el("li", {}, path)));
  api("/api/folders").then((d) => folders(d.folders)).catch(showError);
  $("#add-folder").addEventListener("submit", guarded(async (event) => {
    folders((await api("/api/folders", {path: event.target.path.value})).folders);
  }));
}

// ---- One run ----------------------------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function chart(svg, series) {
  const lines = Object.entries(series).filter(([, points]) => points && points.length);
  svg.replaceChildren();
  if (!lines.length) return;
  const all = lines.flatMap(([, points]) => points);
  const [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  const x = (v) => 64 + 326 * (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5);
  const y = (v) => 145 - 130 * (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5);
  const text = (tx, ty, words, anchor, kind = "") => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("text-anchor", anchor);
    t.setAttribute("class", kind);
    t.textContent = words;
    svg.append(t);
  };
  lines.forEach(([name, points], index) => {
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("points", points.map(([s, v]) => `${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
    path.setAttribute("class", `line line${index}`);
    svg.append(path);
    text(390, 12 + 12 * index, name, "end", `legend${index}`);
  });
  text(60, 18, fmt(y1, 3), "end"); text(60, 148, fmt(y0, 3), "end");
  text(64, 159, String(x0), "start"); text(390, 159, `step ${x1}`, "end");
}

function runPage() {
  const ref = params.get("ref");
  $("#report").href = `/report?ref=${encodeURIComponent(ref)}`;
  const files = (list, id, player) => $(id).replaceChildren(...(list || []).map((rel) => el("li", {},
    player ? el("figure", {}, el("figcaption", {}, rel), el("audio", {controls: true, preload: "none",
                                                                   src: `/files/${ref}/${rel}`}))
           : el("code", {}, rel))));
  const draw = (data) => {
    const status = data.status || {};
    document.title = `${data.name} · Side-Step Studio`;
    $("#name").textContent = data.name;
    $("#folder").textContent = data.folder;
    const state = status.state || (data.log.length ? "starting" : "not started");
    $("#state").textContent = state;
    $("#state").className = `state ${state}`;
    $("#reason").textContent = status.error || "";
    $("#progress").max = status.total_steps || 1;
    $("#progress").value = status.step || 0;
    $("#step").textContent = status.total_steps ? `step ${status.step}/${status.total_steps}` : "";
    $("#eta").textContent = state === "running" && status.eta_s != null ? `ETA ${duration(status.eta_s)}` : "";
    $("#stop").disabled = !data.task_running;
    $("#resume").disabled = data.task_running || state === "finished" || !data.checkpoints.length;
    chart($("#loss"), {"smoothed": data.curves["loss/smoothed"], "held-out": data.curves["loss/val"]});
    chart($("#lr"), {"lr": data.curves.lr});
    $("#log").textContent = data.log.join("\n");
    document.querySelectorAll("select.checkpoints").forEach((select) => {
      const chosen = select.value;
      select.replaceChildren(el("option", {value: ""}, "the end (or newest)"),
        ...data.checkpoints.map((name) => el("option", {value: name, selected: name === chosen}, name)));
    });
    files(data.exports, "#exports", false);
    files(data.samples, "#samples", true);
  };
  listen(`/api/run/events?ref=${encodeURIComponent(ref)}`, draw);
  $("#stop").addEventListener("click", guarded(() => api("/api/run/stop", {ref})));
  $("#resume").addEventListener("click", guarded(() => api("/api/run/resume", {ref})));
  $("#export").addEventListener("submit", guarded(async (event) => {
    const form = event.target;
    await api("/api/run/export", {ref, format: form.format.value, checkpoint: form.checkpoint.value,
                                  dtype: form.dtype.value});
  }));
  $("#sample").addEventListener("submit", guarded(async (event) => {
    const form = event.target;
    await api("/api/run/sample", {ref, prompt: form.prompt.value, strength: form.strength.value,
                                  duration: form.duration.value, checkpoint: form.checkpoint.value,
                                  compare: form.compare.checked});
  }));
}

// ---- New run ----------------------------------------------------------------------------------------------
function fieldInput(field) {
  const attrs = {name: field.key, "data-key": field.key, "aria-label": field.key};
  if (field.kind === "bool" || field.kind === "choice") {
    const choices = field.kind === "bool" ? ["true", "false"] : field.choices;
    return el("select", attrs, el("option", {value: ""}, `(${fmt(field.default) || "default"})`),
              ...choices.map((c) => el("option", {value: c}, c)));
  }
  const hint = field.default === null ? "" : Array.isArray(field.default) ? `[${field.default.join(",")}]`
                                                                          : fmt(field.default, 8);
  return el("input", {...attrs, placeholder: hint || (field.choices ? field.choices.join(",") : "")});
}

function newRunPage() {
  const groupSelects = {};
  const overrides = () => {
    const chosen = [];
    for (const [name, {select, initial}] of Object.entries(groupSelects)) {
      if (select.value && select.value !== initial) chosen.push(`${name}=${select.value}`);
    }
    document.querySelectorAll("#fields [data-key]").forEach((input) => {
      if (input.value.trim() && !input.closest("[hidden]")) chosen.push(`${input.dataset.key}=${input.value.trim()}`);
    });
    return chosen.concat($("#extra").value.split("\n").map((line) => line.trim()).filter(Boolean));
  };
  const body = () => ({overrides: overrides(), sweep: $("#sweep").checked, folder: $("#folder").value});
  const showOnly = () => document.querySelectorAll("[data-only-group]").forEach((row) => {
    const select = groupSelects[row.dataset.onlyGroup].select;
    row.hidden = (select.value || groupSelects[row.dataset.onlyGroup].initial) !== row.dataset.onlyOption;
  });
  const changed = () => { $("#start").disabled = true; $("#plan").hidden = true; showOnly(); };
  api("/api/form").then((form) => {
    for (const group of form.groups) {
      const select = el("select", {name: group.name, "aria-label": group.name},
        el("option", {value: ""}, group.default ? `${group.default} (default)` : "(none)"),
        ...group.options.map((o) => el("option", {value: o}, o)));
      groupSelects[group.name] = {select, initial: group.default || ""};
      $("#groups").append(el("label", {}, group.name, " ", select));
    }
    $("#folder").replaceChildren(...form.folders.map(([ref, path]) => el("option", {value: ref}, path)));
    const sections = {};
    for (const field of form.fields) {
      const node = field.key.split(".")[0];
      if (!sections[node]) {
        sections[node] = el("details", {}, el("summary", {}, node), el("div", {class: "grid"}));
        $("#fields").append(sections[node]);
      }
      const row = el("label", {class: "field", title: field.help || ""}, el("span", {}, field.key),
                     fieldInput(field), field.help ? el("small", {}, field.help) : "");
      if (field.only) { row.dataset.onlyGroup = field.only.group; row.dataset.onlyOption = field.only.option; }
      $(".grid", sections[node]).append(row);
    }
    if (params.get("experiment")) groupSelects.experiment.select.value = params.get("experiment");
    showOnly();
  }).catch(showError);
  $("#new-run").addEventListener("input", changed);
  $("#new-run").addEventListener("change", changed);
  $("#check").addEventListener("click", guarded(async () => {
    const planned = await api("/api/check", body());
    $("#command").textContent = planned.command;
    $("#summary").replaceChildren(...planned.summary.map(([label, value]) =>
      el("tr", {}, el("th", {}, label), el("td", {}, value))));
    $("#plan").hidden = false;
    $("#start").disabled = false;
  }));
  $("#new-run").addEventListener("submit", guarded(async () => {
    const started = await api("/api/start", body());
    location.href = started.sweep ? `/?sweep=${encodeURIComponent(started.ref)}`
                                  : `/run?ref=${encodeURIComponent(started.ref)}`;
  }));
}

// ---- Data -------------------------------------------------------------------------------------------------
const LABELS = ["caption", "lyrics", "bpm", "keyscale", "timesignature", "language"];

function dataPage() {
  let folderRef = null;
  const open = async () => {
    const sub = $("#sub").value.trim().replace(/^\/+|\/+$/g, "");
    folderRef = sub ? `${$("#root").value}/${sub}` : $("#root").value;
    const data = await api(`/api/songs?ref=${encodeURIComponent(folderRef)}`);
    $("#songs tbody").replaceChildren(...data.songs.map((song) => {
      const inputs = LABELS.map((name) => name === "caption" || name === "lyrics"
        ? el("textarea", {name, rows: 2, "aria-label": `${name} of ${song.song}`,
                          placeholder: name === "caption" ? song.caption_default : ""})
        : el("input", {name, size: 8, "aria-label": `${name} of ${song.song}`}));
      inputs.forEach((input) => { input.value = song.fields[input.name]; });
      const save = el("button", {type: "button"}, "Save");
      const row = el("tr", {"data-song": song.song}, el("td", {}, song.song,
        el("div", {class: "sub"}, song.sidecar || "no sidecar yet"),
        song.error ? el("div", {class: "reason"}, song.error) : ""), ...inputs.map((i) => el("td", {}, i)),
        el("td", {}, save, el("div", {class: "sub saved"})));
      save.addEventListener("click", guarded(async () => {
        const fields = Object.fromEntries(inputs.map((input) => [input.name, input.value]));
        const result = await api("/api/songs", {ref: folderRef, song: song.song, fields});
        $(".saved", row).textContent = result.diff ? "saved" : "unchanged";
      }));
      return row;
    }));
  };
  Promise.all([api("/api/folders"), api("/api/form")]).then(([served, form]) => {
    $("#root").replaceChildren(...served.folders.map(([ref, path]) => el("option", {value: ref}, path)));
    const models = form.groups.find((g) => g.name === "model");
    $("#model").replaceChildren(...models.options.map((o) => el("option", {value: o, selected: o === models.default},
                                                             o)));
    if (params.get("folder")) { $("#sub").value = params.get("folder"); open().catch(showError); }
  }).catch(showError);
  $("#open").addEventListener("submit", guarded(open));
  $("#preprocess").addEventListener("submit", guarded(async (event) => {
    const form = event.target;
    const out = form.out.value.trim().replace(/^\/+|\/+$/g, "");
    await api("/api/preprocess", {ref: folderRef, model: form.model.value, trigger_tag: form.trigger_tag.value,
                                  out: out ? `${$("#root").value}/${out}` : ""});
    $("#progress").hidden = false;
    const source = listen(`/api/task/events?ref=${encodeURIComponent(folderRef)}`, (task) => {
      if (!task) return;
      $("#output").textContent = task.output.join("\n");
      $("#task-state").textContent = task.running ? "preprocessing…"
        : task.returncode === 0 ? "done" : `failed (exit ${task.returncode})`;
      if (!task.running) { $("#progress").hidden = true; source.close(); }
    });
  }));
}

const PAGES = {runs: runsPage, run: runPage, new: newRunPage, data: dataPage};
PAGES[document.body.dataset.page]();
