// The web dashboard end to end: a real `hearth serve` (simulated GPUs, real
// workloads) driven through Debian's chromium by playwright-core (no browser
// download). Fails on any console error, failed request or unexpected HTTP error,
// on a serious or critical axe-core finding, and when a page's main flow breaks.
// Screenshots go to $SCREENSHOTS (default target/browser-screenshots) at 1280x800
// and 390 px wide.
//
//   HEARTH_BIN=target/debug/hearth node tests/browser/dashboard.mjs
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const bin = process.env.HEARTH_BIN || join(root, "target/debug/hearth");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = process.env.SCREENSHOTS || join(root, "target/browser-screenshots");
mkdirSync(shots, { recursive: true });

function fail(msg) {
  throw new Error(msg);
}

// --- the daemon ----------------------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), "hearth-dashboard-"));
// NOTEBOOK_PATH_PREFIX: a bin directory with jupyter-lab (scripts/test passes
// .venv-notebooks/bin), found as an installation finds it through PATH.
const jupyterBin = process.env.NOTEBOOK_PATH_PREFIX;
if (!jupyterBin) fail("set NOTEBOOK_PATH_PREFIX to a bin directory holding jupyter-lab (e.g. .venv-notebooks/bin)");
writeFileSync(join(dir, "config.toml"), `[gpu]\nsimulate = 2\n[isolation]\nenabled = false\n[workloads]\npath_prefix = ${JSON.stringify(jupyterBin)}\n[notebooks]\nenable_culling = false\n`);
const daemon = spawn(bin, ["serve", "--config", join(dir, "config.toml"), "--data-dir", join(dir, "data"),
  "--listen", "127.0.0.1:0", "--serving-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"], {
  stdio: ["ignore", "ignore", "pipe"],
  env: { ...process.env, NOTIFY_SOCKET: "", WATCHDOG_USEC: "" },
});
// However this script ends, the daemon ends with it.
process.on("exit", () => daemon.kill("SIGTERM"));
let daemonLog = "";
daemon.stderr.on("data", (b) => { daemonLog += b; });

async function until(what, fn, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const addr = await until("hearth.addr", () => {
  const f = join(dir, "data/hearth.addr");
  if (!existsSync(f)) return null;
  const a = JSON.parse(readFileSync(f, "utf8"));
  return a.pid === daemon.pid ? a : null;
});
const api = `http://${addr.api}`;
const admin = readFileSync(join(dir, "data/admin.token"), "utf8").trim();

async function rest(method, path, token, body, type = "application/json") {
  const res = await fetch(`${api}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": type } : {}) },
    body: body && type === "application/json" ? JSON.stringify(body) : body,
  });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const user = async (name) => (await rest("POST", "/hearth/v1/users", admin, { name })).token.token;
const alice = await user("alice");
const bob = await user("bob");

// Real workloads in alice's namespace: a Job that holds a GPU, and one that waits
// for more GPUs than there are (the queue shows why).
const job = (name, gpus, cmd) => `apiVersion: batch/v1
kind: Job
metadata: {name: ${name}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: [sh, -c, "${cmd}"]
        resources: {limits: {nvidia.com/gpu: ${gpus}}}
`;
await rest("POST", "/apis/batch/v1/namespaces/alice/jobs", alice, job("holder", 1, "echo holding; sleep 600"), "application/yaml");
await rest("POST", "/apis/batch/v1/namespaces/alice/jobs", alice, job("greedy", 2, "echo never"), "application/yaml");
// A real service: a custom predictor (a tiny HTTP server) in alice's namespace.
const server = [
  "import http.server, json, os",
  "class H(http.server.BaseHTTPRequestHandler):",
  "    def do_POST(self):",
  "        self.rfile.read(int(self.headers.get('content-length') or 0))",
  "        version = os.environ.get('VERSION', '1')",
  "        doc = {'predictions': [version]}",
  "        if self.path.endswith('/infer'):",
  "            doc = {'model_name': 'echo', 'outputs': [{'name': 'version', 'datatype': 'BYTES', 'shape': [1], 'data': [version]}]}",
  "        if self.command == 'GET' and self.path == '/v2/models/echo':",
  "            doc = {'name': 'echo', 'platform': 'python', 'inputs': [{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 3]}],",
  "                   'outputs': [{'name': 'version', 'datatype': 'BYTES', 'shape': [-1]}]}",
  "        body = json.dumps(doc).encode()",
  "        self.send_response(200)",
  "        self.send_header('content-type', 'application/json')",
  "        self.send_header('content-length', str(len(body)))",
  "        self.end_headers()",
  "        self.wfile.write(body)",
  "    do_GET = do_POST",
  "    def log_message(self, *args):",
  "        pass",
  "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()",
].join("\n");
const isvc = (version, canary) => ({
  apiVersion: "serving.kserve.io/v1beta1",
  kind: "InferenceService",
  metadata: { name: "echo" },
  spec: { predictor: { minReplicas: 1, ...(canary ? { canaryTrafficPercent: canary } : {}), containers: [{
    name: "kserve-container", image: "example/echo:latest", command: ["python3", "-c", server],
    env: [{ name: "VERSION", value: version }],
  }] } },
});
await rest("POST", "/apis/serving.kserve.io/v1beta1/namespaces/alice/inferenceservices", alice, isvc("1"));

// Bob's own job: alice must never see it.
await rest("POST", "/apis/batch/v1/namespaces/bob/jobs", bob, job("bobs-secret", 0, "sleep 600"), "application/yaml");

// --- the browser -----------------------------------------------------------------------

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
const problems = [];
const results = {};

// A page that records every console error, failed request and HTTP error answer;
// `allowed(url, status)` names the answers a step expects.
async function watchedPage(context, label, allowed = () => false) {
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // Chromium logs every 4xx answer as a console error too; expected ones are allowed.
    const loc = m.location();
    if (/Failed to load resource/.test(m.text()) && loc && allowed(loc.url, null)) return;
    problems.push(`${label}: console error: ${m.text()} ${loc ? loc.url : ""}`);
  });
  page.on("pageerror", (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    const why = r.failure() ? r.failure().errorText : "";
    // A watch or log stream that the page aborts on navigation is not a failure.
    if (why === "net::ERR_ABORTED" && /watch=1|follow=true/.test(r.url())) return;
    problems.push(`${label}: request failed: ${r.method()} ${r.url()} ${why}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && !allowed(r.url(), r.status())) problems.push(`${label}: HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
    if (!r.url().startsWith(api)) problems.push(`${label}: a request left the daemon: ${r.url()}`);
  });
  current = page;
  return page;
}

let current = null;
async function screenshot(page, name) {
  for (const [w, h] of [[1280, 800], [390, 844]]) {
    await page.setViewportSize({ width: w, height: h });
    await page.waitForTimeout(150);
    await page.screenshot({ path: join(shots, `${name}-${w}.png`), fullPage: w === 390 });
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

async function login(page, token) {
  await page.goto(`${api}/`);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#logout");
}

try {
  // 1. Login flow ------------------------------------------------------------------------
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    // The bad token's 401 is the one error answer this step expects.
    const page = await watchedPage(context, "login", (u, s) =>
      (u.endsWith("/hearth/v1/session") && (s === 401 || s === null)) || (u.endsWith("/jobs/holder") && (s === 403 || s === null)));
    let dialogs = 0;
    page.on("dialog", (d) => { dialogs++; d.dismiss(); });
    const first = await page.goto(`${api}/`);
    if (first.status() !== 200) fail(`GET / without credentials answered ${first.status()}`);
    await page.waitForSelector("#login-form");
    await screenshot(page, "login");
    await page.fill("#token", "hth_not-a-real-token");
    await page.click("button[type=submit]");
    await page.waitForSelector("#login-error:not([hidden])");
    const msg = await page.textContent("#login-error");
    if (!/not accepted/.test(msg)) fail(`bad token message: ${msg}`);
    await page.fill("#token", alice);
    await page.click("button[type=submit]");
    await page.waitForSelector("#logout");
    const cookies = await context.cookies();
    const c = cookies.find((x) => x.name === "hearth_session");
    if (!c || !c.httpOnly || c.sameSite !== "Strict") fail(`session cookie ${JSON.stringify(c)}`);
    if (await page.evaluate(() => document.cookie.includes("hearth_session"))) fail("the session cookie is readable from script");
    // A cookie-authenticated state change without the CSRF header is refused.
    const csrf = await page.evaluate(async () => {
      const r = await fetch("/apis/batch/v1/namespaces/alice/jobs/holder", { method: "DELETE" });
      await r.text();
      return r.status;
    });
    if (csrf !== 403) fail(`DELETE without X-Hearth-CSRF answered ${csrf}`);
    await page.waitForSelector("#queue table");
    await page.waitForLoadState("networkidle").catch(() => {});
    await page.click("#logout");
    await page.waitForSelector("#login-form");
    // The old session is gone on the server: the same cookie no longer works.
    const replay = await fetch(`${api}/hearth/v1/whoami`, { headers: { Cookie: `hearth_session=${c.value}` } });
    if (replay.status !== 401) fail(`a logged-out session still answers ${replay.status}`);
    if (dialogs) fail("the browser showed a dialog (password prompt?)");
    results.login = "ok";
    await context.close();
  }

  // 2. Namespaces: alice's cookie never shows bob's namespace --------------------------
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await watchedPage(context, "isolation", (u, s) => u.includes("/namespaces/bob/") && (s === 403 || s === null));
    await login(page, alice);
    const options = await page.$$eval("#namespace option", (os) => os.map((o) => o.value));
    if (options.includes("bob")) fail(`alice sees namespace bob: ${options}`);
    await page.waitForSelector("#queue table");
    const queueText = await page.textContent("#queue");
    if (queueText.includes("bobs-secret")) fail("alice's queue shows bob's job");
    const peek = await page.evaluate(async () => {
      const r = await fetch("/apis/batch/v1/namespaces/bob/jobs");
      await r.text();
      return r.status;
    });
    if (peek !== 403) fail(`alice's cookie read bob's jobs: ${peek}`);
    results.isolation = "ok";
    await context.close();
  }

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // 3. Overview ---------------------------------------------------------------------------
  {
    const page = await watchedPage(context, "overview");
    await login(page, alice);
    await page.waitForSelector("[data-gpu] .uplot");
    const cards = await page.$$("[data-gpu]");
    if (cards.length !== 2) fail(`${cards.length} GPU cards, want 2`);
    const simulated = await page.$$eval("[data-gpu] .badge", (b) => b.filter((x) => x.textContent === "simulated").length);
    if (simulated !== 2) fail("the simulated flag is not shown on each GPU");
    await until("a GPU held by the holder job", async () => (await page.textContent("#gpus")).includes("Job alice/holder"));
    await until("the waiting job with its reason", async () => {
      const q = await page.textContent("#queue");
      return q.includes("Job alice/greedy") && /GPU/i.test(q.split("Job alice/greedy")[1] || "");
    });
    // Live: a new job appears without a reload (the pods watch).
    await rest("POST", "/apis/batch/v1/namespaces/alice/jobs", alice, job("latecomer", 0, "sleep 30"), "application/yaml");
    await until("the new job on the overview", async () => (await page.textContent("#queue")).includes("Job alice/latecomer"), 15_000);
    await screenshot(page, "overview");
    results.overview = "ok";

    // 4. Pipelines: upload, run with the form, DAG with live states, logs, artifacts ---
    await page.click('nav a[href="#/pipelines"]');
    await page.waitForSelector("#pipelines");
    await page.setInputFiles("#upload-file", join(here, "fixtures/dag-pipeline.yaml"));
    await page.fill("#upload-name", "dag-demo");
    await page.click("#upload-form button[type=submit]");
    await page.waitForSelector("#pipelines button[aria-label='Run dag-demo']");
    await page.click("#pipelines button[aria-label='Run dag-demo']");
    await page.waitForSelector("#param-epochs");
    if ((await page.inputValue("#param-epochs")) !== "3") fail("the run form lacks the default of epochs");
    await page.fill("#param-epochs", "7");
    await page.fill("#param-message", "from the browser");
    await page.click("#run-form button[type=submit]");
    await page.waitForSelector("#run-dag svg.dag");
    const boxes = await page.$$eval("#run-dag .dag-node", (n) => n.map((x) => x.dataset.task).sort());
    if (boxes.join() !== "evaluate,prepare,report,train") fail(`DAG nodes ${boxes}`);
    const edges = await page.$$("#run-dag .dag-edge");
    if (edges.length !== 3) fail(`${edges.length} DAG edges, want 3`);
    // Live task states: every box turns SUCCEEDED without a reload.
    await until("every task SUCCEEDED", async () => (await page.$$("#run-dag .dag-succeeded")).length === 4, 90_000);
    await page.click("#run-dag [data-task='train']");
    await until("train's log", async () => (await page.textContent("#logs")).includes("training for 7 epochs"));
    await page.click("#run-tasks button[aria-label='Artifacts of train']");
    await until("the metrics preview", async () => (await page.textContent("#artifacts-list")).includes("\"accuracy\": 0.93"));
    const href = await page.getAttribute("#artifacts-list a[download]", "href");
    const dl = await page.evaluate(async (u) => (await fetch(u)).status, href);
    if (dl !== 200) fail(`artifact download answered ${dl}`);
    await screenshot(page, "pipelines-run");
    // Recurring runs: the same form with "repeat", then delete.
    await page.click('nav a[href="#/pipelines"]');
    await page.click("#pipelines button[aria-label='Run dag-demo']");
    await page.waitForSelector("#param-epochs");
    await page.fill("#run-name", "nightly");
    await page.check("#run-repeat");
    await page.fill("#run-cron", "0 0 3 * * *");
    await page.click("#run-form button[type=submit]");
    await until("the recurring run listed", async () => (await page.textContent("#recurring")).includes("0 0 3 * * *"));
    page.once("dialog", (d) => d.accept());
    await page.click("#recurring button[aria-label='Delete nightly']");
    await until("the recurring run gone", async () => !(await page.textContent("#recurring")).includes("nightly"));
    results.pipelines = "ok";

    // 5. Jobs: the list and a job's log ----------------------------------------------
    await page.click('nav a[href="#/jobs"]');
    await page.waitForSelector("#jobs table");
    await screenshot(page, "jobs");
    results.jobs = "ok";
    // 6. Experiments: create from the YAML box, trials table sorted, charts, best trial.
    await page.click('nav a[href="#/experiments"]');
    await page.waitForSelector("#tab-experiments:not([hidden]) #experiments p.muted");
    await screenshot(page, "experiments-empty");
    await page.click("#tab-experiments summary");
    await page.click("#experiment-submit");
    await page.waitForSelector("#experiment-detail:not([hidden])");
    await until("six trials and a finished experiment", async () => {
      const rows = await page.$$("#experiment-body table.trials tbody tr");
      const text = await page.textContent("#experiment-body dl");
      return rows.length === 6 && /Succeeded/.test(text);
    }, 120_000);
    await page.waitForSelector("#experiment-body .uplot >> nth=1");
    await page.click("#experiment-body button[data-sort='accuracy']");
    await page.waitForSelector("#experiment-body th[aria-sort='ascending'] button[data-sort='accuracy']");
    await page.click("#experiment-body button[data-sort='accuracy']");
    await page.waitForSelector("#experiment-body th[aria-sort='descending'] button[data-sort='accuracy']");
    const bestName = (/best trial\s*(\S+):/.exec(await page.textContent("#experiment-body dl")) || [])[1];
    if (!bestName) fail("no best trial shown");
    const firstRow = await page.textContent("#experiment-body table.trials tbody tr:first-child td:first-child");
    if (!firstRow.startsWith(bestName)) fail(`the best trial ${bestName} is not first when sorted by accuracy descending (${firstRow})`);
    await screenshot(page, "experiment");
    results.experiments = "ok";

    // 7. Notebooks: the spawner form, connect, stop, start, delete.
    await page.click('nav a[href="#/notebooks"]');
    await page.waitForSelector("#tab-notebooks:not([hidden]) #notebooks p.muted");
    await page.fill("#nb-name", "scratch");
    await page.fill("#nb-cpu", "0.2");
    await page.fill("#nb-memory", "512Mi");
    await page.fill("#nb-gpus", "0");
    await page.fill("#nb-workspace", "scratch-ws");
    await page.click("#nb-form button[type=submit]");
    const row = "#notebooks tr[data-notebook='scratch']";
    await page.waitForSelector(`${row} a.button`, { timeout: 120_000 });
    const lab = await page.getAttribute(`${row} a.button`, "href");
    const connect = await page.evaluate(async (u) => {
      const r = await fetch(u);
      const text = await r.text();
      return { status: r.status, lab: /jupyter/i.test(text) };
    }, lab);
    if (connect.status !== 200 || !connect.lab) fail(`Connect ${lab}: ${JSON.stringify(connect)}`);
    await screenshot(page, "notebooks");
    await page.click(`${row} button[aria-label='Stop scratch']`);
    await page.waitForSelector(`${row} button[aria-label='Start scratch']`, { timeout: 60_000 });
    await page.click(`${row} button[aria-label='Start scratch']`);
    await page.waitForSelector(`${row} a.button`, { timeout: 120_000 });
    page.once("dialog", (d) => d.accept());
    await page.click(`${row} button[aria-label='Delete scratch']`);
    await page.waitForSelector(row, { state: "detached", timeout: 60_000 });
    results.notebooks = "ok";

    // 8. Serving: a canary revision, the traffic split moved with the slider, and the
    //    request rate, latency and replica charts from the daemon's metrics.
    const isvcPath = "/apis/serving.kserve.io/v1beta1/namespaces/alice/inferenceservices/echo";
    await until("echo Ready", async () => {
      const x = await rest("GET", isvcPath, alice);
      return ((x.status || {}).conditions || []).some((c) => c.type === "Ready" && c.status === "True");
    }, 120_000);
    const current = await rest("GET", isvcPath, alice);
    const next = isvc("2", 20);
    next.metadata.resourceVersion = current.metadata.resourceVersion;
    await rest("PUT", isvcPath, alice, next);
    await until("the canary revision takes 20 %", async () => {
      const x = await rest("GET", isvcPath, alice);
      const traffic = (((x.status || {}).components || {}).predictor || {}).traffic || [];
      return traffic.length === 2 && traffic.some((t) => t.percent === 20);
    }, 120_000);
    const [sHost, sPort] = addr.serving.split(":");
    const hit = async (n) => {
      for (let i = 0; i < n; i++) {
        const r = await fetch(`http://${sHost}:${sPort}/v1/models/echo:predict`, { method: "POST", headers: { Host: "echo.alice.example.com", "Content-Type": "application/json" }, body: "{\"instances\": [[1]]}" });
        await r.text();
      }
    };
    await page.click('nav a[href="#/serving"]');
    await page.click("#isvcs button[aria-label='Open echo']");
    await page.waitForSelector("#detail #canary");
    const shares = await page.textContent("#detail");
    if (!/20 %/.test(shares) || !/80 %/.test(shares)) fail(`traffic split not shown: ${shares}`);
    await hit(20);
    await page.waitForTimeout(5500);
    await hit(20);
    await until("request rate charted", async () => (await page.$$("#isvc-metrics .uplot")).length === 3, 10_000);
    await page.$eval("#canary", (el) => { el.value = "50"; el.dispatchEvent(new Event("input")); el.dispatchEvent(new Event("change")); });
    await until("the slider moved the split to 50 %", async () => {
      const x = await rest("GET", isvcPath, alice);
      const traffic = (((x.status || {}).components || {}).predictor || {}).traffic || [];
      return x.spec.predictor.canaryTrafficPercent === 50 && traffic.some((t) => t.percent === 50);
    }, 60_000);
    await until("the page shows 50 %", async () => (await page.textContent("#detail")).includes("50 %"), 15_000);
    // The try-it form: its example shaped from the model's V2 metadata, a V1 predict
    // and a V2 infer through the API's same-origin route, each answered by the model
    // (the revision that answered says which version's prediction it must be), and a
    // body that is not JSON refused in the page.
    await page.waitForSelector("#isvc-try:not([hidden])");
    await until("the example shaped from the V2 metadata", async () =>
      JSON.stringify(JSON.parse(await page.inputValue("#try-body"))) === JSON.stringify({ instances: [[0, 0, 0]] }), 15_000);
    const tryAnswer = async () => {
      await page.click("#try-form button[type=submit]");
      await until("a try-it answer", async () => /HTTP \d+/.test(await page.textContent("#try-status")), 30_000);
      const status = await page.textContent("#try-status");
      const body = JSON.parse(await page.textContent("#try-answer"));
      const revision = /echo-predictor-0000(\d)/.exec(status);
      if (!/HTTP 200/.test(status) || !revision) fail(`try-it status: ${status}`);
      return [body, revision[1], status];
    };
    const [v1, v1Revision] = await tryAnswer();
    if (JSON.stringify(v1) !== JSON.stringify({ predictions: [v1Revision] })) fail(`V1 try-it answer: ${JSON.stringify(v1)}`);
    await page.check("input[name=try-protocol][value=v2]");
    if ((await page.inputValue("#try-call")) !== "v2_infer") fail("V2 does not default to infer");
    const v2Example = JSON.parse(await page.inputValue("#try-body"));
    if (JSON.stringify(v2Example.inputs[0].shape) !== "[1,3]") fail(`V2 example: ${JSON.stringify(v2Example)}`);
    await page.$eval("#try-status", (el) => { el.textContent = ""; });
    const [v2, v2Revision] = await tryAnswer();
    if (v2.model_name !== "echo" || JSON.stringify(v2.outputs[0].data) !== JSON.stringify([v2Revision])) fail(`V2 try-it answer: ${JSON.stringify(v2)}`);
    await page.fill("#try-body", "{\"inputs\": [");
    await page.click("#try-form button[type=submit]");
    await until("a readable refusal of a body that is not JSON", async () => /not JSON/.test(await page.textContent("#try-status")), 5_000);
    await page.check("input[name=try-protocol][value=v1]");
    await page.$eval("#try-status", (el) => { el.textContent = ""; });
    await tryAnswer();
    await page.waitForTimeout(5500);
    await screenshot(page, "serving");
    results.serving = "ok";
  }

  // 8. Accessibility: axe-core on each page (CSP bypassed only in this context, to
  //    inject axe; the pages above ran under the daemon's CSP). ---------------------
  {
    const axeContext = await browser.newContext({ viewport: { width: 1280, height: 800 }, bypassCSP: true });
    const page = await watchedPage(axeContext, "axe");
    const axe = join(here, "node_modules/axe-core/axe.min.js");
    await page.goto(`${api}/`);
    await page.addScriptTag({ path: axe });
    const check = async (name) => {
      const r = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ["violations"] })).violations
        .filter((v) => v.impact === "serious" || v.impact === "critical")
        .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`));
      if (r.length) problems.push(`axe on ${name}: ${r.join("; ")}`);
    };
    await check("login");
    await page.fill("#token", alice);
    await page.click("button[type=submit]");
    await page.waitForSelector("#logout");
    await page.waitForSelector("[data-gpu] .uplot");
    await page.addScriptTag({ path: axe });
    await check("overview");
    for (const tab of ["pipelines", "jobs", "serving", "experiments", "experiments/random-search", "notebooks"]) {
      await page.evaluate((t) => { location.hash = `#/${t}`; }, tab);
      await page.waitForTimeout(500);
      await check(tab);
    }
    // A service open: its detail, traffic charts and the try-it form with an answer.
    await page.evaluate(() => { location.hash = "#/serving"; });
    await page.click("#isvcs button[aria-label='Open echo']");
    await page.waitForSelector("#isvc-try:not([hidden])");
    await page.click("#try-form button[type=submit]");
    await page.waitForSelector("#try-answer:not([hidden])");
    await check("serving, a service open");
    results.axe = "ok";
    await axeContext.close();
  }
  await context.close();
} catch (e) {
  problems.push(`flow: ${e.stack || e}`);
  if (current) await current.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
  daemon.kill("SIGTERM");
}

if (problems.length) {
  console.error(problems.join("\n"));
  if (process.env.DASHBOARD_DAEMON_LOG) console.error(daemonLog.slice(-4000));
  process.exit(1);
}
rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify({ dashboard: results, screenshots: shots }));
