//! The application: the HTML shell (server only), the router and the page frame.

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, SsrMode};

use crate::ops_pages::{DeploymentPage, DeploymentsPage, PipelinePage, PipelineRunPage, PipelinesPage};
use crate::pages::{ComparePage, ExperimentPage, GpusPage, Home, JobPage, JobsPage, ModelPage, ModelsPage, RunPage};

/// Runs before the page paints: the saved theme, the `js` class that swaps the
/// server-rendered fallbacks for the interactive widgets, and on an experiment's page the
/// runs table's data request (`window.__csEarly`), started before the deferred scripts and
/// the wasm bundle load: `capstan.js` takes it over when it asks for the same URL.
#[cfg(feature = "ssr")]
const EARLY_SCRIPT: &str = "document.documentElement.classList.add('js');\
try{var t=localStorage.getItem('capstan-theme');if(t)document.documentElement.dataset.theme=t;}catch(e){}\
try{var m=location.pathname.match(/^\\/experiments\\/([^\\/]+)\\/?$/);if(m&&window.fetch){\
var q=new URLSearchParams(location.search),c=(q.get('cols')||'').split(',').filter(Boolean),\
u='/ui/data/runs?experiment='+encodeURIComponent(decodeURIComponent(m[1]))+'&filter='+encodeURIComponent(q.get('filter')||'')\
+(c.length?'&cols='+encodeURIComponent(c.join(',')):'');\
window.__csEarly={url:u,res:fetch(u,{headers:{Accept:'application/json'}})};}}catch(e){}";

/// The whole HTML document (server-side rendering).
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    use leptos_meta::MetaTags;
    let bundle = crate::server::bundle_embedded();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <script inner_html=EARLY_SCRIPT></script>
                <link rel="stylesheet" href="/pkg/capstan.css"/>
                <link rel="stylesheet" href="/pkg/uplot.min.css"/>
                <script src="/pkg/uplot.min.js" defer></script>
                <script src="/pkg/capstan.js" defer></script>
                {bundle.then(|| view! { <HydrationScripts options=options.clone()/> })}
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application: header, navigation and the routed pages.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    #[cfg(feature = "ssr")]
    let no_bundle = !crate::server::bundle_embedded();
    #[cfg(not(feature = "ssr"))]
    let no_bundle = false;
    view! {
        <Title text="Capstan"/>
        <a class="skip" href="#main">"Skip to content"</a>
        {no_bundle.then(|| view! {
            <p class="banner" role="status">
                "Interactive bundle not built into this binary (run scripts/build-ui.sh before cargo build): pages are server-rendered only."
            </p>
        })}
        <Router>
            <header class="top">
                <a class="brand" href="/">"Capstan"</a>
                <nav aria-label="Main">
                    <a href="/">"Experiments"</a>
                    <a href="/models">"Models"</a>
                    <a href="/deployments">"Deployments"</a>
                    <a href="/pipelines">"Pipelines"</a>
                    <a href="/jobs">"Jobs"</a>
                    <a href="/gpus">"GPUs"</a>
                </nav>
                <button id="theme-toggle" type="button" aria-label="Switch between light and dark theme">
                    "Theme"
                </button>
            </header>
            <main id="main">
                <Routes fallback=|| view! { <p class="error" role="alert">"Page not found."</p> }>
                    <Route path=path!("/") ssr=SsrMode::Async view=Home/>
                    <Route path=path!("/experiments/:id") ssr=SsrMode::Async view=ExperimentPage/>
                    <Route path=path!("/runs/:id") ssr=SsrMode::Async view=RunPage/>
                    <Route path=path!("/compare") ssr=SsrMode::Async view=ComparePage/>
                    <Route path=path!("/models") ssr=SsrMode::Async view=ModelsPage/>
                    <Route path=path!("/models/:name") ssr=SsrMode::Async view=ModelPage/>
                    <Route path=path!("/jobs") ssr=SsrMode::Async view=JobsPage/>
                    <Route path=path!("/jobs/:ns/:name") ssr=SsrMode::Async view=JobPage/>
                    <Route path=path!("/gpus") ssr=SsrMode::Async view=GpusPage/>
                    <Route path=path!("/deployments") ssr=SsrMode::Async view=DeploymentsPage/>
                    <Route path=path!("/deployments/:ns/:name") ssr=SsrMode::Async view=DeploymentPage/>
                    <Route path=path!("/pipelines") ssr=SsrMode::Async view=PipelinesPage/>
                    <Route path=path!("/pipelines/:ns/:name") ssr=SsrMode::Async view=PipelinePage/>
                    <Route path=path!("/pipelineruns/:ns/:name") ssr=SsrMode::Async view=PipelineRunPage/>
                </Routes>
            </main>
        </Router>
    }
}
