//! Deterministic tests of region merge (see `cluster/mod.rs`): an empty region is frozen
//! by a prepare-merge and absorbed by its left neighbour, on every store, whether a
//! store applies the merge from the log or takes a snapshot of the grown region.

mod cluster;

use cluster::{Cluster, ask, commit, delete, key, leader_alone, prepare, rollback};
use flotilla_proto::metapb::{Region, RegionEpoch};
use flotilla_raftstore::{RaftStoreError, StoreMsg, first_data_key, is_merging};

/// Three regions over three stores: 1 = [, k20), 2 = [k20, k40), 3 = [k40, ); region 1
/// holds k0..k9.
fn three_regions(c: &mut Cluster) {
    for i in 0..10 {
        c.must_put(1, &key(i), b"v");
    }
    c.split(1, &key(20), 2, vec![201, 202, 203]).unwrap();
    c.wait_leader(2);
    c.split(2, &key(40), 3, vec![301, 302, 303]).unwrap();
    c.wait_leader(3);
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(2, &[1, 2, 3]);
}

/// A store leading neither region 1 nor region 2: stopping it leaves both leaders in
/// place, whose logs still count it as replicating (a new leader would count it behind,
/// and a region with a peer behind is not frozen).
fn follower_of_both(c: &mut Cluster) -> u64 {
    let (l1, l2) = (c.wait_leader(1), c.wait_leader(2));
    [1, 2, 3]
        .into_iter()
        .find(|s| *s != l1 && *s != l2)
        .unwrap()
}

/// Writes k25 into region 2 on every store, stops a store leading neither region, then
/// deletes k25 and merges region 2 into region 1 without it. Returns the stopped store
/// (its peer of region 2 still holds k25) and the grown region 1.
fn merge_while_a_store_is_down(c: &mut Cluster) -> (u64, Region) {
    three_regions(c);
    c.must_put(2, &key(25), b"old");
    c.wait_applied(2, &[1, 2, 3]);
    let down = follower_of_both(c);
    c.stop(down);
    delete(c, 2, &key(25));
    let frozen = prepare(c, 2).unwrap();
    let epoch = left_epoch(c);
    let grown = commit(c, 1, epoch, frozen).unwrap();
    (down, grown)
}

fn left_epoch(c: &mut Cluster) -> RegionEpoch {
    let leader = c.wait_leader(1);
    c.region(leader, 1).epoch.unwrap_or_default()
}

#[test]
fn an_empty_region_is_absorbed_by_its_left_neighbour_on_every_store() {
    let mut c = Cluster::new(3, 3);
    three_regions(&mut c);
    let leader = c.wait_leader(2);
    let before = c.region(leader, 2);

    let frozen = prepare(&mut c, 2).unwrap();
    assert!(is_merging(&frozen), "{frozen:?}");
    assert_eq!(
        frozen.epoch.unwrap().version,
        before.epoch.unwrap().version + 1
    );
    c.wait_applied(2, &[1, 2, 3]);
    for store in [1, 2, 3] {
        assert!(is_merging(&c.region(store, 2)), "store {store}");
    }
    // Frozen: no writes, reads or splits, each refused with a retryable error.
    let leader = leader_alone(&mut c, 2);
    let write = c.try_put(leader, 2, &key(25), b"x", 5);
    assert!(
        matches!(&write, Some(Err(e @ RaftStoreError::ServerIsBusy(_))) if e.is_retryable()),
        "{write:?}"
    );
    let read = c.read_index(leader, 2);
    assert!(
        matches!(read, Err(RaftStoreError::ServerIsBusy(_))),
        "{read:?}"
    );
    let epoch = c.region(leader, 2).epoch.unwrap_or_default();
    let split = ask(&mut c, leader, |cb| StoreMsg::Split {
        region_id: 2,
        epoch,
        split_key: key(30),
        new_region_id: 4,
        new_peer_ids: vec![401, 402, 403],
        cb,
    });
    assert!(
        matches!(split, Err(RaftStoreError::ServerIsBusy(_))),
        "{split:?}"
    );
    // Prepared again: answered at once with the frozen region.
    assert_eq!(prepare(&mut c, 2).unwrap(), c.region(leader, 2));

    let left_leader = c.wait_leader(1);
    let left = c.region(left_leader, 1);
    let source = c.region(leader, 2);
    let epoch = left_epoch(&mut c);
    let grown = commit(&mut c, 1, epoch, source).unwrap();
    assert_eq!(grown.start_key, left.start_key);
    assert_eq!(grown.end_key.as_ref(), key(40).as_slice());
    assert_eq!(
        grown.epoch.unwrap().version,
        left.epoch
            .unwrap()
            .version
            .max(frozen.epoch.unwrap().version)
            + 1
    );
    c.wait_applied(1, &[1, 2, 3]);
    for store in [1, 2, 3] {
        assert_eq!(c.region(store, 1), grown, "store {store}");
        assert!(
            c.status(store, 2).is_none(),
            "store {store} still has a peer of the merged region"
        );
    }
    // The grown region takes writes over the absorbed range; its right neighbour is
    // untouched.
    c.must_put(1, &key(25), b"merged");
    c.must_put(3, &key(45), b"right");
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(3, &[1, 2, 3]);
    for store in [1, 2, 3] {
        assert_eq!(c.get(store, &key(25)), Some(b"merged".to_vec()));
        assert_eq!(c.dump(store, b"", b""), c.dump(1, b"", b""));
    }
    // Stale messages of the merged region do not bring it back: a store restarted keeps
    // it gone.
    c.stop(2);
    c.start(2);
    c.ticks(40);
    assert!(c.status(2, 2).is_none());
    c.wait_applied(1, &[1, 2, 3]);
}

#[test]
fn a_frozen_region_holding_data_shows_it_on_every_replica_and_is_rolled_back() {
    let mut c = Cluster::new(3, 3);
    three_regions(&mut c);
    c.must_put(2, &key(25), b"v");
    // Frozen whatever it holds: the check is its leader's, off the store thread.
    let frozen = prepare(&mut c, 2).unwrap();
    assert!(is_merging(&frozen));
    c.wait_applied(2, &[1, 2, 3]);
    // It applies no write from here on, so every replica holds what the leader finds.
    let leader = leader_alone(&mut c, 2);
    assert!(matches!(
        c.try_put(leader, 2, &key(26), b"v", 50),
        Some(Err(RaftStoreError::ServerIsBusy(_)))
    ));
    for s in [1, 2, 3] {
        let found = first_data_key(&c.engine(s), &frozen).unwrap();
        assert_eq!(found.map(|(_, k)| k), Some(key(25)), "store {s}");
    }
    // Rolled back, it serves again; emptied, a freeze finds nothing anywhere.
    rollback(&mut c, 2).unwrap();
    delete(&mut c, 2, &key(25));
    let frozen = prepare(&mut c, 2).unwrap();
    c.wait_applied(2, &[1, 2, 3]);
    for s in [1, 2, 3] {
        assert_eq!(
            first_data_key(&c.engine(s), &frozen).unwrap(),
            None,
            "store {s}"
        );
    }
}

#[test]
fn a_rolled_back_merge_serves_again() {
    let mut c = Cluster::new(3, 3);
    three_regions(&mut c);
    let frozen = prepare(&mut c, 2).unwrap();
    let back = rollback(&mut c, 2).unwrap();
    assert!(!is_merging(&back));
    assert_eq!(
        back.epoch.unwrap().version,
        frozen.epoch.unwrap().version + 1
    );
    c.must_put(2, &key(25), b"v");
    c.wait_applied(2, &[1, 2, 3]);
    // A commit-merge with the region as it was when frozen no longer applies anywhere:
    // the absorbing side checks only what it carries, so the meta service sends one only
    // for a region it saw frozen and never rolls one back it may have sent (see
    // `CommitMergeRequest`); here the left neighbour's epoch moved on meanwhile.
    let stale_left = left_epoch(&mut c);
    c.split(1, &key(10), 4, vec![401, 402, 403]).unwrap();
    let refused = commit(&mut c, 1, stale_left, frozen);
    assert!(
        matches!(refused, Err(RaftStoreError::EpochNotMatch { .. })),
        "{refused:?}"
    );
}

#[test]
fn a_commit_merge_is_refused_unless_adjacent_current_and_frozen() {
    let mut c = Cluster::new(3, 3);
    three_regions(&mut c);
    let leader = c.wait_leader(3);
    let unfrozen = c.region(leader, 3);
    let epoch = left_epoch(&mut c);
    // Region 3 is not frozen, and does not start where region 1 ends.
    let refused = commit(&mut c, 1, epoch, unfrozen.clone());
    assert!(
        matches!(&refused, Err(RaftStoreError::Raft(m)) if m.contains("not frozen")),
        "{refused:?}"
    );
    let frozen = prepare(&mut c, 3).unwrap();
    let refused = commit(&mut c, 1, epoch, frozen);
    assert!(
        matches!(&refused, Err(RaftStoreError::Raft(m)) if m.contains("does not end where")),
        "{refused:?}"
    );
    // A stale epoch of the absorbing region.
    let frozen = prepare(&mut c, 2).unwrap();
    let stale = RegionEpoch {
        conf_ver: epoch.conf_ver,
        version: epoch.version - 1,
    };
    let refused = commit(&mut c, 1, stale, frozen.clone());
    assert!(
        matches!(refused, Err(RaftStoreError::EpochNotMatch { .. })),
        "{refused:?}"
    );
    // Region 1 is unchanged by the refusals.
    for store in [1, 2, 3] {
        assert_eq!(c.region(store, 1).end_key.as_ref(), key(20).as_slice());
    }
    commit(&mut c, 1, epoch, frozen).unwrap();
}

/// A store down while its peer of the source lags (it never saw the source emptied or
/// frozen) applies the merge from the log when it returns: the source's range is cleared
/// there and its peer destroyed.
#[test]
fn a_store_down_during_a_merge_applies_it_from_the_log_when_it_returns() {
    let mut c = Cluster::new(3, 3);
    let (down, grown) = merge_while_a_store_is_down(&mut c);
    let up = [1, 2, 3].into_iter().find(|s| *s != down).unwrap();
    assert_eq!(c.get(up, &key(25)), None);
    c.start(down);
    c.wait_applied(1, &[1, 2, 3]);
    assert_eq!(c.region(down, 1), grown);
    assert!(c.status(down, 2).is_none());
    assert_eq!(
        c.get(down, &key(25)),
        None,
        "the lagging replica's old data stays"
    );
    assert_eq!(c.dump(down, b"", b""), c.dump(up, b"", b""));
}

/// A store that missed a merge by more than the leader keeps of the log takes a snapshot
/// of the grown region; the snapshot covers its stale peer of the source, which goes.
#[test]
fn a_store_that_missed_a_merge_takes_a_snapshot_over_its_stale_peer_of_the_source() {
    let mut c = Cluster::with_config(3, 3, |cfg| {
        cfg.log_gc_count_limit = 8;
        cfg.log_keep_for_lagging_entries = 16;
    });
    let (down, grown) = merge_while_a_store_is_down(&mut c);
    let left_leader = c.wait_leader(1);
    let before = c.status(left_leader, 1).unwrap().applied_index;
    for i in 0..60 {
        c.must_put(1, &key(i % 20), format!("v{i}").as_bytes());
    }
    let leader = c.wait_leader(1);
    let truncated = c.status(leader, 1).unwrap().truncated_index;
    assert!(
        truncated > before,
        "the leader kept the merge in its log (truncated at {truncated}, merge at or before {before})"
    );
    c.start(down);
    c.wait_applied(1, &[1, 2, 3]);
    let status = c.status(down, 1).unwrap();
    assert!(
        status.truncated_index >= truncated,
        "store {down} caught up from the log, not a snapshot"
    );
    assert_eq!(status.region.end_key, grown.end_key);
    assert!(
        c.status(down, 2).is_none(),
        "the stale peer of the source stays"
    );
    assert_eq!(c.get(down, &key(25)), None);
    assert_eq!(c.dump(down, b"", b""), c.dump(leader, b"", b""));
}

/// A store down while a merge committed, then the grown region wrote into the absorbed
/// range: when the store returns it applies the merge and that write in one round, and the
/// clear of the source's range it missed the emptying of must not wipe the write.
#[test]
fn a_write_into_the_absorbed_range_right_after_the_merge_survives_on_a_lagging_store() {
    let mut c = Cluster::new(3, 3);
    let (down, _grown) = merge_while_a_store_is_down(&mut c);
    c.must_put(1, &key(25), b"new");
    c.must_put(1, &key(30), b"also");
    c.start(down);
    c.wait_applied(1, &[1, 2, 3]);
    assert!(c.status(down, 2).is_none());
    assert_eq!(c.get(down, &key(25)), Some(b"new".to_vec()));
    assert_eq!(c.get(down, &key(30)), Some(b"also".to_vec()));
    let leader = c.wait_leader(1);
    assert_eq!(c.dump(down, b"", b""), c.dump(leader, b"", b""));
}
