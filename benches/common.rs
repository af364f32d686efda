//! Shared set-up for the benches: gateway-8 batches and a timed loop.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use mware::Batch;
use mware::gateway8::{Columns, Fields, Gateway, GatewayPipeline};

/// Rows every throughput iteration processes.
pub const ROWS: usize = 1 << 20;
/// The workload's seed.
pub const SEED: u64 = 42;

/// The input as hand-loop columns, in batches of `batch` rows.
pub fn hand_batches(batch: usize) -> Vec<Columns> {
    (0..ROWS)
        .step_by(batch)
        .map(|first| Columns::generate(SEED, first as u64, batch.min(ROWS - first)))
        .collect()
}

/// The input as mware batches of `batch` rows.
pub fn mware_batches(fields: &Fields, schema: &mware::Schema, batch: usize) -> Vec<Batch> {
    (0..ROWS)
        .step_by(batch)
        .map(|first| {
            let mut b = Batch::new(schema);
            fields.fill(&mut b, SEED, first as u64, batch.min(ROWS - first)).unwrap();
            b
        })
        .collect()
}

/// Puts a processed batch back to its input state.
pub fn reset(fields: &Fields, b: &mut Batch) {
    b.reset_control();
    b.column_mut(fields.cost).unwrap().fill(0);
    b.column_mut(fields.score).unwrap().fill(0.0);
    b.column_mut(fields.latency_ns).unwrap().fill(0);
}

/// `iters` timed passes of the hand loop `f` over all batches (resets are
/// not timed).
pub fn time_hand(iters: u64, hand: &mut [Columns], f: fn(&mut Columns, &mut Gateway)) -> Duration {
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
}

/// `iters` timed passes of a gateway pipeline over all batches.
pub fn time_mware(iters: u64, gw: &GatewayPipeline, fields: &Fields, batches: &mut [Batch]) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        gw.reset();
        batches.iter_mut().for_each(|b| reset(fields, b));
        let t = Instant::now();
        for b in batches.iter_mut() {
            gw.pipeline.run(b).unwrap();
        }
        total += t.elapsed();
    }
    total
}

/// Nanoseconds of CPU time this thread has run (`CLOCK_THREAD_CPUTIME_ID`:
/// precise, unlike `/proc/thread-self/schedstat`, which moves by scheduler
/// ticks), or wall time since `start` off Linux.
pub fn cpu_ns(start: Instant) -> u64 {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `clock_gettime` writes one `struct timespec` (two 64-bit
        // fields on 64-bit Linux, as declared) through a valid pointer.
        if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.sec as u64 * 1_000_000_000 + ts.nsec as u64;
        }
    }
    start.elapsed().as_nanos() as u64
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The paired rounds every bench's `paired` report runs: one warm-up pass
/// of each of `variants`, then `rounds` rounds of one pass each, rotating
/// which goes first so that no variant always follows the same one.
/// Returns each variant's measurements (whatever `pass` returns).
pub fn paired_rounds(rounds: usize, variants: usize, mut pass: impl FnMut(usize) -> f64) -> Vec<Vec<f64>> {
    for v in 0..variants {
        pass(v);
    }
    let mut t = vec![Vec::with_capacity(rounds); variants];
    for r in 0..rounds {
        for k in 0..variants {
            let v = (k + r) % variants;
            t[v].push(pass(v));
        }
    }
    t
}

/// The median of the per-round ratios `a[i] / b[i]`.
pub fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| x / y).collect())
}

/// An extra report of a bench binary: its name, the rounds it runs when
/// benching, and the report itself (given the rounds).
pub type Report<'a> = (&'a str, usize, &'a dyn Fn(usize));

/// A bench binary's `main`: criterion's groups, then its extra reports
/// (`paired` and the like).
/// Naming a report (`cargo bench --bench NAME -- paired`) runs only that;
/// under `cargo test` (no `--bench`) every report runs once, as a smoke test.
pub fn bench_main(bench: &str, groups: fn(), reports: &[Report<'_>]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let benching = args.iter().any(|a| a == "--bench");
    if filter.is_none_or(|f| reports.iter().all(|(name, ..)| !name.contains(f.as_str()))) {
        groups();
    }
    for (name, rounds, report) in reports {
        if filter.is_none_or(|f| format!("{bench}/{name}").contains(f.as_str())) {
            report(if benching { *rounds } else { 1 });
        }
    }
    criterion::Criterion::default().configure_from_args().final_summary();
}
