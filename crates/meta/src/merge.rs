//! Region merge, as the meta leader drives it: a region whose range holds no live
//! table's keys (a dropped table's, a truncated table's old storage, the gap between two
//! tables) is folded into its left neighbour, so dropping and truncating tables does not
//! leave ever more Raft groups behind (each table starts in a region of its own).
//!
//! Three steps, each asked in a region heartbeat's answer and applied through a Raft log
//! (`flotilla_raftstore`): the region is frozen by a prepare-merge; once its leader reports
//! the frozen region holds no data at all (checked off its store thread: a frozen region
//! applies no writes), the neighbour absorbs it by a commit-merge, proposed at the
//! neighbour's epoch the meta service saw it colocated at; or the freeze is rolled back
//! (the region holds data, or the neighbour moved). Nothing here is persisted: every decision follows from
//! the regions' reported state, so a new meta leader carries on where the last stopped.
//!
//! Why a rollback is safe: a commit-merge is only ever sent with an epoch of the
//! neighbour at which both regions had their voters on the same stores, as this leader
//! (or an earlier one: region records are persisted before an answer) saw it, and
//! applies only at exactly that epoch. A rollback is sent only when the newest epoch
//! seen of the neighbour is not colocated: every commit-merge sent had an older epoch,
//! which the neighbour has left for good.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flotilla_proto::metapb::{PeerRole, Region, RegionEpoch};
use flotilla_raftstore::is_merging;

use crate::state::{MetaData, RegionRec};

/// A prepare-merge not seen applied within this long was refused (the region changed
/// meanwhile) or lost: the region waits `MergeConfig::after` again before the next
/// attempt, as after a rollback.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds of region merge (`MetaConfig::region_merge_after`, `region_merges_max`).
#[derive(Debug, Clone, Copy)]
pub struct MergeConfig {
    /// How long a region holds no live table's keys before it is merged; zero: never.
    pub after: Duration,
    /// Merges under way at once, cluster-wide (prepared or frozen).
    pub max: usize,
}

/// What a region's leader should do for a merge.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeStep {
    /// Freeze the region (its right side of a merge).
    Prepare,
    /// Absorb `source`, the frozen right neighbour, at this region's epoch `epoch`.
    Commit { source: Region, epoch: RegionEpoch },
    /// Unfreeze the region.
    Rollback,
}

/// The key ranges (encoded, `[start, end)`) that live tables' keys lie in, sorted and
/// disjoint, for the catalog version they were computed at.
pub type LiveRanges = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// The leader's merge bookkeeping, all bounded by the number of regions it knows or by
/// `MergeConfig::max`.
#[derive(Default)]
pub struct MergeState {
    /// When each region was first seen holding no live table's keys.
    dead_since: HashMap<u64, Instant>,
    /// Prepare-merges asked and not yet seen applied, by region.
    prepares: HashMap<u64, Instant>,
    /// Commit-merges to ask of a region's leader: absorbing region -> (source, epoch).
    commits: HashMap<u64, (Region, RegionEpoch)>,
    /// See `LiveRanges`.
    pub live: Option<LiveRanges>,
}

impl MergeState {
    /// The merge step for `region_id`, whose leader just sent a periodic heartbeat.
    /// `quiet`: the region has no pending peer and no replica move or repair of its own.
    /// `empty`: whether the region, if frozen, holds no data, as its leader found
    /// (`None`: not found yet).
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        data: &MetaData,
        region_id: u64,
        quiet: bool,
        empty: Option<bool>,
        cfg: MergeConfig,
        replication: usize,
        now: Instant,
    ) -> Option<MergeStep> {
        if self.dead_since.len() > data.regions.len() + 64 {
            self.dead_since
                .retain(|id, _| data.regions.contains_key(id));
        }
        // A region merged away meanwhile (both are bounded by `MergeConfig::max`).
        self.prepares.retain(|id, _| data.regions.contains_key(id));
        self.commits
            .retain(|id, (s, _)| data.regions.contains_key(id) && data.regions.contains_key(&s.id));
        let rec = data.regions.get(&region_id)?;
        let region = &rec.region;
        // This region absorbs a frozen neighbour.
        if let Some((source, epoch)) = self.commits.get(&region_id) {
            if region.epoch.as_ref() == Some(epoch) && !is_merging(region) {
                return Some(MergeStep::Commit {
                    source: source.clone(),
                    epoch: *epoch,
                });
            }
            // It moved on: merged, or changed so that this commit can never apply.
            self.commits.remove(&region_id);
        }
        if is_merging(region) {
            self.prepares.remove(&region_id);
            if empty == Some(false) {
                // Its dropped data is not all deleted yet: it waits `after` again.
                self.commits.retain(|_, (s, _)| s.id != region_id);
                self.dead_since.insert(region_id, now);
                return Some(MergeStep::Rollback);
            }
            let left = left_neighbour(data, region)?;
            if is_merging(&left.region) {
                // It goes into its own left neighbour first.
                return None;
            }
            if colocated(&left.region, region, replication) {
                if empty != Some(true) {
                    // Its leader has not checked it yet.
                    return None;
                }
                if left.leader.is_some() {
                    let epoch = left.region.epoch.unwrap_or_default();
                    self.commits.insert(left.region.id, (region.clone(), epoch));
                }
                return None;
            }
            self.commits.retain(|_, (s, _)| s.id != region_id);
            self.dead_since.insert(region_id, now);
            return Some(MergeStep::Rollback);
        }
        if cfg.after.is_zero() || region.end_key.is_empty() {
            // The last region holds every table still to come.
            return None;
        }
        let live = self.live.as_ref().map(|(_, r)| &r[..]).unwrap_or(&[]);
        if holds_live_keys(region, live) {
            self.dead_since.remove(&region_id);
            return None;
        }
        let since = *self.dead_since.entry(region_id).or_insert(now);
        if let Some(asked) = self.prepares.get(&region_id) {
            if now.duration_since(*asked) >= PREPARE_TIMEOUT {
                self.prepares.remove(&region_id);
                self.dead_since.insert(region_id, now);
            }
            return None;
        }
        if now.duration_since(since) < cfg.after
            || !quiet
            || self.prepares.len() + self.commits.len() >= cfg.max
        {
            return None;
        }
        let left = left_neighbour(data, region)?;
        if is_merging(&left.region)
            || left.leader.is_none()
            || !colocated(&left.region, region, replication)
        {
            return None;
        }
        self.prepares.insert(region_id, now);
        Some(MergeStep::Prepare)
    }
}

/// The region that ends where `region` starts, if the leader knows one.
fn left_neighbour<'a>(data: &'a MetaData, region: &Region) -> Option<&'a RegionRec> {
    if region.start_key.is_empty() {
        return None;
    }
    let (_, id) = data
        .by_start
        .range(..region.start_key.to_vec())
        .next_back()?;
    data.regions
        .get(id)
        .filter(|r| r.region.end_key == region.start_key)
}

/// Both regions have exactly `replication` voters, no learners, on the same stores.
pub fn colocated(a: &Region, b: &Region, replication: usize) -> bool {
    let stores = |r: &Region| {
        let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        s.sort_unstable();
        s
    };
    let full = |r: &Region| {
        r.peers.len() == replication && r.peers.iter().all(|p| p.role() == PeerRole::Voter)
    };
    full(a) && full(b) && stores(a) == stores(b)
}

/// Whether `region`'s range meets one of `live` (sorted, disjoint ranges).
pub fn holds_live_keys(region: &Region, live: &[(Vec<u8>, Vec<u8>)]) -> bool {
    let first = live.partition_point(|(_, end)| end.as_slice() <= region.start_key.as_ref());
    live.get(first).is_some_and(|(start, _)| {
        region.end_key.is_empty() || start.as_slice() < region.end_key.as_ref()
    })
}

/// The live ranges of these tables' storage ids: each table's keys share the prefix
/// `t{storage_id}`.
pub fn live_ranges(storage_ids: impl IntoIterator<Item = i64>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = storage_ids
        .into_iter()
        .map(|id| {
            let prefix = flotilla_codec::table_prefix(id);
            (
                flotilla_client::encode_key(&prefix),
                flotilla_client::encode_key(&flotilla_codec::prefix_end(&prefix)),
            )
        })
        .collect();
    ranges.sort();
    ranges.dedup();
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            start_key: start.to_vec().into(),
            end_key: end.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_region_holds_live_keys_only_where_a_live_range_meets_it() {
        let live = vec![
            (b"b".to_vec(), b"c".to_vec()),
            (b"f".to_vec(), b"g".to_vec()),
        ];
        assert!(!holds_live_keys(&region(b"", b"b"), &live));
        assert!(holds_live_keys(&region(b"", b"ba"), &live));
        assert!(!holds_live_keys(&region(b"c", b"f"), &live));
        assert!(holds_live_keys(&region(b"c", b"fa"), &live));
        assert!(holds_live_keys(&region(b"bb", b"bc"), &live));
        assert!(!holds_live_keys(&region(b"g", b"z"), &live));
        assert!(holds_live_keys(&region(b"e", b""), &live));
        assert!(!holds_live_keys(&region(b"g", b""), &live));
        assert!(!holds_live_keys(&region(b"a", b"z"), &[]));
    }

    /// Region `id` over `[start, end)` with a voter on stores 1..=3 (peer `id * 10 +
    /// store`), at `version`, frozen or not.
    fn placed(id: u64, start: &[u8], end: &[u8], version: u64, frozen: bool) -> Region {
        let mut r = region(start, end);
        r.id = id;
        r.epoch = Some(RegionEpoch {
            conf_ver: 1,
            version,
        });
        r.peers = (1..=3)
            .map(|s| flotilla_proto::metapb::Peer {
                id: id * 10 + s,
                store_id: s,
                role: PeerRole::Voter as i32,
            })
            .collect();
        r.merging = frozen.then_some(true);
        r
    }

    fn meta_with(regions: &[Region]) -> MetaData {
        let mut data = MetaData::default();
        let mut batch = flotilla_storage::WriteBatch::new();
        for r in regions {
            data.upsert_region(r.clone(), r.peers.first().copied(), &mut batch);
        }
        data
    }

    /// A frozen region is absorbed only once its leader reports it holds no data: until
    /// then nothing is asked of its neighbour, and on a report of data the freeze is
    /// rolled back and the region waits `after` again before the next prepare.
    #[test]
    fn a_frozen_region_is_absorbed_only_once_its_leader_found_it_empty() {
        let cfg = MergeConfig {
            after: Duration::from_secs(60),
            max: 4,
        };
        let left = placed(1, b"", b"b", 1, false);
        let dead = placed(2, b"b", b"c", 1, false);
        let last = placed(3, b"c", b"", 1, false);
        let t0 = Instant::now();
        let mut m = MergeState {
            live: Some((1, vec![])),
            ..Default::default()
        };
        let data = meta_with(&[left.clone(), dead.clone(), last.clone()]);
        assert_eq!(m.step(&data, 2, true, None, cfg, 3, t0), None);
        let t1 = t0 + cfg.after;
        assert_eq!(
            m.step(&data, 2, true, None, cfg, 3, t1),
            Some(MergeStep::Prepare)
        );

        let frozen = placed(2, b"b", b"c", 2, true);
        let data = meta_with(&[left.clone(), frozen.clone(), last.clone()]);
        // Not checked yet: the neighbour is asked nothing.
        assert_eq!(m.step(&data, 2, true, None, cfg, 3, t1), None);
        assert_eq!(m.step(&data, 1, true, None, cfg, 3, t1), None);
        // Holds data: rolled back, and no prepare before another `after`.
        assert_eq!(
            m.step(&data, 2, true, Some(false), cfg, 3, t1),
            Some(MergeStep::Rollback)
        );
        assert_eq!(m.step(&data, 1, true, None, cfg, 3, t1), None);
        let unfrozen = placed(2, b"b", b"c", 3, false);
        let data = meta_with(&[left.clone(), unfrozen, last.clone()]);
        let t2 = t1 + cfg.after / 2;
        assert_eq!(m.step(&data, 2, true, None, cfg, 3, t2), None);
        let t3 = t1 + cfg.after;
        assert_eq!(
            m.step(&data, 2, true, None, cfg, 3, t3),
            Some(MergeStep::Prepare)
        );

        // Found empty: the neighbour absorbs it at the epoch it was seen colocated at.
        let frozen = placed(2, b"b", b"c", 4, true);
        let data = meta_with(&[left.clone(), frozen.clone(), last]);
        assert_eq!(m.step(&data, 2, true, Some(true), cfg, 3, t3), None);
        assert_eq!(
            m.step(&data, 1, true, None, cfg, 3, t3),
            Some(MergeStep::Commit {
                source: frozen,
                epoch: left.epoch.unwrap(),
            })
        );
    }

    #[test]
    fn each_storage_ids_range_ends_where_the_next_begins() {
        let r = live_ranges([7, 5, 6, 5]);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].1, r[1].0);
        assert_eq!(r[1].1, r[2].0);
    }
}
