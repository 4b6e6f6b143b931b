//! Capstan's web UI: Leptos pages rendered on the server by capstan-server (feature `ssr`,
//! [`server::router`]) and hydrated in the browser by the wasm bundle (feature `hydrate`,
//! built by `scripts/build-ui.sh`). The pages read the server's own store through server
//! functions ([`api`]); charts (uPlot), the virtualised runs table, parallel coordinates
//! and live logs are small widgets in [`assets::SCRIPT`] mounted on elements the pages
//! render.
#![recursion_limit = "512"]

pub mod api;
pub mod app;
pub mod assets;
#[cfg(feature = "ssr")]
pub mod cluster;
pub mod lineage;
pub mod logic;
pub mod ops;
pub mod ops_pages;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod traffic;

/// The browser entry point: hydrates the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // Tells the widgets of capstan.js that the page is theirs to decorate.
    if let Some(root) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element()) {
        let _ = root.set_attribute("data-hydrated", "1");
    }
}
