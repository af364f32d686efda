//! gateway-8 on one thread: the executor (static chain and boxed stages)
//! against the hand-written fused loop (the limit) and the hand-written
//! one-pass-per-stage loop, at three batch sizes.
//!
//! `cargo bench --bench gateway8`; every timed iteration processes the
//! same 1,048,576 rows, so times compare directly (ns/row = time / 2^20).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mware::Batch;
use mware::gateway8::{Columns, Composition, Fields, Gateway, GatewayPipeline, hand_fused, hand_passes};

const ROWS: usize = 1 << 20;
const SEED: u64 = 42;

fn hand_batches(batch: usize) -> Vec<Columns> {
    (0..ROWS).step_by(batch).map(|first| Columns::generate(SEED, first as u64, batch.min(ROWS - first))).collect()
}

fn mware_batches(fields: &Fields, schema: &mware::Schema, batch: usize) -> Vec<Batch> {
    (0..ROWS)
        .step_by(batch)
        .map(|first| {
            let mut b = Batch::new(schema);
            fields.fill(&mut b, SEED, first as u64, batch.min(ROWS - first)).unwrap();
            b
        })
        .collect()
}

/// Puts a processed batch back to its input state (not timed).
pub fn reset(fields: &Fields, b: &mut Batch) {
    b.reset_control();
    b.column_mut(fields.cost).unwrap().fill(0);
    b.column_mut(fields.score).unwrap().fill(0.0);
    b.column_mut(fields.latency_ns).unwrap().fill(0);
}

fn bench(c: &mut Criterion) {
    let (schema, fields) = Fields::schema();
    let mut group = c.benchmark_group("gateway8");
    group.throughput(Throughput::Elements(ROWS as u64)).sample_size(20).measurement_time(Duration::from_secs(4));
    for batch in [4_096, 65_536, ROWS] {
        let mut hand = hand_batches(batch);
        let timed_hand = |iters: u64, hand: &mut Vec<Columns>, f: fn(&mut Columns, &mut Gateway)| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut g = Gateway::new(ROWS as u64);
                hand.iter_mut().for_each(Columns::reset_outputs);
                let t = Instant::now();
                for cols in hand.iter_mut() {
                    f(cols, &mut g);
                }
                total += t.elapsed();
            }
            total
        };
        group.bench_function(BenchmarkId::new("hand_fused", batch), |b| {
            b.iter_custom(|iters| timed_hand(iters, &mut hand, hand_fused))
        });
        group.bench_function(BenchmarkId::new("hand_passes", batch), |b| {
            b.iter_custom(|iters| timed_hand(iters, &mut hand, hand_passes))
        });
        drop(hand);
        let mut batches = mware_batches(&fields, &schema, batch);
        for (name, comp) in [("mware_static", Composition::Static), ("mware_boxed", Composition::Boxed)] {
            let gw = GatewayPipeline::build(&fields, &schema, ROWS as u64, comp, |b| b.threads(1)).unwrap();
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        gw.reset();
                        batches.iter_mut().for_each(|b| reset(&fields, b));
                        let t = Instant::now();
                        for b in batches.iter_mut() {
                            gw.pipeline.run(b).unwrap();
                        }
                        total += t.elapsed();
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
