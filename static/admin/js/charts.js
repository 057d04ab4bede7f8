// Small SVG charts drawn by hand: sizes in CSS pixels of their box, colours from CSS variables
// (so both themes follow), a fixed height so polling never moves the layout.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** A round upper bound for an axis of four gridlines: 4 × (1, 2, 5 × 10^n), whole steps. */
export function niceMax(value) {
  const target = Math.max(value / 4, 1);
  const power = 10 ** Math.floor(Math.log10(target));
  for (const step of [1, 2, 5, 10]) if (step * power >= target) return 4 * step * power;
  return 40 * power;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Bars per minute with a y axis and clock times below; the current minute drawn lighter. */
export function drawPerMinute(container, { start, counts }) {
  const width = Math.max(container.clientWidth, 200);
  const height = container.clientHeight || 220;
  const pad = { left: 40, right: 8, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const max = niceMax(Math.max(0, ...counts));
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart-svg" });

  for (let i = 0; i <= 4; i += 1) {
    const value = (max / 4) * i;
    const y = pad.top + plotH - (plotH * i) / 4;
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: i ? "grid" : "axis" }));
    svg.append(el("text", { x: pad.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, formatCount(value)));
  }
  const first = new Date(start);
  const slot = plotW / counts.length;
  const barW = Math.max(slot - 2, 1);
  counts.forEach((count, index) => {
    const h = max ? (plotH * count) / max : 0;
    const x = pad.left + index * slot + (slot - barW) / 2;
    const minute = new Date(first.getTime() + index * 60_000);
    const bar = el("rect", {
      x: x.toFixed(1), y: (pad.top + plotH - h).toFixed(1), width: barW.toFixed(1),
      height: Math.max(h, 0).toFixed(1), rx: Math.min(2, barW / 3),
      class: index === counts.length - 1 ? "bar current" : "bar",
    });
    bar.append(el("title", {}, `${clock(minute)}: ${count} notification${count === 1 ? "" : "s"}`));
    svg.append(bar);
    if (index % 15 === 0 || index === counts.length - 1) {
      const label = index === counts.length - 1 ? "now" : clock(minute);
      const anchor = index === counts.length - 1 ? "end" : "start";
      svg.append(el("text", { x: index === counts.length - 1 ? width - pad.right : x, y: height - 6, class: "tick", "text-anchor": anchor }, label));
    }
  });
  container.replaceChildren(svg);
}

/** A line of recent samples, scaled to its own range; nothing drawn with fewer than two. */
export function drawSparkline(svgNode, values) {
  const width = svgNode.clientWidth || 120;
  const height = svgNode.clientHeight || 28;
  svgNode.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (values.length < 2) {
    svgNode.replaceChildren();
    return;
  }
  const max = Math.max(...values, 1);
  const step = width / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - ((height - 4) * v) / max).toFixed(1)}`);
  const area = el("polygon", { points: `0,${height} ${points.join(" ")} ${width},${height}`, class: "spark-area" });
  svgNode.replaceChildren(area, el("polyline", { points: points.join(" "), class: "spark-line" }));
}

export function formatCount(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(value >= 1e7 ? 0 : 1)}M`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(value >= 1e5 ? 0 : 1)}k`;
  return String(Math.round(value));
}

export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 0.001) return `${(seconds * 1e6).toFixed(0)} µs`;
  if (seconds < 1) return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : seconds < 0.1 ? 1 : 0)} ms`;
  return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
}

/** p50, p95, p99 as bars on one scale (the p99), with their values; the count beside. */
export function drawLatency(container, label, { count, p50, p95, p99 }) {
  const top = p99 || p95 || p50 || 0;
  const rows = [["p50", p50], ["p95", p95], ["p99", p99]].map(([name, value]) => {
    const share = top ? Math.max((value ?? 0) / top, 0.02) : 0;
    return `<div class="lat-row"><span class="lat-name">${name}</span>`
      + `<span class="lat-track"><span class="lat-fill ${name}" style="width:${(share * 100).toFixed(1)}%"></span></span>`
      + `<span class="lat-value">${formatSeconds(value)}</span></div>`;
  });
  container.innerHTML = `<p class="lat-head"><span>${label}</span><span class="hint">${formatCount(count)} observed</span></p>${rows.join("")}`;
}

/** Labelled horizontal bars for counts by name, on the largest's scale; zero rows stay. */
export function drawBars(list, counts, names = {}) {
  const entries = Object.entries(counts);
  const max = Math.max(1, ...entries.map(([, v]) => v));
  const rows = entries.map(([key, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = names[key] ?? key.replaceAll("_", " ");
    const dd = document.createElement("dd");
    dd.dataset.key = key;
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = `bar-fill${value ? "" : " zero"}`;
    fill.style.width = `${((value / max) * 100).toFixed(1)}%`;
    track.append(fill);
    const number = document.createElement("span");
    number.className = "bar-value";
    number.textContent = formatCount(value);
    dd.append(track, number);
    return [dt, dd];
  });
  list.replaceChildren(...rows.flat());
}
