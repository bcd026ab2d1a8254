//! The emptiness checks of regions this store leads that are frozen for a merge (see
//! `Shared::merge_source_empty`), with a bound on how many run at once: each scans a
//! whole region on a blocking thread, through every tombstone a dropped table left.

use std::collections::HashMap;

use flotilla_proto::metapb::RegionEpoch;
use parking_lot::Mutex;

/// What `MergeChecks::admit` says about a frozen region.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Checked at this epoch (`Some`: whether it is empty), or being checked (`None`).
    Known(Option<bool>),
    /// Not checked at this epoch: the caller starts the check, then calls `finish`.
    Start,
    /// `max_running` checks run already: asked again at the next heartbeat.
    Busy,
}

pub(super) struct MergeChecks {
    max_running: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By region: the frozen epoch checked, and the answer (`None` while it runs).
    answers: HashMap<u64, (Option<RegionEpoch>, Option<bool>)>,
    /// Checks started and not finished (those of regions forgotten meanwhile included).
    running: usize,
}

impl MergeChecks {
    /// At most `max_running` (at least 1) checks at once.
    pub(super) fn new(max_running: usize) -> Self {
        Self {
            max_running: max_running.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(super) fn admit(&self, region_id: u64, epoch: Option<RegionEpoch>) -> Admit {
        let mut inner = self.inner.lock();
        if let Some((checked, empty)) = inner.answers.get(&region_id)
            && *checked == epoch
        {
            return Admit::Known(*empty);
        }
        if inner.running >= self.max_running {
            return Admit::Busy;
        }
        inner.running += 1;
        inner.answers.insert(region_id, (epoch, None));
        Admit::Start
    }

    /// A started check ended: `Some(empty)`, or `None` when it failed (the next heartbeat
    /// checks again).
    pub(super) fn finish(&self, region_id: u64, epoch: Option<RegionEpoch>, empty: Option<bool>) {
        let mut inner = self.inner.lock();
        inner.running = inner.running.saturating_sub(1);
        let current = inner
            .answers
            .get(&region_id)
            .is_some_and(|(checked, _)| *checked == epoch);
        match empty {
            Some(empty) if current => {
                inner.answers.insert(region_id, (epoch, Some(empty)));
            }
            None if current => {
                inner.answers.remove(&region_id);
            }
            _ => {}
        }
    }

    /// Forgets the regions `keep` says no (no longer frozen, or no longer led here).
    pub(super) fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.inner.lock().answers.retain(|id, _| keep(*id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(version: u64) -> Option<RegionEpoch> {
        Some(RegionEpoch {
            conf_ver: 1,
            version,
        })
    }

    #[test]
    fn no_more_than_the_bound_run_and_a_finished_one_makes_room() {
        let checks = MergeChecks::new(2);
        assert_eq!(checks.admit(1, epoch(5)), Admit::Start);
        assert_eq!(checks.admit(2, epoch(5)), Admit::Start);
        assert_eq!(checks.admit(3, epoch(5)), Admit::Busy);
        // Running ones are known, answer pending; asking again starts nothing.
        assert_eq!(checks.admit(1, epoch(5)), Admit::Known(None));
        checks.finish(1, epoch(5), Some(true));
        assert_eq!(checks.admit(1, epoch(5)), Admit::Known(Some(true)));
        assert_eq!(checks.admit(3, epoch(5)), Admit::Start);
        assert_eq!(checks.admit(4, epoch(5)), Admit::Busy);
    }

    #[test]
    fn a_region_forgotten_while_checked_still_holds_its_slot_until_the_check_ends() {
        let checks = MergeChecks::new(1);
        assert_eq!(checks.admit(1, epoch(5)), Admit::Start);
        checks.retain(|_| false);
        assert_eq!(checks.admit(2, epoch(5)), Admit::Busy);
        checks.finish(1, epoch(5), Some(false));
        // Its late answer is not kept: the region was forgotten.
        assert_eq!(checks.admit(2, epoch(5)), Admit::Start);
        checks.finish(2, epoch(5), Some(false));
        assert_eq!(checks.admit(1, epoch(5)), Admit::Start);
    }

    #[test]
    fn a_new_epoch_or_a_failed_check_is_checked_again() {
        let checks = MergeChecks::new(4);
        assert_eq!(checks.admit(1, epoch(5)), Admit::Start);
        // Rolled back and frozen again while the first check runs: a new epoch, a new
        // check, and the old epoch's answer does not land on it.
        assert_eq!(checks.admit(1, epoch(7)), Admit::Start);
        checks.finish(1, epoch(5), Some(true));
        assert_eq!(checks.admit(1, epoch(7)), Admit::Known(None));
        // A check that failed is started again.
        checks.finish(1, epoch(7), None);
        assert_eq!(checks.admit(1, epoch(7)), Admit::Start);
        checks.finish(1, epoch(7), Some(false));
        assert_eq!(checks.admit(1, epoch(7)), Admit::Known(Some(false)));
    }
}
