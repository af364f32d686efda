//! gateway-8 in bevy_ecs: one entity per request (one component per field),
//! the eight stages as systems chained in one `Schedule`, the quota counters
//! and metrics as resources.
//!
//! Two variants: the single-threaded executor with plain query iteration,
//! and the multi-threaded executor with `par_iter_mut` in every stage that
//! is parallel per entity (auth, validate, route, enrich, handler, timing).
//! Quota is sequential in row order and metrics is a reduction bevy has no
//! parallel form for, so both iterate on one thread in either variant.
//!
//! Throughput: the world is **reused** across batches: its 65,536 request
//! entities are spawned once and their components overwritten with each
//! batch's input (outside the timed region, as mware's batch fill is);
//! the timed region is `Schedule::run`. Query iteration follows table order,
//! which is spawn order here, so the quota stage sees rows in submission
//! order (the checksum would catch it otherwise).
//!
//! Single request: a second world with one entity and its own schedule; each
//! request overwrites the entity, runs the schedule once and reads the
//! response back, all timed.

use std::time::{Duration, Instant};

use bevy_ecs::prelude::*;
use bevy_ecs::query::QueryState;
use bevy_ecs::schedule::{MultiThreadedExecutor, SingleThreadedExecutor};
use mware::gateway8::{
    Columns, Metrics, ROUTES, auth_ok, enrich_score, now_ns, payload_ok, quota_ok, route_cost,
};

use crate::Peer;

#[derive(Component, Default, Clone, Copy)]
pub struct UserId(u64);
#[derive(Component, Default, Clone, Copy)]
pub struct Token(u64);
#[derive(Component, Default, Clone, Copy)]
pub struct Route(u16);
#[derive(Component, Default, Clone, Copy)]
pub struct PayloadLen(u32);
#[derive(Component, Default, Clone, Copy)]
pub struct Ts(u64);
#[derive(Component, Default, Clone, Copy)]
pub struct Status(u16);
#[derive(Component, Default, Clone, Copy)]
pub struct Cost(u32);
#[derive(Component, Default, Clone, Copy)]
pub struct Score(f32);
#[derive(Component, Default, Clone, Copy)]
pub struct Latency(u64);

#[derive(Resource)]
pub struct Now(u64);
#[derive(Resource)]
pub struct Quota([u64; ROUTES]);
#[derive(Resource, Default)]
pub struct MetricsRes(Metrics);

type Request = (UserId, Token, Route, PayloadLen, Ts, Status, Cost, Score, Latency);
type Fill = (
    &'static mut UserId,
    &'static mut Token,
    &'static mut Route,
    &'static mut PayloadLen,
    &'static mut Ts,
    &'static mut Status,
    &'static mut Cost,
    &'static mut Score,
    &'static mut Latency,
);
type Out = (&'static Status, &'static Cost, &'static Score, &'static Latency);

/// A per-entity stage in both forms: `$st` iterates, `$mt` uses `par_iter_mut`.
macro_rules! per_entity {
    ($st:ident, $mt:ident, $q:ty, |$item:pat_param| $body:block) => {
        fn $st(mut q: Query<$q>) {
            for $item in &mut q $body
        }
        fn $mt(mut q: Query<$q>) {
            q.par_iter_mut().for_each(|$item| $body);
        }
    };
}

per_entity!(auth, auth_par, (&UserId, &Token, &mut Status), |(u, t, mut s)| {
    if s.0 == 0 && !auth_ok(u.0, t.0) {
        s.0 = 401;
    }
});
per_entity!(validate, validate_par, (&PayloadLen, &mut Status), |(p, mut s)| {
    if s.0 == 0 && !payload_ok(p.0) {
        s.0 = 413;
    }
});
per_entity!(route, route_par, (&Route, &Status, &mut Cost), |(r, s, mut c)| {
    if s.0 == 0 {
        c.0 = route_cost(r.0);
    }
});
per_entity!(enrich, enrich_par, (&UserId, &Route, &Cost, &Status, &mut Score), |(u, r, c, s, mut sc)| {
    if s.0 == 0 {
        sc.0 = enrich_score(u.0, r.0, c.0);
    }
});
per_entity!(handler, handler_par, &mut Status, |mut s| {
    if s.0 == 0 {
        s.0 = 200;
    }
});

fn quota(mut state: ResMut<Quota>, mut q: Query<(&Route, &Cost, &mut Status)>) {
    let used = &mut state.0;
    for (r, c, mut s) in &mut q {
        if s.0 == 0 && !quota_ok(used, r.0, c.0) {
            s.0 = 429;
        }
    }
}

fn timing(now: Res<Now>, mut q: Query<(&Ts, &mut Latency)>) {
    let now = now.0;
    for (t, mut l) in &mut q {
        l.0 = now - t.0;
    }
}

fn timing_par(now: Res<Now>, mut q: Query<(&Ts, &mut Latency)>) {
    let now = now.0;
    q.par_iter_mut().for_each(|(t, mut l)| l.0 = now - t.0);
}

fn metrics(mut state: ResMut<MetricsRes>, q: Query<(&Status, &Route, &Latency)>) {
    let m = &mut state.0;
    for (s, r, l) in &q {
        m.record(s.0, r.0, l.0);
    }
}

/// One world and the schedule built for it.
struct Gw {
    world: World,
    schedule: Schedule,
    fill: QueryState<Fill>,
    out: QueryState<Out>,
    entities: Vec<Entity>,
}

impl Gw {
    fn new(parallel: bool) -> Gw {
        let mut world = World::new();
        world.insert_resource(Now(0));
        world.insert_resource(Quota([0; ROUTES]));
        world.insert_resource(MetricsRes::default());
        let mut schedule = Schedule::default();
        if parallel {
            bevy_tasks::ComputeTaskPool::get_or_init(bevy_tasks::TaskPool::default);
            schedule.set_executor(MultiThreadedExecutor::new());
            schedule.add_systems(
                (auth_par, validate_par, route_par, enrich_par, quota, handler_par, timing_par, metrics)
                    .chain(),
            );
        } else {
            schedule.set_executor(SingleThreadedExecutor::new());
            schedule.add_systems((auth, validate, route, enrich, quota, handler, timing, metrics).chain());
        }
        schedule.initialize(&mut world).expect("the gateway schedule builds");
        let fill = world.query::<Fill>();
        let out = world.query::<Out>();
        Gw { world, schedule, fill, out, entities: Vec::new() }
    }

    fn reset(&mut self, total_rows: u64) {
        self.world.insert_resource(Now(now_ns(total_rows)));
        self.world.insert_resource(Quota([0; ROUTES]));
        self.world.insert_resource(MetricsRes::default());
    }

    /// Exactly `n` request entities, in spawn order (despawning from the end
    /// keeps the table's order).
    fn ensure(&mut self, n: usize) {
        while self.entities.len() > n {
            let e = self.entities.pop().expect("non-empty");
            self.world.despawn(e);
        }
        if self.entities.len() < n {
            let more = n - self.entities.len();
            self.entities.extend(self.world.spawn_batch((0..more).map(|_| Request::default())));
        }
    }

    /// Writes rows `range` of `cols` into the entities (which must number `range.len()`).
    fn fill(&mut self, cols: &Columns, first: usize) {
        for (i, (mut u, mut t, mut r, mut p, mut ts, mut s, mut c, mut sc, mut l)) in
            self.fill.iter_mut(&mut self.world).enumerate()
        {
            let i = first + i;
            u.0 = cols.user_id[i];
            t.0 = cols.token[i];
            r.0 = cols.route[i];
            p.0 = cols.payload_len[i];
            ts.0 = cols.ts_ns[i];
            s.0 = 0;
            c.0 = 0;
            sc.0 = 0.0;
            l.0 = 0;
        }
    }

    fn read(&mut self, cols: &mut Columns, first: usize) {
        for (i, (s, c, sc, l)) in self.out.iter(&self.world).enumerate() {
            let i = first + i;
            cols.status[i] = s.0;
            cols.cost[i] = c.0;
            cols.score[i] = sc.0;
            cols.latency_ns[i] = l.0;
        }
    }
}

/// The bevy_ecs peer.
pub struct BevyPeer {
    parallel: bool,
    batch: Gw,
    single: Gw,
    /// The world the current run uses.
    single_mode: bool,
}

impl BevyPeer {
    pub fn boxed(parallel: bool) -> Box<dyn Peer> {
        let mut single = Gw::new(parallel);
        single.ensure(1);
        Box::new(BevyPeer { parallel, batch: Gw::new(parallel), single, single_mode: false })
    }
}

impl Peer for BevyPeer {
    fn key(&self) -> &'static str {
        if self.parallel { "bevy-mt" } else { "bevy-st" }
    }
    fn label(&self) -> String {
        if self.parallel {
            "bevy_ecs, multi-threaded executor + par_iter".into()
        } else {
            "bevy_ecs, single-threaded executor".into()
        }
    }
    fn reset(&mut self, total_rows: u64) {
        self.batch.reset(total_rows);
        self.single.reset(total_rows);
    }
    fn batch(&mut self, cols: &mut Columns) -> Duration {
        self.single_mode = false;
        let gw = &mut self.batch;
        gw.ensure(cols.len());
        gw.fill(cols, 0);
        let t = Instant::now();
        gw.schedule.run(&mut gw.world);
        let busy = t.elapsed();
        gw.read(cols, 0);
        busy
    }
    fn singles(&mut self, cols: &mut Columns) -> Duration {
        self.single_mode = true;
        let gw = &mut self.single;
        let t = Instant::now();
        for i in 0..cols.len() {
            gw.fill(cols, i);
            gw.schedule.run(&mut gw.world);
            gw.read(cols, i);
        }
        t.elapsed()
    }
    fn metrics(&self) -> Metrics {
        let gw = if self.single_mode { &self.single } else { &self.batch };
        gw.world.resource::<MetricsRes>().0
    }
}
