//! What profiling costs on gateway-8, one thread: the same pipeline with
//! profiling off and on, and on with a [`Monitor`] fed every run's report.
//!
//! `cargo bench --bench profiling`; every timed iteration processes the same
//! 1,048,576 rows (ns/row = time / 2^20), like `benches/gateway8.rs`.
//!
//! Off runs the executor's code without any profiling (a const-generic
//! switch compiles it out of the row loops); on reads the clock once per
//! fused group per chunk and counts rows per stage. "Off" against "no
//! profiling code at all" is measured by running `benches/gateway8.rs`'s
//! `mware_static` at the commit before profiling existed and at the commit
//! that added it (see BENCHMARKS.md).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mware::gateway8::{Composition, Fields, GatewayPipeline};
use mware::monitor::Monitor;

mod common;
use common::{ROWS, mware_batches, reset, time_mware};

fn bench(c: &mut Criterion) {
    let (schema, fields) = Fields::schema();
    let mut group = c.benchmark_group("profiling");
    group
        .throughput(Throughput::Elements(ROWS as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for (comp, batch) in
        [(Composition::Static, 4_096), (Composition::Static, 65_536), (Composition::Boxed, 65_536)]
    {
        let name = if comp == Composition::Static { "static" } else { "boxed" };
        let mut batches = mware_batches(&fields, &schema, batch);
        let gw = GatewayPipeline::build(&fields, &schema, ROWS as u64, comp, |b| b.threads(1)).unwrap();
        gw.pipeline.set_profiling(false);
        group.bench_function(BenchmarkId::new(format!("{name}_off"), batch), |b| {
            b.iter_custom(|iters| time_mware(iters, &gw, &fields, &mut batches))
        });
        gw.pipeline.set_profiling(true);
        group.bench_function(BenchmarkId::new(format!("{name}_on"), batch), |b| {
            b.iter_custom(|iters| time_mware(iters, &gw, &fields, &mut batches))
        });
        let mut monitor = Monitor::builder(&gw.pipeline).window(16).factor(2.0).build().unwrap();
        group.bench_function(BenchmarkId::new(format!("{name}_on_monitor"), batch), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    gw.reset();
                    batches.iter_mut().for_each(|b| reset(&fields, b));
                    let t = Instant::now();
                    for b in batches.iter_mut() {
                        let report = gw.pipeline.run(b).unwrap();
                        monitor.observe(&report);
                    }
                    total += t.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
