// Small live charts over uPlot (vendored: /ui/uPlot.iife.min.js, MIT), which the page
// loads as a classic script before this module, so `uPlot` is a global here.
// Every chart sizes itself to its container's width.

/* global uPlot */

const WIDTH_FALLBACK = 260;

function widthOf(el) {
  return Math.max(120, Math.floor(el.clientWidth || WIDTH_FALLBACK));
}

// Theme colours from the page's CSS custom properties, so charts follow it.
function colour(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

// A rolling time series: push(values) appends one sample per series (time now).
// `series`: [{label, unit}]; `max`: the y range's top (e.g. 100 for percent).
export function liveChart(el, { series, max, height = 90, keep = 120 }) {
  const palette = [colour("--chart-1", "#2563eb"), colour("--chart-2", "#c2410c"), colour("--chart-3", "#15803d")];
  const data = [[], ...series.map(() => [])];
  const plot = new uPlot({
    width: widthOf(el),
    height,
    legend: { show: true, live: false },
    cursor: { show: false },
    scales: { x: { time: true }, y: { range: [0, max || null] } },
    axes: [{ show: false }, { size: 36, stroke: colour("--muted", "#555"), grid: { stroke: colour("--grid", "#eee") } }],
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: palette[i % palette.length], width: 1.5, value: (u, v) => (v == null ? "–" : `${Math.round(v)}${s.unit || ""}`) }))],
  }, data, el);
  return {
    push(values) {
      data[0].push(Date.now() / 1000);
      values.forEach((v, i) => data[i + 1].push(v));
      if (data[0].length > keep) data.forEach((d) => d.shift());
      plot.setData(data);
    },
    resize() {
      plot.setSize({ width: widthOf(el), height });
    },
    destroy() {
      plot.destroy();
    },
  };
}

// A static chart: x values and one y series per entry of `series`, points and lines.
export function xyChart(el, { xs, series, xLabel, yLabel, height = 220, points = true }) {
  const palette = [colour("--chart-1", "#2563eb"), colour("--chart-2", "#c2410c"), colour("--chart-3", "#15803d")];
  const plot = new uPlot({
    width: widthOf(el),
    height,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false } },
    axes: [{ label: xLabel, stroke: colour("--muted", "#555"), incrs: [1, 2, 5, 10, 20, 50, 100] }, { label: yLabel, stroke: colour("--muted", "#555"), size: 50 }],
    series: [{ label: xLabel }, ...series.map((s, i) => ({ label: s.label, stroke: palette[i % palette.length], width: 1.5, points: { show: points, size: 6 } }))],
  }, [xs, ...series.map((s) => s.values)], el);
  return plot;
}

// Parallel coordinates: one line per row across one vertical axis per column, each
// column scaled to [0, 1] over its own range (uPlot draws each row as a series over
// the axis index). `columns`: names, the objective last; `rows`: {label, values}.
export function parallelCoordinates(el, { columns, rows, height = 240 }) {
  const ranges = columns.map((_, c) => {
    const vs = rows.map((r) => Number(r.values[c])).filter((v) => Number.isFinite(v));
    const lo = Math.min(...vs);
    const hi = Math.max(...vs);
    return [lo, hi === lo ? lo + 1 : hi];
  });
  const xs = columns.map((_, i) => i);
  const objective = rows.map((r) => Number(r.values[columns.length - 1]));
  const [olo, ohi] = ranges[columns.length - 1];
  const shade = (v) => {
    const t = Number.isFinite(v) ? (v - olo) / (ohi - olo) : 0;
    return `hsl(${Math.round(20 + t * 200)}, 70%, 42%)`;
  };
  const series = rows.map((r, i) => ({
    label: r.label,
    stroke: shade(objective[i]),
    width: 1.5,
    points: { show: true, size: 5 },
  }));
  const data = [xs, ...rows.map((r) => r.values.map((v, c) => {
    const n = Number(v);
    return Number.isFinite(n) ? (n - ranges[c][0]) / (ranges[c][1] - ranges[c][0]) : null;
  }))];
  return new uPlot({
    width: widthOf(el),
    height,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false, range: [-0.1, columns.length - 0.9] }, y: { range: [-0.05, 1.05] } },
    axes: [
      { stroke: colour("--muted", "#555"), splits: () => xs, values: () => columns, grid: { stroke: colour("--muted", "#888"), width: 1 } },
      { show: false },
    ],
    series: [{}, ...series],
  }, data, el);
}
