//! How long a store's thread stops while one of its followers takes a snapshot of a large
//! region: written on the store thread (`snapshot_apply_queue` 0, as before) or on the
//! store's snapshot writer thread. Every region of the store waits for its thread, so a
//! stop longer than an election timeout (1–2 s by default) costs it the regions it leads.
//!
//! `cargo bench -p flotilla-raftstore --bench snapshot_apply --profile dev`
//! (`SNAPSHOT_MB` sets the region's size, default 32).

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use std::time::Instant;

use cluster::{Cluster, key};

fn main() {
    let region_mb: usize = std::env::var("SNAPSHOT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    println!("a follower takes a snapshot of a {region_mb} MiB region");
    println!("| snapshot data written | longest round of its store's thread | catch-up |");
    println!("|---|---|---|");
    for queue in [0, 4] {
        let (longest, caught_up) = run(region_mb, queue);
        let written = if queue == 0 {
            "on the store thread"
        } else {
            "on the snapshot writer thread"
        };
        println!(
            "| {written} | {} ms | {} ms |",
            longest.as_millis(),
            caught_up.as_millis()
        );
    }
}

/// Returns the lagging store's longest round while it caught up, and how long that took.
fn run(region_mb: usize, apply_queue: usize) -> (std::time::Duration, std::time::Duration) {
    let mut c = Cluster::with_config(3, 3, |cfg| {
        cfg.log_gc_count_limit = 8;
        cfg.log_keep_for_lagging_entries = 16;
        cfg.snapshot_apply_queue = apply_queue;
    });
    c.must_put(1, b"first", b"1");
    let leader = c.wait_leader(1);
    let lagging = [1, 2, 3].into_iter().find(|s| *s != leader).unwrap();
    c.stop(lagging);
    // 1 KiB values, 512 KiB per log entry: the leader compacts far past the stopped store.
    let value = vec![7u8; 1024];
    let mut next = 0u64;
    for _ in 0..region_mb * 2 {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..512)
            .map(|_| {
                next += 1;
                (key(next), value.clone())
            })
            .collect();
        c.must_put_batch(1, &pairs);
    }
    c.start(lagging);
    c.longest_round.clear();
    let started = Instant::now();
    c.wait_applied(1, &[1, 2, 3]);
    let caught_up = started.elapsed();
    let leader = c.wait_leader(1);
    assert_eq!(
        c.dump(lagging, b"", b"").len(),
        c.dump(leader, b"", b"").len(),
        "the follower caught up"
    );
    (c.longest_round[&lagging], caught_up)
}
