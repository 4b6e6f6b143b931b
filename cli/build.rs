//! Link settings of the `capstan` binary, for memory: the node agent's resident set is mostly
//! pages of this one multi-command binary, so two link options shrink it (BENCHMARKS.md, the
//! agent section).
//!
//! - `-z pack-relative-relocs` (Linux GNU builds): relative relocations as DT_RELR, 33 KiB
//!   instead of 3.3 MiB of `.rela.dyn` that the loader reads, and every process then keeps
//!   mapped. Needs glibc 2.36 at run time (Debian 12, Ubuntu 22.10): only used when the
//!   building machine has it.
//! - `--symbol-ordering-file=link/agent.order` (release builds linked by LLD, the default for
//!   x86_64-unknown-linux-gnu since Rust 1.90): the functions `capstan agent` executes are placed
//!   together at the front of `.text`. `bench/agent/order.sh` regenerates the file; names it no
//!   longer matches are skipped, so a stale file costs memory, never correctness.
//!
//! `CAPSTAN_PLAIN_LINK=1` turns both off (for a linker that lacks them).

use std::env;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=link/agent.order");
    println!("cargo::rerun-if-env-changed=CAPSTAN_PLAIN_LINK");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("CAPSTAN_PLAIN_LINK") == "1" || var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu"
    {
        return;
    }
    // DT_RELR needs glibc 2.36 where the binary runs; a build on an older glibc (Ubuntu 22.04)
    // keeps the classic relocations. Cross builds cannot ask: they keep them too.
    if var("HOST") == var("TARGET") && minor_version("getconf", "GNU_LIBC_VERSION").is_some_and(|minor| minor >= 36) {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }

    // The ordering file is an LLD option; GNU ld would reject it. Rust links this target with
    // its bundled LLD from 1.90 on, unless the flags pick another linker.
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let lld = var("TARGET") == "x86_64-unknown-linux-gnu"
        && minor_version(&rustc, "--version").is_some_and(|minor| minor >= 90)
        && !rustflags.contains("linker")
        && !rustflags.contains("link-self-contained")
        && var("RUSTC_LINKER").is_empty();
    if lld && var("PROFILE") == "release" {
        let order = format!("{}/link/agent.order", var("CARGO_MANIFEST_DIR"));
        println!("cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={order}");
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The minor version a program prints as its second word: `rustc 1.95.0 (...)` gives 95,
/// `glibc 2.36` (`getconf GNU_LIBC_VERSION`) gives 36.
fn minor_version(program: &str, arg: &str) -> Option<u32> {
    let out = Command::new(program).arg(arg).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace().nth(1)?.split('.').nth(1)?.parse().ok()
}
