//! `gateway-8`, the reference workload (see `WORKLOAD.md` in the design notes).
//!
//! Every benchmark, example and peer implementation runs this workload so that
//! figures compare like with like. The module holds the deterministic input
//! generator, the checksum, the two hand-written loops that bound the
//! executor (one fused loop, one pass per stage) and the same eight stages
//! built with mware's public API, statically composed or boxed one by one.
//!
//! ```
//! use mware::gateway8::{Checksum, Columns, Gateway};
//!
//! let rows = 10_000;
//! let mut hand = Columns::generate(42, 0, rows);
//! let mut state = Gateway::new(rows as u64);
//! mware::gateway8::hand_fused(&mut hand, &mut state);
//! let expected = Checksum::of_columns(&hand, &state);
//! assert_eq!(expected.hist.iter().sum::<u64>(), rows as u64);
//! ```

use std::fmt;

/// The splitmix64 finalizer every generator of the workload uses.
#[inline(always)]
pub const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Requests per route allowed by the quota stage over the whole run.
pub const QUOTA: u64 = 700_000;
/// Number of routes.
pub const ROUTES: usize = 64;

/// `ROUTE_COST[r] = 10 + mix(r) % 90`.
pub const ROUTE_COST: [u32; ROUTES] = {
    let mut t = [0u32; ROUTES];
    let mut r = 0;
    while r < ROUTES {
        t[r] = 10 + (mix(r as u64) % 90) as u32;
        r += 1;
    }
    t
};

/// The `ts_ns` of row `i`.
#[inline]
pub const fn ts_of(i: u64) -> u64 {
    1_000_000_000 + i * 1_000
}

/// `NOW_NS` for a run of `rows` rows: the last row's timestamp plus 1 ms.
#[inline]
pub const fn now_ns(rows: u64) -> u64 {
    ts_of(rows.saturating_sub(1)) + 1_000_000
}

/// One generated request (a row of the input table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// `mix(seed ^ i) % 100_000`.
    pub user_id: u64,
    /// `mix(user_id)`, flipped in its lowest bit for about 1 % of rows.
    pub token: u64,
    /// One of 64 routes.
    pub route: u16,
    /// Body size; about 0.5 % of rows draw from 0..2 MiB, the rest from 0..64 KiB.
    pub payload_len: u32,
    /// Arrival time.
    pub ts_ns: u64,
}

impl Request {
    /// Row `i` (counted from 0 over the whole run) for `seed`.
    #[inline]
    pub fn generate(seed: u64, i: u64) -> Request {
        let user_id = mix(seed ^ i) % 100_000;
        let mut token = mix(user_id);
        if mix(i ^ 0xA5A5) % 100 == 0 {
            token ^= 1;
        }
        let route = (mix(i ^ 0x5A5A) % 64) as u16;
        let payload_len = if mix(i ^ 0x7E7E) % 200 == 0 {
            (mix(i ^ 0x3C3C) % (1 << 21)) as u32
        } else {
            (mix(i ^ 0x3C3C) % 65_536) as u32
        };
        Request { user_id, token, route, payload_len, ts_ns: ts_of(i) }
    }
}

/// The workload's table as plain vectors: the input the hand-written loops
/// and the peers run on.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    /// Input.
    pub user_id: Vec<u64>,
    /// Input.
    pub token: Vec<u64>,
    /// Input.
    pub route: Vec<u16>,
    /// Input.
    pub payload_len: Vec<u32>,
    /// Input.
    pub ts_ns: Vec<u64>,
    /// Output: the response status.
    pub status: Vec<u16>,
    /// Output.
    pub cost: Vec<u32>,
    /// Output.
    pub score: Vec<f32>,
    /// Output.
    pub latency_ns: Vec<u64>,
}

impl Columns {
    /// Rows `first .. first + rows` of the run for `seed`.
    pub fn generate(seed: u64, first: u64, rows: usize) -> Columns {
        let mut c = Columns::default();
        for i in first..first + rows as u64 {
            let r = Request::generate(seed, i);
            c.user_id.push(r.user_id);
            c.token.push(r.token);
            c.route.push(r.route);
            c.payload_len.push(r.payload_len);
            c.ts_ns.push(r.ts_ns);
        }
        c.status = vec![0; rows];
        c.cost = vec![0; rows];
        c.score = vec![0.0; rows];
        c.latency_ns = vec![0; rows];
        c
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.user_id.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.user_id.is_empty()
    }

    /// Puts the outputs back to their initial values (status 0, cost 0, …).
    pub fn reset_outputs(&mut self) {
        self.status.fill(0);
        self.cost.fill(0);
        self.score.fill(0.0);
        self.latency_ns.fill(0);
    }
}

/// The state the workload carries across batches: the quota's counters and
/// the metrics reduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    /// `NOW_NS` of the run.
    pub now_ns: u64,
    /// Quota counters per route (stage 5).
    pub used: [u64; ROUTES],
    /// Metrics (stage 8).
    pub metrics: Metrics,
}

impl Gateway {
    /// Fresh state for a run of `total_rows` rows.
    pub fn new(total_rows: u64) -> Gateway {
        Gateway { now_ns: now_ns(total_rows), used: [0; ROUTES], metrics: Metrics::default() }
    }
}

/// The metrics reduction: a histogram per status class and route, and the
/// latency sum per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// `hist[class][route]`.
    pub hist: [[u64; ROUTES]; 4],
    /// Latency sum per class.
    pub lat_sum: [u64; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { hist: [[0; ROUTES]; 4], lat_sum: [0; 4] }
    }
}

impl Metrics {
    /// Counts one finished row.
    #[inline(always)]
    pub fn record(&mut self, status: u16, route: u16, latency_ns: u64) {
        let class = status_class(status);
        self.hist[class][route as usize & (ROUTES - 1)] += 1;
        self.lat_sum[class] += latency_ns;
    }

    /// Adds another partial result.
    pub fn merge(&mut self, other: &Metrics) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (x, y) in self.lat_sum.iter_mut().zip(&other.lat_sum) {
            *x += y;
        }
    }
}

/// 0 for 200, 1 for 401, 2 for 413, 3 for 429 (and anything else).
#[inline(always)]
pub fn status_class(status: u16) -> usize {
    match status {
        200 => 0,
        401 => 1,
        413 => 2,
        _ => 3,
    }
}

/// Stage 1: the token check.
#[inline(always)]
pub fn auth_ok(user_id: u64, token: u64) -> bool {
    token == mix(user_id)
}

/// Stage 2: the body size limit.
#[inline(always)]
pub fn payload_ok(payload_len: u32) -> bool {
    payload_len <= 1 << 20
}

/// Stage 3: the cost of a route.
#[inline(always)]
pub fn route_cost(route: u16) -> u32 {
    ROUTE_COST[route as usize & (ROUTES - 1)]
}

/// Stage 4: the enrichment score.
#[inline(always)]
pub fn enrich_score(user_id: u64, route: u16, cost: u32) -> f32 {
    ((mix(user_id ^ route as u64) >> 40) as f32) * 1e-6 + cost as f32
}

/// Stage 5: charges `cost` to the route; `false` once over quota.
#[inline(always)]
pub fn quota_ok(used: &mut [u64; ROUTES], route: u16, cost: u32) -> bool {
    let u = &mut used[route as usize & (ROUTES - 1)];
    *u += cost as u64;
    *u <= QUOTA
}

/// Stages 1–4 (auth, validate, route, enrich) on one row whose status is
/// `status`: returns the status the row leaves them with (0 while live)
/// and, for a live row, its cost, which it also writes with its `score`.
#[inline(always)]
pub fn before_quota(
    status: u16,
    (user_id, token, payload_len, route): (u64, u64, u32, u16),
    cost: &mut u32,
    score: &mut f32,
) -> (u16, u32) {
    let mut s = status;
    if s == 0 && !auth_ok(user_id, token) {
        s = 401;
    }
    if s == 0 && !payload_ok(payload_len) {
        s = 413;
    }
    if s != 0 {
        return (s, 0);
    }
    let c = route_cost(route);
    *cost = c;
    *score = enrich_score(user_id, route, c);
    (0, c)
}

/// Stages 6–8 (handler, timing, metrics) on one row that left the quota
/// with status `s`: writes its final status to `status`, and its latency.
#[inline(always)]
pub fn after_quota(
    mut s: u16,
    status: &mut u16,
    (ts_ns, route, now_ns): (u64, u16, u64),
    latency_ns: &mut u64,
    m: &mut Metrics,
) {
    if s == 0 {
        s = 200;
    }
    *status = s;
    let l = now_ns - ts_ns;
    *latency_ns = l;
    m.record(s, route, l);
}

/// The hand-written fused loop: every stage for one row in one loop body.
/// This is the limit the executor is measured against.
pub fn hand_fused(c: &mut Columns, g: &mut Gateway) {
    let n = c.len();
    let (uid, tok, route, pay, ts) =
        (&c.user_id[..n], &c.token[..n], &c.route[..n], &c.payload_len[..n], &c.ts_ns[..n]);
    let (status, cost, score, lat) =
        (&mut c.status[..n], &mut c.cost[..n], &mut c.score[..n], &mut c.latency_ns[..n]);
    for i in 0..n {
        let (mut s, c) =
            before_quota(status[i], (uid[i], tok[i], pay[i], route[i]), &mut cost[i], &mut score[i]);
        if s == 0 && !quota_ok(&mut g.used, route[i], c) {
            s = 429;
        }
        after_quota(s, &mut status[i], (ts[i], route[i], g.now_ns), &mut lat[i], &mut g.metrics);
    }
}

/// The hand-written loop with one pass per stage over the whole slice.
pub fn hand_passes(c: &mut Columns, g: &mut Gateway) {
    let n = c.len();
    for i in 0..n {
        if c.status[i] == 0 && !auth_ok(c.user_id[i], c.token[i]) {
            c.status[i] = 401;
        }
    }
    for i in 0..n {
        if c.status[i] == 0 && !payload_ok(c.payload_len[i]) {
            c.status[i] = 413;
        }
    }
    for i in 0..n {
        if c.status[i] == 0 {
            c.cost[i] = route_cost(c.route[i]);
        }
    }
    for i in 0..n {
        if c.status[i] == 0 {
            c.score[i] = enrich_score(c.user_id[i], c.route[i], c.cost[i]);
        }
    }
    for i in 0..n {
        if c.status[i] == 0 && !quota_ok(&mut g.used, c.route[i], c.cost[i]) {
            c.status[i] = 429;
        }
    }
    for i in 0..n {
        if c.status[i] == 0 {
            c.status[i] = 200;
        }
    }
    for i in 0..n {
        c.latency_ns[i] = g.now_ns - c.ts_ns[i];
    }
    for i in 0..n {
        g.metrics.record(c.status[i], c.route[i], c.latency_ns[i]);
    }
}

/// The checksum line of `WORKLOAD.md`, accumulated batch by batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    /// `sum(status)`.
    pub status: u64,
    /// `sum(cost)`.
    pub cost: u64,
    /// `sum(round(score * 1000))`.
    pub score_milli: u64,
    /// `sum(latency_ns)`.
    pub latency: u64,
    /// The metrics' latency sums.
    pub lat_sum: [u64; 4],
    /// The metrics' histogram totals per class.
    pub hist: [u64; 4],
}

impl Checksum {
    /// Adds one batch's output columns.
    pub fn add_rows(&mut self, status: &[u16], cost: &[u32], score: &[f32], latency: &[u64]) {
        self.status += status.iter().map(|&s| s as u64).sum::<u64>();
        self.cost += cost.iter().map(|&c| c as u64).sum::<u64>();
        self.score_milli += score.iter().map(|&s| (s as f64 * 1000.0).round() as u64).sum::<u64>();
        self.latency += latency.iter().sum::<u64>();
    }

    /// Takes the reduction's results (call once, after the run).
    pub fn set_metrics(&mut self, m: &Metrics) {
        self.lat_sum = m.lat_sum;
        for (h, row) in self.hist.iter_mut().zip(&m.hist) {
            *h = row.iter().sum();
        }
    }

    /// The checksum of a finished hand-loop run.
    pub fn of_columns(c: &Columns, g: &Gateway) -> Checksum {
        let mut sum = Checksum::default();
        sum.add_rows(&c.status, &c.cost, &c.score, &c.latency_ns);
        sum.set_metrics(&g.metrics);
        sum
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checksum status={} cost={} score_milli={} latency={} lat_sum={:?} hist={:?}",
            self.status, self.cost, self.score_milli, self.latency, self.lat_sum, self.hist
        )
    }
}

/// The checksum line WORKLOAD.md gives for seed 42 and 1,048,576 rows.
pub const TEST_VECTOR: &str = "checksum status=270899595 cost=58016816 score_milli=66688861966 latency=550803865600000 lat_sum=[484968501884000, 5528000949000, 1348598838000, 58958763929000] hist=[779921, 10580, 2585, 255490]";

/// The workload's fields in an mware schema. The response status is the
/// rows' control status ([`RowState::status`](crate::RowState::status)).
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    /// Input.
    pub user_id: Field<u64>,
    /// Input.
    pub token: Field<u64>,
    /// Input.
    pub route: Field<u16>,
    /// Input.
    pub payload_len: Field<u32>,
    /// Input.
    pub ts_ns: Field<u64>,
    /// Output.
    pub cost: Field<u32>,
    /// Output.
    pub score: Field<f32>,
    /// Output.
    pub latency_ns: Field<u64>,
}

use crate::chain::{after, before};
use crate::prelude::*;
use crate::stage::StateHandle;
use crate::{Pipeline, PipelineBuilder, RowStage, Stage};

impl Fields {
    /// The workload's schema and its field handles.
    pub fn schema() -> (Schema, Fields) {
        let (schema, fields, ()) = Fields::schema_with(|_| ());
        (schema, fields)
    }

    /// The workload's schema with extra fields declared by `extra` after the
    /// workload's own (for examples that add stages writing new columns),
    /// and whatever `extra` returns (their handles).
    pub fn schema_with<E>(extra: impl FnOnce(&mut SchemaBuilder) -> E) -> (Schema, Fields, E) {
        let mut s = SchemaBuilder::new();
        let fields = Fields {
            user_id: s.hot("user_id"),
            token: s.hot("token"),
            route: s.hot("route"),
            payload_len: s.hot("payload_len"),
            ts_ns: s.hot("ts_ns"),
            cost: s.hot("cost"),
            score: s.hot("score"),
            latency_ns: s.hot("latency_ns"),
        };
        let more = extra(&mut s);
        (s.build().expect("the gateway schema is valid"), fields, more)
    }

    /// Fills `batch` with rows `first .. first + rows` of the run for `seed`
    /// (outputs zeroed, every row live). Reuses the batch's buffers.
    pub fn fill(&self, batch: &mut Batch, seed: u64, first: u64, rows: usize) -> crate::Result<()> {
        batch.clear();
        batch.resize(rows);
        let reqs = || (first..first + rows as u64).map(|i| Request::generate(seed, i));
        // Column by column: one typed slice per field, the compiler
        // vectorises the generator across rows.
        fill_column(batch.column_mut(self.user_id)?, reqs().map(|r| r.user_id));
        fill_column(batch.column_mut(self.token)?, reqs().map(|r| r.token));
        fill_column(batch.column_mut(self.route)?, reqs().map(|r| r.route));
        fill_column(batch.column_mut(self.payload_len)?, reqs().map(|r| r.payload_len));
        fill_column(batch.column_mut(self.ts_ns)?, reqs().map(|r| r.ts_ns));
        Ok(())
    }

    /// Adds a processed batch's rows to `sum`.
    pub fn add_to(&self, sum: &mut Checksum, batch: &Batch) -> crate::Result<()> {
        sum.status += batch.states().iter().map(|s| s.status() as u64).sum::<u64>();
        sum.cost += batch.column(self.cost)?.iter().map(|&c| c as u64).sum::<u64>();
        sum.score_milli +=
            batch.column(self.score)?.iter().map(|&s| (s as f64 * 1000.0).round() as u64).sum::<u64>();
        sum.latency += batch.column(self.latency_ns)?.iter().sum::<u64>();
        Ok(())
    }
}

fn fill_column<T>(column: &mut [T], values: impl Iterator<Item = T>) {
    for (slot, v) in column.iter_mut().zip(values) {
        *slot = v;
    }
}

/// How the eight stages are registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Composition {
    /// One static chain: every stage fused into one loop body.
    Static,
    /// The same static chain over [pinned](crate::Field::pin) fields, so
    /// stages that share a field share its column pointer in the loop.
    Pinned,
    /// Each stage registered on its own: one pass per stage per chunk.
    Boxed,
}

/// Defines the eight stages over the given accesses (runtime or pinned
/// handles): one definition for every [`Composition`] and for
/// [`GatewayPipeline::halves`]. Gives the stages and handles on the quota's
/// counters and the metrics' total.
macro_rules! stages {
    ($now:expr, $uid:expr, $tok:expr, $route:expr, $pay:expr, $ts:expr,
     $cost_r:expr, $cost_w:expr, $score_w:expr, $lat_r:expr, $lat_w:expr) => {{
        let now = $now;
        let metrics = stage::reduction(
            "metrics",
            ($route, $lat_r),
            Metrics::default(),
            |m: &mut Metrics, (route, lat): (&u16, &u64), ctl: &mut RowCtl| {
                m.record(ctl.status(), *route, *lat)
            },
            |total: &mut Metrics, part: &Metrics| total.merge(part),
        );
        let timing =
            stage::parallel("timing", ($ts, $lat_w), move |(ts, lat): (&u64, &mut u64), _: &mut RowCtl| {
                *lat = now - *ts;
            });
        let auth = stage::parallel("auth", ($uid, $tok), |(u, t): (&u64, &u64), ctl: &mut RowCtl| {
            if !auth_ok(*u, *t) {
                ctl.reject(401);
            }
        })
        .rejects();
        let validate = stage::parallel("validate", $pay, |len: &u32, ctl: &mut RowCtl| {
            if !payload_ok(*len) {
                ctl.reject(413);
            }
        })
        .rejects();
        let route =
            stage::parallel("route", ($route, $cost_w), |(r, c): (&u16, &mut u32), _: &mut RowCtl| {
                *c = route_cost(*r);
            });
        let enrich = stage::parallel(
            "enrich",
            ($uid, $route, $cost_r, $score_w),
            |(u, r, c, s): (&u64, &u16, &u32, &mut f32), _: &mut RowCtl| *s = enrich_score(*u, *r, *c),
        );
        let quota = stage::sequential(
            "quota",
            ($route, $cost_r),
            [0u64; ROUTES],
            |used: &mut [u64; ROUTES], (r, c): (&u16, &u32), ctl: &mut RowCtl| {
                if !quota_ok(used, *r, *c) {
                    ctl.reject(429);
                }
            },
        )
        .rejects();
        let handler = stage::parallel("handler", (), |_: (), ctl: &mut RowCtl| ctl.respond(200));
        let (quota_state, metrics_total) = (quota.state(), metrics.total());
        (
            Stages { metrics, timing, auth, validate, route, enrich, quota, handler },
            quota_state,
            metrics_total,
        )
    }};
}

/// [`stages!`] over the fields' runtime handles.
macro_rules! runtime_stages {
    ($f:expr, $now:expr) => {
        stages!(
            $now,
            Read($f.user_id),
            Read($f.token),
            Read($f.route),
            Read($f.payload_len),
            Read($f.ts_ns),
            Read($f.cost),
            Write($f.cost),
            Write($f.score),
            Read($f.latency_ns),
            Write($f.latency_ns)
        )
    };
}

/// The eight stages, as [`stages!`] defines them.
struct Stages<M, T, A, V, R, E, Q, H> {
    metrics: M,
    timing: T,
    auth: A,
    validate: V,
    route: R,
    enrich: E,
    quota: Q,
    handler: H,
}

impl<M, T, A, V, R, E, Q, H> Stages<M, T, A, V, R, E, Q, H>
where
    M: RowStage + Stage,
    T: RowStage + Stage,
    A: RowStage + Stage,
    V: RowStage + Stage,
    R: RowStage + Stage,
    E: RowStage + Stage,
    Q: RowStage + Stage,
    H: RowStage + Stage,
{
    /// Registers the stages in the workload's order: as one static chain
    /// when `fused`, else one by one.
    fn register(self, b: PipelineBuilder, fused: bool) -> PipelineBuilder {
        let Stages { metrics, timing, auth, validate, route, enrich, quota, handler } = self;
        if fused {
            b.chain(crate::chain![
                after(metrics),
                after(timing),
                before(auth),
                before(validate),
                before(route),
                before(enrich),
                before(quota),
                before(handler),
            ])
        } else {
            b.after(metrics)
                .after(timing)
                .before(auth)
                .before(validate)
                .before(route)
                .before(enrich)
                .before(quota)
                .handler(handler)
        }
    }
}

/// gateway-8 built with mware: the pipeline and handles on its state.
pub struct GatewayPipeline {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The quota stage's counters.
    pub quota: StateHandle<[u64; ROUTES]>,
    /// The metrics reduction's total.
    pub metrics: StateHandle<Metrics>,
}

impl GatewayPipeline {
    /// Builds gateway-8 for a run of `total_rows` rows. `configure` sets
    /// threads, chunk size and the like on the builder.
    pub fn build(
        f: &Fields,
        schema: &Schema,
        total_rows: u64,
        composition: Composition,
        configure: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
    ) -> crate::Result<GatewayPipeline> {
        Self::register(f, total_rows, composition, configure(Pipeline::builder(schema)))
    }

    // Not generic, so the stages and every loop the plans fuse them into
    // are compiled once, in this crate, rather than again in every crate
    // that builds gateway-8 with its own `configure` closure.
    fn register(
        f: &Fields,
        total_rows: u64,
        composition: Composition,
        builder: PipelineBuilder,
    ) -> crate::Result<GatewayPipeline> {
        let now = now_ns(total_rows);
        let (builder, quota_state, metrics_total) = match composition {
            Composition::Pinned => {
                // Positions as declared in `Fields::schema_with`.
                let (cost, lat) = (f.cost.pin::<5>()?, f.latency_ns.pin::<7>()?);
                let (stages, quota, metrics) = stages!(
                    now,
                    ReadAt(f.user_id.pin::<0>()?),
                    ReadAt(f.token.pin::<1>()?),
                    ReadAt(f.route.pin::<2>()?),
                    ReadAt(f.payload_len.pin::<3>()?),
                    ReadAt(f.ts_ns.pin::<4>()?),
                    ReadAt(cost),
                    WriteAt(cost),
                    WriteAt(f.score.pin::<6>()?),
                    ReadAt(lat),
                    WriteAt(lat)
                );
                (stages.register(builder, true), quota, metrics)
            }
            c => {
                let (stages, quota, metrics) = runtime_stages!(f, now);
                (stages.register(builder, c == Composition::Static), quota, metrics)
            }
        };
        Ok(GatewayPipeline { pipeline: builder.build()?, quota: quota_state, metrics: metrics_total })
    }

    /// gateway-8 cut where the quota begins, as two pipelines of one static
    /// chain each: auth, validate, route and enrich (inside two empty
    /// layers, where timing and metrics sit in the whole chain); then the
    /// quota, the handler, timing and metrics. Running the first and then
    /// the second on a batch gives what [`build`](GatewayPipeline::build)
    /// gives. What each half costs against the same stages written by hand
    /// shows where the fused chain's cost lies (the stream bench's `hand`
    /// report).
    ///
    /// ```
    /// use mware::gateway8::{Checksum, Fields, GatewayPipeline, TEST_VECTOR};
    /// use mware::Batch;
    ///
    /// let (schema, fields) = Fields::schema();
    /// let rows = 1 << 20;
    /// let (front, rest) = GatewayPipeline::halves(&fields, &schema, rows, |b| b)?;
    /// let mut sum = Checksum::default();
    /// let mut batch = Batch::new(&schema);
    /// for first in (0..rows).step_by(65_536) {
    ///     fields.fill(&mut batch, 42, first, 65_536)?;
    ///     front.run(&mut batch)?;
    ///     rest.pipeline.run(&mut batch)?;
    ///     fields.add_to(&mut sum, &batch)?;
    /// }
    /// sum.set_metrics(&rest.metrics.lock());
    /// assert_eq!(sum.to_string(), TEST_VECTOR);
    /// # Ok::<(), mware::Error>(())
    /// ```
    pub fn halves(
        f: &Fields,
        schema: &Schema,
        total_rows: u64,
        configure: impl Fn(PipelineBuilder) -> PipelineBuilder,
    ) -> crate::Result<(Pipeline, GatewayPipeline)> {
        let builders = [(); 2].map(|_| configure(Pipeline::builder(schema)));
        Self::register_halves(f, total_rows, builders)
    }

    // Not generic, as `register`.
    fn register_halves(
        f: &Fields,
        total_rows: u64,
        [front, rest]: [PipelineBuilder; 2],
    ) -> crate::Result<(Pipeline, GatewayPipeline)> {
        let (stages, quota, metrics) = runtime_stages!(f, now_ns(total_rows));
        let Stages { metrics: m, timing, auth, validate, route, enrich, quota: q, handler } = stages;
        // Two empty layers stand for timing's and metrics', so the rows the
        // first half rejects stop at the depths they stop at in the whole
        // chain, where the second half's after-stages see them.
        let outer = |name| stage::parallel(name, (), |_: (), _: &mut RowCtl| {});
        let front = front
            .chain(crate::chain![
                after(outer("empty (metrics)")),
                after(outer("empty (timing)")),
                before(auth),
                before(validate),
                before(route),
                before(enrich),
            ])
            .build()?;
        let rest = rest.chain(crate::chain![after(m), after(timing), before(q), before(handler)]).build()?;
        Ok((front, GatewayPipeline { pipeline: rest, quota, metrics }))
    }

    /// Puts the quota and metrics back to zero (a fresh run).
    pub fn reset(&self) {
        self.quota.replace([0; ROUTES]);
        self.metrics.replace(Metrics::default());
    }
}

/// The command-line flags every gateway-8 example takes:
/// `--rows N --batch N --threads N --seed S --repeat K`, plus the extra
/// flags an example names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// Rows in the whole run (default 1,048,576).
    pub rows: u64,
    /// Rows per batch (default 65,536; any value ≥ 1).
    pub batch: usize,
    /// Worker threads (default 0 = all cores; 1 = the calling thread only).
    pub threads: usize,
    /// Generator seed (default 42).
    pub seed: u64,
    /// Runs of the whole input; the median is reported (default 1).
    pub repeat: usize,
    /// Extra flags the example accepted, with their values (`None` for a
    /// switch).
    pub extra: Vec<(String, Option<String>)>,
}

impl Default for Args {
    fn default() -> Self {
        Args { rows: 1 << 20, batch: 65_536, threads: 0, seed: 42, repeat: 1, extra: Vec::new() }
    }
}

impl Args {
    /// Parses `args` (without the program name). `options` are extra flags
    /// that take a value, `switches` extra flags without one.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        options: &[&str],
        switches: &[&str],
    ) -> Result<Args, String> {
        let mut a = Args::default();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            if switches.contains(&flag.as_str()) {
                a.extra.push((flag, None));
                continue;
            }
            let known = ["--rows", "--batch", "--threads", "--seed", "--repeat"];
            if !known.contains(&flag.as_str()) && !options.contains(&flag.as_str()) {
                return Err(format!("unknown flag `{flag}`"));
            }
            let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
            let num = || {
                value
                    .replace('_', "")
                    .parse::<u64>()
                    .map_err(|_| format!("`{flag}` takes a number, not `{value}`"))
            };
            match flag.as_str() {
                "--rows" => a.rows = num()?,
                "--batch" => a.batch = num()? as usize,
                "--threads" => a.threads = num()? as usize,
                "--seed" => a.seed = num()?,
                "--repeat" => a.repeat = num()? as usize,
                _ => a.extra.push((flag, Some(value))),
            }
        }
        if a.batch == 0 {
            return Err("`--batch` must be at least 1".into());
        }
        if a.repeat == 0 {
            return Err("`--repeat` must be at least 1".into());
        }
        Ok(a)
    }

    /// The value of an extra option.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.extra.iter().find(|(f, _)| f == name).and_then(|(_, v)| v.as_deref())
    }

    /// Whether an extra switch was given.
    pub fn switch(&self, name: &str) -> bool {
        self.extra.iter().any(|(f, v)| f == name && v.is_none())
    }

    /// The usage line for an example.
    pub fn usage(program: &str, extra: &str) -> String {
        format!(
            "usage: {program} [--rows N] [--batch N] [--threads N] [--seed S] [--repeat K]{extra}\n\
             defaults: --rows 1048576 --batch 65536 --threads <all cores> --seed 42 --repeat 1"
        )
    }

    /// The threads actually used: `--threads 0` means every core.
    pub fn effective_threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        }
    }

    /// The `throughput …` line every gateway-8 example prints (other tools
    /// read it): `throughput rows=N batch=B threads=T ns_per_row=X`.
    pub fn throughput_line(&self, ns_per_row: f64) -> String {
        format!(
            "throughput rows={} batch={} threads={} ns_per_row={ns_per_row:.3}",
            self.rows,
            self.batch,
            self.effective_threads()
        )
    }

    /// The batches of the run as `(first row, rows)`.
    pub fn batches(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        (0..self.rows)
            .step_by(self.batch)
            .map(|first| (first, (self.rows - first).min(self.batch as u64) as usize))
    }
}

/// The median of some durations, per row, in nanoseconds.
pub fn median_ns_per_row(times: &mut [std::time::Duration], rows: u64) -> f64 {
    times.sort();
    let mid = times.len() / 2;
    let t = if times.len() % 2 == 1 { times[mid] } else { (times[mid - 1] + times[mid]) / 2 };
    t.as_nanos() as f64 / rows.max(1) as f64
}
