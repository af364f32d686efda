//! gateway-8 (WORKLOAD.md) on timely dataflow: the row record, its codec,
//! the totals combined across workers, and one worker's whole run.
//!
//! [`run_worker`] builds this dataflow on every worker:
//!
//! ```text
//! input (epoch = batch index; batch b fed by worker b % workers)
//!   └─ run_pipeline: exchange by route, stash per epoch, run the epoch's
//!      rows in row order through the worker's own gateway-8 pipeline
//!        └─ fold_at_leader: per-batch Totals → worker 0 → the checksum
//! ```
//!
//! The quota (stage 5) is per route, and every row of a route meets on the
//! worker that owns the route, in global row order, so the statuses, and
//! hence the checksum, are those of the single-process run.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ::timely::dataflow::operators::vec::Input;
use ::timely::dataflow::operators::{Inspect, Probe};
use ::timely::dataflow::{InputHandleVec, ProbeHandle};
use ::timely::worker::Worker;

use super::operator::{RowCodec, fold_at_leader, run_pipeline};
use crate::Batch;
use crate::gateway8::{
    Args, Checksum, Composition, Fields, GatewayPipeline, Metrics, ROUTES, Request, ts_of,
};
use crate::stage::StateHandle;

/// One gateway-8 request as a timely record:
/// `(row index, user_id, token, route, payload_len)`. The timestamp is
/// derived from the row index ([`ts_of`]).
pub type GatewayRow = (u64, u64, u64, u16, u32);

/// Row `i` of the run for `seed` as a record.
pub fn gateway_row(seed: u64, i: u64) -> GatewayRow {
    let r = Request::generate(seed, i);
    (i, r.user_id, r.token, r.route, r.payload_len)
}

/// Moves [`GatewayRow`]s into a gateway-8 batch and emits, per processed
/// batch, its [`Totals`] as words ([`Totals::to_words`]).
pub struct GatewayCodec {
    fields: Fields,
    metrics: StateHandle<Metrics>,
}

impl GatewayCodec {
    /// A codec for batches of `fields`' schema; `metrics` is the handle of
    /// the worker's pipeline's metrics reduction (read and reset after every
    /// batch, so each batch's partial is emitted exactly once).
    pub fn new(fields: Fields, metrics: StateHandle<Metrics>) -> GatewayCodec {
        GatewayCodec { fields, metrics }
    }
}

impl RowCodec for GatewayCodec {
    type Row = GatewayRow;
    type Out = Vec<u64>;

    fn key(row: &GatewayRow) -> u64 {
        row.3 as u64
    }

    fn order(row: &GatewayRow) -> u64 {
        row.0
    }

    fn fill(&mut self, batch: &mut Batch, rows: &[GatewayRow]) -> crate::Result<()> {
        let f = &self.fields;
        for (d, r) in batch.column_mut(f.user_id)?.iter_mut().zip(rows) {
            *d = r.1;
        }
        for (d, r) in batch.column_mut(f.token)?.iter_mut().zip(rows) {
            *d = r.2;
        }
        for (d, r) in batch.column_mut(f.route)?.iter_mut().zip(rows) {
            *d = r.3;
        }
        for (d, r) in batch.column_mut(f.payload_len)?.iter_mut().zip(rows) {
            *d = r.4;
        }
        for (d, r) in batch.column_mut(f.ts_ns)?.iter_mut().zip(rows) {
            *d = ts_of(r.0);
        }
        Ok(())
    }

    fn emit(&mut self, batch: &Batch, rows: &[GatewayRow], out: &mut Vec<Vec<u64>>) -> crate::Result<()> {
        let mut t = Totals { rows: rows.len() as u64, ..Totals::default() };
        self.fields.add_to(&mut t.sums, batch)?;
        t.metrics = self.metrics.replace(Metrics::default());
        out.push(t.to_words());
        Ok(())
    }
}

/// What a gateway-8 run adds up: the rows seen, the checksum's row sums and
/// the metrics reduction. Partials from every batch of every worker add up
/// to the whole run's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Rows processed.
    pub rows: u64,
    /// The checksum's sums over rows (`status`, `cost`, `score_milli`,
    /// `latency`); its `lat_sum` and `hist` are filled by
    /// [`checksum`](Totals::checksum) from `metrics`.
    pub sums: Checksum,
    /// The metrics reduction (stage 8).
    pub metrics: Metrics,
}

impl Totals {
    /// Length of [`to_words`](Totals::to_words)' encoding.
    pub const WORDS: usize = 5 + 4 + 4 * ROUTES;

    /// The totals as plain words, the form they travel in between workers:
    /// `rows, status, cost, score_milli, latency, lat_sum[4],
    /// hist[class][route]` (class-major).
    pub fn to_words(&self) -> Vec<u64> {
        let s = &self.sums;
        let mut w = Vec::with_capacity(Self::WORDS);
        w.extend([self.rows, s.status, s.cost, s.score_milli, s.latency]);
        w.extend(self.metrics.lat_sum);
        w.extend(self.metrics.hist.iter().flatten());
        w
    }

    /// Adds totals encoded by [`to_words`](Totals::to_words).
    ///
    /// # Panics
    ///
    /// If `words` is not [`Totals::WORDS`] long.
    pub fn add_words(&mut self, words: &[u64]) {
        assert_eq!(words.len(), Self::WORDS, "gateway-8 totals travel as {} words", Self::WORDS);
        let (head, rest) = words.split_at(5);
        let (lat, hist) = rest.split_at(4);
        self.rows += head[0];
        self.sums.status += head[1];
        self.sums.cost += head[2];
        self.sums.score_milli += head[3];
        self.sums.latency += head[4];
        for (a, b) in self.metrics.lat_sum.iter_mut().zip(lat) {
            *a += b;
        }
        for (a, b) in self.metrics.hist.iter_mut().flatten().zip(hist) {
            *a += b;
        }
    }

    /// The WORKLOAD.md checksum of these totals.
    pub fn checksum(&self) -> Checksum {
        let mut c = self.sums;
        c.set_metrics(&self.metrics);
        c
    }
}

/// What worker 0 reports after a cluster run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterRun {
    /// The whole run's totals, from every worker of every process.
    pub totals: Totals,
    /// Workers in the computation (all processes).
    pub workers: usize,
    /// Wall time on worker 0 from feeding the first row until every
    /// worker's totals were combined: input generation, exchange, the
    /// pipelines and the fold.
    pub elapsed: Duration,
}

/// Runs gateway-8 over rows `0 .. args.rows` on this worker's share of a
/// timely computation (uses `args.rows`, `args.batch` and `args.seed`).
///
/// Batch `b` of the run (`args.batch` rows) is epoch `b`, and worker
/// `b % workers` generates and feeds it; rows then move to the worker that
/// owns their route. Every worker builds its own single-threaded gateway-8
/// pipeline. Worker 0 returns the combined result; the others return
/// `None`.
///
/// # Errors
///
/// If the pipeline cannot be built, or if worker 0's totals do not count
/// every row of the run.
pub fn run_worker(worker: &mut Worker, args: &Args) -> Result<Option<ClusterRun>, String> {
    let (schema, fields) = Fields::schema();
    let gw = GatewayPipeline::build(&fields, &schema, args.rows, Composition::Static, |b| b.threads(1))
        .map_err(|e| format!("building gateway-8: {e}"))?;
    let codec = GatewayCodec::new(fields, gw.metrics.clone());
    let (index, workers) = (worker.index(), worker.peers());
    let mut input = InputHandleVec::<u64, GatewayRow>::new();
    let probe = ProbeHandle::new();
    let result: Rc<RefCell<Option<Totals>>> = Rc::new(RefCell::new(None));
    let sink = result.clone();
    let pipeline = gw.pipeline;
    worker.dataflow::<u64, _, _>(|scope| {
        let rows = scope.input_from(&mut input);
        let partials = run_pipeline(rows, "gateway-8", pipeline, codec, args.batch);
        fold_at_leader(partials, "gateway-8 totals", Totals::default(), |t: &mut Totals, w: Vec<u64>| {
            t.add_words(&w)
        })
        .inspect(move |t: &Totals| *sink.borrow_mut() = Some(*t))
        .probe_with(&probe);
    });

    let start = Instant::now();
    // Epochs in flight before a worker waits for the dataflow to catch up:
    // bounds the rows buffered in the exchange and stashes. One round of
    // epochs (one per worker) measured best here; more only adds memory.
    let window = workers as u64;
    for (epoch, (first, rows)) in args.batches().enumerate() {
        let epoch = epoch as u64;
        if epoch % workers as u64 != index as u64 {
            continue;
        }
        input.advance_to(epoch);
        for i in first..first + rows as u64 {
            input.send(gateway_row(args.seed, i));
        }
        let behind = epoch.saturating_sub(window);
        worker.step_or_park_while(None, || probe.less_than(&behind));
    }
    input.close();
    worker.step_or_park_while(None, || !probe.done());
    let elapsed = start.elapsed();

    let totals = result.borrow_mut().take();
    match totals {
        Some(totals) if totals.rows != args.rows => {
            Err(format!("worker 0 combined {} rows, the run has {}", totals.rows, args.rows))
        }
        Some(totals) => Ok(Some(ClusterRun { totals, workers, elapsed })),
        None if index == 0 => Err("worker 0 received no totals".into()),
        None => Ok(None),
    }
}

/// Splits command-line arguments into the gateway flags [`Args::parse`]
/// takes (`--rows`, `--batch`, `--seed`, each with its value) and the rest,
/// which go to timely's own parser (`-w`, `-n`, `-p`, `-h`, …).
pub fn split_args(args: impl IntoIterator<Item = String>) -> (Vec<String>, Vec<String>) {
    let (mut gateway, mut timely) = (Vec::new(), Vec::new());
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if ["--rows", "--batch", "--seed"].contains(&arg.as_str()) {
            gateway.push(arg);
            gateway.extend(it.next());
        } else {
            timely.push(arg);
        }
    }
    (gateway, timely)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_round_trip_through_words() {
        let mut t = Totals { rows: 3, ..Totals::default() };
        t.sums.status = 7;
        t.sums.latency = 11;
        t.metrics.record(200, 5, 40);
        t.metrics.record(429, 63, 2);
        let mut back = Totals::default();
        back.add_words(&t.to_words());
        assert_eq!(back, t);
        back.add_words(&t.to_words());
        assert_eq!(back.metrics.hist[3][63], 2);
        assert_eq!(back.checksum().hist, [2, 0, 0, 2]);
    }

    #[test]
    fn split_args_separates_gateway_and_timely_flags() {
        let args = ["-w", "2", "--rows", "10", "-n", "1", "--seed", "3"].map(String::from);
        let (g, t) = split_args(args);
        assert_eq!(g, ["--rows", "10", "--seed", "3"]);
        assert_eq!(t, ["-w", "2", "-n", "1"]);
    }
}
