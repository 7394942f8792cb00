// The explorer's charts: a few SVG builders, shipped with the package (no CDN, works offline).
// Every label reaches the SVG through textContent; numbers are drawn as given by the API and
// a null is drawn as "no value", never as 0.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(w, h, label) {
    const s = el("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "chart", role: "img" });
    if (label) s.appendChild(el("title", {}, label));
    return s;
  }

  function tip(node, text) {
    node.appendChild(el("title", {}, text));
    return node;
  }

  const fmt = (x, d = 3) => (x === null || x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(d));
  const clamp01 = (x) => Math.min(Math.max(x, 0), 1);

  // Horizontal rows on a [0, 1] axis: a dot for the value, a line for its interval and a tick
  // for the expected value. rows: [{name, value, lo, hi, expected, color}]
  function ciRows(rows, opts = {}) {
    const left = opts.left || 110, w = opts.width || 520, rowH = 18, top = 18;
    const plotW = w - left - 60;
    const h = top + rows.length * rowH + 22;
    const s = svg(w, h, opts.title);
    const x = (v) => left + clamp01(v) * plotW;
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      s.appendChild(el("line", { x1: x(t), x2: x(t), y1: top - 4, y2: h - 20, stroke: "#eee" }));
      s.appendChild(el("text", { x: x(t), y: h - 6, "text-anchor": "middle" }, t));
    }
    if (opts.axisLabel) s.appendChild(el("text", { x: left, y: 11 }, opts.axisLabel));
    rows.forEach((r, i) => {
      const y = top + i * rowH + rowH / 2;
      s.appendChild(el("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, r.name));
      const g = el("g", {});
      if (r.lo !== null && r.hi !== null && r.lo !== undefined)
        g.appendChild(el("line", { x1: x(r.lo), x2: x(r.hi), y1: y, y2: y, stroke: "#9ecae1", "stroke-width": 4 }));
      if (r.chance !== null && r.chance !== undefined)
        g.appendChild(el("line", { x1: x(r.chance), x2: x(r.chance), y1: y - 7, y2: y + 7, stroke: "#888", "stroke-width": 2, "stroke-dasharray": "2 2", class: "chance" }));
      if (r.expected !== null && r.expected !== undefined)
        g.appendChild(el("line", { x1: x(r.expected), x2: x(r.expected), y1: y - 7, y2: y + 7, stroke: "#333", "stroke-width": 2, class: "expected" }));
      if (r.value !== null && r.value !== undefined)
        g.appendChild(el("circle", { cx: x(r.value), cy: y, r: 4.5, fill: r.color || "#3b6ea5", class: "value" }));
      s.appendChild(el("text", { x: w - 56, y: y + 4 }, r.value === null || r.value === undefined ? "no firing" : fmt(r.value, 2)));
      tip(g, `${r.name}: ${fmt(r.value)} [${fmt(r.lo)}, ${fmt(r.hi)}], expected ${fmt(r.expected)}${r.chance !== null && r.chance !== undefined ? `, chance ${fmt(r.chance)}` : ""}`);
      s.appendChild(g);
    });
    return s;
  }

  // Horizontal bars from 0: rows [{name, value, color, text}]; max = the axis end (default: largest
  // value); textWidth = the room kept right of the longest bar for its text (default 70 px).
  function bars(rows, opts = {}) {
    const left = opts.left || 110, w = opts.width || 520, rowH = 18, top = 18;
    const plotW = w - left - (opts.textWidth || 70);
    const h = top + rows.length * rowH + 6;
    const s = svg(w, h, opts.title);
    const vals = rows.map((r) => r.value).filter((v) => Number.isFinite(v));
    const max = opts.max || Math.max(...vals, 1e-12);
    if (opts.axisLabel) s.appendChild(el("text", { x: left, y: 11 }, opts.axisLabel));
    rows.forEach((r, i) => {
      const y = top + i * rowH;
      s.appendChild(el("text", { x: left - 6, y: y + 13, "text-anchor": "end" }, r.name));
      const bw = Number.isFinite(r.value) ? Math.max((r.value / max) * plotW, r.value > 0 ? 1 : 0) : 0;
      const b = el("rect", { x: left, y: y + 3, width: bw, height: rowH - 6, fill: r.color || "#3b6ea5", class: "bar" });
      tip(b, `${r.name}: ${r.text || fmt(r.value, 4)}`);
      s.appendChild(b);
      s.appendChild(el("text", { x: left + bw + 4, y: y + 13 }, r.text || fmt(r.value, 4)));
    });
    return s;
  }

  // A histogram of counts over given bin edges.
  function histogram(counts, edges, opts = {}) {
    const w = opts.width || 300, h = opts.height || 120, pad = 22;
    const s = svg(w, h, opts.title);
    const max = Math.max(...counts, 1);
    const bw = (w - 2 * pad) / counts.length;
    counts.forEach((c, i) => {
      const bh = (c / max) * (h - 2 * pad);
      const r = el("rect", { x: pad + i * bw, y: h - pad - bh, width: Math.max(bw - 1, 1), height: bh, fill: opts.color || "#3b6ea5" });
      tip(r, `${opts.binLabel ? opts.binLabel(edges[i], edges[i + 1]) : `${edges[i]}–${edges[i + 1]}`}: ${c}`);
      s.appendChild(r);
    });
    s.appendChild(el("line", { x1: pad, x2: w - pad, y1: h - pad, y2: h - pad, class: "axis" }));
    if (opts.title) s.appendChild(el("text", { x: pad, y: 12 }, opts.title));
    if (opts.xLabels) {
      s.appendChild(el("text", { x: pad, y: h - 6 }, opts.xLabels[0]));
      s.appendChild(el("text", { x: w - pad, y: h - 6, "text-anchor": "end" }, opts.xLabels[1]));
    }
    return s;
  }

  // A colour for v in [lo, hi]: white to blue (or red below 0 for a diverging scale).
  function colour(v, lo, hi) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "#f3f3f3";
    if (lo < 0) {
      const t = Math.min(Math.abs(v) / Math.max(Math.abs(lo), Math.abs(hi)), 1);
      const c = Math.round(255 - 170 * t);
      return v < 0 ? `rgb(255,${c},${c})` : `rgb(${c},${c},255)`;
    }
    const t = clamp01((v - lo) / (hi - lo || 1));
    return `rgb(${Math.round(255 - 196 * t)},${Math.round(255 - 145 * t)},${Math.round(255 - 90 * t)})`;
  }

  // A square matrix with row / column names: cells coloured by value, value written inside.
  function heatmap(names, m, opts = {}) {
    const n = names.length, cell = opts.cell || 34, left = opts.left || 100, top = opts.top || 90;
    const w = left + n * cell + 10, h = top + n * cell + 10;
    const s = svg(w, h, opts.title);
    const lo = opts.lo ?? 0, hi = opts.hi ?? 1;
    names.forEach((name, i) => {
      s.appendChild(el("text", { x: left - 4, y: top + i * cell + cell / 2 + 4, "text-anchor": "end" }, name));
      s.appendChild(el("text", { transform: `translate(${left + i * cell + cell / 2 + 4},${top - 4}) rotate(-60)` }, name));
    });
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        const v = m[i][j];
        const g = el("g", {});
        g.appendChild(el("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1, fill: colour(v, lo, hi), class: "cell" }));
        if (v !== null && v !== undefined)
          g.appendChild(el("text", { x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4, "text-anchor": "middle", "font-size": 9 }, v.toFixed(2)));
        tip(g, `${names[i]} × ${names[j]}: ${fmt(v)}`);
        s.appendChild(g);
      }
    return s;
  }

  // A row of tiny bars, one per benchmark (value in [0, 1]); a grey dash where the value is null.
  // Two paths and one tooltip per row, not a node per bar: 50 rows of 10 bars lay out and paint fast.
  function spark(values, names, opts = {}) {
    const bw = 7, h = 18, w = values.length * (bw + 1) + 2;
    const s = el("svg", { width: w, height: h, class: "spark" });
    let bars = "", dashes = "";
    values.forEach((v, i) => {
      const x = 1 + i * (bw + 1);
      if (v === null || v === undefined) dashes += `M${x} ${h - 2}h${bw}v2h${-bw}z`;
      else {
        const bh = Math.max(clamp01(opts.max ? v / opts.max : v) * (h - 2), 1);
        bars += `M${x} ${(h - bh).toFixed(1)}h${bw}v${bh.toFixed(1)}h${-bw}z`;
      }
    });
    if (dashes) s.appendChild(el("path", { d: dashes, fill: "#ccc" }));
    if (bars) s.appendChild(el("path", { d: bars, fill: opts.fill || "#3b6ea5" }));
    const label = opts.label ? `${opts.label} ` : "";
    tip(s, values.map((v, i) => `${label}${names[i]}: ${v === null || v === undefined ? "no firing" : fmt(v, 4)}`).join("\n"));
    return s;
  }

  // A small [0, 1] track: interval, chance tick (dotted), expected tick and value dot (the list's χ_model cell).
  function forest(value, lo, hi, expected, chance) {
    const w = 110, h = 12;
    const s = el("svg", { width: w, height: h, class: "spark" });
    s.appendChild(el("rect", { x: 0, y: 0, width: w, height: h, fill: "#f2f2f2" }));
    const x = (v) => clamp01(v) * (w - 2) + 1;
    if (lo !== null && hi !== null) s.appendChild(el("rect", { x: x(lo), y: 4, width: Math.max(x(hi) - x(lo), 1), height: 4, fill: "#9ecae1" }));
    if (chance !== null && chance !== undefined) s.appendChild(el("line", { x1: x(chance), x2: x(chance), y1: 0, y2: h, stroke: "#888", "stroke-width": 2, "stroke-dasharray": "2 2", class: "chance" }));
    if (expected !== null) s.appendChild(el("rect", { x: x(expected) - 1, y: 0, width: 2, height: h, fill: "#333" }));
    if (value !== null) s.appendChild(el("circle", { cx: x(value), cy: h / 2, r: 3.5, fill: "#3b6ea5" }));
    tip(s, `χ_model ${fmt(value)} [${fmt(lo)}, ${fmt(hi)}], expected ${fmt(expected)}${chance !== null && chance !== undefined ? `, chance ${fmt(chance)}` : ""}`);
    return s;
  }

  // One point per concept: xs[i] against ys[i], coloured by classes[i] (colours: {class: colour};
  // others grey), with the diagonal; axes [0, max] (linear, or log10 with opts.log). Points are drawn
  // as one path per colour (tens of thousands stay fast); the point nearest the pointer is named
  // in a label and opts.onPick(i) is called on a click.
  function scatter(xs, ys, classes, opts = {}) {
    const w = opts.width || 460, h = opts.height || 420, left = 52, bottom = 40, top = 14, right = 14;
    const s = svg(w, h, opts.title);
    const pw = w - left - right, ph = h - top - bottom;
    const log = !!opts.log;
    const floor = 1e-5;
    const tr = (v) => (log ? Math.log10(Math.max(v, floor)) : v);
    const all = xs.concat(ys).filter((v) => Number.isFinite(v));
    const lo = log ? Math.log10(floor) : 0;
    const hi = log ? 0 : Math.max(opts.max || 0, ...all, 1e-12);
    const X = (v) => left + ((tr(v) - lo) / (hi - lo || 1)) * pw;
    const Y = (v) => top + ph - ((tr(v) - lo) / (hi - lo || 1)) * ph;
    s.appendChild(el("rect", { x: left, y: top, width: pw, height: ph, fill: "#fff", stroke: "#ccc" }));
    s.appendChild(el("line", { x1: X(log ? floor : 0), y1: Y(log ? floor : 0), x2: X(log ? 1 : hi), y2: Y(log ? 1 : hi), stroke: "#bbb", "stroke-dasharray": "4 3" }));
    const ticks = log ? [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1] : [0, 0.25, 0.5, 0.75, 1].map((t) => t * hi);
    for (const t of ticks) {
      s.appendChild(el("text", { x: X(t), y: h - bottom + 14, "text-anchor": "middle" }, log ? `1e${Math.round(Math.log10(t))}` : t.toFixed(2)));
      s.appendChild(el("text", { x: left - 4, y: Y(t) + 4, "text-anchor": "end" }, log ? `1e${Math.round(Math.log10(t))}` : t.toFixed(2)));
    }
    s.appendChild(el("text", { x: left + pw / 2, y: h - 6, "text-anchor": "middle", class: "axis-label" }, opts.xLabel || "x"));
    s.appendChild(el("text", { transform: `translate(12,${top + ph / 2}) rotate(-90)`, "text-anchor": "middle", class: "axis-label" }, opts.yLabel || "y"));
    const colours = opts.colours || {};
    const paths = {};
    xs.forEach((v, i) => {
      const c = colours[classes[i]] ? classes[i] : "";
      paths[c] = (paths[c] || "") + `M${X(v).toFixed(1)} ${Y(ys[i]).toFixed(1)}h0`;
    });
    // grey first, the called concepts on top
    for (const c of ["", ...Object.keys(colours)]) if (paths[c]) s.appendChild(el("path", { d: paths[c], stroke: colours[c] || "#9aa5b1", "stroke-width": 5, "stroke-linecap": "round", "stroke-opacity": c ? 0.9 : 0.5, class: `points ${c ? "called" : ""}` }));
    const ring = el("circle", { r: 6, fill: "none", stroke: "#000", "stroke-width": 1.5, visibility: "hidden" });
    const label = el("text", { x: left + 6, y: top + 14, class: "picked" }, "");
    s.appendChild(ring);
    s.appendChild(label);
    let picked = -1;
    s.addEventListener("mousemove", (e) => {
      const box = s.getBoundingClientRect();
      const mx = ((e.clientX - box.left) / box.width) * w, my = ((e.clientY - box.top) / box.height) * h;
      let best = -1, bd = 100;
      for (let i = 0; i < xs.length; i++) {
        const dx = X(xs[i]) - mx, dy = Y(ys[i]) - my, dd = dx * dx + dy * dy;
        if (dd < bd) { bd = dd; best = i; }
      }
      picked = best;
      ring.setAttribute("visibility", best < 0 ? "hidden" : "visible");
      if (best >= 0) {
        ring.setAttribute("cx", X(xs[best]));
        ring.setAttribute("cy", Y(ys[best]));
      }
      label.textContent = best < 0 ? "" : opts.name ? opts.name(best) : `${fmt(xs[best])}, ${fmt(ys[best])}`;
    });
    s.addEventListener("click", () => picked >= 0 && opts.onPick && opts.onPick(picked));
    return s;
  }

  window.CgCharts = { ciRows, bars, histogram, heatmap, spark, forest, scatter, colour, fmt };
})();
