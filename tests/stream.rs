//! The stream runner: order, exactly-once delivery, back-pressure, faults,
//! shutdown and the batch pool.
//!
//! Every test runs its body on a thread under a deadline, so a hang fails
//! the test instead of blocking CI; the tests run one at a time (a lock).
//! The stream's steady-state allocations are counted in `tests/alloc.rs`,
//! a binary of its own so that no other test allocates meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mware::RowState;
use mware::gateway8::{Checksum, Columns, Composition, Fields, Gateway, GatewayPipeline, hand_fused, mix};
use mware::prelude::*;
use mware::stream::{Delivery, Placement, RecvError, StreamRunner, SubmitError};

// ---------------------------------------------------------------------------
// Harness: one test at a time, a deadline per test.

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `body` on its own thread; fails if it does not finish in `limit`.
fn bounded(limit: Duration, body: impl FnOnce() + Send + 'static) {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        // The stages below panic on purpose; keep their noise out of the log.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<String>().map(String::as_str);
            let msg = msg.or_else(|| info.payload().downcast_ref::<&str>().copied()).unwrap_or("");
            if !(msg.starts_with("unlucky row") || msg == "boom") {
                default(info);
            }
        }));
    });
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = crossbeam::channel::bounded(1);
    let handle = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => handle.join().expect("test body"),
        Err(crossbeam::channel::RecvTimeoutError::Disconnected) => {
            // The body panicked: surface its message.
            if let Err(p) = handle.join() {
                std::panic::resume_unwind(p)
            }
        }
        Err(crossbeam::channel::RecvTimeoutError::Timeout) => panic!("hung: no result within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------
// A small pipeline with an order-sensitive sequential stage and a parallel
// stage that panics on some rows.

#[derive(Clone, Copy)]
struct Probe {
    id: Field<u64>,
    hash: Field<u64>,
    chain: Field<u64>,
}

fn probe_schema() -> (Schema, Probe) {
    let mut s = SchemaBuilder::new();
    let id = s.hot::<u64>("id");
    let hash = s.hot::<u64>("hash");
    let chain = s.hot::<u64>("chain");
    (s.build().unwrap(), Probe { id, hash, chain })
}

/// `hash = mix(id)` (panicking when `mix(id) % panic_every == 0`), then a
/// sequential stage folding every live row's hash, in row order, into a
/// running value it writes to `chain`. `chunk` rows per chunk.
fn probe_pipeline(schema: &Schema, f: Probe, panic_every: u64, chunk: usize, threads: usize) -> Pipeline {
    let hash = stage::parallel(
        "hash",
        (Read(f.id), Write(f.hash)),
        move |(id, h): (&u64, &mut u64), _: &mut RowCtl| {
            let v = mix(*id);
            if panic_every > 0 && v % panic_every == 0 {
                panic!("unlucky row {id}");
            }
            *h = v;
        },
    );
    let fold = stage::sequential(
        "fold",
        (Read(f.hash), Write(f.chain)),
        0u64,
        |acc: &mut u64, (h, c): (&u64, &mut u64), ctl: &mut RowCtl| {
            *acc = acc.wrapping_mul(0x100_0000_01B3).wrapping_add(*h);
            *c = *acc;
            if *h % 7 == 0 {
                ctl.reject(429);
            }
        },
    )
    .rejects();
    let ok = stage::parallel("ok", (), |_: (), ctl: &mut RowCtl| ctl.respond(200));
    Pipeline::builder(schema)
        .before(hash)
        .before(fold)
        .handler(ok)
        .chunk_rows(chunk)
        .threads(threads)
        .min_parallel_work(1024)
        .build()
        .unwrap()
}

/// What a processed row looks like, for comparing two runs.
fn row_view(b: &Batch, f: Probe) -> Vec<(u64, u64, u64, RowState)> {
    let (id, h, c) = (b.column(f.id).unwrap(), b.column(f.hash).unwrap(), b.column(f.chain).unwrap());
    (0..b.len()).map(|i| (id[i], h[i], c[i], b.states()[i])).collect()
}

/// Replays delivered batches, in delivery order, through a fresh pipeline on
/// one thread: the sequential run every stream result must equal.
struct Reference {
    pipeline: Pipeline,
    batch: Batch,
    f: Probe,
}

impl Reference {
    fn new(schema: &Schema, f: Probe, panic_every: u64, chunk: usize) -> Reference {
        Reference { pipeline: probe_pipeline(schema, f, panic_every, chunk, 1), batch: Batch::new(schema), f }
    }

    fn check(&mut self, got: &Batch) {
        self.batch.clear();
        self.batch.resize(got.len());
        self.batch.column_mut(self.f.id).unwrap().copy_from_slice(got.column(self.f.id).unwrap());
        self.pipeline.run(&mut self.batch).unwrap();
        assert_eq!(
            row_view(got, self.f),
            row_view(&self.batch, self.f),
            "stream result differs from a sequential run"
        );
        let errors = |b: &Batch| b.errors().map(|(r, e)| (r, e.stage.to_string())).collect::<Vec<_>>();
        assert_eq!(errors(got), errors(&self.batch));
    }
}

// ---------------------------------------------------------------------------

/// Several producers (tickets, blocking submits, try_submit with retries,
/// dropped tickets), thousands of small and some large batches, stages that
/// panic on random rows, a consumer that pauses at random: every accepted
/// batch comes back exactly once, in sequence order, equal to a sequential
/// run over the same batches in that order.
#[test]
fn stress_many_producers_exactly_once_in_order() {
    bounded(Duration::from_secs(120), || {
        let (schema, f) = probe_schema();
        const PANIC_EVERY: u64 = 1_500;
        const CHUNK: usize = 256;
        let pipeline = Arc::new(probe_pipeline(&schema, f, PANIC_EVERY, CHUNK, 0));
        let runner = StreamRunner::builder(pipeline).capacity(12).workers(2).build().unwrap();
        let mut consumer = runner.consumer().unwrap();

        const PRODUCERS: u64 = 4;
        const PER_PRODUCER: u64 = 900;
        // seq -> the ids the producer put in (first id, rows).
        let accepted = Arc::new(Mutex::new(HashMap::<u64, (u64, usize)>::new()));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let producer = runner.producer();
                let accepted = accepted.clone();
                std::thread::spawn(move || {
                    let mut rng = mix(p + 1);
                    for n in 0..PER_PRODUCER {
                        rng = mix(rng);
                        let rows = if rng % 50 == 0 {
                            2_000 + (rng >> 8) as usize % 14_000
                        } else {
                            1 + (rng >> 8) as usize % 300
                        };
                        // Unique ids: producer, counter, row.
                        let first = (p << 48) | (n << 20);
                        let mut batch = producer.batch();
                        batch.resize(rows);
                        for (i, v) in batch.column_mut(f.id).unwrap().iter_mut().enumerate() {
                            *v = first + i as u64;
                        }
                        let seq = match rng % 4 {
                            0 => {
                                let ticket = producer.reserve().unwrap();
                                if (rng >> 20) % 10 == 0 {
                                    drop(ticket); // skips its number
                                    producer.pool().put(batch);
                                    continue;
                                }
                                ticket.submit(batch).unwrap()
                            }
                            1 => {
                                let mut b = batch;
                                loop {
                                    match producer.try_submit(b) {
                                        Ok(seq) => break seq,
                                        Err(SubmitError::Full(back)) => {
                                            b = back;
                                            std::thread::sleep(Duration::from_micros(50));
                                        }
                                        Err(e) => panic!("{e}"),
                                    }
                                }
                            }
                            _ => producer.submit(batch).unwrap(),
                        };
                        assert!(
                            accepted.lock().unwrap().insert(seq, (first, rows)).is_none(),
                            "seq {seq} twice"
                        );
                    }
                })
            })
            .collect();

        let mut reference = Reference::new(&schema, f, PANIC_EVERY, CHUNK);
        let mut last_seq: Option<u64> = None;
        let mut seen = BTreeSet::new();
        let mut failed_rows = 0;
        let mut pause = 7u64;
        let check = |done: &mware::stream::Processed,
                     reference: &mut Reference,
                     last_seq: &mut Option<u64>,
                     seen: &mut BTreeSet<u64>,
                     failed_rows: &mut usize| {
            assert!(last_seq.is_none_or(|l| done.seq > l), "out of order: {} after {last_seq:?}", done.seq);
            *last_seq = Some(done.seq);
            assert!(seen.insert(done.seq));
            assert_eq!(done.report.as_ref().unwrap().rows, done.len());
            reference.check(done);
            *failed_rows += done.errors().count();
        };
        // Drain while producers run, pausing now and then.
        let mut producers = producers;
        while !producers.is_empty() {
            match consumer.recv_timeout(Duration::from_millis(20)) {
                Ok(done) => {
                    check(&done, &mut reference, &mut last_seq, &mut seen, &mut failed_rows);
                    pause = mix(pause);
                    if pause % 40 == 0 {
                        std::thread::sleep(Duration::from_millis(2 + pause % 5));
                    }
                }
                Err(RecvError::Empty) => {}
                Err(RecvError::Finished) => panic!("finished early"),
            }
            producers.retain(|h| !h.is_finished());
        }
        let stats = runner.close();
        for done in consumer.by_ref() {
            check(&done, &mut reference, &mut last_seq, &mut seen, &mut failed_rows);
        }
        let accepted = accepted.lock().unwrap();
        assert_eq!(seen.len(), accepted.len(), "every accepted batch exactly once");
        assert!(seen.iter().all(|s| accepted.contains_key(s)));
        assert!(accepted.len() as u64 > PRODUCERS * PER_PRODUCER * 9 / 10);
        assert!(failed_rows > 0, "some rows should have hit the panicking stage");
        assert_eq!(stats.submitted, accepted.len() as u64);
        assert_eq!(stats.processed, accepted.len() as u64);
        assert_eq!(stats.failed_rows, failed_rows as u64);
        assert_eq!(stats.failed_runs, 0);
    });
}

/// gateway-8 fed by several producers that fill batch `k` with rows
/// `k·B .. (k+1)·B` (tickets): the checksum equals the hand-written
/// single-threaded loop for any producer count and batch size.
#[test]
fn gateway_checksum_matches_single_threaded_for_any_producers() {
    bounded(Duration::from_secs(120), || {
        let rows = 60_000u64;
        let mut hand = Columns::generate(42, 0, rows as usize);
        let mut state = Gateway::new(rows);
        hand_fused(&mut hand, &mut state);
        let expected = Checksum::of_columns(&hand, &state);
        let (schema, fields) = Fields::schema();
        // Pinned workers too, where they can be.
        let pinned = if pinning_allowed() { Placement::Pinned } else { Placement::System };
        for (producers, batch_rows, workers, placement) in [
            (1, 4_096, 1, Placement::Apart),
            (3, 1_000, 2, Placement::Apart),
            (2, 7_777, 3, pinned),
            (4, 60_000, 1, Placement::System),
            (2, 1_024, 2, pinned),
            (2, 2_048, 2, Placement::System),
        ] {
            let gw = GatewayPipeline::build(&fields, &schema, rows, Composition::Static, |b| b).unwrap();
            let GatewayPipeline { pipeline, metrics, .. } = gw;
            let builder = StreamRunner::builder(pipeline).workers(workers).capacity(6).placement(placement);
            let runner = builder.build().unwrap();
            let batches = rows.div_ceil(batch_rows);
            let threads: Vec<_> = (0..producers)
                .map(|_| {
                    let producer = runner.producer();
                    std::thread::spawn(move || {
                        loop {
                            let ticket = producer.reserve().unwrap();
                            let k = ticket.seq();
                            if k >= batches {
                                return;
                            }
                            let first = k * batch_rows;
                            let n = (rows - first).min(batch_rows) as usize;
                            let mut batch = producer.batch();
                            fields.fill(&mut batch, 42, first, n).unwrap();
                            ticket.submit(batch).unwrap();
                        }
                    })
                })
                .collect();
            let mut consumer = runner.consumer().unwrap();
            let mut sum = Checksum::default();
            for k in 0..batches {
                let done = consumer.recv().unwrap();
                assert_eq!(done.seq, k);
                fields.add_to(&mut sum, &done).unwrap();
            }
            threads.into_iter().for_each(|t| t.join().unwrap());
            let stats = runner.close();
            assert!(consumer.recv().is_none());
            // Only workers placed apart move, and only when there are two.
            if placement != Placement::Apart || workers == 1 {
                assert_eq!(stats.moves, 0, "{placement:?}, {workers} workers");
            }
            sum.set_metrics(&metrics.lock());
            assert_eq!(
                sum, expected,
                "producers={producers} batch={batch_rows} workers={workers} {placement:?}"
            );
        }
    });
}

/// Whether the stream may pin its workers here: on Linux, unless a sandbox
/// refuses the system call. Where it cannot, `build` must say so.
fn pinning_allowed() -> bool {
    let (schema, f) = probe_schema();
    let pipeline = probe_pipeline(&schema, f, 0, 64, 1);
    match StreamRunner::builder(pipeline).workers(1).placement(Placement::Pinned).build() {
        Ok(runner) => {
            runner.close();
            true
        }
        Err(mware::Error::Config(message)) => {
            assert!(message.starts_with("cannot pin stream worker"), "{message}");
            false
        }
        Err(e) => panic!("pinning failed otherwise: {e}"),
    }
}

/// The CPUs a thread of this process may run on, from `/proc` (Linux).
#[cfg(target_os = "linux")]
fn cpus_allowed(task: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{task}/status")).unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
    list.split(',')
        .flat_map(|range| {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()
        })
        .collect()
}

/// The CPUs the calling thread may run on.
#[cfg(target_os = "linux")]
fn my_cpus() -> Vec<usize> {
    let me = std::fs::read_link("/proc/thread-self").unwrap();
    cpus_allowed(&me.file_name().unwrap().to_string_lossy())
}

/// The runner `build` starts, and a function giving the CPUs its worker `i`
/// may run on now.
#[cfg(target_os = "linux")]
fn started(build: impl FnOnce() -> StreamRunner) -> (StreamRunner, impl Fn(usize) -> Vec<usize>) {
    let tasks = || -> BTreeSet<String> {
        let dir = std::fs::read_dir("/proc/self/task").unwrap();
        dir.map(|t| t.unwrap().file_name().into_string().unwrap()).collect()
    };
    // Threads started from a worker (rayon's global pool, when an earlier
    // test's worker started it) inherit the worker's name: only the threads
    // `build` started count.
    let before = tasks();
    let runner = build();
    let new: BTreeSet<String> = tasks().difference(&before).cloned().collect();
    let worker_cpus = move |i: usize| {
        let name = format!("mware-stream-{i}");
        let comm = |t: &String| std::fs::read_to_string(format!("/proc/self/task/{t}/comm")).unwrap();
        let task = new.iter().find(|t| comm(t).trim() == name);
        cpus_allowed(task.unwrap_or_else(|| panic!("no thread {name}")))
    };
    (runner, worker_cpus)
}

/// Pinned workers run on one CPU each, in turn over the CPUs the building
/// thread may use, and serve as usual.
#[cfg(target_os = "linux")]
#[test]
fn pinned_workers_run_on_one_cpu_each() {
    bounded(Duration::from_secs(60), || {
        if !pinning_allowed() {
            return;
        }
        let cpus = my_cpus();
        let workers = cpus.len() + 1;
        let (schema, f) = probe_schema();
        let pipeline = probe_pipeline(&schema, f, 0, 64, 1);
        let (runner, worker_cpus) = started(|| {
            StreamRunner::builder(pipeline).workers(workers).placement(Placement::Pinned).build().unwrap()
        });
        for i in 0..workers {
            assert_eq!(worker_cpus(i), vec![cpus[i % cpus.len()]], "worker {i}");
        }
        let producer = runner.producer();
        let mut consumer = runner.consumer().unwrap();
        for k in 0..20u64 {
            let mut batch = producer.batch();
            batch.resize(100);
            batch.column_mut(f.id).unwrap().fill(k);
            producer.submit(batch).unwrap();
            assert_eq!(consumer.recv().unwrap().seq, k);
        }
        assert_eq!(runner.close().delivered, 20);
    });
}

/// Workers kept apart (the default) may move, but are never left pinned:
/// each may run on every CPU the building thread may, and they serve as
/// usual with a sequential stage making them wait for each other's turns.
#[cfg(target_os = "linux")]
#[test]
fn workers_kept_apart_are_never_left_pinned() {
    bounded(Duration::from_secs(60), || {
        let cpus = my_cpus();
        let (schema, f) = probe_schema();
        let pipeline = probe_pipeline(&schema, f, 0, 64, 1);
        let (runner, worker_cpus) = started(|| StreamRunner::builder(pipeline).workers(2).build().unwrap());
        let producer = runner.producer();
        let mut consumer = runner.consumer().unwrap();
        let batches = 400u64;
        let feed = std::thread::spawn(move || {
            for k in 0..batches {
                let mut batch = producer.batch();
                batch.resize(2_000);
                batch.column_mut(f.id).unwrap().fill(k);
                producer.submit(batch).unwrap();
            }
        });
        for k in 0..batches {
            assert_eq!(consumer.recv().unwrap().seq, k);
        }
        feed.join().unwrap();
        for i in 0..2 {
            assert_eq!(worker_cpus(i), cpus, "worker {i}");
        }
        let stats = runner.close();
        assert_eq!(stats.delivered, batches);
        assert!(stats.moves <= batches, "{} moves", stats.moves);
    });
}

/// close() with batches still queued and running: every accepted batch is
/// run and delivered, even though the consumer starts reading only after.
#[test]
fn close_delivers_everything_in_flight() {
    bounded(Duration::from_secs(60), || {
        let (schema, f) = probe_schema();
        let slow = stage::parallel("slow", Read(f.id), |_: &u64, _: &mut RowCtl| {
            std::thread::sleep(Duration::from_micros(200))
        });
        let count =
            stage::sequential("count", Write(f.chain), 0u64, |n: &mut u64, c: &mut u64, _: &mut RowCtl| {
                *n += 1;
                *c = *n;
            });
        let p = Pipeline::builder(&schema).before(slow).before(count).threads(1).build().unwrap();
        let runner = StreamRunner::builder(p).capacity(16).build().unwrap();
        let mut consumer = runner.consumer().unwrap();
        for k in 0..16u64 {
            let mut b = runner.batch();
            b.resize(5);
            b.column_mut(f.id).unwrap().fill(k);
            assert_eq!(runner.submit(b).unwrap(), k);
        }
        // Full: try_submit hands the batch back.
        let mut extra = runner.batch();
        extra.resize(1);
        match runner.try_submit(extra) {
            Err(SubmitError::Full(b)) => assert_eq!(b.len(), 1),
            other => panic!("expected Full, got {other:?}"),
        }
        let producer = runner.producer();
        let stats = runner.close();
        assert_eq!((stats.submitted, stats.processed, stats.rows), (16, 16, 80));
        // After close: the producer is refused, with its batch.
        let b = producer.batch();
        assert!(producer.submit(b).unwrap_err().is_closed());
        assert!(producer.reserve().is_err());
        let mut n = 0;
        while let Some(done) = consumer.recv() {
            assert_eq!(done.seq, n);
            assert_eq!(
                done.batch().column(f.chain).unwrap(),
                &[5 * n + 1, 5 * n + 2, 5 * n + 3, 5 * n + 4, 5 * n + 5]
            );
            n += 1;
        }
        assert_eq!(n, 16);
        assert_eq!(consumer.try_recv().unwrap_err(), RecvError::Finished);
    });
}

/// Dropping the runner while producers wait for room (nobody reads): the
/// producers get their batch back with `Closed`, and nothing hangs.
#[test]
fn drop_while_producers_block_errors_them() {
    bounded(Duration::from_secs(30), || {
        let (schema, f) = probe_schema();
        let p = probe_pipeline(&schema, f, 0, 64, 1);
        let runner = StreamRunner::builder(p).capacity(2).build().unwrap();
        let consumer = runner.consumer().unwrap(); // kept, never read
        let blocked = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..3)
            .map(|i| {
                let producer = runner.producer();
                let blocked = blocked.clone();
                std::thread::spawn(move || {
                    let mut accepted = 0;
                    loop {
                        let mut b = producer.batch();
                        b.resize(10);
                        blocked.fetch_add(1, Ordering::SeqCst);
                        let r = if i == 2 {
                            producer.reserve().map(|t| t.submit(b).unwrap()).map_err(|_| ())
                        } else {
                            producer.submit(b).map_err(|e| assert_eq!(e.into_batch().len(), 10))
                        };
                        match r {
                            Ok(_) => accepted += 1,
                            Err(()) => return accepted,
                        }
                    }
                })
            })
            .collect();
        // Wait until the stream is full and every producer is waiting.
        let t = Instant::now();
        while runner.stats().submitted < 2 || blocked.load(Ordering::SeqCst) < 5 {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(runner);
        let accepted: usize = producers.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(accepted, 2, "the two places in flight, nothing more");
        // What was accepted is still delivered.
        assert_eq!(consumer.count(), 2);
    });
}

/// Unordered delivery: everything exactly once; a pipeline without
/// sequential stages runs on several workers at once.
#[test]
fn unordered_delivery_exactly_once() {
    bounded(Duration::from_secs(60), || {
        let (schema, f) = probe_schema();
        let h =
            stage::parallel("h", (Read(f.id), Write(f.hash)), |(id, h): (&u64, &mut u64), _: &mut RowCtl| {
                if *id % 3 == 0 {
                    std::thread::sleep(Duration::from_micros(30));
                }
                *h = mix(*id)
            });
        let p = Pipeline::builder(&schema).before(h).threads(1).build().unwrap();
        let runner = StreamRunner::builder(p).workers(3).delivery(Delivery::Unordered).build().unwrap();
        assert!(!runner.in_order());
        let mut consumer = runner.consumer().unwrap();
        assert!(runner.consumer().is_none(), "one consumer");
        let producer = runner.producer();
        let feeder = std::thread::spawn(move || {
            for k in 0..400u64 {
                let mut b = producer.batch();
                b.resize(1 + (k % 5) as usize);
                b.column_mut(f.id).unwrap().fill(k);
                producer.submit(b).unwrap();
            }
        });
        let mut seen = BTreeSet::new();
        for _ in 0..400 {
            let done = consumer.recv().unwrap();
            let id = done.batch().column(f.id).unwrap()[0];
            assert_eq!(id, done.seq);
            assert!(done.batch().column(f.hash).unwrap().iter().all(|&h| h == mix(id)));
            assert!(seen.insert(done.seq));
        }
        feeder.join().unwrap();
        drop(runner);
        assert!(consumer.recv().is_none());
        assert_eq!(seen.len(), 400);
    });
}

/// A run that panics outside any stage is not possible to provoke through
/// the public API, but a stage panicking on every row must still leave the
/// runner serving: its rows fail, later batches run normally.
#[test]
fn panicking_stage_fails_only_its_rows_and_runner_keeps_serving() {
    bounded(Duration::from_secs(30), || {
        let (schema, f) = probe_schema();
        let bomb = stage::parallel("bomb", Read(f.id), |id: &u64, _: &mut RowCtl| {
            if *id == 666 {
                panic!("boom");
            }
        });
        let p = Pipeline::builder(&schema).before(bomb).threads(1).build().unwrap();
        let runner = StreamRunner::builder(p).build().unwrap();
        let mut consumer = runner.consumer().unwrap();
        for ids in [[1u64, 2, 3], [666, 666, 666], [4, 666, 5]] {
            let mut b = runner.batch();
            b.resize(3);
            b.column_mut(f.id).unwrap().copy_from_slice(&ids);
            runner.submit(b).unwrap();
        }
        let failed: Vec<usize> = (0..3).map(|_| consumer.recv().unwrap().errors().count()).collect();
        assert_eq!(failed, vec![0, 3, 1]);
        let stats = runner.close();
        assert_eq!(stats.failed_rows, 4);
        assert_eq!(stats.failed_runs, 0);
    });
}

/// A batch of another schema is handed back; the builder rejects nonsense.
#[test]
fn wrong_schema_and_bad_settings() {
    bounded(Duration::from_secs(30), || {
        let (schema, f) = probe_schema();
        let p = Arc::new(probe_pipeline(&schema, f, 0, 64, 1));
        assert!(StreamRunner::builder(p.clone()).capacity(0).build().is_err());
        assert!(StreamRunner::builder(p.clone()).workers(0).build().is_err());
        let runner = StreamRunner::builder(p).build().unwrap();
        let (other, _) = probe_schema();
        let b = Batch::new(&other);
        assert!(matches!(runner.submit(b), Err(SubmitError::WrongSchema(_))));
        let t = runner.reserve().unwrap();
        assert!(matches!(t.submit(Batch::new(&other)), Err(SubmitError::WrongSchema(_))));
        // The voided number is skipped; the next batch still comes back.
        let mut b = runner.batch();
        b.resize(1);
        assert_eq!(runner.submit(b).unwrap(), 1);
        let mut consumer = runner.consumer().unwrap();
        assert_eq!(consumer.recv().unwrap().seq, 1);
    });
}

#[test]
fn runner_accumulates_the_runs_reports() {
    bounded(Duration::from_secs(60), || {
        let (schema, fields) = Fields::schema();
        let gw = GatewayPipeline::build(&fields, &schema, 10_000, Composition::Static, |b| {
            b.threads(1).profile(true)
        })
        .unwrap();
        let runner = StreamRunner::builder(gw.pipeline).build().unwrap();
        let mut consumer = runner.consumer().unwrap();
        let mut submitted = 0u64;
        for (k, rows) in [1000usize, 3000, 6000].into_iter().enumerate() {
            let mut batch = runner.batch();
            fields.fill(&mut batch, 42, submitted, rows).unwrap();
            submitted += rows as u64;
            assert_eq!(runner.submit(batch).unwrap(), k as u64);
        }
        for _ in 0..3 {
            consumer.recv().unwrap();
        }
        let report = runner.report();
        assert_eq!(report.rows as u64, submitted);
        let metrics = report.stages.iter().find(|s| &*s.name == "metrics").expect("profiled stages");
        assert_eq!(metrics.rows, submitted, "the outermost after-stage sees every row");
        let auth = report.stages.iter().find(|s| &*s.name == "auth").unwrap();
        assert_eq!(auth.rows, submitted);
        runner.close();
    });
}

/// A producer may hold a ticket while it waits for room: every place freed
/// must then wake it, since the batches after its number cannot be delivered
/// (nor their places freed) before it submits.
#[test]
fn producer_waiting_for_room_while_holding_a_ticket_is_woken() {
    bounded(Duration::from_secs(30), || {
        let (schema, f) = probe_schema();
        let p = Arc::new(probe_pipeline(&schema, f, 0, 64, 1));
        let runner = StreamRunner::builder(p).capacity(8).build().unwrap();
        let mut consumer = runner.consumer().unwrap();
        let producer = runner.producer();
        let feeder = std::thread::spawn(move || {
            let batch = |k: u64| {
                let mut b = producer.batch();
                b.resize(1);
                b.column_mut(f.id).unwrap().fill(k);
                b
            };
            producer.submit(batch(0)).unwrap();
            let ticket = producer.reserve().unwrap();
            for k in 2..8 {
                producer.submit(batch(k)).unwrap();
            }
            // All eight places are taken: this waits until the consumer
            // has taken batch 0, while the ticket holds back 2..8.
            producer.submit(batch(8)).unwrap();
            ticket.submit(batch(1)).unwrap();
        });
        for k in 0..9u64 {
            let done = consumer.recv().unwrap();
            assert_eq!(done.seq, k);
            assert_eq!(done.batch().column(f.id).unwrap()[0], k);
        }
        feeder.join().unwrap();
    });
}

/// The stats split the workers' time: a run that finds the ordered stage
/// still held by the batch before waits for its turn, and that wait is
/// counted (inside the time spent running); one worker never waits.
#[test]
fn stats_count_the_time_batches_wait_for_their_turn() {
    bounded(Duration::from_secs(60), || {
        let (schema, f) = probe_schema();
        let arrived = Arc::new(AtomicUsize::new(0));
        let seen = arrived.clone();
        let arrive = stage::parallel("arrive", Read(f.id), move |_: &u64, _: &mut RowCtl| {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        // How many batches must have run `arrive` before batch 0 leaves
        // `hold`: both with two workers, only itself with one.
        let overlap = Arc::new(AtomicUsize::new(0));
        let (first, needed) = (arrived.clone(), overlap.clone());
        let hold = stage::sequential("hold", Read(f.id), (), move |_: &mut (), id: &u64, _: &mut RowCtl| {
            if *id == 0 {
                // Batch 0 holds the stage until batch 1 has run its first
                // stage (so its run goes on to wait for this one), and then
                // some.
                let deadline = Instant::now() + Duration::from_secs(20);
                while first.load(Ordering::SeqCst) < needed.load(Ordering::SeqCst)
                    && Instant::now() < deadline
                {
                    std::thread::yield_now();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let p = Arc::new(Pipeline::builder(&schema).before(arrive).before(hold).threads(1).build().unwrap());
        for workers in [2, 1] {
            arrived.store(0, Ordering::SeqCst);
            overlap.store(workers, Ordering::SeqCst);
            let runner = StreamRunner::builder(p.clone()).workers(workers).build().unwrap();
            let mut consumer = runner.consumer().unwrap();
            for k in 0..2u64 {
                let mut b = runner.batch();
                b.resize(1);
                b.column_mut(f.id).unwrap().fill(k);
                runner.submit(b).unwrap();
            }
            for _ in 0..2 {
                consumer.recv().unwrap();
            }
            let stats = runner.close();
            assert_eq!(stats.processed, 2);
            assert!(stats.busy >= Duration::from_millis(200), "{stats:?}");
            if workers == 2 {
                assert!(stats.turn_wait > Duration::ZERO, "batch 1 waited for batch 0: {stats:?}");
                assert!(stats.turn_wait <= stats.busy, "{stats:?}");
            } else {
                assert_eq!(stats.turn_wait, Duration::ZERO, "one worker takes no turns: {stats:?}");
            }
        }
    });
}
