// The dashboard's scatter: a canvas chart with lasso, box and click selection, hover, pan and
// zoom, drawn over a density image of every row. No library: a few hundred lines keep the page
// free of a multi-megabyte chart bundle (see docs/dashboard.md, "Speed").
//
// Python sends the spec built by dashboard/scatter.py as `data`; the chart reports the drawn
// shape as the state value `selection`, in data coordinates:
//   {lasso: [{x: [...], y: [...]}]} | {box: [{x: [x0, x1], y: [y0, y1]}]}
//   | {points: [{customdata: id}, ...]} | {} (cleared by "Clear selection", a double-click or Esc)
// The server applies that shape to every filtered row, not only to the drawn sample.
// `data.shape` is the shape to show on a new chart, or "keep": the chart keeps its own.
//
// Test hooks on the root element: data-ready="1" once the points are drawn, data-mode,
// data-selection (the shape the chart shows, as JSON) and data-marked (the id of the open example
// the chart marks, `data.marked`). The element `.dm-plot` covers exactly the
// plot area (the axes' rectangle) and receives the pointer events.

const MARGIN = { left: 62, top: 34, bottom: 46 };
const CLICK_PX = 6; // a press that moves less than this is a click
const PICK_PX = 8; // how close the pointer must be to a point to hover or click it
const MIN_LASSO_PX2 = 50; // a smaller lasso (in square pixels) is a slip, not a selection
const DBLCLICK_MS = 250; // a click waits this long for a second one (a double-click clears)
const MEMORY = new Map(); // component key -> { view, zoomed, mode }, kept across reruns
const IMAGES = new Map(); // density image source -> HTMLImageElement

function niceTicks(lo, hi, count) {
  const span = hi - lo;
  if (!(span > 0) || !isFinite(span)) return [];
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const digits = Math.min(20, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9 && ticks.length < 50; v += step) {
    const t = Math.abs(v) < step * 1e-9 ? 0 : v;
    ticks.push([t, t.toFixed(digits)]);
  }
  return ticks;
}

function fmt(v) {
  if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "–";
  return typeof v === "number" ? v.toFixed(3) : String(v);
}

function inPolygon(x, y, px, py) {
  let inside = false;
  for (let i = 0, j = px.length - 1; i < px.length; j = i++) {
    if ((py[i] > y) !== (py[j] > y) && x < ((px[j] - px[i]) * (y - py[i])) / (py[j] - py[i]) + px[i]) {
      inside = !inside;
    }
  }
  return inside;
}

function build(parent) {
  const root = document.createElement("div");
  root.className = "dm-scatter";
  root.innerHTML = `
    <div class="dm-tools" role="toolbar" aria-label="chart tools">
      <button type="button" data-mode="lasso" title="Lasso select: draw around points">Lasso</button>
      <button type="button" data-mode="box" title="Box select: drag a rectangle">Box</button>
      <button type="button" data-mode="pan" title="Pan: drag to move; Ctrl + wheel zooms (or the wheel, once the chart has the focus)">Pan</button>
      <button type="button" data-action="clear" title="Clear the selection (or double-click the chart, or Esc)" disabled>Clear selection</button>
      <button type="button" data-action="reset" title="Show the whole range again">Reset view</button>
      <button type="button" data-action="png" title="Download the chart as a PNG image">PNG</button>
    </div>
    <canvas class="dm-canvas"></canvas>
    <canvas class="dm-overlay"></canvas>
    <div class="dm-plot" tabindex="0" aria-label="scatter plot: drag to select, double-click or Esc to clear; arrows pan, + and - zoom, 0 resets the view"></div>
    <div class="dm-tip" role="tooltip" hidden></div>`;
  parent.appendChild(root);
  return root;
}

export default function (component) {
  const { data, parentElement, setStateValue, key } = component;
  let root = parentElement.querySelector(".dm-scatter");
  if (!root) {
    root = build(parentElement);
    wire(root);
  }
  const mem = MEMORY.get(key) || { view: null, zoomed: false, mode: "lasso" };
  MEMORY.set(key, mem);
  const prev = root.__model;
  const sameRange = prev && JSON.stringify(prev.data.x_range) === JSON.stringify(data.x_range)
    && JSON.stringify(prev.data.y_range) === JSON.stringify(data.y_range);
  if (!mem.view || (!mem.zoomed && !sameRange)) {
    mem.view = { x0: data.x_range[0], x1: data.x_range[1], y0: data.y_range[0], y1: data.y_range[1] };
    mem.zoomed = false;
  }
  let shape = data.shape;
  if (shape === "keep") shape = prev ? prev.shape : null;
  root.__model = {
    data,
    mem,
    setStateValue,
    shape: shape && Object.keys(shape).length ? shape : null,
    selected: undefined, // cache of selectedFlags(shape)
    flagged: new Set(data.flag || []),
    hover: [],
    drag: prev ? prev.drag : null, // a gesture in progress survives a rerun
  };
  root.style.height = `${data.height}px`;
  const gen = (root.__gen = (root.__gen || 0) + 1);
  if (!root.__observer) {
    root.__observer = new ResizeObserver(() => draw(root));
    root.__observer.observe(root);
  }
  draw(root);
  return () => {
    // only the latest call's cleanup may stop the shared observer
    if (root.__gen === gen && root.__observer) {
      root.__observer.disconnect();
      root.__observer = null;
    }
  };
}

// ---- geometry --------------------------------------------------------------------------------

function layout(root) {
  const m = root.__model;
  const width = Math.max(root.clientWidth, 200);
  const height = m.data.height;
  const right = legendWidth(root);
  const plot = {
    left: MARGIN.left,
    top: MARGIN.top,
    width: Math.max(width - MARGIN.left - right, 50),
    height: Math.max(height - MARGIN.top - MARGIN.bottom, 50),
  };
  const v = m.mem.view;
  const sx = (x) => plot.left + ((x - v.x0) / (v.x1 - v.x0)) * plot.width;
  const sy = (y) => plot.top + ((v.y1 - y) / (v.y1 - v.y0)) * plot.height;
  const dx = (px) => v.x0 + ((px - plot.left) / plot.width) * (v.x1 - v.x0);
  const dy = (py) => v.y1 - ((py - plot.top) / plot.height) * (v.y1 - v.y0);
  return { width, height, plot, sx, sy, dx, dy };
}

function legendWidth(root) {
  const d = root.__model.data;
  if (root.__legendFor === d) return root.__legendWidth;
  const g = root.__measure || (root.__measure = document.createElement("canvas").getContext("2d"));
  g.font = "12px sans-serif";
  g.font = "bold 12px sans-serif"; // the title is drawn bold: measure it so
  const names = [];
  const titleWidth = d.legend ? g.measureText(String(d.legend.title)).width : 0;
  g.font = "12px sans-serif";
  if (d.legend && d.legend.kind === "categorical") {
    names.push(...d.legend.items.slice(0, d.legend.max_items).map((it) => it.name));
  }
  if (d.flag && d.flag.length) names.push("flagged");
  const widest = Math.max(60, titleWidth, ...names.map((s) => g.measureText(String(s)).width));
  root.__legendFor = d;
  root.__legendWidth = d.legend && d.legend.kind === "numeric" ? Math.max(widest + 24, 84) : Math.min(widest + 44, 260);
  return root.__legendWidth;
}

function finite(v) {
  return v !== null && v !== undefined && isFinite(v);
}

function clampView(m, v) {
  // keep the span between 1/10,000 and 100 times the data's range (no 0 or Infinity; the
  // coordinates are sent with 5 decimals)
  const d = m.data;
  const fix = (a, b, lo, hi) => {
    const full = hi - lo || 1;
    const span = Math.min(Math.max(b - a, full * 1e-4), full * 100);
    const mid = (a + b) / 2;
    return [mid - span / 2, mid + span / 2];
  };
  const [x0, x1] = fix(v.x0, v.x1, d.x_range[0], d.x_range[1]);
  const [y0, y1] = fix(v.y0, v.y1, d.y_range[0], d.y_range[1]);
  return { x0, x1, y0, y1 };
}

// ---- drawing ---------------------------------------------------------------------------------

function selectedFlags(m) {
  // which drawn points the current shape holds (null: no shape, nothing dimmed)
  const s = m.shape;
  if (!s) return null;
  const d = m.data;
  const n = d.x.length;
  const out = new Uint8Array(n);
  const ok = (i) => finite(d.x[i]) && finite(d.y[i]);
  for (const poly of s.lasso || []) {
    for (let i = 0; i < n; i++) if (!out[i] && ok(i) && inPolygon(d.x[i], d.y[i], poly.x, poly.y)) out[i] = 1;
  }
  for (const b of s.box || []) {
    const [x0, x1] = [Math.min(...b.x), Math.max(...b.x)];
    const [y0, y1] = [Math.min(...b.y), Math.max(...b.y)];
    for (let i = 0; i < n; i++) {
      if (ok(i) && d.x[i] >= x0 && d.x[i] <= x1 && d.y[i] >= y0 && d.y[i] <= y1) out[i] = 1;
    }
  }
  if (s.points && s.points.length) {
    const ids = new Set(s.points.map((p) => String(p.customdata)));
    for (let i = 0; i < n; i++) if (ids.has(String(d.ids[i]))) out[i] = 1;
  }
  return out;
}

function sizeCanvas(c, width, height, dpr) {
  const w = Math.round(width * dpr), h = Math.round(height * dpr);
  if (c.width !== w || c.height !== h) {
    c.width = w;
    c.height = h;
    c.style.width = `${width}px`;
    c.style.height = `${height}px`;
  }
}

function draw(root) {
  const m = root.__model;
  if (!m) return;
  const d = m.data;
  const L = (root.__layout = layout(root));
  const { plot, sx, sy } = L;
  const dpr = window.devicePixelRatio || 1;
  const canvas = root.querySelector(".dm-canvas");
  sizeCanvas(canvas, L.width, L.height, dpr);
  sizeCanvas(root.querySelector(".dm-overlay"), L.width, L.height, dpr);
  const area = root.querySelector(".dm-plot");
  Object.assign(area.style, {
    left: `${plot.left}px`, top: `${plot.top}px`, width: `${plot.width}px`, height: `${plot.height}px`,
  });
  const ink = getComputedStyle(root).color || "#31333f";
  root.__ink = ink;
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, L.width, L.height);

  // grid
  const xt = d.show_ticks ? niceTicks(m.mem.view.x0, m.mem.view.x1, Math.max(3, plot.width / 90)) : [];
  const yt = d.show_ticks ? niceTicks(m.mem.view.y0, m.mem.view.y1, Math.max(3, plot.height / 60)) : [];
  g.strokeStyle = "rgba(128,128,128,0.18)";
  g.lineWidth = 1;
  g.beginPath();
  for (const [v] of xt) { const p = Math.round(sx(v)) + 0.5; g.moveTo(p, plot.top); g.lineTo(p, plot.top + plot.height); }
  for (const [v] of yt) { const p = Math.round(sy(v)) + 0.5; g.moveTo(plot.left, p); g.lineTo(plot.left + plot.width, p); }
  g.stroke();

  g.save();
  g.beginPath();
  g.rect(plot.left, plot.top, plot.width, plot.height);
  g.clip();
  // density of every row behind the points
  if (d.density) {
    let img = IMAGES.get(d.density.src);
    if (!img) {
      img = new Image();
      img.onload = () => { if (root.__model && root.__model.data.density && root.__model.data.density.src === img.src) draw(root); };
      img.src = d.density.src;
      IMAGES.set(d.density.src, img);
      if (IMAGES.size > 8) IMAGES.delete(IMAGES.keys().next().value);
    }
    if (img.complete && img.naturalWidth) {
      const x0 = sx(d.density.x0), x1 = sx(d.density.x1), y1 = sy(d.density.y1), y0 = sy(d.density.y0);
      g.drawImage(img, x0, y1, x1 - x0, y0 - y1);
    }
  }
  // points, one path per colour; points outside the shape are dimmed while one is drawn
  if (m.selected === undefined) m.selected = selectedFlags(m);
  const sel = m.selected;
  const r = d.marker_size / 2;
  const byColor = new Map();
  for (let i = 0; i < d.x.length; i++) {
    if (!finite(d.x[i]) || !finite(d.y[i])) continue;
    const k = d.c[i] * 2 + (sel ? sel[i] : 1);
    let list = byColor.get(k);
    if (!list) byColor.set(k, (list = []));
    list.push(i);
  }
  for (const [k, list] of byColor) {
    const c = Math.floor(k / 2);
    g.fillStyle = c >= 0 && c < d.palette.length ? d.palette[c] : d.missing_color;
    g.globalAlpha = k % 2 ? 0.8 : 0.15;
    g.beginPath();
    for (const i of list) {
      const px = sx(d.x[i]), py = sy(d.y[i]);
      g.moveTo(px + r, py);
      g.arc(px, py, r, 0, 2 * Math.PI);
    }
    g.fill();
  }
  g.globalAlpha = 1;
  if (d.flag && d.flag.length) {
    g.strokeStyle = d.flag_color;
    g.lineWidth = 2;
    g.beginPath();
    for (const i of d.flag) {
      if (!finite(d.x[i]) || !finite(d.y[i])) continue;
      const px = sx(d.x[i]), py = sy(d.y[i]);
      g.moveTo(px + r + 4, py);
      g.arc(px, py, r + 4, 0, 2 * Math.PI);
    }
    g.stroke();
  }
  // region boundaries and their names, in the theme's text colour
  g.strokeStyle = ink;
  g.globalAlpha = 0.75;
  g.lineWidth = 1.5;
  g.setLineDash([6, 4]);
  g.beginPath();
  for (const ln of d.lines || []) { g.moveTo(sx(ln.x0), sy(ln.y0)); g.lineTo(sx(ln.x1), sy(ln.y1)); }
  g.stroke();
  g.setLineDash([]);
  g.globalAlpha = 1;
  g.restore();
  g.fillStyle = ink;
  g.font = "12px sans-serif";
  g.textAlign = "center";
  for (const lb of d.labels || []) {
    g.textBaseline = lb.anchor === "top" ? "top" : "bottom";
    const px = sx(lb.x), py = sy(lb.y) + (lb.anchor === "top" ? 3 : -3);
    if (px > plot.left && px < plot.left + plot.width) g.fillText(lb.text, px, py);
  }

  // axes
  g.strokeStyle = "rgba(128,128,128,0.6)";
  g.lineWidth = 1;
  g.strokeRect(plot.left + 0.5, plot.top + 0.5, plot.width - 1, plot.height - 1);
  g.fillStyle = ink;
  g.font = "11px sans-serif";
  g.textAlign = "center";
  g.textBaseline = "top";
  for (const [v, s] of xt) g.fillText(s, sx(v), plot.top + plot.height + 4);
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (const [v, s] of yt) g.fillText(s, plot.left - 5, sy(v));
  g.font = "13px sans-serif";
  g.textAlign = "center";
  g.textBaseline = "bottom";
  g.fillText(d.x_title, plot.left + plot.width / 2, L.height - 4);
  g.save();
  g.translate(14, plot.top + plot.height / 2);
  g.rotate(-Math.PI / 2);
  g.textBaseline = "middle";
  g.fillText(d.y_title, 0, 0);
  g.restore();
  drawLegend(g, d, plot, ink);

  drawOverlay(root);
  root.dataset.ready = "1";
  root.dataset.mode = m.mem.mode;
  root.dataset.points = String(d.x.length);
  root.dataset.selection = m.shape ? JSON.stringify(m.shape) : "";
  root.dataset.marked = d.marked ? String(d.marked.id) : "";
  for (const b of root.querySelectorAll(".dm-tools [data-mode]")) {
    b.setAttribute("aria-pressed", String(b.dataset.mode === m.mem.mode));
  }
  root.querySelector('.dm-tools [data-action="clear"]').disabled = !m.shape;
}

function drawLegend(g, d, plot, ink) {
  const lg = d.legend;
  const x = plot.left + plot.width + 16;
  let y = plot.top;
  const bottom = plot.top + plot.height - 10;
  g.textAlign = "left";
  g.textBaseline = "middle";
  g.fillStyle = ink;
  if (lg) {
    g.font = "bold 12px sans-serif";
    g.fillText(lg.title, x, y + 6);
    y += 22;
    g.font = "12px sans-serif";
    if (lg.kind === "numeric") {
      const h = Math.min(plot.height - 60, 240);
      const grad = g.createLinearGradient(0, y + h, 0, y);
      lg.stops.forEach((c, k) => grad.addColorStop(k / (lg.stops.length - 1), c));
      g.fillStyle = grad;
      g.fillRect(x, y, 14, h);
      g.fillStyle = ink;
      g.fillText(fmt(lg.max), x + 20, y + 5);
      g.fillText(fmt(lg.min), x + 20, y + h - 5);
      if (lg.mid !== undefined && lg.mid !== null) g.fillText(`${fmt(lg.mid)} (median)`, x + 20, y + h / 2);
      y += h + 16;
    } else {
      let shown = 0;
      for (const it of lg.items) {
        if (shown >= lg.max_items || y > bottom - 18) break;
        g.fillStyle = it.color;
        g.beginPath();
        g.arc(x + 6, y, 5, 0, 2 * Math.PI);
        g.fill();
        g.fillStyle = ink;
        g.fillText(it.name, x + 18, y);
        y += 18;
        shown += 1;
      }
      if (shown < lg.items.length) { g.fillText(`+${lg.items.length - shown} more`, x, y); y += 18; }
    }
  }
  if (d.flag && d.flag.length) {
    y += 4;
    g.strokeStyle = d.flag_color;
    g.lineWidth = 2;
    g.beginPath();
    g.arc(x + 6, y, 5, 0, 2 * Math.PI);
    g.stroke();
    g.fillStyle = ink;
    g.fillText("flagged", x + 18, y);
  }
}

function drawOverlay(root) {
  // the selection shape (or the one being drawn) and the hover ring, over the points
  const m = root.__model;
  const L = root.__layout;
  const overlay = root.querySelector(".dm-overlay");
  const dpr = window.devicePixelRatio || 1;
  const g = overlay.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, L.width, L.height);
  g.save();
  g.beginPath();
  g.rect(L.plot.left, L.plot.top, L.plot.width, L.plot.height);
  g.clip();
  const ink = root.__ink || "#31333f";
  g.strokeStyle = ink;
  g.fillStyle = "rgba(128,128,128,0.14)";
  g.lineWidth = 1.2;
  g.setLineDash([4, 3]);
  const polys = [];
  const s = m.drag && m.drag.mode !== "pan" && m.drag.preview ? m.drag.preview : m.shape;
  for (const p of (s && s.lasso) || []) polys.push(p.x.map((x, i) => [L.sx(x), L.sy(p.y[i])]));
  for (const b of (s && s.box) || []) {
    const [x0, x1, y0, y1] = [L.sx(b.x[0]), L.sx(b.x[1]), L.sy(b.y[0]), L.sy(b.y[1])];
    polys.push([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]);
  }
  for (const pts of polys) {
    if (pts.length < 2) continue;
    g.beginPath();
    g.moveTo(pts[0][0], pts[0][1]);
    for (const [px, py] of pts.slice(1)) g.lineTo(px, py);
    g.closePath();
    g.fill();
    g.stroke();
  }
  g.setLineDash([]);
  const d = m.data;
  const mk = d.marked;
  if (mk && finite(mk.x) && finite(mk.y)) {
    // the open example: a ring with cross hairs, in its own colour (it may lie outside the sample)
    const px = L.sx(mk.x), py = L.sy(mk.y), r = d.marker_size / 2 + 6;
    g.strokeStyle = d.marked_color || ink;
    g.lineWidth = 2.5;
    g.beginPath();
    g.arc(px, py, r, 0, 2 * Math.PI);
    for (const [ux, uy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      g.moveTo(px + ux * (r + 2), py + uy * (r + 2));
      g.lineTo(px + ux * (r + 9), py + uy * (r + 9));
    }
    g.stroke();
    g.strokeStyle = ink;
  }
  if (m.hover.length) {
    const i = m.hover[0];
    g.lineWidth = 1.5;
    g.beginPath();
    g.arc(L.sx(d.x[i]), L.sy(d.y[i]), d.marker_size / 2 + 2.5, 0, 2 * Math.PI);
    g.stroke();
  }
  g.restore();
}

// ---- interaction -----------------------------------------------------------------------------

function pick(root, px, py) {
  // the drawn points nearest to (px, py) in page-local pixels, within PICK_PX: every point
  // within a pixel of the nearest one (points drawn on top of each other come together)
  const d = root.__model.data;
  const L = root.__layout;
  const dist = new Float64Array(d.x.length);
  let best = PICK_PX * PICK_PX;
  let found = false;
  for (let i = 0; i < d.x.length; i++) {
    if (!finite(d.x[i]) || !finite(d.y[i])) { dist[i] = Infinity; continue; }
    const ex = L.sx(d.x[i]) - px, ey = L.sy(d.y[i]) - py;
    dist[i] = ex * ex + ey * ey;
    if (dist[i] <= best) { best = dist[i]; found = true; }
  }
  if (!found) return [];
  const limit = (Math.sqrt(best) + 1) ** 2;
  const out = [];
  for (let i = 0; i < d.x.length; i++) if (dist[i] <= limit) out.push(i);
  return out;
}

function showTip(root, hits, px, py) {
  const tip = root.querySelector(".dm-tip");
  const m = root.__model;
  const d = m.data;
  const L = root.__layout;
  if (!hits.length) { tip.hidden = true; return; }
  const i = hits[0];
  const lines = [`id ${d.ids[i]}`, `${d.x_title} ${fmt(d.x[i])}`, `${d.y_title} ${fmt(d.y[i])}`];
  if (d.text && d.text[i]) lines.push(d.text_title ? `${d.text_title} ${d.text[i]}` : String(d.text[i]));
  if (d.legend && d.legend.title) {
    const item = d.legend.items ? d.legend.items[d.c[i]] : null;
    const value = d.v ? fmt(d.v[i]) : item ? item.name : "";
    if (value !== "") lines.push(`${d.legend.title} ${value}`);
  }
  if (m.flagged.has(i)) lines.push("flagged");
  if (hits.length > 1) lines.push(`+${hits.length - 1} more at this spot (a click selects all)`);
  // text, never HTML: labels and ids come from the user's data
  tip.replaceChildren(...lines.map((s) => Object.assign(document.createElement("div"), { textContent: s })));
  tip.hidden = false;
  const left = Math.min(L.plot.left + px + 12, L.width - tip.offsetWidth - 4);
  const top = Math.min(L.plot.top + py + 12, L.height - tip.offsetHeight - 4);
  tip.style.left = `${Math.max(left, 0)}px`;
  tip.style.top = `${Math.max(top, 0)}px`;
}

function savePng(root) {
  // the chart as it is shown (points, shape, legend) on the page's background colour
  const base = root.querySelector(".dm-canvas");
  const out = document.createElement("canvas");
  out.width = base.width;
  out.height = base.height;
  const g = out.getContext("2d");
  const host = root.getRootNode().host || root;
  let bg = getComputedStyle(host).backgroundColor;
  for (let e = host; e && (!bg || bg === "rgba(0, 0, 0, 0)" || bg === "transparent"); e = e.parentElement) {
    bg = getComputedStyle(e).backgroundColor;
  }
  g.fillStyle = bg && bg !== "rgba(0, 0, 0, 0)" ? bg : "#ffffff";
  g.fillRect(0, 0, out.width, out.height);
  g.drawImage(base, 0, 0);
  g.drawImage(root.querySelector(".dm-overlay"), 0, 0);
  const a = document.createElement("a");
  a.download = `${(root.__model.data.name || "datamap-chart").replace(/[^A-Za-z0-9_.-]+/g, "_")}.png`;
  a.href = out.toDataURL("image/png");
  root.appendChild(a);
  a.click();
  a.remove();
}

function commit(root, shape) {
  const m = root.__model;
  m.shape = shape && Object.keys(shape).length ? shape : null;
  m.selected = undefined;
  draw(root);
  m.setStateValue("selection", shape);
}

function polygonArea(pts) {
  let a = 0;
  for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) a += (pts[j][0] + pts[i][0]) * (pts[j][1] - pts[i][1]);
  return Math.abs(a / 2);
}

function wire(root) {
  const area = root.querySelector(".dm-plot");
  const local = (ev) => {
    const L = root.__layout;
    return [Math.min(Math.max(ev.offsetX, 0), L.plot.width), Math.min(Math.max(ev.offsetY, 0), L.plot.height)];
  };
  root.querySelector(".dm-tools").addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    const m = root.__model;
    if (!b || !m) return;
    if (b.dataset.mode) m.mem.mode = b.dataset.mode;
    if (b.dataset.action === "reset") {
      const d = m.data;
      m.mem.view = { x0: d.x_range[0], x1: d.x_range[1], y0: d.y_range[0], y1: d.y_range[1] };
      m.mem.zoomed = false;
    }
    if (b.dataset.action === "png") { savePng(root); return; }
    if (b.dataset.action === "clear") {
      // the one clear control of a map page: the server drops the selection, its table and the
      // example it opened (the same as a double-click or Esc)
      clearTimeout(root.__click);
      if (m.shape) commit(root, {});
      return;
    }
    draw(root);
  });
  area.addEventListener("pointerdown", (ev) => {
    const m = root.__model;
    if (!m || ev.button !== 0) return;
    area.setPointerCapture(ev.pointerId);
    const [px, py] = local(ev);
    area.focus({ preventScroll: true }); // a click on the chart gives it the keys and the wheel
    m.drag = { mode: m.mem.mode, start: [px, py], path: [[px, py]], view: { ...m.mem.view }, moved: 0, preview: null };
    m.hover = [];
    root.querySelector(".dm-tip").hidden = true;
    drawOverlay(root);
  });
  area.addEventListener("pointermove", (ev) => {
    const m = root.__model;
    if (!m || !root.__layout) return;
    const L = root.__layout;
    const [px, py] = local(ev);
    const dr = m.drag;
    if (!dr) {
      const hits = pick(root, L.plot.left + px, L.plot.top + py);
      if (hits[0] !== m.hover[0] || hits.length !== m.hover.length) { m.hover = hits; drawOverlay(root); }
      showTip(root, hits, px, py);
      return;
    }
    dr.moved = Math.max(dr.moved, Math.hypot(px - dr.start[0], py - dr.start[1]));
    if (dr.mode === "pan") {
      const v = dr.view;
      const fx = ((px - dr.start[0]) / L.plot.width) * (v.x1 - v.x0);
      const fy = ((py - dr.start[1]) / L.plot.height) * (v.y1 - v.y0);
      m.mem.view = { x0: v.x0 - fx, x1: v.x1 - fx, y0: v.y0 + fy, y1: v.y1 + fy };
      m.mem.zoomed = true;
      draw(root);
      return;
    }
    const toData = ([qx, qy]) => [L.dx(L.plot.left + qx), L.dy(L.plot.top + qy)];
    if (dr.mode === "lasso") {
      const last = dr.path[dr.path.length - 1];
      if (Math.hypot(px - last[0], py - last[1]) >= 2) dr.path.push([px, py]);
      const pts = dr.path.map(toData);
      dr.preview = { lasso: [{ x: pts.map((p) => p[0]), y: pts.map((p) => p[1]) }] };
    } else {
      const [a, b] = [toData(dr.start), toData([px, py])];
      dr.preview = { box: [{ x: [a[0], b[0]], y: [a[1], b[1]] }] };
      dr.end = [px, py];
    }
    drawOverlay(root);
  });
  const finish = (ev) => {
    const m = root.__model;
    const dr = m && m.drag;
    if (!dr) return;
    m.drag = null;
    if (dr.mode === "pan" || ev.type === "pointercancel") { drawOverlay(root); return; }
    const L = root.__layout;
    if (dr.moved < CLICK_PX) {
      // a click selects the point(s) under it, unless a second click makes it a double-click
      const hits = pick(root, L.plot.left + dr.start[0], L.plot.top + dr.start[1]);
      drawOverlay(root);
      clearTimeout(root.__click);
      if (hits.length) {
        const ids = hits.map((i) => ({ customdata: m.data.ids[i] }));
        root.__click = setTimeout(() => commit(root, { points: ids }), DBLCLICK_MS);
      }
      return;
    }
    const p = dr.preview;
    const slip = !p
      || (p.lasso && (dr.path.length < 3 || polygonArea(dr.path) < MIN_LASSO_PX2))
      || (p.box && (!dr.end || Math.abs(dr.end[0] - dr.start[0]) < CLICK_PX || Math.abs(dr.end[1] - dr.start[1]) < CLICK_PX));
    if (slip) { drawOverlay(root); return; }
    commit(root, p);
  };
  area.addEventListener("pointerup", finish);
  area.addEventListener("pointercancel", finish);
  area.addEventListener("pointerleave", () => {
    const m = root.__model;
    if (m && !m.drag) {
      root.querySelector(".dm-tip").hidden = true;
      if (m.hover.length) { m.hover = []; drawOverlay(root); }
    }
  });
  area.addEventListener("dblclick", () => {
    clearTimeout(root.__click);
    const m = root.__model;
    if (m && m.shape) commit(root, {});
  });
  area.addEventListener("keydown", (ev) => {
    // Esc clears the selection; arrows pan, + and - zoom, 0 shows the whole range again
    const m = root.__model;
    if (!m) return;
    if (ev.key === "Escape") { if (m.shape) commit(root, {}); return; }
    const v = m.mem.view;
    const w = v.x1 - v.x0, h = v.y1 - v.y0;
    const pan = { ArrowLeft: [-0.1, 0], ArrowRight: [0.1, 0], ArrowUp: [0, 0.1], ArrowDown: [0, -0.1] }[ev.key];
    const zoom = { "+": 0.8, "=": 0.8, "-": 1.25, "_": 1.25 }[ev.key];
    if (pan) {
      m.mem.view = { x0: v.x0 + pan[0] * w, x1: v.x1 + pan[0] * w, y0: v.y0 + pan[1] * h, y1: v.y1 + pan[1] * h };
    } else if (zoom) {
      const cx = (v.x0 + v.x1) / 2, cy = (v.y0 + v.y1) / 2;
      m.mem.view = clampView(m, { x0: cx - (w * zoom) / 2, x1: cx + (w * zoom) / 2, y0: cy - (h * zoom) / 2, y1: cy + (h * zoom) / 2 });
    } else if (ev.key === "0") {
      const d = m.data;
      m.mem.view = { x0: d.x_range[0], x1: d.x_range[1], y0: d.y_range[0], y1: d.y_range[1] };
      m.mem.zoomed = false;
      draw(root);
      ev.preventDefault();
      return;
    } else {
      return;
    }
    m.mem.zoomed = true;
    ev.preventDefault();
    draw(root);
  });
  area.addEventListener("wheel", (ev) => {
    const m = root.__model;
    if (!m || !root.__layout) return;
    // the wheel zooms only with a modifier key (Ctrl/Cmd/Alt) or while the chart has the focus
    // (after a click on it); otherwise it scrolls the page, so a long page stays reachable
    const focused = area.getRootNode().activeElement === area;
    if (!(ev.ctrlKey || ev.metaKey || ev.altKey || focused)) return;
    ev.preventDefault();
    const L = root.__layout;
    const k = Math.exp(Math.max(-0.5, Math.min(0.5, ev.deltaY * 0.0015)));
    const cx = L.dx(L.plot.left + ev.offsetX), cy = L.dy(L.plot.top + ev.offsetY);
    const v = m.mem.view;
    m.mem.view = clampView(m, { x0: cx + (v.x0 - cx) * k, x1: cx + (v.x1 - cx) * k, y0: cy + (v.y0 - cy) * k, y1: cy + (v.y1 - cy) * k });
    m.mem.zoomed = true;
    draw(root);
  }, { passive: false });
}
