//! The async front door (feature `async`): every submitted row delivered
//! once, in order, sequential stages in submission order, several batches'
//! async stages in flight (never more than the concurrency), back-pressure
//! and shutdown. Every test is bounded by a deadline; none asserts a wall
//! time.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::bounded;
use mware::aio::{AsyncRunner, SubmitError};
use mware::gateway8::mix;
use mware::prelude::*;
use tokio::sync::{mpsc, oneshot};

const LIMIT: Duration = Duration::from_secs(90);

fn tier_of(user: u64) -> u32 {
    (mix(user) % 7) as u32
}

/// A batched lookup: keys and where to send the answers.
type Request = (Vec<u64>, oneshot::Sender<HashMap<u64, u32>>);

/// A lookup service: a tokio task behind a channel answering many keys per
/// request, counting requests in flight.
#[derive(Clone)]
struct Service {
    tx: mpsc::Sender<Request>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Service {
    fn start() -> Service {
        let (tx, mut rx) = mpsc::channel::<Request>(64);
        tokio::spawn(async move {
            while let Some((keys, reply)) = rx.recv().await {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    let _ = reply.send(keys.into_iter().map(|k| (k, tier_of(k))).collect());
                });
            }
        });
        Service { tx, in_flight: Arc::default(), max_in_flight: Arc::default() }
    }

    async fn get(&self, keys: Vec<u64>) -> Result<HashMap<u64, u32>, String> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send((keys, reply)).await;
        let got = match sent {
            Ok(()) => answer.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        got
    }
}

struct Setup {
    schema: Schema,
    id: Field<u64>,
    user: Field<u64>,
    tier: Field<u32>,
    ord: Field<u64>,
}

fn setup(svc: &Service) -> (Setup, Pipeline) {
    let mut s = SchemaBuilder::new();
    let (id, user, tier, ord) =
        (s.hot::<u64>("id"), s.hot::<u64>("user"), s.hot::<u32>("tier"), s.hot::<u64>("ord"));
    let schema = s.build().unwrap();
    let svc = svc.clone();
    let lookup = stage::fetch(
        "lookup",
        (Read(user), Write(tier)),
        move |(users, tiers): (&[u64], &mut [u32]), rows: AsyncRows<'_>| {
            let svc = svc.clone();
            Box::pin(async move {
                let mut keys: Vec<u64> = rows.iter().map(|i| users[i]).collect();
                keys.sort_unstable();
                keys.dedup();
                let answers = svc.get(keys).await?;
                rows.for_each(|i| tiers[i] = answers[&users[i]]);
                Ok(())
            })
        },
    );
    // Sequential: numbers every row in the order the stage sees them.
    let number = stage::sequential("number", Write(ord), 0u64, |n: &mut u64, o: &mut u64, _: &mut RowCtl| {
        *n += 1;
        *o = *n;
    });
    let p = Pipeline::builder(&schema).before(number).before(lookup).build().unwrap();
    (Setup { schema, id, user, tier, ord }, p)
}

/// Several producers, thousands of batches: every row once, batches in
/// sequence order, the sequential stage numbering rows in that order, the
/// lookups right, and never more runs' futures in flight than allowed.
#[test]
fn front_door_stress_every_row_once_in_order() {
    bounded(LIMIT, || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        rt.block_on(async {
            let svc = Service::start();
            let (f, p) = setup(&svc);
            let concurrency = 4;
            let runner = AsyncRunner::builder(p).capacity(8).concurrency(concurrency).build().unwrap();
            let mut results = runner.results().unwrap();
            let (producers, per_producer) = (4u64, 600u64);
            let mut tasks = Vec::new();
            for pid in 0..producers {
                let runner = runner.clone();
                let (schema, id, user) = (f.schema.clone(), f.id, f.user);
                tasks.push(tokio::spawn(async move {
                    let mut rows_sent = 0usize;
                    for k in 0..per_producer {
                        let rows = (mix(pid << 20 | k) % 40) as usize;
                        let mut batch = Batch::new(&schema);
                        batch.resize(rows);
                        let ids: Vec<u64> = (0..rows as u64).map(|i| pid << 40 | k << 16 | i).collect();
                        batch.column_mut(id).unwrap().copy_from_slice(&ids);
                        let users: Vec<u64> = ids.iter().map(|&i| mix(i) % 500).collect();
                        batch.column_mut(user).unwrap().copy_from_slice(&users);
                        runner.submit(batch).await.unwrap();
                        rows_sent += rows;
                    }
                    rows_sent
                }));
            }
            drop(runner); // the producers' clones close the door when they finish
            let consumer = tokio::spawn(async move {
                let mut seen = HashSet::new();
                let (mut next_seq, mut numbered) = (0u64, 0u64);
                let (mut futures, mut nonempty) = (0, 0);
                while let Some(done) = results.next().await {
                    assert_eq!(done.seq, next_seq, "in sequence order");
                    next_seq += 1;
                    let report = done.report.expect("run ok");
                    futures += report.futures;
                    let b = &done.batch;
                    nonempty += u64::from(!b.is_empty());
                    assert_eq!(b.errors().count(), 0);
                    for r in 0..b.len() {
                        assert!(seen.insert(b.column(f.id).unwrap()[r]), "row delivered twice");
                        numbered += 1;
                        assert_eq!(
                            b.column(f.ord).unwrap()[r],
                            numbered,
                            "sequential stage in submission order"
                        );
                        assert_eq!(b.column(f.tier).unwrap()[r], tier_of(b.column(f.user).unwrap()[r]));
                    }
                }
                assert_eq!(futures, nonempty, "one future per non-empty batch, never one per row");
                (next_seq, seen.len(), futures)
            });
            let mut sent = 0;
            for t in tasks {
                sent += t.await.unwrap();
            }
            let (batches, rows, futures) = consumer.await.unwrap();
            assert_eq!(batches, producers * per_producer);
            assert_eq!(rows, sent);
            assert!(futures <= batches);
            let max = svc.max_in_flight.load(Ordering::SeqCst);
            assert!((1..=concurrency).contains(&max), "{max} lookups in flight");
        });
    });
}

/// Several batches have their async stages in flight at once.
#[test]
fn several_batches_await_at_once() {
    bounded(LIMIT, || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        rt.block_on(async {
            let svc = Service::start();
            let (f, p) = setup(&svc);
            let runner = AsyncRunner::builder(p).capacity(16).concurrency(4).build().unwrap();
            let mut results = runner.results().unwrap();
            // Submitted before anyone polls the results: the first poll
            // starts four runs, and each reaches its lookup before any
            // answer can come back.
            for _ in 0..16 {
                let mut b = Batch::new(&f.schema);
                b.resize(10);
                runner.submit(b).await.unwrap();
            }
            runner.close();
            let mut n = 0;
            while let Some(done) = results.next().await {
                assert_eq!(done.seq, n);
                n += 1;
            }
            assert_eq!(n, 16);
            assert_eq!(svc.max_in_flight.load(Ordering::SeqCst), 4);
        });
    });
}

#[test]
fn back_pressure_and_shutdown() {
    bounded(LIMIT, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let svc = Service::start();
            let (f, p) = setup(&svc);
            let runner = AsyncRunner::builder(p).capacity(2).build().unwrap();
            assert!(runner.results().is_some() && runner.results().is_none());
            let runner = {
                // A fresh runner: the first one's results were dropped, which closed it.
                let b = Batch::new(&f.schema);
                assert!(matches!(runner.submit(b).await, Err(SubmitError::Closed(_))));
                let (_, p) = setup(&svc);
                AsyncRunner::builder(p).capacity(2).build().unwrap()
            };
            let mut results = runner.results().unwrap();
            let schema = runner.pipeline().schema().clone();
            assert_eq!(runner.try_submit(Batch::new(&schema)).unwrap(), 0);
            assert_eq!(runner.try_submit(Batch::new(&schema)).unwrap(), 1);
            assert!(matches!(runner.try_submit(Batch::new(&schema)), Err(SubmitError::Full(_))));
            // A submit waits for room: it resolves once a result is taken.
            let waiting = tokio::spawn({
                let runner = runner.clone();
                let schema = schema.clone();
                async move { runner.submit(Batch::new(&schema)).await.map_err(|_| ()) }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            assert_eq!(results.next().await.unwrap().seq, 0);
            assert_eq!(waiting.await.unwrap(), Ok(2));
            let other = SchemaBuilder::new().build().unwrap();
            assert!(matches!(runner.try_submit(Batch::new(&other)), Err(SubmitError::WrongSchema(_))));
            runner.close();
            assert!(matches!(runner.submit(Batch::new(&schema)).await, Err(SubmitError::Closed(_))));
            // Everything accepted is still delivered, then the stream ends.
            assert_eq!(results.next().await.unwrap().seq, 1);
            assert_eq!(results.next().await.unwrap().seq, 2);
            assert!(results.next().await.is_none());
        });
    });
}
