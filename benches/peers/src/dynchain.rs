//! gateway-8 as a dynamic per-request chain, the design of a typical
//! dynamic-language middleware library (Express/Koa, Rack, WSGI/ASGI
//! middleware): every request gets a fresh context, a string-keyed map of
//! dynamically typed values, and walks an onion of boxed middleware
//! functions `fn(ctx, next)` that call `next` to go inward and do their
//! after-work when it returns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mware::gateway8::{
    Columns, Metrics, ROUTES, auth_ok, enrich_score, now_ns, payload_ok, quota_ok, route_cost,
};

use crate::Peer;

/// A dynamically typed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    U32(u32),
    U16(u16),
    F32(f32),
    /// Part of any dynamic value type; gateway-8 itself has no string field.
    #[allow(dead_code)]
    Str(String),
}

/// The per-request context.
pub type Ctx = HashMap<String, Value>;

/// A middleware: does its before-work, calls `next.run(ctx)` (or not, to
/// short-circuit), does its after-work.
pub type Middleware = Box<dyn Fn(&mut Ctx, Next<'_>)>;

/// The rest of the chain.
pub struct Next<'a> {
    rest: &'a [Middleware],
}

impl Next<'_> {
    /// Runs the next middleware (nothing at the end of the chain).
    pub fn run(self, ctx: &mut Ctx) {
        if let Some((first, rest)) = self.rest.split_first() {
            first(ctx, Next { rest });
        }
    }
}

fn get_u64(ctx: &Ctx, key: &str) -> u64 {
    match ctx.get(key) {
        Some(Value::U64(v)) => *v,
        other => panic!("ctx[{key:?}]: expected u64, found {other:?}"),
    }
}

fn get_u32(ctx: &Ctx, key: &str) -> u32 {
    match ctx.get(key) {
        Some(Value::U32(v)) => *v,
        None => 0,
        other => panic!("ctx[{key:?}]: expected u32, found {other:?}"),
    }
}

fn get_u16(ctx: &Ctx, key: &str) -> u16 {
    match ctx.get(key) {
        Some(Value::U16(v)) => *v,
        other => panic!("ctx[{key:?}]: expected u16, found {other:?}"),
    }
}

fn get_f32(ctx: &Ctx, key: &str) -> f32 {
    match ctx.get(key) {
        Some(Value::F32(v)) => *v,
        None => 0.0,
        other => panic!("ctx[{key:?}]: expected f32, found {other:?}"),
    }
}

fn set(ctx: &mut Ctx, key: &str, value: Value) {
    ctx.insert(key.to_string(), value);
}

/// The eight stages, outermost first.
pub fn chain(now: u64, used: Rc<RefCell<[u64; ROUTES]>>, metrics: Rc<RefCell<Metrics>>) -> Vec<Middleware> {
    vec![
        // 8. metrics (after)
        Box::new(move |ctx, next| {
            next.run(ctx);
            let (s, r, l) = (get_u16(ctx, "status"), get_u16(ctx, "route"), get_u64(ctx, "latency_ns"));
            metrics.borrow_mut().record(s, r, l);
        }),
        // 7. timing (after)
        Box::new(move |ctx, next| {
            next.run(ctx);
            let lat = now - get_u64(ctx, "ts_ns");
            set(ctx, "latency_ns", Value::U64(lat));
        }),
        // 1. auth
        Box::new(|ctx, next| {
            if auth_ok(get_u64(ctx, "user_id"), get_u64(ctx, "token")) {
                next.run(ctx);
            } else {
                set(ctx, "status", Value::U16(401));
            }
        }),
        // 2. validate
        Box::new(|ctx, next| {
            if payload_ok(get_u32(ctx, "payload_len")) {
                next.run(ctx);
            } else {
                set(ctx, "status", Value::U16(413));
            }
        }),
        // 3. route
        Box::new(|ctx, next| {
            let cost = route_cost(get_u16(ctx, "route"));
            set(ctx, "cost", Value::U32(cost));
            next.run(ctx);
        }),
        // 4. enrich
        Box::new(|ctx, next| {
            let score = enrich_score(get_u64(ctx, "user_id"), get_u16(ctx, "route"), get_u32(ctx, "cost"));
            set(ctx, "score", Value::F32(score));
            next.run(ctx);
        }),
        // 5. quota
        Box::new(move |ctx, next| {
            let (r, c) = (get_u16(ctx, "route"), get_u32(ctx, "cost"));
            if quota_ok(&mut used.borrow_mut(), r, c) {
                next.run(ctx);
            } else {
                set(ctx, "status", Value::U16(429));
            }
        }),
        // 6. handler
        Box::new(|ctx, _next| {
            if get_u16(ctx, "status") == 0 {
                set(ctx, "status", Value::U16(200));
            }
        }),
    ]
}

/// The dynamic chain peer.
pub struct DynChain {
    used: Rc<RefCell<[u64; ROUTES]>>,
    metrics: Rc<RefCell<Metrics>>,
    chain: Option<(u64, Vec<Middleware>)>,
}

impl DynChain {
    pub fn boxed() -> Box<dyn Peer> {
        Box::new(DynChain { used: Rc::new(RefCell::new([0; ROUTES])), metrics: Rc::default(), chain: None })
    }
}

impl Peer for DynChain {
    fn key(&self) -> &'static str {
        "dyn"
    }
    fn label(&self) -> String {
        "dynamic chain (HashMap ctx, Box<dyn Fn>)".into()
    }
    fn reset(&mut self, total_rows: u64) {
        *self.used.borrow_mut() = [0; ROUTES];
        *self.metrics.borrow_mut() = Metrics::default();
        if self.chain.as_ref().map(|c| c.0) != Some(total_rows) {
            let chain = chain(now_ns(total_rows), self.used.clone(), self.metrics.clone());
            self.chain = Some((total_rows, chain));
        }
    }
    fn batch(&mut self, cols: &mut Columns) -> Duration {
        let chain = &self.chain.as_ref().expect("reset first").1;
        let t = Instant::now();
        for i in 0..cols.len() {
            let mut ctx = Ctx::new();
            set(&mut ctx, "user_id", Value::U64(cols.user_id[i]));
            set(&mut ctx, "token", Value::U64(cols.token[i]));
            set(&mut ctx, "route", Value::U16(cols.route[i]));
            set(&mut ctx, "payload_len", Value::U32(cols.payload_len[i]));
            set(&mut ctx, "ts_ns", Value::U64(cols.ts_ns[i]));
            set(&mut ctx, "status", Value::U16(0));
            Next { rest: chain }.run(&mut ctx);
            cols.status[i] = get_u16(&ctx, "status");
            cols.cost[i] = get_u32(&ctx, "cost");
            cols.score[i] = get_f32(&ctx, "score");
            cols.latency_ns[i] = get_u64(&ctx, "latency_ns");
        }
        t.elapsed()
    }
    fn metrics(&self) -> Metrics {
        *self.metrics.borrow()
    }
}
