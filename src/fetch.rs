//! Async stages: a stage whose body is an `async` function over a chunk's
//! columns, awaited once per batch (or per chunk), never once per row.
//!
//! An async stage is registered like any other stage
//! ([`before`](crate::PipelineBuilder::before),
//! [`after`](crate::PipelineBuilder::after)) and takes its place in the
//! onion. The plan gives it a segment of its own (a barrier, like a
//! whole-batch stage): every row finishes the segments before it, then the
//! stage's future runs over the whole batch, or one future per chunk of
//! [`Fetch::chunk_rows`] rows, all in flight together. The sync segments
//! around it keep their normal fused, chunked and parallel plan.
//!
//! Run a pipeline that holds one with
//! [`Pipeline::run_async`](crate::Pipeline::run_async) on any executor (the
//! core needs no runtime); [`Pipeline::run`](crate::Pipeline::run) refuses it
//! with [`Error::AsyncStage`].
//!
//! **Faults.** A future that returns an error, panics, or outlives its
//! [`timeout`](Fetch::timeout) fails every row of its chunk that it was
//! given, at the stage's depth, with a [`StageError`] naming the stage;
//! other chunks and the rest of the batch go on. Deadlines are kept by one
//! lazily started timer thread (a map of deadlines and wakers), never a
//! thread or a runtime timer per timeout.
//!
//! **Cost.** Each future is boxed: one allocation per async stage per chunk
//! it runs on (so per batch with the default chunk size), counted exactly in
//! [`RunReport::futures`](crate::RunReport::futures).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::access::{Access, ColumnTable, SlicesOf};
use crate::batch::Batch;
use crate::control::RowState;
use crate::error::{Error, Result, StageError};
use crate::exec::Run;
use crate::pipeline::{Pipeline, Stage};
use crate::plan::{Plan, Segment, Step};
use crate::report::RunReport;
use crate::stage::{Kind, Selection, StageMeta};
use crate::turns::Turn;
use crate::unit::{ChunkRun, LiveRows, Unit, panic_message};

/// The error an async stage's future may return: any error type converts
/// into it with `?` (and a `&str` or `String` with `.into()`).
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// What an async stage's future resolves to.
pub type AsyncResult = std::result::Result<(), BoxError>;

/// A boxed, `Send` future borrowing for `'a`: what the closures given to
/// [`fetch`] return (`Box::pin(async move { … })`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The rows of one chunk as an async stage sees them: which to process, and
/// how to reject, respond to or fail them. Indices are chunk-relative, like
/// the stage's slices. Unlike [`Rows`](crate::Rows) it is `Send`, so it can
/// be held across `.await`.
pub struct AsyncRows<'a> {
    states: &'a mut [RowState],
    selection: Selection<'a>,
    depth: u16,
    first_row: usize,
    stage: &'a Arc<str>,
    errors: &'a mut Vec<(usize, StageError)>,
}

impl<'a> AsyncRows<'a> {
    /// Number of rows in the chunk (selected or not).
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The rows to process.
    pub fn selection(&self) -> Selection<'a> {
        self.selection
    }

    /// The selected rows, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + 'a {
        let (dense, sparse) = match self.selection {
            Selection::Dense(n) => (0..n, &[][..]),
            Selection::Sparse(rows) => (0..0, rows),
        };
        dense.chain(sparse.iter().map(|&i| i as usize))
    }

    /// Calls `f` with each selected row.
    pub fn for_each(&self, f: impl FnMut(usize)) {
        self.iter().for_each(f)
    }

    /// The batch index of chunk row 0.
    pub fn first_row(&self) -> usize {
        self.first_row
    }

    /// Chunk row `i`'s status.
    pub fn status(&self, i: usize) -> u16 {
        self.states[i].status()
    }

    /// Sets chunk row `i`'s status without stopping it.
    pub fn respond(&mut self, i: usize, status: u16) {
        self.states[i] = self.states[i].with_status(status);
    }

    /// Stops chunk row `i` here with `status`.
    pub fn reject(&mut self, i: usize, status: u16) {
        self.states[i] = RowState::rejected(self.depth, status);
    }

    /// Fails chunk row `i` here with `message` (the rest of the chunk goes
    /// on; to fail the whole chunk, return an error from the future).
    pub fn fail(&mut self, i: usize, message: impl Into<String>) {
        self.states[i].fail(self.depth);
        let error = StageError { stage: self.stage.clone(), message: message.into(), panicked: false };
        self.errors.push((self.first_row + i, error));
    }
}

/// An async chunk stage: a future over a chunk's columns, declared with the
/// usual access types ([`Read`](crate::Read), [`Write`](crate::Write),
/// [`ReadCold`](crate::ReadCold), [`WriteCold`](crate::WriteCold), tuples).
/// Register it with [`fetch_with`] (closures go through [`fetch`]).
///
/// ```
/// use std::future::Future;
/// use mware::prelude::*;
/// use mware::stage::{AsyncResult, AsyncRows, AsyncStage};
///
/// /// Doubles `x` into `y`, as a service would answer a batched lookup.
/// struct Doubler { x: Field<u64>, y: Field<u64> }
///
/// impl AsyncStage for Doubler {
///     type Access = (Read<u64>, Write<u64>);
///     fn access(&self) -> Self::Access { (Read(self.x), Write(self.y)) }
///     fn call<'a>(&'a self, (x, y): (&'a [u64], &'a mut [u64]), rows: AsyncRows<'a>)
///         -> impl Future<Output = AsyncResult> + Send + 'a {
///         async move {
///             rows.for_each(|i| y[i] = 2 * x[i]);
///             Ok(())
///         }
///     }
/// }
///
/// let mut s = SchemaBuilder::new();
/// let (x, y) = (s.hot::<u64>("x"), s.hot::<u64>("y"));
/// let schema = s.build()?;
/// let pipeline = Pipeline::builder(&schema).before(stage::fetch_with("double", Doubler { x, y })).build()?;
/// let mut batch = Batch::new(&schema);
/// batch.resize(3);
/// batch.column_mut(x)?.copy_from_slice(&[1, 2, 3]);
/// let report = mware::block_on(pipeline.run_async(&mut batch))?;
/// assert_eq!(batch.column(y)?, &[2, 4, 6]);
/// assert_eq!(report.futures, 1);
/// # Ok::<(), mware::Error>(())
/// ```
pub trait AsyncStage: Send + Sync + 'static {
    /// The declared access.
    type Access: Access;

    /// The declaration (read when the pipeline is built and per future).
    fn access(&self) -> Self::Access;

    /// The future for one chunk: `cols` are the chunk's columns, `rows` its
    /// selection and control words. It may hold both across `.await`.
    fn call<'a>(
        &'a self,
        cols: SlicesOf<'a, Self::Access>,
        rows: AsyncRows<'a>,
    ) -> impl Future<Output = AsyncResult> + Send + 'a;

    /// [`call`](AsyncStage::call), boxed for the executor (closures already
    /// return a box and hand it over as is).
    #[doc(hidden)]
    fn call_boxed<'a>(
        &'a self,
        cols: SlicesOf<'a, Self::Access>,
        rows: AsyncRows<'a>,
    ) -> BoxFuture<'a, AsyncResult> {
        Box::pin(self.call(cols, rows))
    }
}

/// An [`AsyncStage`] made of a closure returning a boxed future (see
/// [`fetch`]).
pub struct FnStage<A, F> {
    access: A,
    f: F,
}

impl<A, F> AsyncStage for FnStage<A, F>
where
    A: Access + Clone,
    F: for<'a> Fn(SlicesOf<'a, A>, AsyncRows<'a>) -> BoxFuture<'a, AsyncResult> + Send + Sync + 'static,
{
    type Access = A;
    fn access(&self) -> A {
        self.access.clone()
    }
    fn call<'a>(
        &'a self,
        cols: SlicesOf<'a, A>,
        rows: AsyncRows<'a>,
    ) -> impl Future<Output = AsyncResult> + Send + 'a {
        (self.f)(cols, rows)
    }
    fn call_boxed<'a>(&'a self, cols: SlicesOf<'a, A>, rows: AsyncRows<'a>) -> BoxFuture<'a, AsyncResult> {
        (self.f)(cols, rows)
    }
}

/// An async stage ready to register: its name, body and settings. Built
/// with [`fetch`] or [`fetch_with`].
pub struct Fetch<S> {
    name: Arc<str>,
    stage: S,
    rejects: bool,
    timeout: Option<Duration>,
    chunk_rows: Option<usize>,
}

impl<S> Fetch<S> {
    /// Declares that the stage may reject rows (shown by `explain`).
    pub fn rejects(mut self) -> Self {
        self.rejects = true;
        self
    }

    /// Fails a chunk whose future has not finished `deadline` after it
    /// started: the future is dropped (cancelled) and every row it was
    /// given fails with a "timed out" error. Default: no deadline.
    pub fn timeout(mut self, deadline: Duration) -> Self {
        self.timeout = Some(deadline);
        self
    }

    /// Rows per future (default: the whole batch, one future per batch).
    /// The futures of one batch are in flight together. A stage that
    /// writes a cold field cannot be split (its side table is one value).
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = Some(rows);
        self
    }
}

/// An async stage from a closure over a chunk's columns and rows that
/// returns a boxed future (`Box::pin(async move { … })`), typically one call
/// to a service for every distinct key of the chunk.
///
/// ```
/// use std::collections::HashMap;
/// use mware::prelude::*;
/// use mware::stage::AsyncRows;
///
/// let mut s = SchemaBuilder::new();
/// let user = s.hot::<u64>("user_id");
/// let tier = s.hot::<u32>("tier");
/// let schema = s.build()?;
///
/// // Collect the distinct users of the live rows, look them up in one call,
/// // write the answers into a column.
/// let lookup = stage::fetch("tiers", (Read(user), Write(tier)),
///     |(users, tiers): (&[u64], &mut [u32]), rows: AsyncRows<'_>| Box::pin(async move {
///         let mut keys: Vec<u64> = rows.iter().map(|i| users[i]).collect();
///         keys.sort_unstable();
///         keys.dedup();
///         let answers: HashMap<u64, u32> = keys.iter().map(|&k| (k, (k % 3) as u32)).collect(); // the "service"
///         rows.for_each(|i| tiers[i] = answers[&users[i]]);
///         Ok(())
///     }));
/// let pipeline = Pipeline::builder(&schema).before(lookup).build()?;
/// let mut batch = Batch::new(&schema);
/// batch.resize(4);
/// batch.column_mut(user)?.copy_from_slice(&[7, 8, 7, 9]);
/// let report = mware::block_on(pipeline.run_async(&mut batch))?;
/// assert_eq!(batch.column(tier)?, &[1, 2, 1, 0]);
/// assert_eq!(report.futures, 1); // one future for the batch, not one per row
/// assert!(pipeline.run(&mut batch).is_err()); // async stages need run_async
/// # Ok::<(), mware::Error>(())
/// ```
pub fn fetch<A, F>(name: &str, access: A, f: F) -> Fetch<FnStage<A, F>>
where
    A: Access + Clone,
    F: for<'a> Fn(SlicesOf<'a, A>, AsyncRows<'a>) -> BoxFuture<'a, AsyncResult> + Send + Sync + 'static,
{
    fetch_with(name, FnStage { access, f })
}

/// An async stage from an [`AsyncStage`] implementation.
pub fn fetch_with<S: AsyncStage>(name: &str, stage: S) -> Fetch<S> {
    Fetch { name: name.into(), stage, rejects: false, timeout: None, chunk_rows: None }
}

// ---------------------------------------------------------------------------
// The unit an async stage registers as.

/// An async stage behind a vtable: what the async executor drives.
pub trait AsyncStep: Send + Sync {
    /// Name, kind (async) and access.
    fn meta(&self) -> StageMeta;
    /// Rows per future (`None`: the whole batch).
    fn chunk_rows(&self) -> Option<usize>;
    /// The deadline of each future.
    fn timeout(&self) -> Option<Duration>;
    /// Starts the future of rows `start .. start + rows.len()`.
    ///
    /// # Safety
    /// `table` describes the batch being run; for `'a` nothing else touches
    /// the rows of the range in the columns the stage declared (futures of
    /// one batch get disjoint ranges), and no one else touches a cold field
    /// the stage writes.
    unsafe fn start<'a>(
        &'a self,
        table: &ColumnTable<'_>,
        start: usize,
        rows: AsyncRows<'a>,
    ) -> BoxFuture<'a, AsyncResult>;
}

impl<S: AsyncStage> AsyncStep for Fetch<S> {
    fn meta(&self) -> StageMeta {
        let mut uses = Vec::new();
        self.stage.access().uses(&mut uses);
        StageMeta {
            name: self.name.clone(),
            kind: Kind::Async,
            rejects: self.rejects,
            side_by_side: false,
            uses,
        }
    }

    fn chunk_rows(&self) -> Option<usize> {
        self.chunk_rows
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    unsafe fn start<'a>(
        &'a self,
        table: &ColumnTable<'_>,
        start: usize,
        rows: AsyncRows<'a>,
    ) -> BoxFuture<'a, AsyncResult> {
        let frame = crate::access::Frame::of(table);
        let ptrs = self.stage.access().resolve(table, &frame);
        // SAFETY: forwarded from the caller's contract; validation keeps the
        // stage's written fields disjoint from its other fields; `frame` is
        // alive while the slices are made.
        let cols = unsafe { S::Access::slices(ptrs, start, rows.len()) };
        self.stage.call_boxed(cols, rows)
    }
}

/// One layer holding an async stage as its before- or after-stage.
pub(crate) struct AsyncLayer {
    step: Box<dyn AsyncStep>,
    after: bool,
}

impl<S: AsyncStage> Stage for Fetch<S> {
    fn into_unit(self, after: bool) -> Box<dyn Unit> {
        Box::new(AsyncLayer { step: Box::new(self), after })
    }
}

impl Unit for AsyncLayer {
    fn layers(&self) -> usize {
        1
    }

    fn metas(&self) -> Vec<[Option<StageMeta>; 2]> {
        let meta = Some(self.step.meta());
        vec![if self.after { [None, meta] } else { [meta, None] }]
    }

    fn fused(&self) -> bool {
        false
    }

    fn new_local(&self) -> Box<dyn std::any::Any + Send> {
        Box::new(())
    }

    /// Never reached through the public API (`Pipeline::run` refuses
    /// pipelines with async stages); should it be, the rows the stage would
    /// see fail instead of running without it.
    unsafe fn run(
        &self,
        slots: Range<usize>,
        _: &mut dyn std::any::Any,
        run: &mut ChunkRun<'_>,
        names: &[Option<Arc<str>>],
    ) {
        let depth = run.depth_base;
        for slot in slots {
            let stage = crate::unit::stage_name(names, slot);
            for row in run.start..run.start + run.len {
                let mut s = run.state(row);
                let sees = if slot == 0 { s.is_live() } else { s.reaches_after(depth) };
                if sees {
                    s.fail(depth);
                    run.set_state(row, s);
                    let message = "an async stage cannot run synchronously: use Pipeline::run_async".into();
                    run.errors.push((row, StageError { stage: stage.clone(), message, panicked: false }));
                }
            }
        }
        run.live = LiveRows::UNKNOWN;
    }

    fn check(&self, schema: &crate::schema::Schema) -> Result<()> {
        let meta = self.step.meta();
        if self.step.chunk_rows() == Some(0) {
            return Err(Error::Config(format!("async stage `{}`: chunk_rows must be at least 1", meta.name)));
        }
        if self.step.timeout() == Some(Duration::ZERO) {
            return Err(Error::Config(format!(
                "async stage `{}`: a zero timeout fails every row",
                meta.name
            )));
        }
        if self.step.chunk_rows().is_some() {
            if let Some(f) = meta.uses.iter().find(|u| u.cold && u.write) {
                let field = schema.fields().get(f.index()).map_or("?", |i| i.name.as_str());
                return Err(Error::Config(format!(
                    "async stage `{}` writes cold field `{field}`: its rows cannot be split into chunks in \
                     flight together; leave chunk_rows unset",
                    meta.name
                )));
            }
        }
        Ok(())
    }

    fn as_async(&self) -> Option<&dyn AsyncStep> {
        Some(&*self.step)
    }
}

// ---------------------------------------------------------------------------
// Running a batch.

impl Pipeline {
    /// Runs every stage over `batch` in onion order, awaiting async stages
    /// (see [`stage::fetch`](crate::stage::fetch)): sync segments run as in
    /// [`run`](Pipeline::run) (fused, chunked, spread over the pool for large
    /// batches) on the thread that polls; each async stage's futures (one
    /// per batch, or per chunk) are awaited in between. Works on any
    /// executor; the core needs no runtime. A pipeline without async stages
    /// runs exactly as `run` does.
    ///
    /// Dropping the future part-way leaves the batch part-processed (no row
    /// is lost, stages after the cut did not run).
    ///
    /// ```
    /// use mware::prelude::*;
    /// use mware::stage::AsyncRows;
    ///
    /// let mut s = SchemaBuilder::new();
    /// let x = s.hot::<u32>("x");
    /// let schema = s.build()?;
    /// let check = stage::fetch("check", Read(x), |x: &[u32], mut rows: AsyncRows<'_>| Box::pin(async move {
    ///     for i in rows.iter().collect::<Vec<_>>() {
    ///         if x[i] == 0 { rows.reject(i, 404) }
    ///     }
    ///     Ok(())
    /// })).rejects();
    /// let pipeline = Pipeline::builder(&schema).before(check).build()?;
    /// let mut batch = Batch::new(&schema);
    /// batch.resize(2);
    /// batch.column_mut(x)?[0] = 1;
    /// mware::block_on(pipeline.run_async(&mut batch))?;
    /// assert_eq!(batch.status(1), Some(404));
    /// # Ok::<(), mware::Error>(())
    /// ```
    // Spelled out (not `async fn`) so the future is promised `Send`.
    #[allow(clippy::manual_async_fn)]
    pub fn run_async<'p>(
        &'p self,
        batch: &'p mut Batch,
    ) -> impl Future<Output = Result<RunReport>> + Send + 'p {
        async move {
            if batch.schema() != &self.schema {
                return Err(Error::SchemaMismatch);
            }
            Ok(drive(self, batch, None).await)
        }
    }
}

/// The async step of a segment, if the segment is an async stage's (the
/// plan gives each one a segment of its own).
fn async_step<'p>(
    p: &'p Pipeline,
    plan: &'p Plan,
    seg: &Segment,
) -> Option<(&'p dyn AsyncStep, &'p Step, usize)> {
    if !seg.barrier || seg.groups.len() != 1 {
        return None;
    }
    let gi = seg.groups.start;
    let g = &plan.groups[gi];
    let step = &plan.steps[g.steps.start];
    if step.meta.kind != Kind::Async {
        return None;
    }
    p.units[g.unit].as_async().map(|a| (a, step, gi))
}

/// Runs `batch` through `p`, segment by segment, awaiting async segments.
/// In turn (`turn` set), each sync segment first awaits its ordered groups'
/// turns without blocking the thread, so the segment then never blocks on
/// them (see `crate::turns` for why this cannot deadlock).
pub(crate) async fn drive<'p>(p: &'p Pipeline, batch: &mut Batch, turn: Option<Turn<'p>>) -> RunReport {
    let mut run = Run::start(p, batch, turn, true);
    let plan = run.plan();
    // Should this future be dropped part-way (cancelled, or unwound by a
    // panic outside any stage), later runs must not wait for it: the guard
    // gives up its turns without blocking.
    let guard = turn.map(|t| crate::turns::AbandonOnDrop { turns: t.turns, index: t.index, plan });
    for (s, seg) in plan.segments.iter().enumerate() {
        if let Some((step, meta, gi)) = async_step(p, plan, seg) {
            run_async_segment(&mut run, step, meta, gi).await;
            continue;
        }
        if let Some(t) = turn {
            for gi in seg.groups.clone().filter(|&gi| plan.groups[gi].ordered) {
                t.turns.turn(gi, t.index).await;
            }
        }
        run.run_segment(s);
    }
    if let Some(g) = guard {
        std::mem::forget(g);
    }
    run.finish()
}

/// A chunk of an async segment: first row, rows, and where its selection
/// sits in the segment's selection vector (`None`: every row).
type ChunkRows = (usize, usize, Option<Range<usize>>);

fn selection<'s>(c: &ChunkRows, sel: &'s [u32]) -> Selection<'s> {
    match &c.2 {
        None => Selection::Dense(c.1),
        Some(r) => Selection::Sparse(&sel[r.clone()]),
    }
}

/// How one chunk's future ended.
enum ChunkEnd {
    Done,
    Failed(String),
    Panicked(String),
    TimedOut(Duration),
}

/// Runs one async stage's segment: a future per chunk with visible rows, all
/// in flight together; then failed chunks' rows are marked and errors filed.
async fn run_async_segment(run: &mut Run<'_, '_>, step: &dyn AsyncStep, meta: &Step, gi: usize) {
    let t0 = Instant::now();
    let mut d = run.detached(meta.unit);
    let len = d.table.len;
    let depth = meta.depth as u16;
    let visible = |s: &RowState| if meta.after { s.reaches_after(depth) } else { s.is_live() };
    let chunk = step.chunk_rows().unwrap_or(len).clamp(1, len.max(1));
    let name = meta.meta.name.clone();

    // Every chunk's selection first (chunk-relative indices, in one vector),
    // so the futures can borrow them.
    let mut sel: Vec<u32> = Vec::new();
    let mut chunks: Vec<ChunkRows> = Vec::new();
    {
        // SAFETY: the run is suspended in this segment: no worker touches
        // the batch; this shared view is dropped before the futures start.
        let states: &[RowState] = unsafe { d.table.states_mut(0, len) };
        for (k, c) in states.chunks(chunk).enumerate() {
            let count = c.iter().filter(|s| visible(s)).count();
            if count == 0 {
                continue;
            }
            let range = (count < c.len()).then(|| {
                let from = sel.len();
                sel.extend((0..c.len() as u32).zip(c).filter(|(_, s)| visible(s)).map(|(i, _)| i));
                from..sel.len()
            });
            chunks.push((k * chunk, c.len(), range));
        }
    }
    let mut errors: Vec<Vec<(usize, StageError)>> = chunks.iter().map(|_| Vec::new()).collect();
    // SAFETY: as above; the exclusive view is split into disjoint chunks,
    // each moved into its own future, and reborrowed only after every
    // future has been dropped.
    let states: &mut [RowState] = unsafe { d.table.states_mut(0, len) };
    let ends = {
        let mut futures = Vec::with_capacity(chunks.len());
        let mut rest = &mut *states;
        let mut at = 0;
        for (c, errs) in chunks.iter().zip(errors.iter_mut()) {
            let (skip, tail) = rest.split_at_mut(c.0 - at);
            let _ = skip;
            let (mine, tail) = tail.split_at_mut(c.1);
            rest = tail;
            at = c.0 + c.1;
            let rows = AsyncRows {
                states: mine,
                selection: selection(c, &sel),
                depth,
                first_row: c.0,
                stage: &name,
                errors: errs,
            };
            let table = &d.table;
            // SAFETY: `table` is the batch's, suspended in this segment; the
            // chunks are disjoint; the futures are all dropped before this
            // block ends, and nothing else touches the batch meanwhile (the
            // run holds it). A cold field this stage writes cannot be split
            // into several chunks (checked when the pipeline was built).
            let started = catch_unwind(AssertUnwindSafe(|| unsafe { step.start(table, c.0, rows) }));
            d.report.futures += 1;
            futures.push(Guarded::new(started, step.timeout()));
        }
        JoinAll::new(futures).await
    };

    let prof = d.stats.is_some();
    for ((c, errs), end) in chunks.iter().zip(errors.iter_mut()).zip(ends) {
        let rows: Vec<usize> = match selection(c, &sel) {
            Selection::Dense(n) => (c.0..c.0 + n).collect(),
            Selection::Sparse(s) => s.iter().map(|&i| c.0 + i as usize).collect(),
        };
        let failure = match end {
            ChunkEnd::Done => None,
            ChunkEnd::Failed(m) => Some((m, false)),
            ChunkEnd::Panicked(m) => Some((m, true)),
            ChunkEnd::TimedOut(t) => Some((format!("timed out after {t:?}"), false)),
        };
        if let Some((message, panicked)) = failure {
            // Which rows the future finished is unknown: every row it was
            // given fails, superseding errors it reported for them.
            errs.clear();
            for &r in &rows {
                states[r].fail(depth);
                errs.push((r, StageError { stage: name.clone(), message: message.clone(), panicked }));
            }
        }
        if prof {
            // The rows it saw were live (or stopped deeper): a row stopped
            // at its depth now was stopped by it.
            let stat = &mut d.stats.as_deref_mut().expect("profiling")[meta.slot];
            for &r in &rows {
                let s = states[r];
                if s.stop_depth() == Some(depth as usize) {
                    if s.is_failed() { stat.failed += 1 } else { stat.rejected += 1 }
                }
            }
        }
        for (r, e) in errs.drain(..) {
            d.errors.insert(r, e);
        }
    }
    d.report.chunks += chunks.len();
    if let Some(times) = d.group_time {
        let t = t0.elapsed();
        times[gi] += t;
        d.report.segments.push(t);
    }
}

/// A chunk's future with its deadline, a panic inside it caught.
struct Guarded<'a> {
    future: Option<BoxFuture<'a, AsyncResult>>,
    /// Set when starting the future panicked.
    early: Option<ChunkEnd>,
    sleep: Option<(Sleep, Duration)>,
}

impl<'a> Guarded<'a> {
    fn new(started: std::thread::Result<BoxFuture<'a, AsyncResult>>, timeout: Option<Duration>) -> Self {
        match started {
            Ok(f) => Guarded { future: Some(f), early: None, sleep: timeout.map(|t| (Sleep::new(t), t)) },
            Err(p) => {
                Guarded { future: None, early: Some(ChunkEnd::Panicked(panic_message(&*p))), sleep: None }
            }
        }
    }

    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<ChunkEnd> {
        if let Some(end) = self.early.take() {
            return Poll::Ready(end);
        }
        let Some(future) = self.future.as_mut() else { return Poll::Ready(ChunkEnd::Done) };
        let end = match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(Ok(()))) => Some(ChunkEnd::Done),
            Ok(Poll::Ready(Err(e))) => Some(ChunkEnd::Failed(e.to_string())),
            Ok(Poll::Pending) => None,
            Err(p) => Some(ChunkEnd::Panicked(panic_message(&*p))),
        };
        let end = end.or_else(|| {
            let (sleep, t) = self.sleep.as_mut()?;
            Pin::new(sleep).poll(cx).is_ready().then_some(ChunkEnd::TimedOut(*t))
        });
        match end {
            Some(end) => {
                // Dropped now: the chunk's borrows end before it is marked.
                self.future = None;
                self.sleep = None;
                Poll::Ready(end)
            }
            None => Poll::Pending,
        }
    }
}

/// Awaits every chunk future of a segment, polling the unfinished ones on
/// each wake-up (a segment has one future per chunk: a few).
struct JoinAll<'a> {
    futures: Vec<Guarded<'a>>,
    ends: Vec<Option<ChunkEnd>>,
}

impl<'a> JoinAll<'a> {
    fn new(futures: Vec<Guarded<'a>>) -> Self {
        let ends = futures.iter().map(|_| None).collect();
        JoinAll { futures, ends }
    }
}

impl Future for JoinAll<'_> {
    type Output = Vec<ChunkEnd>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<ChunkEnd>> {
        let this = self.get_mut();
        let mut pending = false;
        for (f, end) in this.futures.iter_mut().zip(&mut this.ends) {
            if end.is_none() {
                match f.poll_end(cx) {
                    Poll::Ready(e) => *end = Some(e),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        this.futures.clear();
        Poll::Ready(this.ends.drain(..).map(|e| e.expect("every future ended")).collect())
    }
}

// ---------------------------------------------------------------------------
// Deadlines: one lazily started timer thread.

/// Pending deadlines, earliest first, each with the waker to call.
struct Timer {
    wakers: Mutex<BTreeMap<(Instant, u64), Waker>>,
    changed: Condvar,
    next_id: AtomicU64,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            wakers: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            next_id: AtomicU64::new(0),
        }));
        std::thread::Builder::new()
            .name("mware-timer".into())
            .spawn(move || timer.serve())
            .expect("cannot start the mware timer thread");
        timer
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Timer {
    /// Wakes each deadline's waker once it has passed; sleeps until the
    /// earliest one (or a new earlier one) otherwise.
    fn serve(&self) {
        let mut map = lock(&self.wakers);
        let mut due = Vec::new();
        loop {
            let now = Instant::now();
            while let Some(entry) = map.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                drop(map);
                due.drain(..).for_each(Waker::wake);
                map = lock(&self.wakers);
                continue;
            }
            map = match map.first_key_value().map(|(k, _)| k.0) {
                Some(at) => self.changed.wait_timeout(map, at - now).unwrap_or_else(|e| e.into_inner()).0,
                None => self.changed.wait(map).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// A future ready once `deadline` has passed.
pub(crate) struct Sleep {
    deadline: Instant,
    key: Option<(Instant, u64)>,
}

impl Sleep {
    pub(crate) fn new(after: Duration) -> Sleep {
        Sleep { deadline: Instant::now() + after, key: None }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let t = timer();
        let mut map = lock(&t.wakers);
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = (self.deadline, t.next_id.fetch_add(1, Ordering::Relaxed));
                self.key = Some(k);
                k
            }
        };
        let earliest = map.first_key_value().is_none_or(|(k, _)| key <= *k);
        match map.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => w.clone_from(cx.waker()),
            None => {
                map.insert(key, cx.waker().clone());
            }
        }
        drop(map);
        if earliest {
            t.changed.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&timer().wakers).remove(&key);
        }
    }
}

// ---------------------------------------------------------------------------
// A minimal executor for blocking callers.

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the calling thread, parking it while the
/// future waits: for blocking callers (tests, the blocking
/// [`StreamRunner`](crate::stream::StreamRunner), programs without a
/// runtime). Futures that need a specific runtime (tokio's I/O or timers)
/// must be awaited inside that runtime instead.
///
/// ```
/// assert_eq!(mware::block_on(async { 40 + 2 }), 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
