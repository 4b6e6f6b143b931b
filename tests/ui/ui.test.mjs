// Browser tests of the web UI in real headless Chromium (Debian's /usr/bin/chromium) driven
// by playwright-core. Started by tests/e2e/tests/ui.rs, which starts `capstan up`, creates
// the data through the mlflow client (make_data.py) and a running job, and passes:
//   CAPSTAN_URL, UI_DATA (make_data.py's JSON), UI_JOB (namespace/name of a running job that
//   prints a line every 300 ms), SCREENSHOT_DIR, UI_OPS (the deployment, pipeline, pipeline
//   runs with their commits and train runs, and the model they registered: ui.rs).
// Exits non-zero on the first failed check, with a screenshot of the page as it was.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const base = process.env.CAPSTAN_URL;
const data = JSON.parse(process.env.UI_DATA);
const job = process.env.UI_JOB;
const ops = JSON.parse(process.env.UI_OPS);
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

  step = "deployments list: phase, traffic split";
  const dep = ops.deployment;
  await page.goto(`${base}/deployments`);
  await hydrated();
  const depRow = page.locator("#deployments tbody tr", { has: page.getByRole("link", { name: "default/" + dep, exact: true }) });
  await depRow.waitFor();
  const split = await depRow.locator("td.traffic").textContent();
  check(split.includes("v1 70%") && split.includes("v2 30%"), "traffic split v1 70% / v2 30% expected, got " + split);
  check((await depRow.textContent()).includes("Canary"), "the deployment is in its Canary phase: " + (await depRow.textContent()));
  // The browser runs well within 10 minutes of the requests (node is bounded to 400 s).
  check(+(await depRow.locator("td.requests").textContent()) === ops.requests, "the list counts the requests of the last 10 minutes: " + (await depRow.locator("td.requests").textContent()));
  await shot("14-deployments");

  step = "a deployment: versions with role and weight, canary verdict, request charts";
  await depRow.getByRole("link", { name: "default/" + dep, exact: true }).click();
  await page.waitForSelector('#versions tr[data-version="2"]');
  const vrow = (v) => page.locator(`#versions tr[data-version="${v}"]`);
  check((await vrow(1).locator("td.role").textContent()) === "Stable", "v1 is the stable version");
  check((await vrow(2).locator("td.role").textContent()) === "Canary", "v2 is the canary");
  check((await vrow(1).locator("td.weight").textContent()).includes("70%"), "v1 weight 70%: " + (await vrow(1).locator("td.weight").textContent()));
  check((await vrow(2).locator("td.weight").textContent()).includes("30%"), "v2 weight 30%: " + (await vrow(2).locator("td.weight").textContent()));
  check((await vrow(1).textContent()).includes(ops.runs[0].name), "v1 was made by the first pipeline run");
  check((await page.textContent("#canary .verdict")) === "Wait", "the canary waits for more requests: " + (await page.textContent("#canary")));
  await page.waitForSelector('#rate-chart[data-ready="1"] canvas');
  await page.waitForSelector('#latency-chart[data-ready="1"] canvas');
  const counted = +(await page.getAttribute("#rate-chart", "data-requests"));
  check(counted === ops.requests, `the rate chart counts the ${ops.requests} requests sent through the server, got ${counted}`);
  check((await page.getAttribute("#rate-chart", "data-versions")) === "1,2", "both versions answered requests");
  await page.getByRole("link", { name: "1 min", exact: true }).click();
  await page.waitForURL(/window=1$/);
  await page.waitForFunction(() => { const e = document.querySelector("#rate-chart"); return e && e.dataset.ready === "1" && e.dataset.src.includes("window=60&step=1"); });
  check((await page.textContent("#requests-hint")).includes("last 1 min in 1 s steps"), "the window is named: " + (await page.textContent("#requests-hint")));
  await shot("15-deployment");

  step = "pipelines list";
  await page.goto(`${base}/pipelines`);
  await hydrated();
  const pipeRow = page.locator("#pipelines tbody tr", { has: page.getByRole("link", { name: "default/" + ops.pipeline, exact: true }) });
  await pipeRow.waitFor();
  check((await pipeRow.locator("td.num").nth(1).textContent()) === "2", "two runs of the pipeline");
  check((await pipeRow.textContent()).includes("git push to https://example.com/capstan/ui-models.git"), "the trigger is described");
  await shot("16-pipelines");

  step = "a pipeline: the DAG with dependsOn and gates, its runs with commits";
  await pipeRow.getByRole("link", { name: "default/" + ops.pipeline, exact: true }).click();
  await page.waitForSelector('#steps li[data-step="publish"]');
  const publish = await page.textContent('#steps li[data-step="publish"]');
  check(publish.includes("after register") && publish.includes("params.branch == 'release'"), "publish step: " + publish);
  check((await page.textContent('#steps li[data-step="train"]')).includes("starts first"), "train starts first");
  const runsText = await page.textContent("#pipeline-runs");
  check(ops.runs.every((r) => runsText.includes(r.sha.slice(0, 7)) && runsText.includes(r.name)), "both runs with their commits: " + runsText);
  await shot("17-pipeline");

  step = "a pipeline run: commit, step states, skip reason, lineage";
  const firstRun = ops.runs[0];
  await page.getByRole("link", { name: firstRun.name, exact: true }).click();
  await page.waitForSelector("#commit-sha");
  check((await page.textContent("#commit-sha")) === firstRun.sha, "the full commit SHA");
  check((await page.textContent("#commit")).includes("Ada Lovelace <ada@example.com>"), "the commit's author");
  const phase = async (s) => page.getAttribute(`#run-steps tr[data-step="${s}"]`, "data-phase");
  for (const s of ["train", "register", "deploy"]) check((await phase(s)) === "Succeeded", `step ${s} succeeded, got ${await phase(s)}`);
  check((await phase("publish")) === "Skipped", "publish was skipped, got " + (await phase("publish")));
  check((await page.textContent('#run-steps tr[data-step="publish"] td.reason')) === "WhenFalse", "skipped because its when was false");
  const why = await page.textContent('#run-steps tr[data-step="publish"] td.message');
  check(why.includes("params.branch"), "the skip reason shows the gate's values: " + why);
  const lineage = page.locator("#lineage");
  check((await lineage.locator("li").first().textContent()).includes(firstRun.sha.slice(0, 7)), "the chain starts at the commit");
  check((await lineage.locator("li.l-run a").first().textContent()) === firstRun.train_run, "then the train run");
  check((await lineage.locator("li.l-version a").textContent()) === `${ops.model} v1`, "then model version 1");
  check((await lineage.locator("li.l-deployment a").textContent()) === dep, "then the deployment");
  await shot("18-pipelinerun");
  await page.click("#theme-toggle");
  check((await page.evaluate(() => document.documentElement.dataset.theme)) === "dark", "the theme toggle switches to dark");
  await shot("18b-pipelinerun-dark");
  await page.click("#theme-toggle");
  const runUrl = page.url();

  step = "lineage links resolve: run";
  await lineage.locator("li.l-run a").first().click();
  await page.waitForURL("**/runs/" + firstRun.train_run);
  await page.waitForSelector("#metrics");
  check((await page.textContent("#metrics")).includes("accuracy"), "the train run's page shows its accuracy");
  check((await page.textContent("#registered-as")).includes(`${ops.model} v1`), "the run page links forward to the version made from it");
  check((await page.locator("p.error").count()) === 0, "no error on the run page");

  step = "lineage links resolve: deployment";
  await page.goto(runUrl);
  await hydrated();
  await page.locator("#lineage li.l-deployment a").click();
  await page.waitForURL(`**/deployments/default/${dep}`);
  await page.waitForSelector('#versions tr[data-version="1"]');

  step = "lineage links resolve: model version, with its pipeline run and deployments";
  await page.goto(runUrl);
  await hydrated();
  await page.locator("#lineage li.l-version a").click();
  await page.waitForURL(`**/models/${encodeURIComponent(ops.model)}#v1`);
  await page.waitForSelector("#v1 td.pipeline-run a");
  check((await page.textContent("#v1 td.pipeline-run a")) === firstRun.name, "v1 made by the first run");
  check((await page.textContent("#v2 td.pipeline-run a")) === ops.runs[1].name, "v2 made by the second run");
  const s1 = await page.textContent("#v1 td.serving"), s2 = await page.textContent("#v2 td.serving");
  check(s1.includes(dep) && s1.includes("Stable 70%"), "v1 served as stable at 70%: " + s1);
  check(s2.includes(dep) && s2.includes("Canary 30%"), "v2 served as the canary at 30%: " + s2);
  check((await page.textContent("#v1")).includes(firstRun.train_run), "v1's source run is the train run");
  await shot("19-registry-lineage");

  step = "chart x axis by another metric, kept in the query string";
  await page.goto(`${base}/runs/${data.runs.alpha}?metrics=loss`);
  await hydrated();
  const lossChart = '.cs-chart[data-key="loss"]';
  await page.waitForSelector(lossChart + '[data-ready="1"]');
  await page.selectOption(lossChart + " select.x-axis", "metric:lr");
  await page.waitForFunction((sel) => { const e = document.querySelector(sel); return e.dataset.x === "metric:lr" && e.dataset.drawn === String(e.dataset.points); }, lossChart);
  check(new URL(page.url()).searchParams.get("x") === "metric:lr", "the x axis is in the URL: " + page.url());
  const joined = await page.getAttribute(lossChart, "data-drawn");
  check(joined === String(data.loss_points), `every loss point has an lr at its step: ${joined} of ${data.loss_points}`);
  await page.reload();
  await hydrated();
  await page.waitForFunction((sel) => { const e = document.querySelector(sel); return e && e.dataset.ready === "1" && e.dataset.x === "metric:lr"; }, lossChart);
  check((await page.inputValue(lossChart + " select.x-axis")) === "metric:lr", "a shared link keeps the x axis");
  await shot("20-x-by-metric");

  step = "pages render without JavaScript";
  const nojs = await browser.newContext({ javaScriptEnabled: false });
  const p2 = await nojs.newPage();
  await p2.goto(`${base}/experiments/${data.experiment_id}`);
  check((await p2.locator("#runs-static tbody tr").count()) === 3, "server-rendered runs table expected");
  await p2.screenshot({ path: `${shots}/12-runs-nojs.png`, fullPage: true });
  await p2.goto(`${base}/pipelineruns/default/${ops.runs[0].name}`);
  check((await p2.textContent("#commit-sha")) === ops.runs[0].sha, "server-rendered pipeline run page");
  check((await p2.getAttribute('#run-steps tr[data-step="publish"]', "data-phase")) === "Skipped", "server-rendered step states");
  await p2.goto(`${base}/deployments/default/${ops.deployment}`);
  check((await p2.locator("#versions tbody tr").count()) === 2, "server-rendered deployment versions");
  await nojs.close();

  step = "errors show as a message";
  await page.goto(`${base}/runs/00000000000000000000000000000000`);
  await page.waitForSelector("p.error");
  await shot("13-error");
  await page.goto(`${base}/deployments/default/no-such-deployment`);
  check((await page.textContent("p.error")).includes("does not exist"), "a missing deployment says so");
  await page.goto(`${base}/pipelineruns/default/no-such-run`);
  check((await page.textContent("p.error")).includes("does not exist"), "a missing pipeline run says so");

  step = "a manual run from the pipeline page";
  await page.goto(`${base}/pipelines/default/${ops.pipeline}`);
  await hydrated();
  await page.fill("#run-now input[data-run-parameters]", "not-a-pair");
  await page.click("#run-now button");
  await page.waitForSelector("#run-now .run-result.error");
  check((await page.textContent("#run-now .run-result")).includes("not-a-pair"), "a malformed parameter is named");
  await page.fill("#run-now input[data-run-parameters]", "no_such_parameter=1");
  await page.click("#run-now button");
  await page.waitForFunction(() => document.querySelector("#run-now .run-result").textContent.includes("no_such_parameter"));
  check(page.url().endsWith(`/pipelines/default/${ops.pipeline}`), "an unknown parameter starts nothing: " + page.url());
  await page.fill("#run-now input[data-run-parameters]", "");
  await page.click("#run-now button");
  await page.waitForURL(`**/pipelineruns/default/${ops.pipeline}-*`);
  await page.waitForSelector("#commit");
  check((await page.textContent("#commit")).includes("manual run"), "the new run says it was started by hand");
  await shot("21-manual-run");

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
