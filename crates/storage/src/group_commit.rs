//! Group commit: many writers that each need durability share one fsync.
//!
//! A writer appends its batch to the journal without syncing, takes a sequence number, and
//! waits until some fsync that started after its append has finished. One writer at a time
//! performs the fsync on behalf of everyone who appended before it started; the rest wait on
//! a condition variable. Under load this turns N fsyncs into roughly one per fsync latency.

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct State {
    /// Sequence number handed to the most recent appended batch.
    appended_seq: u64,
    /// Every batch with a sequence number at or below this one is durable.
    synced_seq: u64,
    /// True while one writer is running the fsync.
    syncing: bool,
    /// Set after an fsync failed: nothing appended since can be promised durable.
    failed: Option<String>,
}

/// Coordinates fsyncs between concurrent writers.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    synced: Condvar,
}

impl GroupCommit {
    /// Records that a batch has been appended (but not synced); returns its sequence number.
    pub(crate) fn appended(&self) -> u64 {
        let mut state = self.state.lock();
        state.appended_seq += 1;
        state.appended_seq
    }

    /// The sequence number of the most recent appended batch.
    pub(crate) fn current(&self) -> u64 {
        self.state.lock().appended_seq
    }

    /// Blocks until the batch with sequence `seq` is durable, running `sync` itself when no
    /// other writer is syncing.
    pub(crate) fn wait_durable(
        &self,
        seq: u64,
        sync: impl Fn() -> Result<(), String>,
    ) -> Result<(), String> {
        let mut state = self.state.lock();
        loop {
            if let Some(err) = &state.failed {
                return Err(err.clone());
            }
            if state.synced_seq >= seq {
                return Ok(());
            }
            if state.syncing {
                self.synced.wait(&mut state);
                continue;
            }
            state.syncing = true;
            let target = state.appended_seq;
            drop(state);
            let result = sync();
            state = self.state.lock();
            state.syncing = false;
            match result {
                Ok(()) => state.synced_seq = state.synced_seq.max(target),
                Err(err) => state.failed = Some(err),
            }
            self.synced.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_writers_share_fsyncs_and_all_become_durable() {
        let gc = Arc::new(GroupCommit::default());
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let gc = gc.clone();
                let syncs = syncs.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let seq = gc.appended();
                        gc.wait_durable(seq, || {
                            syncs.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .unwrap();
                        assert!(gc.state.lock().synced_seq >= seq);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!((1..=800).contains(&n), "fsync count {n}");
    }

    #[test]
    fn a_failed_sync_fails_every_later_waiter() {
        let gc = GroupCommit::default();
        let seq = gc.appended();
        assert!(gc.wait_durable(seq, || Err("disk gone".into())).is_err());
        let seq = gc.appended();
        assert_eq!(gc.wait_durable(seq, || Ok(())), Err("disk gone".into()));
    }
}
