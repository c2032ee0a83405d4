// san-serve's page: plain JavaScript, no libraries, nothing loaded from elsewhere.
// Upscale: each file goes through POST /v1/jobs, is polled for tile progress, then its result and a
// bicubic resize of the input (for the before/after slider) are fetched. Synthesize: POST /v1/synthesize
// and /v1/labels/colorize side by side.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { auth: false, busy: false, pending: [], shown: null };

function headers() {
  const t = $("token").value.trim();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function api(path, options = {}) {
  for (;;) {
    const res = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
    if (res.status === 429 && options.onBusy) {  // queue full: wait as the server says, then retry
      const wait = Number(res.headers.get("Retry-After") || 2);
      options.onBusy(wait);
      await new Promise((r) => setTimeout(r, wait * 1000));
      continue;
    }
    if (!res.ok) {
      let msg = `${res.status} ${res.statusText}`;
      try { const body = await res.json(); msg = body.error ? body.error.message : msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res;
  }
}

function fmt(v, digits) { return v === undefined || v === null ? "–" : Number(v).toFixed(digits); }

// -- tabs ----------------------------------------------------------------------------------------------
function selectTab(tab) {
  for (const t of document.querySelectorAll('[role="tab"]')) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
}
for (const t of document.querySelectorAll('[role="tab"]')) {
  t.addEventListener("click", () => selectTab(t));
  t.addEventListener("keydown", (e) => {
    const tabs = [...document.querySelectorAll('[role="tab"]')];
    const i = tabs.indexOf(t);
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      selectTab(tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length]);
    }
  });
}

// -- upscale queue ---------------------------------------------------------------------------------------
function addFiles(files) {
  for (const file of files) {
    const li = document.createElement("li");
    li.className = "item";
    li.innerHTML = `<span class="name"></span>
      <progress max="1" value="0" aria-label="progress"></progress>
      <span class="status" role="status">waiting</span>
      <span class="actions"></span>`;
    li.querySelector(".name").textContent = file.name;
    li.querySelector("progress").setAttribute("aria-label", `progress of ${file.name}`);
    $("queue").appendChild(li);
    state.pending.push({ file, li });
  }
  if (!state.busy) runQueue();
}

async function runQueue() {
  state.busy = true;
  while (state.pending.length) {
    const item = state.pending.shift();
    try { await upscaleOne(item); } catch (e) { setStatus(item, `error: ${e.message}`, true); }
  }
  state.busy = false;
}

function setStatus(item, text, isError = false) {
  const s = item.li.querySelector(".status");
  s.textContent = text;
  s.classList.toggle("error", isError);
  if (isError) s.setAttribute("role", "alert");
}

async function upscaleOne(item) {
  const form = new FormData();
  form.append("image", item.file, item.file.name);
  if ($("outscale").value) form.append("outscale", $("outscale").value);
  form.append("format", $("format").value);
  form.append("niqe", $("niqe").checked ? "true" : "false");
  const ref = $("reference").files[0];
  if (ref) form.append("reference", ref, ref.name);
  setStatus(item, "uploading");
  const res = await api("/v1/jobs", { method: "POST", body: form,
    onBusy: (s) => setStatus(item, `server busy: retrying in ${s} s`) });
  let job = await res.json();
  item.id = job.id;
  const cancel = document.createElement("button");
  cancel.textContent = "Cancel";
  cancel.setAttribute("aria-label", `Cancel ${item.file.name}`);
  cancel.addEventListener("click", () => api(`/v1/jobs/${job.id}`, { method: "DELETE" }).catch(() => {}));
  item.li.querySelector(".actions").appendChild(cancel);
  const bar = item.li.querySelector("progress");
  while (!["done", "failed", "cancelled"].includes(job.state)) {
    await new Promise((r) => setTimeout(r, 300));
    job = await (await api(`/v1/jobs/${job.id}`)).json();
    bar.value = job.progress.fraction;
    setStatus(item, `${job.state} ${job.progress.tiles_done}/${job.progress.tiles_total} tiles`);
  }
  cancel.remove();
  if (job.state !== "done") throw new Error(job.error ? job.error.message : job.state);
  const result = await api(`/v1/jobs/${job.id}/result`);
  const blob = await result.blob();
  const name = (result.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  item.url = URL.createObjectURL(blob);
  item.name = name ? name[1] : `${item.file.name}_x4.png`;
  item.job = job;
  bar.value = 1;
  setStatus(item, `done: ${job.size_in} → ${job.size_out}`);
  const actions = item.li.querySelector(".actions");
  const view = document.createElement("button");
  view.textContent = "Compare";
  view.setAttribute("aria-label", `Compare ${item.file.name} with bicubic`);
  view.addEventListener("click", () => show(item));
  const dl = document.createElement("a");
  dl.className = "button download";
  dl.href = item.url;
  dl.download = item.name;
  dl.textContent = "Download";
  dl.setAttribute("aria-label", `Download ${item.name}`);
  actions.append(view, dl);
  addMetricsRow(item.file.name, job);
  show(item);
}

function addMetricsRow(name, job) {
  const m = job.metrics || {};
  const tr = document.createElement("tr");
  const cells = [name, job.size_in, job.size_out, fmt(m.psnr_y, 2), fmt(m.ssim_y, 4), fmt(m.niqe, 3),
    fmt(job.timings && job.timings.model, 2)];
  for (const [i, text] of cells.entries()) {
    const td = document.createElement(i === 0 ? "th" : "td");
    if (i === 0) td.scope = "row";
    td.textContent = text;
    tr.appendChild(td);
  }
  $("metrics").querySelector("tbody").appendChild(tr);
}

// -- before / after viewer ----------------------------------------------------------------------------------
async function show(item) {
  state.shown = item;
  $("viewer").hidden = false;
  $("viewer-name").textContent = item.file.name;
  $("after").src = item.url;
  const [w, h] = item.job.size_out.split("x").map(Number);
  state.size = { w, h };
  try {
    const bic = await api(`/v1/jobs/${item.job.id}/bicubic`);
    $("before").src = URL.createObjectURL(await bic.blob());
  } catch (e) {  // too large for a server-side preview: the browser's own resampling of the input
    $("before").src = URL.createObjectURL(item.file);
  }
  applyZoom();
  applySplit();
}

function applySplit() {
  const v = Number($("split").value);
  $("after").style.clipPath = `inset(0 0 0 ${v}%)`;
  $("divider").style.left = `${v}%`;
  $("split").setAttribute("aria-valuetext", `${100 - v}% model`);
}

function applyZoom() {
  if (!state.size) return;
  const z = Number($("zoom").value);
  const box = $("compare").clientWidth || state.size.w;
  const scale = z === 0 ? Math.min(1, box / state.size.w) : z / 100;
  $("stage").style.width = `${Math.round(state.size.w * scale)}px`;
  $("stage").style.height = `${Math.round(state.size.h * scale)}px`;
  $("zoom-out").textContent = z === 0 ? `fit (${Math.round(scale * 100)}%)` : `${z}%`;
}

$("split").addEventListener("input", applySplit);
$("zoom").addEventListener("input", applyZoom);
window.addEventListener("resize", applyZoom);
$("compare").addEventListener("keydown", (e) => {
  const step = 60;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (moves[e.key]) { e.preventDefault(); $("compare").scrollBy(...moves[e.key]); }
  if (e.key === "+" || e.key === "-") {
    const z = $("zoom");
    z.value = Math.max(0, Math.min(800, Number(z.value || 100) + (e.key === "+" ? 50 : -50)));
    applyZoom();
  }
});

// -- file picking ------------------------------------------------------------------------------------------
$("files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const ev of ["dragleave", "drop"]) {
  drop.addEventListener(ev, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });

// -- synthesis -------------------------------------------------------------------------------------------
$("synth-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const label = $("label").files[0];
  if (!label) return;
  const instance = $("instance").files[0];
  const status = $("synth-status");
  status.textContent = "synthesizing…";
  status.classList.remove("error");
  const form = new FormData();
  form.append("label", label, label.name);
  if (instance) form.append("instance", instance, instance.name);
  const colour = new FormData();
  colour.append("label", label, label.name);
  try {
    const [res, labels] = await Promise.all([
      api("/v1/synthesize", { method: "POST", body: form, onBusy: (s) => { status.textContent = `busy: retry in ${s} s`; } }),
      api("/v1/labels/colorize", { method: "POST", body: colour }),
    ]);
    const url = URL.createObjectURL(await res.blob());
    $("synth-result").src = url;
    $("synth-labels").src = URL.createObjectURL(await labels.blob());
    const dl = $("synth-download");
    dl.href = url;
    dl.download = label.name.replace(/(_gtFine)?_labelIds\.png$|\.png$/, "") + "_synth.png";
    dl.hidden = false;
    status.textContent = "done";
  } catch (err) {
    status.textContent = `error: ${err.message}`;
    status.classList.add("error");
  }
});

// -- start -----------------------------------------------------------------------------------------------
async function start() {
  $("token").value = sessionStorage.getItem("san-serve-token") || "";
  $("token").addEventListener("change", () => { sessionStorage.setItem("san-serve-token", $("token").value); loadModels(); });
  const health = await (await fetch("/healthz")).json();
  $("token-box").hidden = !health.auth;
  await loadModels();
}

async function loadModels() {
  try {
    const m = await (await api("/v1/models")).json();
    const u = m.upscale;
    $("model-info").textContent = `Model ${u.name} (×${u.scale}) on ${u.device}, ${u.precision}. ` +
      `Up to ${(m.limits.max_pixels / 1e6).toFixed(0)} MP and ${m.limits.max_upload_mb.toFixed(0)} MiB per image.`;
    $("synth-off").hidden = m.synthesize.loaded;
    $("synth-form").hidden = !m.synthesize.loaded;
    if (!m.synthesize.loaded) $("synth-off").textContent = `Synthesis is off. To turn it on, ${m.synthesize.how.replace(/^synthesis is off: /, "")}.`;
  } catch (e) {
    $("model-info").textContent = `Cannot read the model list: ${e.message}`;
  }
}

start();
