//! Where the stream's workers run
//! ([`Placement`](crate::stream::Placement)): pinned each to a CPU, or kept
//! apart by moving a worker that finds itself on another worker's CPU.
//!
//! Linux only (`sched_getaffinity`, `sched_setaffinity`, `sched_getcpu`);
//! elsewhere a thread cannot be pinned and [`allowed_cpus`] says so, and
//! workers cannot be kept apart.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The CPUs this thread may run on, in increasing order (at least one).
#[cfg(target_os = "linux")]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is a plain array of words; all zeros is the
    // empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the kernel writes at most the
    // given size, which is the size of `set`.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cpus = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below `CPU_SETSIZE`, the number of CPUs `set` holds.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect::<Vec<_>>();
    match cpus.is_empty() {
        true => Err(io::Error::other("the thread may run on no CPU")),
        false => Ok(cpus),
    }
}

/// The CPUs this thread may run on: none can be named off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "pinning threads to CPUs needs Linux"))
}

/// Lets the calling thread run on `cpu` only.
#[cfg(target_os = "linux")]
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no CPU {cpu}")));
    }
    allow_current_thread(&[cpu])
}

/// Never called off Linux: [`allowed_cpus`] fails first.
#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    allowed_cpus().map(drop)
}

/// Lets the calling thread run on any of `cpus` (each below `CPU_SETSIZE`).
#[cfg(target_os = "linux")]
fn allow_current_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below `CPU_SETSIZE` (filtered above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the kernel reads the given size,
    // the size of `set`.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU the calling thread runs on (it may be moved the next moment).
#[cfg(target_os = "linux")]
fn current_cpu() -> Option<usize> {
    // SAFETY: takes nothing, returns the CPU or -1.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// Unknown off Linux.
#[cfg(not(target_os = "linux"))]
fn current_cpu() -> Option<usize> {
    None
}

/// Never called off Linux: [`Apart::new`] returns `None` there.
#[cfg(not(target_os = "linux"))]
fn allow_current_thread(_cpus: &[usize]) -> io::Result<()> {
    allowed_cpus().map(drop)
}

/// Keeps a stream's workers on CPUs apart without pinning them
/// ([`Placement::Apart`](crate::stream::Placement::Apart)).
///
/// Before each batch a worker [`check`](Apart::check)s its CPU. If another
/// busy worker was last seen there, it moves to a CPU with no busy worker;
/// if a batch was handed to the workers from there lately (by a producer),
/// it moves to a CPU with neither a sender nor any worker, busy or
/// waiting. It moves by pinning itself there and at once letting itself run
/// everywhere it could before, so it never stays pinned: the system may
/// move it again, and a thread it starts inherits no pin.
///
/// Why: on two cores the system may leave two busy workers on one core, and
/// the producer and consumer on the other, and move neither while both keep
/// busy; workers that wait for each other's turns then run at half speed or
/// worse. And a worker woken by a producer may take the producer's core
/// while the other core idles, so that the producer cannot hand out the
/// next batches until the worker's batch is done.
pub(crate) struct Apart {
    /// The CPUs the workers may run on; each move restores this set.
    cpus: Vec<usize>,
    /// Per worker, the CPU it last ran a batch on (`NONE`: none yet), with
    /// [`WAITING`] set while it waits for the next.
    seen: Box<[AtomicUsize]>,
    /// Per CPU number, when a thread last handed the workers a batch from
    /// it (nanoseconds after `start`; 0: never).
    sent: Box<[AtomicU64]>,
    /// Per worker, when it last moved (nanoseconds after `start`; 0: never).
    moved: Box<[AtomicU64]>,
    start: Instant,
    moves: AtomicU64,
}

/// No CPU seen.
const NONE: usize = usize::MAX;

/// Set in a worker's [`Apart::seen`] while it waits for a batch.
const WAITING: usize = 1 << (usize::BITS - 2);

/// A CPU a batch was sent from within this long counts as busy with a
/// producer: long enough for producers that take milliseconds to fill a
/// batch to keep their CPUs, short enough that a producer which moved on
/// leaves its old CPU soon.
const SEND_WINDOW: Duration = Duration::from_millis(5);

/// A worker moves at most once per this long: should the system keep
/// putting workers back together (a core busy with other work), that costs
/// at most a move, two system calls, per millisecond.
const MOVE_INTERVAL: Duration = Duration::from_millis(1);

impl Apart {
    /// For `workers` workers started from the calling thread; `None` when
    /// there is nothing to keep apart (one worker or one CPU) or no way to
    /// (off Linux, or under Miri, which runs no scheduler).
    pub(crate) fn new(workers: usize) -> Option<Apart> {
        if cfg!(miri) {
            return None;
        }
        let cpus = allowed_cpus().ok()?;
        (workers > 1 && cpus.len() > 1).then(|| Apart::on(cpus, workers))
    }

    fn on(cpus: Vec<usize>, workers: usize) -> Apart {
        Apart {
            sent: (0..=cpus.iter().max().map_or(0, |&c| c)).map(|_| AtomicU64::new(0)).collect(),
            cpus,
            seen: (0..workers).map(|_| AtomicUsize::new(NONE)).collect(),
            moved: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            start: Instant::now(),
            moves: AtomicU64::new(0),
        }
    }

    /// Called by worker `worker` on its own thread before it runs a batch:
    /// notes its CPU, and moves it if [`destination`](Apart::destination)
    /// names one and it has not moved within [`MOVE_INTERVAL`].
    pub(crate) fn check(&self, worker: usize) {
        let Some(cpu) = current_cpu() else { return };
        self.seen[worker].store(cpu, Ordering::Relaxed);
        let now = self.now();
        let last = self.moved[worker].load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < MOVE_INTERVAL.as_nanos() as u64 {
            return;
        }
        let Some(to) = self.destination(worker, cpu, now) else { return };
        self.moved[worker].store(now, Ordering::Relaxed);
        // Pinned, the thread runs on `to` before the call returns; allowed
        // its CPUs back, it stays there until the system has a reason to
        // move it. Allowing them back is the call that pinning is; should it
        // fail, the worker stays pinned, as with `Placement::Pinned`.
        if pin_current_thread(to).is_ok() {
            self.seen[worker].store(to, Ordering::Relaxed);
            self.moves.fetch_add(1, Ordering::Relaxed);
            let _ = allow_current_thread(&self.cpus);
        }
    }

    /// Where worker `worker`, on `cpu` at time `now`, should move, if
    /// anywhere: off another busy worker's CPU to any CPU without one (one
    /// no batch was sent from lately if there is one: senders come and go,
    /// workers stay); off a CPU a batch was sent from lately to one with
    /// neither a sender nor a worker. A waiting worker counts there: it
    /// takes its next batch on its CPU within microseconds, and a worker
    /// moved onto it would share it then (on two CPUs, two workers kept
    /// moving onto each other's CPU this way, several times a pass).
    fn destination(&self, worker: usize, cpu: usize, now: u64) -> Option<usize> {
        let others = || self.seen.iter().enumerate().filter(move |&(w, _)| w != worker);
        let busy_on = |c: usize| others().any(|(_, s)| s.load(Ordering::Relaxed) == c);
        let last_on = |c: usize| others().any(|(_, s)| s.load(Ordering::Relaxed) & !WAITING == c);
        let sent_from = |c: usize| {
            let at = self.sent.get(c).map_or(0, |at| at.load(Ordering::Relaxed));
            at != 0 && now.saturating_sub(at) < SEND_WINDOW.as_nanos() as u64
        };
        let mut cpus = self.cpus.iter().copied().filter(|&c| c != cpu);
        if busy_on(cpu) {
            cpus.filter(|&c| !busy_on(c)).min_by_key(|&c| sent_from(c))
        } else if sent_from(cpu) {
            cpus.find(|&c| !last_on(c) && !sent_from(c))
        } else {
            None
        }
    }

    /// Worker `worker` waits for a batch: it keeps no CPU busy meanwhile,
    /// but comes back to its own.
    pub(crate) fn idle(&self, worker: usize) {
        let seen = &self.seen[worker];
        let cpu = seen.load(Ordering::Relaxed);
        if cpu != NONE {
            seen.store(cpu | WAITING, Ordering::Relaxed);
        }
    }

    /// Called by a thread about to hand the workers a batch (which may wake
    /// a worker onto its CPU).
    pub(crate) fn note_sender(&self) {
        if let Some(at) = current_cpu().and_then(|cpu| self.sent.get(cpu)) {
            at.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Nanoseconds since `start`, at least 1 (0 means never).
    fn now(&self) -> u64 {
        (self.start.elapsed().as_nanos() as u64).max(1)
    }

    /// How often workers have moved so far.
    pub(crate) fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, target_os = "linux", not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_to_an_allowed_cpu_runs_there_only() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
        let last = *cpus.last().unwrap();
        std::thread::spawn(move || match pin_current_thread(last) {
            Ok(()) => assert_eq!(allowed_cpus().unwrap(), vec![last]),
            // A sandbox may refuse the call; it must say why.
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        })
        .join()
        .unwrap();
        // Only the spawned thread was pinned.
        assert_eq!(allowed_cpus().unwrap(), cpus);
    }

    /// Now, in these tests: 10 ms after `start`.
    const NOW: u64 = 10_000_000;

    /// Apart over `cpus` for `workers` workers, with worker `w` seen on
    /// CPU `seen[w]`, and a batch sent from each CPU of `sent` 1 ms ago.
    fn apart(cpus: usize, seen: &[usize], sent: &[usize]) -> Apart {
        let a = Apart::on((0..cpus).collect(), seen.len());
        for (w, &cpu) in seen.iter().enumerate() {
            a.seen[w].store(cpu, Ordering::Relaxed);
        }
        for &cpu in sent {
            a.sent[cpu].store(NOW - 1_000_000, Ordering::Relaxed);
        }
        a
    }

    #[test]
    fn a_worker_moves_off_another_workers_cpu_to_one_without_a_worker() {
        assert_eq!(apart(3, &[0, 0], &[]).destination(0, 0, NOW), Some(1));
        // Preferably to one no batch was sent from lately.
        assert_eq!(apart(3, &[0, 0], &[1]).destination(0, 0, NOW), Some(2));
        assert_eq!(apart(2, &[0, 0], &[1]).destination(0, 0, NOW), Some(1), "else to one");
        assert_eq!(apart(2, &[0, 1], &[]).destination(0, 0, NOW), None, "alone");
        assert_eq!(apart(2, &[0, 0, 1], &[]).destination(0, 0, NOW), None, "no CPU without a worker");
    }

    #[test]
    fn a_worker_moves_off_a_senders_cpu_only_to_one_with_neither() {
        assert_eq!(apart(3, &[0, NONE], &[0]).destination(0, 0, NOW), Some(1));
        assert_eq!(apart(3, &[0, 1], &[0]).destination(0, 0, NOW), Some(2));
        assert_eq!(apart(2, &[0, 1], &[0]).destination(0, 0, NOW), None, "the other CPU has a worker");
        assert_eq!(apart(2, &[0, NONE], &[0, 1]).destination(0, 0, NOW), None, "both CPUs send");
        assert_eq!(apart(2, &[0, NONE], &[1]).destination(0, 0, NOW), None, "its CPU sends nothing");
        // A send older than the window no longer counts.
        let later = NOW + SEND_WINDOW.as_nanos() as u64;
        assert_eq!(apart(2, &[0, NONE], &[0]).destination(0, 0, later), None);
    }

    #[test]
    fn a_waiting_worker_keeps_no_cpu_busy_but_keeps_its_place() {
        let a = apart(2, &[0, 0], &[]);
        a.idle(1);
        assert_eq!(a.destination(0, 0, NOW), None, "its CPU is not busy");
        let a = apart(2, &[0, 1], &[0]);
        a.idle(1);
        assert_eq!(a.destination(0, 0, NOW), None, "not moved off a sender onto it");
        let a = apart(3, &[0, 1], &[0]);
        a.idle(1);
        assert_eq!(a.destination(0, 0, NOW), Some(2), "to a CPU no worker holds");
        let a = apart(2, &[0, NONE], &[0]);
        a.idle(1);
        assert_eq!(a.destination(0, 0, NOW), Some(1), "one that never ran holds none");
    }

    #[test]
    fn a_sender_is_noted_on_its_cpu() {
        let cpus = allowed_cpus().unwrap();
        let a = Apart::on(cpus.clone(), 2);
        a.note_sender();
        let noted: Vec<usize> =
            (0..a.sent.len()).filter(|&c| a.sent[c].load(Ordering::Relaxed) != 0).collect();
        assert!(noted.len() == 1 && cpus.contains(&noted[0]), "{noted:?}");
    }

    #[test]
    fn a_worker_that_moves_is_left_free_and_moves_at_most_once_a_millisecond() {
        let cpus = allowed_cpus().unwrap();
        if cpus.len() < 2 {
            return;
        }
        std::thread::spawn(move || {
            if let Err(e) = pin_current_thread(cpus[0]) {
                // A sandbox may refuse the call; it must say why.
                assert!(e.raw_os_error().is_some(), "{e}");
                return;
            }
            let a = Apart::on(cpus.clone(), 2);
            let crowd = || a.seen[1].store(current_cpu().unwrap(), Ordering::Relaxed);
            crowd();
            let first = Instant::now();
            a.check(0);
            assert_eq!(a.moves(), 1);
            let to = a.seen[0].load(Ordering::Relaxed);
            assert!(to != a.seen[1].load(Ordering::Relaxed) && cpus.contains(&to));
            assert_eq!(allowed_cpus().unwrap(), cpus, "not left pinned");
            crowd();
            a.check(0);
            // A thread preempted for a millisecond here may move again.
            if first.elapsed() < MOVE_INTERVAL {
                assert_eq!(a.moves(), 1, "moved again within a millisecond");
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinning_to_a_cpu_out_of_range_is_an_error() {
        let err = pin_current_thread(1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
