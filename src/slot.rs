//! A lock-free slot holding at most one boxed value: what the pipeline keeps
//! its idle run scratch in, so a run takes and returns it with one atomic
//! swap each.
//!
//! It is an `AtomicPtr` rather than `crossbeam`'s `AtomicCell<Option<Box<T>>>`:
//! the cell stores the pointer as an integer, which loses its provenance
//! (Miri reports the box as dangling when the cell drops it).

use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// An empty or full slot for one `Box<T>`.
pub(crate) struct BoxSlot<T> {
    /// Null, or a pointer from `Box::into_raw` that the slot owns.
    ptr: AtomicPtr<T>,
    /// Owns a `T` (for drop check) without `AtomicPtr`'s unconditional
    /// `Send`/`Sync`; see the impls below.
    _owns: PhantomData<*mut T>,
}

// SAFETY: the slot owns at most one `Box<T>` and hands it to whichever thread
// takes it, so sending the slot or sharing it between threads moves a `T`
// between threads: sound exactly when `T: Send`. No `&T` is ever handed out
// through a shared slot, so `T: Sync` is not needed.
unsafe impl<T: Send> Send for BoxSlot<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for BoxSlot<T> {}

impl<T> Default for BoxSlot<T> {
    fn default() -> Self {
        BoxSlot { ptr: AtomicPtr::new(ptr::null_mut()), _owns: PhantomData }
    }
}

impl<T> BoxSlot<T> {
    /// Takes the value out, leaving the slot empty.
    pub(crate) fn take(&self) -> Option<Box<T>> {
        // Acquire: the value's contents were published by the `Release` half
        // of the swap that put it in.
        let p = self.ptr.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null pointer in the slot came from `Box::into_raw` in
        // `swap`, and this swap removed it, so no one else can own it.
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }

    /// Puts `value` in and returns what was there.
    pub(crate) fn swap(&self, value: Box<T>) -> Option<Box<T>> {
        let old = self.ptr.swap(Box::into_raw(value), Ordering::AcqRel);
        // SAFETY: as in `take`: the swap removed `old` from the slot.
        (!old.is_null()).then(|| unsafe { Box::from_raw(old) })
    }
}

impl<T> Drop for BoxSlot<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_one_box_and_frees_it_on_drop() {
        let slot = BoxSlot::default();
        assert!(slot.take().is_none());
        assert!(slot.swap(Box::new(String::from("a"))).is_none());
        assert_eq!(slot.swap(Box::new(String::from("b"))).as_deref().map(String::as_str), Some("a"));
        assert_eq!(slot.take().as_deref().map(String::as_str), Some("b"));
        assert!(slot.take().is_none());
        // Dropped full: the box is freed (Miri and leak checkers see it).
        slot.swap(Box::new(String::from("c")));
    }

    #[test]
    fn moves_boxes_between_threads() {
        let slot = BoxSlot::default();
        std::thread::scope(|s| {
            for i in 0..4u64 {
                let slot = &slot;
                s.spawn(move || {
                    for k in 0..50 {
                        if let Some(b) = slot.swap(Box::new(i * 1000 + k)) {
                            assert!(*b < 4000);
                        }
                        drop(slot.take());
                    }
                });
            }
        });
    }
}
