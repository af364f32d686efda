//! gateway-8 (WORKLOAD.md) as a stream: several producer threads generate
//! batches and submit them to a [`StreamRunner`]; the main thread consumes
//! the processed batches in order and keeps the checksum.
//!
//! ```text
//! cargo run --release --example stream -- [--rows N] [--batch N] [--threads N] [--seed S] [--repeat K] [--producers P] [--placement apart|system|pinned]
//! ```
//!
//! `--placement` says where the stream's workers run (`Placement`, Linux):
//! kept apart (the default), left to the system, or pinned each to a core.
//!
//! Producers reserve a sequence number first and fill batch `k` with rows
//! `k·B .. (k+1)·B`, so the quota stage sees the input in order and the
//! checksum equals the single-threaded gateway run for any producer count
//! and batch size.
//!
//! Prints the workload's checksum line, then
//! `throughput rows=N batch=B threads=T ns_per_row=X`, where X is the time
//! spent inside `Pipeline::run` per row (median over repeats; input
//! generation excluded, as in the gateway example), then a `stream` line
//! with the wall-clock time per row of the whole stream (generation by the
//! producers included) and a per-stage report.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use mware::gateway8::{
    Args, Checksum, Composition, Fields, GatewayPipeline, Metrics, ROUTES, median_ns_per_row,
};
use mware::stream::{Placement, StreamRunner};
use mware::{Batch, Pipeline};

fn main() -> ExitCode {
    let extra = " [--producers P] [--placement apart|system|pinned]";
    let args = match Args::parse(std::env::args().skip(1), &["--producers", "--placement"], &[]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stream: {e}\n{}", Args::usage("stream", extra));
            return ExitCode::from(2);
        }
    };
    let producers = match args.option("--producers").map(str::parse::<usize>) {
        None => 2,
        Some(Ok(p)) if p >= 1 => p,
        Some(_) => {
            eprintln!("stream: `--producers` takes a number ≥ 1\n{}", Args::usage("stream", extra));
            return ExitCode::from(2);
        }
    };
    let placement = match args.option("--placement") {
        None | Some("apart") => Placement::Apart,
        Some("system") => Placement::System,
        Some("pinned") => Placement::Pinned,
        Some(other) => {
            eprintln!(
                "stream: `--placement` takes apart, system or pinned, not `{other}`\n{}",
                Args::usage("stream", extra)
            );
            return ExitCode::from(2);
        }
    };
    match run(&args, producers, placement) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Rows stopped per middleware depth, and failures per stage.
#[derive(Default)]
struct Tally {
    rows: u64,
    rejected: Vec<u64>,
    failed: std::collections::BTreeMap<String, u64>,
    chunks: u64,
}

impl Tally {
    fn add(&mut self, batch: &Batch) {
        self.rows += batch.len() as u64;
        for s in batch.states() {
            if let Some(d) = s.stop_depth() {
                if !s.is_failed() {
                    if self.rejected.len() <= d {
                        self.rejected.resize(d + 1, 0);
                    }
                    self.rejected[d] += 1;
                }
            }
        }
        for (_, e) in batch.errors() {
            *self.failed.entry(e.stage.to_string()).or_default() += 1;
        }
    }

    fn print(&self, pipeline: &Pipeline) {
        let rejected = |d: usize| self.rejected.get(d).copied().unwrap_or(0);
        let failed_at = |name: &str| self.failed.get(name).copied().unwrap_or(0);
        println!("stage         kind         role    depth   rows_in   rejected  failed");
        for step in &pipeline.plan().steps {
            let d = step.depth;
            // Before-stages see rows no shallower stage stopped; after-stages
            // also see the rows stopped deeper than their own depth.
            let stopped_above: u64 = (0..d).map(rejected).sum();
            let stopped_here = rejected(d);
            let rows_in =
                if step.after { self.rows - stopped_above - stopped_here } else { self.rows - stopped_above };
            let rej = if step.after { 0 } else { stopped_here };
            println!(
                "{:<13} {:<12} {:<7} {:>5} {:>9} {:>10} {:>7}",
                step.meta.name,
                step.meta.kind.to_string(),
                if step.after { "after" } else { "before" },
                d,
                rows_in,
                rej,
                failed_at(&step.meta.name)
            );
        }
    }
}

fn run(args: &Args, producers: usize, placement: Placement) -> mware::Result<()> {
    let (schema, fields) = Fields::schema();
    let gw = GatewayPipeline::build(&fields, &schema, args.rows, Composition::Static, |b| {
        b.threads(args.threads)
    })?;
    let GatewayPipeline { pipeline, quota, metrics } = gw;
    let pipeline = Arc::new(pipeline);
    let batches = args.rows.div_ceil(args.batch as u64);
    let batch_rows = args.batch.min(args.rows as usize);

    let mut busy_times = Vec::with_capacity(args.repeat);
    let mut wall_times = Vec::with_capacity(args.repeat);
    let mut line: Option<Checksum> = None;
    let mut tally = Tally::default();
    let mut last = None;
    for _ in 0..args.repeat {
        quota.replace([0; ROUTES]);
        metrics.replace(Metrics::default());
        // Each producer holds a reserved place while it fills its batch: two
        // places per producer and four more, and no fewer than the default.
        let runner = StreamRunner::builder(pipeline.clone())
            .capacity((2 * producers + 4).max(32))
            .batch_rows(batch_rows)
            .placement(placement)
            .build()?;
        let mut consumer = runner.consumer().expect("first consumer");
        let in_order = runner.in_order();
        let started = Instant::now();
        let threads: Vec<_> = (0..producers)
            .map(|_| {
                let producer = runner.producer();
                let (seed, rows, batch) = (args.seed, args.rows, args.batch as u64);
                std::thread::spawn(move || -> mware::Result<()> {
                    loop {
                        let Ok(ticket) = producer.reserve() else { return Ok(()) };
                        let k = ticket.seq();
                        if k >= batches {
                            return Ok(()); // the dropped ticket's number is skipped
                        }
                        let first = k * batch;
                        let mut b = producer.batch();
                        fields.fill(&mut b, seed, first, (rows - first).min(batch) as usize)?;
                        if ticket.submit(b).is_err() {
                            return Ok(());
                        }
                    }
                })
            })
            .collect();

        let mut sum = Checksum::default();
        let mut this = Tally::default();
        for k in 0..batches {
            let done = consumer.recv().expect("every batch is delivered");
            assert_eq!(done.seq, k, "delivered in order");
            if let Err(e) = &done.report {
                return Err(e.clone());
            }
            this.chunks += done.report.as_ref().map_or(0, |r| r.chunks as u64);
            fields.add_to(&mut sum, &done)?;
            this.add(&done);
        }
        let wall = started.elapsed();
        for t in threads {
            t.join().expect("producer thread")?;
        }
        let stats = runner.close();
        sum.set_metrics(&metrics.lock());
        if let Some(prev) = line {
            assert_eq!(prev, sum, "repeated runs disagree");
        }
        line = Some(sum);
        busy_times.push(stats.busy);
        wall_times.push(wall);
        tally = this;
        last = Some((stats, wall, in_order));
    }
    println!("{}", line.expect("at least one repeat"));
    println!("{}", args.throughput_line(median_ns_per_row(&mut busy_times, args.rows)));
    let (stats, wall, in_order) = last.expect("at least one repeat");
    println!(
        "stream producers={producers} batches={} in_order={in_order} wall_ns_per_row={:.3} busy_share={:.2} chunks={}",
        stats.delivered,
        median_ns_per_row(&mut wall_times, args.rows),
        stats.busy.as_secs_f64() / wall.as_secs_f64(),
        tally.chunks,
    );
    // Where the workers' time went, per batch (see `StreamStats`).
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / stats.processed.max(1) as f64;
    println!(
        "stream per batch: run_us={:.1} turn_wait_us={:.1} delivering_us={:.1} idle_us={:.1} (workers moved {} times)",
        us(stats.busy),
        us(stats.turn_wait),
        us(stats.delivering),
        us(stats.idle),
        stats.moves,
    );
    tally.print(&pipeline);
    Ok(())
}
