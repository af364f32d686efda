//! gateway-8 (with its sequential quota stage) through the stream runner
//! against calling `Pipeline::run` batch by batch, at 4,096- and
//! 65,536-row batches, on every core.
//!
//! `cargo bench --bench stream`; every timed iteration processes the same
//! 1,048,576 pre-generated rows (ns/row = time / 2^20). The stream variant
//! times from the first submit to the last batch received: one producer
//! thread submits the batches in order, the bench thread receives them.
//! Resetting the batches' outputs between iterations is not timed.
//!
//! Variants:
//! - `run`: `Pipeline::run` on each batch in turn (the baseline);
//! - `stream`: the same pipeline through a [`StreamRunner`] with default
//!   settings: one worker per core, each running its batch on its own
//!   thread, the quota stage's group taking the batches in turn (see
//!   `mware::stream`'s "Pipelining"), 32 batches in flight at most, the
//!   workers kept apart (`Placement::Apart`: a worker moves off a core that
//!   another worker, or the producer, is on);
//! - `stream_system`: the same with the workers left wherever the system
//!   puts them (`Placement::System`, the default before session 15);
//! - `stream_pinned`: the same with each worker pinned to a core of its own
//!   (`Placement::Pinned`);
//! - `stream_cap8`: the same with 8 batches in flight at most (the default
//!   before session 9), which leaves the workers less slack while the
//!   producer and the consumer are slow to run;
//! - `stream_1w`: one worker, so batches run one after the other with the
//!   whole chain fused into one loop;
//! - `run_boxed` / `stream_boxed`: the same stages registered one by one
//!   (each its own pass), where splitting the chain at the quota stage
//!   costs no fusion.
//!
//! After criterion's group it prints a *paired* comparison that stays
//! readable on a busy machine: passes of `run` and of the stream variants
//! alternate in rounds, and the median per-round speed-up is reported
//! (`cargo bench --bench stream -- paired` runs only that; other batch
//! sizes with `STREAM_BATCHES=1024,4096`).
//!
//! Then two reports of what bounds the stream: `bounds` (the stream's run
//! in turn, and two serial runs at once, against `run`, and the bound on
//! two workers in turn they give) and `hand` (the stream's schedule, other
//! cuts of the chain, and a pipeline by stage, written by hand over plain
//! columns, against the hand loop and `run`; `cargo bench --bench stream
//! -- hand` runs only that).
//!
//! `cores` (Linux) times `run` on each core in turn beside the stream, with
//! each core's speed, for hosts whose cores do not run at the same speed
//! (`cargo bench --bench stream -- cores` runs only that).
//!
//! Last, it prints what one hand-off between threads costs on this machine
//! (`cargo bench --bench stream -- wakeup` runs only that): a send that
//! wakes a sleeping receiver, timed on the sender and until the receiver
//! runs. Every batch a stream delivers takes at least one such hand-off.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use mware::gateway8::{
    Columns, Composition, Fields, Gateway, GatewayPipeline, Metrics, ROUTES, after_quota, auth_ok,
    before_quota, enrich_score, hand_fused, payload_ok, quota_ok, route_cost,
};
use mware::stream::{Placement, StreamRunner, StreamStats};
use mware::{Batch, Pipeline, StateHandle};

mod common;
use common::{ROWS, hand_batches, median, median_ratio, mware_batches as batches, paired_rounds, reset};

struct Gw {
    pipeline: Arc<Pipeline>,
    quota: StateHandle<[u64; mware::gateway8::ROUTES]>,
    metrics: StateHandle<mware::gateway8::Metrics>,
}

impl Gw {
    fn build(fields: &Fields, schema: &mware::Schema, composition: Composition) -> Gw {
        Gw::with_threads(fields, schema, composition, None)
    }

    /// With `threads` workers for each run (all cores when `None`).
    fn with_threads(
        fields: &Fields,
        schema: &mware::Schema,
        composition: Composition,
        threads: Option<usize>,
    ) -> Gw {
        let configure = |b: mware::PipelineBuilder| match threads {
            Some(n) => b.threads(n),
            None => b,
        };
        let gw = GatewayPipeline::build(fields, schema, ROWS as u64, composition, configure).unwrap();
        Gw { pipeline: Arc::new(gw.pipeline), quota: gw.quota, metrics: gw.metrics }
    }

    fn reset(&self) {
        self.quota.replace([0; mware::gateway8::ROUTES]);
        self.metrics.replace(Default::default());
    }
}

/// Runs every batch through a fresh stream runner, in order; returns the
/// time from the first submit to the last receive, and the runner's
/// counters.
fn through_stream(
    pipeline: &Arc<Pipeline>,
    input: &mut Vec<Batch>,
    variant: Variant,
) -> (Duration, StreamStats) {
    let mut builder = StreamRunner::builder(pipeline.clone());
    if let Some(n) = variant.workers {
        builder = builder.workers(n);
    }
    if let Some(n) = variant.capacity {
        builder = builder.capacity(n);
    }
    builder = builder.placement(variant.placement);
    let runner = builder.build().unwrap();
    let mut consumer = runner.consumer().unwrap();
    let n = input.len();
    let producer = runner.producer();
    let mut todo = std::mem::take(input);
    // The producer thread starts before the clock does: starting a thread
    // is not the stream's work.
    let start = std::sync::Barrier::new(2);
    let elapsed = std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            for b in todo.drain(..) {
                producer.submit(b).unwrap();
            }
        });
        start.wait();
        let t = Instant::now();
        for k in 0..n {
            let done = consumer.recv().unwrap();
            assert_eq!(done.seq, k as u64);
            input.push(done.into_batch());
        }
        t.elapsed()
    });
    (elapsed, runner.close())
}

/// One timed pass of `Pipeline::run` over every batch in turn.
fn time_run(gw: &Gw, fields: &Fields, input: &mut [Batch]) -> Duration {
    gw.reset();
    input.iter_mut().for_each(|b| reset(fields, b));
    let t = Instant::now();
    for b in input.iter_mut() {
        gw.pipeline.run(b).unwrap();
    }
    t.elapsed()
}

/// One timed pass through a fresh stream runner, and its counters.
fn time_stream(
    gw: &Gw,
    fields: &Fields,
    input: &mut Vec<Batch>,
    variant: Variant,
) -> (Duration, StreamStats) {
    gw.reset();
    input.iter_mut().for_each(|b| reset(fields, b));
    through_stream(&gw.pipeline, input, variant)
}

/// A stream variant: its name suffix, and the settings it changes from the
/// runner's defaults.
#[derive(Clone, Copy)]
struct Variant {
    suffix: &'static str,
    workers: Option<usize>,
    capacity: Option<usize>,
    placement: Placement,
}

/// The stream variants of a composition.
fn stream_variants(boxed: bool) -> &'static [Variant] {
    const DEFAULT: Variant =
        Variant { suffix: "", workers: None, capacity: None, placement: Placement::Apart };
    const SYSTEM: Variant = Variant { suffix: "_system", placement: Placement::System, ..DEFAULT };
    const PINNED: Variant = Variant { suffix: "_pinned", placement: Placement::Pinned, ..DEFAULT };
    const CAP8: Variant = Variant { suffix: "_cap8", capacity: Some(8), ..DEFAULT };
    const ONE_WORKER: Variant = Variant { suffix: "_1w", workers: Some(1), ..DEFAULT };
    if boxed { &[DEFAULT] } else { &[DEFAULT, SYSTEM, PINNED, CAP8, ONE_WORKER] }
}

fn bench(c: &mut Criterion) {
    let (schema, fields) = Fields::schema();
    let mut group = c.benchmark_group("stream");
    group
        .throughput(Throughput::Elements(ROWS as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for batch in [4_096, 65_536] {
        let mut input = batches(&fields, &schema, batch);
        for (suffix, composition) in [("", Composition::Static), ("_boxed", Composition::Boxed)] {
            let gw = Gw::build(&fields, &schema, composition);
            group.bench_function(BenchmarkId::new(format!("run{suffix}"), batch), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| time_run(&gw, &fields, &mut input)).sum())
            });
            for &v in stream_variants(!suffix.is_empty()) {
                group.bench_function(BenchmarkId::new(format!("stream{suffix}{}", v.suffix), batch), |b| {
                    b.iter_custom(|iters| {
                        (0..iters).map(|_| time_stream(&gw, &fields, &mut input, v).0).sum()
                    })
                });
            }
        }
    }
    group.finish();
}

/// The batch sizes of the `paired` report: 4,096 and 65,536 rows, or those
/// listed in `STREAM_BATCHES` (`STREAM_BATCHES=1024,4096`).
fn paired_batches() -> Vec<usize> {
    match std::env::var("STREAM_BATCHES") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().expect("STREAM_BATCHES: row counts")).collect(),
        Err(_) => vec![4_096, 65_536],
    }
}

/// `run` and the stream variants in alternating passes; prints median
/// ms per 2^20 rows and the median per-round speed-up over `run`, then
/// where the stream workers' time went per batch (medians over the rounds,
/// from `StreamStats`).
fn paired(rounds: usize) {
    let (schema, fields) = Fields::schema();
    println!("paired, {rounds} rounds (ms per {ROWS} rows; speed-up over run in the same round):");
    for batch in paired_batches() {
        let mut input = batches(&fields, &schema, batch);
        for (suffix, composition) in [("", Composition::Static), ("_boxed", Composition::Boxed)] {
            let gw = Gw::build(&fields, &schema, composition);
            let variants = stream_variants(!suffix.is_empty());
            // Per stream variant, per round: µs per batch in the run, waiting
            // for turns, delivering, idle; workers' moves apart in the pass.
            let mut split = vec![[const { Vec::new() }; 5]; variants.len()];
            let pass = |v: usize| {
                let d = match v {
                    0 => time_run(&gw, &fields, &mut input),
                    _ => {
                        let (d, st) = time_stream(&gw, &fields, &mut input, variants[v - 1]);
                        let us = |d: Duration| d.as_secs_f64() * 1e6 / st.processed.max(1) as f64;
                        for (k, part) in
                            [st.busy, st.turn_wait, st.delivering, st.idle].into_iter().enumerate()
                        {
                            split[v - 1][k].push(us(part));
                        }
                        split[v - 1][4].push(st.moves as f64);
                        d
                    }
                };
                d.as_secs_f64() * 1e3
            };
            let t = paired_rounds(rounds, variants.len() + 1, pass);
            let mut line = format!("  {batch:>6}  run{suffix} {:6.2}", median(t[0].clone()));
            for (i, v) in variants.iter().enumerate() {
                let speedup = median_ratio(&t[0], &t[i + 1]);
                let w = v.suffix;
                line += &format!("  stream{suffix}{w} {:6.2} ({speedup:.2}x)", median(t[i + 1].clone()));
            }
            println!("{line}");
            for (v, parts) in variants.iter().zip(split) {
                let w = v.suffix;
                let [run, turns, delivering, idle, moves] = parts.map(median);
                println!(
                    "          stream{suffix}{w}, worker time per batch: run {run:.1} us (of which turn waits {turns:.1}), delivering {delivering:.1} us, idle {idle:.1} us; moves apart per pass {moves:.0}"
                );
            }
        }
    }
}

/// What bounds the stream on gateway-8, measured with nothing else running:
/// one batch's run on one thread with the serial plan (`run` with
/// `threads(1)`) and in turn
/// (the parallel plan, cut around the quota stage: a stream submitted one
/// batch at a time, its `busy` time per batch), and two serial runs at once
/// on two threads (two pipelines over the two halves of the input), which
/// shows what two workers deliver with nothing to order: a ceiling for the
/// stream, which is timed in the same rounds (pinned, as `stream_pinned`).
/// One thread over one half alone (also printed) has run faster per batch
/// than over the whole, so the two at once are compared with it.
///
/// From these, per round, the most two workers in turn can give: `2e/c`
/// times `run`'s throughput, where `c` is what a batch costs in turn
/// against `run` (the cut chain's extra work) and `e` the share of a core
/// each of two runs at once gets (one half alone against each of the two
/// at once). The stream's speed-up is printed as a share of that bound.
fn bounds(rounds: usize) {
    let (schema, fields) = Fields::schema();
    println!("bounds, median of {rounds} rounds (us per batch):");
    for batch in [4_096, 65_536] {
        let mut input = batches(&fields, &schema, batch);
        let one_thread = || Gw::with_threads(&fields, &schema, Composition::Static, Some(1));
        let (gw, other) = (one_thread(), one_thread());
        let n = input.len() as f64;
        let per_batch = |d: Duration, batches: f64| d.as_secs_f64() * 1e6 / batches;
        let (mut alone, mut in_turn, mut half, mut halves) = (vec![], vec![], vec![], vec![]);
        let pinned = *stream_variants(false)
            .iter()
            .find(|v| v.placement == Placement::Pinned)
            .expect("a pinned variant");
        let (mut stream, mut stream_over_run, mut bound, mut of_bound) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            alone.push(per_batch(time_run(&gw, &fields, &mut input), n));
            gw.reset();
            input.iter_mut().for_each(|b| reset(&fields, b));
            let runner = StreamRunner::builder(gw.pipeline.clone()).workers(2).build().unwrap();
            let mut consumer = runner.consumer().unwrap();
            for b in std::mem::take(&mut input) {
                runner.submit(b).unwrap();
                input.push(consumer.recv().unwrap().into_batch());
            }
            in_turn.push(per_batch(runner.close().busy, n));
            let mid = input.len() / 2;
            let (a, b) = input.split_at_mut(mid);
            half.push(per_batch(time_run(&gw, &fields, a), a.len() as f64));
            let (x, y) = std::thread::scope(|s| {
                let y = s.spawn(|| time_run(&other, &fields, b));
                (time_run(&gw, &fields, a), y.join().unwrap())
            });
            let two = (per_batch(x, a.len() as f64) + per_batch(y, b.len() as f64)) / 2.0;
            halves.push(two);
            let s = per_batch(time_stream(&gw, &fields, &mut input, pinned).0, n);
            stream.push(s);
            let last = |v: &Vec<f64>| *v.last().expect("pushed above");
            let over_run = last(&alone) / s;
            stream_over_run.push(over_run);
            let (c, e) = (last(&in_turn) / last(&alone), last(&half) / two);
            bound.push(2.0 * e / c);
            of_bound.push(over_run * c / (2.0 * e));
        }
        let (alone, in_turn) = (median(alone), median(in_turn));
        let (half, halves) = (median(half), median(halves));
        println!(
            "  {batch:>6}  run {alone:.1}  in turn {in_turn:.1} (c = {:.2})  |  each of two at once on half the input {halves:.1} (one half alone {half:.1}: e = {:.2})  |  bound 2e/c {:.2}x run's throughput  |  stream, pinned, {:.1} per batch delivered ({:.2}x run's throughput, {:.2} of the bound)",
            in_turn / alone,
            half / halves,
            median(bound),
            median(stream),
            median(stream_over_run),
            median(of_bound)
        );
    }
}

/// The stream against `run` on each core in turn. On this virtual machine
/// the two cores' speeds change by themselves, from one tenth of a second
/// to the next (the host's doing; see BENCHMARKS.md §8): either core may
/// run up to 1.8x slower than the other, and at times the two share one
/// physical core, each fast alone and half as fast when both are busy.
/// `run` meets whichever speed its core has; the stream meets both.
///
/// Per round: a fixed integer loop timed on each core alone and on both
/// at once; `run` with the bench thread pinned to the first core, then to
/// the second; the stream with default settings and with pinned workers;
/// the loop again. A round is one of *equal cores* when `run` took the
/// same time on both (within 10 %) and neither measurement of the loop
/// found the cores sharing one (both at once taking 1.6x their time
/// alone or more); the speed-ups are summed up for those apart.
/// 4,096-row batches only: `run` runs those on the calling thread, where
/// it spreads 65,536-row ones over both cores.
#[cfg(target_os = "linux")]
fn cores(rounds: usize) {
    let cpus = cpus::allowed();
    if cpus.len() < 2 {
        println!("cores: needs two CPUs, this thread may run on {cpus:?}");
        return;
    }
    let pair = [cpus[0], cpus[1]];
    let (schema, fields) = Fields::schema();
    println!(
        "cores, {rounds} rounds: per round, the integer loop's ms on CPUs {pair:?} (alone, both at once; before | after), run's ms per {ROWS} rows pinned to each, each stream's, and its speed-up over each run"
    );
    let batch = 4_096;
    let mut input = batches(&fields, &schema, batch);
    let gw = Gw::build(&fields, &schema, Composition::Static);
    let variants = stream_variants(false);
    let streams = [variants[0], variants.iter().find(|v| v.placement == Placement::Pinned).copied().unwrap()];
    // Per stream: speed-ups over `run`, the mean of both cores' when they
    // were equal; over the faster and over the slower core when not; over
    // the mean when the cores shared one.
    let mut equal = [vec![], vec![]];
    let mut over_faster = [vec![], vec![]];
    let mut over_slower = [vec![], vec![]];
    let mut shared = [vec![], vec![]];
    for round in 0..=rounds {
        let before = cpus::speeds(pair);
        let on = pair.map(|cpu| {
            cpus::allow(&[cpu]);
            let d = time_run(&gw, &fields, &mut input);
            cpus::allow(&cpus);
            d.as_secs_f64() * 1e3
        });
        let times = streams.map(|v| time_stream(&gw, &fields, &mut input, v).0.as_secs_f64() * 1e3);
        let after = cpus::speeds(pair);
        if round == 0 {
            continue; // warm-up
        }
        let (fast, slow) = (on[0].min(on[1]), on[0].max(on[1]));
        let (sharing, equal_speed) = (before.sharing() || after.sharing(), slow / fast < 1.1);
        let label = match (sharing, equal_speed) {
            (true, _) => "shared",
            (false, true) => "equal",
            (false, false) => "",
        };
        let mut line =
            format!("  {batch:>6}  cpus {before} | {after}  {label:<6}  run {:6.2} {:6.2}", on[0], on[1]);
        for (i, (v, t)) in streams.iter().zip(times).enumerate() {
            line += &format!("  stream{} {t:6.2} ({:.2}x, {:.2}x)", v.suffix, on[0] / t, on[1] / t);
            let over_mean = (fast + slow) / 2.0 / t;
            if sharing {
                shared[i].push(over_mean);
            } else if equal_speed {
                equal[i].push(over_mean);
            } else {
                over_faster[i].push(fast / t);
                over_slower[i].push(slow / t);
            }
        }
        println!("{line}");
    }
    let summary = |v: &[f64]| match v.is_empty() {
        true => "-".to_string(),
        false => format!("{:.2}x", median(v.to_vec())),
    };
    for (i, v) in streams.iter().enumerate() {
        println!(
            "  {batch:>6}  stream{}, medians: {} rounds of equal cores, {} run; {} of unequal cores, {} run on the faster core, {} on the slower; {} on one shared core, {} run",
            v.suffix,
            equal[i].len(),
            summary(&equal[i]),
            over_faster[i].len(),
            summary(&over_faster[i]),
            summary(&over_slower[i]),
            shared[i].len(),
            summary(&shared[i])
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn cores(_rounds: usize) {
    println!("cores: pins threads to CPUs, which needs Linux");
}

/// Pinning the bench's threads, and timing each core (Linux).
#[cfg(target_os = "linux")]
mod cpus {
    use std::time::Instant;

    /// The CPUs the calling thread may run on.
    pub fn allowed() -> Vec<usize> {
        // SAFETY: `cpu_set_t` is a plain array of words; all zeros is the
        // empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; the kernel writes at most the
        // size given, which is `set`'s.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0, "sched_getaffinity: {}", std::io::Error::last_os_error());
        // SAFETY: every `cpu` is below `CPU_SETSIZE`, the number `set` holds.
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
    }

    /// Lets the calling thread run on `cpus` only (each one from `allowed`).
    pub fn allow(cpus: &[usize]) {
        // SAFETY: as in `allowed`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            assert!(cpu < libc::CPU_SETSIZE as usize);
            // SAFETY: `cpu` is below `CPU_SETSIZE` (checked above).
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: pid 0 is the calling thread; the kernel reads the size
        // given, which is `set`'s.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
    }

    /// The integer loop's milliseconds on each core of a pair, alone and
    /// with both cores running it at once.
    pub struct Speeds {
        alone: [f64; 2],
        together: [f64; 2],
    }

    impl Speeds {
        /// Both cores ran the loop at least 1.6x slower together than
        /// alone: two threads of one physical core (about 2x for a loop that
        /// keeps a core's integer units busy), not two cores.
        pub fn sharing(&self) -> bool {
            (0..2).all(|i| self.together[i] >= 1.6 * self.alone[i])
        }
    }

    impl std::fmt::Display for Speeds {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let [a0, a1] = self.alone;
            let [t0, t1] = self.together;
            write!(f, "{a0:.2} {a1:.2}, {t0:.2} {t1:.2}")
        }
    }

    /// Times the loop (eight independent multiply-shift chains, no memory
    /// traffic) on each of `pair` alone, then on both at once: how fast
    /// each core runs instructions right now, and whether the two share
    /// one physical core.
    pub fn speeds(pair: [usize; 2]) -> Speeds {
        let start = std::sync::Barrier::new(2);
        let on = |cpu: usize, barrier: Option<&std::sync::Barrier>| {
            allow(&[cpu]);
            if let Some(b) = barrier {
                b.wait();
            }
            let t = Instant::now();
            let mut s = [1u64, 2, 3, 4, 5, 6, 7, 8];
            for _ in 0..std::hint::black_box(1_000_000u32) {
                for x in s.iter_mut() {
                    *x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (*x >> 29);
                }
            }
            std::hint::black_box(s);
            t.elapsed().as_secs_f64() * 1e3
        };
        // On threads of their own, so the caller's CPUs stay as they were.
        let (on, start) = (&on, &start);
        std::thread::scope(|s| {
            let alone = pair.map(|cpu| s.spawn(move || on(cpu, None)).join().unwrap());
            let together = pair.map(|cpu| s.spawn(move || on(cpu, Some(start)))).map(|h| h.join().unwrap());
            Speeds { alone, together }
        })
    }
}

/// A crossbeam send that wakes a receiver blocked in `recv`: microseconds
/// spent by the sender, and until the receiver runs.
fn wakeup(rounds: u32) {
    let (tx, rx) = crossbeam::channel::bounded::<Instant>(1);
    let receiver = std::thread::spawn(move || {
        let mut waited = Duration::ZERO;
        while let Ok(sent) = rx.recv() {
            waited += sent.elapsed();
        }
        waited
    });
    let mut sending = Duration::ZERO;
    for _ in 0..rounds {
        // Long enough for the receiver to block (and its core to idle).
        std::thread::sleep(Duration::from_micros(200));
        let t = Instant::now();
        tx.send(t).unwrap();
        sending += t.elapsed();
    }
    drop(tx);
    let waited = receiver.join().unwrap();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(rounds);
    println!(
        "wake-up hand-off over {rounds} rounds: {:.1} us on the sender, {:.1} us until the receiver runs",
        us(sending),
        us(waited)
    );
}

/// The stream's schedule written by hand over plain columns: a ceiling for
/// any executor of it on this machine. Two threads take alternate batches;
/// each runs the stages before the quota on its batch, waits until the
/// batch before has left the quota stage, runs the quota and the stages
/// after it in one loop over the first three quarters of the rows and the
/// quota alone over the rest, passes the turn on, then runs the stages
/// after the quota on those last rows. Against `hand_fused`, the whole
/// chain in one loop on one thread, batch after batch, and the same loops
/// as the two threads run, on one thread (what cutting the chain costs by
/// hand), with the time of each part; and against `run` (the `paired`
/// report's baseline) in the same rounds, the median per-round speed-up.
/// Then other schedules: the quota as a prefix sum, which holds the turn
/// only to add 64 counters ([`Schedule::Scan`]); the chain cut elsewhere,
/// on one and two threads ([`Schedule::QuotaAlone`],
/// [`Schedule::BeforeEnrich`]); and a pipeline by stage.
fn hand_bounds(rounds: usize) {
    let (schema, fields) = Fields::schema();
    println!("hand-written, median of {rounds} rounds (us per batch):");
    for batch in [4_096, 65_536] {
        let mut fused = hand_batches(batch);
        let mut cut = hand_batches(batch);
        let mut input = batches(&fields, &schema, batch);
        let gw = Gw::build(&fields, &schema, Composition::Static);
        let one_thread = |b: mware::PipelineBuilder| b.threads(1);
        let serial = Gw::with_threads(&fields, &schema, Composition::Static, Some(1));
        let (front, rest) = GatewayPipeline::halves(&fields, &schema, ROWS as u64, one_thread).unwrap();
        let n = fused.len() as f64;
        let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
        let (mut one, mut cut_one, mut two, mut run, mut two_over_run) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut serial_run, mut halves, mut hand_halves) = (vec![], [vec![], vec![]], [vec![], vec![]]);
        let (mut piped, mut piped_over_run) = (vec![], vec![]);
        let (mut scan, mut scan_held) = (vec![], vec![]);
        let mut other_cuts = [const { [Vec::new(), Vec::new()] }; 2];
        let mut loops = [const { Vec::new() }; 3];
        for _ in 0..rounds {
            let r = us(time_run(&gw, &fields, &mut input));
            run.push(r);
            let mut g = Gateway::new(ROWS as u64);
            fused.iter_mut().for_each(Columns::reset_outputs);
            let t = Instant::now();
            fused.iter_mut().for_each(|c| hand_fused(c, &mut g));
            one.push(us(t.elapsed()));
            let check = |(used, metrics): ([u64; ROUTES], Metrics), cut: &[Columns]| {
                assert!(
                    used == g.used && metrics == g.metrics,
                    "the schedule by hand disagrees with the fused loop"
                );
                for (a, b) in fused.iter().zip(cut) {
                    assert!(
                        a.status == b.status
                            && a.cost == b.cost
                            && a.score == b.score
                            && a.latency_ns == b.latency_ns
                    );
                }
            };
            for threads in [1, 2] {
                cut.iter_mut().for_each(Columns::reset_outputs);
                let (used, metrics, elapsed, times) =
                    hand_in_turn(&mut cut, g.now_ns, threads, Schedule::InTurn);
                check((used, metrics), &cut);
                let d = us(elapsed);
                if threads == 1 {
                    cut_one.push(d);
                    (0..3).for_each(|i| loops[i].push(us(times[i])));
                } else {
                    two.push(d);
                    two_over_run.push(r / d);
                }
            }
            cut.iter_mut().for_each(Columns::reset_outputs);
            let (used, metrics, elapsed, times) = hand_in_turn(&mut cut, g.now_ns, 2, Schedule::Scan);
            check((used, metrics), &cut);
            scan.push(us(elapsed));
            scan_held.push(us(times[1]));
            for (j, schedule) in [Schedule::QuotaAlone, Schedule::BeforeEnrich].into_iter().enumerate() {
                for threads in [1, 2] {
                    cut.iter_mut().for_each(Columns::reset_outputs);
                    let (used, metrics, elapsed, _) = hand_in_turn(&mut cut, g.now_ns, threads, schedule);
                    check((used, metrics), &cut);
                    other_cuts[j][threads - 1].push(us(elapsed));
                }
            }
            cut.iter_mut().for_each(Columns::reset_outputs);
            let (used, metrics, elapsed) = hand_pipelined(&mut cut, g.now_ns);
            check((used, metrics), &cut);
            piped.push(us(elapsed));
            piped_over_run.push(r / us(elapsed));
            // The chain cut in two where the quota begins, on one thread:
            // in mware, and by hand.
            serial_run.push(us(time_run(&serial, &fields, &mut input)));
            input.iter_mut().for_each(|b| reset(&fields, b));
            rest.reset();
            let t = Instant::now();
            input.iter_mut().for_each(|b| {
                front.run(b).unwrap();
            });
            halves[0].push(us(t.elapsed()));
            let t = Instant::now();
            input.iter_mut().for_each(|b| {
                rest.pipeline.run(b).unwrap();
            });
            halves[1].push(us(t.elapsed()));
            assert!(
                *rest.quota.lock() == g.used && *rest.metrics.lock() == g.metrics,
                "the halves disagree with the fused loop"
            );
            cut.iter_mut().for_each(Columns::reset_outputs);
            let (mut used, mut metrics) = ([0u64; ROUTES], Metrics::default());
            let t = Instant::now();
            cut.iter_mut().for_each(|c| hand_front(c, |_, _| {}));
            hand_halves[0].push(us(t.elapsed()));
            let t = Instant::now();
            cut.iter_mut().for_each(|c| hand_rest(c, 0..c.len(), &mut used, &mut metrics, g.now_ns));
            hand_halves[1].push(us(t.elapsed()));
            check((used, metrics), &cut);
        }
        let (one, cut_one, two, piped) = (median(one), median(cut_one), median(two), median(piped));
        let [head, quota, tail] = loops.map(median);
        println!(
            "  {batch:>6}  fused loop {one:.1}  |  cut as the stream cuts it, one thread {cut_one:.1} ({:.2}x; before the turn {head:.1}, in turn {quota:.1}, after it {tail:.1})  |  two threads in turn {two:.1} ({:.2}x the fused loop's throughput, {:.2}x that of mware's run at {:.1})  |  pipelined by stage {piped:.1} ({:.2}x the fused loop's, {:.2}x run's)",
            cut_one / one,
            one / two,
            median(two_over_run),
            median(run),
            one / piped,
            median(piped_over_run)
        );
        let (scan, scan_held) = (median(scan), median(scan_held));
        println!(
            "          quota as a prefix sum, two threads: {scan:.1} ({:.2}x the fused loop's throughput; the turn held {scan_held:.2} us per batch, against {:.1} in turn)",
            one / scan,
            quota
        );
        let [[alone_one, alone_two], [early_one, early_two]] = other_cuts.map(|t| t.map(median));
        println!(
            "          other cuts: the quota alone in turn (three loops), one thread {alone_one:.1} ({:.2}x the fused loop), two threads {alone_two:.1} ({:.2}x its throughput)  |  before enrich, one thread {early_one:.1} ({:.2}x), two threads {early_two:.1} ({:.2}x)",
            alone_one / one,
            one / alone_two,
            early_one / one,
            one / early_two
        );
        let ([front, rest], [hand_front, hand_rest]) = (halves.map(median), hand_halves.map(median));
        println!(
            "          cut where the quota begins, one thread: mware before {front:.1}, from the quota on {rest:.1} (whole chain {:.1})  |  by hand before {hand_front:.1}, from the quota on {hand_rest:.1} (fused loop {one:.1})",
            median(serial_run)
        );
    }
}

/// The `paired` comparison when the batches are already in cache, as a
/// producer that fills each batch just before submitting it leaves them:
/// the first quarter of the input (64 batches of 4,096 rows, about 14 MB,
/// which this machine's 32 MB L3 cache holds), each pass after another over
/// the same batches. The quota rejects none of these rows (its counters
/// pass their limit after about 800,000 rows of the whole input), so this
/// also shows the chain without its most frequent rejection. With the
/// hand-written schedules over the same rows: the fused loop on one
/// thread, two threads in turn, pipelined by stage.
/// Every pass's quota counters and metrics are checked against the fused
/// loop's.
fn warm(rounds: usize) {
    const BATCH: usize = 4_096;
    const BATCHES: usize = ROWS / 4 / BATCH;
    let (schema, fields) = Fields::schema();
    let mut input: Vec<Batch> = batches(&fields, &schema, BATCH).into_iter().take(BATCHES).collect();
    let mut hand: Vec<Columns> = hand_batches(BATCH).into_iter().take(BATCHES).collect();
    let gw = Gw::build(&fields, &schema, Composition::Static);
    let mut expected = Gateway::new(ROWS as u64);
    hand.iter_mut().for_each(|c| hand_fused(c, &mut expected));
    let now_ns = expected.now_ns;
    let check = |(used, metrics): ([u64; ROUTES], Metrics)| {
        assert!(
            used == expected.used && metrics == expected.metrics,
            "a warm pass disagrees with the fused loop"
        );
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6 / BATCHES as f64;
    // Variants: run, stream, hand fused, hand in turn on two threads, hand
    // pipelined by stage.
    let t = paired_rounds(rounds, 5, |v| {
        let d = match v {
            0 | 1 => {
                let d = match v {
                    0 => time_run(&gw, &fields, &mut input),
                    _ => time_stream(&gw, &fields, &mut input, stream_variants(false)[0]).0,
                };
                check((*gw.quota.lock(), *gw.metrics.lock()));
                d
            }
            _ => {
                hand.iter_mut().for_each(Columns::reset_outputs);
                let (used, metrics, d) = match v {
                    2 => {
                        let mut g = Gateway::new(ROWS as u64);
                        let t = Instant::now();
                        hand.iter_mut().for_each(|c| hand_fused(c, &mut g));
                        (g.used, g.metrics, t.elapsed())
                    }
                    3 => {
                        let (used, metrics, d, _) = hand_in_turn(&mut hand, now_ns, 2, Schedule::InTurn);
                        (used, metrics, d)
                    }
                    _ => hand_pipelined(&mut hand, now_ns),
                };
                check((used, metrics));
                d
            }
        };
        us(d)
    });
    let m = |v: usize| median(t[v].clone());
    println!(
        "warm batches ({BATCHES} of {BATCH} rows, each pass after another over them), median of {rounds} rounds (us per batch):"
    );
    println!(
        "  run {:.1}  stream {:.1} ({:.2}x)  |  by hand: fused loop {:.1}, two threads in turn {:.1} ({:.2}x), pipelined by stage {:.1} ({:.2}x; {:.2}x run)",
        m(0),
        m(1),
        median_ratio(&t[0], &t[1]),
        m(2),
        m(3),
        median_ratio(&t[2], &t[3]),
        m(4),
        median_ratio(&t[2], &t[4]),
        median_ratio(&t[0], &t[4]),
    );
}

/// How two threads taking alternate batches order the quota by hand.
#[derive(Clone, Copy, PartialEq)]
enum Schedule {
    /// As the stream does: the quota and the stages after it run in turn
    /// (the last quarter of the rows' after-stages once the turn is passed).
    InTurn,
    /// The quota as a prefix sum: the loop before the quota also sums each
    /// route's cost over the live rows; in turn, a batch only reads the
    /// counters and adds its sums (64 additions), then runs the quota and
    /// the stages after it from its own copy, outside the turn. A schedule
    /// only a stage that declares its state a prefix sum would allow; it
    /// shows what holding the turn costs.
    Scan,
    /// Three loops: the stages before the quota, the quota alone in turn,
    /// the stages after it once the turn is passed (the in-turn schedule
    /// with every row in its tail).
    QuotaAlone,
    /// Cut one stage earlier, before enrich: the loop before the turn runs
    /// auth, validate and route; enrich, the quota and the stages after it
    /// run in one loop in turn, over the whole batch.
    BeforeEnrich,
}

/// Runs `batches` as `schedule` says, on `threads` (1 or 2) threads;
/// returns the quota counters, the metrics, the time it took (from when
/// every thread had started) and the time spent before taking the turn,
/// holding it and after passing it (summed over the threads).
fn hand_in_turn(
    batches: &mut [Columns],
    now_ns: u64,
    threads: usize,
    schedule: Schedule,
) -> ([u64; ROUTES], Metrics, Duration, [Duration; 3]) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let turn = AtomicUsize::new(0);
    let used = Mutex::new([0u64; ROUTES]);
    let (mine, theirs): (Vec<_>, Vec<_>) =
        batches.iter_mut().enumerate().partition(|(k, _)| threads == 1 || k % 2 == 0);
    let work = |batches: Vec<(usize, &mut Columns)>| {
        let mut metrics = Metrics::default();
        let mut times = [Duration::ZERO; 3];
        for (k, c) in batches {
            let t = Instant::now();
            let mut sums = [0u64; ROUTES];
            match schedule {
                Schedule::InTurn | Schedule::QuotaAlone => hand_front(c, |_, _| {}),
                Schedule::Scan => {
                    hand_front(c, |route, cost| sums[route as usize % ROUTES] += u64::from(cost))
                }
                Schedule::BeforeEnrich => hand_front_to_route(c),
            }
            times[0] += t.elapsed();
            let n = c.len();
            let mut spins = 0u32;
            while turn.load(Ordering::Acquire) != k {
                spins += 1;
                if spins < 128 { std::hint::spin_loop() } else { std::thread::yield_now() }
            }
            let t = Instant::now();
            let mut used = used.lock().unwrap();
            if schedule == Schedule::Scan {
                let mut from = *used;
                used.iter_mut().zip(sums).for_each(|(u, s)| *u += s);
                drop(used);
                turn.store(k + 1, Ordering::Release);
                times[1] += t.elapsed();
                let t = Instant::now();
                hand_rest(c, 0..n, &mut from, &mut metrics, now_ns);
                times[2] += t.elapsed();
                continue;
            }
            if schedule == Schedule::BeforeEnrich {
                hand_rest_from_enrich(c, &mut used, &mut metrics, now_ns);
                drop(used);
                turn.store(k + 1, Ordering::Release);
                times[1] += t.elapsed();
                continue;
            }
            // As `exec::tail_rows`: a quarter of the rows, at most a chunk
            // (2,048 rows for gateway-8 in turn).
            let head = if schedule == Schedule::QuotaAlone { 0 } else { n - (n / 4).min(2_048) };
            hand_rest(c, 0..head, &mut used, &mut metrics, now_ns);
            let (route, cost, ts) = (&c.route[..n], &c.cost[..n], &c.ts_ns[..n]);
            let (status, lat) = (&mut c.status[..n], &mut c.latency_ns[..n]);
            for i in head..n {
                if status[i] == 0 && !quota_ok(&mut used, route[i], cost[i]) {
                    status[i] = 429;
                }
            }
            drop(used);
            turn.store(k + 1, Ordering::Release);
            times[1] += t.elapsed();
            let t = Instant::now();
            for i in head..n {
                after_quota(status[i], &mut status[i], (ts[i], route[i], now_ns), &mut lat[i], &mut metrics);
            }
            times[2] += t.elapsed();
        }
        (metrics, times)
    };
    let (metrics, elapsed, times) = if threads == 1 {
        let t = Instant::now();
        let (m, times) = work(mine);
        (m, t.elapsed(), times)
    } else {
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                start.wait();
                work(theirs)
            });
            start.wait();
            let t = Instant::now();
            let (mut m, mut times) = work(mine);
            let (m2, t2) = other.join().unwrap();
            let elapsed = t.elapsed();
            m.merge(&m2);
            (0..3).for_each(|i| times[i] += t2[i]);
            (m, elapsed, times)
        })
    };
    (used.into_inner().unwrap(), metrics, elapsed, times)
}

/// Stages 1-4 (auth to enrich) by hand over one batch; `live` sees the
/// route and cost of every row still live after them.
#[inline(always)]
fn hand_front(c: &mut Columns, mut live: impl FnMut(u16, u32)) {
    let n = c.len();
    let (uid, tok, pay, route) = (&c.user_id[..n], &c.token[..n], &c.payload_len[..n], &c.route[..n]);
    let (status, cost, score) = (&mut c.status[..n], &mut c.cost[..n], &mut c.score[..n]);
    for i in 0..n {
        let row = (uid[i], tok[i], pay[i], route[i]);
        let (s, c) = before_quota(status[i], row, &mut cost[i], &mut score[i]);
        status[i] = s;
        if s == 0 {
            live(route[i], c);
        }
    }
}

/// Stages 1-3 (auth to route) by hand over one batch.
fn hand_front_to_route(c: &mut Columns) {
    let n = c.len();
    let (uid, tok, pay, route) = (&c.user_id[..n], &c.token[..n], &c.payload_len[..n], &c.route[..n]);
    let (status, cost) = (&mut c.status[..n], &mut c.cost[..n]);
    for i in 0..n {
        if status[i] == 0 && !auth_ok(uid[i], tok[i]) {
            status[i] = 401;
        }
        if status[i] == 0 && !payload_ok(pay[i]) {
            status[i] = 413;
        }
        if status[i] == 0 {
            cost[i] = route_cost(route[i]);
        }
    }
}

/// Stages 4-8 (enrich to metrics) by hand over one batch, in one loop.
fn hand_rest_from_enrich(c: &mut Columns, used: &mut [u64; ROUTES], metrics: &mut Metrics, now_ns: u64) {
    let n = c.len();
    let (uid, route, cost, ts) = (&c.user_id[..n], &c.route[..n], &c.cost[..n], &c.ts_ns[..n]);
    let (status, score, lat) = (&mut c.status[..n], &mut c.score[..n], &mut c.latency_ns[..n]);
    for i in 0..n {
        let mut st = status[i];
        if st == 0 {
            score[i] = enrich_score(uid[i], route[i], cost[i]);
            if !quota_ok(used, route[i], cost[i]) {
                st = 429;
            }
        }
        after_quota(st, &mut status[i], (ts[i], route[i], now_ns), &mut lat[i], metrics);
    }
}

/// Stages 5-8 (the quota to metrics) by hand over `rows` of one batch, in
/// one loop.
fn hand_rest(
    c: &mut Columns,
    rows: Range<usize>,
    used: &mut [u64; ROUTES],
    metrics: &mut Metrics,
    now_ns: u64,
) {
    let n = rows.len();
    let (route, cost, ts) = (&c.route[rows.clone()], &c.cost[rows.clone()], &c.ts_ns[rows.clone()]);
    let (status, lat) = (&mut c.status[rows.clone()], &mut c.latency_ns[rows]);
    for i in 0..n {
        let mut st = status[i];
        if st == 0 && !quota_ok(used, route[i], cost[i]) {
            st = 429;
        }
        after_quota(st, &mut status[i], (ts[i], route[i], now_ns), &mut lat[i], metrics);
    }
}

/// A schedule the stream does not run (yet): a pipeline by stage on two
/// threads. One runs the stages before the quota on every batch and hands
/// each batch on; the other takes them in order and runs the quota and the
/// stages after it, in one loop. Returns the quota counters, the metrics
/// and the time it took from when both threads had started.
fn hand_pipelined(batches: &mut [Columns], now_ns: u64) -> ([u64; ROUTES], Metrics, Duration) {
    let (tx, rx) = crossbeam::channel::bounded::<&mut Columns>(32);
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let start = &start;
        s.spawn(move || {
            start.wait();
            for c in batches.iter_mut() {
                hand_front(c, |_, _| {});
                tx.send(c).unwrap();
            }
        });
        start.wait();
        let t = Instant::now();
        let (mut used, mut metrics) = ([0u64; ROUTES], Metrics::default());
        for c in rx.iter() {
            hand_rest(c, 0..c.len(), &mut used, &mut metrics, now_ns);
        }
        (used, metrics, t.elapsed())
    })
}

criterion_group!(benches, bench);

fn main() {
    common::bench_main(
        "stream",
        benches,
        &[
            ("paired", 9, &paired),
            ("bounds", 9, &bounds),
            ("hand", 9, &hand_bounds),
            ("warm", 9, &warm),
            ("cores", 30, &cores),
            ("wakeup", 2000, &|n| wakeup(n as u32)),
        ],
    );
}
