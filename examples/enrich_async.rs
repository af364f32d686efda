//! gateway-8 (WORKLOAD.md) with an extra async enrichment stage: before the
//! gateway's own stages, every batch's distinct `user_id`s are looked up in
//! one call to a small in-process async service (a tokio task behind a
//! channel that answers many keys at once), and the answers are written to
//! a new column, `tier`. The gateway's columns are untouched, so the
//! checksum line is gateway-8's.
//!
//! ```text
//! cargo run --release --example enrich_async -- [--rows N] [--batch N] [--threads N] [--seed S] [--repeat K]
//! ```
//!
//! Prints the workload's checksum line, then
//! `async futures=F rows=R futures_per_row=X` (futures the async stage
//! created in one pass over the input: one per batch, never one per row),
//! then `throughput rows=N batch=B threads=T ns_per_row=X` (median over
//! repeats, input generation excluded, the lookups' waits included).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mware::gateway8::{Args, Checksum, Composition, Fields, GatewayPipeline, median_ns_per_row, mix};
use mware::prelude::*;
use tokio::sync::{mpsc, oneshot};

type Request = (Vec<u64>, oneshot::Sender<HashMap<u64, u8>>);

/// The profile store's answer for a user.
fn tier_of(user: u64) -> u8 {
    (mix(user ^ 0x7133) % 4) as u8
}

/// A client of the in-process profile service.
#[derive(Clone)]
struct Profiles {
    tx: mpsc::Sender<Request>,
    calls: Arc<AtomicU64>,
    keys: Arc<AtomicU64>,
}

impl Profiles {
    /// Starts the service: a tokio task answering each request (many keys)
    /// with one message.
    fn start() -> Profiles {
        let (tx, mut rx) = mpsc::channel::<Request>(16);
        tokio::spawn(async move {
            while let Some((keys, reply)) = rx.recv().await {
                let answer = keys.into_iter().map(|k| (k, tier_of(k))).collect();
                let _ = reply.send(answer);
            }
        });
        Profiles { tx, calls: Arc::default(), keys: Arc::default() }
    }

    async fn lookup(&self, keys: Vec<u64>) -> Result<HashMap<u64, u8>, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(keys.len() as u64, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.tx.send((keys, reply)).await.map_err(|_| "the profile service is gone".to_string())?;
        answer.await.map_err(|_| "the profile service dropped the request".to_string())
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1), &[], &[]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("enrich_async: {e}\n{}", Args::usage("enrich_async", ""));
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("enrich_async: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enrich_async: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> mware::Result<()> {
    let (schema, fields, tier) = Fields::schema_with(|s| s.hot::<u8>("tier"));
    let profiles = Profiles::start();
    let client = profiles.clone();
    // Distinct users of the chunk's live rows, one lookup, answers written.
    let enrich = stage::fetch(
        "profile",
        (Read(fields.user_id), Write(tier)),
        move |(users, tiers): (&[u64], &mut [u8]), rows: AsyncRows<'_>| {
            let client = client.clone();
            Box::pin(async move {
                let mut keys: Vec<u64> = rows.iter().map(|i| users[i]).collect();
                keys.sort_unstable();
                keys.dedup();
                let answers = client.lookup(keys).await?;
                rows.for_each(|i| tiers[i] = answers[&users[i]]);
                Ok(())
            })
        },
    )
    .timeout(Duration::from_secs(10));
    // The enrichment is the outermost layer; gateway-8's chain runs inside.
    let gw = GatewayPipeline::build(&fields, &schema, args.rows, Composition::Static, |b| {
        b.threads(args.threads).before(enrich)
    })?;
    let mut batch = Batch::with_capacity(&schema, args.batch.min(args.rows as usize));
    let mut times = Vec::with_capacity(args.repeat);
    let mut line: Option<Checksum> = None;
    let mut futures = 0;
    for _ in 0..args.repeat {
        gw.reset();
        let mut sum = Checksum::default();
        let mut busy = Duration::ZERO;
        futures = 0;
        for (first, rows) in args.batches() {
            fields.fill(&mut batch, args.seed, first, rows)?;
            let t = Instant::now();
            let report = gw.pipeline.run_async(&mut batch).await?;
            busy += t.elapsed();
            futures += report.futures;
            fields.add_to(&mut sum, &batch)?;
            let users = batch.column(fields.user_id)?;
            if let Some(r) = batch.column(tier)?.iter().zip(users).position(|(t, u)| *t != tier_of(*u)) {
                return Err(mware::Error::Config(format!("row {} got a wrong tier", first + r as u64)));
            }
            if let Some((r, e)) = batch.errors().next() {
                return Err(mware::Error::Config(format!("row {}: {e}", first + r as u64)));
            }
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
        "async futures={futures} rows={} futures_per_row={:.6}",
        args.rows,
        futures as f64 / args.rows.max(1) as f64
    );
    println!("{}", args.throughput_line(median_ns_per_row(&mut times, args.rows)));
    let calls = profiles.calls.load(Ordering::Relaxed);
    let keys = profiles.keys.load(Ordering::Relaxed);
    eprintln!(
        "profile service: {calls} calls, {keys} keys looked up ({:.0} keys per call)",
        keys as f64 / calls.max(1) as f64
    );
    Ok(())
}
