//! gateway-8 on one thread against all threads, on the same batches, with
//! the single-threaded fused hand loop as the yardstick; and a chain of
//! parallel-safe stages only (gateway-8 without its sequential quota).
//!
//! `cargo bench --bench gateway8_parallel`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mware::gateway8::{Composition, Fields, GatewayPipeline, hand_fused};
use mware::prelude::*;

mod common;
use common::{ROWS, hand_batches, mware_batches, time_hand, time_mware};

/// gateway-8's parallel-safe stages (auth, validate, route, enrich,
/// handler, timing) as one static chain.
fn stateless_chain(f: &Fields, schema: &Schema, threads: usize) -> Pipeline {
    use mware::chain::{after, before};
    use mware::gateway8::{auth_ok, enrich_score, now_ns, payload_ok, route_cost};
    let now = now_ns(ROWS as u64);
    let timing = stage::parallel(
        "timing",
        (Read(f.ts_ns), Write(f.latency_ns)),
        move |(ts, lat): (&u64, &mut u64), _: &mut RowCtl| *lat = now - *ts,
    );
    let auth =
        stage::parallel("auth", (Read(f.user_id), Read(f.token)), |(u, t): (&u64, &u64), c: &mut RowCtl| {
            if !auth_ok(*u, *t) {
                c.reject(401)
            }
        });
    let validate = stage::parallel("validate", Read(f.payload_len), |l: &u32, c: &mut RowCtl| {
        if !payload_ok(*l) {
            c.reject(413)
        }
    });
    let route = stage::parallel(
        "route",
        (Read(f.route), Write(f.cost)),
        |(r, c): (&u16, &mut u32), _: &mut RowCtl| *c = route_cost(*r),
    );
    let enrich = stage::parallel(
        "enrich",
        (Read(f.user_id), Read(f.route), Read(f.cost), Write(f.score)),
        |(u, r, c, s): (&u64, &u16, &u32, &mut f32), _: &mut RowCtl| *s = enrich_score(*u, *r, *c),
    );
    let handler = stage::parallel("handler", (), |_: (), c: &mut RowCtl| c.respond(200));
    Pipeline::builder(schema)
        .threads(threads)
        .chain(mware::chain![
            after(timing),
            before(auth),
            before(validate),
            before(route),
            before(enrich),
            before(handler)
        ])
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let (schema, fields) = Fields::schema();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("gateway8_parallel");
    group
        .throughput(Throughput::Elements(ROWS as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for batch in [65_536, ROWS] {
        let mut hand = hand_batches(batch);
        group.bench_function(BenchmarkId::new("hand_fused_1t", batch), |b| {
            b.iter_custom(|iters| time_hand(iters, &mut hand, hand_fused))
        });
        drop(hand);
        let mut batches = mware_batches(&fields, &schema, batch);
        for t in [1, threads] {
            let gw =
                GatewayPipeline::build(&fields, &schema, ROWS as u64, Composition::Static, |b| b.threads(t))
                    .unwrap();
            group.bench_function(BenchmarkId::new(format!("gateway8_{t}t"), batch), |b| {
                b.iter_custom(|iters| time_mware(iters, &gw, &fields, &mut batches))
            });
        }
        for t in [1, threads] {
            let p = stateless_chain(&fields, &schema, t);
            group.bench_function(BenchmarkId::new(format!("stateless_{t}t"), batch), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        batches.iter_mut().for_each(|b| common::reset(&fields, b));
                        let start = std::time::Instant::now();
                        for b in batches.iter_mut() {
                            p.run(b).unwrap();
                        }
                        total += start.elapsed();
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
