// Hearth's web page: vanilla JS, no build step, no dependencies.
//
// Credentials: the browser got a 401 with a Basic challenge when it loaded "/", asked
// for a user name and password, and now sends them on every same-origin fetch. This
// script never sees or stores the token.
//
// Every URL this page calls is in API below, and nowhere else: tests/tests/web_ui.rs
// reads this table from the served script and checks each entry against the daemon's
// /openapi.json, so the page cannot drift from the API unnoticed.
"use strict";

// API-TABLE-BEGIN
const API = {
  openapi: { method: "GET", path: "/openapi.json" },
  whoami: { method: "GET", path: "/hearth/v1/whoami" },
  namespaces: { method: "GET", path: "/hearth/v1/namespaces" },
  node: { method: "GET", path: "/hearth/v1/node" },
  queue: { method: "GET", path: "/hearth/v1/queue" },
  jobs: { method: "GET", path: "/apis/batch/v1/namespaces/{namespace}/jobs" },
  createJob: { method: "POST", path: "/apis/batch/v1/namespaces/{namespace}/jobs" },
  job: { method: "GET", path: "/apis/batch/v1/namespaces/{namespace}/jobs/{name}" },
  deleteJob: { method: "DELETE", path: "/apis/batch/v1/namespaces/{namespace}/jobs/{name}" },
  jobLogs: { method: "GET", path: "/hearth/v1/namespaces/{namespace}/jobs/{name}/logs" },
  pipelines: { method: "GET", path: "/apis/v2beta1/pipelines" },
  runs: { method: "GET", path: "/apis/v2beta1/runs" },
  run: { method: "GET", path: "/apis/v2beta1/runs/{run_id}" },
  taskLogs: { method: "GET", path: "/hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/logs" },
  pipeline: { method: "GET", path: "/apis/v2beta1/pipelines/{pipeline_id}" },
  pipelineVersions: { method: "GET", path: "/apis/v2beta1/pipelines/{pipeline_id}/versions" },
  experiment: { method: "GET", path: "/apis/v2beta1/experiments/{experiment_id}" },
  inferenceServices: { method: "GET", path: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices", optional: true },
  inferenceService: { method: "GET", path: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}", optional: true },
  isvcReplicas: { method: "GET", path: "/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/replicas", optional: true },
  isvcLogs: { method: "GET", path: "/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/logs", optional: true },
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

const REFRESH_MS = 4000;

const $ = (id) => document.getElementById(id);

const state = {
  namespace: "",
  paths: null, // the set of path templates in /openapi.json
  runDetail: "", // the run_id whose details are open
  jobDetail: "", // the job name whose details are open
  isvcDetail: "", // the InferenceService name whose details are open
  pipelineDetail: "", // the pipeline_id whose details are open
  experimentDetail: "", // the experiment_id whose details are open
  logAbort: null, // aborts the log stream being shown
  timer: 0,
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
    } else {
      detail = body.detail || body.title || detail;
      if (body.code) detail = `${body.code}: ${detail}`;
    }
  } catch (_) {
    // Not JSON: the status line says enough.
  }
  if (res.status === 401) detail += " (reload the page to log in again)";
  return new ApiError(res.status, `HTTP ${res.status} ${detail}`);
}

// Calls API entry `key`; resolves to the parsed JSON (or text when `text` is set).
async function call(key, { params, query, body, contentType, text, signal } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
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
  if (res.status === 204) return null;
  return text ? res.text() : res.json();
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
  $(id).replaceChildren(...content);
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

function button(label, onclick) {
  return h("button", { type: "button", onclick: (e) => { e.stopPropagation(); onclick(e); } }, label);
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

// --- views -----------------------------------------------------------------------

function renderNode(n) {
  const g = n.gpus || {};
  const gpus = (g.devices || []).map((d) =>
    h("tr", {},
      h("td", {}, d.index),
      h("td", {}, d.name, d.simulated ? h("span", { class: "badge warn" }, " simulated") : ""),
      h("td", {}, meter(d.memory_used_bytes, d.memory_total_bytes), ` ${bytes(d.memory_used_bytes)} / ${bytes(d.memory_total_bytes)}`),
      h("td", {}, `${d.utilization_percent}%`),
      h("td", {}, `${d.temperature_celsius}°C`),
      h("td", {}, `${Math.round(d.power_watts)} W`),
      h("td", {}, d.mig_mode)));
  replace("node",
    dl([
      ["host", n.hostname],
      ["CPUs", n.cpus],
      ["memory", h("span", {}, meter(n.memory_total_bytes - n.memory_available_bytes, n.memory_total_bytes),
        ` ${bytes(n.memory_available_bytes)} free of ${bytes(n.memory_total_bytes)}`)],
      ["disk", h("span", {}, meter(n.disk_total_bytes - n.disk_available_bytes, n.disk_total_bytes),
        ` ${bytes(n.disk_available_bytes)} free of ${bytes(n.disk_total_bytes)} (${n.data_dir})`)],
      ["runtime", n.runtime],
      ["limits", n.limits],
      ["GPUs", `${(g.devices || []).length} from ${g.source}${g.simulated ? " (simulated)" : ""}${g.driver_version ? `, driver ${g.driver_version}` : ""}`],
      ["GPU note", g.reason],
      ["k3s", n.k3s ? `${n.k3s.state}: ${n.k3s.detail}` : ""],
    ]),
    gpus.length ? table(["#", "GPU", "memory", "util", "temp", "power", "MIG"], gpus) : "");
}

function renderQueue(q) {
  const rows = (q.items || []).map((i) =>
    h("tr", {},
      h("td", {}, phase(i.phase)),
      h("td", {}, i.kind),
      h("td", {}, `${i.namespace}/${i.name}`),
      h("td", {}, i.priority),
      h("td", {}, `${i.cpu_millis}m CPU, ${bytes(i.memory_bytes)}, ${i.gpus} GPU`),
      h("td", {}, i.reason || (i.started_at ? `started ${age(i.started_at)}` : `queued ${age(i.created_at)}`))));
  replace("queue",
    h("p", {}, `${q.running} running, ${q.queued} waiting; GPUs ${q.gpus_in_use}/${q.gpus_total} in use${q.gpus_simulated ? " (simulated)" : ""}; `,
      `${q.cpu_millis_capacity / 1000} CPUs, ${bytes(q.memory_bytes_capacity)} memory`),
    table(["phase", "kind", "workload", "class", "asks", "why"], rows, "nothing running or waiting"));
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

function renderPipelines(p) {
  const rows = (p.pipelines || []).map((x) =>
    h("tr", {}, h("td", {}, x.display_name), h("td", {}, h("code", {}, x.pipeline_id)), h("td", {}, x.namespace || "shared"), h("td", {}, age(x.created_at))));
  replace("pipelines", table(["name", "id", "namespace", "created"], rows, "no pipelines"));
}

function renderRuns(r) {
  const rows = (r.runs || []).map((x) =>
    h("tr", { class: "clickable", onclick: () => openRun(x.run_id) },
      h("td", {}, x.display_name),
      h("td", {}, phase(x.state)),
      h("td", {}, age(x.created_at)),
      h("td", {}, x.finished_at ? age(x.finished_at) : ""),
      h("td", {}, x.error ? x.error.message : "")));
  replace("runs", table(["run", "state", "created", "finished", "error"], rows, "no runs in this namespace"));
}

function renderRunDetail(r) {
  const tasks = ((r.run_details && r.run_details.task_details) || []).map((t) =>
    h("tr", {},
      h("td", {}, t.hearth_path || t.display_name),
      h("td", {}, phase(t.state)),
      h("td", {}, t.hearth_kind || ""),
      h("td", {}, t.hearth_cached ? "cached" : t.hearth_attempts ? `${t.hearth_attempts} attempt(s)` : ""),
      h("td", {}, t.start_time ? age(t.start_time) : ""),
      h("td", {}, t.error ? t.error.message : ""),
      h("td", {}, button("logs", () => showTaskLogs(r.run_id, t.task_id, t.display_name)))));
  replace("detail",
    dl([["state", phase(r.state)], ["run id", r.run_id], ["namespace", r.namespace], ["created", r.created_at],
      ["finished", r.finished_at], ["error", r.error ? r.error.message : ""]]),
    h("h3", {}, "Tasks"),
    table(["task", "state", "kind", "", "started", "error", ""], tasks, "no tasks yet"));
}

function renderIsvcs(list) {
  const rows = (list.items || []).map((x) => {
    const s = x.status || {};
    const ready = (s.conditions || []).find((c) => c.type === "Ready");
    const pred = (x.spec && x.spec.predictor) || {};
    const model = pred.model || {};
    const format = (model.modelFormat && model.modelFormat.name) || Object.keys(pred).find((k) => typeof pred[k] === "object") || "";
    const name = x.metadata.name;
    return h("tr", { class: "clickable", onclick: () => openIsvc(name) },
      h("td", {}, name),
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

function renderPipelineDetail(p, versions) {
  const rows = (versions.pipeline_versions || []).map((v) =>
    h("tr", {}, h("td", {}, v.display_name), h("td", {}, h("code", {}, v.pipeline_version_id)), h("td", {}, age(v.created_at))));
  replace("detail",
    dl([["name", p.display_name], ["pipeline id", p.pipeline_id], ["namespace", p.namespace || "shared"],
      ["created", p.created_at], ["description", p.description || ""]]),
    h("h3", {}, "Versions"),
    table(["version", "id", "created"], rows, "no versions"));
}

function renderExperimentDetail(e, runs) {
  const rows = (runs.runs || []).map((x) =>
    h("tr", { class: "clickable", onclick: () => openRun(x.run_id) },
      h("td", {}, x.display_name), h("td", {}, phase(x.state)), h("td", {}, age(x.created_at))));
  replace("detail",
    dl([["name", e.display_name], ["experiment id", e.experiment_id], ["namespace", e.namespace],
      ["created", e.created_at], ["storage", e.storage_state]]),
    h("h3", {}, "Runs"),
    table(["run", "state", "created"], rows, "no runs in this experiment"));
}

// --- actions ---------------------------------------------------------------------

const DETAILS = ["jobDetail", "runDetail", "isvcDetail", "pipelineDetail", "experimentDetail"];

// Opens one detail pane (which: one of DETAILS), closing the others.
async function openDetail(which, id, title) {
  for (const d of DETAILS) state[d] = "";
  state[which] = id;
  $("detail-section").hidden = false;
  $("detail-title").textContent = title;
  await refreshDetail();
}

const openJob = (name) => openDetail("jobDetail", name, `Job ${state.namespace}/${name}`);
const openIsvc = (name) => openDetail("isvcDetail", name, `InferenceService ${state.namespace}/${name}`);
const openRun = (runId) => openDetail("runDetail", runId, `Run ${runId}`);

async function refreshDetail() {
  try {
    if (state.jobDetail) renderJobDetail(await call("job", { params: { namespace: state.namespace, name: state.jobDetail } }));
    else if (state.runDetail) renderRunDetail(await call("run", { params: { run_id: state.runDetail } }));
    else if (state.isvcDetail) {
      const params = { namespace: state.namespace, name: state.isvcDetail };
      const [x, replicas] = await Promise.all([call("inferenceService", { params }), call("isvcReplicas", { params })]);
      renderIsvcDetail(x, replicas);
    } else if (state.pipelineDetail) {
      const params = { pipeline_id: state.pipelineDetail };
      const [p, versions] = await Promise.all([call("pipeline", { params }), call("pipelineVersions", { params })]);
      renderPipelineDetail(p, versions);
    } else if (state.experimentDetail) {
      const id = state.experimentDetail;
      const [e, runs] = await Promise.all([
        call("experiment", { params: { experiment_id: id } }),
        call("runs", { query: { experiment_id: id, sort_by: "created_at desc" } }),
      ]);
      renderExperimentDetail(e, runs);
    }
    clearError("details");
  } catch (e) {
    showError("details", e);
  }
}

function closeDetail() {
  for (const d of DETAILS) state[d] = "";
  $("detail-section").hidden = true;
  clearError("details");
}

async function deleteJob(name) {
  if (!confirm(`Delete job ${state.namespace}/${name}? Running attempts are stopped.`)) return;
  try {
    await call("deleteJob", { params: { namespace: state.namespace, name } });
    if (state.jobDetail === name) closeDetail();
    await refresh();
  } catch (e) {
    showError(`delete ${name}`, e);
  }
}

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
      // Follow the end only when the reader is already there, so scrolling back works.
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
    $("logs-state").textContent = text ? "" : "(no output)";
  } catch (e) {
    $("logs").textContent = "";
    $("logs-state").textContent = e.message;
  }
}

async function createJob() {
  const out = $("job-result");
  out.className = "muted";
  out.textContent = "sending…";
  try {
    const job = await call("createJob", {
      params: { namespace: state.namespace },
      body: $("job-yaml").value,
      contentType: "application/yaml",
    });
    out.className = "ok";
    out.textContent = `created ${job.metadata.namespace}/${job.metadata.name}`;
    await refresh();
  } catch (e) {
    // The problem's detail names the field that was refused.
    out.className = "bad";
    out.textContent = e.message;
  }
}

// --- refresh loop ----------------------------------------------------------------

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

async function refresh() {
  const ns = state.namespace;
  const parts = [
    section("node", async () => renderNode(await call("node"))),
    section("queue", async () => renderQueue(await call("queue"))),
    section("pipelines", async () => renderPipelines(await call("pipelines", { query: { namespace: ns } }))),
  ];
  if (ns) {
    parts.push(
      section("jobs", async () => renderJobs(await call("jobs", { params: { namespace: ns } }))),
      section("runs", async () => renderRuns(await call("runs", { query: { namespace: ns, sort_by: "created_at desc", page_size: "50" } }))),
      refreshDetail(),
    );
    if (state.paths && state.paths.has(API.inferenceServices.path)) {
      parts.push(section("inferenceservices", async () => renderIsvcs(await call("inferenceServices", { params: { namespace: ns } }))));
    }
  }
  await Promise.all(parts);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function schedule() {
  clearTimeout(state.timer);
  if (!$("autorefresh").checked) return;
  state.timer = setTimeout(async () => {
    // A hidden tab does not poll; it catches up when it is shown again.
    if (!document.hidden) await refresh();
    schedule();
  }, REFRESH_MS);
}

function setNamespace(ns) {
  state.namespace = ns;
  closeDetail();
  stopLogs();
  $("logs-section").hidden = true;
  // The namespace is in the fragment so a reload or a shared link keeps it; it is
  // never sent to the server.
  history.replaceState(null, "", `#ns=${encodeURIComponent(ns)}`);
}

async function start() {
  $("namespace").addEventListener("change", async (e) => {
    setNamespace(e.target.value);
    await refresh();
  });
  $("autorefresh").addEventListener("change", schedule);
  $("job-submit").addEventListener("click", createJob);
  $("detail-close").addEventListener("click", closeDetail);
  $("error").addEventListener("click", () => {
    errors.clear();
    renderErrors();
  });
  $("logs-close").addEventListener("click", () => {
    stopLogs();
    $("logs-section").hidden = true;
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });

  try {
    const doc = await call("openapi");
    state.paths = new Set(Object.keys(doc.paths || {}));
  } catch (e) {
    showError("openapi", e);
  }
  // Sections whose routes this daemon does not have are not shown.
  $("isvc-section").hidden = !(state.paths && state.paths.has(API.inferenceServices.path));

  try {
    const me = await call("whoami");
    replace("whoami", `${me.user}`, me.admin ? h("span", { class: "badge warn" }, "admin") : "");
    const list = await call("namespaces");
    const names = (list.items || []).map((n) => n.name);
    const wanted = new URLSearchParams(location.hash.slice(1)).get("ns");
    const ns = names.includes(wanted) ? wanted : (me.namespaces || []).find((n) => names.includes(n)) || names[0] || "";
    replace("namespace", ...names.map((n) => h("option", { value: n, selected: n === ns }, n)));
    setNamespace(ns);
  } catch (e) {
    showError("who am I", e);
  }
  await refresh();
  await openKfpLink();
  window.addEventListener("hashchange", openKfpLink);
  schedule();
}

// Opens what a kfp.Client link names, in its own namespace (read from the object).
async function openKfpLink() {
  const link = kfpLink(location.hash);
  if (!link) return;
  const get = {
    runDetail: ["run", { run_id: link.id }],
    pipelineDetail: ["pipeline", { pipeline_id: link.id }],
    experimentDetail: ["experiment", { experiment_id: link.id }],
  }[link.which];
  try {
    const obj = await call(get[0], { params: get[1] });
    if (obj.namespace && obj.namespace !== state.namespace && [...$("namespace").options].some((o) => o.value === obj.namespace)) {
      $("namespace").value = obj.namespace;
      setNamespace(obj.namespace);
      await refresh();
    }
    const title = { runDetail: "Run", pipelineDetail: "Pipeline", experimentDetail: "Experiment" }[link.which];
    await openDetail(link.which, link.id, `${title} ${obj.display_name || link.id}`);
    clearError("link");
  } catch (e) {
    showError("link", e);
  }
}

start();
