// Where the runs table's time goes in cold page loads of Capstan's UI (a diagnostic beside
// bench/ui/bench.mjs, same browser flags and "ready" test): navigation timing, the resource
// timings of the page's requests (/ui/data/runs, the wasm bundle, the scripts: start, time
// to first byte, end, bytes), and when the table became ready. One JSON object per load.
//
//   node bench/ui/probe.mjs <capstan-url> <experiment-id> [repeat]
import { createRequire } from "node:module";

const require = createRequire(new URL("../../tests/ui/package.json", import.meta.url));
const { chromium } = require("playwright-core");
const [url, exp, rep] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
for (let i = 0; i < +(rep || 1); i++) {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await ctx.newPage();
  await page.goto(`${url}/experiments/${exp}`, { waitUntil: "commit" });
  await page.waitForFunction(() => { const e = document.querySelector(".cs-runs"); return e && e.dataset.ready === "1" && document.querySelector(".vt-row:not(.head) a"); }, null, { polling: "raf", timeout: 60000 });
  const r = await page.evaluate(() => {
    const t = performance.now();
    const nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource").map((e) => ({ name: e.name.replace(location.origin, "").slice(0, 60), start: Math.round(e.startTime), reqStart: Math.round(e.requestStart), ttfb: Math.round(e.responseStart), end: Math.round(e.responseEnd), bytes: e.encodedBodySize }));
    return { ready: Math.round(t), first: window.__capstan && window.__capstan.marks, domContentLoaded: Math.round(nav.domContentLoadedEventEnd), htmlEnd: Math.round(nav.responseEnd), res, timings: window.__capstan && window.__capstan.timings };
  });
  console.log(JSON.stringify(r, null, 1));
  await ctx.close();
}
await browser.close();
