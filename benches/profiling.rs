//! What profiling costs on gateway-8, one thread: the same pipeline with
//! profiling off and on, and on with a [`Monitor`] fed every run's report.
//!
//! `cargo bench --bench profiling`; every timed iteration processes the same
//! 1,048,576 rows (ns/row = time / 2^20), like `benches/gateway8.rs`.
//!
//! After criterion's group it prints a *paired* comparison that stays
//! readable on a loaded machine: in one process, passes over the same
//! batches alternate between off, on and on + monitor (rotating which goes
//! first), each timed by the thread's CPU time (wall time off Linux), and
//! the median of the per-round ratios
//! is reported (`cargo bench --bench profiling -- paired` runs only that).
//!
//! Off leaves the stop counters' pointer null and never reads the clock; on
//! reads the clock once per fused group per chunk and counts the rows each
//! stage stops where it stops them (rows seen are derived per run). "Off"
//! against "no profiling code at all" was measured in session 1 by running
//! `benches/gateway8.rs`'s `mware_static` at the commit before profiling
//! existed and at the commit that added it (see BENCHMARKS.md).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use mware::gateway8::{Composition, Fields, GatewayPipeline};
use mware::monitor::Monitor;

mod common;
use common::{ROWS, cpu_ns, median, median_ratio, mware_batches, paired_rounds, reset, time_mware};

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

/// Off, on and on + monitor in alternating passes; prints CPU ns/row and
/// the median per-round ratios.
fn paired(rounds: usize) {
    let (schema, fields) = Fields::schema();
    let origin = Instant::now();
    println!("paired passes over {ROWS} rows, one thread, {rounds} rounds, thread CPU time:");
    for (comp, batch) in
        [(Composition::Static, 4_096), (Composition::Static, 65_536), (Composition::Boxed, 65_536)]
    {
        let name = if comp == Composition::Static { "static" } else { "boxed" };
        let mut batches = mware_batches(&fields, &schema, batch);
        let gw = GatewayPipeline::build(&fields, &schema, ROWS as u64, comp, |b| b.threads(1)).unwrap();
        let mut monitor = Monitor::builder(&gw.pipeline).window(16).factor(2.0).build().unwrap();
        let pass = |mode: usize| {
            gw.pipeline.set_profiling(mode > 0);
            gw.reset();
            batches.iter_mut().for_each(|b| reset(&fields, b));
            let t = cpu_ns(origin);
            for b in batches.iter_mut() {
                let report = gw.pipeline.run(b).unwrap();
                if mode == 2 {
                    monitor.observe(&report);
                }
            }
            (cpu_ns(origin) - t) as f64 / ROWS as f64
        };
        let t = paired_rounds(rounds, 3, pass);
        let ratio = |a: usize, b: usize| median_ratio(&t[a], &t[b]);
        println!(
            "  {name:>6}/{batch:<6} off {:6.2} ns/row  on {:6.2}  on+monitor {:6.2}   on/off {:.3}  on+monitor/on {:.3}",
            median(t[0].clone()),
            median(t[1].clone()),
            median(t[2].clone()),
            ratio(1, 0),
            ratio(2, 1)
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    common::bench_main("profiling", benches, &[("paired", 25, &paired)]);
}
