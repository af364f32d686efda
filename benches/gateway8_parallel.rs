//! gateway-8 on one thread against all threads, on the same batches, with
//! the single-threaded fused hand loop as the yardstick; and a chain of
//! parallel-safe stages only (gateway-8 without its sequential quota).
//!
//! `cargo bench --bench gateway8_parallel`
//!
//! After criterion's group it prints a *paired* comparison that stays
//! readable on a busy machine: passes of every variant alternate in rounds
//! (wall time: the variants use several threads; each timed pass follows an
//! untimed one of the same variant, so it sees the steady state of batch
//! after batch), and the median of the per-round ratios is reported
//! (`cargo bench --bench gateway8_parallel -- paired` runs only that). The
//! paired report also runs gateway-8 on all threads with adaptive threads
//! (`PipelineBuilder::adapt_threads`), which splits a run only where that
//! measured faster, and both pipelines on all threads with `run` called
//! from a thread of the pool (as an embedder that lives in the pool would:
//! a run then does not enter the pool and wake the caller).
//!
//! `cargo bench --bench gateway8_parallel -- side_by_side` compares two
//! costly stages with disjoint access run one after the other and side by
//! side (`RowFn::side_by_side`), on batches of one chunk, which cannot
//! spread their chunks over the threads.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use mware::gateway8::{Composition, Fields, GatewayPipeline, hand_fused};
use mware::prelude::*;

mod common;
use common::{
    ROWS, hand_batches, median, median_ratio, mware_batches, paired_rounds, reset, time_hand, time_mware,
};

/// gateway-8's parallel-safe stages (auth, validate, route, enrich,
/// handler, timing) as one static chain, on `threads` threads; `configure`
/// sets anything else.
fn stateless_chain(
    f: &Fields,
    schema: &Schema,
    threads: usize,
    configure: impl FnOnce(mware::PipelineBuilder) -> mware::PipelineBuilder,
) -> Pipeline {
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
    configure(Pipeline::builder(schema).threads(threads))
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
            let p = stateless_chain(&fields, &schema, t, |b| b);
            group.bench_function(BenchmarkId::new(format!("stateless_{t}t"), batch), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| time_pipeline(&p, &fields, &mut batches)).sum())
            });
        }
    }
    group.finish();
}

/// One timed pass of `p` over every batch (outputs reset first, untimed).
fn time_pipeline(p: &Pipeline, fields: &Fields, batches: &mut [Batch]) -> Duration {
    batches.iter_mut().for_each(|b| reset(fields, b));
    let start = Instant::now();
    for b in batches.iter_mut() {
        p.run(b).unwrap();
    }
    start.elapsed()
}

/// The hand loop, gateway-8 and the stateless chain on 1 and all threads
/// (and on all threads called from a pool thread), alternating pass by
/// pass; prints median ns/row and the median per-round ratios (2T against
/// 1T, and gateway-8 2T against the hand loop).
fn paired(rounds: usize) {
    let (schema, fields) = Fields::schema();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("paired, {rounds} rounds, wall time (ns/row; speed-up of {threads} threads over 1):");
    for batch in [65_536, ROWS] {
        let mut hand = hand_batches(batch);
        let mut batches = mware_batches(&fields, &schema, batch);
        // One thread, all threads, all threads with adaptive threads.
        let gateway = [(1, false), (threads, false), (threads, true)].map(|(t, adapt)| {
            GatewayPipeline::build(&fields, &schema, ROWS as u64, Composition::Static, |b| {
                b.threads(t).adapt_threads(adapt)
            })
            .unwrap()
        });
        let stateless = [1, threads].map(|t| stateless_chain(&fields, &schema, t, |b| b));
        // Each variant runs an untimed pass before its timed one: a pass
        // right after another variant's single-threaded pass measures the
        // second core waking up (two threads 7.0-7.4 ns/row against 5.9
        // back to back, session 5), which a pipeline serving batch after
        // batch does not pay.
        let pass = |v: usize| {
            let mut once = || match v {
                0 => time_hand(1, &mut hand, hand_fused),
                1..=3 => time_mware(1, &gateway[v - 1], &fields, &mut batches),
                4 | 5 => time_pipeline(&stateless[v - 4], &fields, &mut batches),
                6 => rayon::scope(|_| time_mware(1, &gateway[1], &fields, &mut batches)),
                _ => rayon::scope(|_| time_pipeline(&stateless[1], &fields, &mut batches)),
            };
            once();
            once().as_nanos() as f64 / ROWS as f64
        };
        let t = paired_rounds(rounds, 8, pass);
        let ratio = |a: usize, b: usize| median_ratio(&t[a], &t[b]);
        let m = |v: usize| median(t[v].clone());
        println!(
            "  {batch:>7}  hand_fused_1t {:.2}  gateway8 1t {:.2} {threads}t {:.2} ({:.2}x; {:.2}x the hand loop's time) \
             adaptive {:.2} ({:.2}x)  stateless 1t {:.2} {threads}t {:.2} ({:.2}x)  from a pool thread: gateway8 {:.2} \
             ({:.2}x; {:.2}x the hand loop's time) stateless {:.2} ({:.2}x)",
            m(0),
            m(1),
            m(2),
            ratio(1, 2),
            ratio(2, 0),
            m(3),
            ratio(1, 3),
            m(4),
            m(5),
            ratio(4, 5),
            m(6),
            ratio(1, 6),
            ratio(6, 0),
            m(7),
            ratio(4, 7),
        );
    }
}

/// Where splitting a batch over the threads starts to pay: the stateless
/// chain (six stages) on 1 thread against all threads with the threshold
/// off (`min_parallel_work(0)`), pass by pass, at growing batch sizes (a
/// batch is split only from two chunks of 2,048 rows up). Prints the median
/// per-round speed-up and the rows × stages of one batch, the unit of
/// `min_parallel_work`.
fn threshold(rounds: usize) {
    let (schema, fields) = Fields::schema();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pipelines = [1, threads].map(|t| stateless_chain(&fields, &schema, t, |b| b.min_parallel_work(0)));
    println!(
        "threshold, {rounds} rounds, stateless chain, wall time: speed-up of {threads} threads (threshold off) over 1"
    );
    for batch in [2_048, 4_096, 8_192, 16_384, 32_768, 65_536] {
        let mut batches = mware_batches(&fields, &schema, batch);
        let t =
            paired_rounds(rounds, 2, |v| time_pipeline(&pipelines[v], &fields, &mut batches).as_secs_f64());
        let speedup = median_ratio(&t[0], &t[1]);
        println!("  {batch:>6} rows ({:>7} row·stages): {speedup:.2}x", batch * 6);
    }
}

/// `rounds` rounds of `mix`, a dependent chain: 2–3.5 ns a round here.
fn heavy(mut h: u64, rounds: u64) -> u64 {
    for k in 0..rounds {
        h = mware::gateway8::mix(h ^ k);
    }
    h
}

/// A costly check on the user: passes seven rows in eight.
fn heavy_check(user_id: u64, token: u64, rounds: u64) -> bool {
    heavy(user_id ^ token, rounds) % 8 != 0
}

/// A costly score from the route and the payload length, and whether it
/// passes (seven in eight). Both stages stop rows, so neither loop
/// vectorises and the two cost the same.
fn heavy_score(route: u16, len: u32, rounds: u64) -> (f32, bool) {
    let h = heavy(u64::from(route) ^ (u64::from(len) << 16), rounds);
    ((h >> 40) as f32, h % 8 != 7)
}

/// `check` then `score` (disjoint access, `rounds` of `mix` each), `score`
/// marked side by side or not, with adaptive threads or not.
fn heavy_pair(
    f: &Fields,
    schema: &Schema,
    threads: usize,
    marked: bool,
    adapt: bool,
    rounds: u64,
) -> Pipeline {
    let check = stage::parallel(
        "check",
        (Read(f.user_id), Read(f.token)),
        move |(u, t): (&u64, &u64), c: &mut RowCtl| {
            if !heavy_check(*u, *t, rounds) {
                c.reject(401)
            }
        },
    );
    let score = stage::parallel(
        "score",
        (Read(f.route), Read(f.payload_len), Write(f.score)),
        move |(r, l, s): (&u16, &u32, &mut f32), c: &mut RowCtl| {
            let (score, ok) = heavy_score(*r, *l, rounds);
            *s = score;
            if !ok {
                c.reject(429)
            }
        },
    );
    let b =
        Pipeline::builder(schema).threads(threads).min_parallel_work(0).adapt_threads(adapt).before(check);
    let b = if marked { b.before(score.side_by_side()) } else { b.before(score) };
    b.build().unwrap()
}

/// The pair by hand: one loop, `score` on the rows `check` lets through.
fn heavy_hand(cols: &mut mware::gateway8::Columns, rounds: u64) {
    for i in 0..cols.user_id.len() {
        if !heavy_check(cols.user_id[i], cols.token[i], rounds) {
            cols.status[i] = 401;
            continue;
        }
        let (score, ok) = heavy_score(cols.route[i], cols.payload_len[i], rounds);
        cols.score[i] = score;
        if !ok {
            cols.status[i] = 429;
        }
    }
}

/// The heavy pair by hand, and through mware on one thread and on all
/// threads: unmarked, marked side by side, marked with adaptive threads
/// (which times both ways per batch size and keeps the faster), and marked
/// with every run called from a thread of the pool (no entering the pool
/// per run);
/// alternating pass by pass over 65,536 rows in batches of one chunk. For
/// stages of 8 and 64 rounds of `mix`, prints median ns/row and the median
/// per-round speed-up over one thread.
fn side_by_side(rounds: usize) {
    let (schema, fields) = Fields::schema();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = ROWS / 16;
    println!("side_by_side, {rounds} rounds, wall time (ns/row; speed-up over mware on one thread):");
    for mixes in [8, 64] {
        let pipelines =
            [(1, false, false), (threads, false, false), (threads, true, false), (threads, true, true)]
                .map(|(t, marked, adapt)| heavy_pair(&fields, &schema, t, marked, adapt, mixes));
        assert!(pipelines[2].parallel_plan().has_side_by_side());
        let chunk = pipelines[2].parallel_plan().chunk_rows;
        for batch in [256, 1024, chunk] {
            let mut hand: Vec<_> = hand_batches(batch).into_iter().take(rows / batch).collect();
            let mut batches: Vec<_> =
                mware_batches(&fields, &schema, batch).into_iter().take(rows / batch).collect();
            let pass = |v: usize| {
                let mut once = || match v {
                    0 => {
                        hand.iter_mut().for_each(mware::gateway8::Columns::reset_outputs);
                        let t = Instant::now();
                        hand.iter_mut().for_each(|cols| heavy_hand(cols, mixes));
                        t.elapsed()
                    }
                    1..=4 => time_pipeline(&pipelines[v - 1], &fields, &mut batches),
                    // The pair with each run called from a pool thread.
                    _ => rayon::scope(|_| time_pipeline(&pipelines[2], &fields, &mut batches)),
                };
                once();
                once().as_nanos() as f64 / rows as f64
            };
            let t = paired_rounds(rounds, 8, pass);
            let m = |v: usize| median(t[v].clone());
            println!(
                "  {mixes:>2} mixes, {batch:>5} rows: hand 1t {:.1}  mware 1t {:.1} ({:.2}x the hand loop's time)  \
                 {threads}t unmarked {:.1} ({:.2}x)  {threads}t side by side {:.1} ({:.2}x; {:.2}x the hand loop's time)  \
                 adaptive {:.1} ({:.2}x)  side by side from a pool thread {:.1} ({:.2}x)",
                m(0),
                m(1),
                median_ratio(&t[1], &t[0]),
                m(2),
                median_ratio(&t[1], &t[2]),
                m(3),
                median_ratio(&t[1], &t[3]),
                median_ratio(&t[3], &t[0]),
                m(4),
                median_ratio(&t[1], &t[4]),
                m(5),
                median_ratio(&t[1], &t[5]),
            );
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    common::bench_main(
        "gateway8_parallel",
        benches,
        &[("paired", 15, &paired), ("threshold", 9, &threshold), ("side_by_side", 15, &side_by_side)],
    );
}
