//! Counting concurrent connections against a limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Admits at most `max` holders of a [`ConnectionPermit`] at a time.
#[derive(Debug)]
pub(crate) struct ConnectionLimiter {
    active: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted connection; dropping it (even while unwinding from a panic) frees the slot.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    active: Arc<AtomicUsize>,
}

impl ConnectionLimiter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            active: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A permit if fewer than `max` are held, else `None`.
    pub(crate) fn try_acquire(&self) -> Option<ConnectionPermit> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionPermit {
                active: self.active.clone(),
            })
    }

    /// Permits currently held.
    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_max_and_frees_on_drop() {
        let limiter = ConnectionLimiter::new(2);
        let a = limiter.try_acquire().expect("first");
        let b = limiter.try_acquire().expect("second");
        assert!(limiter.try_acquire().is_none());
        assert_eq!(limiter.active(), 2);
        drop(a);
        let c = limiter.try_acquire().expect("slot freed");
        assert!(limiter.try_acquire().is_none());
        drop((b, c));
        assert_eq!(limiter.active(), 0);
    }

    #[test]
    fn zero_admits_nobody() {
        assert!(ConnectionLimiter::new(0).try_acquire().is_none());
    }

    #[test]
    fn permit_freed_when_a_task_panics() {
        let limiter = ConnectionLimiter::new(1);
        let permit = limiter.try_acquire().expect("permit");
        let result = std::thread::spawn(move || {
            let _permit = permit;
            panic!("connection task failure");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(limiter.active(), 0);
    }
}
