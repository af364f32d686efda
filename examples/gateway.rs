//! gateway-8 (WORKLOAD.md) through an mware pipeline.
//!
//! ```text
//! cargo run --release --example gateway -- [--rows N] [--batch N] [--threads N] [--seed S] [--repeat K]
//!                                            [--pinned | --boxed] [--profile [--profile-svg PATH]]
//! ```
//!
//! Prints the workload's checksum line, then
//! `throughput rows=N batch=B threads=T ns_per_row=X` (median over repeats,
//! input generation excluded).
//!
//! The stages form one static chain over runtime field handles; `--pinned`
//! uses pinned fields instead, `--boxed` registers the stages one by one
//! (see `gateway8::Composition`).
//!
//! `--profile` turns per-stage profiling on (the throughput line then
//! includes its cost: a clock read per fused group per chunk), prints the
//! per-stage table of every run added up after those two lines, and writes
//! an SVG bar chart of ns/row per stage to `--profile-svg` (default
//! `profile.svg`; giving it implies `--profile`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mware::gateway8::{Args, Checksum, Composition, Fields, GatewayPipeline, median_ns_per_row};
use mware::{Batch, RunReport};

fn main() -> ExitCode {
    let extra = " [--pinned | --boxed] [--profile [--profile-svg PATH]]";
    let switches = ["--pinned", "--boxed", "--profile"];
    let args = match Args::parse(std::env::args().skip(1), &["--profile-svg"], &switches) {
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
    let composition = match (args.switch("--pinned"), args.switch("--boxed")) {
        (true, true) => return Err(mware::Error::Config("--pinned and --boxed exclude each other".into())),
        (true, false) => Composition::Pinned,
        (false, true) => Composition::Boxed,
        (false, false) => Composition::Static,
    };
    let profile = args.switch("--profile") || args.option("--profile-svg").is_some();
    let gw = GatewayPipeline::build(&fields, &schema, args.rows, composition, |b| {
        b.threads(args.threads).profile(profile)
    })?;
    let mut report = RunReport::default();
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
            let run = gw.pipeline.run(&mut batch)?;
            busy += t.elapsed();
            if profile {
                report.accumulate(&run);
            }
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
    println!("{}", args.throughput_line(median_ns_per_row(&mut times, args.rows)));
    if profile {
        let svg = args.option("--profile-svg").unwrap_or("profile.svg");
        println!("profile: every run of the {} repeat(s) added up", args.repeat);
        print!("{}", report.table());
        report.write_svg(svg).map_err(|e| mware::Error::Config(format!("cannot write {svg}: {e}")))?;
        println!("profile: ns/row per stage drawn in {svg}");
    }
    Ok(())
}
