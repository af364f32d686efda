//! Async stages: results equal a synchronous run with the same lookups,
//! futures counted exactly (per batch or chunk, never per row), errors,
//! timeouts and panics fail only their chunk's rows, and the validation and
//! refusal errors name the stage.
//!
//! Every test runs its body on a thread under a deadline, so a hang fails
//! instead of blocking CI. No test asserts a wall time.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::bounded;
use mware::gateway8::mix;
use mware::prelude::*;
use mware::stage::{AsyncRows, Fetch};
use mware::stream::StreamRunner;
use mware::{Error, Outcome, RunReport, Stage};
use proptest::prelude::*;

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct F {
    user: Field<u64>,
    gate: Field<u32>,
    tier: Field<u32>,
    score: Field<u64>,
    seen: Field<u32>,
}

fn schema() -> (Schema, F) {
    let mut s = SchemaBuilder::new();
    let f = F {
        user: s.hot("user_id"),
        gate: s.hot("gate"),
        tier: s.hot("tier"),
        score: s.hot("score"),
        seen: s.hot("seen"),
    };
    (s.build().expect("schema"), f)
}

/// The "service": a tier per user; users whose tier is 0 are unknown (404).
fn lookup(user: u64) -> u32 {
    (mix(user ^ 0xBEEF) % 5) as u32
}

fn fill(batch: &mut Batch, f: &F, seed: u64, rows: usize, users: u64) {
    batch.clear();
    batch.resize(rows);
    let user: Vec<u64> = (0..rows).map(|i| mix(seed ^ i as u64) % users.max(1)).collect();
    batch.column_mut(f.user).unwrap().copy_from_slice(&user);
    let gate: Vec<u32> = (0..rows).map(|i| (mix(seed.rotate_left(9) ^ i as u64) % 10) as u32).collect();
    batch.column_mut(f.gate).unwrap().copy_from_slice(&gate);
}

/// Calls made to the service (one per future, with its distinct keys).
#[derive(Clone, Default)]
struct Service {
    calls: Arc<AtomicUsize>,
    keys: Arc<AtomicUsize>,
}

impl Service {
    /// One batched call: distinct keys in, answers out; yields to the
    /// executor first, as a real call would.
    async fn get(&self, keys: Vec<u64>) -> HashMap<u64, u32> {
        YieldOnce(false).await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(keys.len(), Ordering::Relaxed);
        keys.into_iter().map(|k| (k, lookup(k))).collect()
    }
}

/// Pending once, then ready (wakes itself): an await point without a runtime.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// The async enrichment: distinct users of the visible rows, one call,
/// tiers written; unknown users rejected with 404.
fn enrich_async(f: &F, svc: &Service) -> Fetch<impl mware::stage::AsyncStage> {
    let svc = svc.clone();
    stage::fetch(
        "tiers",
        (Read(f.user), Write(f.tier)),
        move |(users, tiers): (&[u64], &mut [u32]), mut rows: AsyncRows<'_>| {
            let svc = svc.clone();
            Box::pin(async move {
                let mut keys: Vec<u64> = rows.iter().map(|i| users[i]).collect();
                keys.sort_unstable();
                keys.dedup();
                let answers = svc.get(keys).await;
                for i in rows.iter().collect::<Vec<_>>() {
                    let t = answers[&users[i]];
                    tiers[i] = t;
                    if t == 0 {
                        rows.reject(i, 404);
                    }
                }
                Ok(())
            })
        },
    )
    .rejects()
}

/// The same enrichment as a synchronous chunk stage.
fn enrich_sync(f: &F) -> impl Stage {
    stage::parallel_chunks(
        "tiers",
        (Read(f.user), Write(f.tier)),
        |(users, tiers): (&[u64], &mut [u32]), rows: &mut Rows| {
            let mut picked = Vec::new();
            rows.for_each(|i| picked.push(i));
            for i in picked {
                tiers[i] = lookup(users[i]);
                if tiers[i] == 0 {
                    rows.reject(i, 404);
                }
            }
        },
    )
    .rejects()
}

/// gate → enrichment (before or after) → score → handler, with an outer
/// after-stage counting what it sees and a sequential running sum.
fn pipeline(schema: &Schema, f: &F, enrich: impl Stage, enrich_after: bool, threads: usize) -> Pipeline {
    let f = *f;
    let seen = stage::parallel("seen", Write(f.seen), |s: &mut u32, _: &mut RowCtl| *s += 1);
    let gate = stage::parallel("gate", Read(f.gate), |g: &u32, ctl: &mut RowCtl| {
        if *g == 0 {
            ctl.reject(401)
        }
    })
    .rejects();
    let score = stage::sequential(
        "score",
        (Read(f.tier), Write(f.score)),
        0u64,
        |acc: &mut u64, (t, s): (&u32, &mut u64), _: &mut RowCtl| {
            *acc = acc.wrapping_mul(31).wrapping_add(*t as u64 + 1);
            *s = *acc;
        },
    );
    let ok = stage::parallel("ok", (), |_: (), ctl: &mut RowCtl| ctl.respond(200));
    let b = Pipeline::builder(schema).threads(threads).min_parallel_work(0).after(seen).before(gate);
    let b = if enrich_after { b.after(enrich) } else { b.before(enrich) };
    b.before(score).handler(ok).build().expect("valid pipeline")
}

/// A batch's outputs: tier, score, seen, outcomes, errors.
type Snapshot = (Vec<u32>, Vec<u64>, Vec<u32>, Vec<Outcome>, Vec<String>);

fn snapshot(batch: &Batch, f: &F) -> Snapshot {
    (
        batch.column(f.tier).unwrap().to_vec(),
        batch.column(f.score).unwrap().to_vec(),
        batch.column(f.seen).unwrap().to_vec(),
        (0..batch.len()).map(|r| batch.outcome(r).unwrap()).collect(),
        batch.errors().map(|(r, e)| format!("{r}: {e}")).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    /// Same lookups, same results: an async run (one future per batch or per
    /// chunk, block_on or tokio) equals the synchronous pipeline over
    /// several batches, sequential state included.
    #[test]
    fn async_equals_sync(
        seed in any::<u64>(),
        sizes in proptest::collection::vec(0usize..700, 1..4),
        users in 1u64..200,
        chunk in proptest::option::of(1usize..300),
        after in any::<bool>(),
        threads in 1usize..3,
        on_tokio in any::<bool>(),
    ) {
        let (got, want, calls, futures) = bounded(LIMIT, move || {
            let (schema, f) = schema();
            let svc = Service::default();
            let mut enrich = enrich_async(&f, &svc);
            if let Some(c) = chunk {
                enrich = enrich.chunk_rows(c);
            }
            let a = pipeline(&schema, &f, enrich, after, threads);
            let s = pipeline(&schema, &f, enrich_sync(&f), after, threads);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut batch = Batch::new(&schema);
            let (mut got, mut want) = (Vec::new(), Vec::new());
            let mut total = RunReport::default();
            for (k, &rows) in sizes.iter().enumerate() {
                fill(&mut batch, &f, seed ^ k as u64, rows, users);
                let report = if on_tokio {
                    rt.block_on(a.run_async(&mut batch)).unwrap()
                } else {
                    mware::block_on(a.run_async(&mut batch)).unwrap()
                };
                total.accumulate(&report);
                got.push(snapshot(&batch, &f));
                fill(&mut batch, &f, seed ^ k as u64, rows, users);
                s.run(&mut batch).unwrap();
                want.push(snapshot(&batch, &f));
            }
            (got, want, svc.calls.load(Ordering::Relaxed), total.futures)
        });
        prop_assert_eq!(got, want);
        // Every future made exactly one service call.
        prop_assert_eq!(calls as u64, futures);
    }
}

/// Futures per batch, counted exactly: one per async stage per chunk with
/// rows to see, none for a chunk whose rows all stopped earlier.
#[test]
fn futures_are_counted_per_batch_not_per_row() {
    bounded(LIMIT, || {
        let (schema, f) = schema();
        let svc = Service::default();
        let second =
            stage::fetch("noop", Read(f.user), |_: &[u64], _: AsyncRows<'_>| Box::pin(async { Ok(()) }));
        let p = Pipeline::builder(&schema)
            .before(stage::parallel("gate", Read(f.gate), |g: &u32, ctl: &mut RowCtl| {
                if *g == 0 {
                    ctl.reject(401)
                }
            }))
            .before(enrich_async(&f, &svc))
            .after(second)
            .build()
            .unwrap();
        let mut batch = Batch::new(&schema);
        let mut total = RunReport::default();
        for k in 0..10u64 {
            fill(&mut batch, &f, k, 5_000, 1_000);
            let r = mware::block_on(p.run_async(&mut batch)).unwrap();
            assert_eq!(r.futures, 2, "two async stages, one future each, per batch");
            total.accumulate(&r);
        }
        assert_eq!(total.futures, 20);
        assert_eq!(total.rows, 50_000);
        assert_eq!(svc.calls.load(Ordering::Relaxed), 10);
        assert!(svc.keys.load(Ordering::Relaxed) <= 10 * 1_000, "distinct keys per call");

        // Split into chunks of 1,000 rows: five futures for the first stage.
        let p = Pipeline::builder(&schema).before(enrich_async(&f, &svc).chunk_rows(1_000)).build().unwrap();
        fill(&mut batch, &f, 7, 5_000, 1_000);
        assert_eq!(mware::block_on(p.run_async(&mut batch)).unwrap().futures, 5);
        fill(&mut batch, &f, 7, 4_001, 1_000);
        assert_eq!(mware::block_on(p.run_async(&mut batch)).unwrap().futures, 5);

        // A chunk whose rows were all rejected before gets no future; an
        // empty batch none at all.
        let p = Pipeline::builder(&schema)
            .before(stage::parallel("first-half", (), |_: (), ctl: &mut RowCtl| {
                if ctl.row() < 2_000 {
                    ctl.reject(403)
                }
            }))
            .before(enrich_async(&f, &svc).chunk_rows(1_000))
            .build()
            .unwrap();
        fill(&mut batch, &f, 7, 5_000, 1_000);
        assert_eq!(mware::block_on(p.run_async(&mut batch)).unwrap().futures, 3);
        batch.clear();
        assert_eq!(mware::block_on(p.run_async(&mut batch)).unwrap().futures, 0);
    });
}

/// A stage over `user` that errors, panics or never finishes for chunks
/// holding a marked user, and writes `tier = 7` for the others.
fn faulty(f: &F, mode: &'static str) -> Fetch<impl mware::stage::AsyncStage> {
    stage::fetch(
        "flaky",
        (Read(f.user), Write(f.tier)),
        move |(users, tiers): (&[u64], &mut [u32]), mut rows: AsyncRows<'_>| {
            Box::pin(async move {
                YieldOnce(false).await;
                let marked = rows.iter().any(|i| users[i] == 999);
                if marked {
                    match mode {
                        "error" => return Err("lookup service said no".into()),
                        "panic" => panic!("boom in the future"),
                        _ => std::future::pending::<()>().await,
                    }
                }
                for i in rows.iter().collect::<Vec<_>>() {
                    tiers[i] = 7;
                    if users[i] == 5 {
                        rows.fail(i, "user 5 is banned");
                    }
                }
                Ok(())
            })
        },
    )
}

fn check_fault(mode: &'static str, expect_message: &str, panicked: bool) {
    let (schema, f) = schema();
    let mut stage = faulty(&f, mode).chunk_rows(10);
    if mode == "hang" {
        stage = stage.timeout(Duration::from_millis(50));
    }
    let seen = stage::parallel("seen", Write(f.seen), |s: &mut u32, _: &mut RowCtl| *s += 1);
    let inner = stage::parallel("inner", Write(f.score), |s: &mut u64, ctl: &mut RowCtl| {
        *s = 1;
        ctl.respond(200)
    });
    let p = Pipeline::builder(&schema).after(seen).before(stage).handler(inner).build().unwrap();
    let mut batch = Batch::new(&schema);
    batch.resize(40);
    // Row 13 (chunk 1) is the marked user; row 25 (chunk 2) is banned.
    let users: Vec<u64> = (0..40)
        .map(|i| {
            if i == 13 {
                999
            } else if i == 25 {
                5
            } else {
                100 + i
            }
        })
        .collect();
    batch.column_mut(f.user).unwrap().copy_from_slice(&users);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    let report = rt.block_on(p.run_async(&mut batch)).unwrap();
    assert_eq!(report.futures, 4);
    for r in 0..40 {
        let o = batch.outcome(r).unwrap();
        if (10..20).contains(&r) {
            // Only the failing chunk: failed at the stage's depth (1), the
            // outer after-stage still saw it, the handler did not.
            assert_eq!(o, Outcome::Failed { depth: 1, status: 0 }, "row {r}");
            let e = batch.error(r).unwrap();
            assert_eq!(e.stage.as_ref(), "flaky");
            assert!(e.message.contains(expect_message), "{r}: {e}");
            assert_eq!(e.panicked, panicked);
            assert_eq!(batch.column(f.score).unwrap()[r], 0);
        } else if r == 25 {
            assert_eq!(o, Outcome::Failed { depth: 1, status: 0 });
            assert_eq!(batch.error(r).unwrap().message, "user 5 is banned");
        } else {
            assert_eq!(o, Outcome::Live { status: 200 }, "row {r}");
            assert_eq!(batch.column(f.tier).unwrap()[r], 7);
            assert_eq!(batch.column(f.score).unwrap()[r], 1);
            assert!(batch.error(r).is_none());
        }
        assert_eq!(batch.column(f.seen).unwrap()[r], 1, "the outer after-stage sees row {r}");
    }
    assert_eq!(batch.errors().count(), 11);
}

#[test]
fn an_error_fails_only_its_chunk() {
    bounded(LIMIT, || check_fault("error", "lookup service said no", false));
}

#[test]
fn a_panicking_future_fails_only_its_chunk() {
    bounded(LIMIT, || {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("boom in the future") {
                default(info)
            }
        }));
        check_fault("panic", "boom in the future", true)
    });
}

#[test]
fn a_timeout_fails_only_its_chunk() {
    bounded(LIMIT, || check_fault("hang", "timed out after 50ms", false));
}

/// Many deadlines at once on the one timer thread: every hanging future
/// times out, every quick one finishes.
#[test]
fn many_timeouts_share_one_timer() {
    bounded(LIMIT, || {
        let (schema, f) = schema();
        let p = Arc::new(
            Pipeline::builder(&schema)
                .before(faulty(&f, "hang").chunk_rows(10).timeout(Duration::from_millis(20)))
                .build()
                .unwrap(),
        );
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|k| {
                let p = p.clone();
                rt.spawn(async move {
                    let mut batch = Batch::new(p.schema());
                    batch.resize(30);
                    let user: Vec<u64> = (0..30).map(|i| if i == k % 30 { 999 } else { i }).collect();
                    batch.column_mut(f.user).unwrap().copy_from_slice(&user);
                    p.run_async(&mut batch).await.unwrap();
                    // The hanging chunk's ten rows, and user 5 when it is
                    // in another chunk.
                    let timed_out = batch.errors().filter(|(_, e)| e.message.contains("timed out")).count();
                    (timed_out, batch.errors().count(), k % 30 / 10 == 0)
                })
            })
            .collect();
        for t in tasks {
            let (timed_out, errors, with_five) = rt.block_on(t).unwrap();
            assert_eq!(timed_out, 10);
            assert_eq!(errors, if with_five { 10 } else { 11 });
        }
    });
}

#[test]
fn run_refuses_an_async_pipeline_and_build_checks_settings() {
    bounded(LIMIT, || {
        let (schema, f) = schema();
        let svc = Service::default();
        let p = Pipeline::builder(&schema).before(enrich_async(&f, &svc)).build().unwrap();
        assert!(p.is_async());
        let mut batch = Batch::new(&schema);
        batch.resize(3);
        let e = p.run(&mut batch).unwrap_err();
        assert_eq!(e, Error::AsyncStage { stage: "tiers".into() });
        assert!(e.to_string().contains("`tiers`") && e.to_string().contains("run_async"));
        assert_eq!(batch.live_rows(), 3, "nothing ran");
        assert!(p.explain().contains("async"));

        let e = Pipeline::builder(&schema).before(enrich_async(&f, &svc).chunk_rows(0)).build().unwrap_err();
        assert!(e.to_string().contains("`tiers`"), "{e}");
        let e = Pipeline::builder(&schema)
            .before(enrich_async(&f, &svc).timeout(Duration::ZERO))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("`tiers`"), "{e}");

        let mut s = SchemaBuilder::new();
        let key = s.hot::<u64>("key");
        let note = s.cold::<String>("note");
        let schema = s.build().unwrap();
        let notes = stage::fetch(
            "notes",
            (Read(key), WriteCold(note)),
            |_: (&[u64], mware::ColdWrite<'_, String>), _: AsyncRows<'_>| Box::pin(async { Ok(()) }),
        );
        let e = Pipeline::builder(&schema).before(notes.chunk_rows(8)).build().unwrap_err();
        assert!(e.to_string().contains("`notes`") && e.to_string().contains("`note`"), "{e}");
        // The same access checks as every stage: a field written twice.
        let twice =
            stage::fetch("twice", (Write(key), Read(key)), |_: (&mut [u64], &[u64]), _: AsyncRows<'_>| {
                Box::pin(async { Ok(()) })
            });
        let e = Pipeline::builder(&schema).before(twice).build().unwrap_err();
        assert_eq!(e, Error::AliasedAccess { stage: "twice".into(), field: "key".into() });
    });
}

/// A cold field written by an async stage (one future for the batch).
#[test]
fn async_stage_writes_a_cold_field() {
    bounded(LIMIT, || {
        let mut s = SchemaBuilder::new();
        let key = s.hot::<u64>("key");
        let note = s.cold::<String>("note");
        let schema = s.build().unwrap();
        let notes = stage::fetch(
            "notes",
            (Read(key), WriteCold(note)),
            |(keys, mut notes): (&[u64], mware::ColdWrite<'_, String>), rows: AsyncRows<'_>| {
                Box::pin(async move {
                    YieldOnce(false).await;
                    for i in rows.iter() {
                        if keys[i] % 2 == 0 {
                            let _ = notes.insert(i, format!("even {}", keys[i]));
                        }
                    }
                    Ok(())
                })
            },
        );
        let p = Pipeline::builder(&schema).before(notes).build().unwrap();
        let mut batch = Batch::new(&schema);
        batch.resize(5);
        batch.column_mut(key).unwrap().copy_from_slice(&[1, 2, 3, 4, 5]);
        mware::block_on(p.run_async(&mut batch)).unwrap();
        let got: Vec<_> = batch.cold(note).unwrap().iter().map(|(r, v)| (r, v.clone())).collect();
        assert_eq!(got, vec![(1, "even 2".to_string()), (3, "even 4".to_string())]);
    });
}

/// The blocking stream runner drives async stages too (each worker awaits
/// its batch's futures), sequential stages still in submission order.
#[test]
fn stream_runner_runs_async_pipelines_in_order() {
    bounded(LIMIT, || {
        let (schema, f) = schema();
        let svc = Service::default();
        let a = Arc::new(pipeline(&schema, &f, enrich_async(&f, &svc), false, 1));
        let s = pipeline(&schema, &f, enrich_sync(&f), false, 1);
        let runner = StreamRunner::builder(a).workers(3).capacity(6).build().unwrap();
        let mut consumer = runner.consumer().unwrap();
        let producer = runner.producer();
        let feeder = std::thread::spawn(move || {
            for k in 0..60u64 {
                let mut b = producer.batch();
                fill(&mut b, &f, k, 300, 50);
                producer.submit(b).unwrap();
            }
        });
        let mut want = Batch::new(&schema);
        let mut futures = 0;
        for k in 0..60u64 {
            let done = consumer.recv().unwrap();
            assert_eq!(done.seq, k);
            futures += done.report.as_ref().unwrap().futures;
            fill(&mut want, &f, k, 300, 50);
            s.run(&mut want).unwrap();
            assert_eq!(snapshot(done.batch(), &f), snapshot(&want, &f), "batch {k}");
        }
        feeder.join().unwrap();
        runner.close();
        assert_eq!(futures, 60);
        assert_eq!(svc.calls.load(Ordering::Relaxed), 60);
    });
}
