//! Deterministic multi-store tests of region replication (see `cluster/mod.rs`).

mod cluster;

use cluster::{Cluster, NetFaults, compute_hash, key};
use flotilla_proto::metapb::{Peer, PeerRole};
use flotilla_raftstore::{ConfChangeType, PeerChange, RaftStoreError, StoreMsg};

fn peer(id: u64, store_id: u64) -> Peer {
    Peer {
        id,
        store_id,
        role: PeerRole::Voter as i32,
    }
}

#[test]
fn a_leader_is_elected_and_writes_reach_every_replica() {
    let mut c = Cluster::new(3, 3);
    let leader = c.wait_leader(1);
    for i in 0..50 {
        c.must_put(1, &key(i), format!("v{i}").as_bytes());
    }
    c.wait_applied(1, &[1, 2, 3]);
    let expected = c.dump(leader, b"", b"");
    assert_eq!(expected.len(), 50);
    for store in [1, 2, 3] {
        assert_eq!(c.dump(store, b"", b""), expected, "store {store} differs");
    }
    // Exactly one leader, and the others agree on who it is.
    let leaders: Vec<u64> = [1, 2, 3]
        .into_iter()
        .filter(|s| c.status(*s, 1).unwrap().is_leader)
        .collect();
    assert_eq!(leaders, vec![leader]);
    let leader_peer = c.status(leader, 1).unwrap().peer_id;
    for store in [1, 2, 3] {
        assert_eq!(c.status(store, 1).unwrap().leader_peer_id, leader_peer);
    }
}

#[test]
fn a_follower_refuses_writes_and_names_the_leader() {
    let mut c = Cluster::new(3, 3);
    let leader = c.wait_leader(1);
    let follower = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    match c.try_put(follower, 1, b"k", b"v", 5) {
        Some(Err(RaftStoreError::NotLeader {
            leader: Some(p), ..
        })) => {
            assert_eq!(p.store_id, leader)
        }
        other => panic!("expected NotLeader naming store {leader}, got {other:?}"),
    }
    assert_eq!(c.get(follower, b"k"), None);
}

#[test]
fn a_leader_cut_off_from_the_majority_stops_committing_and_the_majority_moves_on() {
    let mut c = Cluster::new(3, 3);
    let old = c.wait_leader(1);
    c.must_put(1, b"before", b"1");
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|s| *s != old).collect();
    c.partition(&[&[old], &others]);
    // The isolated leader accepts a proposal but can never commit it.
    let lost = c.try_put(old, 1, b"lost", b"x", 40);
    assert!(
        !matches!(lost, Some(Ok(()))),
        "a leader without a quorum committed a write: {lost:?}"
    );
    // The majority elects a new leader and keeps serving writes.
    let new = c.wait_leader(1);
    assert!(
        others.contains(&new),
        "the new leader {new} is not in the majority"
    );
    c.must_put(1, b"after", b"2");
    // check-quorum: the isolated one no longer believes it leads.
    assert!(!c.status(old, 1).unwrap().is_leader);
    c.heal();
    c.wait_applied(1, &[1, 2, 3]);
    for store in [1, 2, 3] {
        assert_eq!(c.get(store, b"before"), Some(b"1".to_vec()));
        assert_eq!(c.get(store, b"after"), Some(b"2".to_vec()));
        assert_eq!(
            c.get(store, b"lost"),
            None,
            "store {store} applied an uncommitted write"
        );
    }
}

#[test]
fn killing_the_leader_elects_another_and_the_restarted_store_catches_up() {
    let mut c = Cluster::new(3, 3);
    for i in 0..20 {
        c.must_put(1, &key(i), b"a");
    }
    let old = c.wait_leader(1);
    c.stop(old);
    let new = c.wait_leader(1);
    assert_ne!(new, old);
    for i in 20..40 {
        c.must_put(1, &key(i), b"b");
    }
    c.start(old);
    c.wait_applied(1, &[1, 2, 3]);
    let expected = c.dump(new, b"", b"");
    assert_eq!(expected.len(), 40, "acknowledged writes are missing");
    assert_eq!(c.dump(old, b"", b""), expected);
}

#[test]
fn a_replica_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut c = Cluster::with_config(3, 3, |cfg| {
        cfg.log_gc_count_limit = 8;
        cfg.log_keep_for_lagging_entries = 32;
    });
    c.wait_leader(1);
    c.must_put(1, b"first", b"1");
    let leader = c.wait_leader(1);
    let lagging = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let lagging_last = c.status(lagging, 1).unwrap().commit_index;
    c.stop(lagging);
    for i in 0..60 {
        c.must_put(1, &key(i), b"v");
    }
    let leader = c.wait_leader(1);
    let truncated = c.status(leader, 1).unwrap().truncated_index;
    // The entries after the lagging replica's log are gone: only a snapshot can help it.
    assert!(
        truncated > lagging_last + 1,
        "the leader did not compact past the lagging replica (truncated at {truncated}, replica at {lagging_last})"
    );
    let before = c.status(leader, 1).unwrap().applied_index;
    c.start(lagging);
    c.wait_applied(1, &[1, 2, 3]);
    let status = c.status(lagging, 1).unwrap();
    // A snapshot leaves the log truncated at its index; a replay would have started from
    // the old truncated index.
    assert!(
        status.truncated_index >= truncated,
        "lagging replica truncated at {}, expected a snapshot at >= {truncated}",
        status.truncated_index
    );
    assert!(status.applied_index >= before);
    assert_eq!(c.dump(lagging, b"", b""), c.dump(leader, b"", b""));
    // It keeps up by log afterwards.
    c.must_put(1, b"later", b"2");
    c.wait_applied(1, &[1, 2, 3]);
    assert_eq!(c.get(lagging, b"later"), Some(b"2".to_vec()));
}

/// A snapshot is built on the store's snapshot thread: while a lagging replica's snapshot
/// is being built (held here, as a large region's would take long), its leader's store
/// thread goes on committing, and the replica catches up once the build is done.
#[test]
fn a_leader_commits_while_a_lagging_replicas_snapshot_is_built() {
    let mut c = cluster_with_short_logs();
    c.wait_leader(1);
    c.must_put(1, b"first", b"1");
    let leader = c.wait_leader(1);
    let lagging = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    c.stop(lagging);
    for i in 0..60 {
        c.must_put(1, &key(i), b"v");
    }
    let leader = c.wait_leader(1);
    c.hold_snapshot_builds(leader, true);
    c.start(lagging);
    for _ in 0..20 {
        if c.building_snapshot(leader) {
            break;
        }
        c.tick();
    }
    assert!(
        c.building_snapshot(leader),
        "the leader never asked for a snapshot of the lagging replica"
    );
    // A build on the store thread would block it here (the build is held) and never return.
    for i in 60..70 {
        c.must_put(1, &key(i), b"w");
    }
    let commit = c.status(leader, 1).unwrap().commit_index;
    assert!(
        c.status(lagging, 1).unwrap().applied_index < commit,
        "the lagging replica caught up while its snapshot could not be built"
    );
    c.hold_snapshot_builds(leader, false);
    c.wait_applied(1, &[1, 2, 3]);
    let expected = c.dump(leader, b"", b"");
    assert_eq!(expected.len(), 71, "acknowledged writes are missing");
    assert_eq!(c.dump(lagging, b"", b""), expected);
}

/// Stops a follower of region 1, writes past what the leader keeps for it, restarts it
/// with its snapshot writer closed (`batches` allowed), and ticks until the snapshot it
/// needs is in that writer's hands. Returns (leader, lagging store).
fn lag_into_a_held_snapshot_write(c: &mut Cluster, batches: u64) -> (u64, u64) {
    let leader = c.wait_leader(1);
    let lagging = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    c.stop(lagging);
    for i in 0..60 {
        c.must_put(1, &key(i), b"v");
    }
    c.start(lagging);
    c.allow_snapshot_writes(lagging, Some(batches));
    for _ in 0..20 {
        if c.writing_snapshot(lagging) {
            break;
        }
        c.tick();
    }
    assert!(
        c.writing_snapshot(lagging),
        "the lagging replica never received a snapshot"
    );
    (c.wait_leader(1), lagging)
}

/// A follower writes a received snapshot's data on its store's snapshot writer thread.
/// While that write is under way (held here, as a large region's takes seconds), the store
/// thread goes on serving its other regions (here one that cannot commit without it), the
/// peer takes no log, applies nothing and never campaigns, and once the data is written it
/// holds exactly the leader's data.
#[test]
fn a_store_writing_a_snapshots_data_serves_its_other_regions_meanwhile() {
    let mut c = cluster_with_short_logs();
    c.must_put(1, b"first", b"1");
    c.split(1, &key(1000), 2, vec![201, 202, 203]).unwrap();
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(2, &[1, 2, 3]);
    let (leader, lagging) = lag_into_a_held_snapshot_write(&mut c, 0);
    assert_eq!(c.snapshots_being_written(lagging), vec![1]);
    let applied_before = c.status(lagging, 1).unwrap().applied_index;
    // Region 2 commits only with the lagging store now: its third replica is down.
    let other = [1, 2, 3]
        .into_iter()
        .find(|s| *s != leader && *s != lagging)
        .unwrap();
    c.stop(other);
    for i in 1000..1010 {
        c.must_put(2, &key(i), b"w");
    }
    // Many election timeouts: the peer under the write neither applies nor campaigns.
    c.ticks(40);
    let status = c.status(lagging, 1).unwrap();
    assert_eq!(
        status.applied_index, applied_before,
        "applied entries under a snapshot whose data is still being written"
    );
    assert!(!status.is_leader);
    assert_eq!(c.snapshots_being_written(lagging), vec![1]);

    c.start(other);
    c.allow_snapshot_writes(lagging, None);
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(2, &[1, 2, 3]);
    assert!(c.snapshots_being_written(lagging).is_empty());
    let leader = c.wait_leader(1);
    let expected = c.dump(leader, b"", &key(1000));
    assert_eq!(expected.len(), 61, "acknowledged writes are missing");
    assert_eq!(c.dump(lagging, b"", &key(1000)), expected);
    assert_eq!(c.dump(lagging, &key(1000), b"").len(), 10);
    // It keeps up by log afterwards.
    c.must_put(1, &key(500), b"later");
    c.wait_applied(1, &[1, 2, 3]);
    assert_eq!(c.get(lagging, &key(500)), Some(b"later".to_vec()));
}

/// A store that stops part-way through writing a snapshot's data (a crash) comes back with
/// the peer's states from before the snapshot over partly written data, takes the
/// snapshot again, and ends with exactly the leader's data.
#[test]
fn a_store_stopped_while_writing_a_snapshots_data_catches_up_exactly() {
    let mut c = Cluster::with_config(3, 3, |cfg| {
        cfg.log_gc_count_limit = 8;
        cfg.log_keep_for_lagging_entries = 32;
        cfg.snapshot_apply_batch_bytes = 64;
    });
    c.must_put(1, b"first", b"1");
    c.wait_applied(1, &[1, 2, 3]);
    let applied_before = {
        let leader = c.wait_leader(1);
        c.status(leader, 1).unwrap().applied_index
    };
    let (leader, lagging) = lag_into_a_held_snapshot_write(&mut c, 1);
    let partial = c.dump(lagging, b"", b"").len();
    assert!(
        partial > 1 && partial < 61,
        "one batch of the snapshot's data written, not {partial} keys"
    );
    assert!(c.status(lagging, 1).unwrap().applied_index <= applied_before);
    c.stop(lagging);
    c.start(lagging);
    c.wait_applied(1, &[1, 2, 3]);
    let expected = c.dump(leader, b"", b"");
    assert_eq!(expected.len(), 61, "acknowledged writes are missing");
    assert_eq!(c.dump(lagging, b"", b""), expected);
}

/// At most `snapshot_apply_queue` received snapshots are in the writer's hands; another
/// is dropped, and its leader sends it again once there is room.
#[test]
fn a_full_snapshot_writer_drops_new_snapshots_until_it_has_room() {
    let mut c = Cluster::with_config(3, 3, |cfg| {
        cfg.log_gc_count_limit = 8;
        cfg.log_keep_for_lagging_entries = 32;
        cfg.snapshot_apply_queue = 1;
    });
    c.must_put(1, b"first", b"1");
    c.split(1, &key(1000), 2, vec![201, 202, 203]).unwrap();
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(2, &[1, 2, 3]);
    let lagging = 3;
    c.stop(lagging);
    for i in 0..60 {
        c.must_put(1, &key(i), b"v");
        c.must_put(2, &key(1000 + i), b"w");
    }
    c.start(lagging);
    c.allow_snapshot_writes(lagging, Some(0));
    c.ticks(40);
    assert_eq!(
        c.snapshots_being_written(lagging).len(),
        1,
        "both regions' snapshots should wait for one writer slot"
    );
    c.allow_snapshot_writes(lagging, None);
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(2, &[1, 2, 3]);
    let leader = c.wait_leader(1);
    assert_eq!(c.dump(lagging, b"", b""), c.dump(leader, b"", b""));
    assert_eq!(c.dump(lagging, b"", b"").len(), 121);
}

/// A cluster whose peers compact their logs past 8 entries, and whose leaders keep them
/// for followers at most 32 entries behind.
fn cluster_with_short_logs() -> Cluster {
    Cluster::with_config(3, 3, |cfg| {
        cfg.log_gc_count_limit = 8;
        cfg.log_keep_for_lagging_entries = 32;
    })
}

/// Stops `down`, writes 20 entries without it, checks that the leader kept the log it
/// needs, restarts it and checks that it caught up. Returns the leader.
fn write_while_down_and_check_the_log_was_kept(c: &mut Cluster, down: u64) -> u64 {
    c.wait_applied(1, &[1, 2, 3]);
    let down_last = c.status(down, 1).unwrap().commit_index;
    c.stop(down);
    // Long enough for a leader to count it inactive (check-quorum rounds).
    c.ticks(30);
    for i in 0..20 {
        c.must_put(1, &key(i), b"v");
    }
    let leader = c.wait_leader(1);
    let status = c.status(leader, 1).unwrap();
    assert!(
        status.applied_index > down_last + 8,
        "too few writes for the leader to compact past the stopped store"
    );
    assert!(
        status.truncated_index <= down_last,
        "the leader dropped entries store {down} needs (truncated at {}, store {down} at {down_last})",
        status.truncated_index
    );
    c.start(down);
    c.wait_applied(1, &[1, 2, 3]);
    assert_eq!(c.dump(down, b"", b""), c.dump(leader, b"", b""));
    leader
}

/// A store that is down for a short while (fewer than `log_keep_for_lagging_entries`)
/// catches up from the leader's log, not by a snapshot of the whole region: the leader
/// keeps the entries it still needs even after it stopped hearing from it.
#[test]
fn a_replica_down_briefly_catches_up_from_the_log_the_leader_kept() {
    let mut c = cluster_with_short_logs();
    c.must_put(1, b"first", b"1");
    let leader = c.wait_leader(1);
    let down = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let leader = write_while_down_and_check_the_log_was_kept(&mut c, down);
    // Once it caught up, the leader compacts again.
    for i in 20..40 {
        c.must_put(1, &key(i), b"v");
    }
    c.wait_applied(1, &[1, 2, 3]);
    let status = c.status(leader, 1).unwrap();
    assert!(status.applied_index - status.truncated_index <= 8 + 1);
}

/// A follower keeps the log its leader keeps: when the leader dies while another replica
/// lags (down, or still catching up after a restart), its successor can still send that
/// replica the entries it misses. Before, a follower compacted to its own applied index,
/// so the successor had dropped them and the replica needed a snapshot of the whole
/// region (the restarts in `bench/failover.py` that still took snapshots).
#[test]
fn a_successor_still_holds_the_entries_its_leader_kept_for_a_lagging_replica() {
    let mut c = cluster_with_short_logs();
    c.must_put(1, b"first", b"1");
    let leader = c.wait_leader(1);
    let lagging = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let successor = [1, 2, 3]
        .into_iter()
        .find(|s| *s != leader && *s != lagging)
        .unwrap();
    c.wait_applied(1, &[1, 2, 3]);
    let lagging_last = c.status(lagging, 1).unwrap().commit_index;
    c.stop(lagging);
    for i in 0..20 {
        c.must_put(1, &key(i), b"v");
    }
    c.wait_applied(1, &[leader, successor]);
    let applied = c.status(successor, 1).unwrap().applied_index;
    assert!(
        applied > lagging_last + 8,
        "too few writes for the successor to compact past the lagging replica"
    );
    c.stop(leader);
    c.start(lagging);
    assert_eq!(
        c.wait_leader(1),
        successor,
        "only the successor has the whole log"
    );
    let truncated = c.status(successor, 1).unwrap().truncated_index;
    assert!(
        truncated <= lagging_last,
        "the successor dropped entries the lagging replica needs (truncated at {truncated}, replica at {lagging_last})"
    );
    c.wait_applied(1, &[successor, lagging]);
    assert!(
        c.status(lagging, 1).unwrap().truncated_index < applied,
        "the lagging replica was sent a snapshot"
    );
    assert_eq!(c.dump(lagging, b"", b""), c.dump(successor, b"", b""));
    c.start(leader);
    c.must_put(1, b"later", b"2");
    c.wait_applied(1, &[1, 2, 3]);
    assert_eq!(c.dump(leader, b"", b""), c.dump(successor, b"", b""));
}

/// The same when the store that was down had led the region: its successor never heard
/// how far its log goes, and keeps the entries from the start of its own term.
#[test]
fn a_killed_leader_catches_up_from_the_log_its_successor_kept() {
    let mut c = cluster_with_short_logs();
    // More entries than a leader keeps for a follower it knows nothing about.
    for i in 100..140 {
        c.must_put(1, &key(i), b"v");
    }
    let old = c.wait_leader(1);
    write_while_down_and_check_the_log_was_kept(&mut c, old);
}

#[test]
fn membership_changes_add_a_learner_promote_it_and_remove_a_voter() {
    let mut c = Cluster::new(4, 3);
    for i in 0..10 {
        c.must_put(1, &key(i), b"v");
    }
    // A learner on store 4 receives the data but does not vote.
    let region = c
        .change_peers(
            1,
            vec![PeerChange {
                change_type: ConfChangeType::AddLearnerNode,
                peer: peer(104, 4),
            }],
        )
        .unwrap();
    let learner = region.peers.iter().find(|p| p.id == 104).unwrap();
    assert_eq!(learner.role(), PeerRole::Learner);
    assert_eq!(region.epoch.as_ref().unwrap().conf_ver, 2);
    c.wait_applied(1, &[1, 2, 3, 4]);
    assert_eq!(c.dump(4, b"", b"").len(), 10);

    // Promote the learner and demote voter 101 in one joint change.
    let region = c
        .change_peers(
            1,
            vec![
                PeerChange {
                    change_type: ConfChangeType::AddNode,
                    peer: peer(104, 4),
                },
                PeerChange {
                    change_type: ConfChangeType::AddLearnerNode,
                    peer: peer(101, 1),
                },
            ],
        )
        .unwrap();
    let role = |id: u64| region.peers.iter().find(|p| p.id == id).unwrap().role();
    assert_eq!(role(104), PeerRole::IncomingVoter);
    assert_eq!(role(101), PeerRole::DemotingVoter);
    // raft-rs leaves the joint configuration by itself.
    c.ticks(5);
    c.wait_applied(1, &[1, 2, 3, 4]);
    let leader = c.wait_leader(1);
    let region = c.region(leader, 1);
    let role = |id: u64| region.peers.iter().find(|p| p.id == id).unwrap().role();
    assert_eq!(role(104), PeerRole::Voter);
    assert_eq!(role(101), PeerRole::Learner);

    // Removing a voter in a joint change is refused: it would have no expressible role.
    let refused = c.change_peers(
        1,
        vec![
            PeerChange {
                change_type: ConfChangeType::RemoveNode,
                peer: peer(102, 2),
            },
            PeerChange {
                change_type: ConfChangeType::RemoveNode,
                peer: peer(101, 1),
            },
        ],
    );
    assert!(refused.is_err());

    // Remove the learner on store 1: its peer is destroyed and its data range cleared.
    let region = c
        .change_peers(
            1,
            vec![PeerChange {
                change_type: ConfChangeType::RemoveNode,
                peer: peer(101, 1),
            }],
        )
        .unwrap();
    assert!(region.peers.iter().all(|p| p.id != 101));
    c.ticks(3);
    assert!(c.status(1, 1).is_none(), "the removed peer still exists");
    assert!(
        c.dump(1, b"", b"").is_empty(),
        "the removed peer left its data"
    );
    // A restart does not bring it back.
    c.stop(1);
    c.start(1);
    c.ticks(3);
    assert!(c.status(1, 1).is_none());
    // The region keeps working with stores 2, 3, 4.
    c.must_put(1, b"after", b"1");
    c.wait_applied(1, &[2, 3, 4]);
    for store in [2, 3, 4] {
        assert_eq!(c.get(store, b"after"), Some(b"1".to_vec()));
    }
}

/// A joint configuration is left even when its leader dies right after committing it:
/// the successor has the joint entry at the end of its log, unapplied, and commits and
/// applies it together with its own first entry. (raft-rs leaves a joint configuration when
/// a leader's applied index passes its pending-change index; the store told raft-rs an
/// index was applied before applying it, so the successor "passed" that index with the old
/// configuration still in place and never left the joint one: a replica move stayed
/// half done, and the region needed two quorums for ever.)
#[test]
fn a_successor_leaves_the_joint_configuration_its_dead_leader_entered() {
    let mut c = Cluster::new(4, 3);
    c.must_put(1, b"a", b"1");
    c.change_peers(
        1,
        vec![PeerChange {
            change_type: ConfChangeType::AddLearnerNode,
            peer: peer(104, 4),
        }],
    )
    .unwrap();
    c.wait_applied(1, &[1, 2, 3, 4]);
    let leader = c.wait_leader(1);
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|s| *s != leader).collect();
    let demoted = followers[0];
    // Propose the joint change and run rounds only until the leader has applied it: the
    // messages telling the others it committed are still queued when it is cut off.
    let (_answer, cb) = cluster::slot::<flotilla_proto::metapb::Region>();
    c.handle(
        leader,
        StoreMsg::ChangePeers {
            region_id: 1,
            changes: vec![
                PeerChange {
                    change_type: ConfChangeType::AddNode,
                    peer: peer(104, 4),
                },
                PeerChange {
                    change_type: ConfChangeType::AddLearnerNode,
                    peer: peer(100 + demoted, demoted),
                },
            ],
            cb,
        },
    );
    let joint = |r: &flotilla_proto::metapb::Region| {
        r.peers.iter().any(|p| p.role() == PeerRole::IncomingVoter)
    };
    let mut rounds = 0;
    while !joint(&c.region(leader, 1)) {
        assert!(
            c.round() && rounds < 50,
            "the leader never entered the joint configuration"
        );
        rounds += 1;
    }
    // Cut off first: a stopped store's queued messages would still be delivered.
    let others: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|s| *s != leader).collect();
    c.partition(&[&[leader], &others]);
    c.stop(leader);
    let successor = c.wait_leader(1);
    assert_ne!(successor, leader);
    c.ticks(20);
    for store in others {
        let region = c.region(store, 1);
        let role = |id: u64| region.peers.iter().find(|p| p.id == id).map(|p| p.role());
        assert_eq!(
            (role(104), role(100 + demoted)),
            (Some(PeerRole::Voter), Some(PeerRole::Learner)),
            "store {store} is still in the joint configuration: {region:?} (seed {})",
            cluster::seed()
        );
    }
    // The region commits with its new voters while the old leader stays down.
    c.must_put(1, b"b", b"2");
}

#[test]
fn leadership_can_be_transferred() {
    let mut c = Cluster::new(3, 3);
    let leader = c.wait_leader(1);
    let target = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let target_peer = c.status(target, 1).unwrap().peer_id;
    c.must_put(1, b"a", b"1");
    c.wait_applied(1, &[1, 2, 3]);
    c.send(
        leader,
        StoreMsg::TransferLeader {
            region_id: 1,
            to_peer_id: target_peer,
        },
    );
    c.ticks(2);
    assert_eq!(c.wait_leader(1), target);
    c.must_put(1, b"b", b"2");
}

#[test]
fn a_region_splits_atomically_and_stale_routes_are_refused() {
    let mut c = Cluster::new(3, 3);
    for i in 0..40 {
        c.must_put(1, &key(i), b"v");
    }
    let leader = c.wait_leader(1);
    let old_epoch = c.region(leader, 1).epoch.unwrap();
    let regions = c.split(1, &key(20), 2, vec![201, 202, 203]).unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0].end_key.as_ref(), key(20).as_slice());
    assert_eq!(regions[1].start_key.as_ref(), key(20).as_slice());
    assert_eq!(regions[1].id, 2);
    c.wait_applied(1, &[1, 2, 3]);
    // Every store now hosts both regions with the same layout.
    for store in [1, 2, 3] {
        let left = c.region(store, 1);
        let right = c.region(store, 2);
        assert_eq!(left.end_key, right.start_key);
        assert_eq!(left.epoch.as_ref().unwrap().version, old_epoch.version + 1);
    }
    // The new region elects its own leader and takes writes on its range.
    c.wait_leader(2);
    c.must_put(2, &key(30), b"new");
    c.must_put(1, &key(5), b"new");
    // A write routed with the old epoch is refused, not applied.
    let leader = c.wait_leader(1);
    let mut batch = flotilla_storage::WriteBatch::new();
    batch.put(flotilla_storage::Cf::Default, key(6), b"stale".to_vec());
    let slot = c.propose_write(leader, 1, old_epoch, batch);
    c.settle();
    let result = slot.lock().unwrap().take();
    assert!(
        matches!(result, Some(Err(RaftStoreError::EpochNotMatch { .. }))),
        "{result:?}"
    );
    // A key outside the region is refused too.
    let wrong = c.try_put(leader, 1, &key(30), b"x", 5);
    assert!(
        matches!(wrong, Some(Err(RaftStoreError::KeyNotInRegion { .. }))),
        "{wrong:?}"
    );
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(2, &[1, 2, 3]);
    for store in [1, 2, 3] {
        assert_eq!(c.get(store, &key(30)), Some(b"new".to_vec()));
        assert_eq!(c.get(store, &key(6)), Some(b"v".to_vec()));
    }
    // The layout survives a restart.
    c.stop(2);
    c.start(2);
    assert_eq!(c.region(2, 2).start_key.as_ref(), key(20).as_slice());
}

/// A store that lags behind a split meets the new region first as an uninitialized peer,
/// created by the new region's election, and it may vote there. When it then applies the
/// split, the new region's initial state must not wipe that vote: a peer that forgets
/// whom it voted for in a term can vote again in it, and two leaders of one term follow.
#[test]
fn a_split_applied_over_a_peer_that_voted_keeps_its_vote() {
    let mut c = Cluster::new(3, 3);
    for i in 0..20 {
        c.must_put(1, &key(i), b"v");
    }
    let leader = c.wait_leader(1);
    c.wait_applied(1, &[1, 2, 3]);
    let lagging = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let peer_of = |store: u64| 200 + store;
    // The lagging store hears nothing of region 1, so it misses the split; it still hears
    // the new region's members.
    c.block_region(1, lagging);
    let regions = c.split(1, &key(10), 2, vec![201, 202, 203]).unwrap();
    assert_eq!(regions[1].id, 2);
    c.wait_leader(2);
    let before = c
        .status(lagging, 2)
        .expect("the new region's election created a peer on the lagging store");
    assert!(
        before.region.peers.is_empty(),
        "the lagging store's peer of region 2 is uninitialized: {:?}",
        before.region
    );
    assert!(
        before.term > flotilla_raftstore::RAFT_INIT_LOG_TERM && before.vote != 0,
        "the uninitialized peer voted in the new region's election: term {}, vote {}",
        before.term,
        before.vote
    );
    assert_ne!(before.vote, peer_of(lagging));
    // It catches up on region 1 and applies the split over that peer.
    c.heal();
    c.wait_applied(1, &[1, 2, 3]);
    let after = c.status(lagging, 2).unwrap();
    assert_eq!(after.region.start_key.as_ref(), key(10).as_slice());
    assert!(
        after.term > before.term || (after.term == before.term && after.vote == before.vote),
        "the split forgot the vote: term {} vote {} before, term {} vote {} after",
        before.term,
        before.vote,
        after.term,
        after.vote
    );
    // The vote is on disk too, not only in memory.
    c.stop(lagging);
    c.start(lagging);
    let restarted = c.status(lagging, 2).unwrap();
    assert!(
        restarted.term > before.term
            || (restarted.term == before.term && restarted.vote == before.vote),
        "after a restart: term {} vote {}",
        restarted.term,
        restarted.vote
    );
    // And the region serves on every replica.
    c.must_put(2, &key(15), b"new");
    c.wait_applied(2, &[1, 2, 3]);
    assert_eq!(c.get(lagging, &key(15)), Some(b"new".to_vec()));
    assert_eq!(c.get(lagging, &key(12)), Some(b"v".to_vec()));
}

/// Writes under message loss, delay and reordering, with a store killed and restarted on
/// the way: every acknowledged write is on every replica afterwards, and the replicas are
/// identical.
#[test]
fn acknowledged_writes_survive_a_lossy_network_and_a_crash() {
    let mut c = Cluster::with_config(3, 3, |cfg| cfg.log_gc_count_limit = 16);
    lossy_workload(&mut c);
}

/// The seed alone decides a run: the same seed gives the same messages, elections and
/// acknowledgements, so a failing seed reproduces its failure.
#[test]
fn a_seed_replays_the_same_run() {
    let seed = cluster::seed();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut c = Cluster::with_seed(seed, 3, 3, |cfg| cfg.log_gc_count_limit = 16);
        let acked = lossy_workload(&mut c);
        let statuses: Vec<String> = [1, 2, 3]
            .into_iter()
            .map(|s| format!("{:?}", c.status(s, 1)))
            .collect();
        runs.push((acked, c.delivered, statuses));
    }
    assert_eq!(runs[0], runs[1]);
}

fn lossy_workload(c: &mut Cluster) -> Vec<u64> {
    c.wait_leader(1);
    let mut acked = Vec::new();
    c.faults = NetFaults {
        drop_rate: 0.1,
        delay_rate: 0.2,
        max_delay_rounds: 5,
        reorder: true,
    };
    for i in 0..60u64 {
        if i == 20 {
            let victim = c.leader_of(1).unwrap_or(1);
            c.stop(victim);
        }
        if i == 40 {
            for s in [1, 2, 3] {
                if !c.alive(s) {
                    c.start(s);
                }
            }
        }
        let Some(leader) = c.leader_of(1) else {
            c.tick();
            continue;
        };
        if let Some(Ok(())) = c.try_put(leader, 1, &key(i), b"v", 20) {
            acked.push(i);
        }
    }
    c.heal();
    c.wait_applied(1, &[1, 2, 3]);
    assert!(
        acked.len() > 10,
        "too few writes acknowledged ({}) to mean anything",
        acked.len()
    );
    let leader = c.wait_leader(1);
    let data = c.dump(leader, b"", b"");
    for i in &acked {
        assert!(
            data.contains_key(&key(*i)),
            "acknowledged write {i} is lost"
        );
    }
    for s in [1, 2, 3] {
        assert_eq!(
            c.dump(s, b"", b""),
            data,
            "store {s} differs from the leader"
        );
    }
    acked
}

/// The per-region bounds answer at once with a retryable error instead of queueing.
#[test]
fn pending_proposals_and_reads_are_bounded() {
    let mut c = Cluster::with_config(3, 3, |cfg| {
        cfg.max_pending_proposals = 2;
        cfg.max_pending_reads = 1;
        // A read answered from the lease never queues; confirm with a quorum instead.
        cfg.lease_reads = false;
    });
    let leader = c.wait_leader(1);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|s| *s != leader).collect();
    // Cut the leader off so nothing it proposes can commit and the queues stay full.
    c.partition(&[&[leader], &others]);
    let epoch = c.region(leader, 1).epoch.unwrap();
    let mut slots = Vec::new();
    for i in 0..3u64 {
        let mut batch = flotilla_storage::WriteBatch::new();
        batch.put(flotilla_storage::Cf::Default, key(i), b"v".to_vec());
        slots.push(c.propose_write(leader, 1, epoch, batch));
        c.settle();
    }
    assert!(slots[0].lock().unwrap().is_none());
    assert!(slots[1].lock().unwrap().is_none());
    let third = slots[2].lock().unwrap().take();
    assert!(
        matches!(third, Some(Err(RaftStoreError::ServerIsBusy(_)))),
        "{third:?}"
    );
    let mut reads = Vec::new();
    for _ in 0..2 {
        let (slot, cb) = cluster::slot::<()>();
        c.send(
            leader,
            StoreMsg::ReadIndex {
                region_id: 1,
                epoch,
                term: 0,
                cb,
            },
        );
        reads.push(slot);
    }
    assert!(reads[0].lock().unwrap().is_none());
    let second = reads[1].lock().unwrap().take();
    assert!(
        matches!(second, Some(Err(RaftStoreError::ServerIsBusy(_)))),
        "{second:?}"
    );
    // Once the leader loses its lease (check-quorum) the queued read fails as NotLeader;
    // after healing, the queued proposals are answered (applied or superseded).
    c.ticks(40);
    c.heal();
    c.ticks(40);
    for slot in &slots[..2] {
        assert!(
            slot.lock().unwrap().is_some(),
            "a queued proposal was never answered"
        );
    }
    assert!(
        reads[0].lock().unwrap().is_some(),
        "a queued read was never answered"
    );
}

/// How long a test waits for a store's checksum thread.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Every replica computes its checksum at the same log index; equal data gives equal
/// checksums, and a replica whose data was changed behind Raft's back is caught.
#[test]
fn replica_checksums_are_taken_at_one_log_index() {
    let mut c = Cluster::new(3, 3);
    let leader = c.wait_leader(1);
    for i in 0..20 {
        c.must_put(1, &key(i), format!("v{i}").as_bytes());
    }
    let (index, checksum, keys) = compute_hash(&mut c, leader, 1).unwrap();
    assert_eq!(keys, 20);
    c.wait_applied(1, &[1, 2, 3]);
    for store in [1, 2, 3] {
        assert_eq!(
            c.wait_checksum(store, 1, index, WAIT),
            Ok((checksum, keys)),
            "store {store}"
        );
    }
    // Corrupt one follower's data directly, then checksum again: it differs there only.
    let follower = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let mut batch = flotilla_storage::WriteBatch::new();
    batch.put(flotilla_storage::Cf::Default, key(3), b"rot".to_vec());
    c.engine(follower).write(batch, true).unwrap();
    let (index2, checksum2, _) = compute_hash(&mut c, leader, 1).unwrap();
    assert!(index2 > index);
    c.wait_applied(1, &[1, 2, 3]);
    for store in [1, 2, 3] {
        let (sum, _) = c.wait_checksum(store, 1, index2, WAIT).unwrap();
        assert_eq!(sum == checksum2, store != follower, "store {store}");
    }
}

/// A checksum is of the region as of its log index on every replica, whatever else the
/// same round applies: writes applied before it in the round (not yet in the engine when
/// the store thread hands the checksum over) count, writes after it do not.
#[test]
fn a_checksum_counts_the_writes_of_its_round_before_it_and_none_after() {
    let mut c = Cluster::new(3, 3);
    let leader = c.wait_leader(1);
    for i in 0..10 {
        c.must_put(1, &key(i), b"old");
    }
    c.wait_applied(1, &[1, 2, 3]);
    let epoch = c.region(leader, 1).epoch.unwrap();
    // Handed over without running rounds, so every replica applies them in one round.
    let write = |c: &mut Cluster, batch| c.propose_write(leader, 1, epoch, batch);
    let mut before = flotilla_storage::WriteBatch::new();
    before.put(flotilla_storage::Cf::Default, key(3), b"new".to_vec());
    before.delete(flotilla_storage::Cf::Default, key(4));
    before.put(flotilla_storage::Cf::Default, key(15), b"added".to_vec());
    let first = write(&mut c, before);
    let (hash, cb) = cluster::slot::<(u64, u64, u64)>();
    c.handle(leader, StoreMsg::ComputeHash { region_id: 1, cb });
    let mut after = flotilla_storage::WriteBatch::new();
    after.put(flotilla_storage::Cf::Default, key(17), b"later".to_vec());
    after.put(flotilla_storage::Cf::Default, key(16), b"later".to_vec());
    let second = write(&mut c, after);
    c.settle();
    let hasher = c.checksums(leader);
    assert!(hasher.wait_idle(WAIT));
    let (index, sum, keys) = hash.lock().unwrap().take().unwrap().unwrap();
    c.wait_applied(1, &[1, 2, 3]);
    assert!(first.lock().unwrap().take().unwrap().is_ok());
    assert!(second.lock().unwrap().take().unwrap().is_ok());
    assert_eq!(keys, 10, "10 - k4 + k15, and neither of the later writes");
    for store in [1, 2, 3] {
        assert_eq!(
            c.wait_checksum(store, 1, index, WAIT),
            Ok((sum, keys)),
            "store {store}"
        );
    }
    // The same data written plainly, checksummed alone, gives the same checksum.
    let mut undo = flotilla_storage::WriteBatch::new();
    undo.delete(flotilla_storage::Cf::Default, key(17));
    undo.delete(flotilla_storage::Cf::Default, key(16));
    let undone = write(&mut c, undo);
    c.settle();
    assert!(undone.lock().unwrap().take().unwrap().is_ok());
    let (_, again, keys_again) = compute_hash(&mut c, leader, 1).unwrap();
    assert_eq!((again, keys_again), (sum, keys));
}

/// With the checksum thread busy and its queue full, a further checksum is answered with
/// a retryable error at its index, not queued without bound; once the thread is free
/// again, checksums work.
#[test]
fn a_checksum_past_the_queue_is_refused_with_a_retryable_error() {
    let mut c = Cluster::with_config(3, 3, |cfg| cfg.checksum_queue = 2);
    let leader = c.wait_leader(1);
    c.must_put(1, &key(1), b"v");
    c.wait_applied(1, &[1, 2, 3]);
    for store in [1, 2, 3] {
        c.checksums(store).hold(true);
    }
    // One taken by the thread (held), two queued, the fourth refused.
    let mut slots = Vec::new();
    for i in 0..4 {
        let (slot, cb) = cluster::slot::<(u64, u64, u64)>();
        c.send(leader, StoreMsg::ComputeHash { region_id: 1, cb });
        c.settle();
        slots.push(slot);
        if i == 0 {
            let hasher = c.checksums(leader);
            assert!(
                hasher.wait_held(WAIT),
                "the leader's checksum thread took none"
            );
        }
    }
    let refused = slots[3].lock().unwrap().take().expect("answered at once");
    assert!(
        matches!(&refused, Err(e @ RaftStoreError::ServerIsBusy(m)) if e.is_retryable() && m.contains("raft_checksum_queue")),
        "{refused:?}"
    );
    for store in [1, 2, 3] {
        let hasher = c.checksums(store);
        hasher.hold(false);
        assert!(
            hasher.wait_idle(WAIT),
            "store {store}'s checksums never finished"
        );
    }
    let (index, sum, _) = compute_hash(&mut c, leader, 1).unwrap();
    c.wait_applied(1, &[1, 2, 3]);
    for store in [1, 2, 3] {
        assert_eq!(c.wait_checksum(store, 1, index, WAIT), Ok((sum, 1)));
    }
}

/// A batch computed under an older leader term is refused, so state a leader kept in
/// memory during an earlier term can never be written after it regained leadership.
#[test]
fn a_write_of_an_older_leader_term_is_refused() {
    let mut c = Cluster::new(3, 3);
    let leader = c.wait_leader(1);
    let term = c.status(leader, 1).unwrap().term;
    let write = |c: &mut Cluster, term: u64| {
        let mut batch = flotilla_storage::WriteBatch::new();
        batch.put(flotilla_storage::Cf::Default, key(1), b"v".to_vec());
        let (slot, cb) = cluster::slot::<()>();
        c.send(
            leader,
            StoreMsg::Write {
                region_id: 1,
                epoch: c.region(leader, 1).epoch.unwrap(),
                term,
                batch,
                cb,
            },
        );
        let r = slot.lock().unwrap().take();
        r.unwrap()
    };
    assert!(write(&mut c, term).is_ok());
    let refused = write(&mut c, term - 1);
    assert!(
        matches!(refused, Err(RaftStoreError::StaleCommand(1))),
        "{refused:?}"
    );
}

/// Split under writes: writes to both halves are proposed before, together with and after
/// a split, through a network that drops, delays and reorders. Each write is either
/// acknowledged and then on every replica, or refused with a routing error and nowhere;
/// the replicas of both regions end identical.
#[test]
fn writes_racing_a_split_land_whole_or_not_at_all() {
    let mut c = Cluster::with_config(3, 3, |cfg| cfg.log_gc_count_limit = 16);
    let leader = c.wait_leader(1);
    let epoch = c.region(leader, 1).epoch.unwrap();
    c.faults = NetFaults {
        drop_rate: 0.05,
        delay_rate: 0.2,
        max_delay_rounds: 3,
        reorder: true,
    };
    let mut writes = Vec::new();
    let mut split = None;
    for i in 0..40u64 {
        if i == 15 {
            let (slot, cb) = cluster::slot::<Vec<flotilla_proto::metapb::Region>>();
            c.send(
                leader,
                StoreMsg::Split {
                    region_id: 1,
                    epoch,
                    split_key: key(20),
                    new_region_id: 2,
                    new_peer_ids: vec![201, 202, 203],
                    cb,
                },
            );
            split = Some(slot);
        }
        // Every write carries the epoch from before the split, as a client with a stale
        // route would.
        let mut batch = flotilla_storage::WriteBatch::new();
        batch.put(flotilla_storage::Cf::Default, key(i), b"v".to_vec());
        let slot = c.propose_write(leader, 1, epoch, batch);
        c.settle();
        writes.push((i, slot));
    }
    let answered = |writes: &[(u64, cluster::Slot<()>)]| {
        writes.iter().all(|(_, s)| s.lock().unwrap().is_some())
    };
    for _ in 0..100 {
        if answered(&writes) && split.as_ref().unwrap().lock().unwrap().is_some() {
            break;
        }
        c.tick();
    }
    let split = split.unwrap().lock().unwrap().take();
    assert!(
        matches!(split, Some(Ok(ref regions)) if regions.len() == 2),
        "the split went through: {split:?}"
    );
    c.heal();
    c.wait_applied(1, &[1, 2, 3]);
    c.wait_applied(2, &[1, 2, 3]);
    let mut acked = 0;
    for (i, slot) in &writes {
        let outcome = slot.lock().unwrap().take();
        match outcome {
            Some(Ok(())) => {
                acked += 1;
                for store in [1, 2, 3] {
                    assert_eq!(
                        c.get(store, &key(*i)),
                        Some(b"v".to_vec()),
                        "acknowledged write {i} is missing on store {store}"
                    );
                }
            }
            Some(Err(e)) => {
                assert!(e.is_retryable(), "write {i} refused with {e}");
                for store in [1, 2, 3] {
                    assert_eq!(
                        c.get(store, &key(*i)),
                        None,
                        "refused write {i} was applied"
                    );
                }
            }
            None => {
                // Lost with its messages and never answered: a client retries; here it
                // must at least not be half applied.
                let on: Vec<bool> = [1, 2, 3]
                    .iter()
                    .map(|s| c.get(*s, &key(*i)).is_some())
                    .collect();
                assert!(
                    on.iter().all(|x| *x) || on.iter().all(|x| !*x),
                    "write {i} half applied: {on:?}"
                );
            }
        }
    }
    // Writes ordered before the split in the log land; those after it carry a stale epoch.
    assert!(acked >= 10, "only {acked} writes acknowledged");
    assert!(acked < 40, "writes after the split must be refused");
    for (start, end) in [(Vec::new(), key(20)), (key(20), Vec::new())] {
        let leader = c.leader_of(1).unwrap();
        let leader_data = c.dump(leader, &start, &end);
        for store in [1, 2, 3] {
            assert_eq!(
                c.dump(store, &start, &end),
                leader_data,
                "store {store} differs"
            );
        }
    }
    for store in [1, 2, 3] {
        assert_eq!(c.region(store, 1).end_key.as_ref(), key(20).as_slice());
        assert_eq!(c.region(store, 2).start_key.as_ref(), key(20).as_slice());
    }
}

/// Answers a read index at once if the store can (from its lease), without running a round:
/// `None` means it had to ask a quorum.
fn read_without_a_round(c: &mut Cluster, store_id: u64) -> Option<Result<(), RaftStoreError>> {
    let epoch = c.region(store_id, 1).epoch.unwrap_or_default();
    let (slot, cb) = cluster::slot::<()>();
    c.handle(
        store_id,
        StoreMsg::ReadIndex {
            region_id: 1,
            epoch,
            term: 0,
            cb,
        },
    );
    slot.lock().unwrap().take()
}

/// Elects a leader of region 1 and writes through it; returns the leader and its term.
fn leader_with_a_write(c: &mut Cluster) -> (u64, u64) {
    let leader = c.wait_leader(1);
    c.must_put(1, b"k", b"1");
    let term = c.status(leader, 1).unwrap().term;
    (leader, term)
}

/// A leader serves reads from its lease without a quorum, even cut off from it; but the
/// lease ends before the majority can elect anyone else, so the cut-off leader never
/// answers a read that misses the new leader's writes.
#[test]
fn a_lease_serves_reads_alone_and_ends_before_another_leader_can_be_elected() {
    let mut c = Cluster::new(3, 3);
    let (old, term) = leader_with_a_write(&mut c);
    // The quorum read just made took the lease: a read is answered without a round.
    assert!(matches!(read_without_a_round(&mut c, old), Some(Ok(()))));
    assert!(c.board(old).lease_read(1, term));
    assert!(
        !c.board(old).lease_read(1, term + 1),
        "a lease is for its term only"
    );
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|s| *s != old).collect();
    c.partition(&[&[old], &others]);
    assert!(
        matches!(read_without_a_round(&mut c, old), Some(Ok(()))),
        "within its lease the cut-off leader still serves reads"
    );
    let mut lease_ended_at = None;
    let mut new_leader = None;
    for tick in 1..=200 {
        c.tick();
        let leased = c.board(old).lease_read(1, term);
        if !leased && lease_ended_at.is_none() {
            lease_ended_at = Some(tick);
        }
        if let Some(l) = others
            .iter()
            .copied()
            .find(|s| c.status(*s, 1).unwrap().is_leader)
        {
            assert!(
                !leased,
                "store {l} leads at tick {tick} while the old leader's lease still holds"
            );
            new_leader = Some(l);
            break;
        }
    }
    let new_leader = new_leader.expect("the majority elected a new leader");
    assert!(lease_ended_at.is_some());
    c.wait_leader(1);
    assert!(matches!(
        c.try_put(new_leader, 1, b"k", b"2", 10),
        Some(Ok(()))
    ));
    // The old leader serves no read now: it has neither a lease nor a quorum.
    assert!(
        !matches!(c.read_index(old, 1), Ok(())),
        "the cut-off leader answered a read after the majority wrote without it"
    );
    c.heal();
    c.wait_applied(1, &[1, 2, 3]);
    assert_eq!(c.get(old, b"k"), Some(b"2".to_vec()));
}

/// A lease in use is renewed before it runs out; an unused one lapses (an idle region
/// costs no extra heartbeats); a leadership transfer ends it at once, since the target is
/// elected without waiting out the followers' refusal.
#[test]
fn a_lease_in_use_is_renewed_an_idle_one_lapses_and_a_transfer_ends_it() {
    let mut c = Cluster::new(3, 3);
    let (leader, term) = leader_with_a_write(&mut c);
    for tick in 0..40 {
        assert!(
            c.board(leader).lease_read(1, term),
            "the lease in use lapsed at tick {tick}"
        );
        c.tick();
    }
    // Unused for longer than a lease: it lapses, and the next read asks a quorum.
    c.ticks(12);
    assert!(!c.board(leader).lease_read(1, term));
    let r = read_without_a_round(&mut c, leader);
    assert!(r.is_none(), "{r:?}");
    c.settle();
    assert!(
        c.board(leader).lease_read(1, term),
        "the quorum read renewed it"
    );
    let target = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let target_peer = c.status(target, 1).unwrap().peer_id;
    c.handle(
        leader,
        StoreMsg::TransferLeader {
            region_id: 1,
            to_peer_id: target_peer,
        },
    );
    assert!(
        !c.board(leader).lease_read(1, term),
        "a transfer must end the lease before the target can campaign"
    );
    assert_eq!(c.wait_leader(1), target);
}

/// Proposing a membership change ends the lease (a new quorum need not have heard the
/// heartbeats that gave it), and no lease is taken until the change is applied.
#[test]
fn a_membership_change_ends_the_lease_until_it_is_applied() {
    let mut c = Cluster::new(4, 3);
    let (leader, term) = leader_with_a_write(&mut c);
    assert!(c.board(leader).lease_read(1, term));
    let (slot, cb) = cluster::slot();
    c.handle(
        leader,
        StoreMsg::ChangePeers {
            region_id: 1,
            changes: vec![PeerChange {
                change_type: ConfChangeType::AddLearnerNode,
                peer: peer(104, 4),
            }],
            cb,
        },
    );
    assert!(
        !c.board(leader).lease_read(1, term),
        "a proposed membership change must end the lease"
    );
    assert!(
        read_without_a_round(&mut c, leader).is_none(),
        "a read must ask a quorum while the change is pending"
    );
    c.settle();
    assert!(matches!(slot.lock().unwrap().take(), Some(Ok(_))));
    assert!(c.read_index(leader, 1).is_ok());
    assert!(
        c.board(leader).lease_read(1, term),
        "a quorum read after the change takes the lease again"
    );
}

/// Leadership is handed only to a peer heard from within two heartbeats whose log is
/// replicated and close behind: a leader refuses proposals while a transfer is pending,
/// and one to a dead store (which the meta service may still count as up) would stall the
/// region's writes for an election timeout.
#[test]
fn leadership_goes_only_to_a_peer_that_is_up_and_caught_up() {
    let mut c = Cluster::new(3, 3);
    let (leader, _) = leader_with_a_write(&mut c);
    let target = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    let target_peer = c.status(target, 1).unwrap().peer_id;
    let leader_peer = c.status(leader, 1).unwrap().peer_id;
    c.ticks(2);
    assert!(c.transfer_target_ready(leader, 1, target_peer));
    assert!(
        !c.transfer_target_ready(leader, 1, leader_peer),
        "not to itself"
    );
    assert!(
        !c.transfer_target_ready(target, 1, leader_peer),
        "only a leader hands leadership on"
    );
    c.stop(target);
    c.ticks(5);
    assert!(
        !c.transfer_target_ready(leader, 1, target_peer),
        "a store not heard from for two heartbeats is no target"
    );
    c.must_put(1, b"k", b"2");
    assert_eq!(c.leader_of(1), Some(leader));
}

/// Ticks `store` alone until its peer of region 1 stops following `leader_peer` (its
/// election timer ran out and it campaigned); bounded.
fn tick_alone_until_it_campaigns(c: &mut Cluster, store: u64, leader_peer: u64) {
    for _ in 0..40 {
        if c.status(store, 1).unwrap().leader_peer_id != leader_peer {
            return;
        }
        c.tick_store(store);
    }
    panic!("store {store} did not campaign within 40 of its own ticks");
}

/// The failover stall seen in bench/failover.py: the leader dies; one follower's clock
/// runs ahead and it pre-campaigns while the other still counts the dead leader alive
/// (so that one ignores it); then the other's timer runs out and it pre-campaigns with a
/// shorter log, which the first refuses. The first must campaign again at once, not
/// after another whole election timeout.
#[test]
fn a_refused_pre_vote_from_a_shorter_log_makes_the_longer_log_campaign_at_once() {
    let mut c = Cluster::new(3, 3);
    let (old, _) = leader_with_a_write(&mut c);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|s| *s != old).collect();
    let (ahead, behind) = (others[0], others[1]);
    let old_peer = c.status(old, 1).unwrap().peer_id;
    // `ahead` gets one more entry than `behind`.
    c.partition(&[&[old, ahead], &[behind]]);
    assert!(matches!(c.try_put(old, 1, b"k", b"2", 0), Some(Ok(()))));
    c.stop(old);
    c.heal();
    tick_alone_until_it_campaigns(&mut c, ahead, old_peer);
    assert_eq!(
        c.leader_of(1),
        None,
        "`behind` still counts the old leader alive"
    );
    assert_eq!(c.status(behind, 1).unwrap().leader_peer_id, old_peer);
    tick_alone_until_it_campaigns(&mut c, behind, old_peer);
    // No tick since: `ahead` campaigned when it refused `behind`'s pre-vote.
    assert_eq!(
        c.leader_of(1),
        Some(ahead),
        "the longer log waited out another election timeout"
    );
    c.must_put(1, b"k", b"3");
    c.wait_applied(1, &[ahead, behind]);
    assert_eq!(c.get(behind, b"k").as_deref(), Some(&b"3"[..]));
}

/// A replica removed from its region while its store was down (replica repair's case) is
/// destroyed when the store comes back: its first message (a pre-vote) is answered by a
/// member with a tombstone. And a store whose removed replica is still there takes a new
/// replica of the same region: a message for a newer peer of it, in a newer membership,
/// makes the old one give way. (Before, the removed replica stayed forever, holding its
/// data, and a new replica on that store was never created: every message for it was
/// dropped as meant for another incarnation.)
#[test]
fn a_replica_removed_while_its_store_was_down_gives_way_when_it_returns() {
    let mut c = Cluster::new(4, 3);
    for i in 0..10 {
        c.must_put(1, &key(i), b"v");
    }
    c.wait_applied(1, &[1, 2, 3]);
    let on_three = c.status(3, 1).unwrap().peer_id;
    c.stop(3);
    // Replace store 3's replica by one on store 4, as replica repair does.
    c.change_peers(
        1,
        vec![
            PeerChange {
                change_type: ConfChangeType::AddNode,
                peer: peer(204, 4),
            },
            PeerChange {
                change_type: ConfChangeType::AddLearnerNode,
                peer: peer(on_three, 3),
            },
        ],
    )
    .unwrap();
    c.ticks(5);
    c.change_peers(
        1,
        vec![PeerChange {
            change_type: ConfChangeType::RemoveNode,
            peer: peer(on_three, 3),
        }],
    )
    .unwrap();
    c.must_put(1, b"after", b"1");
    c.wait_applied(1, &[1, 2, 4]);
    // Store 3 returns with its removed replica, which campaigns once its timer runs out.
    c.start(3);
    let mut gone = false;
    for _ in 0..100 {
        c.ticks(1);
        if c.status(3, 1).is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the removed replica on store 3 is still there");
    assert!(c.dump(3, b"", b"").is_empty(), "it left its data");

    // Again with a learner, and this time a new replica on store 3 is added before the
    // store returns: the first message for it makes the removed one give way.
    let learner = |id: u64| PeerChange {
        change_type: ConfChangeType::AddLearnerNode,
        peer: peer(id, 3),
    };
    c.change_peers(1, vec![learner(303)]).unwrap();
    c.wait_applied(1, &[1, 2, 3, 4]);
    c.stop(3);
    c.change_peers(
        1,
        vec![PeerChange {
            change_type: ConfChangeType::RemoveNode,
            peer: peer(303, 3),
        }],
    )
    .unwrap();
    c.must_put(1, b"again", b"2");
    c.change_peers(1, vec![learner(313)]).unwrap();
    c.start(3);
    let mut replaced = false;
    for _ in 0..100 {
        c.ticks(1);
        if c.status(3, 1).is_some_and(|s| s.peer_id == 313) && c.get(3, b"again").is_some() {
            replaced = true;
            break;
        }
    }
    assert!(replaced, "store 3 did not take its new replica");
    assert_eq!(c.get(3, b"after"), Some(b"1".to_vec()));
}

/// A store that once held a region and gave it up keeps a tombstone of it, with the range
/// the region had then. When the region comes back to that store after a split, its new
/// replica must clear only its own, smaller range: the old range now holds the other half,
/// which may have a replica on the same store. (The new replica was opened from the
/// tombstone, counted as holding the old range, and the snapshot that filled it deleted
/// the other half's data on that store: found as a table reading empty after
/// `ctl remove-store`.)
#[test]
fn a_replica_over_a_tombstone_clears_only_its_own_range() {
    let mut c = Cluster::new(4, 3);
    for i in 0..40 {
        c.must_put(1, &key(i), b"v");
    }
    let learner = |id: u64, store: u64| PeerChange {
        change_type: ConfChangeType::AddLearnerNode,
        peer: peer(id, store),
    };
    let remove = |id: u64, store: u64| PeerChange {
        change_type: ConfChangeType::RemoveNode,
        peer: peer(id, store),
    };
    // Store 4 holds the whole region for a while, then gives it up.
    c.change_peers(1, vec![learner(104, 4)]).unwrap();
    c.wait_applied(1, &[1, 2, 3, 4]);
    c.change_peers(1, vec![remove(104, 4)]).unwrap();
    c.ticks(3);
    assert!(
        c.status(4, 1).is_none(),
        "the removed replica is still there"
    );
    // The region splits, and store 4 takes a replica of the right half.
    c.split(1, &key(20), 2, vec![201, 202, 203]).unwrap();
    c.wait_applied(1, &[1, 2, 3]);
    c.change_peers(2, vec![learner(204, 4)]).unwrap();
    c.wait_applied(2, &[1, 2, 3, 4]);
    assert_eq!(c.dump(4, &key(20), b"").len(), 20);
    // Then a new replica of the left half on store 4, over its tombstone.
    c.change_peers(1, vec![learner(114, 4)]).unwrap();
    c.wait_applied(1, &[1, 2, 3, 4]);
    assert_eq!(c.region(4, 1).end_key.as_ref(), key(20).as_slice());
    assert_eq!(c.dump(4, b"", &key(20)).len(), 20);
    assert_eq!(
        c.dump(4, &key(20), b"").len(),
        20,
        "the right half's data on store 4 was deleted"
    );
    // Both replicas come back from a restart with their own ranges and data.
    c.stop(4);
    c.start(4);
    c.must_put(2, &key(30), b"after");
    c.wait_applied(1, &[1, 2, 3, 4]);
    c.wait_applied(2, &[1, 2, 3, 4]);
    assert_eq!(c.region(4, 1).end_key.as_ref(), key(20).as_slice());
    assert_eq!(c.region(4, 2).start_key.as_ref(), key(20).as_slice());
    assert_eq!(c.get(4, &key(30)), Some(b"after".to_vec()));
    assert_eq!(c.dump(4, b"", b"").len(), 40);
}
