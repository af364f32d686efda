//! Building a pipeline: middleware registration in onion order, validation,
//! and compilation into plans.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::access::Access;
use crate::adapt::ThreadChoice;
use crate::batch::Batch;
use crate::chain::{Chain, End, Layers, Then};
use crate::control::MAX_DEPTH;
use crate::error::{Error, Result};
use crate::exec::{ScratchPool, Threads};
use crate::plan::{Layout, Plan};
use crate::report::RunReport;
use crate::schema::{Schema, Storage};
use crate::stage::{ChunkFn, ChunkStage, Kind, RowFn, RowStage, StatePolicy};
use crate::unit::{ChunkLayer, Unit};

/// A stage that can be registered on its own: any row stage (its own pass,
/// or fused in a [`chain!`](crate::chain!)) or chunk stage.
pub trait Stage: Sized {
    #[doc(hidden)]
    fn into_unit(self, after: bool) -> Box<dyn Unit>;
}

impl<A, P, F> Stage for RowFn<A, P, F>
where
    RowFn<A, P, F>: RowStage,
{
    fn into_unit(self, after: bool) -> Box<dyn Unit> {
        if after {
            Box::new(Chain::new(Then(crate::chain::after(self), End)))
        } else {
            Box::new(Chain::new(Then(crate::chain::before(self), End)))
        }
    }
}

impl<A, P, F> Stage for ChunkFn<A, P, F>
where
    A: Access,
    P: StatePolicy,
    ChunkFn<A, P, F>: ChunkStage,
{
    fn into_unit(self, after: bool) -> Box<dyn Unit> {
        if after {
            Box::new(ChunkLayer::new::<Self, Self>(None, Some(self)))
        } else {
            Box::new(ChunkLayer::new::<Self, Self>(Some(self), None))
        }
    }
}

/// Registers middleware outermost first, then builds a [`Pipeline`].
///
/// Every call adds one middleware layer inside the ones before it (a chain
/// adds several). The pipeline runs before-stages outermost first, then
/// after-stages innermost first; a row rejected or failed at depth `d` skips
/// every later before-stage, and only the after-stages of layers outside `d`
/// see it.
pub struct PipelineBuilder {
    schema: Schema,
    units: Vec<Box<dyn Unit>>,
    chunk_rows: Option<usize>,
    threads: Threads,
    min_parallel_work: usize,
    profile: bool,
    adapt: bool,
}

/// Rows × stages below which a run stays on the calling thread: on the
/// two cores here, splitting fewer than about 50 K row-steps over both
/// always cost more than it saved (`cargo bench --bench gateway8_parallel
/// -- threshold`, BENCHMARKS.md §2).
pub const DEFAULT_MIN_PARALLEL_WORK: usize = 64 * 1024;

impl PipelineBuilder {
    /// Adds a middleware with only a before-stage.
    pub fn before(mut self, stage: impl Stage) -> Self {
        self.units.push(stage.into_unit(false));
        self
    }

    /// Adds the handler: the innermost before-stage. (Any stage can be the
    /// handler; this name documents intent.)
    pub fn handler(self, stage: impl Stage) -> Self {
        self.before(stage)
    }

    /// Adds a middleware with only an after-stage.
    pub fn after(mut self, stage: impl Stage) -> Self {
        self.units.push(stage.into_unit(true));
        self
    }

    /// Adds a middleware with a before- and an after-stage (row stages).
    pub fn around<B: RowStage, A: RowStage>(mut self, before: B, after: A) -> Self {
        self.units.push(Box::new(Chain::new(Then(crate::chain::around(before, after), End))));
        self
    }

    /// Adds a middleware with a before- and an after-stage (chunk stages).
    pub fn around_chunks<B: ChunkStage, A: ChunkStage>(mut self, before: B, after: A) -> Self {
        self.units.push(Box::new(ChunkLayer::new(Some(before), Some(after))));
        self
    }

    /// Adds a static chain: its layers, fused into one loop body.
    pub fn chain<L: Layers>(mut self, chain: Chain<L>) -> Self {
        self.units.push(Box::new(chain));
        self
    }

    /// Rows per chunk (default: sized from the bytes the stages touch per
    /// row so a chunk's columns stay in L2, between 1,024 and 16,384).
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = Some(rows);
        self
    }

    /// Threads to run on: `1` keeps every run on the calling thread, `0`
    /// (the default) uses every thread of rayon's global pool, `n` uses `n`
    /// workers of the global pool.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = match threads {
            1 => Threads::Inline,
            0 => Threads::Global(None),
            n => Threads::Global(Some(n)),
        };
        self
    }

    /// Runs parallel segments on the embedder's own pool.
    ///
    /// A run called from outside the pool enters it and waits: a worker
    /// wakes to start and the caller wakes at the end. An embedder that
    /// runs batch after batch saves that by calling `run` from a thread of
    /// the pool (inside `pool.install`): on the two cores of BENCHMARKS.md
    /// §2 the stateless chain on two threads went from 1.09–1.85× to
    /// 1.46–1.99× the speed of one thread.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mware::prelude::*;
    ///
    /// let mut s = SchemaBuilder::new();
    /// let x = s.hot::<u64>("x");
    /// let schema = s.build()?;
    /// let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    /// let pipeline = Pipeline::builder(&schema)
    ///     .before(stage::parallel("inc", Write(x), |x: &mut u64, _: &mut RowCtl| *x += 1))
    ///     .thread_pool(pool.clone())
    ///     .build()?;
    /// let mut batches: Vec<Batch> = (0..4).map(|_| Batch::new(&schema)).collect();
    /// pool.install(|| -> mware::Result<()> {
    ///     for batch in &mut batches {
    ///         batch.resize(100_000);
    ///         pipeline.run(batch)?;
    ///     }
    ///     Ok(())
    /// })?;
    /// assert!(batches.iter().all(|b| b.column(x).unwrap().iter().all(|&v| v == 1)));
    /// # Ok::<(), mware::Error>(())
    /// ```
    pub fn thread_pool(mut self, pool: Arc<rayon::ThreadPool>) -> Self {
        self.threads = Threads::Pool(pool);
        self
    }

    /// Rows × stages below which a run stays on the calling thread.
    pub fn min_parallel_work(mut self, work: usize) -> Self {
        self.min_parallel_work = work;
        self
    }

    /// Lets each run that could split over the pool choose from measured
    /// times whether to (default off). Runs are sorted into size classes
    /// (doublings of rows × stages from `min_parallel_work` up); a class
    /// times its first run on one thread and its second split, then takes
    /// the way with the lower time per row and times the other again every
    /// 32nd run. Results are the same either way; [`RunReport::threads`]
    /// tells which ran. Worth it where splitting may not pay: a chain cut
    /// at a sequential stage, threads that are not free cores.
    ///
    /// ```
    /// # use mware::prelude::*;
    /// # let mut s = SchemaBuilder::new();
    /// # let x = s.hot::<u64>("x");
    /// # let schema = s.build()?;
    /// let pipeline = Pipeline::builder(&schema)
    ///     .before(stage::parallel("inc", Write(x), |x: &mut u64, _: &mut RowCtl| *x += 1))
    ///     .threads(2)
    ///     .chunk_rows(1024)
    ///     .min_parallel_work(0)
    ///     .adapt_threads(true)
    ///     .build()?;
    /// let mut batch = Batch::new(&schema);
    /// batch.resize(10_000);
    /// let first = pipeline.run(&mut batch)?;
    /// let second = pipeline.run(&mut batch)?;
    /// assert_eq!((first.threads, second.threads), (1, 2)); // each way timed once
    /// assert!(batch.column(x)?.iter().all(|&v| v == 2));
    /// # Ok::<(), mware::Error>(())
    /// ```
    ///
    /// [`RunReport::threads`]: crate::RunReport::threads
    pub fn adapt_threads(mut self, on: bool) -> Self {
        self.adapt = on;
        self
    }

    /// Starts with profiling on (see [`Pipeline::set_profiling`]).
    pub fn profile(mut self, on: bool) -> Self {
        self.profile = on;
        self
    }

    /// Validates the pipeline and compiles its plans.
    pub fn build(self) -> Result<Pipeline> {
        // Units without stages (an empty `chain![]`) do not count.
        if self.units.iter().all(|u| u.metas().iter().flatten().all(Option::is_none)) {
            return Err(Error::EmptyPipeline);
        }
        if self.chunk_rows == Some(0) {
            return Err(Error::Config("chunk_rows must be at least 1".into()));
        }
        let depth: usize = self.units.iter().map(|u| u.layers()).sum();
        if depth > MAX_DEPTH {
            return Err(Error::Config(format!("{depth} layers exceed the maximum depth {MAX_DEPTH}")));
        }
        let mut names = HashSet::new();
        for unit in &self.units {
            unit.check(&self.schema)?;
            for meta in unit.metas().into_iter().flatten().flatten() {
                if !names.insert(meta.name.clone()) {
                    return Err(Error::DuplicateStage { stage: meta.name.to_string() });
                }
                validate_access(&self.schema, &meta.name, &meta.uses)?;
            }
        }
        let plan = |layout| Plan::build(&self.schema, &self.units, self.chunk_rows, layout);
        let (serial, parallel, turn) = (plan(Layout::Serial), plan(Layout::Parallel), plan(Layout::InTurn));
        let mut bases = Vec::with_capacity(self.units.len());
        let mut names_per_unit = Vec::with_capacity(self.units.len());
        let mut depth = 0u16;
        for unit in &self.units {
            bases.push(depth);
            depth += unit.layers() as u16;
            let metas = unit.metas();
            let n = metas.len();
            let mut slots = vec![None; 2 * n];
            for (level, [b, a]) in metas.into_iter().enumerate() {
                slots[level] = b.map(|m| m.name);
                slots[2 * n - 1 - level] = a.map(|m| m.name);
            }
            names_per_unit.push(slots);
        }
        let mut written_hot: Vec<usize> = serial
            .steps
            .iter()
            .flat_map(|s| &s.meta.uses)
            .filter(|u| u.write && !u.cold)
            .map(|u| self.schema.fields()[u.index()].slot)
            .collect();
        written_hot.sort_unstable();
        written_hot.dedup();
        let async_stage =
            serial.steps.iter().find(|s| s.meta.kind == Kind::Async).map(|s| s.meta.name.clone());
        Ok(Pipeline {
            async_stage,
            written_hot,
            schema: self.schema,
            units: self.units,
            bases,
            names: names_per_unit,
            serial,
            parallel,
            turn,
            threads: self.threads,
            min_parallel_work: self.min_parallel_work,
            scratch: ScratchPool::default(),
            profiling: AtomicBool::new(self.profile),
            adapt: self.adapt.then(ThreadChoice::default),
        })
    }
}

fn validate_access(schema: &Schema, stage: &str, uses: &[crate::access::FieldUse]) -> Result<()> {
    for (i, u) in uses.iter().enumerate() {
        let info = schema.check(u.field, stage)?;
        let is_cold = matches!(info.storage, Storage::Cold);
        if is_cold != u.cold {
            return Err(Error::StorageMismatch {
                stage: stage.to_string(),
                field: info.name.clone(),
                expected: if u.cold { "cold" } else { "hot" },
            });
        }
        if uses[..i].iter().any(|o| o.field == u.field && (o.write || u.write)) {
            return Err(Error::AliasedAccess { stage: stage.to_string(), field: info.name.clone() });
        }
    }
    Ok(())
}

/// A built pipeline: validated middleware compiled into plans. Run it on
/// batches of its schema with [`run`](Pipeline::run).
///
/// `run` takes `&self`: one pipeline may serve several threads; sequential
/// stages then see the batches in the order their runs take the stage's
/// lock chunk by chunk, so callers that need submission order across batches
/// run them one at a time (or use a stream runner).
pub struct Pipeline {
    pub(crate) schema: Schema,
    /// Hot slots some stage writes: made owned before each run.
    pub(crate) written_hot: Vec<usize>,
    pub(crate) units: Vec<Box<dyn Unit>>,
    pub(crate) bases: Vec<u16>,
    pub(crate) names: Vec<Vec<Option<Arc<str>>>>,
    pub(crate) serial: Plan,
    pub(crate) parallel: Plan,
    /// The plan of a run in turn (a stream's runs): the parallel plan with
    /// each ordered span joined to the steps after it.
    pub(crate) turn: Plan,
    pub(crate) threads: Threads,
    pub(crate) min_parallel_work: usize,
    pub(crate) scratch: ScratchPool,
    pub(crate) profiling: AtomicBool,
    /// Measured times behind the choice to split, with adaptive threads.
    pub(crate) adapt: Option<ThreadChoice>,
    /// The first async stage, if any: `run` refuses the pipeline.
    pub(crate) async_stage: Option<Arc<str>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("stages", &self.serial.steps.len()).finish()
    }
}

impl Pipeline {
    /// Starts a pipeline over `schema`.
    pub fn builder(schema: &Schema) -> PipelineBuilder {
        PipelineBuilder {
            schema: schema.clone(),
            units: Vec::new(),
            chunk_rows: None,
            threads: Threads::Global(None),
            min_parallel_work: DEFAULT_MIN_PARALLEL_WORK,
            profile: false,
            adapt: false,
        }
    }

    /// The schema batches must have.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The single-threaded plan.
    pub fn plan(&self) -> &Plan {
        &self.serial
    }

    /// The plan used when a run spreads over threads.
    pub fn parallel_plan(&self) -> &Plan {
        &self.parallel
    }

    /// The plan a stream's runs follow when they take turns at sequential
    /// stages (see [Pipelining](crate::stream#pipelining)): the parallel
    /// plan with each fused loop cut only where its first sequential stage
    /// begins. The group times of those runs' reports follow its groups.
    pub fn turn_plan(&self) -> &Plan {
        &self.turn
    }

    /// Both plans as text.
    pub fn explain(&self) -> String {
        let mut out = self.serial.explain(&self.schema);
        if self.threads.may_be_parallel() {
            out.push('\n');
            out.push_str(&self.parallel.explain(&self.schema));
        }
        out
    }

    /// Turns per-stage profiling on or off. On, each run counts the rows
    /// each stage rejects or fails (where it stops them: nothing per row it
    /// passes), derives the rows each stage saw from those, and reads the
    /// clock once per fused group per chunk;
    /// [`RunReport::stages`](crate::RunReport::stages) is filled. Off, the
    /// counters' pointer is null and the clock is never read.
    pub fn set_profiling(&self, on: bool) {
        self.profiling.store(on, Ordering::Relaxed);
    }

    /// Whether the pipeline holds an async stage (and so must be run with
    /// [`run_async`](Pipeline::run_async)).
    pub fn is_async(&self) -> bool {
        self.async_stage.is_some()
    }

    /// Whether profiling is on.
    pub fn profiling(&self) -> bool {
        self.profiling.load(Ordering::Relaxed)
    }

    /// Runs every stage over `batch` in onion order. Rows rejected or failed
    /// stay in the batch, marked; stage panics fail only their rows.
    pub fn run(&self, batch: &mut Batch) -> Result<RunReport> {
        if batch.schema() != &self.schema {
            return Err(Error::SchemaMismatch);
        }
        if let Some(stage) = &self.async_stage {
            return Err(Error::AsyncStage { stage: stage.to_string() });
        }
        Ok(crate::exec::run(self, batch))
    }
}
