//! Streams: a long-lived runner around a built [`Pipeline`] that producers on
//! several threads feed with batches and a consumer drains.
//!
//! ```text
//!  producers ──reserve──► tickets (seq 0, 1, 2 …) ──submit──► reorder window
//!                                                              │ dispatch in seq order
//!                                                              ▼
//!                                        job queue (crossbeam, bounded) ──► workers ── run ──┐
//!                                                                                            ▼
//!  consumer ◄── in seq order (or as finished) ◄── result queue (crossbeam, bounded) ◄────────┘
//!     │
//!     └── drop / release ──► batch pool (crossbeam ArrayQueue) ──► producers take cleared batches
//! ```
//!
//! * **Sequence numbers.** Every accepted batch has one: [`Producer::submit`]
//!   gives the next; [`Producer::reserve`] hands out a [`Ticket`] first, so a
//!   producer can learn its batch's number, fill the batch accordingly and
//!   submit it later, while other producers fill the following ones. Batches
//!   reach the workers in sequence order whatever order they were submitted
//!   in.
//! * **Back-pressure.** At most [`capacity`](StreamBuilder::capacity)
//!   batches are in flight: reserved or submitted and not yet taken by the
//!   consumer. Beyond that `submit` and `reserve` wait and `try_submit` hands
//!   the batch back. A consumer that stops reading makes producers wait;
//!   nothing is ever dropped. Waiting producers are woken together once a
//!   quarter of the places (at least one) are free, rather than with one
//!   wake-up — a system call and a context switch — per batch; while a
//!   ticket is out, every freed place wakes them (the ticket's holder may be
//!   one of them). Because
//!   results never exceed the bound, the workers never wait for the
//!   consumer, so `close` cannot deadlock on a consumer that reads only
//!   afterwards.
//! * **Order.** Sequential and whole-batch stages see the batches in
//!   sequence order, each row exactly once: the state they carry across
//!   batches ends as after one single-threaded run over the concatenated
//!   input. Results come back in sequence order ([`Delivery::Ordered`], the
//!   default) or as they finish ([`Delivery::Unordered`]).
//! * **Faults.** A stage that panics fails only its rows (the executor
//!   catches it); the runner keeps serving. Should a run itself panic, its
//!   batch comes back with the panic as its report's error.
//! * **Where the time goes.** [`StreamRunner::stats`] splits the workers'
//!   time: running batches (`busy`, and the part of it spent waiting for
//!   the batch before to leave an ordered stage, `turn_wait`), handing
//!   results to the consumer (`delivering`) and waiting for work (`idle`).
//! * **Cores.** Workers in turn wait for each other, so two of them left on
//!   one core run the stream at half speed or worse. On Linux a worker
//!   that finds itself on another's core moves off it, and can be pinned
//!   to its own instead ([`Placement`]).
//! * **Shutdown.** [`StreamRunner::close`] (or dropping the runner) stops
//!   accepting, runs every accepted batch, delivers it and joins the
//!   workers; producers waiting for room get [`SubmitError::Closed`] back
//!   with their batch.
//!
//! # Pipelining
//!
//! Every worker thread runs one batch at a time. A pipeline without
//! sequential or whole-batch stages runs its batches on every worker at
//! once, in any order. A pipeline with one runs each batch on its worker's
//! thread, chunk by chunk, and its *ordered groups* (the fused groups that
//! hold a sequential or whole-batch stage, see
//! [`Plan::groups`](crate::Plan::groups)) take the batches in turn:
//! batch `k + 1` enters the quota stage after batch `k` left it, while its
//! parallel stages already run beside batch `k`'s sequential one: a worker
//! runs the groups before the ordered span on all of its batch's chunks
//! first, so it holds the span's turn only while it runs the span itself.
//! So a sequential stage no longer idles the other cores, and the state it
//! carries ends as after one single-threaded run over the concatenated
//! input.
//!
//! Running in turn runs the plan for runs in turn, which cuts a fused loop
//! where its ordered span begins (for gateway-8: before the quota stage);
//! the span and the steps after it are one loop, which takes the turns. A
//! run walks its last quarter of rows (at most a chunk) through that loop
//! in two passes, the span and then the steps after it, and passes the
//! turns on between them, so the next batch's span overlaps those rows'
//! after-steps; then it runs any groups after the loop. (Cutting where the
//! span ends on every row, as the parallel plan does, would let the next
//! batch's quota overlap all of this batch's after-stages, but the extra
//! pass cost gateway-8 more than the overlap gave: BENCHMARKS.md §8,
//! session 11.) Each cut costs a pass over the chunk (the chain's type
//! knows where it is cut, so the parts compile as tight as the whole loop
//! otherwise), and it takes from the processor what the
//! fused loop gave it: stages bound by a dependency through memory (a
//! quota's counters, a histogram), which ran in the shadow of the costly
//! stages of the same loop, run alone. gateway-8 cut that way costs
//! 1.25–1.45× its fused loop even written by hand. So with `c` what a batch
//! costs a worker in turn against [`Pipeline::run`] and `e` the share of a
//! core each of two busy workers gets, two workers stream at most `2e/c`
//! times `run`'s throughput (`cargo bench --bench stream -- bounds`
//! measures all three). For a tightly fused chain in small batches on few
//! cores one worker (`workers(1)`, the whole chain in one loop) can be as
//! fast. BENCHMARKS.md §8 has both on gateway-8.
//!
//! A pipeline with async stages ([`stage::fetch`](crate::stage::fetch)) runs
//! the same way: each worker awaits its batch's futures on its own thread
//! ([`block_on`](crate::block_on)), so up to one batch per worker has its
//! futures in flight, and ordered groups still take the batches in turn.
//! Futures that need a runtime's own I/O or timers belong in the async front
//! door (`mware::aio`, feature `async`), which polls them inside the
//! caller's runtime.

// Submitting hands a rejected batch back by value (no allocation on the
// error path, which a producer retrying `try_submit` takes often): the
// error is as large as a `Batch`, on purpose.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use crossbeam::queue::ArrayQueue;

use crate::affinity::Apart;
use crate::batch::Batch;
use crate::error::{Error, Result, StageError};
use crate::pipeline::Pipeline;
use crate::report::RunReport;
use crate::schema::Schema;
use crate::stage::Kind;
use crate::turns::Turns;

/// The order in which a [`Consumer`] receives processed batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// In sequence order (the default).
    #[default]
    Ordered,
    /// As soon as each batch is processed.
    Unordered,
}

/// Where a [`StreamRunner`]'s workers run ([`StreamBuilder::placement`]).
///
/// Runs in turn wait for each other, so two workers that the system leaves
/// on one core, while the other core runs the producer and the consumer,
/// run the stream at half speed or worse, and the system does not move
/// them apart: threads busy without a break look too costly to migrate.
/// On two cores, gateway-8 in 4,096-row batches streamed slower than
/// batch-by-batch [`Pipeline::run`] in 19 of 36 rounds with workers left to
/// the system, and in none with workers kept apart or pinned; kept apart,
/// it ran at 0.96 of the pinned speed-up (BENCHMARKS.md §8, session 15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the system puts them.
    System,
    /// Apart: before each batch, a worker that finds itself on a CPU
    /// another busy worker was last seen on moves to one without a busy
    /// worker; one on a CPU a batch was submitted from in the last few
    /// milliseconds (a producer's) moves to a CPU with neither a producer
    /// nor a worker (one waiting for its next batch counts: it comes back
    /// to its CPU within microseconds). A worker moves at most once a
    /// millisecond, by pinning itself to the new CPU and at once letting
    /// itself run anywhere it could before, so the system stays free to
    /// move it, and a thread a stage starts inherits no pin. On Linux;
    /// elsewhere the same as [`System`](Placement::System).
    #[default]
    Apart,
    /// Worker `i` pinned to the `i`-th CPU the building thread may run on
    /// (round robin when there are more workers than CPUs). Linux only:
    /// elsewhere [`build`](StreamBuilder::build) returns an error, as it
    /// does when the system refuses a pin. Pinned workers cannot flee a
    /// core that other work of the process or the machine keeps busy, and
    /// a thread a stage starts on a worker inherits its CPU (`build` starts
    /// rayon's global pool first, so that it is not one of them).
    Pinned,
}

/// Configures a [`StreamRunner`]; start with [`StreamRunner::builder`].
#[derive(Debug)]
pub struct StreamBuilder {
    pipeline: Arc<Pipeline>,
    capacity: usize,
    workers: Option<usize>,
    delivery: Delivery,
    pool: Option<usize>,
    batch_rows: usize,
    placement: Placement,
}

impl StreamBuilder {
    /// Batches in flight at most: reserved or submitted and not yet received
    /// by the consumer (default 32). Submitting beyond it waits.
    ///
    /// Memory held in flight grows with it, but so does the slack that keeps
    /// workers busy while the threads around them are slow to run: a
    /// producer that waited for room (woken once a quarter of the places
    /// are free), or a consumer yet to take results, which keep their
    /// places (a wake-up costs 25–90 µs on a small virtual machine). On two
    /// cores with 4,096-row gateway-8 batches, a capacity of 8 left each
    /// worker idle 9–14 µs per batch of a 53–67 µs run, and 32 left it
    /// 3–7 µs (`cargo bench --bench stream -- paired`, BENCHMARKS.md §8).
    pub fn capacity(mut self, batches: usize) -> Self {
        self.capacity = batches;
        self
    }

    /// Worker threads that run batches, one batch each at a time (default:
    /// one per core). With ordered stages, batches overlap everywhere but in
    /// those stages (see [Pipelining](crate::stream#pipelining)).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// The order results are delivered in (default [`Delivery::Ordered`]).
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Batches the pool keeps for reuse (default: twice the capacity plus
    /// four). Released batches beyond it are freed.
    pub fn pool_size(mut self, batches: usize) -> Self {
        self.pool = Some(batches);
        self
    }

    /// Rows a new batch from the pool has room for (default 0: batches grow
    /// on first use and keep their buffers afterwards).
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows;
        self
    }

    /// Where the workers run (default [`Placement::Apart`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use mware::prelude::*;
    /// # use mware::stream::{Placement, StreamRunner};
    /// # let mut s = SchemaBuilder::new();
    /// # let x = s.hot::<u64>("x");
    /// # let schema = s.build()?;
    /// # let double = stage::parallel("double", Write(x), |x: &mut u64, _: &mut RowCtl| *x *= 2);
    /// # let pipeline = Arc::new(Pipeline::builder(&schema).before(double).build()?);
    /// match StreamRunner::builder(pipeline).placement(Placement::Pinned).build() {
    ///     Ok(runner) => {
    ///         assert!(cfg!(target_os = "linux"));
    ///         runner.close();
    ///     }
    ///     // Off Linux, or where the system refuses: the error says why.
    ///     Err(e) => assert!(e.to_string().contains("cannot pin stream worker")),
    /// }
    /// # Ok::<(), mware::Error>(())
    /// ```
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<StreamRunner> {
        if self.capacity == 0 {
            return Err(Error::Config("stream capacity must be at least 1".into()));
        }
        if self.workers == Some(0) {
            return Err(Error::Config("a stream needs at least one worker".into()));
        }
        let ordered = needs_order(&self.pipeline);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = self.workers.unwrap_or(cores);
        let lane = Lane::new(&self.pipeline, ordered, workers);
        let pool = BatchPool::new(
            self.pipeline.schema(),
            self.pool.unwrap_or(2 * self.capacity + 4),
            self.batch_rows,
        );
        let (jobs_tx, jobs_rx) = channel::bounded::<Job>(self.capacity);
        let (done_tx, done_rx) = channel::bounded::<Done>(self.capacity);
        let shared = Arc::new(Shared {
            pipeline: self.pipeline,
            capacity: self.capacity,
            admit: Mutex::new(Admit {
                closed: false,
                next_seq: 0,
                in_flight: 0,
                base: 0,
                slots: VecDeque::with_capacity(self.capacity),
                next_dispatch: 0,
                jobs: Some(jobs_tx),
                waiting: 0,
            }),
            room: Condvar::new(),
            lane,
            pool,
            stats: Counters::default(),
            profile: Mutex::new(RunReport::default()),
            apart: (self.placement == Placement::Apart).then(|| Apart::new(workers)).flatten(),
        });
        let cpus = if self.placement == Placement::Pinned {
            // A pool started lazily from a pinned worker would inherit its
            // one CPU: start the global one from here.
            rayon::current_num_threads();
            let cpus = crate::affinity::allowed_cpus();
            Some(cpus.map_err(|e| Error::Config(format!("cannot pin stream workers: {e}")))?)
        } else {
            None
        };
        let consumer = Consumer {
            rx: done_rx,
            delivery: self.delivery,
            next: 0,
            pending: VecDeque::with_capacity(self.capacity),
            shared: shared.clone(),
        };
        // Made before the workers start: should one fail to start, dropping
        // the runner shuts down those that did.
        let mut runner = StreamRunner {
            producer: Producer { shared: shared.clone() },
            consumer: Mutex::new(Some(consumer)),
            shared,
            handles: Vec::with_capacity(workers),
            ordered,
        };
        // Each worker says when it runs: `build` returns with every thread
        // started, so a thread's own start-up (which allocates) never lands
        // in the runner's steady state.
        let (started_tx, started_rx) = crossbeam::channel::bounded(workers);
        for i in 0..workers {
            let (shared, jobs, done) = (runner.shared.clone(), jobs_rx.clone(), done_tx.clone());
            let started = started_tx.clone();
            let cpu = cpus.as_ref().map(|cpus| cpus[i % cpus.len()]);
            let handle = std::thread::Builder::new()
                .name(format!("mware-stream-{i}"))
                .spawn(move || {
                    let pinned = cpu.map_or(Ok(()), |cpu| {
                        crate::affinity::pin_current_thread(cpu)
                            .map_err(|e| format!("cannot pin stream worker {i} to CPU {cpu}: {e}"))
                    });
                    let _ = started.send(pinned);
                    worker(&shared, &jobs, &done, i)
                })
                .map_err(|e| Error::Config(format!("cannot start a stream worker: {e}")))?;
            runner.handles.push(handle);
        }
        for _ in 0..workers {
            if let Ok(Err(message)) = started_rx.recv() {
                return Err(Error::Config(message));
            }
        }
        Ok(runner)
    }
}

/// Whether batches must run in sequence order: a sequential stage carries
/// state from row to row, and a whole-batch stage owns state too.
fn needs_order(p: &Pipeline) -> bool {
    p.plan().steps.iter().any(|s| matches!(s.meta.kind, Kind::Sequential | Kind::WholeBatch))
}

/// A long-lived service around a built [`Pipeline`]: producers on any number
/// of threads submit batches, workers run them, a [`Consumer`] takes them
/// back processed, with their sequence number and run report.
///
/// ```
/// use std::sync::Arc;
/// use mware::prelude::*;
/// use mware::stream::StreamRunner;
///
/// let mut s = SchemaBuilder::new();
/// let x = s.hot::<u64>("x");
/// let total = s.hot::<u64>("total");
/// let schema = s.build()?;
/// // A sequential stage: a running sum over every row ever submitted.
/// let sum = stage::sequential("sum", (Read(x), Write(total)), 0u64,
///     |acc: &mut u64, (x, t): (&u64, &mut u64), _: &mut RowCtl| { *acc += *x; *t = *acc; });
/// let pipeline = Arc::new(Pipeline::builder(&schema).before(sum).build()?);
///
/// let runner = StreamRunner::builder(pipeline).capacity(4).build()?;
/// let mut results = runner.consumer().expect("first call");
/// let producer = runner.producer();
/// let feeder = std::thread::spawn(move || {
///     for k in 0..10u64 {
///         let mut batch = producer.batch();        // a cleared batch from the pool
///         batch.resize(3);
///         batch.column_mut(x).unwrap().copy_from_slice(&[3 * k, 3 * k + 1, 3 * k + 2]);
///         producer.submit(batch).unwrap();          // waits while 4 batches are in flight
///     }
/// });
/// let mut last = 0;
/// for k in 0..10u64 {
///     let done = results.recv().expect("ten batches were submitted");
///     assert_eq!(done.seq, k);                      // in submission order
///     assert_eq!(done.report.as_ref().unwrap().rows, 3);
///     last = *done.batch().column(total)?.last().unwrap();
/// }                                                 // each batch returns to the pool here
/// feeder.join().unwrap();
/// let stats = runner.close();                       // finish, deliver, join
/// assert_eq!(last, (0..30).sum::<u64>());
/// assert_eq!(stats.delivered, 10);
/// assert!(results.recv().is_none());                // closed and drained
/// # Ok::<(), mware::Error>(())
/// ```
pub struct StreamRunner {
    shared: Arc<Shared>,
    producer: Producer,
    consumer: Mutex<Option<Consumer>>,
    handles: Vec<JoinHandle<()>>,
    ordered: bool,
}

impl fmt::Debug for StreamRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRunner")
            .field("workers", &self.handles.len())
            .field("capacity", &self.shared.capacity)
            .field("in_order", &self.ordered)
            .finish()
    }
}

impl StreamRunner {
    /// Starts configuring a runner around `pipeline`.
    pub fn builder(pipeline: impl Into<Arc<Pipeline>>) -> StreamBuilder {
        StreamBuilder {
            pipeline: pipeline.into(),
            capacity: 32,
            workers: None,
            delivery: Delivery::Ordered,
            pool: None,
            batch_rows: 0,
            placement: Placement::default(),
        }
    }

    /// The pipeline the runner serves.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.shared.pipeline
    }

    /// A handle for submitting from another thread (cheap to clone).
    pub fn producer(&self) -> Producer {
        self.producer.clone()
    }

    /// The consumer, the first time it is asked for; `None` afterwards.
    pub fn consumer(&self) -> Option<Consumer> {
        lock(&self.consumer).take()
    }

    /// The pool processed batches return to.
    pub fn pool(&self) -> &BatchPool {
        &self.shared.pool
    }

    /// A cleared batch from the pool (see [`Producer::batch`]).
    pub fn batch(&self) -> Batch {
        self.producer.batch()
    }

    /// Submits a batch (see [`Producer::submit`]).
    pub fn submit(&self, batch: Batch) -> Result<u64, SubmitError> {
        self.producer.submit(batch)
    }

    /// Submits a batch if there is room now (see [`Producer::try_submit`]).
    pub fn try_submit(&self, batch: Batch) -> Result<u64, SubmitError> {
        self.producer.try_submit(batch)
    }

    /// Reserves the next sequence number (see [`Producer::reserve`]).
    pub fn reserve(&self) -> Result<Ticket, Closed> {
        self.producer.reserve()
    }

    /// Whether the pipeline has a sequential or whole-batch stage, which
    /// then sees the batches in sequence order.
    pub fn in_order(&self) -> bool {
        self.ordered
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        self.shared.stats.snapshot(&self.shared.lane, self.shared.apart.as_ref())
    }

    /// Every run's report so far, added up with
    /// [`RunReport::accumulate`]: rows and chunks, and per-stage rows,
    /// rejections, failures and time when the pipeline profiles
    /// ([`Pipeline::set_profiling`]).
    pub fn report(&self) -> RunReport {
        self.shared.profile.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops accepting, runs and delivers every accepted batch, and joins the
    /// workers. Tickets reserved but not submitted are void (their `submit`
    /// hands the batch back with [`SubmitError::Closed`]); producers waiting
    /// for room get the same error. Results stay receivable by the consumer.
    pub fn close(mut self) -> StreamStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        let jobs = {
            let mut a = lock(&self.shared.admit);
            if !a.closed {
                a.closed = true;
                for slot in a.slots.iter_mut() {
                    if matches!(slot, Slot::Reserved) {
                        *slot = Slot::Void;
                    }
                }
                self.shared.dispatch(&mut a);
            }
            a.jobs.take()
        };
        // Dropped unlocked: should every worker be gone, the queued jobs
        // drop with the sender and free their places, which locks.
        drop(jobs);
        self.shared.room.notify_all();
        for h in self.handles.drain(..) {
            // A worker only panics on a bug outside the pipeline (runs are
            // caught); the other workers still drain the queue.
            let _ = h.join();
        }
    }
}

impl Drop for StreamRunner {
    /// Same as [`close`](StreamRunner::close).
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Submits batches to a [`StreamRunner`]; clone one per producer thread.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// A cleared batch of the pipeline's schema, from the pool when it has
    /// one (no allocation), else a new one.
    pub fn batch(&self) -> Batch {
        self.shared.pool.take()
    }

    /// The pool processed batches return to.
    pub fn pool(&self) -> &BatchPool {
        &self.shared.pool
    }

    /// Submits `batch`, waiting while the stream is full, and returns its
    /// sequence number. The order in which submits are accepted is the
    /// sequence order. Hands the batch back if the stream is closed (also
    /// while waiting) or the batch has another schema.
    pub fn submit(&self, batch: Batch) -> Result<u64, SubmitError> {
        if batch.schema() != self.shared.pipeline.schema() {
            return Err(SubmitError::WrongSchema(batch));
        }
        let mut a = lock(&self.shared.admit);
        loop {
            if a.closed {
                return Err(SubmitError::Closed(batch));
            }
            if a.in_flight < self.shared.capacity {
                break;
            }
            a = self.shared.wait_for_room(a);
        }
        Ok(self.shared.accept_next(&mut a, batch))
    }

    /// Submits `batch` if the stream has room now; else hands it back with
    /// [`SubmitError::Full`] (or `Closed`, `WrongSchema`).
    pub fn try_submit(&self, batch: Batch) -> Result<u64, SubmitError> {
        if batch.schema() != self.shared.pipeline.schema() {
            return Err(SubmitError::WrongSchema(batch));
        }
        let mut a = lock(&self.shared.admit);
        if a.closed {
            return Err(SubmitError::Closed(batch));
        }
        if a.in_flight >= self.shared.capacity {
            return Err(SubmitError::Full(batch));
        }
        Ok(self.shared.accept_next(&mut a, batch))
    }

    /// Reserves the next sequence number, waiting while the stream is full.
    /// The ticket holds a place in flight; batches after it wait for it to
    /// be submitted (or dropped, which skips its number).
    ///
    /// Producers that fill batch `k` with the rows `k·B .. (k+1)·B` of one
    /// input reserve first and fill by the ticket's number: sequential
    /// stages then see the input in order whatever the producers' timing.
    pub fn reserve(&self) -> Result<Ticket, Closed> {
        let mut a = lock(&self.shared.admit);
        loop {
            if a.closed {
                return Err(Closed);
            }
            if a.in_flight < self.shared.capacity {
                break;
            }
            a = self.shared.wait_for_room(a);
        }
        let seq = a.next_seq;
        a.next_seq += 1;
        a.in_flight += 1;
        a.slots.push_back(Slot::Reserved);
        Ok(Ticket { seq, shared: Some(self.shared.clone()) })
    }
}

/// A reserved sequence number: submit a batch under it with
/// [`submit`](Ticket::submit). Dropping it unsubmitted skips the number.
pub struct Ticket {
    seq: u64,
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("seq", &self.seq).finish()
    }
}

impl Ticket {
    /// The sequence number the batch will carry.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Submits `batch` under this ticket's number (never waits: the ticket
    /// already holds its place). Hands the batch back if the runner closed
    /// since the reservation or the schema is wrong; the number is then
    /// skipped.
    pub fn submit(mut self, batch: Batch) -> Result<u64, SubmitError> {
        let shared = self.shared.take().expect("a ticket is submitted once");
        if batch.schema() != shared.pipeline.schema() {
            shared.void(self.seq);
            return Err(SubmitError::WrongSchema(batch));
        }
        let mut a = lock(&shared.admit);
        let Some(i) = self.seq.checked_sub(a.base).map(|i| i as usize) else {
            return Err(SubmitError::Closed(batch));
        };
        match a.slots.get_mut(i) {
            Some(slot @ Slot::Reserved) => *slot = Slot::Ready(batch),
            _ => return Err(SubmitError::Closed(batch)),
        }
        shared.stats.submitted.fetch_add(1, Ordering::Relaxed);
        shared.dispatch(&mut a);
        Ok(self.seq)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.void(self.seq);
        }
    }
}

/// Why a batch was not accepted; every variant hands the batch back.
pub enum SubmitError {
    /// The stream is full ([`try_submit`](Producer::try_submit) only).
    Full(Batch),
    /// The runner is closed or closing.
    Closed(Batch),
    /// The batch's schema is not the pipeline's.
    WrongSchema(Batch),
}

impl SubmitError {
    /// The batch that was not accepted.
    pub fn into_batch(self) -> Batch {
        match self {
            SubmitError::Full(b) | SubmitError::Closed(b) | SubmitError::WrongSchema(b) => b,
        }
    }

    /// Whether the runner is closed (retrying cannot succeed).
    pub fn is_closed(&self) -> bool {
        matches!(self, SubmitError::Closed(_))
    }
}

impl fmt::Debug for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, b) = match self {
            SubmitError::Full(b) => ("Full", b),
            SubmitError::Closed(b) => ("Closed", b),
            SubmitError::WrongSchema(b) => ("WrongSchema", b),
        };
        f.debug_tuple(name).field(b).finish()
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => write!(f, "the stream is full"),
            SubmitError::Closed(_) => write!(f, "the stream is closed"),
            SubmitError::WrongSchema(_) => write!(f, "the batch's schema is not the pipeline's"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// The runner is closed: no more sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the stream is closed")
    }
}

impl std::error::Error for Closed {}

/// A processed batch as the consumer receives it. Dropping it (or
/// [`release`](Processed::release)) clears the batch and returns it to the
/// pool; [`into_batch`](Processed::into_batch) keeps it.
pub struct Processed {
    /// The batch's sequence number.
    pub seq: u64,
    /// What the run reported; an error only if the run itself panicked
    /// (stage panics fail their rows and leave the report `Ok`).
    pub report: Result<RunReport>,
    batch: Option<Batch>,
    pool: BatchPool,
}

impl fmt::Debug for Processed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processed")
            .field("seq", &self.seq)
            .field("report", &self.report)
            .field("batch", &self.batch)
            .finish()
    }
}

impl Processed {
    /// The processed rows.
    pub fn batch(&self) -> &Batch {
        self.batch.as_ref().expect("present until released")
    }

    /// The processed rows, mutable.
    pub fn batch_mut(&mut self) -> &mut Batch {
        self.batch.as_mut().expect("present until released")
    }

    /// Takes the batch out; it does not return to the pool.
    pub fn into_batch(mut self) -> Batch {
        self.batch.take().expect("present until released")
    }

    /// Returns the batch to the pool now (what dropping does).
    pub fn release(self) {}
}

impl std::ops::Deref for Processed {
    type Target = Batch;
    fn deref(&self) -> &Batch {
        self.batch()
    }
}

impl Drop for Processed {
    fn drop(&mut self) {
        if let Some(b) = self.batch.take() {
            self.pool.put(b);
        }
    }
}

/// Receives processed batches from a [`StreamRunner`]. There is one per
/// runner ([`StreamRunner::consumer`]); it may move to another thread and
/// outlive the runner to drain what is left.
pub struct Consumer {
    rx: Receiver<Done>,
    delivery: Delivery,
    /// Next dispatch index to deliver (ordered delivery).
    next: u64,
    /// Results that came early, at `index - next`.
    pending: VecDeque<Option<Done>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").field("delivery", &self.delivery).finish_non_exhaustive()
    }
}

/// Why [`Consumer::try_recv`] or [`Consumer::recv_timeout`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing ready yet (or within the timeout).
    Empty,
    /// The runner is closed and every batch was delivered.
    Finished,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => write!(f, "no processed batch is ready"),
            RecvError::Finished => write!(f, "the stream is closed and drained"),
        }
    }
}

impl std::error::Error for RecvError {}

impl Consumer {
    /// The next processed batch, waiting for it; `None` once the runner is
    /// closed and everything accepted has been delivered.
    pub fn recv(&mut self) -> Option<Processed> {
        self.receive(|rx| rx.recv().map_err(|_| RecvError::Finished)).ok()
    }

    /// The next processed batch if one is ready.
    pub fn try_recv(&mut self) -> Result<Processed, RecvError> {
        self.receive(|rx| {
            rx.try_recv().map_err(|e| match e {
                channel::TryRecvError::Empty => RecvError::Empty,
                channel::TryRecvError::Disconnected => RecvError::Finished,
            })
        })
    }

    /// The next processed batch, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Processed, RecvError> {
        let deadline = Instant::now() + timeout;
        self.receive(|rx| {
            rx.recv_deadline(deadline).map_err(|e| match e {
                channel::RecvTimeoutError::Timeout => RecvError::Empty,
                channel::RecvTimeoutError::Disconnected => RecvError::Finished,
            })
        })
    }

    fn receive(
        &mut self,
        mut get: impl FnMut(&Receiver<Done>) -> Result<Done, RecvError>,
    ) -> Result<Processed, RecvError> {
        loop {
            if let Some(Some(_)) = self.pending.front() {
                self.next += 1;
                let done = self.pending.pop_front().flatten().expect("checked");
                return Ok(self.hand_out(done));
            }
            match get(&self.rx) {
                Ok(done) if self.delivery == Delivery::Unordered => return Ok(self.hand_out(done)),
                Ok(done) => {
                    let i = (done.index - self.next) as usize;
                    while self.pending.len() <= i {
                        self.pending.push_back(None);
                    }
                    self.pending[i] = Some(done);
                }
                Err(RecvError::Finished) => {
                    // A worker died with a batch (a bug outside any stage):
                    // deliver what is left in order, over the gap.
                    while let Some(first) = self.pending.pop_front() {
                        self.next += 1;
                        if let Some(done) = first {
                            return Ok(self.hand_out(done));
                        }
                    }
                    return Err(RecvError::Finished);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn hand_out(&self, done: Done) -> Processed {
        let Done { processed, credit, .. } = done;
        drop(credit);
        self.shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
        processed
    }
}

impl Drop for Consumer {
    /// Frees the places of results nobody will take; later results are
    /// dropped as they finish, so producers never wait on a gone consumer.
    fn drop(&mut self) {
        while self.rx.try_recv().is_ok() {}
        self.pending.clear();
    }
}

impl Iterator for Consumer {
    type Item = Processed;

    /// Same as [`recv`](Consumer::recv).
    fn next(&mut self) -> Option<Processed> {
        self.recv()
    }
}

/// Recycled batches of one schema: a bounded lock-free queue (crossbeam's
/// `ArrayQueue`). Batches come back cleared with their buffers, so a
/// producer that refills one to the same size allocates nothing.
#[derive(Clone)]
pub struct BatchPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    queue: ArrayQueue<Batch>,
    schema: Schema,
    rows: usize,
}

impl fmt::Debug for BatchPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchPool")
            .field("available", &self.available())
            .field("capacity", &self.inner.queue.capacity())
            .finish()
    }
}

impl BatchPool {
    /// A pool keeping up to `capacity` batches (at least one) of `schema`;
    /// new batches get room for `rows` rows.
    pub fn new(schema: &Schema, capacity: usize, rows: usize) -> BatchPool {
        BatchPool {
            inner: Arc::new(PoolInner {
                queue: ArrayQueue::new(capacity.max(1)),
                schema: schema.clone(),
                rows,
            }),
        }
    }

    /// An empty batch: a recycled one if the pool has one, else a new one.
    pub fn take(&self) -> Batch {
        self.inner.queue.pop().unwrap_or_else(|| Batch::with_capacity(&self.inner.schema, self.inner.rows))
    }

    /// Clears `batch` and keeps it for reuse; a batch of another schema, or
    /// one beyond the pool's capacity, is dropped.
    pub fn put(&self, mut batch: Batch) {
        if batch.schema() == &self.inner.schema {
            batch.clear();
            let _ = self.inner.queue.push(batch);
        }
    }

    /// Batches ready for reuse.
    pub fn available(&self) -> usize {
        self.inner.queue.len()
    }
}

/// Counters of a [`StreamRunner`], from [`StreamRunner::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Batches accepted.
    pub submitted: u64,
    /// Batches run.
    pub processed: u64,
    /// Batches the consumer received.
    pub delivered: u64,
    /// Rows run.
    pub rows: u64,
    /// Rows failed by a stage.
    pub failed_rows: u64,
    /// Runs that panicked outside any stage (their batch carries the error).
    pub failed_runs: u64,
    /// Time spent inside `Pipeline::run`, summed over workers.
    pub busy: Duration,
    /// The part of `busy` spent waiting for earlier batches to leave an
    /// ordered group (see the module's "Pipelining"): the price of order.
    pub turn_wait: Duration,
    /// Time workers spent handing processed batches to the consumer: next
    /// to nothing while it is reading, a wake-up (a system call, and on a
    /// virtual machine often an interrupt to another core) when it sleeps.
    pub delivering: Duration,
    /// Time workers waited for a batch to run (producers slower than the
    /// workers, or the stream empty).
    pub idle: Duration,
    /// Times a worker moved off a CPU another worker or a producer was on
    /// ([`Placement::Apart`]).
    pub moves: u64,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    processed: AtomicU64,
    delivered: AtomicU64,
    rows: AtomicU64,
    failed_rows: AtomicU64,
    failed_runs: AtomicU64,
    busy_ns: AtomicU64,
    delivering_ns: AtomicU64,
    idle_ns: AtomicU64,
}

impl Counters {
    fn snapshot(&self, lane: &Lane, apart: Option<&Apart>) -> StreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamStats {
            submitted: get(&self.submitted),
            processed: get(&self.processed),
            delivered: get(&self.delivered),
            rows: get(&self.rows),
            failed_rows: get(&self.failed_rows),
            failed_runs: get(&self.failed_runs),
            busy: Duration::from_nanos(get(&self.busy_ns)),
            turn_wait: lane.turns.as_ref().map_or(Duration::ZERO, Turns::waited),
            delivering: Duration::from_nanos(get(&self.delivering_ns)),
            idle: Duration::from_nanos(get(&self.idle_ns)),
            moves: apart.map_or(0, Apart::moves),
        }
    }
}

// ---------------------------------------------------------------------------
// Internals.

/// State shared by the runner, its producers, workers and consumer.
struct Shared {
    pipeline: Arc<Pipeline>,
    capacity: usize,
    admit: Mutex<Admit>,
    /// Signalled when a place in flight frees up or the runner closes.
    room: Condvar,
    lane: Lane,
    pool: BatchPool,
    stats: Counters,
    /// Every run's report added up (per-stage figures when profiling is on).
    profile: Mutex<RunReport>,
    /// Set with [`Placement::Apart`] (and more than one worker and CPU).
    apart: Option<Apart>,
}

/// Admission: sequence numbers, the in-flight bound, and the reorder window
/// between submission and dispatch.
struct Admit {
    closed: bool,
    next_seq: u64,
    /// Reserved or accepted, not yet received by the consumer.
    in_flight: usize,
    /// Sequence number of `slots[0]`.
    base: u64,
    /// Sequence numbers `base .. next_seq` not yet dispatched.
    slots: VecDeque<Slot>,
    /// Dispatch index of the next job (sequence order, skipped numbers left
    /// out): the order of the lane and of ordered delivery.
    next_dispatch: u64,
    /// `None` once closed: workers drain the queue and stop.
    jobs: Option<Sender<Job>>,
    /// Producers waiting for room (a notify is a system call; skip it when
    /// nobody waits).
    waiting: usize,
}

enum Slot {
    /// A ticket is out for this number.
    Reserved,
    /// Submitted, waiting for the numbers before it.
    Ready(Batch),
    /// The ticket was dropped (or voided by close): skip the number.
    Void,
}

/// One accepted batch on its way to a worker.
struct Job {
    index: u64,
    seq: u64,
    batch: Batch,
    credit: Credit,
}

/// One processed batch on its way to the consumer.
struct Done {
    index: u64,
    processed: Processed,
    credit: Credit,
}

/// A place in flight: released when the consumer takes the result, or when
/// the message carrying it is dropped, so a lost message cannot leak it.
struct Credit(Arc<Shared>);

impl Drop for Credit {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Shared {
    fn release(&self) {
        let mut a = lock(&self.admit);
        a.in_flight -= 1;
        // Waiting producers are woken once a quarter of the places are free,
        // all together, rather than one wake-up (a system call and a context
        // switch) per batch: the places keep freeing as the consumer reads,
        // so the threshold is crossed. Not while a ticket is out, though:
        // the batches after its number wait for it, and its holder may be a
        // producer waiting here, so every freed place must wake.
        let ticket_out = a.slots.iter().any(|s| matches!(s, Slot::Reserved));
        let quarter_free = a.in_flight + self.capacity.div_ceil(4) <= self.capacity;
        let wake = a.waiting > 0 && (quarter_free || ticket_out);
        drop(a);
        if wake {
            self.room.notify_all();
        }
    }

    fn wait_for_room<'a>(&self, mut a: MutexGuard<'a, Admit>) -> MutexGuard<'a, Admit> {
        a.waiting += 1;
        let mut a = self.room.wait(a).unwrap_or_else(|e| e.into_inner());
        a.waiting -= 1;
        a
    }

    /// Accepts `batch` under the next sequence number (room checked).
    fn accept_next(self: &Arc<Self>, a: &mut Admit, batch: Batch) -> u64 {
        let seq = a.next_seq;
        a.next_seq += 1;
        a.in_flight += 1;
        a.slots.push_back(Slot::Ready(batch));
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        self.dispatch(a);
        seq
    }

    /// Skips a reserved number whose ticket went away.
    fn void(self: &Arc<Self>, seq: u64) {
        let mut a = lock(&self.admit);
        if let Some(i) = seq.checked_sub(a.base) {
            if let Some(slot @ Slot::Reserved) = a.slots.get_mut(i as usize) {
                *slot = Slot::Void;
            }
        }
        self.dispatch(&mut a);
    }

    /// Sends the batches at the head of the window to the workers, in
    /// sequence order (under the admission lock, so the queue holds them in
    /// that order). Never blocks: the queue holds `capacity` jobs, at least
    /// as many as can be in flight.
    fn dispatch(self: &Arc<Self>, a: &mut Admit) {
        let mut freed = 0;
        while matches!(a.slots.front(), Some(Slot::Ready(_) | Slot::Void)) {
            let seq = a.base;
            a.base += 1;
            match a.slots.pop_front() {
                Some(Slot::Ready(batch)) => {
                    let index = a.next_dispatch;
                    a.next_dispatch += 1;
                    let job = Job { index, seq, batch, credit: Credit(self.clone()) };
                    match &a.jobs {
                        Some(tx) => {
                            // Noted first: the worker woken may take this
                            // thread's core before the send returns.
                            if let Some(apart) = &self.apart {
                                apart.note_sender();
                            }
                            // The job's credit is released when it drops;
                            // the lock is held, so drop it after unlocking.
                            if let Err(e) = tx.try_send(job) {
                                unreachable_full(e.into_inner(), a, &mut freed);
                            }
                        }
                        None => unreachable_full(job, a, &mut freed),
                    }
                }
                _ => {
                    a.in_flight -= 1;
                    freed += 1;
                }
            }
        }
        if a.waiting > 0 {
            for _ in 0..freed {
                self.room.notify_one();
            }
        }
    }
}

/// A job that cannot be queued (the queue is sized so this cannot happen;
/// if it did, the place is freed and the batch recycled rather than lost
/// silently in a deadlock).
#[cold]
fn unreachable_full(job: Job, a: &mut Admit, freed: &mut usize) {
    debug_assert!(false, "the stream's job queue overflowed");
    let Job { batch, credit, .. } = job;
    std::mem::forget(credit);
    a.in_flight -= 1;
    *freed += 1;
    drop(batch);
}

/// How a worker runs a batch. A pipeline with ordered (sequential or
/// whole-batch) stages and more than one worker runs each batch on its
/// worker's thread in turn (see `crate::turns`): run `index` enters each
/// ordered group after run `index - 1` left it, and overlaps with it
/// everywhere else. Workers take batches off the job queue in dispatch
/// order, so the run a worker waits for is always already running.
struct Lane {
    turns: Option<Turns>,
}

impl Lane {
    fn new(pipeline: &Pipeline, ordered: bool, workers: usize) -> Lane {
        Lane { turns: (ordered && workers > 1).then(|| Turns::new(&pipeline.turn)) }
    }

    fn run(&self, pipeline: &Pipeline, index: u64, batch: &mut Batch) -> Result<RunReport> {
        use crate::fetch::{block_on, drive};
        guard_run(|| match &self.turns {
            // Async stages: the worker awaits its batch's futures, so the
            // batches of all workers have theirs in flight at once.
            None if pipeline.is_async() => Ok(block_on(drive(pipeline, batch, None))),
            None => pipeline.run(batch),
            Some(turns) if pipeline.is_async() => {
                Ok(block_on(drive(pipeline, batch, Some(crate::turns::Turn { turns, index }))))
            }
            Some(turns) => Ok(crate::exec::run_in_turn(pipeline, batch, turns, index)),
        })
    }
}

/// A run, with a panic of the run itself (not of a stage, which
/// the executor contains) turned into the report's error.
fn guard_run(run: impl FnOnce() -> Result<RunReport>) -> Result<RunReport> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(report) => report,
        Err(payload) => Err(Error::Stage(StageError {
            stage: "<executor>".into(),
            message: crate::unit::panic_message(&*payload),
            panicked: true,
        })),
    }
}

/// Worker `me`'s loop: run each job it takes, hand the result on.
fn worker(shared: &Shared, jobs: &Receiver<Job>, done: &Sender<Done>, me: usize) {
    let s = &shared.stats;
    let add = |counter: &AtomicU64, since: Instant| {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    };
    loop {
        let waiting = Instant::now();
        if let Some(apart) = &shared.apart {
            apart.idle(me);
        }
        let Ok(Job { index, seq, mut batch, credit }) = jobs.recv() else { break };
        add(&s.idle_ns, waiting);
        if let Some(apart) = &shared.apart {
            apart.check(me);
        }
        let started = Instant::now();
        let report = shared.lane.run(&shared.pipeline, index, &mut batch);
        add(&s.busy_ns, started);
        s.processed.fetch_add(1, Ordering::Relaxed);
        s.rows.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match &report {
            Ok(r) => shared.profile.lock().unwrap_or_else(|e| e.into_inner()).accumulate(r),
            Err(_) => {
                s.failed_runs.fetch_add(1, Ordering::Relaxed);
            }
        }
        let failed = batch.errors().count();
        if failed > 0 {
            s.failed_rows.fetch_add(failed as u64, Ordering::Relaxed);
        }
        let processed = Processed { seq, report, batch: Some(batch), pool: shared.pool.clone() };
        // Never blocks (results are bounded by the places in flight); fails
        // only when the consumer is gone, and then dropping the message
        // frees its place and recycles the batch.
        let delivering = Instant::now();
        let _ = done.send(Done { index, processed, credit });
        add(&s.delivering_ns, delivering);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
