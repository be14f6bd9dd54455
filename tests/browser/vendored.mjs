// The libraries vendored under web/vendor/ must be, byte for byte, the files of the
// npm packages that package-lock.json pins (npm ci installs them into node_modules,
// checking the lock's integrity hashes): a hand edit or a stale copy fails here.
// Run by scripts/test after `npm ci`; `node tests/browser/vendored.mjs`.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const web = resolve(here, "../../web/vendor");
const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));

// vendored file -> [package, file inside the package]
const VENDORED = {
  "uPlot.iife.min.js": ["uplot", "dist/uPlot.iife.min.js"],
  "uPlot.min.css": ["uplot", "dist/uPlot.min.css"],
  "LICENSE.uplot": ["uplot", "LICENSE"],
  "dagre.esm.js": ["@dagrejs/dagre", "dist/dagre.esm.js"],
  "LICENSE.dagre": ["@dagrejs/dagre", "LICENSE"],
};

const sha256 = (path) => createHash("sha256").update(readFileSync(path)).digest("hex");
const problems = [];
const checked = {};
for (const [file, [pkg, inner]] of Object.entries(VENDORED)) {
  const locked = lock.packages[`node_modules/${pkg}`];
  if (!locked) {
    problems.push(`${pkg} is not in package-lock.json`);
    continue;
  }
  const installed = JSON.parse(readFileSync(join(here, "node_modules", pkg, "package.json"), "utf8")).version;
  if (installed !== locked.version) problems.push(`node_modules has ${pkg} ${installed}, the lock names ${locked.version} (run npm ci)`);
  const want = sha256(join(here, "node_modules", pkg, inner));
  const got = sha256(join(web, file));
  if (want !== got) problems.push(`web/vendor/${file} differs from ${pkg}@${locked.version}/${inner}`);
  checked[file] = `${pkg}@${locked.version}`;
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify({ vendored: checked }));
