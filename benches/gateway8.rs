//! gateway-8 on one thread: the executor (static chain over runtime field
//! handles, the same chain over pinned fields, and boxed stages) against the hand-written fused loop (the limit) and the hand-written
//! one-pass-per-stage loop, at three batch sizes.
//!
//! `cargo bench --bench gateway8`; every timed iteration processes the
//! same 1,048,576 rows, so times compare directly (ns/row = time / 2^20).
//!
//! After criterion's group it prints a *paired* comparison that stays
//! readable while the machine's neighbours come and go: passes over the
//! same rows alternate between the five variants (rotating which goes
//! first), each timed by the thread's CPU time, and the median of the
//! per-round ratios to the hand fused loop is reported
//! (`cargo bench --bench gateway8 -- paired` runs only that).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use mware::gateway8::{Composition, Fields, Gateway, GatewayPipeline, hand_fused, hand_passes};

mod common;
use common::{
    ROWS, cpu_ns, hand_batches, median, median_ratio, mware_batches, paired_rounds, reset, time_hand,
    time_mware,
};

fn bench(c: &mut Criterion) {
    let (schema, fields) = Fields::schema();
    let mut group = c.benchmark_group("gateway8");
    group
        .throughput(Throughput::Elements(ROWS as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for batch in [4_096, 65_536, ROWS] {
        let mut hand = hand_batches(batch);
        group.bench_function(BenchmarkId::new("hand_fused", batch), |b| {
            b.iter_custom(|iters| time_hand(iters, &mut hand, hand_fused))
        });
        group.bench_function(BenchmarkId::new("hand_passes", batch), |b| {
            b.iter_custom(|iters| time_hand(iters, &mut hand, hand_passes))
        });
        drop(hand);
        let mut batches = mware_batches(&fields, &schema, batch);
        for (name, comp) in [
            ("mware_static", Composition::Static),
            ("mware_pinned", Composition::Pinned),
            ("mware_boxed", Composition::Boxed),
        ] {
            let gw = GatewayPipeline::build(&fields, &schema, ROWS as u64, comp, |b| b.threads(1)).unwrap();
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter_custom(|iters| time_mware(iters, &gw, &fields, &mut batches))
            });
        }
    }
    group.finish();
}

/// The five variants in alternating passes at each batch size; prints
/// median CPU ns/row and the median per-round ratio to the hand fused loop.
fn paired(rounds: usize) {
    let (schema, fields) = Fields::schema();
    let origin = Instant::now();
    println!(
        "paired passes over {ROWS} rows, one thread, {rounds} rounds, thread CPU time (ns/row, ratio to hand fused):"
    );
    for batch in [4_096, 65_536, ROWS] {
        let mut hand = hand_batches(batch);
        let mut batches = mware_batches(&fields, &schema, batch);
        let pipelines = [Composition::Static, Composition::Pinned, Composition::Boxed]
            .map(|c| GatewayPipeline::build(&fields, &schema, ROWS as u64, c, |b| b.threads(1)).unwrap());
        let pass = |variant: usize| {
            let t;
            if variant < 2 {
                let f = [hand_fused, hand_passes][variant];
                let mut g = Gateway::new(ROWS as u64);
                hand.iter_mut().for_each(|c| c.reset_outputs());
                t = cpu_ns(origin);
                hand.iter_mut().for_each(|c| f(c, &mut g));
            } else {
                let gw = &pipelines[variant - 2];
                gw.reset();
                batches.iter_mut().for_each(|b| reset(&fields, b));
                t = cpu_ns(origin);
                for b in batches.iter_mut() {
                    gw.pipeline.run(b).unwrap();
                }
            }
            (cpu_ns(origin) - t) as f64 / ROWS as f64
        };
        const NAMES: [&str; 5] = ["hand_fused", "hand_passes", "mware_static", "mware_pinned", "mware_boxed"];
        let t = paired_rounds(rounds, NAMES.len(), pass);
        let mut line = format!("  {batch:>7}  {} {:5.2}", NAMES[0], median(t[0].clone()));
        for v in 1..NAMES.len() {
            let ratio = median_ratio(&t[v], &t[0]);
            line += &format!("  {} {:5.2} ({ratio:.2}x)", NAMES[v], median(t[v].clone()));
        }
        println!("{line}");
    }
}

criterion_group!(benches, bench);

fn main() {
    common::bench_main("gateway8", benches, &[("paired", 15, &paired)]);
}
