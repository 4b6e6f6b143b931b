// The UI benchmark's browser half: the same headless Chromium (Debian's, playwright-core)
// against Capstan's UI and MLflow's UI on the same data (bench/ui/load.py), side by side.
//
//   node bench/ui/bench.mjs <capstan-url> <capstan-data-json> <mlflow-url> <mlflow-data-json>
//
// Each figure is the median of REPEAT cold loads (a fresh browser context: empty cache),
// measured inside the page with performance.now() (ms since navigation start), polled on
// every animation frame, the same way for both UIs:
//   table: until the runs table of the 10,000-run experiment shows its first rows
//          (Capstan: every run loaded into the virtualised table; MLflow: its first page);
//   chart: until the run page's chart of the 1,000,000-point metric is drawn;
//   zoom:  from the mouse-up of a drag-zoom on that chart until it is redrawn with the
//          zoomed range's points from the server.
// Prints one JSON object.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/ui/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [capUrl, capData, mlUrl, mlData] = process.argv.slice(2);
const cap = JSON.parse(capData), ml = JSON.parse(mlData);
const REPEAT = +(process.env.REPEAT || 3);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

// Resolves with performance.now() of the first animation frame where `pred` holds.
const until = (page, pred, arg) =>
  page.waitForFunction(
    ([src, a]) => {
      // eslint-disable-next-line no-new-func
      const f = new Function("a", "return (" + src + ")(a)");
      if (f(a)) { window.__benchT = performance.now(); return true; }
      return false;
    },
    [pred.toString(), arg],
    { polling: "raf", timeout: 180000 },
  ).then(() => page.evaluate(() => window.__benchT));

async function fresh() {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await ctx.newPage();
  return { ctx, page };
}

async function drag(page, selector) {
  const box = await page.locator(selector).first().boundingBox();
  const y = box.y + box.height / 2;
  await page.evaluate(() => {
    window.__benchUp = null;
    document.addEventListener("mouseup", () => { window.__benchUp = performance.now(); }, { capture: true, once: true });
  });
  await page.mouse.move(box.x + box.width * 0.40, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.45, y, { steps: 4 });
  await page.mouse.up();
}

const capstan = {
  async table() {
    const { ctx, page } = await fresh();
    await page.goto(`${capUrl}/experiments/${cap.experiment_id}`, { waitUntil: "commit" });
    const t = await until(page, () => { const e = document.querySelector(".cs-runs"); return e && e.dataset.ready === "1" && document.querySelector(".vt-row:not(.head) a"); });
    const rows = await page.getAttribute(".cs-runs", "data-rows");
    await ctx.close();
    return { ms: t, rows: +rows };
  },
  async chart() {
    const { ctx, page } = await fresh();
    await page.goto(`${capUrl}/runs/${cap.big_run}?metrics=big`, { waitUntil: "commit" });
    const t = await until(page, () => { const e = document.querySelector('.cs-chart[data-key="big"]'); return e && e.dataset.ready === "1" && e.querySelector("canvas"); });
    const points = await page.getAttribute('.cs-chart[data-key="big"]', "data-points");
    await drag(page, '.cs-chart[data-key="big"] .u-over');
    const z = await until(page, () => document.querySelector('.cs-chart[data-key="big"]').dataset.zooms === "1");
    const up = await page.evaluate(() => window.__benchUp);
    const zpoints = await page.getAttribute('.cs-chart[data-key="big"]', "data-points");
    await ctx.close();
    return { ms: t, points: +points, zoom_ms: z - up, zoom_points: +zpoints };
  },
};

const mlflow = {
  async table() {
    const { ctx, page } = await fresh();
    await page.goto(`${mlUrl}/#/experiments/${ml.experiment_id}/runs`, { waitUntil: "commit" });
    const t = await until(page, () => { const r = document.querySelector(".ag-center-cols-container .ag-row"); const root = document.querySelector(".ag-root");
      return r && root && /run-\d+/.test(root.textContent || ""); });
    const rows = await page.evaluate(() => document.querySelectorAll(".ag-center-cols-container .ag-row").length);
    await ctx.close();
    return { ms: t, rows };
  },
  async chart() {
    const { ctx, page } = await fresh();
    await page.goto(`${mlUrl}/#/experiments/${ml.big_experiment_id}/runs/${ml.big_run}/model-metrics`, { waitUntil: "commit" });
    const lineD = () => { const p = document.querySelector(".js-plotly-plot .scatterlayer path.js-line"); return p ? p.getAttribute("d") || "" : ""; };
    const t = await until(page, (src) => { const p = document.querySelector(".js-plotly-plot .scatterlayer path.js-line"); return p && (p.getAttribute("d") || "").length > 200; });
    const before = await page.evaluate(lineD);
    await drag(page, ".js-plotly-plot .nsewdrag");
    const z = await until(page, (b) => { const p = document.querySelector(".js-plotly-plot .scatterlayer path.js-line"); return p && (p.getAttribute("d") || "") !== b && (p.getAttribute("d") || "").length > 50; }, before);
    const up = await page.evaluate(() => window.__benchUp);
    await ctx.close();
    return { ms: t, zoom_ms: z - up };
  },
};

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
async function measure(ui) {
  const tables = [], charts = [], zooms = [];
  let last = {};
  for (let i = 0; i < REPEAT; i++) {
    const t = await ui.table(); tables.push(t.ms); last.table = t;
    const c = await ui.chart(); charts.push(c.ms); zooms.push(c.zoom_ms); last.chart = c;
  }
  return { table_ms: median(tables), chart_ms: median(charts), zoom_ms: median(zooms), samples: { tables, charts, zooms }, last };
}

const out = { repeat: REPEAT };
out.capstan = await measure(capstan);
out.mlflow = await measure(mlflow);
out.ratio = {
  table: out.mlflow.table_ms / out.capstan.table_ms,
  chart: out.mlflow.chart_ms / out.capstan.chart_ms,
  zoom: out.mlflow.zoom_ms / out.capstan.zoom_ms,
};
console.log(JSON.stringify(out, null, 1));
await browser.close();
