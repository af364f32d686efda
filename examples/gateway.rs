//! gateway-8 (WORKLOAD.md) through an mware pipeline.
//!
//! ```text
//! cargo run --release --example gateway -- [--rows N] [--batch N] [--threads N] [--seed S] [--repeat K] [--boxed]
//! ```
//!
//! Prints the workload's checksum line, then
//! `throughput rows=N batch=B threads=T ns_per_row=X` (median over repeats,
//! input generation excluded).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mware::Batch;
use mware::gateway8::{Args, Checksum, Composition, Fields, GatewayPipeline, median_ns_per_row};

fn main() -> ExitCode {
    let extra = " [--boxed]";
    let args = match Args::parse(std::env::args().skip(1), &[], &["--boxed"]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gateway: {e}\n{}", Args::usage("gateway", extra));
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> mware::Result<()> {
    let (schema, fields) = Fields::schema();
    let composition = if args.switch("--boxed") { Composition::Boxed } else { Composition::Static };
    let gw = GatewayPipeline::build(&fields, &schema, args.rows, composition, |b| b.threads(args.threads))?;
    let mut batch = Batch::with_capacity(&schema, args.batch.min(args.rows as usize));
    let mut times = Vec::with_capacity(args.repeat);
    let mut line: Option<Checksum> = None;
    for _ in 0..args.repeat {
        gw.reset();
        let mut sum = Checksum::default();
        let mut busy = Duration::ZERO;
        for (first, rows) in args.batches() {
            fields.fill(&mut batch, args.seed, first, rows)?;
            let t = Instant::now();
            gw.pipeline.run(&mut batch)?;
            busy += t.elapsed();
            fields.add_to(&mut sum, &batch)?;
        }
        sum.set_metrics(&gw.metrics.lock());
        if let Some(prev) = line {
            assert_eq!(prev, sum, "repeated runs disagree");
        }
        line = Some(sum);
        times.push(busy);
    }
    println!("{}", line.expect("at least one repeat"));
    println!(
        "throughput rows={} batch={} threads={} ns_per_row={:.3}",
        args.rows,
        args.batch,
        args.effective_threads(),
        median_ns_per_row(&mut times, args.rows)
    );
    Ok(())
}
