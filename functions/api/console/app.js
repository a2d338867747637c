// imagejobs console: a plain ES module, no framework and no build step. It calls the same
// routes as every client (/v1/...) with the key the user pastes, and reads image bytes through
// the console's same-origin routes (/console/api/...) so they show as blob: URLs under a
// CSP of 'self' (see functions/api/src/console.rs). Everything the API returns is put into
// the page with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const KEY_NAME = "imagejobs.apiKey";
const POLL_MS = 500;
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const EXT = { "image/png": "png", "image/webp": "webp", "image/jpeg": "jpg" };
// ?page_size=N (1–100) sets the history page size; the default keeps the page in one screen.
const PAGE_SIZE = Math.min(100, Math.max(1, Number(new URLSearchParams(location.search).get("page_size")) || 8));

let apiKey = sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "";

/** An API refusal or a failed request: the API's {"error": {"code", "message"}}, or ours. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorOf(resp) {
  let code = `http_${resp.status}`;
  let message = `The API answered ${resp.status} ${resp.statusText}.`;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  return new ApiError(resp.status, code, message);
}

/** fetch with the key; resolves to the Response when 2xx, else throws ApiError. */
async function api(path, init = {}, key = apiKey) {
  if (!key) throw new ApiError(0, "no_key", "Enter an API key first.");
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${key}`);
  let resp;
  try {
    resp = await fetch(path, { ...init, headers, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "network", `The API could not be reached (${e.message}).`);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}
const apiJson = async (path, init, key) => (await api(path, init, key)).json();

// ---- messages -------------------------------------------------------------------------

function showError(err) {
  const alert = $("alert");
  alert.textContent = err.code && err.code !== "network" ? `${err.message} (${err.code})` : err.message;
  alert.hidden = false;
}
function clearError() {
  $("alert").hidden = true;
  $("alert").textContent = "";
}

// ---- the key --------------------------------------------------------------------------

function describeKey() {
  const where = localStorage.getItem(KEY_NAME) ? "remembered on this browser" : "kept for this tab only";
  $("key-state").textContent = apiKey ? `Key ${apiKey.slice(0, 12)}… in use, ${where}.` : "No key yet.";
}

async function useKey(key, remember) {
  // Check the key before keeping it: a typo should not be remembered.
  const models = await apiJson("/v1/models", {}, key);
  apiKey = key;
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
  fillModels(models);
  describeKey();
  await loadHistory(null, []);
}

function forgetKey() {
  apiKey = "";
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  $("key-input").value = "";
  const select = $("opt-model");
  select.replaceChildren(new Option("Enter a key to load the models"));
  select.disabled = true;
  $("history-rows").replaceChildren();
  pages = { cursor: null, previous: [], next: null };
  updatePager();
  describeKey();
  clearError();
}

// ---- models and options ---------------------------------------------------------------

function fillModels(list) {
  const select = $("opt-model");
  select.replaceChildren();
  for (const m of list.models) {
    const option = new Option(`${m.name}${m.default ? " (default)" : ""}`, m.name, m.default, m.default);
    option.title = m.input ? `${m.kind}, ${m.input[0]}×${m.input[1]} input` : m.kind;
    select.append(option);
  }
  select.disabled = false;
}

function syncOptions() {
  $("opt-quality").disabled = $("opt-format").value !== "jpeg";
  $("opt-bg").disabled = !$("opt-bg-on").checked;
}

function formFor(file) {
  const form = new FormData();
  form.append("model", $("opt-model").value);
  form.append("output_format", $("opt-format").value);
  form.append("scale", $("opt-scale").value || "1");
  if ($("opt-format").value === "jpeg") form.append("quality", $("opt-quality").value || "95");
  if ($("opt-bg-on").checked) form.append("background_color", $("opt-bg").value);
  if ($("opt-mask").checked) form.append("only_mask", "true");
  form.append("file", file, file.name);
  return form;
}

// ---- jobs of this session -------------------------------------------------------------

function button(label, onClick, extra = "") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `small ${extra}`.trim();
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

/** One line of "This session": the file, the statuses it went through, its actions. */
class SessionJob {
  constructor(file) {
    this.file = file;
    this.seen = [];
    this.li = document.createElement("li");
    this.name = document.createElement("span");
    this.name.className = "name";
    this.name.textContent = file.name;
    this.trail = document.createElement("span");
    this.trail.className = "trail";
    this.actions = document.createElement("span");
    this.actions.className = "actions";
    this.li.append(this.name, this.actions, this.trail);
    $("session-jobs").prepend(this.li);
    this.setTrail("uploading…");
  }

  setTrail(text, statusClass) {
    this.trail.replaceChildren();
    const s = document.createElement("span");
    s.className = `status ${statusClass || ""}`.trim();
    s.textContent = text;
    this.trail.append(s);
  }

  update(job, note = "") {
    this.job = job;
    this.li.dataset.jobId = job.id;
    this.li.dataset.status = job.status;
    if (this.seen[this.seen.length - 1] !== job.status) this.seen.push(job.status);
    this.setTrail(this.seen.join(" → "), job.status);
    if (note) this.trail.append(` ${note}`);
    this.actions.replaceChildren();
    if (!TERMINAL.has(job.status)) this.actions.append(button("Cancel", () => cancelJob(job.id, this)));
    if (job.status === "succeeded") this.actions.append(button("View", () => this.view()));
  }

  async view() {
    try {
      await showJob(this.job, this.file);
    } catch (e) {
      showError(e);
    }
  }
}

async function submitFile(file) {
  const entry = new SessionJob(file);
  let job;
  try {
    job = await apiJson("/v1/jobs", { method: "POST", body: formFor(file) });
  } catch (e) {
    entry.setTrail(`refused: ${e.message}`, "failed");
    showError(e);
    return;
  }
  const started = performance.now();
  entry.update(job);
  refreshHistoryIfFirstPage();
  let failures = 0;
  while (!TERMINAL.has(job.status)) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    try {
      job = await apiJson(`/v1/jobs/${job.id}`);
      failures = 0;
    } catch (e) {
      // A blip should not end the watch; a lasting failure is shown and ends it.
      if (++failures >= 5 || e.status === 404) {
        showError(e);
        return;
      }
      continue;
    }
    entry.update(job);
  }
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  if (job.status === "succeeded") {
    entry.update(job, `in ${secs} s`);
    await entry.view();
  } else if (job.status === "failed" && job.error) {
    entry.update(job, `: ${job.error.message}`);
    showError(new ApiError(0, job.error.code, `${file.name}: ${job.error.message}`));
  }
  refreshHistoryIfFirstPage();
}

async function cancelJob(id, entry) {
  try {
    const job = await apiJson(`/v1/jobs/${id}/cancel`, { method: "POST" });
    if (entry) entry.update(job);
    refreshHistoryIfFirstPage();
  } catch (e) {
    showError(e);
  }
}

function submitFiles(files) {
  clearError();
  if (!apiKey) {
    showError(new ApiError(0, "no_key", "Enter an API key first."));
    return;
  }
  const images = [...files].filter((f) => f.type.startsWith("image/") || f.type === "");
  if (images.length === 0) {
    showError(new ApiError(0, "no_image", "None of the dropped files is an image."));
    return;
  }
  for (const f of images) submitFile(f);
}

// ---- before / after --------------------------------------------------------------------

const blobs = new Map(); // job id → {before, after, type}: object URLs kept while the page lives

async function blobUrl(path) {
  const resp = await api(path);
  const blob = await resp.blob();
  return { url: URL.createObjectURL(blob), type: blob.type };
}

async function showJob(job, file) {
  let entry = blobs.get(job.id);
  if (!entry) {
    const after = await blobUrl(`/console/api/jobs/${job.id}/result`);
    const before = file ? { url: URL.createObjectURL(file) } : await blobUrl(`/console/api/jobs/${job.id}/input`);
    entry = { before: before.url, after: after.url, type: after.type };
    blobs.set(job.id, entry);
  }
  const beforeImg = $("before");
  const afterImg = $("after");
  beforeImg.src = entry.before;
  afterImg.src = entry.after;
  await Promise.all([beforeImg.decode(), afterImg.decode()]);

  const stem = (file ? file.name : job.id).replace(/\.[^.]+$/, "");
  const download = $("download");
  download.href = entry.after;
  download.download = `${stem}-nobg.${EXT[entry.type] || "png"}`;

  const r = job.result || {};
  const parts = [file ? file.name : job.id, r.engine || (job.params && job.params.model), `${r.width}×${r.height}`];
  if (typeof r.foreground_fraction === "number") parts.push(`foreground ${Math.round(100 * r.foreground_fraction)}%`);
  $("viewer-caption").textContent = parts.filter(Boolean).join(" · ");

  $("viewer-empty").hidden = true;
  const compare = $("compare");
  compare.hidden = false;
  compare.dataset.jobId = job.id;
  fitStage();
  setSlider();
}

/** Sizes the stage to the image's aspect ratio within the panel (so the checkerboard covers the image only). */
function fitStage() {
  const img = $("after");
  if (!img.naturalWidth) return;
  const stage = $("stage");
  const ratio = img.naturalWidth / img.naturalHeight;
  const maxW = stage.parentElement.clientWidth;
  const maxH = 470;
  const width = Math.min(maxW, maxH * ratio);
  stage.style.width = `${width}px`;
  stage.style.height = `${width / ratio}px`;
}

function setSlider() {
  const v = Number($("slider").value);
  // Left of the divider: the original; right of it: the result over the checkerboard.
  $("after-layer").style.clipPath = `inset(0 0 0 ${v}%)`;
  $("divider").style.left = `${v}%`;
  $("slider").setAttribute("aria-valuetext", `${v}% original, ${100 - v}% result`);
}

// ---- history ----------------------------------------------------------------------------

let pages = { cursor: null, previous: [], next: null };

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  return td;
}

function renderHistory(jobs) {
  const rows = jobs.map((job) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.id;
    const id = document.createElement("code");
    id.textContent = job.id;
    const status = document.createElement("span");
    status.className = `status ${job.status}`;
    status.textContent = job.status;
    if (job.status === "failed" && job.error) status.title = job.error.message;
    const r = job.result;
    const img = job.inputs && job.inputs.image;
    const size = r ? `${r.width}×${r.height}` : img ? `${img.width}×${img.height}` : "";
    const model = (r && r.engine) || (job.params && job.params.model) || job.operation;
    const actions = document.createElement("span");
    if (job.status === "succeeded" && job.operation === "remove_background") {
      actions.append(button("View", async () => {
        try {
          await showJob(job, null);
        } catch (e) {
          showError(e);
        }
      }));
    }
    if (!TERMINAL.has(job.status)) actions.append(button("Cancel", () => cancelJob(job.id, null), "secondary"));
    tr.append(cell(new Date(job.created_at).toLocaleString()), cell(id), cell(status), cell(model), cell(size), cell(actions));
    return tr;
  });
  $("history-rows").replaceChildren(...rows);
}

function updatePager() {
  $("history-newer").disabled = pages.previous.length === 0;
  $("history-older").disabled = !pages.next;
}

async function loadHistory(cursor, previous) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (cursor) query.set("cursor", cursor);
  try {
    const page = await apiJson(`/v1/jobs?${query}`);
    pages = { cursor, previous, next: page.next_cursor || null };
    renderHistory(page.jobs);
  } catch (e) {
    showError(e);
  }
  updatePager();
}

function refreshHistoryIfFirstPage() {
  if (apiKey && pages.previous.length === 0 && !pages.cursor) loadHistory(null, []);
}

// ---- wiring -------------------------------------------------------------------------------

function wire() {
  $("key-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearError();
    const key = $("key-input").value.trim();
    try {
      await useKey(key, $("key-remember").checked);
      $("key-input").value = "";
    } catch (e) {
      showError(e);
    }
  });
  $("key-forget").addEventListener("click", forgetKey);

  const drop = $("drop");
  const input = $("file-input");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      input.click();
    }
  });
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    submitFiles(ev.dataTransfer.files);
  });
  input.addEventListener("change", () => {
    submitFiles(input.files);
    input.value = "";
  });

  $("opt-format").addEventListener("change", syncOptions);
  $("opt-bg-on").addEventListener("change", syncOptions);
  $("slider").addEventListener("input", setSlider);
  window.addEventListener("resize", fitStage);

  $("history-refresh").addEventListener("click", () => loadHistory(pages.cursor, pages.previous));
  $("history-older").addEventListener("click", () => {
    if (pages.next) loadHistory(pages.next, [...pages.previous, pages.cursor]);
  });
  $("history-newer").addEventListener("click", () => {
    const previous = pages.previous.slice(0, -1);
    loadHistory(pages.previous[pages.previous.length - 1], previous);
  });

  syncOptions();
  setSlider();
  describeKey();
  if (apiKey) {
    $("key-remember").checked = Boolean(localStorage.getItem(KEY_NAME));
    useKey(apiKey, $("key-remember").checked).catch(showError);
  }
}

wire();
