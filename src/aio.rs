//! The async front door (feature `async`): submit batches with
//! `submit(batch).await` from any number of tasks, take them back processed,
//! in submission order, from a [`Results`] stream.
//!
//! ```text
//!  tasks ── submit().await ──► queue (seq 0, 1, 2 …; at most `capacity` in flight)
//!                                  │ started in order, at most `concurrency` at once
//!                                  ▼
//!          Results (polled by the consumer's task) ── polls every started run:
//!             sync segments inline, async stages' futures in flight together
//!                                  │ in sequence order
//!                                  ▼
//!                          consumer: results.next().await
//! ```
//!
//! * **Runtime.** None of its own: the runs are futures polled by whoever
//!   polls [`Results`], inside the caller's runtime (so async stages may use
//!   that runtime's I/O and timers). Sync segments run on the polling
//!   thread (a large batch of a pipeline without sequential stages still
//!   spreads over the pipeline's rayon pool). Keep a task draining
//!   `Results`: like the blocking [`StreamRunner`](crate::stream::StreamRunner),
//!   nothing is dropped, so producers wait while the consumer does not read.
//! * **Back-pressure.** At most [`capacity`](AsyncBuilder::capacity)
//!   batches are in flight: submitted and not yet received. Beyond it
//!   `submit` waits (without blocking a thread) and
//!   [`try_submit`](AsyncRunner::try_submit) hands the batch back.
//! * **Concurrency.** At most [`concurrency`](AsyncBuilder::concurrency)
//!   runs are started and not yet delivered, so that many batches may have
//!   their async stages in flight at once.
//! * **Order.** Sequence numbers follow the order submissions are accepted;
//!   results come back in that order, each batch once. Sequential and
//!   whole-batch stages see the batches in that order (runs take their
//!   ordered groups in turn, see below).
//! * **Shutdown.** [`close`](AsyncRunner::close) (or dropping every
//!   [`AsyncRunner`] handle) stops accepting; the stream delivers every
//!   accepted batch, then ends. Dropping [`Results`] drops the runs in
//!   flight and closes the door (submitters get [`SubmitError::Closed`]).
//!
//! # Why waiting for a turn cannot deadlock
//!
//! A pipeline with sequential or whole-batch stages runs batch `i` in turn
//! `i`: it enters each ordered group after batch `i - 1` left it. A run
//! never blocks its thread for a turn: before a sync segment it *awaits* the
//! turns of the segment's ordered groups (a waker registered with the
//! turns, woken by the pass), so the segment then runs without waiting. Runs
//! are started in sequence order and stay in the set [`Results`] polls until
//! delivered, so the earliest unfinished run is always polled, and it waits
//! for nobody: every run before it has finished and passed all its groups
//! (a run dropped part-way gives its turns up without waiting). By
//! induction every run finishes. Nor does anything block the polling thread
//! on a producer or the consumer: `submit` and `next` only register wakers.
//!
//! ```
//! use std::sync::Arc;
//! use mware::prelude::*;
//! use mware::aio::AsyncRunner;
//!
//! let mut s = SchemaBuilder::new();
//! let x = s.hot::<u64>("x");
//! let total = s.hot::<u64>("total");
//! let schema = s.build()?;
//! let sum = stage::sequential("sum", (Read(x), Write(total)), 0u64,
//!     |acc: &mut u64, (x, t): (&u64, &mut u64), _: &mut RowCtl| { *acc += *x; *t = *acc; });
//! let pipeline = Arc::new(Pipeline::builder(&schema).before(sum).build()?);
//!
//! let runner = AsyncRunner::builder(pipeline).capacity(4).concurrency(2).build()?;
//! let mut results = runner.results().expect("first call");
//! mware::block_on(async move {
//!     let producer = async {
//!         for k in 0..10u64 {
//!             let mut batch = Batch::new(&schema);
//!             batch.resize(3);
//!             batch.column_mut(x).unwrap().copy_from_slice(&[3 * k, 3 * k + 1, 3 * k + 2]);
//!             runner.submit(batch).await.unwrap(); // waits while 4 are in flight
//!         }
//!         runner.close();
//!     };
//!     let consumer = async {
//!         let mut last = 0;
//!         let mut k = 0;
//!         while let Some(done) = results.next().await {
//!             assert_eq!(done.seq, k);
//!             last = *done.batch.column(total).unwrap().last().unwrap();
//!             k += 1;
//!         }
//!         assert_eq!((k, last), (10, (0..30).sum::<u64>()));
//!     };
//!     mware::aio::join(producer, consumer).await;
//! });
//! # Ok::<(), mware::Error>(())
//! ```

// Submitting hands a rejected batch back by value, like the blocking runner.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::batch::Batch;
use crate::error::{Error, Result, StageError};
use crate::fetch::{BoxFuture, drive};
use crate::pipeline::Pipeline;
use crate::report::RunReport;
use crate::stage::Kind;
use crate::turns::{Turn, Turns};

pub use crate::stream::SubmitError;

/// Configures an [`AsyncRunner`]; start with [`AsyncRunner::builder`].
#[derive(Debug)]
pub struct AsyncBuilder {
    pipeline: Arc<Pipeline>,
    capacity: usize,
    concurrency: usize,
}

impl AsyncBuilder {
    /// Batches in flight at most: submitted and not yet received (default
    /// 8). Submitting beyond it waits.
    pub fn capacity(mut self, batches: usize) -> Self {
        self.capacity = batches;
        self
    }

    /// Runs started and not yet delivered at most (default 4): how many
    /// batches may have their async stages in flight at once.
    pub fn concurrency(mut self, runs: usize) -> Self {
        self.concurrency = runs;
        self
    }

    /// Builds the runner (nothing starts until [`Results`] is polled).
    pub fn build(self) -> Result<AsyncRunner> {
        if self.capacity == 0 {
            return Err(Error::Config("async runner capacity must be at least 1".into()));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("async runner concurrency must be at least 1".into()));
        }
        let ordered = self
            .pipeline
            .plan()
            .steps
            .iter()
            .any(|s| matches!(s.meta.kind, Kind::Sequential | Kind::WholeBatch));
        let turns = ordered.then(|| Arc::new(Turns::new(&self.pipeline.turn)));
        let shared = Arc::new(Shared {
            pipeline: self.pipeline,
            capacity: self.capacity,
            concurrency: self.concurrency,
            turns,
            state: Mutex::new(State {
                closed: false,
                next_seq: 0,
                in_flight: 0,
                queue: VecDeque::with_capacity(self.capacity),
                room: Vec::new(),
                work: None,
                results_taken: false,
            }),
        });
        Ok(AsyncRunner { handle: Arc::new(Handle(shared)) })
    }
}

/// The async front door around a built [`Pipeline`]: clone it into every
/// producing task; see the [module docs](crate::aio). Dropping the last
/// clone closes it.
#[derive(Clone)]
pub struct AsyncRunner {
    handle: Arc<Handle>,
}

/// Closes the door when the last [`AsyncRunner`] clone goes.
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl fmt::Debug for AsyncRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.handle.0;
        f.debug_struct("AsyncRunner")
            .field("capacity", &s.capacity)
            .field("concurrency", &s.concurrency)
            .field("in_order", &s.turns.is_some())
            .finish()
    }
}

impl AsyncRunner {
    /// Starts configuring a runner around `pipeline`.
    pub fn builder(pipeline: impl Into<Arc<Pipeline>>) -> AsyncBuilder {
        AsyncBuilder { pipeline: pipeline.into(), capacity: 8, concurrency: 4 }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.0
    }

    /// The pipeline the runner serves.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.shared().pipeline
    }

    /// The stream of processed batches, the first time it is asked for;
    /// `None` afterwards.
    pub fn results(&self) -> Option<Results> {
        let shared = self.shared();
        let mut s = lock(&shared.state);
        if std::mem::replace(&mut s.results_taken, true) {
            return None;
        }
        Some(Results {
            shared: shared.clone(),
            running: VecDeque::with_capacity(shared.concurrency),
            next_index: 0,
        })
    }

    /// Submits `batch`, waiting (without blocking the thread) while
    /// `capacity` batches are in flight, and resolves to its sequence
    /// number. Hands the batch back if the runner is closed (also while
    /// waiting) or the batch has another schema. Dropping the future before
    /// it resolves drops the batch, unsubmitted.
    pub fn submit(&self, batch: Batch) -> Submit {
        Submit { shared: self.shared().clone(), batch: Some(batch) }
    }

    /// Submits `batch` if there is room now; else hands it back with
    /// [`SubmitError::Full`] (or `Closed`, `WrongSchema`).
    pub fn try_submit(&self, batch: Batch) -> Result<u64, SubmitError> {
        match self.shared().offer(batch, None) {
            Ok(seq) => Ok(seq),
            Err(Offer::Full(b)) => Err(SubmitError::Full(b)),
            Err(Offer::Refused(e)) => Err(e),
        }
    }

    /// Stops accepting: submitters (also those waiting) get
    /// [`SubmitError::Closed`]; [`Results`] delivers what was accepted, then
    /// ends.
    pub fn close(&self) {
        self.shared().close();
    }
}

/// The future of [`AsyncRunner::submit`].
pub struct Submit {
    shared: Arc<Shared>,
    batch: Option<Batch>,
}

impl fmt::Debug for Submit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submit").finish_non_exhaustive()
    }
}

impl Future for Submit {
    type Output = Result<u64, SubmitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let batch = self.batch.take().expect("Submit polled after it resolved");
        match self.shared.offer(batch, Some(cx.waker())) {
            Ok(seq) => Poll::Ready(Ok(seq)),
            Err(Offer::Refused(e)) => Poll::Ready(Err(e)),
            Err(Offer::Full(b)) => {
                self.batch = Some(b);
                Poll::Pending
            }
        }
    }
}

/// One processed batch, as [`Results`] yields it.
#[derive(Debug)]
pub struct Finished {
    /// The batch's sequence number.
    pub seq: u64,
    /// What the run reported; an error only if the run itself panicked
    /// (stage panics, errors and timeouts fail their rows and leave it `Ok`).
    pub report: Result<RunReport>,
    /// The processed rows.
    pub batch: Batch,
}

/// The processed batches of an [`AsyncRunner`], in submission order: a
/// [`futures_core::Stream`], or call [`next`](Results::next). Polling it is
/// what runs the batches.
pub struct Results {
    shared: Arc<Shared>,
    /// Started runs, in sequence order.
    running: VecDeque<Slot>,
    /// Index of the next run to start (its turn).
    next_index: u64,
}

type RunOutput = (u64, Batch, Result<RunReport>);

// A few slots per runner; boxing finished runs would allocate per batch.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Running(BoxFuture<'static, RunOutput>),
    Done(Option<RunOutput>),
}

impl fmt::Debug for Results {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Results").field("running", &self.running.len()).finish_non_exhaustive()
    }
}

impl Results {
    /// The next processed batch; `None` once the runner is closed and every
    /// accepted batch was delivered.
    // Named like `StreamExt::next`, so callers need no extension trait.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Next<'_> {
        Next { results: self }
    }

    /// Polls for the next processed batch, running the batches in flight.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Finished>> {
        // Start runs, in order, while there is room; register for more work
        // under the same lock, so a submit after the check wakes us.
        let finished = {
            let mut s = lock(&self.shared.state);
            while self.running.len() < self.shared.concurrency {
                let Some((seq, batch)) = s.queue.pop_front() else { break };
                let index = self.next_index;
                self.next_index += 1;
                self.running.push_back(Slot::Running(Box::pin(run_one(
                    self.shared.clone(),
                    seq,
                    index,
                    batch,
                ))));
            }
            let idle = self.running.is_empty() && s.queue.is_empty();
            if !idle || !s.closed {
                set_waker(&mut s.work, cx.waker());
            }
            idle && s.closed
        };
        if finished {
            return Poll::Ready(None);
        }
        for slot in self.running.iter_mut() {
            if let Slot::Running(run) = slot {
                if let Poll::Ready(out) = run.as_mut().poll(cx) {
                    *slot = Slot::Done(Some(out));
                }
            }
        }
        if let Some(Slot::Done(out)) = self.running.front_mut() {
            let (seq, batch, report) = out.take().expect("taken once");
            self.running.pop_front();
            self.shared.delivered();
            // A place freed: more runs may start on the next poll.
            cx.waker().wake_by_ref();
            return Poll::Ready(Some(Finished { seq, report, batch }));
        }
        Poll::Pending
    }
}

impl futures_core::Stream for Results {
    type Item = Finished;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Finished>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Results {
    /// Drops the runs in flight (they give up their turns without waiting)
    /// and closes the door: nobody would take further results.
    fn drop(&mut self) {
        self.running.clear();
        self.shared.close();
    }
}

/// The future of [`Results::next`].
#[derive(Debug)]
pub struct Next<'a> {
    results: &'a mut Results,
}

impl Future for Next<'_> {
    type Output = Option<Finished>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Finished>> {
        self.results.poll_recv(cx)
    }
}

/// Runs `batch` as run `index`, in turn when the pipeline has ordered
/// stages. A panic of the run itself (not of a stage) becomes the report's
/// error, and the batch comes back all the same.
async fn run_one(shared: Arc<Shared>, seq: u64, index: u64, mut batch: Batch) -> RunOutput {
    let p = &*shared.pipeline;
    let turn = shared.turns.as_deref().map(|turns| Turn { turns, index });
    let report = if batch.schema() != p.schema() {
        Err(Error::SchemaMismatch)
    } else {
        // Pinned in this block: dropped (giving up its turns if it
        // panicked) before the batch is handed back.
        let run = std::pin::pin!(drive(p, &mut batch, turn));
        match (CatchPanic { inner: run }).await {
            Ok(report) => Ok(report),
            Err(message) => {
                Err(Error::Stage(StageError { stage: "<executor>".into(), message, panicked: true }))
            }
        }
    };
    (seq, batch, report)
}

/// Polls `inner`, turning a panic into an error (`inner` is dropped then,
/// which gives up its turns).
struct CatchPanic<F> {
    inner: F,
}

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = std::result::Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = Pin::new(&mut self.inner);
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(crate::unit::panic_message(&*payload))),
        }
    }
}

/// Awaits two futures together (for examples and small programs without a
/// runtime's `join!`).
///
/// ```
/// let (a, b) = mware::block_on(mware::aio::join(async { 1 }, async { 2 }));
/// assert_eq!((a, b), (1, 2));
/// ```
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(move |cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().expect("checked"), rb.take().expect("checked")))
        } else {
            Poll::Pending
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Internals.

struct Shared {
    pipeline: Arc<Pipeline>,
    capacity: usize,
    concurrency: usize,
    turns: Option<Arc<Turns>>,
    state: Mutex<State>,
}

struct State {
    closed: bool,
    next_seq: u64,
    /// Accepted and not yet delivered.
    in_flight: usize,
    /// Accepted, not yet started.
    queue: VecDeque<(u64, Batch)>,
    /// Submitters waiting for room.
    room: Vec<Waker>,
    /// The results stream, waiting for work.
    work: Option<Waker>,
    results_taken: bool,
}

enum Offer {
    Full(Batch),
    Refused(SubmitError),
}

impl Shared {
    /// Accepts `batch` under the next sequence number if there is room;
    /// else, with a waker, registers it to be woken when room frees up.
    fn offer(&self, batch: Batch, waker: Option<&Waker>) -> std::result::Result<u64, Offer> {
        if batch.schema() != self.pipeline.schema() {
            return Err(Offer::Refused(SubmitError::WrongSchema(batch)));
        }
        let mut s = lock(&self.state);
        if s.closed {
            return Err(Offer::Refused(SubmitError::Closed(batch)));
        }
        if s.in_flight >= self.capacity {
            if let Some(w) = waker {
                if !s.room.iter().any(|r| r.will_wake(w)) {
                    s.room.push(w.clone());
                }
            }
            return Err(Offer::Full(batch));
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.in_flight += 1;
        s.queue.push_back((seq, batch));
        let work = s.work.take();
        drop(s);
        if let Some(w) = work {
            w.wake();
        }
        Ok(seq)
    }

    /// One result was taken: a place in flight frees up.
    fn delivered(&self) {
        let mut s = lock(&self.state);
        s.in_flight -= 1;
        let room = std::mem::take(&mut s.room);
        drop(s);
        room.into_iter().for_each(Waker::wake);
    }

    fn close(&self) {
        let mut s = lock(&self.state);
        s.closed = true;
        let room = std::mem::take(&mut s.room);
        let work = s.work.take();
        drop(s);
        room.into_iter().for_each(Waker::wake);
        if let Some(w) = work {
            w.wake();
        }
    }
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
