//! The timely operators: a built [`Pipeline`] as one stage of a dataflow
//! ([`run_pipeline`]) and a fold of every worker's records at worker 0
//! ([`fold_at_leader`]).

use std::collections::BTreeMap;

use ::timely::ExchangeData;
use ::timely::container::CapacityContainerBuilder;
use ::timely::dataflow::StreamVec;
use ::timely::dataflow::channels::pact::Exchange;
use ::timely::dataflow::operators::Capability;
use ::timely::dataflow::operators::generic::Operator;
use ::timely::order::TotalOrder;
use ::timely::progress::Timestamp;

use crate::{Batch, Pipeline};

/// Emptied epoch buffers an operator keeps for reuse.
const MAX_SPARE: usize = 4;

/// How rows of a timely stream become an mware batch and come back out.
///
/// A codec says which worker owns a row ([`key`](RowCodec::key): rows with
/// equal keys meet on one worker, so a sequential stage's per-key state is
/// complete there), where the row stands in the global order
/// ([`order`](RowCodec::order): rows of one epoch run sorted by it), how rows
/// fill a batch and what a processed batch emits.
///
/// ```
/// use mware::prelude::*;
/// use mware::timely::RowCodec;
///
/// /// Rows are `(position, user, amount)`; the batch has the same columns.
/// struct Spend {
///     user: Field<u64>,
///     amount: Field<u32>,
/// }
///
/// impl RowCodec for Spend {
///     type Row = (u64, u64, u32);
///     type Out = (u64, u16);
///     fn key(row: &Self::Row) -> u64 {
///         row.1
///     }
///     fn order(row: &Self::Row) -> u64 {
///         row.0
///     }
///     fn fill(&mut self, batch: &mut Batch, rows: &[Self::Row]) -> mware::Result<()> {
///         for (dst, row) in batch.column_mut(self.user)?.iter_mut().zip(rows) {
///             *dst = row.1;
///         }
///         for (dst, row) in batch.column_mut(self.amount)?.iter_mut().zip(rows) {
///             *dst = row.2;
///         }
///         Ok(())
///     }
///     fn emit(&mut self, batch: &Batch, rows: &[Self::Row], out: &mut Vec<Self::Out>) -> mware::Result<()> {
///         out.extend(rows.iter().zip(batch.states()).map(|(row, s)| (row.0, s.status())));
///         Ok(())
///     }
/// }
/// ```
pub trait RowCodec: 'static {
    /// One row as a timely record (exchanged between workers and
    /// processes, so serialisable).
    type Row: ExchangeData + Clone;
    /// What a processed batch emits: the rows' results, a reduction's
    /// partial, or both.
    type Out: Clone + 'static;

    /// The row's key: rows with equal keys are processed by one worker
    /// (the exchange sends a row to worker `key % workers`, or
    /// `key & (workers - 1)` when the count is a power of two).
    fn key(row: &Self::Row) -> u64;

    /// The row's position in the global order. Within an epoch a worker runs
    /// its rows sorted by it; epochs run in timestamp order.
    fn order(row: &Self::Row) -> u64;

    /// Writes `rows` into `batch`, which the operator has cleared and
    /// resized to `rows.len()` (every column zeroed, every row live).
    fn fill(&mut self, batch: &mut Batch, rows: &[Self::Row]) -> crate::Result<()>;

    /// Reads the processed `batch` (row `i` came from `rows[i]`) and pushes
    /// what it produces to `out`.
    fn emit(&mut self, batch: &Batch, rows: &[Self::Row], out: &mut Vec<Self::Out>) -> crate::Result<()>;

    /// Called once when the input is exhausted, after the last batch: a
    /// place to emit final records (a reduction's total, say). The default
    /// emits nothing.
    fn finish(&mut self, out: &mut Vec<Self::Out>) -> crate::Result<()> {
        let _ = out;
        Ok(())
    }
}

/// Runs `pipeline` as one operator of a timely dataflow over a stream of row
/// records, and returns the stream of what `codec` emits.
///
/// Rows are exchanged by [`RowCodec::key`] so that every row of a key
/// reaches the same worker; the worker stashes them under their timestamp
/// (epoch) and, once the input frontier has passed the epoch, runs them
/// sorted by [`RowCodec::order`] through its own `pipeline`, in batches of
/// at most `batch_rows` rows, epochs in timestamp order. A sequential stage
/// whose state is per key therefore sees each key's rows exactly once and in
/// global order, as in a single-process run. Output records carry the epoch
/// of the rows they came from; those of [`RowCodec::finish`] carry the last
/// epoch the input reached.
///
/// Each worker passes its own pipeline (build it inside the worker closure):
/// pipelines never cross threads or processes, rows do. A pipeline here
/// usually runs with `threads(1)`: the timely workers are the parallelism.
///
/// # Panics
///
/// A failing [`RowCodec::fill`], [`RowCodec::emit`] or
/// [`RowCodec::finish`], or a run refused by the pipeline (a batch of the
/// wrong schema), panics the worker, which ends the whole computation (see
/// the module's limits). Rows that a stage rejects or fails are not errors:
/// they come back marked in the batch, as in any run.
pub fn run_pipeline<'scope, T, C>(
    stream: StreamVec<'scope, T, C::Row>,
    name: &str,
    pipeline: Pipeline,
    mut codec: C,
    batch_rows: usize,
) -> StreamVec<'scope, T, C::Out>
where
    T: Timestamp + TotalOrder,
    C: RowCodec,
{
    let worker = stream.scope().index();
    let label = format!("mware operator `{name}` on worker {worker}");
    let batch_rows = batch_rows.max(1);
    let pact = Exchange::new(|row: &C::Row| C::key(row));
    stream.unary_frontier::<CapacityContainerBuilder<Vec<C::Out>>, _, _, _>(pact, name, move |hold, _info| {
        // `hold` keeps the output open for `finish`; it follows the input
        // frontier, so it never delays downstream progress.
        let mut hold = Some(hold);
        let mut stash: BTreeMap<T, (Capability<T>, Vec<C::Row>)> = BTreeMap::new();
        // Emptied row buffers, reused by later epochs: no allocation (and no
        // fresh pages) per epoch in steady state.
        let mut spare: Vec<Vec<C::Row>> = Vec::new();
        let mut batch = Batch::new(pipeline.schema());
        let mut out: Vec<C::Out> = Vec::new();
        let check = move |what: &str, r: crate::Result<()>| {
            if let Err(e) = r {
                panic!("{label}: {what}: {e}");
            }
        };
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let time = cap.least().expect("rows must be sent under a timestamp (an epoch)").clone();
                let slot = stash.entry(time).or_insert_with(|| {
                    let held = cap.retain_least(output.output_index()).expect("a timestamped message");
                    (held, spare.pop().unwrap_or_default())
                });
                for container in data {
                    slot.1.append(container);
                }
            });
            // Epochs are totally ordered: once the first one is not ready,
            // no later one is.
            while let Some(entry) = stash.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (cap, mut rows) = entry.remove();
                // Rows of an epoch usually arrive in order (one sender fed
                // them in order): then checking is all it costs.
                if !rows.is_sorted_by_key(C::order) {
                    rows.sort_by_key(C::order);
                }
                let mut session = output.session(&cap);
                for chunk in rows.chunks(batch_rows) {
                    batch.clear();
                    batch.resize(chunk.len());
                    check("fill", codec.fill(&mut batch, chunk));
                    check("run", pipeline.run(&mut batch).map(drop));
                    check("emit", codec.emit(&batch, chunk, &mut out));
                    session.give_iterator(out.drain(..));
                }
                rows.clear();
                if spare.len() < MAX_SPARE {
                    spare.push(rows);
                }
            }
            if frontier.is_empty() {
                if let Some(cap) = hold.take() {
                    check("finish", codec.finish(&mut out));
                    if !out.is_empty() {
                        output.session(&cap).give_iterator(out.drain(..));
                    }
                }
            } else if let (Some(cap), Some(time)) = (hold.as_mut(), frontier.frontier().first()) {
                cap.downgrade(time);
            }
        }
    })
}

/// Folds every record of `stream`, from every worker and process, into one
/// accumulator on worker 0, and emits it once, when the input is exhausted
/// (other workers emit nothing). This is how a reduction's per-worker
/// partials (metrics, checksums) are combined through the dataflow.
///
/// `fold` must not depend on the order records arrive in (records of
/// different workers interleave): adding counters is the usual case.
pub fn fold_at_leader<'scope, T, D, A, F>(
    stream: StreamVec<'scope, T, D>,
    name: &str,
    init: A,
    mut fold: F,
) -> StreamVec<'scope, T, A>
where
    T: Timestamp + TotalOrder,
    D: ExchangeData,
    A: Clone + 'static,
    F: FnMut(&mut A, D) + 'static,
{
    let leader = stream.scope().index() == 0;
    let pact = Exchange::new(|_: &D| 0);
    stream.unary_frontier::<CapacityContainerBuilder<Vec<A>>, _, _, _>(pact, name, move |hold, _info| {
        let mut hold = Some(hold);
        let mut acc = Some(init);
        move |(input, frontier), output| {
            input.for_each(|_, data| {
                if let Some(acc) = acc.as_mut() {
                    data.drain(..).for_each(|d| fold(acc, d));
                }
            });
            if frontier.is_empty() {
                if let (Some(cap), Some(acc), true) = (hold.take(), acc.take(), leader) {
                    output.session(&cap).give(acc);
                }
            } else if let (Some(cap), Some(time)) = (hold.as_mut(), frontier.frontier().first()) {
                cap.downgrade(time);
            }
        }
    })
}
