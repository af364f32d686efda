//! One request (a batch of one row) through gateway-8, against the hand
//! loop on one row.
//!
//! `cargo bench --bench latency`
//!
//! After criterion's group it prints a *paired* comparison that stays
//! readable on a busy machine: rounds of 100,000 requests alternate between
//! the four variants, and the medians of ns per request and of the
//! per-round ratios to the hand loop are reported
//! (`cargo bench --bench latency -- paired` runs only that).

use std::time::Instant;

use criterion::{Criterion, criterion_group};
use mware::gateway8::{Columns, Composition, Fields, Gateway, GatewayPipeline, hand_fused};
use mware::prelude::*;

mod common;
use common::{median, median_ratio, paired_rounds};

fn bench(c: &mut Criterion) {
    let (schema, fields) = Fields::schema();
    let mut group = c.benchmark_group("latency");
    let mut cols = Columns::generate(42, 7, 1);
    let mut g = Gateway::new(1 << 20);
    group.bench_function("hand_fused_1row", |b| {
        b.iter(|| {
            cols.status[0] = 0;
            hand_fused(std::hint::black_box(&mut cols), &mut g);
        })
    });
    for (name, comp) in [
        ("mware_static_1row", Composition::Static),
        ("mware_pinned_1row", Composition::Pinned),
        ("mware_boxed_1row", Composition::Boxed),
    ] {
        let gw = GatewayPipeline::build(&fields, &schema, 1 << 20, comp, |b| b.threads(1)).unwrap();
        let mut batch = Batch::new(&schema);
        fields.fill(&mut batch, 42, 7, 1).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                batch.reset_control();
                gw.pipeline.run(std::hint::black_box(&mut batch)).unwrap();
            })
        });
    }
    group.finish();
}

/// Hand loop, static chain (runtime and pinned fields) and boxed stages on
/// one row, and a pipeline of one trivial stage (the fixed cost of a run),
/// alternating in rounds; prints median ns per request and per-round ratios
/// to the hand loop.
fn paired(rounds: usize) {
    const REQUESTS: u32 = 100_000;
    let (schema, fields) = Fields::schema();
    let mut cols = Columns::generate(42, 7, 1);
    let mut g = Gateway::new(1 << 20);
    let pipelines = [Composition::Static, Composition::Pinned, Composition::Boxed]
        .map(|c| GatewayPipeline::build(&fields, &schema, 1 << 20, c, |b| b.threads(1)).unwrap());
    let mut batch = Batch::new(&schema);
    fields.fill(&mut batch, 42, 7, 1).unwrap();
    // The floor: the fixed cost of a run, through a pipeline of one trivial
    // stage.
    let (floor, mut floor_batch) = {
        let mut s = SchemaBuilder::new();
        let x = s.hot::<u64>("x");
        let schema = s.build().unwrap();
        let inc = stage::parallel("inc", Write(x), |x: &mut u64, _: &mut RowCtl| *x += 1);
        let mut batch = Batch::new(&schema);
        batch.resize(1);
        (Pipeline::builder(&schema).threads(1).before(inc).build().unwrap(), batch)
    };
    let request = |variant: usize| {
        let t = Instant::now();
        for _ in 0..REQUESTS {
            match variant {
                0 => {
                    cols.status[0] = 0;
                    hand_fused(std::hint::black_box(&mut cols), &mut g);
                }
                1..=3 => {
                    batch.reset_control();
                    pipelines[variant - 1].pipeline.run(std::hint::black_box(&mut batch)).unwrap();
                }
                _ => {
                    floor_batch.reset_control();
                    floor.run(std::hint::black_box(&mut floor_batch)).unwrap();
                }
            }
        }
        t.elapsed().as_nanos() as f64 / f64::from(REQUESTS)
    };
    const NAMES: [&str; 5] =
        ["hand_fused", "mware_static", "mware_pinned", "mware_boxed", "one_trivial_stage"];
    let t = paired_rounds(rounds, NAMES.len(), request);
    let mut line = format!(
        "paired, {rounds} rounds of {REQUESTS} one-row requests (ns per request, ratio to the hand loop): {} {:.1}",
        NAMES[0],
        median(t[0].clone())
    );
    for v in 1..NAMES.len() {
        let ratio = median_ratio(&t[v], &t[0]);
        line += &format!("  {} {:.1} ({ratio:.1}x)", NAMES[v], median(t[v].clone()));
    }
    println!("{line}");
}

criterion_group!(benches, bench);

fn main() {
    common::bench_main("latency", benches, &[("paired", 30, &paired)]);
}
