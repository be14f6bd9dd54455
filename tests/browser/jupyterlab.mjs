// Headless Chromium (Debian's `chromium`, driven by playwright-core: no browser
// download) logs in to Hearth through its session route, then loads JupyterLab through
// the notebook proxy and runs a notebook cell. Called by tests/python/notebooks with
// HEARTH_API, HEARTH_TOKEN, NOTEBOOK_PATH (/notebook/{ns}/{name}/) and NOTEBOOK_FILE.
import { chromium } from "playwright-core";

const api = process.env.HEARTH_API;
const token = process.env.HEARTH_TOKEN;
const base = process.env.NOTEBOOK_PATH;
const file = process.env.NOTEBOOK_FILE;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(90_000);
  // Any same-origin page, then the login a web page makes: the browser keeps the
  // HttpOnly cookie, the page never sees the token again.
  await page.goto(`${api}/healthz`);
  const login = await page.evaluate(async (token) => {
    const r = await fetch("/hearth/v1/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    return { status: r.status, cookieVisible: document.cookie.includes("hearth_session") };
  }, token);
  if (login.status !== 201) throw new Error(`login answered ${login.status}`);
  if (login.cookieVisible) throw new Error("the session cookie is readable from script");

  await page.goto(`${api}${base}lab/tree/${file}`);
  await page.waitForSelector(".jp-LabShell");
  const cell = page.locator(".jp-Notebook .jp-Cell").first();
  await cell.waitFor();
  // Run the first cell until its output shows (the kernel may still be starting).
  const output = page.locator(".jp-Notebook .jp-OutputArea-output").first();
  const deadline = Date.now() + 90_000;
  let text = "";
  while (Date.now() < deadline) {
    await cell.locator(".jp-InputArea-editor").click();
    await page.keyboard.press("Shift+Enter");
    try {
      await output.waitFor({ timeout: 10_000 });
      text = await output.innerText();
      if (text.includes("42")) break;
    } catch {
      // not yet
    }
  }
  if (!text.includes("42")) throw new Error(`no cell output 42 (got ${JSON.stringify(text)})`);
  console.log(JSON.stringify({ lab: true, output: text.trim() }));
} finally {
  await browser.close();
}
