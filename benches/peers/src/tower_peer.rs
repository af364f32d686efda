//! gateway-8 as a tower stack: one `Layer` + `Service` per stage, composed
//! with `ServiceBuilder`, called once per request.
//!
//! Before-stages (auth, validate, route, enrich, quota) act in `call` and
//! short-circuit by returning a ready response without calling the inner
//! service; after-stages (timing, metrics) act in their response future,
//! after the inner future has completed, as tower middleware does. The
//! futures are generic over the inner future, so the whole stack is one
//! monomorphised type the compiler can inline; it is driven without an async
//! runtime: `poll_ready`, `call`, then one `poll` of the returned future with
//! a no-op waker (every future here is ready on its first poll).
//!
//! The stateful stages (quota counters, metrics) keep their state behind a
//! [`Shared`] handle: `Rc<RefCell<_>>` (single-threaded, the cheapest honest
//! form) or `Arc<Mutex<_>>` (what a `Send + Clone` service in a
//! multi-threaded server needs). Like ordinary tower middleware, the metrics
//! future holds its own clone of the handle.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mware::gateway8::{
    Columns, Metrics, ROUTES, auth_ok, enrich_score, now_ns, payload_ok, quota_ok, route_cost,
};
use tower::{Layer, Service, ServiceBuilder};

use crate::Peer;

/// The request context: the request going in, the response coming out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx {
    pub user_id: u64,
    pub token: u64,
    pub ts_ns: u64,
    pub latency_ns: u64,
    pub payload_len: u32,
    pub cost: u32,
    pub score: f32,
    pub route: u16,
    pub status: u16,
}

/// Shared mutable state of a stage.
pub trait Shared<T>: Clone {
    fn fresh(value: T) -> Self;
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
}

impl<T> Shared<T> for Rc<RefCell<T>> {
    fn fresh(value: T) -> Self {
        Rc::new(RefCell::new(value))
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.borrow_mut())
    }
}

impl<T> Shared<T> for Arc<Mutex<T>> {
    fn fresh(value: T) -> Self {
        Arc::new(Mutex::new(value))
    }
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock().expect("stage state poisoned"))
    }
}

// ---------------------------------------------------------------- futures

/// The future of a before-stage: an early response (short-circuit) or the
/// inner service's future.
pub enum BeforeFuture<F> {
    Done(Option<Ctx>),
    Inner(F),
}

impl<F: Future<Output = Result<Ctx, Infallible>> + Unpin> Future for BeforeFuture<F> {
    type Output = Result<Ctx, Infallible>;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            BeforeFuture::Done(ctx) => Poll::Ready(Ok(ctx.take().expect("polled after completion"))),
            BeforeFuture::Inner(f) => Pin::new(f).poll(cx),
        }
    }
}

/// The future of the timing after-stage.
pub struct TimingFuture<F> {
    inner: F,
    now: u64,
}

impl<F: Future<Output = Result<Ctx, Infallible>> + Unpin> Future for TimingFuture<F> {
    type Output = Result<Ctx, Infallible>;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(Ok(mut ctx)) => {
                ctx.latency_ns = this.now - ctx.ts_ns;
                Poll::Ready(Ok(ctx))
            }
            other => other,
        }
    }
}

/// The future of the metrics after-stage.
pub struct MetricsFuture<F, M> {
    inner: F,
    metrics: M,
}

impl<F: Future<Output = Result<Ctx, Infallible>> + Unpin, M: Shared<Metrics> + Unpin> Future
    for MetricsFuture<F, M>
{
    type Output = Result<Ctx, Infallible>;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(Ok(ctx)) => {
                this.metrics.with(|m| m.record(ctx.status, ctx.route, ctx.latency_ns));
                Poll::Ready(Ok(ctx))
            }
            other => other,
        }
    }
}

// ---------------------------------------------------------------- layers

macro_rules! forward_ready {
    () => {
        #[inline]
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.inner.poll_ready(cx)
        }
    };
}

/// Stage 8 (after, outermost): the metrics reduction.
#[derive(Clone)]
pub struct MetricsLayer<M>(pub M);
#[derive(Clone)]
pub struct MetricsService<S, M> {
    inner: S,
    metrics: M,
}
impl<S, M: Clone> Layer<S> for MetricsLayer<M> {
    type Service = MetricsService<S, M>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, metrics: self.0.clone() }
    }
}
impl<S, M> Service<Ctx> for MetricsService<S, M>
where
    S: Service<Ctx, Response = Ctx, Error = Infallible>,
    S::Future: Unpin,
    M: Shared<Metrics> + Unpin,
{
    type Response = Ctx;
    type Error = Infallible;
    type Future = MetricsFuture<S::Future, M>;
    forward_ready!();
    #[inline]
    fn call(&mut self, req: Ctx) -> Self::Future {
        MetricsFuture { inner: self.inner.call(req), metrics: self.metrics.clone() }
    }
}

/// Stage 7 (after): the latency.
#[derive(Clone)]
pub struct TimingLayer(pub u64);
#[derive(Clone)]
pub struct TimingService<S> {
    inner: S,
    now: u64,
}
impl<S> Layer<S> for TimingLayer {
    type Service = TimingService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TimingService { inner, now: self.0 }
    }
}
impl<S> Service<Ctx> for TimingService<S>
where
    S: Service<Ctx, Response = Ctx, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Ctx;
    type Error = Infallible;
    type Future = TimingFuture<S::Future>;
    forward_ready!();
    #[inline]
    fn call(&mut self, req: Ctx) -> Self::Future {
        TimingFuture { inner: self.inner.call(req), now: self.now }
    }
}

/// A before-stage that may reject: `check` returns the status to answer with.
macro_rules! rejecting_layer {
    ($layer:ident, $service:ident, $doc:literal, |$req:ident| $check:expr) => {
        #[doc = $doc]
        #[derive(Clone)]
        pub struct $layer;
        #[derive(Clone)]
        pub struct $service<S> {
            inner: S,
        }
        impl<S> Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> Self::Service {
                $service { inner }
            }
        }
        impl<S> Service<Ctx> for $service<S>
        where
            S: Service<Ctx, Response = Ctx, Error = Infallible>,
            S::Future: Unpin,
        {
            type Response = Ctx;
            type Error = Infallible;
            type Future = BeforeFuture<S::Future>;
            forward_ready!();
            #[inline]
            fn call(&mut self, mut $req: Ctx) -> Self::Future {
                let reject: Option<u16> = $check;
                match reject {
                    Some(status) => {
                        $req.status = status;
                        BeforeFuture::Done(Some($req))
                    }
                    None => BeforeFuture::Inner(self.inner.call($req)),
                }
            }
        }
    };
}

rejecting_layer!(AuthLayer, AuthService, "Stage 1: the token check.", |req| {
    (!auth_ok(req.user_id, req.token)).then_some(401)
});
rejecting_layer!(ValidateLayer, ValidateService, "Stage 2: the body size limit.", |req| {
    (!payload_ok(req.payload_len)).then_some(413)
});

/// Stages 3 and 4 transform the request and pass it on.
macro_rules! mapping_layer {
    ($layer:ident, $service:ident, $doc:literal, |$req:ident| $body:expr) => {
        #[doc = $doc]
        #[derive(Clone)]
        pub struct $layer;
        #[derive(Clone)]
        pub struct $service<S> {
            inner: S,
        }
        impl<S> Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> Self::Service {
                $service { inner }
            }
        }
        impl<S> Service<Ctx> for $service<S>
        where
            S: Service<Ctx, Response = Ctx, Error = Infallible>,
        {
            type Response = Ctx;
            type Error = Infallible;
            type Future = S::Future;
            forward_ready!();
            #[inline]
            fn call(&mut self, mut $req: Ctx) -> Self::Future {
                $body;
                self.inner.call($req)
            }
        }
    };
}

mapping_layer!(RouteLayer, RouteService, "Stage 3: the route's cost.", |req| {
    req.cost = route_cost(req.route)
});
mapping_layer!(EnrichLayer, EnrichService, "Stage 4: the score.", |req| {
    req.score = enrich_score(req.user_id, req.route, req.cost)
});

/// Stage 5: the per-route quota (sequential state shared by every call).
#[derive(Clone)]
pub struct QuotaLayer<Q>(pub Q);
#[derive(Clone)]
pub struct QuotaService<S, Q> {
    inner: S,
    used: Q,
}
impl<S, Q: Clone> Layer<S> for QuotaLayer<Q> {
    type Service = QuotaService<S, Q>;
    fn layer(&self, inner: S) -> Self::Service {
        QuotaService { inner, used: self.0.clone() }
    }
}
impl<S, Q> Service<Ctx> for QuotaService<S, Q>
where
    S: Service<Ctx, Response = Ctx, Error = Infallible>,
    S::Future: Unpin,
    Q: Shared<[u64; ROUTES]>,
{
    type Response = Ctx;
    type Error = Infallible;
    type Future = BeforeFuture<S::Future>;
    forward_ready!();
    #[inline]
    fn call(&mut self, mut req: Ctx) -> Self::Future {
        if self.used.with(|u| quota_ok(u, req.route, req.cost)) {
            BeforeFuture::Inner(self.inner.call(req))
        } else {
            req.status = 429;
            BeforeFuture::Done(Some(req))
        }
    }
}

/// Stage 6: the handler (only reached by requests nobody rejected).
#[derive(Clone)]
pub struct Handler;
impl Service<Ctx> for Handler {
    type Response = Ctx;
    type Error = Infallible;
    type Future = Ready<Result<Ctx, Infallible>>;
    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    #[inline]
    fn call(&mut self, mut req: Ctx) -> Self::Future {
        if req.status == 0 {
            req.status = 200;
        }
        ready(Ok(req))
    }
}

/// Builds the eight-stage stack, outermost layer first.
pub fn stack<Q, M>(
    now: u64,
    quota: Q,
    metrics: M,
) -> impl Service<Ctx, Response = Ctx, Error = Infallible, Future: Unpin> + Clone
where
    Q: Shared<[u64; ROUTES]>,
    M: Shared<Metrics> + Unpin,
{
    ServiceBuilder::new()
        .layer(MetricsLayer(metrics))
        .layer(TimingLayer(now))
        .layer(AuthLayer)
        .layer(ValidateLayer)
        .layer(RouteLayer)
        .layer(EnrichLayer)
        .layer(QuotaLayer(quota))
        .service(Handler)
}

/// One request through a service, without an async runtime.
#[inline(always)]
pub fn call_now<S>(svc: &mut S, req: Ctx) -> Ctx
where
    S: Service<Ctx, Response = Ctx, Error = Infallible>,
    S::Future: Unpin,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Pending => panic!("gateway stack not ready"),
    }
    let mut fut = svc.call(req);
    match Pin::new(&mut fut).poll(&mut cx) {
        Poll::Ready(Ok(resp)) => resp,
        Poll::Pending => panic!("gateway stack future pending"),
    }
}

/// Every row of `cols` through `svc`, one call per request.
#[inline(never)]
fn run_rows<S>(svc: &mut S, cols: &mut Columns) -> Duration
where
    S: Service<Ctx, Response = Ctx, Error = Infallible>,
    S::Future: Unpin,
{
    let t = Instant::now();
    for i in 0..cols.len() {
        let req = Ctx {
            user_id: cols.user_id[i],
            token: cols.token[i],
            ts_ns: cols.ts_ns[i],
            payload_len: cols.payload_len[i],
            route: cols.route[i],
            ..Ctx::default()
        };
        let resp = call_now(svc, req);
        cols.status[i] = resp.status;
        cols.cost[i] = resp.cost;
        cols.score[i] = resp.score;
        cols.latency_ns[i] = resp.latency_ns;
    }
    t.elapsed()
}

/// tower with `Rc<RefCell<_>>` state.
pub fn rc() -> Box<dyn Peer> {
    type Q = Rc<RefCell<[u64; ROUTES]>>;
    type M = Rc<RefCell<Metrics>>;
    peer::<Q, M>("tower-rc", "tower, Rc<RefCell> state")
}

/// tower with `Arc<Mutex<_>>` state (a `Send` service).
pub fn arc() -> Box<dyn Peer> {
    type Q = Arc<Mutex<[u64; ROUTES]>>;
    type M = Arc<Mutex<Metrics>>;
    fn assert_send<T: Send + Sync + Clone>(_: &T) {}
    assert_send(&stack(1, Q::fresh([0; ROUTES]), M::fresh(Metrics::default())));
    peer::<Q, M>("tower-arc", "tower, Arc<Mutex> state")
}

fn peer<Q, M>(key: &'static str, label: &'static str) -> Box<dyn Peer>
where
    Q: Shared<[u64; ROUTES]> + 'static,
    M: Shared<Metrics> + Unpin + 'static,
{
    // The service type is unnameable (`impl Service`); capture it through a
    // closure-built peer.
    struct Impl<Q, M, S, F> {
        key: &'static str,
        label: &'static str,
        quota: Q,
        metrics: M,
        make: F,
        svc: Option<(u64, S)>,
    }
    impl<Q, M, S, F> Peer for Impl<Q, M, S, F>
    where
        Q: Shared<[u64; ROUTES]>,
        M: Shared<Metrics>,
        S: Service<Ctx, Response = Ctx, Error = Infallible>,
        S::Future: Unpin,
        F: Fn(u64, &Q, &M) -> S,
    {
        fn key(&self) -> &'static str {
            self.key
        }
        fn label(&self) -> String {
            self.label.into()
        }
        fn reset(&mut self, total_rows: u64) {
            self.quota.with(|u| *u = [0; ROUTES]);
            self.metrics.with(|m| *m = Metrics::default());
            if self.svc.as_ref().map(|s| s.0) != Some(total_rows) {
                self.svc = Some((total_rows, (self.make)(total_rows, &self.quota, &self.metrics)));
            }
        }
        fn batch(&mut self, cols: &mut Columns) -> Duration {
            run_rows(&mut self.svc.as_mut().expect("reset first").1, cols)
        }
        fn metrics(&self) -> Metrics {
            self.metrics.with(|m| *m)
        }
    }
    Box::new(Impl {
        key,
        label,
        quota: Q::fresh([0; ROUTES]),
        metrics: M::fresh(Metrics::default()),
        make: |rows, q: &Q, m: &M| stack(now_ns(rows), q.clone(), m.clone()),
        svc: None,
    })
}
