//! Adaptive thread choice: whether a run big enough to split over the pool
//! should, decided from the times of earlier runs
//! ([`PipelineBuilder::adapt_threads`](crate::PipelineBuilder::adapt_threads)).
//!
//! Splitting a run is not always faster: a fused chain with a sequential
//! stage inside has to be cut there, which costs a pass over every chunk,
//! and the pool's threads may not be free cores. Both ways give the same
//! results, so the choice can follow measurements. Runs are sorted into
//! size classes (powers of two of rows × stages above the pipeline's
//! `min_parallel_work`); each class times its first run on one thread and
//! its second split, then takes the way with the lower time per row and
//! re-times the other every `RETIME`th run, so a change of load is
//! noticed.

use std::sync::atomic::{AtomicU64, Ordering};

/// Size classes: rows × stages from `min_parallel_work` up, doubling; the
/// last holds everything above.
const CLASSES: usize = 12;

/// Every this many runs of a class, the slower way is timed again.
const RETIME: u64 = 32;

/// Measured nanoseconds per row of recent runs, one thread and split, per
/// size class. Shared by every run of a pipeline (relaxed atomics: a lost
/// update only delays the choice by a run).
#[derive(Default)]
pub(crate) struct ThreadChoice {
    classes: [Class; CLASSES],
}

#[derive(Default)]
struct Class {
    /// `f64` bits of the moving average, or 0 before the first time.
    serial: AtomicU64,
    split: AtomicU64,
    runs: AtomicU64,
}

impl ThreadChoice {
    fn class(&self, work: usize, min_work: usize) -> &Class {
        let ratio = work / min_work.max(1);
        let i = (usize::BITS - ratio.max(1).leading_zeros() - 1) as usize;
        &self.classes[i.min(CLASSES - 1)]
    }

    /// Whether a run of `work` rows × stages should split.
    pub(crate) fn split(&self, work: usize, min_work: usize) -> bool {
        let class = self.class(work, min_work);
        let n = class.runs.fetch_add(1, Ordering::Relaxed);
        let (serial, split) = (load(&class.serial), load(&class.split));
        if serial == 0.0 {
            return false;
        }
        if split == 0.0 {
            return true;
        }
        let faster = split < serial;
        if n % RETIME == 0 { !faster } else { faster }
    }

    /// Records a run of `work` rows × stages and `rows` rows that took
    /// `nanos`, split or not.
    pub(crate) fn record(&self, work: usize, min_work: usize, split: bool, rows: usize, nanos: u64) {
        let class = self.class(work, min_work);
        let slot = if split { &class.split } else { &class.serial };
        let time = nanos as f64 / rows.max(1) as f64;
        let old = load(slot);
        // A quarter weight: one noisy run does not flip the choice.
        let new = if old == 0.0 { time } else { 0.75 * old + 0.25 * time };
        // Never store 0.0, which means "not timed yet".
        slot.store(new.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: usize = 1000;

    #[test]
    fn times_both_ways_then_takes_the_faster_and_retimes_the_slower() {
        let c = ThreadChoice::default();
        let work = 4 * MIN;
        assert!(!c.split(work, MIN), "first run: one thread");
        c.record(work, MIN, false, 100, 1_000);
        assert!(c.split(work, MIN), "second run: split");
        c.record(work, MIN, true, 100, 3_000);
        // One thread is faster: it is taken, but the split way is timed
        // again once every RETIME runs.
        let picks: Vec<bool> = (2..2 + 2 * RETIME).map(|_| c.split(work, MIN)).collect();
        assert_eq!(picks.iter().filter(|&&s| s).count(), 2, "{picks:?}");
        // Splitting becomes faster (the moving average follows).
        for _ in 0..8 {
            c.record(work, MIN, true, 100, 100);
        }
        let picks: Vec<bool> = (0..RETIME).map(|_| c.split(work, MIN)).collect();
        assert_eq!(picks.iter().filter(|&&s| !s).count(), 1, "{picks:?}");
    }

    #[test]
    fn size_classes_learn_apart() {
        let c = ThreadChoice::default();
        let (small, large) = (MIN, 64 * MIN);
        c.record(small, MIN, false, 10, 10);
        c.record(small, MIN, true, 10, 100);
        c.record(large, MIN, false, 10, 100);
        c.record(large, MIN, true, 10, 10);
        // Past each class's retime slot (its run 0).
        c.split(small, MIN);
        c.split(large, MIN);
        assert!(!c.split(small, MIN));
        assert!(c.split(large, MIN));
        // Beyond the last class, all runs share it.
        assert!(std::ptr::eq(c.class(usize::MAX, MIN), c.class(1 << 40, MIN)));
        // A zero threshold does not divide by zero.
        assert!(std::ptr::eq(c.class(5, 0), c.class(5, 1)));
    }
}
