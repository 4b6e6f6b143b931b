//! The pages. Each reads its data through a server function in a `Resource` (rendered on the
//! server, then hydrated), keeps its state in the URL (path and query string, so every view
//! is a shareable link), and shows a failed load as a message. Charts, the virtualised runs
//! table, parallel coordinates and live logs are widgets of `/pkg/capstan.js` mounted on the
//! `cs-*` elements these pages render; their data comes from the server's APIs.

use std::collections::BTreeMap;

use leptos::form::ActionForm;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use crate::api::*;
use crate::logic::{fmt_duration, fmt_time, fmt_value, heat_class, split_at_error, urlencode, urlencode_path};

pub(crate) fn loading() -> impl IntoView {
    view! { <p class="loading" role="status">"Loading..."</p> }
}

pub(crate) fn error_view(e: ServerFnError) -> AnyView {
    let msg = match e {
        ServerFnError::ServerError(m) => m,
        other => other.to_string(),
    };
    view! { <p class="error" role="alert">{format!("Could not load: {msg}")}</p> }.into_any()
}

fn action_error<T, S>(value: S) -> impl IntoView
where
    T: Clone + Send + Sync + 'static,
    S: Get<Value = Option<Result<T, ServerFnError>>> + Send + Sync + 'static,
{
    move || {
        value.get().and_then(|r| r.err()).map(|e| {
            let msg = match e {
                ServerFnError::ServerError(m) => m,
                other => other.to_string(),
            };
            view! { <p class="error" role="alert">{msg}</p> }
        })
    }
}

pub(crate) fn status_badge(status: String) -> impl IntoView {
    let class = format!("badge s-{}", status.to_lowercase());
    view! { <span class=class>{status}</span> }
}

// ---------------------------------------------------------------------------------------
// Home: experiments
// ---------------------------------------------------------------------------------------

/// `/`: experiments, most recent first, with search, create, rename, delete and restore.
#[component]
pub fn Home() -> impl IntoView {
    let query = use_query_map();
    let search = move || query.read().get("q").unwrap_or_default();
    let deleted = move || query.read().get("deleted").is_some_and(|v| v == "1");
    let create = ServerAction::<CreateExperiment>::new();
    let rename = ServerAction::<RenameExperiment>::new();
    let stage = ServerAction::<SetExperimentStage>::new();
    let data = Resource::new(
        move || (search(), deleted(), create.version().get(), rename.version().get(), stage.version().get()),
        |(s, d, ..)| list_experiments(s, d),
    );
    let toggle_href = move || {
        let q = urlencode(&search());
        if deleted() {
            format!("/?q={q}")
        } else {
            format!("/?q={q}&deleted=1")
        }
    };
    view! {
        <Title text="Experiments - Capstan"/>
        <h1>"Experiments"</h1>
        <div class="toolbar">
            <form method="get" action="/" role="search">
                <input type="search" name="q" value=search aria-label="Search experiments by name" placeholder="Search by name"/>
                {move || deleted().then(|| view! { <input type="hidden" name="deleted" value="1"/> })}
                <button type="submit">"Search"</button>
            </form>
            <a href=toggle_href>{move || if deleted() { "Show active experiments" } else { "Show deleted experiments" }}</a>
            <ActionForm action=create attr:class="inline">
                <input name="name" required placeholder="New experiment name" aria-label="New experiment name"/>
                <button type="submit">"Create"</button>
            </ActionForm>
        </div>
        {action_error(create.value())}
        {action_error(rename.value())}
        {action_error(stage.value())}
        <Suspense fallback=loading>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => error_view(e),
                    Ok(rows) if rows.is_empty() => view! { <p class="empty">"No experiments."</p> }.into_any(),
                    Ok(rows) => view! {
                        <table class="grid" id="experiments">
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"ID"</th><th scope="col">"Created"</th><th scope="col">"Updated"</th><th scope="col">"Actions"</th></tr></thead>
                            <tbody>
                                {rows.into_iter().map(|e| {
                                    let href = format!("/experiments/{}", e.id);
                                    let id2 = e.id.clone();
                                    let id3 = e.id.clone();
                                    let is_deleted = e.lifecycle_stage == "deleted";
                                    view! {
                                        <tr>
                                            <td><a href=href>{e.name.clone()}</a></td>
                                            <td>{e.id.clone()}</td>
                                            <td>{fmt_time(e.creation_time)}</td>
                                            <td>{fmt_time(e.last_update_time)}</td>
                                            <td class="actions">
                                                <details>
                                                    <summary>"Rename"</summary>
                                                    <ActionForm action=rename attr:class="inline">
                                                        <input type="hidden" name="id" value=id2/>
                                                        <input name="name" value=e.name.clone() required aria-label="New name"/>
                                                        <button type="submit">"Save"</button>
                                                    </ActionForm>
                                                </details>
                                                <ActionForm action=stage attr:class="inline">
                                                    <input type="hidden" name="id" value=id3/>
                                                    <input type="hidden" name="stage" value=if is_deleted { "active" } else { "deleted" }/>
                                                    <button type="submit">{if is_deleted { "Restore" } else { "Delete" }}</button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

// ---------------------------------------------------------------------------------------
// Experiment: the runs table
// ---------------------------------------------------------------------------------------

/// The filter box: parses as you type (the same parser as the server, compiled to wasm)
/// and shows where a filter is wrong.
#[component]
fn FilterBox(experiment_id: Signal<String>, initial: String) -> impl IntoView {
    let text = RwSignal::new(initial.clone());
    let parse_error = Memo::new(move |_| capstan_search::parse_filter(&text.get()).err());
    let navigate = use_navigate();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let mut url =
            format!("/experiments/{}?filter={}", experiment_id.get_untracked(), urlencode(&text.get_untracked()));
        if let Some(search) = current_query_rest(&["filter"]) {
            url.push('&');
            url.push_str(&search);
        }
        navigate(&url, Default::default());
    };
    view! {
        <form method="get" class="filter" role="search" on:submit=on_submit>
            <label for="filter">"Filter"</label>
            <input
                id="filter"
                name="filter"
                type="search"
                value=initial
                class:invalid=move || parse_error.get().is_some()
                aria-invalid=move || if parse_error.get().is_some() { "true" } else { "false" }
                aria-describedby="filter-help"
                on:input=move |ev| text.set(event_target_value(&ev))
                placeholder="metrics.acc > 0.9 OR params.lr = '0.1'"
                autocomplete="off"
                spellcheck="false"
            />
            <button type="submit">"Apply"</button>
            <span id="filter-help" class="hint">"MLflow search syntax, with OR and parentheses"</span>
            {move || parse_error.get().map(|e| {
                let (before, after) = split_at_error(&text.get(), e.position);
                let after = if after.is_empty() { " ".to_string() } else { after };
                view! {
                    <div class="filter-error" role="alert" id="filter-error">
                        <span>{format!("Column {}: {}", e.column, e.message)}</span>
                        <pre><span>{before}</span><mark>{after}</mark></pre>
                    </div>
                }
            })}
        </form>
    }
}

/// The query string of the current page without `skip` keys (client only).
fn current_query_rest(skip: &[&str]) -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        let search = web_sys::window()?.location().search().ok()?;
        let kept: Vec<&str> = search
            .trim_start_matches('?')
            .split('&')
            .filter(|kv| !kv.is_empty() && !skip.iter().any(|s| kv.split('=').next() == Some(*s)))
            .collect();
        if kept.is_empty() {
            None
        } else {
            Some(kept.join("&"))
        }
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = skip;
        None
    }
}

/// `/experiments/:id`: the runs table (virtualised rows and columns, column chooser, sort,
/// selection, compare, CSV), with a server-rendered first page for reading without JS.
#[component]
pub fn ExperimentPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = Signal::derive(move || params.read().get("id").unwrap_or_default());
    let filter = move || query.read().get("filter").unwrap_or_default();
    let data = Resource::new(move || (id.get(), filter()), |(i, f)| load_runs_preview(i, f));
    let data_src = move || format!("/ui/data/runs?experiment={}&filter={}", urlencode(&id.get()), urlencode(&filter()));
    let csv_href = move || format!("{}&format=csv", data_src());
    view! {
        <Title text="Runs - Capstan"/>
        <Suspense fallback=loading>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => error_view(e),
                    Ok(p) => view! {
                        <h1>{p.experiment.name.clone()}</h1>
                        <p class="meta">
                            {format!("Experiment {} \u{b7} {}{} runs match", p.experiment.id, p.total, if p.more { "+" } else { "" })}
                        </p>
                    }.into_any(),
                }
            })}
        </Suspense>
        {move || view! { <FilterBox experiment_id=id initial=filter()/> }}
        <div class="toolbar">
            <a href=csv_href rel="external" download="runs.csv">"Export CSV"</a>
        </div>
        <div class="cs-runs js-only" data-src=data_src data-experiment=move || id.get()></div>
        <noscript><p class="hint">"Without JavaScript the first 100 runs are shown; export CSV for all of them."</p></noscript>
        <Suspense fallback=loading>
            {move || Suspend::new(async move {
                match data.await {
                    Err(_) => ().into_any(),
                    Ok(p) => {
                        if p.filter_error.is_some() {
                            return ().into_any();
                        }
                        let cols = p.columns.clone();
                        view! {
                            <table class="grid nojs-only" id="runs-static">
                                <thead><tr>
                                    <th scope="col">"Run"</th><th scope="col">"Status"</th><th scope="col">"Started"</th>
                                    {cols.iter().map(|c| view! { <th scope="col">{c.clone()}</th> }).collect_view()}
                                </tr></thead>
                                <tbody>
                                    {p.rows.into_iter().map(|(r, values)| view! {
                                        <tr>
                                            <td><a href=format!("/runs/{}", r.id)>{r.name.clone()}</a></td>
                                            <td>{status_badge(r.status.clone())}</td>
                                            <td>{fmt_time(r.start_time)}</td>
                                            {values.into_iter().map(|v| view! { <td class="num">{v}</td> }).collect_view()}
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

// ---------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------

fn artifact_url(artifact_uri: &str, path: &str) -> String {
    let root = artifact_uri.trim_start_matches("mlflow-artifacts:").trim_start_matches('/');
    format!("/api/2.0/mlflow-artifacts/artifacts/{}/{}", urlencode_path(root), urlencode_path(path))
}

/// `/runs/:id`: attributes, metric charts (zoom, hover, log scale, smoothing, x by step,
/// time or any other metric of the run joined by step, kept as `x` in the query string),
/// system metrics, params, tags, artifacts with previews, and the job's live log.
#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let chosen = move || query.read().get("metrics").unwrap_or_default();
    let x_axis = move || query.read().get("x").unwrap_or_default();
    let dir = move || query.read().get("dir").unwrap_or_default();
    let artifact = move || query.read().get("artifact").unwrap_or_default();
    let data = Resource::new(id, load_run);
    let listing = Resource::new(move || (id(), dir()), |(i, d)| list_artifacts(i, d));
    let preview = Resource::new(
        move || (id(), artifact()),
        |(i, a)| async move {
            if a.is_empty() {
                Ok(None)
            } else {
                preview_artifact(i, a).await.map(Some)
            }
        },
    );
    view! {
        <Title text="Run - Capstan"/>
        <Suspense fallback=loading>
            {move || Suspend::new(async move {
                let d = match data.await {
                    Err(e) => return error_view(e),
                    Ok(d) => d,
                };
                let run_id = d.info.id.clone();
                let (system, user): (Vec<_>, Vec<_>) = d.metrics.iter().cloned().partition(|(k, _, _)| k.starts_with("system/"));
                let chosen = chosen();
                let charted: Vec<String> = if chosen.is_empty() {
                    user.iter().take(6).map(|(k, _, _)| k.clone()).collect()
                } else {
                    chosen.split(',').map(str::to_string).filter(|s| !s.is_empty()).collect()
                };
                let system_charted: Vec<String> = system.iter().take(8).map(|(k, _, _)| k.clone()).collect();
                let duration = d.info.end_time.map(|e| fmt_duration(e - d.info.start_time)).unwrap_or_else(|| "running".into());
                let live = d.info.status == "RUNNING";
                // Metrics the charts' x axis can be (joined by step): the run's own metrics.
                let xkeys: String = user.iter().take(200).map(|(k, _, _)| k.as_str()).collect::<Vec<_>>().join(",");
                let chart = {
                    let run_id = run_id.clone();
                    move |k: String| view! {
                        <figure class="chart-box">
                            <figcaption>{k.clone()}</figcaption>
                            <div class="cs-chart" data-runs=run_id.clone() data-key=k.clone() data-xkeys=xkeys.clone() data-live=if live { "1" } else { "0" }></div>
                        </figure>
                    }
                };
                let toggle_href = {
                    let charted = charted.clone();
                    let run_id = run_id.clone();
                    move |k: &str| {
                        let mut next: Vec<String> = charted.iter().filter(|c| c.as_str() != k).cloned().collect();
                        if next.len() == charted.len() {
                            next.push(k.to_string());
                        }
                        let x = x_axis();
                        let x = if x.is_empty() { String::new() } else { format!("&x={}", urlencode(&x)) };
                        format!("/runs/{}?metrics={}{x}", run_id, urlencode(&next.join(",")))
                    }
                };
                view! {
                    <h1>{d.info.name.clone()}</h1>
                    <p class="meta">
                        {status_badge(d.info.status.clone())}
                        " Experiment "<a href=format!("/experiments/{}", d.info.experiment_id)>{d.experiment_name.clone()}</a>
                        {format!(" \u{b7} run {} \u{b7} started {} \u{b7} {}", d.info.id, fmt_time(d.info.start_time), duration)}
                        {d.job.clone().map(|(ns, name)| view! {
                            " \u{b7} job "<a href=format!("/jobs/{}/{}", ns, name)>{format!("{ns}/{name}")}</a>
                        })}
                    </p>
                    {(!d.versions.is_empty()).then(|| view! {
                        <p class="meta" id="registered-as">
                            "Registered as "
                            {d.versions.iter().map(|(m, v)| view! {
                                <a href=format!("/models/{}#v{v}", urlencode(m))>{format!("{m} v{v}")}</a>" "
                            }).collect_view()}
                        </p>
                    })}
                    <section aria-labelledby="h-charts">
                        <h2 id="h-charts">"Metrics"</h2>
                        <div class="charts">{charted.iter().cloned().map(chart.clone()).collect_view()}</div>
                        <table class="grid compact" id="metrics">
                            <thead><tr><th scope="col">"Chart"</th><th scope="col">"Metric"</th><th scope="col">"Latest"</th><th scope="col">"Step"</th></tr></thead>
                            <tbody>
                                {user.iter().chain(system.iter()).map(|(k, v, s)| {
                                    let on = charted.contains(k) || system_charted.contains(k);
                                    view! {
                                        <tr>
                                            <td><a href=toggle_href(k) aria-label=format!("Chart {k}")>{if on { "\u{2611}" } else { "\u{2610}" }}</a></td>
                                            <td>{k.clone()}</td>
                                            <td class="num">{fmt_value(*v)}</td>
                                            <td class="num">{*s}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </section>
                    {(!system_charted.is_empty()).then(|| view! {
                        <section aria-labelledby="h-system">
                            <h2 id="h-system">"System metrics"</h2>
                            <div class="charts">{system_charted.iter().cloned().map(chart.clone()).collect_view()}</div>
                        </section>
                    })}
                    <section aria-labelledby="h-params" class="two">
                        <div>
                            <h2 id="h-params">"Params"</h2>
                            <table class="grid compact" id="params">
                                <tbody>{d.params.iter().map(|(k, v)| view! { <tr><th scope="row">{k.clone()}</th><td>{v.clone()}</td></tr> }).collect_view()}</tbody>
                            </table>
                        </div>
                        <div>
                            <h2>"Tags"</h2>
                            <table class="grid compact" id="tags">
                                <tbody>{d.tags.iter().map(|(k, v)| view! { <tr><th scope="row">{k.clone()}</th><td>{v.clone()}</td></tr> }).collect_view()}</tbody>
                            </table>
                        </div>
                    </section>
                    {d.job.clone().map(|(ns, name)| view! {
                        <section aria-labelledby="h-log">
                            <h2 id="h-log">"Log"</h2>
                            <p><a href=format!("/jobs/{}/{}", ns, name)>"Open the job"</a></p>
                            <pre class="cs-log log" tabindex="0" data-src=format!("/apis/capstan.dev/v1alpha1/namespaces/{}/trainingjobs/{}/log?replica=0", urlencode(&ns), urlencode(&name)) data-live=if live { "1" } else { "0" }></pre>
                        </section>
                    })}
                }.into_any()
            })}
        </Suspense>
        <section aria-labelledby="h-artifacts">
            <h2 id="h-artifacts">"Artifacts"</h2>
            <Suspense fallback=loading>
                {move || Suspend::new(async move {
                    let d = match data.await { Ok(d) => d, Err(_) => return ().into_any() };
                    let items = match listing.await { Ok(i) => i, Err(e) => return error_view(e) };
                    let run_id = d.info.id.clone();
                    let uri = d.info.artifact_uri.clone();
                    let current = dir();
                    let up = current.rsplit_once('/').map(|(p, _)| p.to_string()).unwrap_or_default();
                    view! {
                        <p class="meta">{format!("/{current}")}</p>
                        <ul class="artifacts" id="artifact-list">
                            {(!current.is_empty()).then(|| view! { <li><a href=format!("/runs/{}?dir={}", run_id, urlencode(&up))>".."</a></li> })}
                            {items.is_empty().then(|| view! { <li class="empty">"No artifacts."</li> })}
                            {items.into_iter().map(|a| {
                                if a.is_dir {
                                    view! { <li><a href=format!("/runs/{}?dir={}", run_id, urlencode(&a.path))>{format!("{}/", a.name)}</a></li> }.into_any()
                                } else {
                                    view! {
                                        <li>
                                            <a href=format!("/runs/{}?dir={}&artifact={}", run_id, urlencode(&current), urlencode(&a.path))>{a.name.clone()}</a>
                                            {format!(" ({} bytes) ", a.size.unwrap_or(0))}
                                            <a href=artifact_url(&uri, &a.path) rel="external" download=a.name.clone()>"download"</a>
                                        </li>
                                    }.into_any()
                                }
                            }).collect_view()}
                        </ul>
                    }.into_any()
                })}
            </Suspense>
            <Suspense fallback=loading>
                {move || Suspend::new(async move {
                    let d = match data.await { Ok(d) => d, Err(_) => return ().into_any() };
                    match preview.await {
                        Err(e) => error_view(e),
                        Ok(None) => ().into_any(),
                        Ok(Some(p)) => {
                            let url = artifact_url(&d.info.artifact_uri, &p.path);
                            let body = match p.kind.as_str() {
                                "image" => view! { <img src=url.clone() alt=p.path.clone() class="preview-img"/> }.into_any(),
                                "text" | "json" => view! { <pre class="preview" tabindex="0">{p.text.clone().unwrap_or_default()}</pre> }.into_any(),
                                _ => view! { <p>"No preview for this file type."</p> }.into_any(),
                            };
                            view! {
                                <div class="preview-box" id="artifact-preview">
                                    <h3>{format!("{} ({} bytes)", p.path, p.size)}</h3>
                                    {body}
                                    <p><a href=url rel="external" download="">"Download"</a></p>
                                </div>
                            }.into_any()
                        }
                    }
                })}
            </Suspense>
        </section>
    }
}

// ---------------------------------------------------------------------------------------
// Compare
// ---------------------------------------------------------------------------------------

/// `/compare?runs=a,b&diff=1`: overlaid charts, params and metrics diff (optionally only the
/// differences), parallel coordinates.
#[component]
pub fn ComparePage() -> impl IntoView {
    let query = use_query_map();
    let runs = move || query.read().get("runs").unwrap_or_default();
    let only_diff = move || query.read().get("diff").is_some_and(|v| v == "1");
    let data = Resource::new(runs, compare_runs);
    view! {
        <Title text="Compare runs - Capstan"/>
        <h1>"Compare runs"</h1>
        <Suspense fallback=loading>
            {move || Suspend::new(async move {
                let d = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                if d.runs.is_empty() {
                    return view! { <p class="empty">"Select runs in an experiment's table to compare them."</p> }.into_any();
                }
                let only = only_diff();
                let ids = runs();
                let toggle = if only { format!("/compare?runs={}", urlencode(&ids)) } else { format!("/compare?runs={}&diff=1", urlencode(&ids)) };
                let params_diff = crate::logic::diff(&d.params, only);
                let metric_maps: Vec<BTreeMap<String, String>> =
                    d.metrics.iter().map(|m| m.iter().map(|(k, v)| (k.clone(), fmt_value(*v))).collect()).collect();
                let metrics_diff = crate::logic::diff(&metric_maps, only);
                let mut common: Vec<String> = d.metrics.first().map(|m| m.keys().cloned().collect()).unwrap_or_default();
                common.retain(|k| !k.starts_with("system/") && d.metrics.iter().all(|m| m.contains_key(k)));
                let run_ids = d.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>().join(",");
                let names = d.runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>().join(",");
                let par = serde_json::json!({
                    "runs": d.runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                    "params": d.params,
                    "metrics": d.metrics,
                }).to_string();
                let header = d.runs.iter().map(|r| view! { <th scope="col"><a href=format!("/runs/{}", r.id)>{r.name.clone()}</a></th> }).collect_view();
                let header2 = d.runs.iter().map(|r| view! { <th scope="col">{r.name.clone()}</th> }).collect_view();
                let rows = |rows: Vec<crate::logic::DiffRow>| rows.into_iter().map(|r| view! {
                    <tr class:differs=r.differs>
                        <th scope="row">{r.key.clone()}</th>
                        {r.values.into_iter().map(|v| view! { <td>{v.unwrap_or_else(|| "-".into())}</td> }).collect_view()}
                    </tr>
                }).collect_view();
                view! {
                    <p class="toolbar">
                        <a href=toggle id="only-diff" aria-pressed=if only { "true" } else { "false" }>
                            {if only { "\u{2611} Only differences" } else { "\u{2610} Only differences" }}
                        </a>
                    </p>
                    <h2>"Metrics"</h2>
                    <div class="charts">
                        {common.iter().take(6).map(|k| view! {
                            <figure class="chart-box">
                                <figcaption>{k.clone()}</figcaption>
                                <div class="cs-chart" data-runs=run_ids.clone() data-names=names.clone() data-key=k.clone() data-xkeys=common.join(",")></div>
                            </figure>
                        }).collect_view()}
                    </div>
                    <h2>"Params"</h2>
                    <table class="grid compact" id="params-diff"><thead><tr><th scope="col">"Param"</th>{header}</tr></thead><tbody>{rows(params_diff)}</tbody></table>
                    <h2>"Metrics (latest)"</h2>
                    <table class="grid compact" id="metrics-diff"><thead><tr><th scope="col">"Metric"</th>{header2}</tr></thead><tbody>{rows(metrics_diff)}</tbody></table>
                    <h2>"Parallel coordinates"</h2>
                    <div class="cs-parcoords" data-json=par></div>
                }.into_any()
            })}
        </Suspense>
    }
}

// ---------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------

/// `/models`: registered models with their aliases.
#[component]
pub fn ModelsPage() -> impl IntoView {
    let query = use_query_map();
    let search = move || query.read().get("q").unwrap_or_default();
    let data = Resource::new(search, list_models);
    view! {
        <Title text="Models - Capstan"/>
        <h1>"Registered models"</h1>
        <form method="get" action="/models" role="search" class="toolbar">
            <input type="search" name="q" value=search aria-label="Search models" placeholder="Search by name"/>
            <button type="submit">"Search"</button>
        </form>
        <Suspense fallback=loading>
            {move || Suspend::new(async move {
                match data.await {
                    Err(e) => error_view(e),
                    Ok(rows) if rows.is_empty() => view! { <p class="empty">"No registered models."</p> }.into_any(),
                    Ok(rows) => view! {
                        <table class="grid" id="models">
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"Latest version"</th><th scope="col">"Aliases"</th><th scope="col">"Updated"</th></tr></thead>
                            <tbody>{rows.into_iter().map(|m| view! {
                                <tr>
                                    <td><a href=format!("/models/{}", urlencode(&m.name))>{m.name.clone()}</a></td>
                                    <td>{m.latest_version.map(|v| v.to_string()).unwrap_or_default()}</td>
                                    <td>{m.aliases.iter().map(|(a, v)| view! { <span class="alias">{format!("@{a} \u{2192} v{v}")}</span> }).collect_view()}</td>
                                    <td>{fmt_time(m.last_updated)}</td>
                                </tr>
                            }).collect_view()}</tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// `/models/:name`: versions, aliases (set, move, delete) with their history, tags.
#[component]
pub fn ModelPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let set = ServerAction::<SetAlias>::new();
    let del = ServerAction::<DeleteAlias>::new();
    let tag = ServerAction::<SetModelTag>::new();
    let data = Resource::new(
        move || (name(), set.version().get(), del.version().get(), tag.version().get()),
        |(n, ..)| load_model(n),
    );
    view! {
        <Title text="Model - Capstan"/>
        {action_error(set.value())}
        {action_error(del.value())}
        {action_error(tag.value())}
        <Suspense fallback=loading>
            {move || Suspend::new(async move {
                let m = match data.await { Ok(m) => m, Err(e) => return error_view(e) };
                let n1 = m.name.clone();
                let n3 = m.name.clone();
                let version_options = m
                    .versions
                    .iter()
                    .map(|v| view! { <option value=v.version.to_string()>{format!("v{}", v.version)}</option> })
                    .collect_view();
                view! {
                    <h1>{m.name.clone()}</h1>
                    {m.description.clone().map(|d| view! { <p>{d}</p> })}
                    <section aria-labelledby="h-aliases">
                        <h2 id="h-aliases">"Aliases"</h2>
                        <ul class="aliases" id="aliases">
                            {m.aliases.iter().cloned().map(|(a, v)| {
                                let n = m.name.clone();
                                view! {
                                    <li>
                                        <span class="alias">{format!("@{a} \u{2192} v{v}")}</span>
                                        <ActionForm action=del attr:class="inline">
                                            <input type="hidden" name="name" value=n/>
                                            <input type="hidden" name="alias" value=a.clone()/>
                                            <button type="submit" aria-label=format!("Remove alias {a}")>"Remove"</button>
                                        </ActionForm>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                        <ActionForm action=set attr:class="inline" attr:id="set-alias">
                            <input type="hidden" name="name" value=n1/>
                            <label>"Alias "<input name="alias" required placeholder="champion"/></label>
                            <label>" version "
                                <select name="version">
                                    {version_options}
                                </select>
                            </label>
                            <button type="submit">"Set alias"</button>
                        </ActionForm>
                        <h3>"History"</h3>
                        <table class="grid compact" id="alias-history">
                            <thead><tr><th scope="col">"When"</th><th scope="col">"Alias"</th><th scope="col">"From"</th><th scope="col">"To"</th><th scope="col">"Who"</th><th scope="col">"Why"</th></tr></thead>
                            <tbody>{m.history.iter().map(|h| view! {
                                <tr>
                                    <td>{fmt_time(h.timestamp)}</td>
                                    <td>{format!("@{}", h.alias)}</td>
                                    <td>{h.from_version.map(|v| format!("v{v}")).unwrap_or_else(|| "-".into())}</td>
                                    <td>{h.to_version.map(|v| format!("v{v}")).unwrap_or_else(|| "-".into())}</td>
                                    <td>{h.user.clone()}</td>
                                    <td>{h.reason.clone()}</td>
                                </tr>
                            }).collect_view()}</tbody>
                        </table>
                    </section>
                    <section aria-labelledby="h-versions">
                        <h2 id="h-versions">"Versions"</h2>
                        <table class="grid" id="versions">
                            <thead><tr><th scope="col">"Version"</th><th scope="col">"Created"</th><th scope="col">"Source run"</th><th scope="col">"Pipeline run"</th><th scope="col">"Deployments"</th><th scope="col">"Stage"</th><th scope="col">"Aliases"</th><th scope="col">"Tags"</th></tr></thead>
                            <tbody>{m.versions.iter().map(|v| view! {
                                <tr id=format!("v{}", v.version)>
                                    <td>{format!("v{}", v.version)}</td>
                                    <td>{fmt_time(v.created)}</td>
                                    <td>{v.run_id.clone().map(|r| view! { <a href=format!("/runs/{r}")>{r.clone()}</a> })}</td>
                                    <td class="pipeline-run">{v.lineage.pipeline_run.clone().map(|(ns, r)| view! { <a href=format!("/pipelineruns/{ns}/{r}")>{r.clone()}</a> })}</td>
                                    <td class="serving">{v.lineage.deployments.iter().map(|d| view! {
                                        <a href=format!("/deployments/{}/{}", d.namespace, d.name)>{d.name.clone()}</a>
                                        {format!(" ({} {}%) ", d.role, d.traffic_percent)}
                                    }).collect_view()}</td>
                                    <td>{v.stage.clone()}</td>
                                    <td>{v.aliases.iter().map(|a| view! { <span class="alias">{format!("@{a}")}</span> }).collect_view()}</td>
                                    <td>{v.tags.iter().map(|(k, val)| format!("{k}={val} ")).collect::<String>()}</td>
                                </tr>
                            }).collect_view()}</tbody>
                        </table>
                    </section>
                    <section aria-labelledby="h-mtags">
                        <h2 id="h-mtags">"Tags"</h2>
                        <table class="grid compact"><tbody>{m.tags.iter().map(|(k, v)| view! { <tr><th scope="row">{k.clone()}</th><td>{v.clone()}</td></tr> }).collect_view()}</tbody></table>
                        <ActionForm action=tag attr:class="inline">
                            <input type="hidden" name="name" value=n3/>
                            <input name="key" required placeholder="key" aria-label="Tag key"/>
                            <input name="value" placeholder="value" aria-label="Tag value"/>
                            <button type="submit">"Set tag"</button>
                        </ActionForm>
                    </section>
                }.into_any()
            })}
        </Suspense>
    }
}

// ---------------------------------------------------------------------------------------
// Jobs, queues, GPUs
// ---------------------------------------------------------------------------------------

pub(crate) fn auto_refresh<T>(res: Resource<T>, every_ms: u64)
where
    T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    #[cfg(feature = "hydrate")]
    {
        Effect::new(move |_| {
            let handle =
                set_interval_with_handle(move || res.refetch(), std::time::Duration::from_millis(every_ms)).ok();
            on_cleanup(move || {
                if let Some(h) = handle {
                    h.clear();
                }
            });
        });
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (res, every_ms);
    }
}

/// `/jobs`: jobs with phase, replicas, GPUs, why they wait and their place in the queue;
/// queues with usage against quota. Refreshes every 2 s.
#[component]
pub fn JobsPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| list_jobs());
    auto_refresh(data, 2000);
    view! {
        <Title text="Jobs - Capstan"/>
        <h1>"Jobs"</h1>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let d = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                view! {
                    <h2>"Queues"</h2>
                    <table class="grid" id="queues">
                        <thead><tr><th scope="col">"Queue"</th><th scope="col">"GPUs in use / quota"</th><th scope="col">"Admitted"</th><th scope="col">"Pending"</th></tr></thead>
                        <tbody>{d.queues.iter().map(|q| view! {
                            <tr>
                                <td>{q.name.clone()}</td>
                                <td>{
                                    let mut products: Vec<String> = q.quota.iter().map(|(p, _)| p.clone()).chain(q.usage.iter().map(|(p, _)| p.clone())).collect();
                                    products.sort();
                                    products.dedup();
                                    products.into_iter().map(|p| {
                                        let used = q.usage.iter().find(|(k, _)| *k == p).map(|(_, v)| *v).unwrap_or(0);
                                        let quota = q.quota.iter().find(|(k, _)| *k == p).map(|(_, v)| *v);
                                        let pct = quota.filter(|q| *q > 0).map(|q| (used as f64 / q as f64 * 100.0).min(100.0)).unwrap_or(0.0);
                                        view! {
                                            <div class="usage">
                                                <span>{format!("{p}: {used} / {}", quota.map(|q| q.to_string()).unwrap_or_else(|| "-".into()))}</span>
                                                <span class="bar" role="img" aria-label=format!("{pct:.0}% of quota")><span style=format!("width:{pct:.0}%")></span></span>
                                            </div>
                                        }
                                    }).collect_view()
                                }</td>
                                <td class="num">{q.admitted}</td>
                                <td class="num">{q.pending}</td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table>
                    <h2>"Training jobs"</h2>
                    {if d.jobs.is_empty() { Some(view! { <p class="empty">"No jobs."</p> }) } else { None }}
                    <table class="grid" id="jobs">
                        <thead><tr><th scope="col">"Job"</th><th scope="col">"Queue"</th><th scope="col">"Phase"</th><th scope="col">"Replicas"</th><th scope="col">"GPUs"</th><th scope="col">"Queue position"</th><th scope="col">"Restarts"</th><th scope="col">"Why"</th></tr></thead>
                        <tbody>{d.jobs.iter().map(|j| view! {
                            <tr>
                                <td><a href=format!("/jobs/{}/{}", j.namespace, j.name)>{format!("{}/{}", j.namespace, j.name)}</a></td>
                                <td>{j.queue.clone()}</td>
                                <td>{status_badge(j.phase.clone())}</td>
                                <td class="num">{j.replicas}</td>
                                <td class="num">{j.replicas * j.gpus_per_replica}</td>
                                <td class="num">{j.queue_position.map(|p| p.to_string()).unwrap_or_default()}</td>
                                <td class="num">{j.restarts}</td>
                                <td>{j.message.clone()}</td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table>
                }.into_any()
            })}
        </Transition>
    }
}

/// `/jobs/:ns/:name`: one job's replicas (nodes, GPUs), conditions, events and live logs.
#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let ns = move || params.read().get("ns").unwrap_or_default();
    let name = move || params.read().get("name").unwrap_or_default();
    let replica = move || query.read().get("replica").and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    let data = Resource::new(move || (ns(), name()), |(n, m)| load_job(n, m));
    auto_refresh(data, 2000);
    let log_src = move || {
        format!(
            "/apis/capstan.dev/v1alpha1/namespaces/{}/trainingjobs/{}/log?replica={}",
            urlencode(&ns()),
            urlencode(&name()),
            replica()
        )
    };
    view! {
        <Title text="Job - Capstan"/>
        <h1>{move || format!("{}/{}", ns(), name())}</h1>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let d = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                let j = d.job.clone();
                view! {
                    <p class="meta">
                        {status_badge(j.phase.clone())}
                        {format!(" queue {} \u{b7} attempt {} \u{b7} restarts {} ", j.queue, d.attempt, j.restarts)}
                        {j.queue_position.map(|p| format!("\u{b7} position {p} in the queue "))}
                        {j.run_id.clone().map(|r| view! { "\u{b7} run "<a href=format!("/runs/{r}")>{r.clone()}</a> })}
                    </p>
                    {(!j.message.is_empty()).then(|| view! { <p class="why">{j.message.clone()}</p> })}
                    <h2>"Replicas"</h2>
                    <table class="grid compact" id="replicas">
                        <thead><tr><th scope="col">"Replica"</th><th scope="col">"State"</th><th scope="col">"Node"</th><th scope="col">"GPUs"</th><th scope="col">"Exit"</th><th scope="col">"Message"</th><th scope="col">"Log"</th></tr></thead>
                        <tbody>{d.replicas.iter().map(|r| view! {
                            <tr>
                                <td class="num">{r.index}</td>
                                <td>{status_badge(r.state.clone())}</td>
                                <td>{r.node.clone()}</td>
                                <td>{r.gpus.iter().map(u64::to_string).collect::<Vec<_>>().join(",")}</td>
                                <td>{r.exit_code.map(|c| c.to_string()).unwrap_or_default()}</td>
                                <td>{r.message.clone()}</td>
                                <td><a href=format!("?replica={}", r.index)>"log"</a></td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table>
                    <h2>"Conditions"</h2>
                    <table class="grid compact"><tbody>{d.conditions.iter().map(|(t, s, r, m)| view! {
                        <tr><th scope="row">{t.clone()}</th><td>{s.clone()}</td><td>{r.clone()}</td><td>{m.clone()}</td></tr>
                    }).collect_view()}</tbody></table>
                    <h2>"Events"</h2>
                    <table class="grid compact" id="events">
                        <thead><tr><th scope="col">"Type"</th><th scope="col">"Reason"</th><th scope="col">"Count"</th><th scope="col">"Last"</th><th scope="col">"Message"</th></tr></thead>
                        <tbody>{d.events.iter().map(|e| view! {
                            <tr><td>{e.type_.clone()}</td><td>{e.reason.clone()}</td><td class="num">{e.count}</td><td>{e.last.clone()}</td><td>{e.message.clone()}</td></tr>
                        }).collect_view()}</tbody>
                    </table>
                }.into_any()
            })}
        </Transition>
        <h2>{move || format!("Log of replica {}", replica())}</h2>
        <pre class="cs-log log" id="job-log" tabindex="0" data-src=log_src data-live="1"></pre>
    }
}

/// `/gpus`: a heat map of nodes x GPUs (utilization, memory, health); a GPU links to its job.
#[component]
pub fn GpusPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| list_gpus());
    auto_refresh(data, 2000);
    view! {
        <Title text="GPUs - Capstan"/>
        <h1>"GPUs"</h1>
        <Transition fallback=loading>
            {move || Suspend::new(async move {
                let nodes = match data.await { Ok(d) => d, Err(e) => return error_view(e) };
                if nodes.is_empty() {
                    return view! { <p class="empty">"No nodes have reported GPUs."</p> }.into_any();
                }
                view! {
                    <div class="heat" id="gpu-heat">
                        {nodes.into_iter().map(|n| view! {
                            <div class="heat-row">
                                <div class="heat-node"><strong>{n.node.clone()}</strong><br/><small>{format!("{} \u{b7} {}", n.source, fmt_time(n.last_seen_ms))}</small></div>
                                {n.gpus.into_iter().map(|g| {
                                    let util = g.util.unwrap_or(f64::NAN);
                                    let class = format!("heat-cell h{}{}", heat_class(util), if g.healthy { "" } else { " unhealthy" });
                                    let label = format!(
                                        "GPU {}: {} util, {} / {} MiB{}{}",
                                        g.index,
                                        g.util.map(|u| format!("{u:.0}%")).unwrap_or_else(|| "-".into()),
                                        g.mem_used_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
                                        g.mem_total_mib,
                                        g.temp_c.map(|t| format!(", {t:.0} C")).unwrap_or_default(),
                                        if g.healthy { String::new() } else { format!(", unhealthy: {}", g.health_reason) },
                                    );
                                    let body = view! {
                                        <span class="gi">{format!("#{}", g.index)}</span>
                                        <span class="gu">{g.util.map(|u| format!("{u:.0}%")).unwrap_or_else(|| "-".into())}</span>
                                        <span class="gm">{g.mem_used_mib.map(|m| format!("{:.1}G", m / 1024.0)).unwrap_or_default()}</span>
                                        {(!g.healthy).then(|| view! { <span class="gh">"!"</span> })}
                                    };
                                    match g.job {
                                        Some((ns, name, replica)) => view! {
                                            <a class=class href=format!("/jobs/{ns}/{name}?replica={replica}") title=label.clone() aria-label=label>{body}</a>
                                        }.into_any(),
                                        None => view! { <div class=class title=label.clone() aria-label=label tabindex="0">{body}</div> }.into_any(),
                                    }
                                }).collect_view()}
                            </div>
                        }).collect_view()}
                    </div>
                    <p class="hint">"Colour: utilization (darker is busier); red outline: unhealthy. Select a GPU to open its job."</p>
                }.into_any()
            })}
        </Transition>
    }
}
