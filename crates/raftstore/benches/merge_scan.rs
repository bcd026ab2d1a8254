//! How long a store's thread stops while a region that held many keys, all deleted, is
//! frozen by a prepare-merge and absorbed by a commit-merge, and how long the check that
//! it holds nothing takes (a scan through every deleted key's tombstone, which the
//! region's leader runs off the store thread; builds before this bench's second run ran
//! it, and a range clear on every store, on the store thread). A dropped table's region
//! looks like this once its data is deleted, until compaction drops the tombstones. Every
//! region of the store waits for its thread, so a stop longer than an election timeout
//! (1–2 s by default) costs it the regions it leads.
//!
//! `cargo bench -p flotilla-raftstore --bench merge_scan --profile dev`
//! (`MERGE_KEYS` sets how many keys the region held, default 200,000: the default split
//! threshold of a region).

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{
    FILL_BATCH, FILLED_BASE, commit, delete_all, filled_region, key, leader_alone, prepare,
};
use flotilla_raftstore::first_data_key;

fn main() {
    let keys: u64 = std::env::var("MERGE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (prepare_stop, check, commit_stop) = run(keys);
    println!("a region that held {keys} keys of 100 bytes, all deleted, is merged away");
    println!("| step | longest round of a store's thread | off the store thread |");
    println!("|---|---|---|");
    println!("| prepare-merge | {} ms | |", prepare_stop.as_millis());
    println!("| emptiness check | | {} ms |", check.as_millis());
    println!("| commit-merge | {} ms | |", commit_stop.as_millis());
}

/// The longest round of any store while the prepare applied, how long the leader's
/// emptiness check took, and the longest round while the commit applied.
fn run(keys: u64) -> (Duration, Duration, Duration) {
    let mut c = filled_region(keys);
    let mut first = 0;
    while first < keys {
        let last = (first + FILL_BATCH).min(keys);
        let doomed: Vec<Vec<u8>> = (first..last).map(|i| key(FILLED_BASE + i)).collect();
        delete_all(&mut c, 2, &doomed);
        first = last;
    }
    c.wait_applied(2, &[1, 2, 3]);
    c.longest_round.clear();
    let source = prepare(&mut c, 2).expect("the region holds no data");
    c.wait_applied(2, &[1, 2, 3]);
    let prepare_stop = c.longest_round.values().copied().max().unwrap_or_default();
    let leader = leader_alone(&mut c, 2);
    let engine = c.engine(leader);
    let started = Instant::now();
    assert_eq!(first_data_key(&engine, &source).unwrap(), None);
    let check = started.elapsed();
    c.longest_round.clear();
    let leader = c.wait_leader(1);
    let epoch = c.region(leader, 1).epoch.unwrap_or_default();
    commit(&mut c, 1, epoch, source).expect("the merge commits");
    c.wait_applied(1, &[1, 2, 3]);
    let commit_stop = c.longest_round.values().copied().max().unwrap_or_default();
    assert_eq!(c.dump(leader, &key(FILLED_BASE), b"").len(), 0);
    (prepare_stop, check, commit_stop)
}
