//! Turns: the order in which successive runs of one pipeline enter its
//! ordered groups (sequential and whole-batch stages).
//!
//! A stream runs several batches at once, one per thread. Each ordered
//! group keeps the index of the run allowed in; run `i` waits for it before
//! its first chunk enters the group and hands the group to run `i + 1` after
//! its last chunk left. Everything else of run `i + 1` overlaps with run
//! `i`, and the ordered stages still see rows exactly in submission order.
//!
//! Waiting cannot deadlock as long as run `i - 1` is on a thread of its
//! own that has started: it never waits for a later run. The stream runner
//! guarantees this by taking batches off its queue in order, one per
//! worker thread.
//!
//! Runs driven as futures (`crate::fetch::drive`, async stages) never block
//! a thread on a turn: they await [`Turns::turn`] before a segment, which
//! registers a waker that [`Turns::pass`] wakes. The same argument holds for
//! them as long as run `i - 1` is polled while run `i` waits (the async
//! front door polls every run it has started, and starts runs in order).
//! A run dropped part-way gives up its turns with [`Turns::abandon`], which
//! never waits: a turn not yet reached is marked, and passed on by whoever
//! passes the turn before it.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::plan::Plan;

/// Whose turn it is at each ordered group of one pipeline's plan for runs in turn.
pub(crate) struct Turns {
    /// Per group: the index of the run allowed in.
    next: Box<[AtomicU64]>,
    lock: Mutex<()>,
    turned: Condvar,
    /// Runs awaiting a turn as futures: (group, waker). Locked after `lock`
    /// when both are taken.
    wakers: Mutex<Vec<(usize, Waker)>>,
    /// (group, run) turns given up ahead of time by dropped runs; passed on
    /// as soon as they come (under `lock`).
    abandoned: Mutex<BTreeSet<(usize, u64)>>,
    /// Nanoseconds runs spent waiting for a turn, summed (the clock is read
    /// only when a turn is not free at once).
    waited_ns: AtomicU64,
}

/// A run's place in a sequence of runs sharing [`Turns`].
#[derive(Clone, Copy)]
pub(crate) struct Turn<'t> {
    pub turns: &'t Turns,
    pub index: u64,
}

/// Spins before sleeping: the run before usually leaves the group within a
/// chunk's time, far less than a sleep and wake-up.
const SPINS: u32 = 256;

impl Turns {
    /// Turns for the groups of `plan`, run 0 first everywhere.
    pub(crate) fn new(plan: &Plan) -> Turns {
        Turns {
            next: plan.groups.iter().map(|_| AtomicU64::new(0)).collect(),
            lock: Mutex::new(()),
            turned: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            abandoned: Mutex::new(BTreeSet::new()),
            waited_ns: AtomicU64::new(0),
        }
    }

    fn current(&self, group: usize) -> u64 {
        self.next[group].load(Ordering::Acquire)
    }

    /// Time runs have spent waiting for a turn so far, summed.
    pub(crate) fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed))
    }

    fn add_wait(&self, since: Instant) {
        self.waited_ns.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Waits until run `index` may enter `group`.
    pub(crate) fn wait(&self, group: usize, index: u64) {
        if self.current(group) == index {
            return;
        }
        let since = Instant::now();
        self.wait_slow(group, index);
        self.add_wait(since);
    }

    fn wait_slow(&self, group: usize, index: u64) {
        for spin in 0..SPINS {
            if self.current(group) == index {
                return;
            }
            if spin < SPINS / 2 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.current(group) != index {
            guard = self.turned.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Run `index` left `group`: the next run may enter.
    pub(crate) fn pass(&self, group: usize, index: u64) {
        // Under the lock, so a waiter between its check and its sleep cannot
        // miss the wake-up.
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = index + 1;
        {
            let mut abandoned = self.abandoned.lock().unwrap_or_else(|e| e.into_inner());
            while abandoned.remove(&(group, next)) {
                next += 1;
            }
        }
        self.next[group].store(next, Ordering::Release);
        self.turned.notify_all();
        let woken: Vec<Waker> = {
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            if wakers.is_empty() {
                return;
            }
            let (mine, rest) = std::mem::take(&mut *wakers).into_iter().partition(|(g, _)| *g == group);
            *wakers = rest;
            mine.into_iter().map(|(_, w)| w).collect()
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// Resolves once run `index` may enter `group`, without blocking the
    /// thread (for runs driven as futures).
    pub(crate) fn turn(&self, group: usize, index: u64) -> TurnFuture<'_> {
        TurnFuture { turns: self, group, index, since: None }
    }

    /// Gives up run `index`'s turns at every ordered group of `plan` it has
    /// not passed yet, without waiting: a turn already reached is passed
    /// now, a later one is marked and passed on by the run before it.
    pub(crate) fn abandon(&self, plan: &Plan, index: u64) {
        for (g, group) in plan.groups.iter().enumerate() {
            if !group.ordered {
                continue;
            }
            let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.current(g);
            if current == index {
                drop(guard);
                self.pass(g, index);
            } else if current < index {
                self.abandoned.lock().unwrap_or_else(|e| e.into_inner()).insert((g, index));
            }
        }
    }
}

/// See [`Turns::turn`].
pub(crate) struct TurnFuture<'t> {
    turns: &'t Turns,
    group: usize,
    index: u64,
    /// When the first poll found the turn taken.
    since: Option<Instant>,
}

impl Future for TurnFuture<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = self.turns;
        let ready = |f: &Self| {
            if let Some(since) = f.since {
                t.add_wait(since);
            }
            Poll::Ready(())
        };
        if t.current(self.group) == self.index {
            return ready(&self);
        }
        let mut wakers = t.wakers.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the wakers' lock: `pass` stores the new turn
        // before it takes this lock to wake, so either the store is seen
        // here or the waker registered here is woken.
        if t.current(self.group) == self.index {
            drop(wakers);
            return ready(&self);
        }
        wakers.push((self.group, cx.waker().clone()));
        self.since.get_or_insert_with(Instant::now);
        Poll::Pending
    }
}

impl Turns {
    /// Lets run `index` pass every ordered group of `plan` it has not passed
    /// yet, in turn, without running anything: for a run that cannot start
    /// or stopped half-way.
    pub(crate) fn skip(&self, plan: &Plan, index: u64) {
        for (g, group) in plan.groups.iter().enumerate() {
            if group.ordered && self.current(g) <= index {
                self.wait(g, index);
                self.pass(g, index);
            }
        }
    }
}

/// Passes every ordered group a run has not passed yet if the run unwinds
/// (forgotten on the normal path), so later runs never wait for it forever.
pub(crate) struct PassOnUnwind<'t> {
    pub turns: &'t Turns,
    pub index: u64,
    pub plan: &'t Plan,
}

impl Drop for PassOnUnwind<'_> {
    fn drop(&mut self) {
        self.turns.skip(self.plan, self.index);
    }
}

/// Gives up every turn a run driven as a future has not passed if the
/// future is dropped part-way (forgotten on the normal path); never blocks.
pub(crate) struct AbandonOnDrop<'t> {
    pub turns: &'t Turns,
    pub index: u64,
    pub plan: &'t Plan,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        self.turns.abandon(self.plan, self.index);
    }
}
