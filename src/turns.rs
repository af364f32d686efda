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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crate::plan::Plan;

/// Whose turn it is at each ordered group of one pipeline's parallel plan.
pub(crate) struct Turns {
    /// Per group: the index of the run allowed in.
    next: Box<[AtomicU64]>,
    lock: Mutex<()>,
    turned: Condvar,
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
        }
    }

    fn current(&self, group: usize) -> u64 {
        self.next[group].load(Ordering::Acquire)
    }

    /// Waits until run `index` may enter `group`.
    pub(crate) fn wait(&self, group: usize, index: u64) {
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
        self.next[group].store(index + 1, Ordering::Release);
        self.turned.notify_all();
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
