//! The scheduler benchmark.
//!
//! `cargo run --release -p capstan-scheduler --example bench` prints the report for
//! 1,000 nodes x 8 GPUs and 10,000 pending gangs as one JSON object, then a table of
//! first-pass time for 100, 1,000 and 10,000 nodes.
//! `... --example bench -- NODES JOBS [QUEUES] [SEED]` prints the report for that input only.

use capstan_scheduler::bench::{run, BenchConfig};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    if let [nodes, jobs, rest @ ..] = args.as_slice() {
        let cfg = BenchConfig {
            nodes: *nodes as u32,
            jobs: *jobs as u32,
            queues: rest.first().map_or(8, |q| *q as u32),
            seed: rest.get(1).copied().unwrap_or(1),
            ..BenchConfig::default()
        };
        println!("{}", serde_json::to_string_pretty(&run(cfg)).expect("json"));
        return;
    }
    println!("{}", serde_json::to_string_pretty(&run(BenchConfig::default())).expect("json"));
    println!();
    println!(
        "| nodes | GPUs usable | GPUs asked | pending gangs | first pass (s) | decisions/s | passes | gpu_allocation \
         | FIFO first-fit pass (s) | FIFO gpu_allocation | greedy first-fit gpu_allocation |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (nodes, jobs) in [(100, 10_000), (1_000, 10_000), (10_000, 10_000), (10_000, 100_000)] {
        let r = run(BenchConfig { nodes, jobs, ..BenchConfig::default() });
        println!(
            "| {nodes} | {} | {} | {jobs} | {:.4} | {:.0} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
            r.gpus_usable,
            r.gpus_demanded,
            r.capstan.pass_seconds,
            r.capstan.decisions_per_second,
            r.capstan.passes,
            r.capstan.gpu_allocation,
            r.baseline.pass_seconds,
            r.baseline.gpu_allocation,
            r.greedy_first_fit.gpu_allocation
        );
    }
}
