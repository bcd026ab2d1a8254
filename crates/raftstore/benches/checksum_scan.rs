//! How long a store's thread stops when `flotilla ctl check-replicas` has every replica of a
//! region checksum its data at one log index (`StoreMsg::ComputeHash`), and how long the
//! checksums take to arrive. Every region of a store waits for its thread, so a stop
//! longer than an election timeout (1–2 s by default) costs it the regions it leads.
//!
//! `cargo bench -p flotilla-raftstore --bench checksum_scan --profile dev`
//! (`CHECKSUM_KEYS` sets how many keys of 100 bytes the region holds, default 200,000:
//! the default split threshold of a region).

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use std::time::{Duration, Instant};

use cluster::{compute_hash, filled_region, leader_alone};

fn main() {
    let keys: u64 = std::env::var("CHECKSUM_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (stop, answered) = run(keys);
    println!("every replica of a region holding {keys} keys of 100 bytes checksums it");
    println!("| longest round of a store's thread | all three checksums in |");
    println!("|---|---|");
    println!("| {} ms | {} ms |", stop.as_millis(), answered.as_millis());
}

/// The longest round of any store while the checksum applied, and the time from the
/// request to every replica's checksum.
fn run(keys: u64) -> (Duration, Duration) {
    let mut c = filled_region(keys);
    c.longest_round.clear();
    let leader = leader_alone(&mut c, 2);
    let started = Instant::now();
    let (index, sum, counted) =
        compute_hash(&mut c, leader, 2).expect("the leader checksums its region");
    assert_eq!(counted, keys);
    for store in [1, 2, 3] {
        assert_eq!(
            c.wait_checksum(store, 2, index, Duration::from_secs(600)),
            Ok((sum, keys)),
            "store {store}"
        );
    }
    let answered = started.elapsed();
    let stop = c.longest_round.values().copied().max().unwrap_or_default();
    (stop, answered)
}
