//! Shared by the behaviour tests: a tiny schema, a stage body that both the
//! executor's stages and the reference run, and a deliberately naive
//! per-request reference implementation of the middleware onion.
//!
//! The reference is written to be obviously right, not fast: one struct per
//! request, one boxed middleware per layer, and a recursive call per request:
//! `before; if stopped, return; inner layers; after`.

#![allow(dead_code)]

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use mware::gateway8::mix;
use mware::prelude::*;

/// Number of `u32` fields in the test schema.
pub const N32: usize = 4;
/// Number of `u64` fields in the test schema.
pub const N64: usize = 3;

/// The test schema: four `u32` and three `u64` hot fields.
#[derive(Clone, Copy, Debug)]
pub struct TestFields {
    pub a: [Field<u32>; N32],
    pub b: [Field<u64>; N64],
}

pub fn test_schema() -> (Schema, TestFields) {
    let mut s = SchemaBuilder::new();
    let a = [s.hot("a0"), s.hot("a1"), s.hot("a2"), s.hot("a3")];
    let b = [s.hot("b0"), s.hot("b1"), s.hot("b2")];
    (s.build().expect("valid schema"), TestFields { a, b })
}

/// Deterministic input for row `i` of a batch generated from `seed`.
pub fn input_row(seed: u64, i: usize) -> ([u32; N32], [u64; N64]) {
    let mut a = [0u32; N32];
    let mut b = [0u64; N64];
    for (k, v) in a.iter_mut().enumerate() {
        let h = mix(seed ^ (i as u64).wrapping_mul(31) ^ ((k as u64) << 56));
        // Small values for some fields so that equal values (and the
        // conditions derived from them) occur.
        *v = if k % 2 == 0 { (h % 97) as u32 } else { h as u32 };
    }
    for (k, v) in b.iter_mut().enumerate() {
        *v = mix(seed.rotate_left(7) ^ (i as u64) ^ ((k as u64 + 11) << 50));
    }
    (a, b)
}

/// Fills `batch` with `rows` rows of input from `seed`.
pub fn fill_batch(batch: &mut Batch, f: &TestFields, seed: u64, rows: usize) {
    batch.clear();
    batch.resize(rows);
    for i in 0..rows {
        let (a, b) = input_row(seed, i);
        for (field, v) in f.a.iter().zip(a) {
            batch.column_mut(*field).unwrap()[i] = v;
        }
        for (field, v) in f.b.iter().zip(b) {
            batch.column_mut(*field).unwrap()[i] = v;
        }
    }
}

/// What a stage body may do to its row; implemented by the executor's
/// [`RowCtl`], by an adapter over a chunk's [`Rows`], and by the reference.
pub trait Ctl {
    fn status(&self) -> u16;
    fn respond(&mut self, status: u16);
    fn reject(&mut self, status: u16);
    fn fail(&mut self, message: String);
}

impl Ctl for RowCtl {
    fn status(&self) -> u16 {
        RowCtl::status(self)
    }
    fn respond(&mut self, status: u16) {
        RowCtl::respond(self, status)
    }
    fn reject(&mut self, status: u16) {
        RowCtl::reject(self, status)
    }
    fn fail(&mut self, message: String) {
        RowCtl::fail(self, message)
    }
}

/// Chunk row `i` of a chunk stage's [`Rows`], as a [`Ctl`].
pub struct RowsCtl<'r, 'a> {
    pub rows: &'r mut Rows<'a>,
    pub i: usize,
}

impl Ctl for RowsCtl<'_, '_> {
    fn status(&self) -> u16 {
        self.rows.status(self.i)
    }
    fn respond(&mut self, status: u16) {
        self.rows.respond(self.i, status)
    }
    fn reject(&mut self, status: u16) {
        self.rows.reject(self.i, status)
    }
    fn fail(&mut self, message: String) {
        self.rows.fail(self.i, message)
    }
}

/// The kind of state a stage keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SKind {
    /// No state.
    Par,
    /// A running counter, incremented on every row the stage sees, in row
    /// order (and written into a field when the stage writes `a`).
    Seq,
    /// A wrapping sum over the rows the stage sees.
    Red,
}

/// A randomly generated stage behaviour.
///
/// The stage reads `a[rd32]` and `b[rd64]` and may write `a[wr32]` and
/// `b[wr64]` (`wr32 != rd32`, `wr64 != rd64`). All its decisions derive from
/// a hash of what it reads, optionally the row index, the row's status and
/// (sequential stages) its counter.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub kind: SKind,
    /// Does nothing at all (fills absent halves of static chains).
    pub noop: bool,
    pub rd32: usize,
    pub rd64: usize,
    pub wr32: usize,
    pub wr64: usize,
    pub salt: u64,
    pub use_row: bool,
    pub use_status: bool,
    pub write32: bool,
    pub write64: bool,
    /// `(modulus, status)`: respond with `status` when the hash hits.
    pub respond: Option<(u64, u16)>,
    /// Respond after the reject/fail decision instead of before.
    pub respond_after: bool,
    /// `(modulus, status)`: reject with `status` when the hash hits.
    pub reject: Option<(u64, u16)>,
    /// Modulus: fail the row (with a message) when the hash hits.
    pub fail: Option<u64>,
    /// Modulus: panic when the hash hits (before touching fields or the
    /// control state; a sequential stage has counted the row already).
    pub panic: Option<u64>,
    /// Asks to run side by side with the group before it (parallel stages
    /// only; the reference ignores it, as results must).
    pub side_by_side: bool,
}

impl Spec {
    /// A stage that does nothing.
    pub fn noop(name: String) -> Spec {
        Spec {
            name,
            kind: SKind::Par,
            noop: true,
            rd32: 0,
            rd64: 0,
            wr32: 1,
            wr64: 1,
            salt: 0,
            use_row: false,
            use_status: false,
            write32: false,
            write64: false,
            respond: None,
            respond_after: false,
            reject: None,
            fail: None,
            panic: None,
            side_by_side: false,
        }
    }

    /// The panic message for `row`.
    pub fn panic_message(&self, row: usize) -> String {
        format!("boom in {} at row {row}", self.name)
    }

    /// The failure message for `row`.
    pub fn fail_message(&self, row: usize) -> String {
        format!("{} refused row {row}", self.name)
    }
}

/// The body every test stage runs for one row, in the executor and in the
/// reference alike. `x`, `y` are the values read, `a`, `b` the fields
/// written, `state` the stage's counter (sequential) or partial sum
/// (reduction), `row` the row's index in its batch.
#[allow(clippy::too_many_arguments)]
pub fn body<C: Ctl>(
    s: &Spec,
    x: u32,
    y: u64,
    a: &mut u32,
    b: &mut u64,
    state: &mut u64,
    row: usize,
    ctl: &mut C,
) {
    if s.noop {
        return;
    }
    if s.kind == SKind::Seq {
        *state = state.wrapping_add(1);
    }
    let mut h = s.salt ^ x as u64 ^ y.rotate_left(17);
    if s.use_row {
        h ^= (row as u64).wrapping_mul(0x9E37_79B9);
    }
    if s.use_status {
        h ^= (ctl.status() as u64) << 40;
    }
    if s.kind == SKind::Seq {
        h ^= state.rotate_left(29);
    }
    let h = mix(h);
    if TRACING.load(Ordering::Relaxed) {
        let line =
            format!("{} row {row}: x {x} y {y} status {} state {} h {h:#x}", s.name, ctl.status(), *state);
        TRACE.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    if let Some(m) = s.panic {
        if h % m == 0 {
            panic!("{}", s.panic_message(row));
        }
    }
    if s.kind == SKind::Red {
        *state = state.wrapping_add(h & 0xFFFF);
    }
    if s.write32 {
        *a = if s.kind == SKind::Seq {
            *state as u32
        } else {
            a.wrapping_mul(3).wrapping_add((h >> 7) as u32)
        };
    }
    if s.write64 {
        *b = b.wrapping_mul(5).wrapping_add(h.rotate_left(11));
    }
    let respond = |ctl: &mut C| {
        if let Some((m, code)) = s.respond {
            if (h >> 12) % m == 0 {
                ctl.respond(code);
            }
        }
    };
    if !s.respond_after {
        respond(ctl);
    }
    let reject = s.reject.filter(|&(m, _)| (h >> 20) % m == 0);
    let fail = s.fail.filter(|&m| (h >> 28) % m == 0);
    if let Some((_, code)) = reject {
        ctl.reject(code);
    } else if fail.is_some() {
        ctl.fail(s.fail_message(row));
    }
    if s.respond_after {
        respond(ctl);
    }
}

static TRACING: AtomicBool = AtomicBool::new(false);
static TRACE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Starts recording every stage body call (for diagnosing a failure).
pub fn trace_start() {
    TRACE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    TRACING.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the calls recorded.
pub fn trace_take() -> Vec<String> {
    TRACING.store(false, Ordering::Relaxed);
    std::mem::take(&mut *TRACE.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Where a request stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    pub depth: usize,
    pub failed: bool,
}

/// A request's recorded error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefError {
    pub stage: String,
    pub message: String,
    pub panicked: bool,
}

/// One request of the reference: its fields and control state.
#[derive(Clone, Debug)]
pub struct Req {
    pub a: [u32; N32],
    pub b: [u64; N64],
    pub status: u16,
    pub stop: Option<Stop>,
    /// The error of the request's last failure.
    pub error: Option<RefError>,
    /// Errors of earlier failures that a later one replaced (not compared).
    pub past_errors: Vec<RefError>,
}

/// Compares everything but `past_errors`.
impl PartialEq for Req {
    fn eq(&self, other: &Req) -> bool {
        (self.a, self.b, self.status, self.stop, &self.error)
            == (other.a, other.b, other.status, other.stop, &other.error)
    }
}

impl Req {
    pub fn new(a: [u32; N32], b: [u64; N64]) -> Req {
        Req { a, b, status: 0, stop: None, error: None, past_errors: Vec::new() }
    }

    fn set_error(&mut self, e: RefError) {
        if let Some(old) = self.error.replace(e) {
            self.past_errors.push(old);
        }
    }

    /// The request's outcome, in the executor's terms.
    pub fn outcome(&self) -> Outcome {
        match self.stop {
            None => Outcome::Live { status: self.status },
            Some(Stop { depth, failed: false }) => Outcome::Rejected { depth, status: self.status },
            Some(Stop { depth, failed: true }) => Outcome::Failed { depth, status: self.status },
        }
    }
}

/// The reference's [`Ctl`]: the request's status and stop, and the message of
/// a `fail`.
struct RefCtl {
    status: u16,
    stop: Option<Stop>,
    depth: usize,
    error: Option<String>,
}

impl Ctl for RefCtl {
    fn status(&self) -> u16 {
        self.status
    }
    fn respond(&mut self, status: u16) {
        self.status = status;
    }
    fn reject(&mut self, status: u16) {
        self.status = status;
        self.stop = Some(Stop { depth: self.depth, failed: false });
    }
    fn fail(&mut self, message: String) {
        self.stop = Some(Stop { depth: self.depth, failed: true });
        self.error = Some(message);
    }
}

/// A stage of the reference: a spec and its state (the counter of a
/// sequential stage, the total of a reduction).
pub struct RefStage {
    pub spec: Spec,
    /// Shared so that a test can read it after the layers are boxed.
    pub state: Rc<Cell<u64>>,
}

impl RefStage {
    pub fn new(spec: Spec) -> RefStage {
        RefStage { spec, state: Rc::new(Cell::new(0)) }
    }

    /// Runs the stage on one request. A panic fails the request at `depth`
    /// and leaves its fields and status as they were before the stage.
    pub fn run(&self, req: &mut Req, row: usize, depth: usize) {
        let s = &self.spec;
        let mut ctl = RefCtl { status: req.status, stop: req.stop, depth, error: None };
        let (x, y) = (req.a[s.rd32], req.b[s.rd64]);
        let (mut a, mut b) = (req.a[s.wr32], req.b[s.wr64]);
        let mut state = self.state.get();
        let result =
            catch_unwind(AssertUnwindSafe(|| body(s, x, y, &mut a, &mut b, &mut state, row, &mut ctl)));
        // State changes made before a panic stay, as they do in a real stage.
        self.state.set(state);
        match result {
            Ok(()) => {
                req.a[s.wr32] = a;
                req.b[s.wr64] = b;
                req.status = ctl.status;
                req.stop = ctl.stop;
                if let Some(message) = ctl.error {
                    req.set_error(RefError { stage: s.name.clone(), message, panicked: false });
                }
            }
            Err(payload) => {
                req.stop = Some(Stop { depth, failed: true });
                let message = payload_text(&*payload);
                req.set_error(RefError { stage: s.name.clone(), message, panicked: true });
            }
        }
    }
}

/// A middleware of the reference.
pub trait Middleware {
    fn before(&self, req: &mut Req, row: usize, depth: usize);
    fn after(&self, req: &mut Req, row: usize, depth: usize);
}

/// A layer with an optional before- and after-stage.
pub struct RefLayer {
    pub before: Option<RefStage>,
    pub after: Option<RefStage>,
}

impl Middleware for RefLayer {
    fn before(&self, req: &mut Req, row: usize, depth: usize) {
        if let Some(s) = &self.before {
            s.run(req, row, depth);
        }
    }
    fn after(&self, req: &mut Req, row: usize, depth: usize) {
        if let Some(s) = &self.after {
            s.run(req, row, depth);
        }
    }
}

/// Runs one request through `layers` (outermost first), the layer at the
/// head being at `depth`.
pub fn handle(layers: &[Box<dyn Middleware>], depth: usize, req: &mut Req, row: usize) {
    let Some((outer, inner)) = layers.split_first() else { return };
    outer.before(req, row, depth);
    if req.stop.is_some() {
        return;
    }
    handle(inner, depth + 1, req, row);
    outer.after(req, row, depth);
}

/// Runs a batch of requests, one after the other, in row order.
pub fn run_reference(layers: &[Box<dyn Middleware>], reqs: &mut [Req]) {
    for (row, req) in reqs.iter_mut().enumerate() {
        handle(layers, 0, req, row);
    }
}

/// The text of a panic payload.
pub fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Silences the panic hook for the tests' deliberate panics (messages
/// starting with `boom`); every other panic is reported as usual.
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if payload_text(info.payload()).starts_with("boom") {
                return;
            }
            default(info)
        }));
    });
}

/// A request as the executor left row `row` of `batch`.
pub fn req_of(batch: &Batch, f: &TestFields, row: usize) -> Req {
    let a = f.a.map(|field| batch.column(field).unwrap()[row]);
    let b = f.b.map(|field| batch.column(field).unwrap()[row]);
    let (status, stop) = match batch.outcome(row).expect("row in batch") {
        Outcome::Live { status } => (status, None),
        Outcome::Rejected { depth, status } => (status, Some(Stop { depth, failed: false })),
        Outcome::Failed { depth, status } => (status, Some(Stop { depth, failed: true })),
    };
    let error = batch.error(row).map(|e| RefError {
        stage: e.stage.to_string(),
        message: e.message.clone(),
        panicked: e.panicked,
    });
    Req { a, b, status, stop, error, past_errors: Vec::new() }
}

/// Runs `body` on its own thread; fails if it does not finish in `limit`.
pub fn bounded<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}
