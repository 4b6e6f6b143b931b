//! The deployments and pipelines pages: ModelDeployments with their versions, traffic split,
//! canary verdict, replicas and request rate / latency charts; Pipelines with their triggers
//! and DAG; PipelineRuns with their commit, step states, skip reasons and the lineage chain
//! commit -> run -> model version -> deployment. Server-rendered, refreshed every 2 s after
//! hydration; the charts are `.cs-series` widgets of `/pkg/capstan.js` reading
//! `/ui/data/traffic`.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::EventRow;
use crate::logic::urlencode;
use crate::ops::*;
use crate::pages::{auto_refresh, error_view, loading, status_badge};

fn short_sha(sha: &str) -> String {
    sha.chars().take(7).collect()
}

fn model_version_href(model: &str, version: &str) -> String {
    format!("/models/{}#v{}", urlencode(model), version)
}

fn conditions_table(conditions: Vec<(String, String, String, String)>) -> impl IntoView {
    view! {
        <table class="grid compact" id="conditions">
            <thead><tr><th scope="col">"Type"</th><th scope="col">"Status"</th><th scope="col">"Reason"</th><th scope="col">"Message"</th></tr></thead>
            <tbody>{conditions.into_iter().map(|(t, s, r, m)| view! {
                <tr><th scope="row">{t}</th><td>{s}</td><td>{r}</td><td>{m}</td></tr>
            }).collect_view()}</tbody>
        </table>
    }
}

fn events_table(events: Vec<EventRow>) -> impl IntoView {
    view! {
        <table class="grid compact" id="events">
            <thead><tr><th scope="col">"Type"</th><th scope="col">"Reason"</th><th scope="col">"Count"</th><th scope="col">"Last"</th><th scope="col">"Message"</th></tr></thead>
            <tbody>{events.into_iter().map(|e| view! {
                <tr><td>{e.type_}</td><td>{e.reason}</td><td class="num">{e.count}</td><td>{e.last}</td><td>{e.message}</td></tr>
            }).collect_view()}</tbody>
        </table>
    }
}

/// Windows (minutes) the request charts offer.
const WINDOWS: [u64; 4] = [1, 5, 10, 15];

/// Seconds per point for a window of `minutes`: about 60 to 120 points.
fn step_for(minutes: u64) -> u64 {
    match minutes {
        0..=1 => 1,
        2..=5 => 5,
        _ => 10,
    }
}

fn traffic_text(traffic: &[(String, u64)]) -> String {
    traffic.iter().map(|(v, p)| format!("v{v} {p}%")).collect::<Vec<_>>().join(" \u{b7} ")
}

// ---------------------------------------------------------------------------------------
// Deployments
// ---------------------------------------------------------------------------------------

/// `/deployments`: every ModelDeployment with its phase, traffic split, canary and replicas.
#[component]
pub fn DeploymentsPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| list_deployments());
    auto_refresh(data, 2000);
    view! {
        <Title text="Deployments - Capstan"/>
        <h1>"Deployments"</h1>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let rows = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                if rows.is_empty() {
                    return view! { <p class="empty">"No model deployments. Apply a ModelDeployment (capstan apply -f) to serve a model."</p> }.into_any();
                }
                view! {
                    <table class="grid" id="deployments">
                        <thead><tr><th scope="col">"Deployment"</th><th scope="col">"Model"</th><th scope="col">"Phase"</th><th scope="col">"Stable"</th><th scope="col">"Canary"</th><th scope="col">"Traffic"</th><th scope="col">"Ready replicas"</th><th scope="col">"Requests (last 10 min)"</th><th scope="col">"Endpoint"</th></tr></thead>
                        <tbody>{rows.into_iter().map(|d| view! {
                            <tr>
                                <td><a href=format!("/deployments/{}/{}", d.namespace, d.name)>{format!("{}/{}", d.namespace, d.name)}</a></td>
                                <td>{match d.registered_model.clone() {
                                    Some(m) => view! { <a href=format!("/models/{}", urlencode(&m))>{d.model.clone()}</a> }.into_any(),
                                    None => view! { <span>{d.model.clone()}</span> }.into_any(),
                                }}</td>
                                <td>{status_badge(d.phase.clone())}</td>
                                <td>{d.stable_version.clone().map(|v| format!("v{v}")).unwrap_or_default()}</td>
                                <td>{d.canary.clone().map(|(v, p, ph)| format!("v{v} at {p}% ({ph})")).unwrap_or_default()}</td>
                                <td class="traffic">{traffic_text(&d.traffic)}</td>
                                <td class="num">{d.ready_replicas}</td>
                                <td class="num requests">{d.requests_recent}</td>
                                <td><code>{d.url.clone()}</code></td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table>
                }.into_any()
            })}
        </Transition>
    }
}

/// `/deployments/:ns/:name`: versions with role, traffic share, replicas and endpoints, the
/// canary's observation and verdict, request rate and latency charts, conditions and events.
#[component]
pub fn DeploymentPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let ns = move || params.read().get("ns").unwrap_or_default();
    let name = move || params.read().get("name").unwrap_or_default();
    // The charts' window (minutes), kept in the query string.
    let minutes = move || {
        query.read().get("window").and_then(|w| w.parse::<u64>().ok()).filter(|w| WINDOWS.contains(w)).unwrap_or(10)
    };
    let data = Resource::new(move || (ns(), name()), |(n, m)| load_deployment(n, m));
    auto_refresh(data, 2000);
    let src = move || {
        let m = minutes();
        format!("/ui/data/traffic?deployment={}&window={}&step={}", urlencode(&name()), m * 60, step_for(m))
    };
    view! {
        <Title text="Deployment - Capstan"/>
        <h1>{move || format!("{}/{}", ns(), name())}</h1>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let d = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                let row = d.row.clone();
                let model = row.registered_model.clone();
                view! {
                    <p class="meta">
                        {status_badge(row.phase.clone())}
                        " model "
                        {match model.clone() {
                            Some(m) => view! { <a href=format!("/models/{}", urlencode(&m))>{row.model.clone()}</a> }.into_any(),
                            None => view! { <span>{row.model.clone()}</span> }.into_any(),
                        }}
                        {format!(" \u{b7} {} ready replicas \u{b7} {} \u{b7} {}", row.ready_replicas, d.runtime, d.scaling)}
                    </p>
                    <p>"Endpoint: "<code id="endpoint">{row.url.clone()}</code></p>
                    <h2>"Versions and traffic"</h2>
                    <table class="grid" id="versions">
                        <thead><tr><th scope="col">"Version"</th><th scope="col">"Role"</th><th scope="col">"State"</th><th scope="col">"Traffic"</th><th scope="col">"Replicas (ready / wanted)"</th><th scope="col">"Endpoints"</th><th scope="col">"Made by"</th><th scope="col">"Message"</th></tr></thead>
                        <tbody>{d.versions.iter().map(|v| {
                            let pct = v.traffic_percent.min(100);
                            view! {
                                <tr data-version=v.version.clone()>
                                    <td>{match model.clone() {
                                        Some(m) => view! { <a href=model_version_href(&m, &v.version)>{format!("v{}", v.version)}</a> }.into_any(),
                                        None => view! { <span>{v.version.clone()}</span> }.into_any(),
                                    }}</td>
                                    <td class="role">{v.role.clone()}</td>
                                    <td>{status_badge(v.state.clone())}</td>
                                    <td class="weight">
                                        <div class="usage">
                                            <span>{format!("{pct}%")}</span>
                                            <span class="bar" role="img" aria-label=format!("{pct}% of requests")><span style=format!("width:{pct}%")></span></span>
                                        </div>
                                    </td>
                                    <td class="num">{format!("{} / {}", v.ready_replicas, v.replicas)}</td>
                                    <td><code>{v.endpoints.join(", ")}</code></td>
                                    <td>{v.pipeline_run.clone().map(|(ns, r)| view! { <a href=format!("/pipelineruns/{ns}/{r}")>{r.clone()}</a> })}</td>
                                    <td>{v.message.clone()}</td>
                                </tr>
                            }
                        }).collect_view()}</tbody>
                    </table>
                    {d.canary.clone().map(|c| view! {
                        <h2>"Canary"</h2>
                        <div id="canary">
                            <p>
                                {format!("Version {} \u{b7} ", c.version)}
                                {status_badge(c.phase.clone())}
                                {format!(" \u{b7} {}% of requests \u{b7} verdict ", c.traffic_percent)}
                                <strong class="verdict">{if c.verdict.is_empty() { "-".to_string() } else { c.verdict.clone() }}</strong>
                            </p>
                            {(!c.reason.is_empty()).then(|| view! { <p class="why">{c.reason.clone()}</p> })}
                            <table class="grid compact">
                                <thead><tr><th scope="col">""</th><th scope="col">"Requests in window"</th><th scope="col">"Errors"</th><th scope="col">"p99 (ms)"</th></tr></thead>
                                <tbody>
                                    <tr><th scope="row">{format!("canary v{}", c.version)}</th><td class="num">{c.canary.0}</td><td class="num">{c.canary.1}</td><td class="num">{c.canary.2.map(|p| format!("{p:.2}")).unwrap_or_default()}</td></tr>
                                    <tr><th scope="row">"stable"</th><td class="num">{c.stable.0}</td><td class="num">{c.stable.1}</td><td class="num">{c.stable.2.map(|p| format!("{p:.2}")).unwrap_or_default()}</td></tr>
                                </tbody>
                            </table>
                            <p class="hint">{format!("Policy: {}. Started {}.", c.policy, c.started_at)}</p>
                        </div>
                    })}
                    <h2>"Conditions"</h2>
                    {conditions_table(d.conditions.clone())}
                    <h2>"Events"</h2>
                    {events_table(d.events.clone())}
                }.into_any()
            })}
        </Transition>
        <h2>"Requests"</h2>
        <p class="hint" id="requests-hint">{move || format!(
            "Inference requests through this server's /v2/models proxy, per version, last {} min in {} s steps (kept in the server's memory).",
            minutes(),
            step_for(minutes())
        )}</p>
        <p class="toolbar" id="window">
            "Window: "
            {WINDOWS.iter().map(|w| {
                let w = *w;
                view! {
                    <a href=move || format!("/deployments/{}/{}?window={w}", ns(), name()) aria-current=move || if minutes() == w { "true" } else { "false" }>
                        {format!("{w} min")}
                    </a>
                }
            }).collect_view()}
        </p>
        <div class="charts">
            <figure class="chart-box">
                <figcaption>"Request rate (req/s)"</figcaption>
                <div class="cs-series" id="rate-chart" data-src=src data-kind="rps" data-live="1"></div>
            </figure>
            <figure class="chart-box">
                <figcaption>"Latency p50 / p99 (ms)"</figcaption>
                <div class="cs-series" id="latency-chart" data-src=src data-kind="latency" data-live="1"></div>
            </figure>
        </div>
        <noscript><p class="hint">"The charts need JavaScript; the data is at /ui/data/traffic?deployment=NAME."</p></noscript>
    }
}

// ---------------------------------------------------------------------------------------
// Pipelines
// ---------------------------------------------------------------------------------------

fn runs_table(runs: Vec<PipelineRunRow>, show_pipeline: bool) -> impl IntoView {
    view! {
        <table class="grid" id="pipeline-runs">
            <thead><tr>
                <th scope="col">"Run"</th>
                {show_pipeline.then(|| view! { <th scope="col">"Pipeline"</th> })}
                <th scope="col">"Phase"</th><th scope="col">"Commit"</th><th scope="col">"Branch"</th><th scope="col">"Author"</th><th scope="col">"Message"</th><th scope="col">"Trigger"</th><th scope="col">"Created"</th>
            </tr></thead>
            <tbody>{runs.into_iter().map(|r| view! {
                <tr>
                    <td><a href=format!("/pipelineruns/{}/{}", r.namespace, r.name)>{r.name.clone()}</a></td>
                    {show_pipeline.then(|| view! { <td><a href=format!("/pipelines/{}/{}", r.namespace, r.pipeline)>{r.pipeline.clone()}</a></td> })}
                    <td>{status_badge(r.phase.clone())}</td>
                    <td><code title=r.sha.clone()>{short_sha(&r.sha)}</code></td>
                    <td>{r.branch.clone()}</td>
                    <td>{r.author.clone()}</td>
                    <td>{r.message.lines().next().unwrap_or_default().to_string()}</td>
                    <td>{r.trigger.clone()}</td>
                    <td>{r.created.clone()}</td>
                </tr>
            }).collect_view()}</tbody>
        </table>
    }
}

/// `/pipelines`: every Pipeline with its triggers, steps and latest run.
#[component]
pub fn PipelinesPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| list_pipelines());
    auto_refresh(data, 2000);
    view! {
        <Title text="Pipelines - Capstan"/>
        <h1>"Pipelines"</h1>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let rows = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                if rows.is_empty() {
                    return view! { <p class="empty">"No pipelines. Apply a Pipeline (capstan apply -f) to train, register and deploy on git pushes."</p> }.into_any();
                }
                view! {
                    <table class="grid" id="pipelines">
                        <thead><tr><th scope="col">"Pipeline"</th><th scope="col">"Triggers"</th><th scope="col">"Steps"</th><th scope="col">"Runs"</th><th scope="col">"Latest run"</th></tr></thead>
                        <tbody>{rows.into_iter().map(|p| view! {
                            <tr>
                                <td><a href=format!("/pipelines/{}/{}", p.namespace, p.name)>{format!("{}/{}", p.namespace, p.name)}</a></td>
                                <td>{if p.triggers.is_empty() { "manual only".to_string() } else { p.triggers.join("; ") }}</td>
                                <td class="num">{p.steps}</td>
                                <td class="num">{p.runs}</td>
                                <td>{p.last_run.clone().map(|(r, phase)| view! {
                                    <a href=format!("/pipelineruns/{}/{}", p.namespace, r)>{r.clone()}</a>" "{status_badge(phase)}
                                })}</td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table>
                }.into_any()
            })}
        </Transition>
    }
}

/// `/pipelines/:ns/:name`: triggers, parameters, the steps as a list with their
/// dependencies and gates, and the pipeline's runs.
#[component]
pub fn PipelinePage() -> impl IntoView {
    let params = use_params_map();
    let ns = move || params.read().get("ns").unwrap_or_default();
    let name = move || params.read().get("name").unwrap_or_default();
    let data = Resource::new(move || (ns(), name()), |(n, m)| load_pipeline(n, m));
    auto_refresh(data, 2000);
    view! {
        <Title text="Pipeline - Capstan"/>
        <h1>{move || format!("{}/{}", ns(), name())}</h1>
        // A manual run (capstan.js posts it to the pipelines API and opens the new run); kept
        // outside the refreshed part so that what is typed stays.
        <form class="toolbar" id="run-now" data-run-pipeline=move || format!("{}/{}", ns(), name())>
            <label>"Parameters "<input name="parameters" data-run-parameters="" placeholder="name=value name2=value2" size="40"/></label>
            " "<button type="submit">"Run now"</button>
            " "<span class="run-result" role="status" aria-live="polite"></span>
        </form>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let d = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                view! {
                    <h2>"Triggers"</h2>
                    <ul id="triggers">
                        {d.row.triggers.is_empty().then(|| view! { <li>"None: runs start by hand (capstan pipeline run)."</li> })}
                        {d.row.triggers.iter().map(|t| view! { <li>{t.clone()}</li> }).collect_view()}
                        {d.polls.iter().map(|p| view! { <li class="hint">{p.clone()}</li> }).collect_view()}
                    </ul>
                    {(!d.parameters.is_empty()).then(|| view! {
                        <h2>"Parameters"</h2>
                        <table class="grid compact" id="parameters">
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"Default"</th><th scope="col">"Description"</th></tr></thead>
                            <tbody>{d.parameters.iter().map(|(n, def, desc)| view! {
                                <tr><th scope="row">{n.clone()}</th><td>{def.clone().unwrap_or_else(|| "(required)".into())}</td><td>{desc.clone()}</td></tr>
                            }).collect_view()}</tbody>
                        </table>
                    })}
                    <h2>"Steps"</h2>
                    <ol class="dag" id="steps">
                        {d.steps.iter().map(|s| view! {
                            <li data-step=s.name.clone()>
                                <strong>{s.name.clone()}</strong>
                                {format!(" ({}) ", s.kind)}
                                <span>{s.detail.clone()}</span>
                                <div class="hint">
                                    {if s.depends_on.is_empty() { "starts first".to_string() } else { format!("after {}", s.depends_on.join(", ")) }}
                                    {s.when.clone().map(|w| view! { " \u{b7} when "<code>{w}</code> })}
                                </div>
                            </li>
                        }).collect_view()}
                    </ol>
                    <h2>"Runs"</h2>
                    {d.runs.is_empty().then(|| view! { <p class="empty">"No runs yet."</p> })}
                    {runs_table(d.runs.clone(), false)}
                }.into_any()
            })}
        </Transition>
    }
}

/// `/pipelineruns/:ns/:name`: the commit, the lineage chain commit -> run -> model version ->
/// deployment, every step's state with why a gated step was skipped, parameters, conditions
/// and events.
#[component]
pub fn PipelineRunPage() -> impl IntoView {
    let params = use_params_map();
    let ns = move || params.read().get("ns").unwrap_or_default();
    let name = move || params.read().get("name").unwrap_or_default();
    let data = Resource::new(move || (ns(), name()), |(n, m)| load_pipeline_run(n, m));
    auto_refresh(data, 2000);
    view! {
        <Title text="Pipeline run - Capstan"/>
        <h1>{move || format!("{}/{}", ns(), name())}</h1>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let d = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                let r = d.row.clone();
                let ns = r.namespace.clone();
                let sha_view = if d.commit_url.is_empty() {
                    view! { <code id="commit-sha">{r.sha.clone()}</code> }.into_any()
                } else {
                    view! { <a href=d.commit_url.clone() rel="external"><code id="commit-sha">{r.sha.clone()}</code></a> }.into_any()
                };
                let lineage_runs: Vec<(String, String)> = d.steps.iter().filter_map(|s| Some((s.name.clone(), s.run_id.clone()?))).collect();
                let lineage_versions: Vec<(String, String, i64, Option<String>)> = d
                    .steps
                    .iter()
                    .filter_map(|s| s.model_version.clone().map(|(m, v)| (s.name.clone(), m, v, s.alias.clone())))
                    .collect();
                let lineage_deps: Vec<(String, String)> = d.steps.iter().filter_map(|s| Some((s.name.clone(), s.deployment.clone()?))).collect();
                let found = d.deployments_found.clone();
                view! {
                    <p class="meta">
                        {status_badge(r.phase.clone())}
                        " pipeline "<a href=format!("/pipelines/{}/{}", r.namespace, r.pipeline)>{r.pipeline.clone()}</a>
                        {format!(" \u{b7} {} \u{b7} started {} \u{b7} finished {}", r.trigger, if d.start_time.is_empty() { "-" } else { &d.start_time }, if d.completion_time.is_empty() { "-" } else { &d.completion_time })}
                    </p>
                    {(!r.status_message.is_empty()).then(|| view! { <p class="why">{r.status_message.clone()}</p> })}
                    <h2>"Commit"</h2>
                    {if r.sha.is_empty() {
                        view! { <p id="commit">"No commit (a manual run)."</p> }.into_any()
                    } else {
                        view! {
                            <table class="grid compact" id="commit">
                                <tbody>
                                    <tr><th scope="row">"SHA"</th><td>{sha_view}</td></tr>
                                    <tr><th scope="row">"Branch"</th><td>{r.branch.clone()}</td></tr>
                                    <tr><th scope="row">"Author"</th><td>{r.author.clone()}</td></tr>
                                    <tr><th scope="row">"Message"</th><td><pre class="commit-message">{r.message.clone()}</pre></td></tr>
                                    <tr><th scope="row">"Repository"</th><td>{d.repo.clone()}</td></tr>
                                </tbody>
                            </table>
                        }.into_any()
                    }}
                    <h2>"Lineage"</h2>
                    <ol class="lineage" id="lineage">
                        <li>"Commit "<code>{if r.sha.is_empty() { "(none)".to_string() } else { short_sha(&r.sha) }}</code>{(!r.branch.is_empty()).then(|| format!(" on {}", r.branch))}</li>
                        {lineage_runs.into_iter().map(|(step, id)| view! {
                            <li class="l-run">"Run "<a href=format!("/runs/{id}")>{id.clone()}</a>{format!(" (step {step})")}</li>
                        }).collect_view()}
                        {lineage_versions.into_iter().map(|(step, m, v, alias)| view! {
                            <li class="l-version">"Model version "<a href=model_version_href(&m, &v.to_string())>{format!("{m} v{v}")}</a>
                                {format!(" (step {step}{})", alias.map(|a| format!(", alias @{a}")).unwrap_or_default())}</li>
                        }).collect_view()}
                        {lineage_deps.into_iter().map(|(step, dep)| {
                            let exists = found.contains(&dep);
                            view! {
                                <li class="l-deployment">"Deployment "
                                    {if exists {
                                        view! { <a href=format!("/deployments/{}/{}", ns, dep)>{dep.clone()}</a> }.into_any()
                                    } else {
                                        view! { <span>{format!("{dep} (no longer exists)")}</span> }.into_any()
                                    }}
                                    {format!(" (step {step})")}
                                </li>
                            }
                        }).collect_view()}
                    </ol>
                    <h2>"Steps"</h2>
                    <table class="grid" id="run-steps">
                        <thead><tr><th scope="col">"Step"</th><th scope="col">"Kind"</th><th scope="col">"After"</th><th scope="col">"Phase"</th><th scope="col">"Attempts"</th><th scope="col">"Produced"</th><th scope="col">"Reason"</th><th scope="col">"Why"</th></tr></thead>
                        <tbody>{d.steps.iter().map(|s| {
                            let ns2 = r.namespace.clone();
                            view! {
                                <tr data-step=s.name.clone() data-phase=s.phase.clone()>
                                    <th scope="row">{s.name.clone()}</th>
                                    <td>{s.kind.clone()}</td>
                                    <td>{s.depends_on.join(", ")}{s.when.clone().map(|w| view! { <div class="hint">"when "<code>{w}</code></div> })}</td>
                                    <td class="phase">{status_badge(s.phase.clone())}</td>
                                    <td class="num">{s.attempts}</td>
                                    <td>
                                        {s.job_name.clone().map(|j| view! { <div>"job "<a href=format!("/jobs/{}/{}", ns2, j)>{j.clone()}</a></div> })}
                                        {s.run_id.clone().map(|id| view! { <div>"run "<a href=format!("/runs/{id}")>{id.chars().take(12).collect::<String>()}</a></div> })}
                                        {s.model_version.clone().map(|(m, v)| view! { <div>"version "<a href=model_version_href(&m, &v.to_string())>{format!("{m} v{v}")}</a></div> })}
                                        {s.deployment.clone().map(|dep| view! { <div>"deployment "<a href=format!("/deployments/{}/{}", ns2, dep)>{dep.clone()}</a></div> })}
                                        {(!s.metrics.is_empty()).then(|| view! { <div class="hint">{s.metrics.iter().map(|(k, v)| format!("{k}={}", crate::logic::fmt_value(*v))).collect::<Vec<_>>().join(" ")}</div> })}
                                    </td>
                                    <td class="reason">{s.reason.clone()}</td>
                                    <td class="message">{s.message.clone()}</td>
                                </tr>
                            }
                        }).collect_view()}</tbody>
                    </table>
                    {(!d.parameters.is_empty()).then(|| view! {
                        <h2>"Parameters"</h2>
                        <table class="grid compact" id="run-parameters"><tbody>{d.parameters.iter().map(|(k, v)| view! {
                            <tr><th scope="row">{k.clone()}</th><td>{v.clone()}</td></tr>
                        }).collect_view()}</tbody></table>
                    })}
                    <h2>"Conditions"</h2>
                    {conditions_table(d.conditions.clone())}
                    <h2>"Events"</h2>
                    {events_table(d.events.clone())}
                }.into_any()
            })}
        </Transition>
    }
}
