//! What the meta leader's decisions cost per region heartbeat, by number of regions.
//!
//! Every region's leader heartbeats once a second, and each heartbeat asks leader and
//! replica balance for a move, so a heartbeat's cost times the number of regions is the
//! meta leader's CPU per second for them. Run (BENCHMARKS.md):
//! `cargo bench -p flotilla-meta --bench region_heartbeat --profile dev` (the test build,
//! which is warm in CI's cache; drop `--profile dev` for an optimised build).

use std::time::Instant;

use flotilla_meta::state::MetaData;
use flotilla_proto::metapb::{Peer, PeerRole, Region, RegionEpoch};
use flotilla_storage::WriteBatch;

const STORES: u64 = 6;
const REPLICAS: u64 = 3;
/// Heartbeats timed per layout.
const HEARTBEATS: u64 = 20_000;

fn layout(regions: u64) -> MetaData {
    let mut data = MetaData::default();
    let mut batch = WriteBatch::new();
    for id in 1..=regions {
        let peers: Vec<Peer> = (0..REPLICAS)
            .map(|r| Peer {
                id: id * 10 + r,
                store_id: 1 + (id + r) % STORES,
                role: PeerRole::Voter as i32,
            })
            .collect();
        let region = Region {
            id,
            start_key: format!("r{id:08}").into_bytes().into(),
            end_key: format!("r{:08}", id + 1).into_bytes().into(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: peers.clone(),
            merging: None,
        };
        data.upsert_region(region, Some(peers[0]), &mut batch);
    }
    data
}

fn main() {
    println!("| regions | µs per heartbeat | heartbeats' CPU per second |");
    println!("|---|---|---|");
    for regions in [100u64, 1_000, 10_000] {
        let mut data = layout(regions);
        let mut batch = WriteBatch::new();
        let mut moves = 0u64;
        let started = Instant::now();
        for n in 0..HEARTBEATS {
            let id = 1 + n % regions;
            let rec = &data.regions[&id];
            let (region, leader) = (rec.region.clone(), rec.leader);
            // A periodic heartbeat: the same epoch and leader, then the questions the
            // handler asks with the leader's lock held.
            data.upsert_region(region, leader, &mut batch);
            moves += u64::from(data.leader_transfer_target(id, |_| true).is_some());
            moves += u64::from(data.replica_move(id, 3, |_| true, &[]).is_some());
            moves += data.drained_stores().len() as u64;
        }
        let per_heartbeat_us = started.elapsed().as_secs_f64() * 1e6 / HEARTBEATS as f64;
        // Balanced layouts: nothing to move. (Also keeps the calls from being optimised out.)
        assert_eq!(moves, 0, "the layout is balanced");
        println!(
            "| {regions} | {per_heartbeat_us:.1} | {:.1} % of a core |",
            per_heartbeat_us * regions as f64 / 1e4
        );
    }
}
