// Browser tests of the web UI in real headless Chromium (Debian's /usr/bin/chromium) driven
// by playwright-core. Started by tests/e2e/tests/ui.rs, which starts `capstan up`, creates
// the data through the mlflow client (make_data.py) and a running job, and passes:
//   CAPSTAN_URL, UI_DATA (make_data.py's JSON), UI_JOB (namespace/name of a running job that
//   prints a line every 300 ms), SCREENSHOT_DIR.
// Exits non-zero on the first failed check, with a screenshot of the page as it was.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const base = process.env.CAPSTAN_URL;
const data = JSON.parse(process.env.UI_DATA);
const job = process.env.UI_JOB;
const shots = process.env.SCREENSHOT_DIR || "target/ui-screenshots";
mkdirSync(shots, { recursive: true });
const TIMEOUT = 30000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
page.setDefaultTimeout(TIMEOUT);
const problems = [];
page.on("pageerror", (e) => problems.push("page error: " + e.message));
page.on("console", (m) => { if (m.type() === "error" && /panicked|hydrat/i.test(m.text())) problems.push("console: " + m.text()); });

let step = "start";
const check = (cond, msg) => { if (!cond) throw new Error(msg); };
const hydrated = () => page.waitForFunction(() => document.documentElement.dataset.hydrated === "1");
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

try {
  step = "home lists the experiment";
  await page.goto(base + "/");
  await hydrated();
  await page.getByRole("link", { name: data.experiment_name }).waitFor();
  await shot("01-home");

  step = "create, rename, delete and restore an experiment";
  const fresh = data.experiment_name.replace("ui-e2e-", "made-in-ui-");
  await page.fill('input[aria-label="New experiment name"]', fresh);
  await page.click('form:has(input[aria-label="New experiment name"]) button[type="submit"]');
  const row = (name) => page.locator("#experiments tbody tr", { has: page.getByRole("link", { name, exact: true }) });
  await row(fresh).waitFor();
  await row(fresh).locator("summary").click();
  await row(fresh).locator('input[aria-label="New name"]').fill(fresh + "-renamed");
  await row(fresh).getByRole("button", { name: "Save" }).click();
  await row(fresh + "-renamed").waitFor();
  await row(fresh + "-renamed").getByRole("button", { name: "Delete" }).click();
  await row(fresh + "-renamed").waitFor({ state: "detached" });
  await page.getByRole("link", { name: "Show deleted experiments" }).click();
  await row(fresh + "-renamed").getByRole("button", { name: "Restore" }).click();
  await row(fresh + "-renamed").waitFor({ state: "detached" });
  await page.getByRole("link", { name: "Show active experiments" }).click();
  await row(fresh + "-renamed").waitFor();

  step = "search experiments";
  await page.fill('input[name="q"]', data.experiment_name);
  await Promise.all([page.waitForURL(/q=/), page.press('input[name="q"]', "Enter")]);
  await hydrated();
  check((await page.locator("#experiments tbody tr").count()) === 1, "search should leave one experiment");

  step = "open the experiment: the runs table loads all runs";
  await page.getByRole("link", { name: data.experiment_name }).click();
  await page.waitForSelector('.cs-runs[data-ready="1"]');
  check((await page.getAttribute(".cs-runs", "data-rows")) === "3", "three runs expected, got " + (await page.getAttribute(".cs-runs", "data-rows")));
  await shot("02-runs");

  step = "filter runs with OR";
  await page.fill("#filter", "params.lr = '0.1' OR params.optimizer = 'sgd'");
  await page.press("#filter", "Enter");
  await page.waitForFunction(() => { const e = document.querySelector(".cs-runs"); return e && e.dataset.ready === "1" && e.dataset.rows === "2"; });
  check(new URL(page.url()).searchParams.get("filter").includes("OR"), "the filter should be in the URL");
  const names = await page.locator(".vt-row:not(.head) .vt-cell.sticky a").allTextContents();
  check(names.sort().join(",") === "alpha,gamma", "OR filter should keep alpha and gamma, got " + names);
  await shot("03-runs-filtered");

  step = "a bad filter shows where it is wrong";
  await page.fill("#filter", "params.lr = '0.1' OR OR metrics.acc > 1");
  await page.waitForSelector("#filter-error");
  const errText = await page.textContent("#filter-error");
  check(/Column \d+/.test(errText), "the error should name a column: " + errText);
  await shot("04-filter-error");

  step = "a run with thousands of metric keys: columns are virtualised";
  const allCols = Array.from({ length: data.wide_keys }, (_, k) => "metrics.k" + String(k).padStart(4, "0")).join(",");
  await page.goto(`${base}/experiments/${data.wide_experiment_id}?cols=${encodeURIComponent(allCols)}`);
  await page.waitForSelector('.cs-runs[data-ready="1"]');
  const cells = await page.locator(".vt-row:not(.head) .vt-cell.num").count();
  check(cells > 0 && cells < 100, `only the visible columns are in the DOM (got ${cells} of ${data.wide_keys})`);
  await page.locator(".vt").evaluate((e) => { e.scrollLeft = 130 * 2000; });
  await page.waitForFunction(() => [...document.querySelectorAll(".vt-row.head .vt-cell")].some((c) => c.textContent.startsWith("metrics.k20")));
  await page.click("#choose-columns");
  check((await page.textContent(".vt-cols")).includes(data.wide_keys + " keys"), "the column chooser lists every key");
  await shot("05a-wide-run");

  step = "open a run: its chart is drawn with every point";
  await page.goto(`${base}/runs/${data.runs.alpha}?metrics=loss`);
  await hydrated();
  await page.waitForSelector('.cs-chart[data-key="loss"][data-ready="1"]');
  const pts = await page.getAttribute('.cs-chart[data-key="loss"]', "data-points");
  check(pts === String(data.loss_points), `chart of loss should have ${data.loss_points} points, got ${pts}`);
  check((await page.locator('.cs-chart[data-key="loss"] canvas').count()) === 1, "uPlot canvas expected");
  check((await page.textContent("#params")).includes("0.1"), "params table should show lr");

  step = "zoom asks the server for the range";
  const over = page.locator('.cs-chart[data-key="loss"] .u-over');
  const box = await over.boundingBox();
  await page.mouse.move(box.x + box.width * 0.1, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector('.cs-chart[data-key="loss"]').dataset.zooms === "1");
  const zpts = +(await page.getAttribute('.cs-chart[data-key="loss"]', "data-points"));
  check(zpts > 0 && zpts < data.loss_points, "zoomed chart should hold fewer points, got " + zpts);
  await shot("05-run");

  step = "artifacts browser previews JSON";
  await page.getByRole("link", { name: "config.json" }).click();
  await page.waitForSelector("#artifact-preview pre");
  check((await page.textContent("#artifact-preview pre")).includes('"activation"'), "JSON preview expected");
  await shot("06-artifacts");

  step = "compare two runs, only differences";
  await page.goto(`${base}/compare?runs=${data.runs.alpha},${data.runs.beta}&diff=1`);
  await hydrated();
  const diffKeys = await page.locator("#params-diff tbody th").allTextContents();
  check(diffKeys.join(",") === "lr", "only lr differs between alpha and beta, got " + diffKeys);
  await page.click("#only-diff");
  await page.waitForFunction(() => document.querySelectorAll("#params-diff tbody th").length === 3);
  await page.waitForSelector('.cs-chart[data-key="loss"][data-ready="1"]');
  await shot("07-compare");

  step = "set an alias in the registry and see it with its history";
  await page.goto(`${base}/models/${encodeURIComponent(data.model)}`);
  await hydrated();
  await page.fill('#set-alias input[name="alias"]', "champion");
  await page.selectOption('#set-alias select[name="version"]', "2");
  await page.click('#set-alias button[type="submit"]');
  await page.waitForFunction(() => (document.querySelector("#aliases")?.textContent || "").includes("@champion \u2192 v2"));
  await page.waitForFunction(() => (document.querySelector("#alias-history")?.textContent || "").includes("@champion"));
  await page.goto(`${base}/models`);
  await page.waitForFunction(() => document.querySelector("#models").textContent.includes("@champion"));
  await shot("08-registry");

  step = "a running job's log grows live";
  const [ns, name] = job.split("/");
  await page.goto(`${base}/jobs/${ns}/${name}`);
  await hydrated();
  await page.waitForFunction(() => /tick \d+/.test(document.querySelector("#job-log").textContent));
  const first = (await page.textContent("#job-log")).length;
  await page.waitForFunction((n) => document.querySelector("#job-log").textContent.length > n + 20, first);
  await page.waitForSelector("#replicas tbody tr");
  await shot("09-job");

  step = "jobs and queues";
  await page.goto(`${base}/jobs`);
  await hydrated();
  await page.waitForFunction((n) => document.querySelector("#jobs").textContent.includes(n), name);
  await shot("10-jobs");

  step = "GPUs";
  await page.goto(`${base}/gpus`);
  await hydrated();
  await page.waitForSelector("#gpu-heat .heat-cell");
  await shot("11-gpus");

  step = "pages render without JavaScript";
  const nojs = await browser.newContext({ javaScriptEnabled: false });
  const p2 = await nojs.newPage();
  await p2.goto(`${base}/experiments/${data.experiment_id}`);
  check((await p2.locator("#runs-static tbody tr").count()) === 3, "server-rendered runs table expected");
  await p2.screenshot({ path: `${shots}/12-runs-nojs.png`, fullPage: true });
  await nojs.close();

  step = "errors show as a message";
  await page.goto(`${base}/runs/00000000000000000000000000000000`);
  await page.waitForSelector("p.error");
  await shot("13-error");

  check(problems.length === 0, "browser errors: " + problems.join("\n"));
  console.log("ui tests: all checks passed; screenshots in " + shots);
  await browser.close();
} catch (e) {
  console.error(`ui tests: FAILED at "${step}": ${e.message}`);
  if (problems.length) console.error(problems.join("\n"));
  try { await page.screenshot({ path: `${shots}/failed.png`, fullPage: true }); } catch (e2) { /* ignore */ }
  await browser.close();
  process.exit(1);
}
