// Capstan UI widgets, mounted on elements the Leptos pages render (after hydration, when the
// page hydrates): .cs-runs (virtualised runs table), .cs-chart (uPlot metric charts with
// server-side zoom), .cs-log (live job logs), .cs-parcoords (parallel coordinates), and the
// theme toggle. State worth sharing lives in the query string (history.replaceState).
(function () {
  "use strict";
  const T = (window.__capstan = window.__capstan || { timings: [], marks: {} });
  const mark = (name, extra) => {
    const t = performance.now();
    T.marks[name] = t;
    T.timings.push(Object.assign({ name, t }, extra || {}));
  };
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k];
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    if (text != null) e.textContent = text;
    return e;
  };
  const qs = () => new URLSearchParams(location.search);
  const setQs = (key, value) => {
    const p = qs();
    if (value == null || value === "") p.delete(key);
    else p.set(key, value);
    const s = p.toString();
    history.replaceState(history.state, "", location.pathname + (s ? "?" + s : ""));
  };
  const fmt = (v) => {
    if (v == null) return "";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e7) ? v.toExponential(3) : String(+v.toPrecision(6));
  };
  const fmtTime = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-");
  async function getJson(url, started) {
    const r = await (started || fetch(url, { headers: { Accept: "application/json" } }));
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) {
      const msg = (body && (body.message || body.error)) || r.status + " " + r.statusText;
      const err = new Error(msg);
      err.body = body;
      throw err;
    }
    return body;
  }
  // Requests started before hydration (the widgets mount after it): same URL, same promise.
  // The page's head may have started the runs table's request already (window.__csEarly,
  // see app.rs): it is used when it asked for the same path and parameters.
  const PRE = new Map();
  const sameRequest = (a, b) => {
    const n = (u) => { const x = new URL(u, location.href); return x.pathname + "?" + [...x.searchParams].map((kv) => kv.join("=")).sort().join("&"); };
    try { return n(a) === n(b); } catch (e) { return false; }
  };
  // Only the first runs request may take it (a later one would get stale data).
  const takeEarly = (url) => {
    const early = window.__csEarly;
    window.__csEarly = null;
    return early && sameRequest(early.url, url) ? early.res : null;
  };
  const prefetch = (url) => { const p = getJson(url, takeEarly(url)); p.catch(() => {}); PRE.set(url, p); };
  const getJsonOnce = (url) => { const p = PRE.get(url); if (p) { PRE.delete(url); return p; } return getJson(url, takeEarly(url)); };
  const runsUrl = (root, cols) => root.dataset.src + (cols ? "&cols=" + encodeURIComponent(cols.join(",")) : "");
  const chartUrl = (root, range, key) => {
    const p = new URLSearchParams();
    (root.dataset.runs || "").split(",").filter(Boolean).forEach((r) => p.append("run_ids", r));
    p.set("metric_key", key || root.dataset.key);
    p.set("max_results", "1000");
    if (range) { p.set("start_step", String(Math.floor(range[0]))); p.set("end_step", String(Math.ceil(range[1]))); }
    return "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?" + p.toString();
  };
  const showError = (root, msg) => {
    root.replaceChildren(el("p", { class: "error", role: "alert" }, msg));
  };

  // ------------------------------------------------------------------ theme
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest && ev.target.closest("#theme-toggle");
    if (!b) return;
    const root = document.documentElement;
    const dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
    root.dataset.theme = dark ? "light" : "dark";
    try { localStorage.setItem("capstan-theme", root.dataset.theme); } catch (e) { /* private mode */ }
    document.querySelectorAll(".cs-chart, .cs-series").forEach((c) => c._cs && c._cs.redraw && c._cs.redraw());
  });

  // ------------------------------------------------------------------ runs table
  const ROW_H = 28, COL_W = 130, FIXED = [["", 34], ["Run", 220], ["Status", 90], ["Started", 150]];
  function mountRuns(root) {
    const st = { data: null, order: null, sort: null, sel: new Set((qs().get("sel") || "").split(",").filter(Boolean)), raf: 0 };
    const sortQ = qs().get("sort");
    if (sortQ) { const [c, d] = sortQ.split(":"); st.sort = { col: c, desc: d === "desc" }; }
    const bar = el("div", { class: "vt-bar" });
    const count = el("span", { id: "runs-count", role: "status" });
    const colsBtn = el("button", { type: "button", "aria-expanded": "false", id: "choose-columns" }, "Columns");
    const compare = el("a", { id: "compare-selected", href: "#" }, "Compare selected (0)");
    const clear = el("button", { type: "button" }, "Clear selection");
    const csv = el("a", { href: "#", id: "export-selected", download: "runs.csv" }, "Export table CSV");
    bar.append(count, colsBtn, compare, clear, csv);
    const scroller = el("div", { class: "vt", tabindex: "0", role: "grid", "aria-label": "Runs" });
    const inner = el("div", { class: "vt-inner" });
    scroller.append(inner);
    root.replaceChildren(bar, scroller);
    root.append(el("p", { class: "loading", role: "status" }, "Loading runs..."));

    const cols = () => (st.data ? st.data.columns : []);
    const fixedW = FIXED.reduce((a, c) => a + c[1], 0);
    const updateBar = () => {
      count.textContent = st.data ? st.data.rows.length + " runs" : "";
      compare.textContent = "Compare selected (" + st.sel.size + ")";
      compare.href = "/compare?runs=" + encodeURIComponent([...st.sel].join(","));
      setQs("sel", [...st.sel].join(","));
    };
    const sortRows = () => {
      const rows = st.data.rows;
      st.order = rows.map((_, i) => i);
      if (!st.sort) return;
      const c = st.sort.col;
      const idx = c === "name" ? 1 : c === "status" ? 2 : c === "start" ? 3 : 4 + cols().indexOf(c);
      if (idx < 1) return;
      const dir = st.sort.desc ? -1 : 1;
      st.order.sort((a, b) => {
        const x = rows[a][idx], y = rows[b][idx];
        if (x == null && y == null) return 0;
        if (x == null) return 1;
        if (y == null) return -1;
        return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
      });
    };
    const headerCell = (label, key, w, cls) => {
      const arrow = st.sort && st.sort.col === key ? (st.sort.desc ? " \u25BC" : " \u25B2") : "";
      const c = el("div", { class: "vt-cell " + (cls || ""), role: "columnheader", tabindex: "0", title: label, style: "width:" + w + "px" }, label + arrow);
      const go = () => {
        st.sort = st.sort && st.sort.col === key ? { col: key, desc: !st.sort.desc } : { col: key, desc: false };
        setQs("sort", key + ":" + (st.sort.desc ? "desc" : "asc"));
        sortRows();
        render(true);
      };
      c.addEventListener("click", go);
      c.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); } });
      return c;
    };
    const render = (force) => {
      if (!st.data) return;
      const rows = st.data.rows, C = cols();
      const totalW = fixedW + C.length * COL_W;
      inner.style.height = (rows.length + 1) * ROW_H + "px";
      inner.style.width = totalW + "px";
      const top = scroller.scrollTop, h = scroller.clientHeight || 600;
      const first = Math.max(0, Math.floor(top / ROW_H) - 5), last = Math.min(rows.length, Math.ceil((top + h) / ROW_H) + 5);
      const left = scroller.scrollLeft, w = scroller.clientWidth || 1000;
      const c0 = Math.max(0, Math.floor((left - fixedW) / COL_W) - 2), c1 = Math.min(C.length, Math.ceil((left + w - fixedW) / COL_W) + 2);
      const key = first + ":" + last + ":" + c0 + ":" + c1;
      if (!force && key === st.lastKey) return;
      st.lastKey = key;
      const frag = document.createDocumentFragment();
      const mkRow = (cls, topPx) => el("div", { class: "vt-row " + cls, role: "row", style: "top:" + topPx + "px;width:" + totalW + "px" });
      const head = mkRow("head", 0);
      head.style.position = "sticky";
      const all = el("input", { type: "checkbox", "aria-label": "Select all runs" });
      all.checked = rows.length > 0 && st.sel.size === rows.length;
      all.addEventListener("change", () => { if (all.checked) rows.forEach((r) => st.sel.add(r[0])); else st.sel.clear(); updateBar(); render(true); });
      const c0cell = el("div", { class: "vt-cell sticky", style: "width:34px" }); c0cell.append(all);
      head.append(c0cell, headerCell("Run", "name", 220, "sticky"), headerCell("Status", "status", 90), headerCell("Started", "start", 150));
      head.querySelectorAll(".sticky")[1].style.left = "34px";
      head.append(el("div", { class: "vt-cell", style: "width:" + c0 * COL_W + "px" }));
      for (let j = c0; j < c1; j++) head.append(headerCell(C[j], C[j], COL_W, "num"));
      frag.append(head);
      for (let i = first; i < last; i++) {
        const r = rows[st.order[i]];
        const row = mkRow(st.sel.has(r[0]) ? "sel" : "", (i + 1) * ROW_H);
        row.dataset.run = r[0];
        const cb = el("input", { type: "checkbox", "aria-label": "Select run " + r[1] });
        cb.checked = st.sel.has(r[0]);
        cb.addEventListener("change", () => { if (cb.checked) st.sel.add(r[0]); else st.sel.delete(r[0]); row.classList.toggle("sel", cb.checked); updateBar(); });
        const s = el("div", { class: "vt-cell sticky", style: "width:34px" }); s.append(cb);
        const n = el("div", { class: "vt-cell sticky", role: "gridcell", style: "width:220px;left:34px" });
        n.append(el("a", { href: "/runs/" + r[0] }, r[1] || r[0]));
        row.append(s, n, el("div", { class: "vt-cell", role: "gridcell", style: "width:90px" }, r[2]), el("div", { class: "vt-cell", role: "gridcell", style: "width:150px" }, fmtTime(r[3])));
        row.append(el("div", { class: "vt-cell", style: "width:" + c0 * COL_W + "px" }));
        for (let j = c0; j < c1; j++) row.append(el("div", { class: "vt-cell num", role: "gridcell", style: "width:" + COL_W + "px" }, fmt(r[4 + j])));
        frag.append(row);
      }
      inner.replaceChildren(frag);
    };
    scroller.addEventListener("scroll", () => { if (!st.raf) st.raf = requestAnimationFrame(() => { st.raf = 0; render(false); }); });
    clear.addEventListener("click", () => { st.sel.clear(); updateBar(); render(true); });
    csv.addEventListener("click", (e) => {
      if (!st.data) return;
      const q = (v) => { const s = v == null ? "" : String(v); return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
      const lines = [["run_id", "run_name", "status", "start_time"].concat(cols()).map(q).join(",")];
      const rows = st.sel.size ? st.order.map((i) => st.data.rows[i]).filter((r) => st.sel.has(r[0])) : st.order.map((i) => st.data.rows[i]);
      rows.forEach((r) => lines.push(r.map(q).join(",")));
      csv.href = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
    });
    // column chooser
    let panel = null;
    colsBtn.addEventListener("click", () => {
      if (panel) { panel.remove(); panel = null; colsBtn.setAttribute("aria-expanded", "false"); return; }
      colsBtn.setAttribute("aria-expanded", "true");
      panel = el("div", { class: "vt-cols", role: "dialog", "aria-label": "Choose columns" });
      const search = el("input", { type: "search", placeholder: "Find a metric, param or tag", "aria-label": "Find a column" });
      const list = el("div");
      const keys = st.data ? [].concat(st.data.keys.metrics.map((k) => "metrics." + k), st.data.keys.params.map((k) => "params." + k), st.data.keys.tags.map((k) => "tags." + k)) : [];
      const fill = () => {
        const needle = search.value.toLowerCase();
        const chosen = new Set(cols());
        const matches = keys.filter((k) => k.toLowerCase().includes(needle));
        list.replaceChildren();
        matches.slice(0, 300).forEach((k) => {
          const lab = el("label", { style: "display:block" });
          const cb = el("input", { type: "checkbox" });
          cb.checked = chosen.has(k);
          cb.addEventListener("change", () => {
            const next = cb.checked ? cols().concat([k]) : cols().filter((c) => c !== k);
            setQs("cols", next.join(","));
            load(next);
          });
          lab.append(cb, document.createTextNode(" " + k));
          list.append(lab);
        });
        if (matches.length > 300) list.append(el("p", { class: "hint" }, (matches.length - 300) + " more: refine the search"));
      };
      search.addEventListener("input", fill);
      panel.append(search, el("p", { class: "hint" }, keys.length + " keys"), list);
      bar.after(panel);
      fill();
      search.focus();
    });
    const load = async (colsWanted) => {
      const url = runsUrl(root, colsWanted);
      const t0 = performance.now();
      try {
        const data = await getJsonOnce(url);
        st.data = data;
        sortRows();
        updateBar();
        const loadingP = root.querySelector("p.loading");
        if (loadingP) loadingP.remove();
        render(true);
        mark("runs-table-ready", { rows: data.rows.length, ms: performance.now() - t0 });
        root.dataset.ready = "1";
        root.dataset.rows = String(data.rows.length);
      } catch (e) {
        const b = e.body;
        root.dataset.ready = "error";
        const msg = b && b.column ? "Filter error at column " + b.column + ": " + b.error : "Could not load runs: " + e.message;
        scroller.replaceChildren(el("p", { class: "error", role: "alert" }, msg));
        const loadingP = root.querySelector("p.loading");
        if (loadingP) loadingP.remove();
      }
    };
    const wanted = qs().get("cols");
    load(wanted ? wanted.split(",").filter(Boolean) : null);
    return { destroy() {} };
  }

  // ------------------------------------------------------------------ charts
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  function ema(ys, alpha) {
    if (!alpha) return ys;
    const out = new Array(ys.length);
    let last = 0, n = 0;
    for (let i = 0; i < ys.length; i++) {
      const y = ys[i];
      if (y == null || !isFinite(y)) { out[i] = y; continue; }
      last = last * alpha + (1 - alpha) * y;
      n++;
      out[i] = last / (1 - Math.pow(alpha, n));
    }
    return out;
  }
  function mountChart(root) {
    const runs = (root.dataset.runs || "").split(",").filter(Boolean);
    const names = (root.dataset.names || "").split(",");
    const key = root.dataset.key;
    // x axis: step, time, relative time, or the value of another metric of the same run at
    // the same step (`metric:<key>`); the choice is the page's `x` query parameter.
    const xKeys = (root.dataset.xkeys || "").split(",").filter((k) => k && k !== key);
    const xModes = ["step", "time", "rel"].concat(xKeys.map((k) => "metric:" + k));
    const wantX = qs().get("x");
    const st = { series: null, xMode: xModes.includes(wantX) ? wantX : "step", log: false, smooth: 0, range: null, plot: null, live: root.dataset.live === "1", timer: 0, seq: 0 };
    const xMetric = () => (st.xMode.startsWith("metric:") ? st.xMode.slice(7) : null);
    const controls = el("div", { class: "chart-controls" });
    const xSel = el("select", { "aria-label": "x axis of " + key, class: "x-axis" });
    [["step", "Step"], ["time", "Time"], ["rel", "Relative time"]].forEach(([v, l]) => xSel.append(el("option", { value: v }, l)));
    xKeys.forEach((k) => xSel.append(el("option", { value: "metric:" + k }, "Metric " + k)));
    xSel.value = st.xMode;
    root.dataset.x = st.xMode;
    const logLab = el("label"); const logCb = el("input", { type: "checkbox" }); logLab.append(logCb, document.createTextNode(" log scale"));
    const smLab = el("label"); const sm = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", "aria-label": "smoothing of " + key }); smLab.append(document.createTextNode("smoothing "), sm);
    const reset = el("button", { type: "button" }, "Reset zoom");
    const info = el("span", { class: "hint", role: "status" });
    controls.append(xSel, logLab, smLab, reset, info);
    const area = el("div", { class: "plot" });
    root.replaceChildren(controls, area);
    if (typeof uPlot === "undefined") { showError(area, "Chart library (uPlot) not loaded: run scripts/build-ui.sh"); return { destroy() {} }; }

    const num = (v) => (typeof v === "number" ? v : Number(v));
    const fetchSeries = async (range) => {
      const xk = xMetric();
      const [body, xbody] = await Promise.all([getJsonOnce(chartUrl(root, range)), xk ? getJson(chartUrl(root, range, xk)) : null]);
      const by = new Map(runs.map((r) => [r, { step: [], time: [], value: [], xm: [] }]));
      (body.metrics || []).forEach((m) => {
        const s = by.get(m.run_id);
        if (!s) return;
        s.step.push(m.step); s.time.push(m.timestamp); s.value.push(num(m.value));
      });
      if (xbody) {
        // Join by step: the x metric's value logged at the same step of the same run.
        const xs = new Map(runs.map((r) => [r, new Map()]));
        (xbody.metrics || []).forEach((m) => { const x = xs.get(m.run_id); if (x) x.set(m.step, num(m.value)); });
        runs.forEach((r) => { const s = by.get(r), x = xs.get(r); s.xm = s.step.map((k) => (x.has(k) ? x.get(k) : null)); });
      }
      return runs.map((r) => by.get(r));
    };
    const build = () => {
      const series = st.series;
      const xk = xMetric();
      const parts = series.map((s) => {
        let xs;
        if (xk) {
          // Points where the x metric was logged at the same step, in increasing x.
          const idx = [];
          for (let i = 0; i < s.value.length; i++) if (s.xm[i] != null && isFinite(s.xm[i])) idx.push(i);
          idx.sort((a, b) => s.xm[a] - s.xm[b]);
          const ys0 = ema(idx.map((i) => s.value[i]), st.smooth);
          const ox = [], oy = [];
          idx.forEach((i, j) => {
            let y = ys0[j];
            if (st.log && !(y > 0)) y = null;
            if (ox.length && s.xm[i] === ox[ox.length - 1]) { oy[oy.length - 1] = y; return; }
            ox.push(s.xm[i]); oy.push(y);
          });
          return [ox, oy];
        }
        if (st.xMode === "step") xs = s.step;
        else if (st.xMode === "time") xs = s.time.map((t) => t / 1000);
        else { const t0 = s.time.length ? s.time[0] : 0; xs = s.time.map((t) => (t - t0) / 1000); }
        // uPlot wants increasing x: keep the last value of equal x.
        const ox = [], oy = [];
        const ys = ema(s.value, st.smooth);
        for (let i = 0; i < xs.length; i++) {
          let y = ys[i];
          if (st.log && !(y > 0)) y = null;
          if (ox.length && xs[i] <= ox[ox.length - 1]) { if (xs[i] === ox[ox.length - 1]) oy[oy.length - 1] = y; continue; }
          ox.push(xs[i]); oy.push(y);
        }
        return [ox, oy];
      });
      return parts.length === 1 ? parts[0] : uPlot.join(parts);
    };
    const draw = (keepScale) => {
      const t0 = performance.now();
      const data = build();
      const npts = st.series.reduce((a, s) => a + s.value.length, 0);
      const css = getComputedStyle(document.documentElement);
      const fg = css.getPropertyValue("--fg").trim() || "#222", grid = css.getPropertyValue("--line").trim() || "#ddd";
      const width = Math.max(300, area.clientWidth || root.clientWidth || 460);
      const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
      if (st.plot && keepScale) {
        st.plot.setData(data, false);
        if (st.range && st.xMode === "step") st.plot.setScale("x", { min: st.range[0], max: st.range[1] });
        else st.plot.setScale("x", { min: data[0][0], max: data[0][data[0].length - 1] });
      } else {
        if (st.plot) st.plot.destroy();
        const opts = {
          width, height: 240,
          scales: { x: { time: st.xMode === "time" }, y: { distr: st.log ? 3 : 1 } },
          axes: [axis, Object.assign({ size: 60 }, axis)],
          legend: { live: true },
          cursor: { drag: { x: true, y: false, setScale: false } },
          series: [{ label: xMetric() || (st.xMode === "step" ? "step" : "time") }].concat(st.series.map((s, i) => ({
            label: names[i] || (runs.length > 1 ? runs[i].slice(0, 8) : key), stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true,
            points: { show: s.value.length <= 30 || !!xMetric(), size: xMetric() ? 3 : 6, fill: PALETTE[i % PALETTE.length] },
          }))),
          hooks: {
            setSelect: [(u) => {
              if (u.select.width < 3) return;
              const min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
              u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
              zoom([min, max]);
            }],
          },
        };
        st.plot = new uPlot(opts, data, area);
      }
      root.dataset.points = String(npts);
      root.dataset.drawn = String(data[0].length);
      root.dataset.x = st.xMode;
      info.textContent = npts + " points" + (xMetric() ? ", " + data[0].length + " at steps where " + xMetric() + " was logged" : "") + (st.range ? " (zoomed)" : "");
      mark("chart-drawn", { key, points: npts, ms: performance.now() - t0 });
    };
    const zoom = async (range) => {
      const seq = ++st.seq;
      const t0 = performance.now();
      if (st.xMode !== "step") { st.plot.setScale("x", { min: range[0], max: range[1] }); return; }
      st.range = range;
      try {
        const series = await fetchSeries(range);
        if (seq !== st.seq) return;
        st.series = series;
        draw(true);
        root.dataset.zooms = String((+root.dataset.zooms || 0) + 1);
        mark("zoom-redrawn", { key, ms: performance.now() - t0 });
      } catch (e) { info.textContent = "zoom failed: " + e.message; }
    };
    const load = async () => {
      const t0 = performance.now();
      try {
        st.series = await fetchSeries(st.range);
        draw(false);
        root.dataset.ready = "1";
        mark("chart-ready", { key, ms: performance.now() - t0 });
      } catch (e) {
        root.dataset.ready = "error";
        showError(area, "Could not load " + key + ": " + e.message);
      }
    };
    const setX = (mode) => {
      if (!xModes.includes(mode) || mode === st.xMode) return;
      const refetch = !!xMetric() || mode.startsWith("metric:");
      st.xMode = mode; xSel.value = mode; st.range = null; st.seq++;
      if (refetch || !st.series) load(); else draw(false);
    };
    // One x axis for the page: kept in the query string and applied to every chart.
    xSel.addEventListener("change", () => {
      const mode = xSel.value;
      setQs("x", mode === "step" ? null : mode);
      document.querySelectorAll(".cs-chart").forEach((c) => { if (c._cs && c._cs.setX) c._cs.setX(mode); });
      setX(mode);
    });
    logCb.addEventListener("change", () => { st.log = logCb.checked; draw(false); });
    sm.addEventListener("input", () => { st.smooth = +sm.value; draw(true); });
    reset.addEventListener("click", () => { st.range = null; st.seq++; load(); });
    load();
    if (st.live) st.timer = setInterval(() => { if (!st.range && document.visibilityState === "visible") fetchSeries(null).then((s) => { st.series = s; draw(true); }).catch(() => {}); }, 5000);
    return { destroy() { clearInterval(st.timer); if (st.plot) st.plot.destroy(); }, redraw() { if (st.series) draw(false); }, setX };
  }

  // ------------------------------------------------------------------ deployment traffic
  // .cs-series: request rate or latency per version of a deployment over time, from
  // /ui/data/traffic ({t, step, versions: [{version, rps, errors, p50, p99, total}]}), polled.
  function mountSeries(root) {
    const kind = root.dataset.kind || "rps";
    const st = { plot: null, timer: 0, body: null };
    const info = el("span", { class: "hint", role: "status" });
    const area = el("div", { class: "plot" });
    root.replaceChildren(el("div", { class: "chart-controls" }, null), area);
    root.firstChild.append(info);
    if (typeof uPlot === "undefined") { showError(area, "Chart library (uPlot) not loaded: run scripts/build-ui.sh"); return { destroy() {} }; }
    const draw = () => {
      const b = st.body;
      const css = getComputedStyle(document.documentElement);
      const fg = css.getPropertyValue("--fg").trim() || "#222", grid = css.getPropertyValue("--line").trim() || "#ddd";
      const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
      const series = [{ label: "time" }], data = [b.t];
      b.versions.forEach((v, i) => {
        const color = PALETTE[i % PALETTE.length];
        if (kind === "rps") {
          series.push({ label: "v" + v.version + " req/s", stroke: color, width: 1.5 });
          data.push(v.rps);
          series.push({ label: "v" + v.version + " errors/s", stroke: color, dash: [4, 4], width: 1 });
          data.push(v.errors);
        } else {
          // Points too: a burst of requests fills one step, which a line alone would not show.
          series.push({ label: "v" + v.version + " p50", stroke: color, width: 1.5, spanGaps: true, points: { show: true, size: 5, fill: color } });
          data.push(v.p50);
          series.push({ label: "v" + v.version + " p99", stroke: color, dash: [4, 4], width: 1.5, spanGaps: true, points: { show: true, size: 5 } });
          data.push(v.p99);
        }
      });
      info.className = "hint";
      const total = b.versions.reduce((a, v) => a + v.total, 0);
      root.dataset.requests = String(total);
      root.dataset.versions = b.versions.map((v) => v.version).join(",");
      info.textContent = b.versions.length ? total + " requests in the window (" + b.versions.map((v) => "v" + v.version + ": " + v.total).join(", ") + ")" : "No requests through the server in the window.";
      const width = Math.max(300, area.clientWidth || root.clientWidth || 460);
      if (st.plot && st.plot.series.length === series.length) { st.plot.setData(data); return; }
      if (st.plot) st.plot.destroy();
      st.plot = new uPlot({ width, height: 220, scales: { x: { time: true } }, axes: [axis, Object.assign({ size: 60 }, axis)], legend: { live: true }, series }, data, area);
    };
    const load = async () => {
      try {
        st.body = await getJson(root.dataset.src);
        draw();
        root.dataset.ready = "1";
      } catch (e) {
        root.dataset.ready = "error";
        info.textContent = "Could not load the request series: " + e.message;
        info.className = "error";
      }
    };
    load();
    if (root.dataset.live === "1") st.timer = setInterval(() => { if (document.visibilityState === "visible") load(); }, 2000);
    return { destroy() { clearInterval(st.timer); if (st.plot) st.plot.destroy(); }, redraw() { if (st.body) { if (st.plot) st.plot.destroy(); st.plot = null; draw(); } } };
  }

  // ------------------------------------------------------------------ live log
  function mountLog(root) {
    const st = { stop: false, ctrl: null, timer: 0 };
    const live = root.dataset.live === "1";
    root.textContent = "";
    const append = (text) => {
      const atEnd = root.scrollTop + root.clientHeight >= root.scrollHeight - 4;
      root.append(document.createTextNode(text));
      if (root.textContent.length > 2000000) root.textContent = root.textContent.slice(-1000000);
      if (atEnd) root.scrollTop = root.scrollHeight;
      root.dataset.bytes = String(root.textContent.length);
    };
    const run = async () => {
      if (st.stop) return;
      st.ctrl = new AbortController();
      try {
        const r = await fetch(root.dataset.src + (live ? "&follow=true" : ""), { signal: st.ctrl.signal });
        if (!r.ok) {
          let msg = r.status + "";
          try { const b = await r.json(); msg = b.error || b.message || msg; } catch (e) { /* text */ }
          root.dataset.state = "waiting";
          if (!root.textContent) root.textContent = "(no log yet: " + msg + ")";
          if (live) st.timer = setTimeout(run, 2000);
          return;
        }
        if (root.textContent.startsWith("(no log yet")) root.textContent = "";
        root.dataset.state = "streaming";
        if (!r.body || !r.body.getReader) { append(await r.text()); return; }
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          append(dec.decode(value, { stream: true }));
        }
        root.dataset.state = "ended";
      } catch (e) {
        if (!st.stop) { root.dataset.state = "error"; append("\n[log stream interrupted: " + e.message + "]\n"); }
      }
    };
    run();
    return { destroy() { st.stop = true; clearTimeout(st.timer); if (st.ctrl) st.ctrl.abort(); } };
  }

  // ------------------------------------------------------------------ parallel coordinates
  function mountParcoords(root) {
    let d;
    try { d = JSON.parse(root.dataset.json); } catch (e) { showError(root, "bad data"); return { destroy() {} }; }
    const axes = [];
    const numeric = (vals) => vals.every((v) => v != null && v !== "" && isFinite(Number(v)));
    const pkeys = new Set(); d.params.forEach((p) => Object.keys(p).forEach((k) => pkeys.add(k)));
    [...pkeys].sort().forEach((k) => { const vals = d.params.map((p) => p[k]); if (numeric(vals)) axes.push({ label: "params." + k, vals: vals.map(Number) }); });
    const mkeys = new Set(); d.metrics.forEach((m) => Object.keys(m).forEach((k) => mkeys.add(k)));
    [...mkeys].sort().filter((k) => !k.startsWith("system/")).forEach((k) => { const vals = d.metrics.map((m) => m[k]); if (numeric(vals)) axes.push({ label: k, vals: vals.map(Number) }); });
    const A = axes.slice(0, 12);
    if (A.length < 2) { root.replaceChildren(el("p", { class: "hint" }, "Not enough numeric params or metrics shared by these runs.")); return { destroy() {} }; }
    const W = 1000, H = 300, pad = 30, step = (W - 2 * pad) / (A.length - 1);
    let svg = '<svg viewBox="0 0 ' + W + " " + (H + 40) + '" role="img" aria-label="Parallel coordinates of the compared runs">';
    A.forEach((a, i) => {
      const x = pad + i * step;
      a.min = Math.min(...a.vals); a.max = Math.max(...a.vals);
      svg += '<line x1="' + x + '" x2="' + x + '" y1="' + pad + '" y2="' + H + '" stroke="currentColor" opacity=".4"/>';
      svg += '<text x="' + x + '" y="' + (H + 16) + '" text-anchor="middle">' + esc(a.label.slice(0, 24)) + "</text>";
      svg += '<text x="' + (x + 3) + '" y="' + (pad - 4) + '">' + esc(fmt(a.max)) + "</text>";
      svg += '<text x="' + (x + 3) + '" y="' + (H + 30) + '">' + esc(fmt(a.min)) + "</text>";
    });
    d.runs.forEach((name, r) => {
      const pts = A.map((a, i) => { const t = a.max === a.min ? 0.5 : (a.vals[r] - a.min) / (a.max - a.min); return (pad + i * step).toFixed(1) + "," + (H - t * (H - pad)).toFixed(1); });
      svg += '<path d="M' + pts.join("L") + '" stroke="' + PALETTE[r % PALETTE.length] + '"><title>' + esc(name) + "</title></path>";
    });
    svg += "</svg>";
    root.innerHTML = svg;
    return { destroy() {} };
  }

  // ------------------------------------------------------------------ mounting
  const WIDGETS = [[".cs-runs", mountRuns], [".cs-chart", mountChart], [".cs-series", mountSeries], [".cs-log", mountLog], [".cs-parcoords", mountParcoords]];
  const sig = (e) => [e.dataset.src, e.dataset.runs, e.dataset.key, e.dataset.json].join("|");
  function scan() {
    for (const [sel, mount] of WIDGETS) {
      document.querySelectorAll(sel).forEach((e) => {
        const s = sig(e);
        if (e._cs && e._csSig === s) return;
        if (e._cs) { try { e._cs.destroy(); } catch (err) { /* ignore */ } }
        e._csSig = s;
        try { e._cs = mount(e); } catch (err) { showError(e, "Widget failed: " + err.message); }
      });
    }
  }
  let pending = 0;
  const schedule = () => { if (!pending) pending = requestAnimationFrame(() => { pending = 0; scan(); }); };
  function start() {
    scan();
    new MutationObserver(schedule).observe(document.body, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-src", "data-runs", "data-key", "data-json"] });
  }
  // Widgets add children to elements the page owns: wait for hydration when a bundle is there.
  const hydrating = document.querySelector('link[rel="modulepreload"][href*="capstan_ui"]');
  if (hydrating) {
    document.querySelectorAll(".cs-runs").forEach((e) => { const c = qs().get("cols"); prefetch(runsUrl(e, c ? c.split(",").filter(Boolean) : null)); });
    document.querySelectorAll(".cs-chart").forEach((e) => prefetch(chartUrl(e, null)));
  }
  if (!hydrating || document.documentElement.dataset.hydrated) start();
  else {
    const obs = new MutationObserver(() => { if (document.documentElement.dataset.hydrated) { obs.disconnect(); start(); } });
    obs.observe(document.documentElement, { attributes: true, attributeFilter: ["data-hydrated"] });
    setTimeout(() => { if (!document.documentElement.dataset.hydrated) { obs.disconnect(); start(); } }, 8000);
  }
})();

// Manual pipeline runs: a form with data-run-pipeline="NAMESPACE/NAME" posts to the pipelines
// API (parameters typed as "name=value name2=value2") and opens the new run; an error from the
// API is shown next to the button.
(function () {
  "use strict";
  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.runPipeline) return;
    ev.preventDefault();
    const [ns, name] = form.dataset.runPipeline.split("/");
    const out = form.querySelector(".run-result");
    const parameters = {};
    const typed = (form.querySelector("[data-run-parameters]") || { value: "" }).value.trim();
    for (const pair of typed ? typed.split(/\s+/) : []) {
      const eq = pair.indexOf("=");
      if (eq <= 0) { out.textContent = `Not started: "${pair}" is not name=value`; out.className = "run-result error"; return; }
      parameters[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    out.textContent = "Starting…";
    out.className = "run-result";
    try {
      const url = `/api/v1/namespaces/${encodeURIComponent(ns)}/pipelines/${encodeURIComponent(name)}/runs`;
      const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ parameters }) });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        out.textContent = "Not started: " + (body.message || body.error || `HTTP ${r.status}`);
        out.className = "run-result error";
        return;
      }
      location.href = `/pipelineruns/${encodeURIComponent(ns)}/${encodeURIComponent(body.name)}`;
    } catch (err) {
      out.textContent = "Not started: " + err.message;
      out.className = "run-result error";
    }
  });
})();
