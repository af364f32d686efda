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
    /// Taken to pass a turn and to sleep waiting for one. It holds the
    /// wakers a pass is about to wake, kept between passes so that waking
    /// allocates nothing.
    lock: Mutex<Vec<Waker>>,
    turned: Condvar,
    /// Runs awaiting a turn as futures: (group, run, waker), one entry per
    /// run and group however often it is polled. Locked after `lock` when
    /// both are taken.
    wakers: Mutex<Vec<(usize, u64, Waker)>>,
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
            lock: Mutex::new(Vec::new()),
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
        let mut woken = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = index + 1;
        {
            let mut abandoned = self.abandoned.lock().unwrap_or_else(|e| e.into_inner());
            while abandoned.remove(&(group, next)) {
                next += 1;
            }
        }
        self.next[group].store(next, Ordering::Release);
        self.turned.notify_all();
        {
            // Woken after this lock is let go: a waker that polls its
            // future at once takes it again.
            let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            let mut i = 0;
            while i < wakers.len() {
                if wakers[i].0 == group {
                    woken.push(wakers.swap_remove(i).2);
                } else {
                    i += 1;
                }
            }
        }
        woken.drain(..).for_each(Waker::wake);
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
        // Polled again while waiting (a front door polls every run in
        // flight when one wakes): the newest waker replaces the last.
        let (group, index) = (self.group, self.index);
        match wakers.iter_mut().find(|(g, i, _)| (*g, *i) == (group, index)) {
            Some((_, _, waker)) => waker.clone_from(cx.waker()),
            None => wakers.push((group, index, cx.waker().clone())),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;
    use crate::prelude::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_run_polled_often_while_it_waits_is_woken_once() {
        let mut s = SchemaBuilder::new();
        let x = s.hot::<u64>("x");
        let schema = s.build().unwrap();
        let count = stage::sequential("count", Write(x), 0u64, |n: &mut u64, x: &mut u64, _: &mut RowCtl| {
            *n += 1;
            *x = *n;
        });
        let p = Pipeline::builder(&schema).before(count).build().unwrap();
        let group = p.turn.groups.iter().position(|g| g.ordered).expect("an ordered group");
        let turns = Turns::new(&p.turn);
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut run_1 = std::pin::pin!(turns.turn(group, 1));
        for _ in 0..100 {
            assert!(run_1.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(turns.wakers.lock().unwrap().len(), 1, "one waker per waiting run");
        turns.pass(group, 0);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(turns.wakers.lock().unwrap().is_empty());
        assert!(run_1.as_mut().poll(&mut cx).is_ready());
    }
}
