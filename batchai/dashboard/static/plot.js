// A sweep's objective per trial and the best so far, drawn as SVG (no library).
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function ticks(low, high, count) {
  if (low === high) return [low];
  const step = (high - low) / (count - 1);
  return Array.from({ length: count }, (_, i) => low + i * step);
}

function label(value) {
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return value.toExponential(2);
  return Number(value.toPrecision(4)).toString();
}

// trials: [{number, objective, state}]; goal: "minimize" | "maximize"
export function objectivePlot(trials, goal, metric) {
  const W = Math.min(640, Math.max(320, document.documentElement.clientWidth - 40)); // its own width: legible text on a phone
  const H = W < 500 ? 260 : 300;
  const m = { left: 64, right: 16, top: 30, bottom: 44 };
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": `${metric} per trial` });
  const done = trials.filter((t) => typeof t.objective === "number").sort((a, b) => a.number - b.number);
  if (!done.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "plot-empty" }, "No trial has reported its objective yet."));
    return svg;
  }
  const xs = done.map((t) => t.number);
  const ys = done.map((t) => t.objective);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const X = (x) => m.left + ((x - x0) / (x1 - x0)) * (W - m.left - m.right);
  const Y = (y) => H - m.bottom - ((y - y0) / (y1 - y0)) * (H - m.top - m.bottom);

  const axes = el("g", { class: "axes" });
  axes.append(el("line", { x1: m.left, y1: H - m.bottom, x2: W - m.right, y2: H - m.bottom }));
  axes.append(el("line", { x1: m.left, y1: m.top, x2: m.left, y2: H - m.bottom }));
  for (const v of ticks(y0 + pad, y1 - pad, 5)) {
    axes.append(el("line", { x1: m.left, y1: Y(v), x2: W - m.right, y2: Y(v), class: "grid" }));
    axes.append(el("text", { x: m.left - 6, y: Y(v) + 4, "text-anchor": "end" }, label(v)));
  }
  const xt = [...new Set(ticks(x0, x1, Math.min(8, x1 - x0 + 1)).map(Math.round))];
  for (const v of xt) axes.append(el("text", { x: X(v), y: H - m.bottom + 16, "text-anchor": "middle" }, String(v)));
  axes.append(el("text", { x: (m.left + W - m.right) / 2, y: H - 6, "text-anchor": "middle" }, "trial"));
  axes.append(el("text", { x: 14, y: (m.top + H - m.bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(m.top + H - m.bottom) / 2})` }, metric));
  svg.append(axes);

  const better = goal === "maximize" ? Math.max : Math.min;
  let best = null;
  const steps = [];
  for (const t of done) {
    best = best === null ? t.objective : better(best, t.objective);
    steps.push([X(t.number), Y(best)]);
  }
  const d = steps.map(([x, y], i) => (i === 0 ? `M${x},${y}` : `H${x}V${y}`)).join("");
  svg.append(el("path", { d, class: "best" }));
  for (const t of done) {
    const dot = el("circle", { cx: X(t.number), cy: Y(t.objective), r: 4, class: `trial ${t.state === "early terminated" ? "pruned" : ""}` });
    dot.append(el("title", {}, `trial ${t.number}: ${label(t.objective)} (${t.state})`));
    svg.append(dot);
  }
  const legend = el("g", { class: "legend", transform: `translate(${m.left},4)` });
  legend.append(el("circle", { cx: 6, cy: 8, r: 4, class: "trial" }));
  legend.append(el("text", { x: 16, y: 12 }, "a trial's objective"));
  legend.append(el("line", { x1: 140, y1: 8, x2: 160, y2: 8, class: "best" }));
  legend.append(el("text", { x: 166, y: 12 }, "best so far"));
  svg.append(legend);
  return svg;
}
