//! gateway-8 on one thread: the executor (static chain and boxed stages)
//! against the hand-written fused loop (the limit) and the hand-written
//! one-pass-per-stage loop, at three batch sizes.
//!
//! `cargo bench --bench gateway8`; every timed iteration processes the
//! same 1,048,576 rows, so times compare directly (ns/row = time / 2^20).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mware::gateway8::{Composition, Fields, GatewayPipeline, hand_fused, hand_passes};

mod common;
use common::{ROWS, hand_batches, mware_batches, time_hand, time_mware};

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
        for (name, comp) in [("mware_static", Composition::Static), ("mware_boxed", Composition::Boxed)] {
            let gw = GatewayPipeline::build(&fields, &schema, ROWS as u64, comp, |b| b.threads(1)).unwrap();
            group.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter_custom(|iters| time_mware(iters, &gw, &fields, &mut batches))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
