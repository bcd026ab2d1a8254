//! State shared between a store's thread and one of its helper threads (`SnapGenerator`,
//! `SnapApplier`), with a condition variable to wait for it to change.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Watched<S> {
    state: Mutex<S>,
    changed: Condvar,
}

impl<S> Watched<S> {
    /// The state, locked. A panic elsewhere while it was held does not poison it: every
    /// change is a plain field update, complete or not made.
    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiter to look at the state again.
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Releases `guard` until the state changes (or a spurious wake-up).
    pub(crate) fn wait<'a>(&self, guard: MutexGuard<'a, S>) -> MutexGuard<'a, S> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while `busy` holds, for at most `timeout`; returns the state, locked.
    pub(crate) fn wait_while(
        &self,
        timeout: Duration,
        mut busy: impl FnMut(&S) -> bool,
    ) -> MutexGuard<'_, S> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while busy(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state
    }
}
