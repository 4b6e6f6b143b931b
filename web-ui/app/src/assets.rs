//! Static assets compiled into the crate (served under `/pkg/` next to the wasm bundle).

/// The widgets: runs table, charts, parallel coordinates, live logs, theme toggle.
pub const SCRIPT: &str = include_str!("../assets/capstan.js");
/// The style sheet (light and dark).
pub const STYLE: &str = include_str!("../assets/capstan.css");
