// Hearth's dashboard: plain ES modules, no build step. Charts: uPlot; the pipeline
// graph: dagre (both vendored under web/vendor with their licenses).
//
// Credentials: the login page set an HttpOnly session cookie, which the browser sends
// on every same-origin fetch; this script never sees a token. State-changing calls
// carry the X-Hearth-CSRF header, which the daemon requires of cookie-authenticated
// requests (another site's page cannot set it).
//
// Live data comes from the Kubernetes-style watches (`?watch=1` on nodes, pods and
// notebooks):
// each event updates the GPU charts and the queue at once, and schedules one re-read
// of the lists that have no watch of their own (runs, services), so the page follows
// the daemon without polling.
//
// Every URL this page calls is in API below, and nowhere else: tests/tests/web_ui.rs
// reads this table from the served script and checks each entry against the daemon's
// /openapi.json, so the page cannot drift from the API unnoticed.
import { liveChart, xyChart, parallelCoordinates } from "/ui/charts.js";

// API-TABLE-BEGIN
const API = {
  openapi: { method: "GET", path: "/openapi.json" },
  logout: { method: "DELETE", path: "/hearth/v1/session" },
  whoami: { method: "GET", path: "/hearth/v1/whoami" },
  namespaces: { method: "GET", path: "/hearth/v1/namespaces" },
  queue: { method: "GET", path: "/hearth/v1/queue" },
  nodes: { method: "GET", path: "/api/v1/nodes" },
  pods: { method: "GET", path: "/api/v1/pods" },
  jobs: { method: "GET", path: "/apis/batch/v1/namespaces/{namespace}/jobs" },
  createJob: { method: "POST", path: "/apis/batch/v1/namespaces/{namespace}/jobs" },
  job: { method: "GET", path: "/apis/batch/v1/namespaces/{namespace}/jobs/{name}" },
  deleteJob: { method: "DELETE", path: "/apis/batch/v1/namespaces/{namespace}/jobs/{name}" },
  jobLogs: { method: "GET", path: "/hearth/v1/namespaces/{namespace}/jobs/{name}/logs" },
  pipelines: { method: "GET", path: "/apis/v2beta1/pipelines" },
  uploadPipeline: { method: "POST", path: "/apis/v2beta1/pipelines/upload" },
  deletePipeline: { method: "DELETE", path: "/apis/v2beta1/pipelines/{pipeline_id}" },
  runs: { method: "GET", path: "/apis/v2beta1/runs" },
  createRun: { method: "POST", path: "/apis/v2beta1/runs" },
  run: { method: "GET", path: "/apis/v2beta1/runs/{run_id}" },
  terminateRun: { method: "POST", path: "/apis/v2beta1/runs/{run_id}:terminate" },
  taskLogs: { method: "GET", path: "/hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/logs" },
  taskOutputs: { method: "GET", path: "/hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/outputs" },
  artifact: { method: "GET", path: "/hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/artifacts/{name}" },
  pipeline: { method: "GET", path: "/apis/v2beta1/pipelines/{pipeline_id}" },
  pipelineVersions: { method: "GET", path: "/apis/v2beta1/pipelines/{pipeline_id}/versions" },
  pipelineVersion: { method: "GET", path: "/apis/v2beta1/pipelines/{pipeline_id}/versions/{pipeline_version_id}" },
  experiment: { method: "GET", path: "/apis/v2beta1/experiments/{experiment_id}" },
  recurringRuns: { method: "GET", path: "/apis/v2beta1/recurringruns" },
  createRecurringRun: { method: "POST", path: "/apis/v2beta1/recurringruns" },
  deleteRecurringRun: { method: "DELETE", path: "/apis/v2beta1/recurringruns/{recurring_run_id}" },
  inferenceServices: { method: "GET", path: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices", optional: true },
  inferenceService: { method: "GET", path: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}", optional: true },
  patchInferenceService: { method: "PATCH", path: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}", optional: true },
  isvcReplicas: { method: "GET", path: "/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/replicas", optional: true },
  isvcLogs: { method: "GET", path: "/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/logs", optional: true },
  callInferenceService: { method: "POST", path: "/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/inference", optional: true },
  metrics: { method: "GET", path: "/metrics" },
  experiments: { method: "GET", path: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/experiments", optional: true },
  createExperiment: { method: "POST", path: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/experiments", optional: true },
  trials: { method: "GET", path: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/trials", optional: true },
  notebooks: { method: "GET", path: "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks", optional: true },
  allNotebooks: { method: "GET", path: "/apis/kubeflow.org/v1/notebooks", optional: true },
  createNotebook: { method: "POST", path: "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks", optional: true },
  patchNotebook: { method: "PATCH", path: "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks/{name}", optional: true },
  deleteNotebook: { method: "DELETE", path: "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks/{name}", optional: true },
};
// API-TABLE-END

// KFP-LINKS-BEGIN
// The links kfp.Client prints (`<host>/#/runs/details/<id>`, `#/pipelines/details/<id>`,
// `#/experiments/details/<id>`, as the KFP UI routes them): which detail to open.
function kfpLink(hash) {
  const m = /^#\/(runs|pipelines|experiments)\/details\/([^/?#]+)/.exec(hash || "");
  if (!m) return null;
  const which = { runs: "runDetail", pipelines: "pipelineDetail", experiments: "experimentDetail" }[m[1]];
  return { which, id: decodeURIComponent(m[2]) };
}
// KFP-LINKS-END

const $ = (id) => document.getElementById(id);

const state = {
  namespace: "",
  paths: null, // the set of path templates in /openapi.json
  tab: "overview",
  runDetail: "", // the run_id whose details are open
  jobDetail: "", // the job name whose details are open
  isvcDetail: "", // the InferenceService name whose details are open
  pipelineDetail: "", // the pipeline_id whose details are open
  experimentDetail: "", // the experiment_id whose details are open
  logAbort: null, // aborts the log stream being shown
  nodes: new Map(), // name -> Node, from the nodes watch
  pods: new Map(), // namespace/name -> Pod, from the pods watch
  gpuCharts: new Map(), // GPU uuid -> live chart
  refreshTimer: 0,
  lastRun: null, // the open run's last answer, to redraw the DAG only on change
};

// --- HTTP ------------------------------------------------------------------------

// The URL of API entry `key`, with `{param}`s filled in and a query string.
function url(key, params = {}, query = {}) {
  const path = API[key].path.replace(/\{(\w+)\}/g, (_, p) => {
    if (params[p] === undefined) throw new Error(`${key}: missing ${p}`);
    return encodeURIComponent(params[p]);
  });
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== "") q.set(k, v);
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A failed answer as one line: the problem+json `detail` (and its code) of Hearth's
// own paths, or the Kubernetes `Status` `message` (and its reason) of the /apis ones.
async function failure(res) {
  let detail = res.statusText;
  try {
    const body = await res.json();
    if (body.kind === "Status") {
      detail = `${body.reason}: ${body.message}`;
    } else if (body.error && body.message) {
      detail = body.message; // KFP's google.rpc.Status
    } else {
      detail = body.detail || body.title || detail;
      if (body.code && typeof body.code === "string") detail = `${body.code}: ${detail}`;
    }
  } catch (_) {
    // Not JSON: the status line says enough.
  }
  if (res.status === 401) {
    // The session ended (logout elsewhere, expiry): back to the login page.
    location.reload();
  }
  return new ApiError(res.status, `HTTP ${res.status} ${detail}`);
}

function headersFor(key, extra = {}) {
  const headers = { ...extra };
  if (API[key].method !== "GET") headers["X-Hearth-CSRF"] = "1";
  return headers;
}

// Calls API entry `key`; resolves to the parsed JSON (or text when `text` is set).
async function call(key, { params, query, body, contentType, text, signal } = {}) {
  const headers = headersFor(key, { Accept: text ? "text/plain" : "application/json" });
  if (contentType) headers["Content-Type"] = contentType;
  const res = await fetch(url(key, params, query), {
    method: API[key].method,
    headers,
    body,
    signal,
    credentials: "same-origin",
    cache: "no-store",
  });
  if (!res.ok) throw await failure(res);
  // Read to the end even when empty (204): a navigation right after (logout) must not
  // cut the answer off.
  const raw = await res.text();
  if (text) return raw;
  return raw && res.status !== 204 ? JSON.parse(raw) : null;
}

const json = (v) => JSON.stringify(v);

// Follows a Kubernetes watch (`?watch=1`): each line is {type, object}. The stream
// starts with every current object as ADDED; when the daemon ends it (its timeout)
// or the connection drops, the watch is opened again after a pause and `onReset`
// drops what the next ADDED events will bring back.
async function watch(key, params, onEvent, onReset) {
  let pause = 500;
  for (;;) {
    try {
      const res = await fetch(url(key, params, { watch: "1", timeoutSeconds: "600" }), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!res.ok) throw await failure(res);
      onReset();
      pause = 500;
      clearError(`watch ${key}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let nl;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (line) onEvent(JSON.parse(line));
        }
      }
    } catch (e) {
      showError(`watch ${key}`, e);
      pause = Math.min(pause * 2, 15000);
    }
    await new Promise((r) => setTimeout(r, pause));
  }
}

// --- DOM helpers -----------------------------------------------------------------

// h("td", {class: "x"}, "text", child): every string becomes a text node, so nothing
// the API returns is ever parsed as HTML.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(headers, rows, empty = "none") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

function dl(pairs) {
  return h("dl", {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function replace(id, ...content) {
  $(id).replaceChildren(...content.flat().filter((c) => c !== "" && c != null));
}

function bytes(n) {
  if (typeof n !== "number") return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function meter(used, total) {
  return h("meter", { min: 0, max: total || 1, value: used || 0, title: `${bytes(used)} of ${bytes(total)}` });
}

function age(ts) {
  if (!ts) return "";
  const s = Math.round((Date.now() - Date.parse(ts)) / 1000);
  if (Number.isNaN(s)) return ts;
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

const GOOD = ["Succeeded", "SUCCEEDED", "Running", "RUNNING", "Complete", "True", "Ready", "SKIPPED", "CACHED"];
const BAD = ["Failed", "FAILED", "Stopped", "CANCELED", "FailureTarget", "False"];

function phase(text) {
  const cls = GOOD.includes(text) ? "ok" : BAD.includes(text) ? "bad" : "warn";
  return h("span", { class: `badge ${cls}` }, text || "?");
}

// A button; `text` is what it shows when `label` (its accessible name) is longer.
function button(label, onclick, text) {
  return h("button", { type: "button", "aria-label": text ? label : undefined, onclick: (e) => { e.stopPropagation(); onclick(e); } }, text || label);
}

// Errors by where they happened: a section's error goes away when that section next
// loads, an action's (delete, ...) stays until the banner is clicked.
const errors = new Map();

function renderErrors() {
  const box = $("error");
  box.textContent = [...errors].map(([where, msg]) => `${where}: ${msg}`).join("\n");
  box.hidden = errors.size === 0;
}

function showError(where, err) {
  if (err && err.name === "AbortError") return;
  errors.set(where, err && err.message ? err.message : String(err));
  renderErrors();
}

function clearError(where) {
  if (errors.delete(where)) renderErrors();
}


// --- overview --------------------------------------------------------------------

function podKey(p) {
  return `${p.metadata.namespace}/${p.metadata.name}`;
}

// The workload a pod stands for, as people name it: the owner (Job, run, service).
function ownerOf(p) {
  const o = (p.metadata.ownerReferences || [])[0] || {};
  const labels = p.metadata.labels || {};
  if (labels["pipeline/runid"]) return `run ${labels["pipeline/runid"]}`;
  return o.kind ? `${o.kind} ${p.metadata.namespace}/${o.name}` : podKey(p);
}

// Why a pending pod waits: the scheduler's reason, as the PodScheduled condition and
// the container's waiting state carry it.
function waitReason(p) {
  const s = p.status || {};
  const scheduled = (s.conditions || []).find((c) => c.type === "PodScheduled");
  if (scheduled && scheduled.status === "False" && scheduled.message) return scheduled.message;
  const waiting = (((s.containerStatuses || [])[0] || {}).state || {}).waiting;
  return waiting ? waiting.message || waiting.reason : "";
}

function gpusOf(node) {
  const raw = ((node.metadata || {}).annotations || {})["hearth.dev/gpus"];
  if (!raw) return [];
  try {
    return JSON.parse(raw);
  } catch (_) {
    return [];
  }
}

// GPU uuid -> the running pod that holds it (among the pods this caller may see).
function holders() {
  const out = new Map();
  for (const p of state.pods.values()) {
    if ((p.status || {}).phase !== "Running" && (p.status || {}).phase !== "Pending") continue;
    const uuids = ((p.metadata.annotations || {})["hearth.dev/gpu-uuids"] || "").split(",").filter(Boolean);
    for (const u of uuids) out.set(u, p);
  }
  return out;
}

function renderGpus() {
  const devices = [...state.nodes.values()].flatMap(gpusOf);
  const box = $("gpus");
  if (!devices.length) {
    state.gpuCharts.forEach((c) => c.destroy());
    state.gpuCharts.clear();
    replace("gpus", h("p", { class: "muted" }, "No GPUs on this host. Set [gpu] simulate = N in the config to try GPU scheduling without one."));
    return;
  }
  const held = holders();
  for (const d of devices) {
    let card = box.querySelector(`[data-gpu="${CSS.escape(d.uuid)}"]`);
    if (!card) {
      card = h("article", { class: "gpu card", "data-gpu": d.uuid, "aria-label": `GPU ${d.index}` },
        h("h3", {}, `GPU ${d.index} `, h("span", { class: "gpu-name" }, d.name), d.simulated ? h("span", { class: "badge warn" }, "simulated") : ""),
        h("dl", { class: "gpu-stats" }),
        h("div", { class: "chart" }));
      box.querySelector("p.muted")?.remove();
      box.append(card);
      const chart = liveChart(card.querySelector(".chart"), { series: [{ label: "util", unit: "%" }, { label: "memory", unit: "%" }], max: 100 });
      state.gpuCharts.set(d.uuid, chart);
      chart.push([d.utilization_percent, d.memory_total_bytes ? (100 * d.memory_used_bytes) / d.memory_total_bytes : 0]);
    }
    const holder = held.get(d.uuid);
    card.querySelector(".gpu-stats").replaceChildren(
      ...dl([
        ["utilization", `${d.utilization_percent}%`],
        ["memory", `${bytes(d.memory_used_bytes)} / ${bytes(d.memory_total_bytes)}`],
        ["temperature", `${d.temperature_celsius} °C`],
        ["held by", holder ? ownerOf(holder) : "free"],
      ]).childNodes);
    card.dataset.util = String(d.utilization_percent);
    card.dataset.memory = String(d.memory_total_bytes ? (100 * d.memory_used_bytes) / d.memory_total_bytes : 0);
  }
}

// One sample per GPU into its chart, from the last watched values: the chart moves
// on at a steady pace even when the GPUs do not change (no request is made).
function sampleGpus() {
  for (const [uuid, chart] of state.gpuCharts) {
    const card = $("gpus").querySelector(`[data-gpu="${CSS.escape(uuid)}"]`);
    if (card) chart.push([Number(card.dataset.util || 0), Number(card.dataset.memory || 0)]);
  }
}

function renderPodsQueue() {
  const pods = [...state.pods.values()];
  const waiting = pods.filter((p) => (p.status || {}).phase === "Pending");
  const running = pods.filter((p) => (p.status || {}).phase === "Running");
  const row = (p) => h("tr", {},
    h("td", {}, phase((p.status || {}).phase)),
    h("td", {}, ownerOf(p)),
    h("td", {}, ((p.spec.containers || [])[0] || {}).resources?.limits?.["nvidia.com/gpu"] || "0"),
    h("td", {}, (p.status || {}).phase === "Pending" ? waitReason(p) || "starting" : `started ${age((p.status || {}).startTime)}`));
  replace("queue",
    table(["phase", "workload", "GPUs", "why / since"], [...waiting, ...running].map(row),
      "Nothing running or waiting. Start a pipeline run (Pipelines), a Job (Jobs) or a notebook."));
}

async function refreshOverview() {
  const ns = state.namespace;
  const parts = [
    section("queue summary", async () => {
      const q = await call("queue");
      replace("queue-summary", `${q.running} running, ${q.queued} waiting; GPUs ${q.gpus_in_use}/${q.gpus_total} in use${q.gpus_simulated ? " (simulated)" : ""}`);
    }),
  ];
  if (ns) {
    parts.push(section("active runs", async () => {
      const r = await call("runs", { query: { namespace: ns, sort_by: "created_at desc", page_size: "20" } });
      const rows = (r.runs || []).filter((x) => !["SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"].includes(x.state)).map((x) =>
        h("tr", {}, h("td", {}, h("a", { href: `#/runs/details/${encodeURIComponent(x.run_id)}` }, x.display_name)), h("td", {}, phase(x.state)), h("td", {}, age(x.created_at))));
      replace("active-runs", table(["run", "state", "created"], rows, "No active runs. Run a pipeline from the Pipelines page."));
    }));
    if (has("inferenceServices")) {
      parts.push(section("services", async () => {
        const list = await call("inferenceServices", { params: { namespace: ns } });
        const rows = (list.items || []).map((x) => {
          const ready = ((x.status || {}).conditions || []).find((c) => c.type === "Ready");
          return h("tr", {}, h("td", {}, x.metadata.name), h("td", {}, phase(ready ? (ready.status === "True" ? "Ready" : "NotReady") : "?")), h("td", {}, (x.status || {}).url || ""));
        });
        replace("overview-services", table(["service", "ready", "URL"], rows, "No services. Create an InferenceService (kubectl apply or the KServe client)."));
      }));
    }
    if (has("notebooks")) {
      parts.push(section("notebooks", async () => {
        const list = await call("notebooks", { params: { namespace: ns } });
        replace("overview-notebooks", table(["notebook", "ready", "created"], (list.items || []).map(notebookRow),
          "No notebooks. Start one from the Notebooks page."));
      }));
    }
  }
  await Promise.all(parts);
}

function notebookRow(n) {
  const [st, why] = notebookState(n);
  return h("tr", {}, h("td", {}, n.metadata.name), h("td", {}, phase(st), why ? h("span", { class: "muted" }, ` ${why}`) : ""), h("td", {}, age(n.metadata.creationTimestamp)));
}

function has(key) {
  return !API[key].optional || (state.paths && state.paths.has(API[key].path));
}


// --- pipelines -------------------------------------------------------------------

// The pipeline IR inside a version's or run's `pipeline_spec` (bare, or nested with a
// platform spec).
function irOf(spec) {
  if (!spec) return null;
  return spec.pipeline_spec || spec.pipelineSpec || spec;
}

async function refreshPipelines() {
  const ns = state.namespace;
  await Promise.all([
    section("pipelines", async () => {
      const p = await call("pipelines", { query: { namespace: ns, page_size: "100" } });
      const rows = (p.pipelines || []).map((x) =>
        h("tr", {},
          h("td", {}, x.display_name),
          h("td", {}, x.namespace || "shared"),
          h("td", {}, age(x.created_at)),
          h("td", {}, button(`Run ${x.display_name}`, () => openRunForm(x), "Run"), " ",
            button(`Delete ${x.display_name}`, () => deletePipeline(x), "Delete"))));
      replace("pipelines", table(["pipeline", "namespace", "uploaded", ""], rows, "No pipelines yet. Upload a compiled pipeline (YAML from kfp's compiler) above."));
    }),
    section("runs", async () => {
      if (!ns) return;
      const r = await call("runs", { query: { namespace: ns, sort_by: "created_at desc", page_size: "50" } });
      const rows = (r.runs || []).map((x) =>
        h("tr", {},
          h("td", {}, h("a", { href: `#/runs/details/${encodeURIComponent(x.run_id)}` }, x.display_name)),
          h("td", {}, phase(x.state)),
          h("td", {}, age(x.created_at)),
          h("td", {}, x.finished_at ? age(x.finished_at) : ""),
          h("td", {}, x.error ? x.error.message : "")));
      replace("runs", table(["run", "state", "created", "finished", "error"], rows, "No runs in this namespace. Press Run beside a pipeline."));
    }),
    section("recurring runs", async () => {
      if (!ns) return;
      const r = await call("recurringRuns", { query: { namespace: ns } });
      const rows = (r.recurringRuns || r.recurring_runs || []).map((x) =>
        h("tr", {},
          h("td", {}, x.display_name),
          h("td", {}, (x.trigger && (x.trigger.cron_schedule ? x.trigger.cron_schedule.cron : x.trigger.periodic_schedule ? `every ${x.trigger.periodic_schedule.interval_second}s` : "")) || ""),
          h("td", {}, phase(x.status)),
          h("td", {}, button(`Delete ${x.display_name}`, () => deleteRecurring(x), "Delete"))));
      replace("recurring", table(["recurring run", "schedule", "status", ""], rows, "No recurring runs. Tick \"repeat\" in a run form to create one."));
    }),
  ]);
  if (state.runDetail) await refreshRunDetail();
}

async function uploadPipeline(event) {
  event.preventDefault();
  const out = $("upload-result");
  const file = $("upload-file").files[0];
  if (!file) {
    setResult(out, "bad", "Choose a compiled pipeline file (YAML or JSON) first.");
    return;
  }
  const form = new FormData();
  form.append("uploadfile", file, file.name);
  const name = $("upload-name").value.trim() || file.name.replace(/\.(ya?ml|json)$/, "");
  setResult(out, "muted", "uploading…");
  try {
    const p = await call("uploadPipeline", { query: { name, namespace: state.namespace }, body: form });
    setResult(out, "ok", `uploaded ${p.display_name}`);
    $("upload-form").reset();
    await refreshPipelines();
  } catch (e) {
    setResult(out, "bad", e.message);
  }
}

function setResult(el, cls, text) {
  el.className = cls;
  el.textContent = text;
}

async function deletePipeline(p) {
  if (!confirm(`Delete pipeline ${p.display_name}?`)) return;
  try {
    await call("deletePipeline", { params: { pipeline_id: p.pipeline_id } });
    await refreshPipelines();
  } catch (e) {
    showError(`delete ${p.display_name}`, e);
  }
}

async function deleteRecurring(x) {
  if (!confirm(`Delete recurring run ${x.display_name}?`)) return;
  try {
    await call("deleteRecurringRun", { params: { recurring_run_id: x.recurring_run_id } });
    await refreshPipelines();
  } catch (e) {
    showError(`delete ${x.display_name}`, e);
  }
}

// The run form of a pipeline's latest version: one field per input parameter of the
// IR's root (`root.inputDefinitions.parameters`), typed by `parameterType`.
async function openRunForm(p) {
  const box = $("run-form");
  box.hidden = false;
  replace("run-form-fields", h("p", { class: "muted" }, "loading the pipeline's inputs…"));
  try {
    const versions = await call("pipelineVersions", { params: { pipeline_id: p.pipeline_id }, query: { sort_by: "created_at desc", page_size: "1" } });
    const v = (versions.pipeline_versions || [])[0];
    if (!v) throw new Error("this pipeline has no version to run");
    const full = v.pipeline_spec ? v : await call("pipelineVersion", { params: { pipeline_id: p.pipeline_id, pipeline_version_id: v.pipeline_version_id } });
    const ir = irOf(full.pipeline_spec) || {};
    const inputs = ((ir.root || {}).inputDefinitions || {}).parameters || {};
    box.dataset.pipeline = p.pipeline_id;
    box.dataset.version = v.pipeline_version_id;
    $("run-form-title").textContent = `Run ${p.display_name}`;
    $("run-name").value = `${p.display_name}-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "")}`;
    const fields = Object.entries(inputs).map(([name, def]) => {
      const type = def.parameterType || "STRING";
      const id = `param-${name}`;
      const value = def.defaultValue === undefined ? "" : typeof def.defaultValue === "object" ? json(def.defaultValue) : String(def.defaultValue);
      const input = type === "BOOLEAN"
        ? h("input", { id, type: "checkbox", "data-param": name, "data-type": type, checked: def.defaultValue === true })
        : h("input", { id, type: type === "NUMBER_INTEGER" || type === "NUMBER_DOUBLE" ? "number" : "text", step: type === "NUMBER_DOUBLE" ? "any" : undefined, value, required: !def.isOptional && def.defaultValue === undefined, "data-param": name, "data-type": type });
      return h("div", { class: "field" }, h("label", { for: id }, `${name} `, h("span", { class: "muted" }, type.toLowerCase())), input);
    });
    replace("run-form-fields", fields.length ? fields : h("p", { class: "muted" }, "This pipeline takes no inputs."));
    $("run-name").focus();
  } catch (e) {
    replace("run-form-fields", h("p", { class: "bad" }, e.message));
  }
}

function formParameters() {
  const out = {};
  for (const input of $("run-form-fields").querySelectorAll("[data-param]")) {
    const type = input.dataset.type;
    const name = input.dataset.param;
    if (type === "BOOLEAN") out[name] = input.checked;
    else if (input.value === "") continue;
    else if (type === "NUMBER_INTEGER") out[name] = parseInt(input.value, 10);
    else if (type === "NUMBER_DOUBLE") out[name] = Number(input.value);
    else if (type === "STRUCT" || type === "LIST") out[name] = JSON.parse(input.value);
    else out[name] = input.value;
  }
  return out;
}

async function submitRun(event) {
  event.preventDefault();
  const box = $("run-form");
  const out = $("run-result");
  let parameters;
  try {
    parameters = formParameters();
  } catch (e) {
    setResult(out, "bad", `An input is not valid JSON: ${e.message}`);
    return;
  }
  const reference = { pipeline_id: box.dataset.pipeline, pipeline_version_id: box.dataset.version };
  const cron = $("run-cron").value.trim();
  setResult(out, "muted", "starting…");
  try {
    if ($("run-repeat").checked) {
      await call("createRecurringRun", {
        body: json({
          display_name: $("run-name").value, namespace: state.namespace, pipeline_version_reference: reference,
          runtime_config: { parameters }, mode: "ENABLE", max_concurrency: "1",
          trigger: { cron_schedule: { cron: cron || "0 0 * * * *" } },
        }),
        contentType: "application/json",
      });
      setResult(out, "ok", "recurring run created");
      await refreshPipelines();
      return;
    }
    const run = await call("createRun", {
      body: json({ display_name: $("run-name").value, namespace: state.namespace, pipeline_version_reference: reference, runtime_config: { parameters } }),
      contentType: "application/json",
    });
    setResult(out, "ok", `started ${run.display_name}`);
    box.hidden = true;
    location.hash = `#/runs/details/${encodeURIComponent(run.run_id)}`;
  } catch (e) {
    setResult(out, "bad", e.message);
  }
}

// The run's DAG from its IR (`root.dag.tasks`, `dependentTasks`), coloured by the task
// states of `run_details`.
async function refreshRunDetail() {
  const id = state.runDetail;
  try {
    const r = await call("run", { params: { run_id: id } });
    if (state.runDetail !== id) return;
    $("run-detail").hidden = false;
    $("run-title").textContent = `Run ${r.display_name}`;
    const tasks = (r.run_details && r.run_details.task_details) || [];
    const byName = new Map();
    // Top-level tasks by their IR name (`hearth_path` is `root/<task>`).
    for (const t of tasks) byName.set((t.hearth_path || t.display_name).replace(/^root\//, ""), t);
    let ir = irOf(r.pipeline_spec);
    if (!ir && r.pipeline_version_reference) {
      const ref = r.pipeline_version_reference;
      const v = await call("pipelineVersion", { params: { pipeline_id: ref.pipeline_id, pipeline_version_id: ref.pipeline_version_id } });
      ir = irOf(v.pipeline_spec);
    }
    const dagTasks = ((((ir || {}).root || {}).dag || {}).tasks) || {};
    const nodes = Object.keys(dagTasks).map((name) => ({ id: name, label: name, state: (byName.get(name) || {}).state || "PENDING" }));
    const edges = Object.entries(dagTasks).flatMap(([name, t]) => (t.dependentTasks || []).map((d) => [d, name]));
    const shape = json([nodes, edges]);
    if (shape !== state.lastRun) {
      state.lastRun = shape;
      const { drawDag } = await import("/ui/dag.js");
      drawDag($("run-dag"), nodes, edges, (name) => {
        const t = byName.get(name);
        if (t) showTaskLogs(r.run_id, t.task_id, name);
      });
    }
    const rows = tasks.filter((t) => t.hearth_kind !== "dag" || !t.parent_task_id).map((t) =>
      h("tr", {},
        h("td", {}, t.hearth_path || t.display_name),
        h("td", {}, phase(t.state)),
        h("td", {}, t.hearth_pending_reason || (t.error ? t.error.message : "")),
        h("td", {}, t.start_time ? age(t.start_time) : ""),
        h("td", {}, button(`Logs of ${t.display_name}`, () => showTaskLogs(r.run_id, t.task_id, t.display_name), "Logs"), " ",
          button(`Artifacts of ${t.display_name}`, () => showArtifacts(r.run_id, t.task_id, t.display_name), "Artifacts"))));
    replace("run-info", dl([["state", phase(r.state)], ["run id", r.run_id], ["created", r.created_at], ["finished", r.finished_at], ["error", r.error ? r.error.message : ""]]),
      r.state === "RUNNING" || r.state === "PENDING" ? button("Terminate this run", () => terminateRun(r.run_id), "Terminate") : "");
    replace("run-tasks", table(["task", "state", "note", "started", ""], rows, "No tasks have started yet."));
    clearError("run");
  } catch (e) {
    showError("run", e);
  }
}

async function terminateRun(runId) {
  try {
    await call("terminateRun", { params: { run_id: runId } });
    await refreshRunDetail();
  } catch (e) {
    showError("terminate", e);
  }
}

// A task's artifacts: small text ones (metrics, reports) shown inline, each with a
// download link.
async function showArtifacts(runId, taskId, label) {
  const box = $("artifacts");
  box.hidden = false;
  replace("artifacts-list", h("p", { class: "muted" }, "loading…"));
  $("artifacts-title").textContent = `Artifacts of ${label}`;
  try {
    const out = await call("taskOutputs", { params: { run_id: runId, task_id: taskId } });
    const o = out.outputs || {};
    const arts = Object.entries(o.artifacts || {});
    const params = Object.entries(o.parameters || {});
    const items = [];
    for (const [name, a] of arts) {
      const link = url("artifact", { run_id: runId, task_id: taskId, name });
      const preview = h("pre", { class: "preview" });
      items.push(h("li", {}, h("a", { href: link, download: name }, `download ${name}`), " ", h("span", { class: "muted" }, (a && (a.type || a.schema_title)) || ""), preview));
      const size = a && (a.size_bytes ?? a.size);
      if (size === undefined || size < 64 * 1024) {
        try {
          const text = await call("artifact", { params: { run_id: runId, task_id: taskId, name }, text: true });
          preview.textContent = text.length > 4000 ? `${text.slice(0, 4000)}…` : text;
        } catch (e) {
          preview.textContent = `(no preview: ${e.message})`;
        }
      }
    }
    replace("artifacts-list",
      params.length ? dl(params.map(([k, v]) => [k, typeof v === "object" ? json(v) : String(v)])) : "",
      items.length ? h("ul", {}, items) : h("p", { class: "muted" }, "This task produced no artifacts."));
  } catch (e) {
    replace("artifacts-list", h("p", { class: "bad" }, e.message));
  }
}


// --- jobs and services views ---

function renderIsvcs(list) {
  const rows = (list.items || []).map((x) => {
    const s = x.status || {};
    const ready = (s.conditions || []).find((c) => c.type === "Ready");
    const pred = (x.spec && x.spec.predictor) || {};
    const model = pred.model || {};
    const format = (model.modelFormat && model.modelFormat.name) || Object.keys(pred).find((k) => typeof pred[k] === "object") || "";
    const name = x.metadata.name;
    return h("tr", { class: "clickable", onclick: () => openIsvc(name) },
      h("td", {}, button(`Open ${name}`, () => openIsvc(name), name)),
      h("td", {}, phase(ready ? (ready.status === "True" ? "Ready" : ready.status) : "?")),
      h("td", {}, format),
      h("td", {}, s.url || ""),
      h("td", {}, ready ? ready.message || ready.reason || "" : ""));
  });
  replace("isvcs", table(["name", "ready", "model", "URL", "note"], rows, "no InferenceServices in this namespace"));
}

// Revisions and traffic from the status, and the replicas with their logs.
function renderIsvcDetail(x, replicas) {
  const s = x.status || {};
  const pred = (s.components && s.components.predictor) || {};
  const traffic = (pred.traffic || []).map((t) =>
    h("tr", {}, h("td", {}, t.revisionName), h("td", {}, `${t.percent} %`), h("td", {}, t.tag || ""), h("td", {}, t.latestRevision ? "latest" : "")));
  const conditions = (s.conditions || []).map((c) =>
    h("tr", {}, h("td", {}, c.type), h("td", {}, phase(c.status)), h("td", {}, c.reason), h("td", {}, c.message), h("td", {}, age(c.lastTransitionTime))));
  const name = x.metadata.name;
  const rows = (replicas.items || []).slice().reverse().map((r) => {
    const exit = r.exit ? `${r.exit.reason}${r.exit.exitCode != null ? ` (${r.exit.exitCode})` : ""}` : "";
    return h("tr", {},
      h("td", {}, r.name),
      h("td", {}, r.revision),
      h("td", {}, r.component),
      h("td", {}, phase(r.phase)),
      h("td", {}, age(r.createdAt)),
      h("td", {}, r.pendingReason || exit),
      h("td", {}, button("logs", () => showReplicaLogs(name, r.name))));
  });
  replace("detail",
    dl([["URL", s.url], ["latest created", pred.latestCreatedRevision], ["latest ready", pred.latestReadyRevision],
      ["rolled out", pred.latestRolledoutRevision], ["previous", pred.previousRolledoutRevision]]),
    h("h3", {}, "Traffic"),
    table(["revision", "share", "tag", ""], traffic, "no revision takes traffic yet"),
    h("h3", {}, "Conditions"),
    table(["type", "status", "reason", "message", "since"], conditions),
    h("h3", {}, "Replicas"),
    table(["replica", "revision", "component", "phase", "created", "note", ""], rows, "no replicas (scaled to zero, or not started yet)"));
}

function jobPhase(j) {
  const s = j.status || {};
  return (s.hearth && s.hearth.phase) || (s.succeeded ? "Succeeded" : s.failed ? "Failed" : s.active ? "Running" : "Queued");
}

function renderJobs(list) {
  const rows = (list.items || []).map((j) => {
    const name = j.metadata.name;
    const s = j.status || {};
    return h("tr", { class: "clickable", onclick: () => openJob(name) },
      h("td", {}, name),
      h("td", {}, phase(jobPhase(j))),
      h("td", {}, s.hearth ? s.hearth.attempts : ""),
      h("td", {}, `${s.succeeded || 0} ok / ${s.failed || 0} failed`),
      h("td", {}, age(j.metadata.creationTimestamp)),
      h("td", {}, button("logs", () => showJobLogs(name)), " ", button("delete", () => deleteJob(name))));
  });
  replace("jobs", table(["name", "phase", "attempts", "pods", "created", ""], rows, "no jobs in this namespace"));
}

function renderJobDetail(j) {
  const s = j.status || {};
  const conditions = (s.conditions || []).map((c) =>
    h("tr", {}, h("td", {}, c.type), h("td", {}, phase(c.status)), h("td", {}, c.reason), h("td", {}, c.message), h("td", {}, age(c.lastTransitionTime))));
  replace("detail",
    dl([["phase", phase(jobPhase(j))], ["started", s.startTime], ["completed", s.completionTime]]),
    h("h3", {}, "Conditions"),
    table(["type", "status", "reason", "message", "since"], conditions),
    h("h3", {}, "status.hearth"),
    h("pre", {}, JSON.stringify(s.hearth || {}, null, 2)),
    h("div", {}, button("logs", () => showJobLogs(j.metadata.name)), " ", button("delete", () => deleteJob(j.metadata.name))));
}


// --- jobs and serving details ----------------------------------------------------

const DETAILS = ["jobDetail", "isvcDetail"];

async function openDetail(which, id, title) {
  for (const d of DETAILS) state[d] = "";
  state[which] = id;
  $("detail-section").hidden = false;
  $("detail-title").textContent = title;
  await refreshDetail();
}

const openJob = (name) => {
  stopServiceMetrics();
  closeTryIt();
  return openDetail("jobDetail", name, `Job ${state.namespace}/${name}`);
};
const openIsvc = (name) => {
  startServiceMetrics(name);
  openTryIt(name);
  return openDetail("isvcDetail", name, `InferenceService ${state.namespace}/${name}`);
};

// --- a service's metrics: the daemon's own /metrics, sampled while its detail is open.
// No watch carries counters, so this one view samples (every METRICS_MS, only while the
// tab is visible and this service is open); everything else on the page is watch-driven.

const METRICS_MS = 5000;

// OpenMetrics text -> [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

// The service's totals: requests, latency buckets (le -> count), ready replicas.
function serviceSample(samples, ns, name) {
  const mine = samples.filter((x) => x.labels.namespace === ns && (x.labels.service === name || x.labels.inferenceservice === name));
  const sum = (n) => mine.filter((x) => x.name === n).reduce((a, x) => a + x.value, 0);
  const buckets = new Map();
  for (const x of mine.filter((y) => y.name === "hearth_serving_request_seconds_bucket")) {
    const le = x.labels.le === "+Inf" ? Infinity : Number(x.labels.le);
    buckets.set(le, (buckets.get(le) || 0) + x.value);
  }
  return { t: Date.now() / 1000, requests: sum("hearth_serving_requests_total") || sum("hearth_serving_requests"), buckets, replicas: sum("hearth_serving_replicas_ready") };
}

// A quantile (0..1) of the requests between two samples, from histogram bucket deltas.
function quantile(before, after, q) {
  const les = [...after.buckets.keys()].sort((a, b) => a - b);
  const counts = les.map((le) => after.buckets.get(le) - (before.buckets.get(le) || 0));
  const total = counts[counts.length - 1] || 0;
  if (!total) return null;
  const rank = q * total;
  for (let i = 0; i < les.length; i++) {
    if (counts[i] >= rank) {
      const lo = i ? les[i - 1] : 0;
      const hi = les[i] === Infinity ? lo : les[i];
      const below = i ? counts[i - 1] : 0;
      const inside = counts[i] - below;
      return 1000 * (lo + (inside ? ((rank - below) / inside) * (hi - lo) : 0));
    }
  }
  return null;
}

const serviceMetrics = { name: "", timer: 0, last: null, charts: [] };

function startServiceMetrics(name) {
  stopServiceMetrics();
  serviceMetrics.name = name;
  const box = $("isvc-metrics");
  box.hidden = false;
  const rate = h("div", { class: "chart", role: "img", "aria-label": "requests per second" });
  const latency = h("div", { class: "chart", role: "img", "aria-label": "latency percentiles in milliseconds" });
  const replicas = h("div", { class: "chart", role: "img", "aria-label": "ready replicas" });
  replace("isvc-metrics-body",
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("h3", {}, "Requests per second"), rate),
      h("div", { class: "card" }, h("h3", {}, "Latency (ms)"), latency),
      h("div", { class: "card" }, h("h3", {}, "Ready replicas"), replicas)));
  serviceMetrics.charts = [
    liveChart(rate, { series: [{ label: "req/s" }] }),
    liveChart(latency, { series: [{ label: "p50", unit: " ms" }, { label: "p95", unit: " ms" }, { label: "p99", unit: " ms" }] }),
    liveChart(replicas, { series: [{ label: "ready" }] }),
  ];
  const tick = async () => {
    if (serviceMetrics.name !== name) return;
    if (!document.hidden && state.tab === "serving") {
      try {
        const now = serviceSample(parseMetrics(await call("metrics", { text: true })), state.namespace, name);
        const before = serviceMetrics.last;
        if (before && serviceMetrics.name === name) {
          const dt = Math.max(now.t - before.t, 0.001);
          serviceMetrics.charts[0].push([(now.requests - before.requests) / dt]);
          serviceMetrics.charts[1].push([quantile(before, now, 0.5), quantile(before, now, 0.95), quantile(before, now, 0.99)]);
          serviceMetrics.charts[2].push([now.replicas]);
        }
        serviceMetrics.last = now;
        clearError("metrics");
      } catch (e) {
        showError("metrics", e);
      }
    }
    serviceMetrics.timer = setTimeout(tick, METRICS_MS);
  };
  tick();
}

function stopServiceMetrics() {
  clearTimeout(serviceMetrics.timer);
  serviceMetrics.charts.forEach((c) => c.destroy());
  serviceMetrics.charts = [];
  serviceMetrics.name = "";
  serviceMetrics.last = null;
  if ($("isvc-metrics")) $("isvc-metrics").hidden = true;
}

async function refreshDetail() {
  try {
    if (state.jobDetail) renderJobDetail(await call("job", { params: { namespace: state.namespace, name: state.jobDetail } }));
    else if (state.isvcDetail) {
      const params = { namespace: state.namespace, name: state.isvcDetail };
      const [x, replicas] = await Promise.all([call("inferenceService", { params }), call("isvcReplicas", { params })]);
      renderIsvcDetail(x, replicas);
      $("detail").append(canaryControl(x));
    }
    clearError("details");
  } catch (e) {
    showError("details", e);
  }
}

// The canary's share of traffic (`spec.predictor.canaryTrafficPercent`), set by a
// merge patch when the slider is let go.
function canaryControl(x) {
  const pred = (x.spec && x.spec.predictor) || {};
  const current = pred.canaryTrafficPercent ?? 100;
  const out = h("span", { class: "muted" }, "");
  const value = h("output", { for: "canary" }, `${current} %`);
  const slider = h("input", { id: "canary", type: "range", min: 0, max: 100, step: 5, value: current,
    oninput: (e) => { value.textContent = `${e.target.value} %`; },
    onchange: async (e) => {
      try {
        await call("patchInferenceService", {
          params: { namespace: state.namespace, name: x.metadata.name },
          body: json({ spec: { predictor: { canaryTrafficPercent: Number(e.target.value) } } }),
          contentType: "application/merge-patch+json",
        });
        setResult(out, "ok", "traffic updated");
        await refreshDetail();
      } catch (err) {
        setResult(out, "bad", err.message);
      }
    } });
  return h("div", { class: "field" }, h("h3", {}, "Canary"), h("label", { for: "canary" }, "share of traffic to the latest revision "), slider, " ", value, " ", out);
}

// --- try it: one V1 or V2 request to the open service, through the API's
// `.../inferenceservices/{name}/inference` (the page may call its own origin only; the
// data plane listens on another port). The answer shows the data plane's status, the
// revision that answered, the time and the body.

const TRY_CALLS = {
  v1: [["v1_predict", ":predict"], ["v1_ready", "ready"]],
  v2: [["v2_infer", "infer"], ["v2_metadata", "metadata"], ["v2_ready", "ready"]],
};
const TRY_READS = ["v1_ready", "v2_ready", "v2_metadata"];

// Indented JSON with each array of plain values (a row, a tensor's data) on one line.
function pretty(v) {
  return JSON.stringify(v, null, 2).replace(/\[\s+([^[\]{}]*?)\s+\]/g, (_, inner) => `[${inner.replace(/\s*\n\s*/g, " ")}]`);
}
const tryIt = { name: "", meta: undefined, seq: 0 };

function tryProtocol() {
  const checked = document.querySelector("input[name=try-protocol]:checked");
  return checked ? checked.value : "v1";
}

// Rows of zeros shaped like the model's V2 metadata (`-1` read as one row), else the
// KServe docs' iris example: the model's own inputs when it says what they are.
function tryExample(protocol) {
  const inputs = (tryIt.meta && Array.isArray(tryIt.meta.inputs)) ? tryIt.meta.inputs : [];
  const fill = (datatype, n) => Array.from({ length: n }, () => (datatype === "BYTES" ? "" : datatype === "BOOL" ? false : 0));
  if (inputs.length) {
    const shaped = inputs.map((i) => {
      const shape = (i.shape || [1]).map((d) => (d < 0 ? 1 : d));
      return { name: i.name, shape, datatype: i.datatype, data: fill(i.datatype, shape.reduce((a, b) => a * b, 1)) };
    });
    if (protocol === "v2") return { inputs: shaped };
    const first = shaped[0];
    const width = first.shape.slice(1).reduce((a, b) => a * b, 1);
    return { instances: [fill(first.datatype, width)] };
  }
  const iris = [6.8, 2.8, 4.8, 1.4];
  return protocol === "v2"
    ? { inputs: [{ name: "input-0", shape: [1, 4], datatype: "FP32", data: iris }] }
    : { instances: [iris] };
}

function renderTryCalls() {
  const protocol = tryProtocol();
  $("try-call").replaceChildren(...TRY_CALLS[protocol].map(([value, label]) => h("option", { value }, label)));
  tryBodyState();
  $("try-body").value = pretty(tryExample(protocol));
}

function tryBodyState() {
  const read = TRY_READS.includes($("try-call").value);
  $("try-body").disabled = read;
  $("try-example").disabled = read;
}

async function openTryIt(name) {
  if (!has("callInferenceService")) return;
  const seq = ++tryIt.seq;
  tryIt.name = name;
  tryIt.meta = undefined;
  $("isvc-try").hidden = false;
  $("try-service").textContent = name;
  $("try-answer").hidden = true;
  $("try-status").replaceChildren();
  $("try-shape").textContent = "";
  renderTryCalls();
  // The V2 metadata, if the model serves it, shapes the example. Asked once per opening,
  // and only of a running replica: at zero replicas the request would start one.
  try {
    const params = { namespace: state.namespace, name };
    const replicas = await call("isvcReplicas", { params });
    if (seq !== tryIt.seq) return;
    if (!(replicas.items || []).some((r) => r.phase === "Running")) {
      $("try-shape").textContent = "(a generic example: no replica runs to ask for the model's V2 metadata)";
      return;
    }
    const answer = await call("callInferenceService", {
      params,
      body: json({ call: "v2_metadata" }),
      contentType: "application/json",
    });
    if (seq !== tryIt.seq) return;
    if (answer.status === 200 && answer.body && Array.isArray(answer.body.inputs)) {
      tryIt.meta = answer.body;
      $("try-shape").textContent = "(example shaped from the model's V2 metadata)";
      renderTryCalls();
    }
  } catch (_) {
    // No metadata: the iris example stays; sending shows any error.
  }
}

function closeTryIt() {
  tryIt.seq++;
  tryIt.name = "";
  if ($("isvc-try")) $("isvc-try").hidden = true;
}

async function sendTryIt(event) {
  event.preventDefault();
  const out = $("try-status");
  const answerBox = $("try-answer");
  const which = $("try-call").value;
  const request = { call: which };
  if (!TRY_READS.includes(which)) {
    try {
      request.body = JSON.parse($("try-body").value);
    } catch (e) {
      setResult(out, "bad", `the body is not JSON: ${e.message}`);
      answerBox.hidden = true;
      return;
    }
  }
  setResult(out, "muted", "sending...");
  const began = performance.now();
  try {
    const a = await call("callInferenceService", {
      params: { namespace: state.namespace, name: tryIt.name },
      body: json(request),
      contentType: "application/json",
    });
    const total = performance.now() - began;
    const ok = a.status >= 200 && a.status < 300;
    out.className = "";
    out.replaceChildren(
      h("span", { class: `badge ${ok ? "ok" : "bad"}` }, `HTTP ${a.status}`),
      ` ${a.elapsed_ms.toFixed(1)} ms at the data plane, ${total.toFixed(0)} ms in all`,
      a.revision ? ` · ${a.revision}` : "",
      ok ? "" : ` · ${(a.body && a.body.error) || "the model refused the request"}`);
    answerBox.textContent = typeof a.body === "string" ? a.body : pretty(a.body);
    answerBox.hidden = false;
  } catch (e) {
    setResult(out, "bad", e.message);
    answerBox.hidden = true;
  }
}

function closeDetail() {
  stopServiceMetrics();
  closeTryIt();
  for (const d of DETAILS) state[d] = "";
  $("detail-section").hidden = true;
  clearError("details");
}

async function deleteJob(name) {
  if (!confirm(`Delete job ${state.namespace}/${name}? Running attempts are stopped.`)) return;
  try {
    await call("deleteJob", { params: { namespace: state.namespace, name } });
    if (state.jobDetail === name) closeDetail();
    await refreshTab();
  } catch (e) {
    showError(`delete ${name}`, e);
  }
}

async function createJob() {
  const out = $("job-result");
  setResult(out, "muted", "sending…");
  try {
    const job = await call("createJob", { params: { namespace: state.namespace }, body: $("job-yaml").value, contentType: "application/yaml" });
    setResult(out, "ok", `created ${job.metadata.namespace}/${job.metadata.name}`);
    await refreshTab();
  } catch (e) {
    // The Status message names the field that was refused.
    setResult(out, "bad", e.message);
  }
}

// --- logs ------------------------------------------------------------------------

function stopLogs() {
  if (state.logAbort) state.logAbort.abort();
  state.logAbort = null;
}

function showJobLogs(name) {
  return streamLogs(`Logs of job ${state.namespace}/${name}`, "jobLogs", { namespace: state.namespace, name }, {});
}

function showReplicaLogs(name, replica) {
  return streamLogs(`Logs of replica ${replica}`, "isvcLogs", { namespace: state.namespace, name }, { replica });
}

// Streams `.../logs?follow=true` into the log pane until the workload ends, the pane
// is closed, or another log is opened.
async function streamLogs(title, key, params, query) {
  stopLogs();
  const abort = new AbortController();
  state.logAbort = abort;
  $("logs-section").hidden = false;
  $("logs-title").textContent = title;
  const pane = $("logs");
  pane.textContent = "";
  $("logs-state").textContent = "streaming…";
  try {
    const res = await fetch(url(key, params, { ...query, follow: "true" }), {
      headers: { Accept: "text/plain" },
      credentials: "same-origin",
      cache: "no-store",
      signal: abort.signal,
    });
    if (!res.ok) throw await failure(res);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
      pane.append(document.createTextNode(value));
      if (atEnd) pane.scrollTop = pane.scrollHeight;
    }
    $("logs-state").textContent = "ended";
  } catch (e) {
    if (e.name === "AbortError") return;
    $("logs-state").textContent = e.message;
  } finally {
    if (state.logAbort === abort) state.logAbort = null;
  }
}

async function showTaskLogs(runId, taskId, label) {
  stopLogs();
  $("logs-section").hidden = false;
  $("logs-title").textContent = `Logs of task ${label || taskId}`;
  $("logs-state").textContent = "loading…";
  try {
    const text = await call("taskLogs", { params: { run_id: runId, task_id: taskId }, text: true });
    $("logs").textContent = text;
    $("logs-state").textContent = text ? "" : "(no output yet)";
  } catch (e) {
    $("logs").textContent = "";
    $("logs-state").textContent = e.message;
  }
}

// --- experiments and notebooks (lists) --------------------------------------------

async function refreshExperiments() {
  if (!has("experiments") || !state.namespace) return;
  await section("experiments", async () => {
    const list = await call("experiments", { params: { namespace: state.namespace } });
    const rows = (list.items || []).map((x) => {
      const s = x.status || {};
      const metric = bestMetric(x);
      const name = x.metadata.name;
      return h("tr", {},
        h("td", {}, h("a", { href: `#/experiments/${encodeURIComponent(name)}` }, name)),
        h("td", {}, phase(experimentState(x))),
        h("td", {}, `${s.trialsSucceeded || 0} succeeded of ${x.spec.maxTrialCount || "?"}`),
        h("td", {}, metric ? `${metric.name} = ${metric.latest}` : ""));
    });
    replace("experiments", table(["experiment", "state", "trials", "best"], rows, "No experiments. Paste a Katib Experiment below and create it."));
  });
  const open = (/^#\/experiments\/([^/?#]+)/.exec(location.hash) || [])[1];
  if (open) await section("experiment", () => renderExperiment(decodeURIComponent(open)));
  else $("experiment-detail").hidden = true;
}

function experimentState(x) {
  const cs = ((x.status || {}).conditions || []).filter((c) => c.status === "True");
  return (cs.slice(-1)[0] || {}).type || "Created";
}

// The objective metric of the best trial so far (`status.currentOptimalTrial`).
function bestMetric(x) {
  const obj = ((x.spec || {}).objective || {}).objectiveMetricName;
  const metrics = ((((x.status || {}).currentOptimalTrial || {}).observation || {}).metrics) || [];
  return metrics.find((m) => m.name === obj) || metrics[0];
}

// A trial's value of `metric` (the latest reported), a number or NaN.
function trialMetric(t, metric) {
  const m = ((((t.status || {}).observation || {}).metrics) || []).find((x) => x.name === metric);
  return m ? Number(m.latest) : NaN;
}

const trialSort = { key: "created", up: true };

// One experiment: best trial, objective per trial, parameters against the objective
// (parallel coordinates) and a trials table sorted by any column.
async function renderExperiment(name) {
  const ns = state.namespace;
  const [list, trials] = await Promise.all([
    call("experiments", { params: { namespace: ns } }),
    call("trials", { params: { namespace: ns }, query: { labelSelector: `katib.kubeflow.org/experiment=${name}` } }),
  ]);
  const x = (list.items || []).find((e) => e.metadata.name === name);
  const box = $("experiment-detail");
  box.hidden = false;
  if (!x) {
    replace("experiment-body", h("p", { class: "bad" }, `No experiment ${name} in ${ns}.`));
    return;
  }
  $("experiment-title").textContent = `Experiment ${name}`;
  const objective = (x.spec.objective || {}).objectiveMetricName;
  const params = (x.spec.parameters || []).map((p) => p.name);
  const items = (trials.items || []).slice().sort((a, b) => a.metadata.creationTimestamp.localeCompare(b.metadata.creationTimestamp) || a.metadata.name.localeCompare(b.metadata.name));
  const assignment = (t, p) => ((t.spec.parameterAssignments || []).find((a) => a.name === p) || {}).value;
  const trialState = (t) => ((((t.status || {}).conditions) || []).filter((c) => c.status === "True").slice(-1)[0] || {}).type || "Created";
  const best = (x.status || {}).currentOptimalTrial || {};
  const bestM = bestMetric(x);
  const cols = ["trial", "state", ...params, objective];
  const value = (t, c) => (c === "trial" ? t.metadata.name : c === "state" ? trialState(t) : c === objective ? trialMetric(t, objective) : assignment(t, c));
  const sorted = items.slice();
  if (trialSort.key !== "created") {
    sorted.sort((a, b) => {
      const va = value(a, trialSort.key);
      const vb = value(b, trialSort.key);
      const na = Number(va);
      const nb = Number(vb);
      const cmp = Number.isFinite(na) && Number.isFinite(nb) ? na - nb : String(va ?? "").localeCompare(String(vb ?? ""));
      return trialSort.up ? cmp : -cmp;
    });
  }
  const header = h("tr", {}, cols.map((c) => {
    const sortState = trialSort.key === c ? (trialSort.up ? "ascending" : "descending") : "none";
    return h("th", { "aria-sort": sortState }, h("button", { type: "button", class: "sort", "data-sort": c, onclick: () => {
      trialSort.up = trialSort.key === c ? !trialSort.up : true;
      trialSort.key = c;
      renderExperiment(name).catch((e) => showError("experiment", e));
    } }, c, sortState === "ascending" ? " ▲" : sortState === "descending" ? " ▼" : ""));
  }));
  const rows = sorted.map((t) => h("tr", { class: t.metadata.name === best.bestTrialName ? "best" : undefined },
    cols.map((c) => {
      const v = value(t, c);
      return h("td", {}, c === "state" ? phase(v) : Number.isNaN(v) ? "" : String(v ?? ""));
    })));
  const chart = h("div", { class: "chart wide", "aria-label": `${objective} per trial`, role: "img" });
  const pc = h("div", { class: "chart wide", "aria-label": "parameters against the objective", role: "img" });
  replace("experiment-body",
    dl([["state", phase(experimentState(x))], ["objective", `${x.spec.objective.type} ${objective}${x.spec.objective.goal !== undefined ? ` (goal ${x.spec.objective.goal})` : ""}`],
      ["best trial", best.bestTrialName ? `${best.bestTrialName}: ${bestM ? `${bestM.name} = ${bestM.latest}` : ""} with ${(best.parameterAssignments || []).map((a) => `${a.name}=${a.value}`).join(", ")}` : "none yet"]]),
    h("h3", {}, `${objective} per trial`), chart,
    h("h3", {}, "Parameters against the objective"), pc,
    h("h3", {}, "Trials"),
    items.length ? h("table", { class: "trials" }, h("thead", {}, header), h("tbody", {}, rows)) : h("p", { class: "muted" }, "No trials yet: the first ones start as soon as the queue has room."));
  const done = items.filter((t) => Number.isFinite(trialMetric(t, objective)));
  if (done.length) {
    xyChart(chart, { xs: done.map((_, i) => i + 1), series: [{ label: objective, values: done.map((t) => trialMetric(t, objective)) }], xLabel: "trial", yLabel: objective });
    // Categorical values become their index in the feasible list.
    const axis = (p) => {
      const def = x.spec.parameters.find((q) => q.name === p) || {};
      const list = (def.feasibleSpace || {}).list;
      return (t) => (list ? list.indexOf(assignment(t, p)) : Number(assignment(t, p)));
    };
    parallelCoordinates(pc, { columns: [...params, objective], rows: done.map((t) => ({ label: t.metadata.name, values: [...params.map((p) => axis(p)(t)), trialMetric(t, objective)] })) });
  } else {
    chart.append(h("p", { class: "muted" }, "No trial has reported the objective yet."));
  }
}

async function createExperiment() {
  const out = $("experiment-result");
  setResult(out, "muted", "sending…");
  try {
    const x = await call("createExperiment", { params: { namespace: state.namespace }, body: $("experiment-yaml").value, contentType: "application/yaml" });
    setResult(out, "ok", `created ${x.metadata.name}`);
    location.hash = `#/experiments/${encodeURIComponent(x.metadata.name)}`;
  } catch (e) {
    setResult(out, "bad", e.message);
  }
}

const STOPPED = "kubeflow-resource-stopped";

// A notebook's state as Kubeflow's notebook UI words it: stopped (the annotation),
// ready, or waiting (with the reason the status gives).
function notebookState(n) {
  if (((n.metadata.annotations || {})[STOPPED])) return ["Stopped", ""];
  const s = n.status || {};
  if (s.readyReplicas >= 1) return ["Ready", ""];
  const waiting = (s.containerState || {}).waiting;
  const cond = (s.conditions || []).find((c) => c.status === "False" && c.message);
  return ["Waiting", (waiting && (waiting.message || waiting.reason)) || (cond && cond.message) || ""];
}

async function refreshNotebooks() {
  if (!has("notebooks") || !state.namespace) return;
  const ns = state.namespace;
  await section("notebooks", async () => {
    const list = await call("notebooks", { params: { namespace: ns } });
    const rows = (list.items || []).map((n) => {
      const name = n.metadata.name;
      const [st, why] = notebookState(n);
      const c = (((n.spec || {}).template || {}).spec || {}).containers?.[0] || {};
      const res = c.resources || {};
      return h("tr", { "data-notebook": name },
        h("td", {}, name),
        h("td", {}, phase(st), why ? h("span", { class: "muted" }, ` ${why}`) : ""),
        h("td", {}, c.image || ""),
        h("td", {}, `${(res.requests || {}).cpu || "–"} CPU, ${(res.requests || {}).memory || "–"}, ${(res.limits || {})["nvidia.com/gpu"] || 0} GPU`),
        h("td", {}, age(n.metadata.creationTimestamp)),
        h("td", {},
          st === "Ready" ? h("a", { href: `/notebook/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/lab`, target: "_blank", rel: "noopener", class: "button" }, "Connect") : "",
          " ",
          button(st === "Stopped" ? `Start ${name}` : `Stop ${name}`, () => stopStartNotebook(name, st !== "Stopped"), st === "Stopped" ? "Start" : "Stop"),
          " ",
          button(`Delete ${name}`, () => deleteNotebook(name), "Delete")));
    });
    replace("notebooks", table(["notebook", "state", "image", "resources", "created", ""], rows, "No notebooks. Fill in the form below to start one."));
  });
}

// The spawner: a Kubeflow Notebook (kubeflow.org/v1) as the Kubeflow notebook UI
// writes it: one container with the image and requests, GPUs as a limit, and the
// workspace as a PersistentVolumeClaim mounted at /home/jovyan.
async function spawnNotebook(event) {
  event.preventDefault();
  const out = $("nb-result");
  const name = $("nb-name").value.trim();
  const gpus = Number($("nb-gpus").value || 0);
  const container = {
    name,
    image: $("nb-image").value.trim(),
    resources: { requests: { cpu: $("nb-cpu").value.trim(), memory: $("nb-memory").value.trim() } },
  };
  if (gpus > 0) container.resources.limits = { "nvidia.com/gpu": String(gpus) };
  const pod = { containers: [container], serviceAccountName: "default-editor" };
  const workspace = $("nb-workspace").value.trim();
  if (workspace) {
    container.volumeMounts = [{ name: "workspace", mountPath: "/home/jovyan" }];
    pod.volumes = [{ name: "workspace", persistentVolumeClaim: { claimName: workspace } }];
  }
  const doc = { apiVersion: "kubeflow.org/v1", kind: "Notebook", metadata: { name }, spec: { template: { spec: pod } } };
  setResult(out, "muted", "creating…");
  try {
    await call("createNotebook", { params: { namespace: state.namespace }, body: json(doc), contentType: "application/json" });
    setResult(out, "ok", `created ${name}; it is ready when its state says so`);
    await refreshNotebooks();
  } catch (e) {
    setResult(out, "bad", e.message);
  }
}

async function stopStartNotebook(name, stop) {
  try {
    const stamp = stop ? new Date().toISOString().replace(/\.\d+Z$/, "Z") : null;
    await call("patchNotebook", {
      params: { namespace: state.namespace, name },
      body: json({ metadata: { annotations: { [STOPPED]: stamp } } }),
      contentType: "application/merge-patch+json",
    });
    await refreshNotebooks();
  } catch (e) {
    showError(`${stop ? "stop" : "start"} ${name}`, e);
  }
}

async function deleteNotebook(name) {
  if (!confirm(`Delete notebook ${state.namespace}/${name}? Its workspace volume is kept.`)) return;
  try {
    await call("deleteNotebook", { params: { namespace: state.namespace, name } });
    await refreshNotebooks();
  } catch (e) {
    showError(`delete ${name}`, e);
  }
}

// --- tabs, live refresh, start ----------------------------------------------------

const TABS = ["overview", "pipelines", "jobs", "serving", "experiments", "notebooks"];

async function section(name, work) {
  try {
    await work();
    clearError(name);
    return true;
  } catch (e) {
    showError(name, e);
    return false;
  }
}

async function refreshTab() {
  const ns = state.namespace;
  switch (state.tab) {
    case "overview":
      return refreshOverview();
    case "pipelines":
      return refreshPipelines();
    case "jobs":
      if (!ns) return;
      await section("jobs", async () => renderJobs(await call("jobs", { params: { namespace: ns } })));
      return refreshDetail();
    case "serving":
      if (!ns || !has("inferenceServices")) return;
      await section("inferenceservices", async () => renderIsvcs(await call("inferenceServices", { params: { namespace: ns } })));
      return refreshDetail();
    case "experiments":
      return refreshExperiments();
    case "notebooks":
      return refreshNotebooks();
    default:
      return undefined;
  }
}

// A watch event asks for one re-read of the open tab's lists, a moment later so that
// a burst of events costs one read.
function soon() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => {
    if (!document.hidden) refreshTab();
  }, 300);
}

// Routes the fragment: `#/<tab>`, or a kfp.Client link (`#/runs/details/<id>` ...).
async function route() {
  const link = kfpLink(location.hash);
  let tab = (/^#\/(\w+)/.exec(location.hash) || [])[1];
  if (link) tab = "pipelines";
  if (!TABS.includes(tab)) tab = "overview";
  state.tab = tab;
  for (const t of TABS) {
    $(`tab-${t}`).hidden = t !== tab;
    const a = document.querySelector(`nav a[href="#/${t}"]`);
    if (a) {
      if (t === tab) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }
  closeDetail();
  state.runDetail = "";
  state.lastRun = null;
  $("run-detail").hidden = true;
  $("artifacts").hidden = true;
  if (link) await openKfpLink(link);
  await refreshTab();
  if (tab === "overview") for (const c of state.gpuCharts.values()) c.resize();
}

// Opens what a kfp.Client link names, in its own namespace (read from the object).
async function openKfpLink(link) {
  const get = {
    runDetail: ["run", { run_id: link.id }],
    pipelineDetail: ["pipeline", { pipeline_id: link.id }],
    experimentDetail: ["experiment", { experiment_id: link.id }],
  }[link.which];
  try {
    const obj = await call(get[0], { params: get[1] });
    if (obj.namespace && obj.namespace !== state.namespace && [...$("namespace").options].some((o) => o.value === obj.namespace)) {
      $("namespace").value = obj.namespace;
      state.namespace = obj.namespace;
    }
    if (link.which === "runDetail") state.runDetail = link.id;
    clearError("link");
  } catch (e) {
    showError("link", e);
  }
}

async function logout() {
  try {
    await call("logout");
  } catch (e) {
    showError("logout", e);
    return;
  }
  location.replace("/");
}

async function start() {
  $("namespace").addEventListener("change", async (e) => {
    state.namespace = e.target.value;
    closeDetail();
    await refreshTab();
  });
  $("logout").addEventListener("click", logout);
  $("job-submit").addEventListener("click", createJob);
  $("experiment-submit").addEventListener("click", createExperiment);
  $("nb-form").addEventListener("submit", spawnNotebook);
  $("upload-form").addEventListener("submit", uploadPipeline);
  $("run-form").addEventListener("submit", submitRun);
  $("run-cancel").addEventListener("click", () => { $("run-form").hidden = true; });
  $("detail-close").addEventListener("click", closeDetail);
  $("try-form").addEventListener("submit", sendTryIt);
  $("try-call").addEventListener("change", tryBodyState);
  $("try-example").addEventListener("click", () => { $("try-body").value = pretty(tryExample(tryProtocol())); });
  for (const radio of document.querySelectorAll("input[name=try-protocol]")) radio.addEventListener("change", renderTryCalls);
  $("artifacts-close").addEventListener("click", () => { $("artifacts").hidden = true; });
  $("error").addEventListener("click", () => {
    errors.clear();
    renderErrors();
  });
  $("logs-close").addEventListener("click", () => {
    stopLogs();
    $("logs-section").hidden = true;
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshTab();
  });
  window.addEventListener("resize", () => state.gpuCharts.forEach((c) => c.resize()));

  try {
    const doc = await call("openapi");
    state.paths = new Set(Object.keys(doc.paths || {}));
  } catch (e) {
    showError("openapi", e);
  }
  for (const [key, tab] of [["inferenceServices", "serving"], ["experiments", "experiments"], ["notebooks", "notebooks"]]) {
    const a = document.querySelector(`nav a[href="#/${tab}"]`);
    if (a && !has(key)) a.hidden = true;
  }
  try {
    const me = await call("whoami");
    replace("whoami", `${me.user}`, me.admin ? h("span", { class: "badge warn" }, "admin") : "");
    const list = await call("namespaces");
    const names = (list.items || []).map((n) => n.name);
    const ns = (me.namespaces || []).find((n) => names.includes(n)) || names[0] || "";
    replace("namespace", ...names.map((n) => h("option", { value: n, selected: n === ns }, n)));
    state.namespace = ns;
  } catch (e) {
    showError("who am I", e);
  }
  window.addEventListener("hashchange", route);
  await route();

  // The live part: two watches feed the overview and trigger re-reads.
  watch("nodes", {}, (ev) => {
    const name = ev.object.metadata.name;
    if (ev.type === "DELETED") state.nodes.delete(name);
    else state.nodes.set(name, ev.object);
    if (state.tab === "overview") renderGpus();
  }, () => state.nodes.clear());
  watch("pods", {}, (ev) => {
    const key = podKey(ev.object);
    if (ev.type === "DELETED") state.pods.delete(key);
    else state.pods.set(key, ev.object);
    if (state.tab === "overview") {
      renderPodsQueue();
      renderGpus();
    }
    soon();
  }, () => state.pods.clear());
  // A notebook turns Ready when its server answers, which no pod event marks.
  if (has("allNotebooks")) watch("allNotebooks", {}, () => soon(), () => {});
  setInterval(() => {
    if (!document.hidden && state.tab === "overview") sampleGpus();
  }, 2000);
}

start();
