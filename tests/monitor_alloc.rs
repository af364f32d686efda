//! `Monitor::observe` allocates nothing: a counting global allocator (its
//! own test binary, so no other test's allocations interfere) counts the
//! allocations made on this thread while reports are observed — windows
//! filling, baselines learnt, medians taken and alerts raised included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mware::monitor::{Monitor, Statistic};
use mware::prelude::*;
use mware::{RunReport, StageReport};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread by `f`.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(Cell::get)
}

/// A report of the pipeline's stages with made-up times: `slow` multiplies
/// the middle stage's.
fn report(template: &RunReport, slow: u32) -> RunReport {
    let mut r = template.clone();
    for (i, s) in r.stages.iter_mut().enumerate() {
        s.time = Duration::from_micros(10) * if i == 1 { slow } else { 1 };
    }
    r
}

#[test]
fn observe_allocates_nothing() {
    let mut s = SchemaBuilder::new();
    let x = s.hot::<u64>("x");
    let schema = s.build().unwrap();
    let a = stage::parallel("a", Read(x), |_: &u64, _: &mut RowCtl| {});
    let b = stage::parallel("b", Read(x), |_: &u64, _: &mut RowCtl| {});
    let c = stage::parallel("c", Read(x), |_: &u64, _: &mut RowCtl| {});
    let p =
        Pipeline::builder(&schema).before(a).before(b).before(c).threads(1).profile(true).build().unwrap();
    let mut batch = Batch::new(&schema);
    batch.resize(1000);
    let template = p.run(&mut batch).unwrap();
    assert_eq!(template.stages.iter().map(|s: &StageReport| s.rows).collect::<Vec<_>>(), [1000; 3]);
    // Reports are made before counting: only `observe` is measured.
    let fast = report(&template, 1);
    let slow = report(&template, 50);
    let fired = std::sync::Arc::new(AtomicUsize::new(0));
    for statistic in [Statistic::Median, Statistic::Mean] {
        let sink = fired.clone();
        let mut monitor = Monitor::builder(&p)
            .window(8)
            .factor(3.0)
            .statistic(statistic)
            .on_alert(move |_| {
                sink.fetch_add(1, Ordering::Relaxed);
            })
            .build()
            .unwrap();
        fired.store(0, Ordering::Relaxed);
        let n = allocations(|| {
            for run in 0..200 {
                // Windows 0 (baseline) fast, then alternating.
                let r = if run >= 8 && (run / 8) % 2 == 1 { &slow } else { &fast };
                monitor.observe(r);
                let _ = monitor.current(1);
            }
        });
        assert_eq!(n, 0, "{statistic:?}: observe allocated");
        // 25 windows: the first is the baseline, 12 of the others are slow.
        assert_eq!(fired.load(Ordering::Relaxed), 12);
    }
    // The counter works.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}
