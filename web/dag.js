// A pipeline run's DAG: dagre (vendored: /ui/dagre.esm.js, MIT) lays the tasks out,
// and each task is drawn as an SVG box coloured by its state (CSS classes `dag-*`).
import dagre from "/ui/dagre.esm.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 168;
const NODE_H = 44;

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function shorten(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

// nodes: [{id, label, state}]; edges: [[from, to]]; onSelect(id) when a box is chosen.
export function drawDag(container, nodes, edges, onSelect) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 36, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
  for (const [a, b] of edges) if (g.hasNode(a) && g.hasNode(b)) g.setEdge(a, b);
  dagre.layout(g);
  const { width, height } = g.graph();
  const svg = el("svg", { width: Math.ceil(width), height: Math.ceil(height), viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, role: "img", class: "dag", "aria-label": `pipeline graph of ${nodes.length} tasks` });
  svg.append(el("title", {}, `pipeline graph: ${nodes.map((n) => `${n.label} ${n.state || ""}`).join(", ")}`));
  const defs = el("defs");
  const marker = el("marker", { id: "dag-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "dag-arrow" }));
  defs.append(marker);
  svg.append(defs);
  for (const e of g.edges()) {
    const pts = g.edge(e).points;
    const d = pts.map((p, i) => `${i ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
    svg.append(el("path", { d, class: "dag-edge", "marker-end": "url(#dag-arrow)" }));
  }
  for (const n of nodes) {
    const p = g.node(n.id);
    const state = (n.state || "PENDING").toLowerCase();
    const box = el("g", { class: `dag-node dag-${state}`, transform: `translate(${p.x - NODE_W / 2}, ${p.y - NODE_H / 2})`, tabindex: 0, role: "button", "data-task": n.id, "aria-label": `${n.label}: ${n.state || "PENDING"}` });
    box.append(el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    box.append(el("text", { x: 10, y: 18, class: "dag-label" }, shorten(n.label, 22)));
    box.append(el("text", { x: 10, y: 34, class: "dag-state" }, n.state || "PENDING"));
    if (onSelect) {
      box.addEventListener("click", () => onSelect(n.id));
      box.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") onSelect(n.id);
      });
    }
    svg.append(box);
  }
  container.replaceChildren(svg);
  return svg;
}
