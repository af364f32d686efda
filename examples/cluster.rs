//! gateway-8 (WORKLOAD.md) across timely dataflow workers and processes.
//!
//! ```text
//! cargo run --release --features timely --example cluster -- [--rows N] [--batch N] [--seed S] [-w W] [-n N -p P -h HOSTFILE]
//! ```
//!
//! `--rows`, `--batch` and `--seed` are the gateway flags; the rest go to
//! timely: `-w` worker threads per process, `-n` processes, `-p` this
//! process's index, `-h` a file of `host:port` lines, one per process.
//! Two processes on one machine:
//!
//! ```text
//! printf '127.0.0.1:2101\n127.0.0.1:2102\n' > hosts.txt
//! cluster --rows 1048576 -n 2 -p 0 -h hosts.txt &
//! cluster --rows 1048576 -n 2 -p 1 -h hosts.txt
//! ```
//!
//! Process 0 prints the workload's checksum line of the whole run (the same
//! as `examples/gateway.rs` prints for the same rows and seed), then
//! `throughput rows=N batch=B workers=W processes=P ns_per_row=X` (wall
//! time on worker 0, input generation and exchange included).

use std::process::ExitCode;

use mware::gateway8::Args;
use mware::timely::gateway::{ClusterRun, run_worker, split_args};
use timely::CommunicationConfig;

const USAGE: &str =
    "usage: cluster [--rows N] [--batch N] [--seed S] [-w THREADS] [-n PROCESSES -p INDEX -h HOSTFILE]";

fn main() -> ExitCode {
    let (gateway, timely_args) = split_args(std::env::args().skip(1));
    let parsed = Args::parse(gateway, &[], &[])
        .and_then(|args| Ok((args, timely::Config::from_args(timely_args.into_iter())?)));
    let (args, config) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cluster: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, config: timely::Config) -> Result<(), String> {
    let processes = match &config.communication {
        CommunicationConfig::Cluster { addresses, .. } => addresses.len(),
        _ => 1,
    };
    let batch = args.batch;
    // A peer that dies mid-run makes timely's communication threads panic,
    // and dropping the guards re-raises that panic here: turn it into an
    // error that says what to do. (Nothing of the run is used after a
    // panic, so unwind safety is moot.)
    let outcomes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        timely::execute(config, move |worker| run_worker(worker, &args)).map(|guards| guards.join())
    }))
    .map_err(|_| {
        "the computation ended: a worker or a peer process failed (timely's process set is fixed; \
         restart every process of the job)"
            .to_string()
    })??;
    let mut report: Option<ClusterRun> = None;
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(Ok(Some(run))) => report = Some(run),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(format!("local worker {i}: {e}")),
            Err(panic) => return Err(format!("local worker {i} panicked: {panic}")),
        }
    }
    if let Some(run) = report {
        println!("{}", run.totals.checksum());
        println!(
            "throughput rows={} batch={} workers={} processes={} ns_per_row={:.3}",
            run.totals.rows,
            batch,
            run.workers,
            processes,
            run.elapsed.as_nanos() as f64 / run.totals.rows.max(1) as f64
        );
    }
    Ok(())
}
