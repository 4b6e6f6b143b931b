//! Embeds the browser bundle (the site directory `scripts/build-ui.sh` writes, default
//! `<workspace>/target/site`, or `CAPSTAN_UI_SITE_DIR`) into the server build: writes
//! `$OUT_DIR/site.rs` with `FILES: &[(&str, &[u8])]`, empty when there is no bundle (the
//! pages are then served without hydration). Only the `ssr` build embeds anything.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, base, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push((rel.to_string_lossy().replace('\\', "/"), p.clone()));
        }
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=CAPSTAN_UI_SITE_DIR");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut files = Vec::new();
    if std::env::var_os("CARGO_FEATURE_SSR").is_some() {
        let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
        let site = match std::env::var_os("CAPSTAN_UI_SITE_DIR") {
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("CARGO_TARGET_DIR") {
                Some(t) => PathBuf::from(t).join("site"),
                None => manifest.join("../../target/site"),
            },
        };
        let pkg = site.join("pkg");
        // The folder itself: cargo rescans it (and reruns) when files in it change.
        println!("cargo:rerun-if-changed={}", pkg.display());
        collect(&site, &site, &mut files);
        files.sort();
    }
    let mut src = String::from(
        "/// Files of the site directory, by path relative to it.\npub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (rel, path) in &files {
        src.push_str(&format!("    ({rel:?}, include_bytes!({:?})),\n", path.display().to_string()));
    }
    src.push_str("];\n");
    std::fs::write(out.join("site.rs"), src).expect("write site.rs");
}
