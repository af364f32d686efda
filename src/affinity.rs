//! Pinning threads to CPUs, for the stream's workers
//! ([`StreamBuilder::pin_workers`](crate::stream::StreamBuilder::pin_workers)).
//!
//! Linux only (`sched_getaffinity`, `sched_setaffinity`); elsewhere a
//! thread cannot be pinned and [`allowed_cpus`] says so.

use std::io;

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
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below `CPU_SETSIZE` (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the kernel reads the given size,
    // the size of `set`.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Never called off Linux: [`allowed_cpus`] fails first.
#[cfg(not(target_os = "linux"))]
pub(crate) fn pin_current_thread(_cpu: usize) -> io::Result<()> {
    allowed_cpus().map(drop)
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

    #[test]
    fn pinning_to_a_cpu_out_of_range_is_an_error() {
        let err = pin_current_thread(1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
