// medseg serve's page: uses only the documented JSON API. Coordinates sent are the image's pixels.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url);
const COLOURS = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]];
const $ = (id) => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");
const state = { image: null, plane: "axial", slice: 0, object: 1, picture: null, labels: null, prompts: {}, drag: null, stroke: null,
  clicks3d: {}, busy: false };  // clicks3d: object -> its 3D clicks {points: [[x, y, z]], labels, box}
const AXIS = { axial: 0, coronal: 1, sagittal: 2 };

function status(text) { $("status").textContent = text; }

async function api(path, options = {}) {
  const response = await fetch(withToken(path), { ...options, headers: { ...headers, ...(options.headers || {}) } });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function loadPicture(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("cannot load " + url));
    img.src = withToken(url);
  });
}

async function refresh() {
  if (!state.image) return;
  const id = state.image.image_id, z = state.slice, win = $("window").value || "auto", plane = state.plane;
  const [picture, labels] = await Promise.all([
    loadPicture(`/api/images/${id}/slices/${z}.png?window=${win}&plane=${plane}`),
    loadPicture(`/api/images/${id}/slices/${z}/labels.png?plane=${plane}&encoding=rgb&v=${Date.now()}`)]);
  state.picture = picture;
  const off = document.createElement("canvas");
  off.width = labels.width; off.height = labels.height;
  const octx = off.getContext("2d");
  octx.drawImage(labels, 0, 0);
  state.labels = octx.getImageData(0, 0, off.width, off.height);
  draw();
}

function draw() {
  if (!state.picture) return;
  ctx.drawImage(state.picture, 0, 0);
  if (state.labels) {
    const over = ctx.getImageData(0, 0, canvas.width, canvas.height), src = state.labels.data, dst = over.data;
    for (let i = 0; i < src.length; i += 4) {
      const id = src[i] + 256 * src[i + 1];  // red: id % 256, green: id / 256
      if (id === 0) continue;
      const c = COLOURS[(id - 1) % COLOURS.length];
      for (let k = 0; k < 3; k++) dst[i + k] = Math.round(0.55 * dst[i + k] + 0.45 * c[k]);
    }
    ctx.putImageData(over, 0, 0);
  }
  const p = is3d() ? onCut(prompt3d()) : currentPrompt();
  ctx.lineWidth = Math.max(1, canvas.width / 400);
  if (p.box) { ctx.strokeStyle = "#0f0"; ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]); }
  if (state.stroke) {
    ctx.strokeStyle = tool() === "eraser" ? "#fff" : "#0ff"; ctx.lineWidth = 2 * (Number($("radius").value) || 4);
    ctx.beginPath(); state.stroke.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y))); ctx.stroke();
    ctx.lineWidth = Math.max(1, canvas.width / 400);
  }
  if (state.drag) { const d = state.drag; ctx.strokeStyle = "#ff0"; ctx.strokeRect(d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0); }
  p.points.forEach((pt, i) => {
    ctx.fillStyle = p.labels[i] ? "#0f0" : "#f00";
    ctx.beginPath(); ctx.arc(pt[0], pt[1], Math.max(3, canvas.width / 150), 0, 2 * Math.PI); ctx.fill();
  });
}

function currentPrompt() {
  const key = `${state.object}:${state.plane}:${state.slice}`;
  state.prompts[key] = state.prompts[key] || { box: null, points: [], labels: [] };
  return state.prompts[key];
}

// 3D mode: clicks are voxels (x, y, z); a cut's (column, row) on the current slice is one of them
function is3d() { return $("mode3d").checked && state.image !== null && state.image.shape[0] > 1; }
function prompt3d() {
  state.clicks3d[state.object] = state.clicks3d[state.object] || { points: [], labels: [], box: null };
  return state.clicks3d[state.object];
}
function voxel(u, v) {
  return { axial: [u, v, state.slice], coronal: [u, state.slice, v], sagittal: [state.slice, u, v] }[state.plane];
}
function onCut(p) {  // the object's 3D clicks on the current cut (and its 3D box, on an axial slice it spans), to draw
  const axis = AXIS[state.plane], uv = { axial: [0, 1], coronal: [0, 2], sagittal: [1, 2] }[state.plane];
  const shown = { box: null, points: [], labels: [] };
  p.points.forEach((pt, i) => {
    if (Math.round(pt[2 - axis]) === state.slice) { shown.points.push([pt[uv[0]], pt[uv[1]]]); shown.labels.push(p.labels[i]); }
  });
  const b = p.box;
  if (b && state.plane === "axial" && b[2] <= state.slice && state.slice <= b[5]) shown.box = [b[0], b[1], b[3], b[4]];
  return shown;
}

async function segment3d(change) {
  if (state.busy) { status("busy: wait for the 3D segmentation"); return; }
  const p = prompt3d(), before = JSON.parse(JSON.stringify(p)), t0 = performance.now();
  change(p); draw();
  state.busy = true; canvas.style.cursor = "wait";
  status(`segmenting object ${state.object} in 3D… (the first 3D click encodes the volume: tens of seconds on a CPU)`);
  try {
    const body = { object: state.object, points: p.points, labels: p.labels, box: p.box };
    const result = await (await api(`/api/images/${state.image.image_id}/segment3d`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
    state.image.objects[result.object] = state.image.objects[result.object] || `object ${result.object}`;
    showObjects(); await refresh();
    const where = result.changed ? ` (slices ${result.changed[0]}..${result.changed[1]} changed)` : "";
    status(`object ${result.object}: ${result.voxels} voxels in 3D${where}${result.refined ? ", refined" : ""} ` +
      `(${Math.round((performance.now() - t0) / 100) / 10} s)`);
  } catch (err) {
    state.clicks3d[state.object] = before; draw(); status(err.message);
  } finally { state.busy = false; canvas.style.cursor = ""; }
}
function click3d(u, v, negative) {
  segment3d((p) => { p.points.push(voxel(u, v)); p.labels.push(negative ? 0 : 1); });
}
function box3d(d) {  // a drag on an axial slice: a 3D box over the slices first..last
  if (state.plane !== "axial") { status("3D mode: draw a 3D box on an axial slice (or click)"); draw(); return; }
  const first = Number($("first").value), last = Number($("last").value);
  segment3d((p) => {
    p.box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.min(first, last), Math.max(d.x0, d.x1),
      Math.max(d.y0, d.y1), Math.max(first, last)];
  });
}
async function loadClicks3d() {  // after undo/redo: each object's clicks of its last 3D prompt, to go on from
  const session = await (await api(`/api/images/${state.image.image_id}/session`)).json();
  state.clicks3d = {};
  session.prompts.filter((q) => q.points3d || q.box3d).forEach((q) => {
    state.clicks3d[q.object] = { points: q.points3d || [], labels: q.labels || [], box: q.box3d };
  });
}
$("mode3d").addEventListener("change", async (e) => {
  state.prompts = {}; draw();
  if (!e.target.checked || !state.image) { status(""); return; }
  state.busy = true; canvas.style.cursor = "wait";
  status("encoding the volume for 3D clicks… (tens of seconds on a CPU)");
  const t0 = performance.now();
  try {
    await api(`/api/images/${state.image.image_id}/encode3d`, { method: "POST" });
    status(`3D mode (${Math.round((performance.now() - t0) / 100) / 10} s): click the object on any slice; ` +
      "shift or right click: background; a box drag on an axial slice spans slices first..last");
  } catch (err) { e.target.checked = false; status(err.message); } finally { state.busy = false; canvas.style.cursor = ""; }
});

function pixel(event) {
  const r = canvas.getBoundingClientRect();
  const x = (event.clientX - r.left) * canvas.width / r.width, y = (event.clientY - r.top) * canvas.height / r.height;
  return [Math.min(canvas.width - 1, Math.max(0, Math.round(x))), Math.min(canvas.height - 1, Math.max(0, Math.round(y)))];
}

async function segment() {
  const p = currentPrompt(), t0 = performance.now();
  const body = { box: p.box, points: p.points, labels: p.labels, slice: state.slice, plane: state.plane, object: state.object };
  const result = await (await api(`/api/images/${state.image.image_id}/segment`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
  await refresh();
  status(`object ${result.object}: ${result.pixels} pixels, predicted IoU ${result.score} (${Math.round(performance.now() - t0)} ms)`);
}

function tool() { return document.querySelector("input[name=tool]:checked").value; }

canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (e) => {
  if (!state.image) return;
  const [x, y] = pixel(e);
  if (tool() === "brush" || tool() === "eraser") { if (e.button === 0) { state.stroke = [[x, y]]; draw(); } return; }
  if (tool() === "box" && e.button === 0 && !e.shiftKey) { state.drag = { x0: x, y0: y, x1: x, y1: y }; return; }
  if (is3d()) { click3d(x, y, e.button === 2 || e.shiftKey); return; }
  const p = currentPrompt();
  p.points.push([x, y]); p.labels.push(e.button === 2 || e.shiftKey ? 0 : 1);
  draw(); segment().catch((err) => status(err.message));
});
canvas.addEventListener("mousemove", (e) => {
  if (state.stroke) { state.stroke.push(pixel(e)); draw(); return; }
  if (!state.drag) return;
  [state.drag.x1, state.drag.y1] = pixel(e); draw();
});
async function sendStroke(strokes) {
  const body = { strokes, radius: Number($("radius").value) || 4, erase: tool() === "eraser", slice: state.slice,
    plane: state.plane, object: state.object };
  const result = await (await api(`/api/images/${state.image.image_id}/brush`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
  await refresh();
  status(`object ${result.object}: ${result.erase ? "erased" : "painted"} ${result.pixels} pixels`);
}

window.addEventListener("mouseup", () => {
  if (state.stroke) {
    const strokes = state.stroke; state.stroke = null;
    sendStroke(strokes).catch((err) => status(err.message));
    return;
  }
  const d = state.drag;
  if (!d) return;
  state.drag = null;
  if (is3d()) {
    if (Math.abs(d.x1 - d.x0) < 2 || Math.abs(d.y1 - d.y0) < 2) click3d(d.x0, d.y0, false); else box3d(d);
    return;
  }
  if (Math.abs(d.x1 - d.x0) < 2 || Math.abs(d.y1 - d.y0) < 2) {  // a click, not a drag: a positive point
    const p = currentPrompt();
    p.points.push([d.x0, d.y0]); p.labels.push(1);
    draw(); segment().catch((err) => status(err.message));
    return;
  }
  currentPrompt().box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)];
  draw(); segment().catch((err) => status(err.message));
});
canvas.addEventListener("wheel", (e) => {
  if (!state.image || state.image.shape[0] < 2) return;
  e.preventDefault(); setSlice(state.slice + Math.sign(e.deltaY));
});

function setSlice(z) {
  const depth = state.image.shape[AXIS[state.plane]];
  state.slice = Math.min(depth - 1, Math.max(0, z));
  $("slice").value = state.slice; $("slice-label").textContent = `${state.slice} / ${depth - 1}`;
  refresh().catch((err) => status(err.message));
}
$("slice").addEventListener("input", (e) => setSlice(Number(e.target.value)));
$("window").addEventListener("change", () => refresh().catch((err) => status(err.message)));

function showObjects() {
  const select = $("object"), names = state.image ? state.image.objects : {};
  const ids = new Set([...Object.keys(names).map(Number), state.object]);
  select.innerHTML = "";
  [...ids].sort((a, b) => a - b).forEach((id) => {
    const option = document.createElement("option");
    option.value = id; option.textContent = `${id}: ${names[id] || "object " + id}`;
    select.appendChild(option);
  });
  select.value = state.object;
}
$("object").addEventListener("change", (e) => {
  state.object = Number(e.target.value); $("object-name").value = state.image.objects[state.object] || ""; draw();
});
$("object-name").addEventListener("change", async (e) => {  // the name goes into the DICOM-SEG's segment label
  if (!state.image || !e.target.value.trim()) return;
  try {
    const result = await (await api(`/api/images/${state.image.image_id}/objects`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ object: state.object, name: e.target.value }) })).json();
    state.image.objects = result.objects; showObjects(); status(`object ${state.object}: ${result.objects[state.object]}`);
  } catch (err) { status(err.message); }
});
$("new-object").addEventListener("click", () => {
  const ids = [...$("object").options].map((o) => Number(o.value));
  state.object = Math.max(0, ...ids) + 1; $("object-name").value = ""; showObjects(); draw();
});
$("clear-prompts").addEventListener("click", () => {
  if (is3d()) delete state.clicks3d[state.object]; else delete state.prompts[`${state.object}:${state.plane}:${state.slice}`];
  draw();
});

async function step(kind) {
  const result = await (await api(`/api/images/${state.image.image_id}/${kind}`, { method: "POST" })).json();
  state.prompts = {};
  if (state.image.shape[0] > 1) await loadClicks3d();
  if (result.plane !== state.plane) setPlane(result.plane, result.slice);
  else if (result.slice !== state.slice) setSlice(result.slice); else await refresh();
  status(`${kind} on slice ${result.slice}`);
}
$("undo").addEventListener("click", () => state.image && step("undo").catch((err) => status(err.message)));
$("redo").addEventListener("click", () => state.image && step("redo").catch((err) => status(err.message)));
document.addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === "z" && state.image) step(e.shiftKey ? "redo" : "undo").catch((err) => status(err.message));
});

async function download(path, filename) {
  const blob = await (await api(path)).blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = filename; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
document.querySelectorAll("button[data-format]").forEach((button) => button.addEventListener("click", () => {
  if (!state.image) return;
  const format = button.dataset.format, suffix = { png: ".png", nifti: ".nii.gz", mha: ".mha", "dicom-seg": ".dcm" }[format];
  download(`/api/images/${state.image.image_id}/labels?format=${format}`, "labels" + suffix)
    .then(() => status(`exported ${format}`)).catch((err) => status(err.message));
}));
$("export-session").addEventListener("click", () => state.image &&
  download(`/api/images/${state.image.image_id}/session`, "session.json").catch((err) => status(err.message)));

function setPlane(plane, z) {
  // the cut's size: axial (Y, X), coronal (Z, X), sagittal (Z, Y); shown with the voxels' true proportions
  state.plane = plane; $("plane").value = plane;
  const [depth, height, width] = state.image.shape, [sz, sy, sx] = state.image.spacing;
  const [rows, cols, rowMm, colMm] = { axial: [height, width, sy, sx], coronal: [depth, width, sz, sx],
    sagittal: [depth, height, sz, sy] }[plane];
  canvas.width = cols; canvas.height = rows;
  const aspect = rowMm > 0 && colMm > 0 ? rowMm / colMm : 1, stage = $("stage");
  const fit = Math.min(stage.clientWidth / cols, stage.clientHeight / (rows * aspect));
  canvas.style.width = `${Math.floor(cols * fit)}px`; canvas.style.height = `${Math.floor(rows * aspect * fit)}px`;
  const count = state.image.shape[AXIS[plane]];
  $("slice").max = count - 1; $("first").max = $("last").max = count - 1;
  $("first").value = 0; $("last").value = count - 1;
  setSlice(z === undefined ? Math.floor((count - 1) / 2) : z);
}
$("plane").addEventListener("change", (e) => { state.prompts = {}; setPlane(e.target.value); });

async function opened(response) {
  state.image = await response.json();
  state.prompts = {}; state.object = 1; state.clicks3d = {};
  const depth = state.image.shape[0];
  $("volume-mode").hidden = depth < 2; $("mode3d").checked = false;
  $("volume-controls").hidden = depth < 2 && state.image.windows.length < 2;
  $("plane").innerHTML = state.image.planes.map((p) => `<option value="${p}">${p}</option>`).join("");
  $("plane").hidden = $("propagation").hidden = depth < 2;
  $("window").innerHTML = state.image.windows.map((w) => `<option>${w}</option>`).join("");
  $("export-dicom").disabled = !state.image.dicom;
  showObjects(); setPlane("axial", 0);
  const [, height, width] = state.image.shape;
  status(`${state.image.name}: ${width}x${height}` + (depth > 1 ? `x${depth}` : "") + (state.image.modality ? ` ${state.image.modality}` : ""));
}
$("upload").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (!file) return;
  const form = new FormData(); form.append("file", file);
  status(`opening ${file.name}…`);
  api("/api/images", { method: "POST", body: form }).then(opened).catch((err) => status(err.message));
});
$("files").addEventListener("change", (e) => {
  if (!e.target.value) return;
  status(`opening ${e.target.value}…`);
  api("/api/images/open", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ path: e.target.value }) }).then(opened).catch((err) => status(err.message));
});

async function automatic() {
  const t0 = performance.now();
  status(`segmenting every class of ${$("task").value}…`);
  const result = await (await api(`/api/images/${state.image.image_id}/automatic`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ task: $("task").value, slice: state.slice, plane: state.plane }) })).json();
  result.objects.forEach((o) => {  // each class's box: a click then refines it (box + clicks)
    state.image.objects[o.object] = o.name;
    state.prompts[`${o.object}:${state.plane}:${state.slice}`] = { box: o.box, points: [], labels: [] };
  });
  state.object = result.objects.length ? result.objects[0].object : state.object;
  showObjects(); await refresh();
  status(result.objects.map((o) => `${o.name}: ${o.pixels} px`).join(", ") + ` (${Math.round(performance.now() - t0)} ms)`);
}
$("automatic").addEventListener("click", () => state.image && automatic().catch((err) => status(err.message)));

async function propagate() {
  const first = Number($("first").value), last = Number($("last").value), t0 = performance.now();
  status(`propagating object ${state.object} over slices ${first}..${last}…`);
  const result = await (await api(`/api/images/${state.image.image_id}/propagate`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ slice: state.slice, plane: state.plane, object: state.object, first, last }) })).json();
  await refresh();
  status(`object ${result.object} on ${result.slices.length + 1} slices, ${result.pixels} voxels (${Math.round((performance.now() - t0) / 100) / 10} s)`);
}
$("propagate").addEventListener("click", () => state.image && propagate().catch((err) => status(err.message)));

(async () => {
  try {
    const health = await (await api("/api/health")).json();
    $("health").textContent = `${health.model} · ${health.engine} ${health.precision}` +
      (health.volume_clicks ? ` · 3D ${health.volume_model}` : "");
    $("mode3d").disabled = !health.volume_clicks;
    $("volume-mode").title = health.volume_clicks ? `3D clicks with ${health.volume_model}` : health.volume_note;
    const listing = await (await api("/api/files")).json();
    $("files").hidden = !listing.root;
    const tasks = (await (await api("/api/tasks")).json()).tasks;
    $("automatic-mode").hidden = !tasks.length;
    $("task").innerHTML = tasks.map((t) => `<option value="${t.name}">${t.name} (${Object.values(t.classes).join(", ")})</option>`).join("");
    listing.files.forEach((f) => { const o = document.createElement("option"); o.value = o.textContent = f.path; $("files").appendChild(o); });
  } catch (err) { status(err.message); }
})();
