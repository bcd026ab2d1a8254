//! The meta service's timestamp oracle over a deterministic Raft group: `LocalTso` persists
//! its window through the region's log (as the meta leader does through a term-fenced
//! `RegionEngine`), and a new leader, after a read index, starts above every window the
//! old one persisted. The harness replaces the `RegionEngine`'s thread with its manual
//! clock, so runs replay from their seed.

mod cluster;

use std::sync::{Arc, Mutex};

use cluster::{Cluster, SeedGuard};
use flotilla_raftstore::{RaftStoreError, StoreMsg};
use flotilla_storage::{
    Cf, DurabilityTicket, EngineRef, KvEngine, KvIter, StorageError, WriteBatch,
};
use flotilla_tso::LocalTso;
use flotilla_types::Timestamp;

/// A `KvEngine` over region 1 as led by one store in one term: reads are that store's
/// local reads, writes are proposals fenced by the term, driven by the harness until
/// answered (or refused after `MAX_TICKS`).
struct HarnessRegionEngine {
    cluster: Arc<Mutex<Cluster>>,
    store_id: u64,
    term: u64,
    local: EngineRef,
}

const MAX_TICKS: usize = 30;

impl KvEngine for HarnessRegionEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.local.get(cf, key)
    }

    fn scan<'a>(&'a self, cf: Cf, start: &[u8], end: &[u8], reverse: bool) -> KvIter<'a> {
        self.local.scan(cf, start, end, reverse)
    }

    fn append(&self, batch: WriteBatch) -> Result<DurabilityTicket, StorageError> {
        let mut c = self.cluster.lock().unwrap();
        if !c.alive(self.store_id) {
            return Err(StorageError::Unavailable("the store is down".into()));
        }
        let epoch = c.region(self.store_id, 1).epoch.unwrap_or_default();
        let (slot, cb) = cluster::slot::<()>();
        c.send(
            self.store_id,
            StoreMsg::Write {
                region_id: 1,
                epoch,
                term: self.term,
                batch,
                cb,
            },
        );
        for _ in 0..MAX_TICKS {
            if let Some(r) = slot.lock().unwrap().take() {
                return r
                    .map(|()| DurabilityTicket::from_sequence(0))
                    .map_err(|e: RaftStoreError| StorageError::Unavailable(e.to_string()));
            }
            c.tick();
        }
        Err(StorageError::Unavailable(
            "no answer from the region".into(),
        ))
    }

    fn sync_through(&self, _ticket: DurabilityTicket) -> Result<(), StorageError> {
        Ok(())
    }

    fn disk_space_bytes(&self) -> u64 {
        0
    }
}

/// Becomes the oracle's leader the way the meta service does: the region's leader, after
/// a read index (so every window its predecessors persisted is applied here), opens a
/// `LocalTso` over the region with its term.
fn open_leader_tso(c: &Arc<Mutex<Cluster>>, window_ms: u64) -> (u64, LocalTso) {
    let (leader, term, local) = {
        let mut g = c.lock().unwrap();
        let leader = g.wait_leader(1);
        g.read_index(leader, 1)
            .expect("read index on the new leader");
        let term = g.status(leader, 1).unwrap().term;
        (leader, term, g.engine(leader))
    };
    let engine = Arc::new(HarnessRegionEngine {
        cluster: c.clone(),
        store_id: leader,
        term,
        local,
    });
    (
        leader,
        LocalTso::open(engine, window_ms).expect("open the oracle"),
    )
}

/// Hands out whole milliseconds at a time, so the oracle's clock runs seconds ahead of
/// the wall clock: only the persisted window keeps a successor above it.
fn run_ahead(tso: &LocalTso, batches: usize, last: &mut Timestamp) -> usize {
    let mut handed = 0;
    for _ in 0..batches {
        match tso.next_batch(LocalTso::BATCH_MAX) {
            Ok(first) => {
                assert!(first > *last, "timestamp {first:?} is not above {last:?}");
                *last = Timestamp(first.0 + u64::from(LocalTso::BATCH_MAX) - 1);
                handed += 1;
            }
            // A deposed leader cannot raise its window: it stops handing out.
            Err(_) => break,
        }
    }
    handed
}

#[test]
fn timestamps_never_go_backward_across_leader_kills_and_partitions() {
    let seed = cluster::seed();
    let _guard = SeedGuard(seed);
    let c = Arc::new(Mutex::new(Cluster::with_seed(seed, 3, 3, |_| {})));
    let window_ms = 500;
    let mut last = Timestamp::ZERO;

    // Leader 1 runs 3 s ahead of the wall clock, then is killed.
    let (first, tso) = open_leader_tso(&c, window_ms);
    assert_eq!(run_ahead(&tso, 3_000, &mut last), 3_000);
    drop(tso);
    c.lock().unwrap().stop(first);

    // Leader 2 starts above everything leader 1 handed out, then is cut off from the
    // majority while it keeps handing out: whatever it still hands out lies within the
    // window it persisted while it led, and it stops when it cannot raise it.
    let (second, tso) = open_leader_tso(&c, window_ms);
    assert_ne!(second, first);
    assert!(run_ahead(&tso, 2_000, &mut last) > 0);
    {
        let mut g = c.lock().unwrap();
        g.start(first);
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|s| *s != second).collect();
        g.partition(&[&[second], &others]);
    }
    let mut deposed_last = last;
    let after_cut = run_ahead(&tso, 2_000, &mut deposed_last);
    assert!(
        after_cut < 2_000,
        "a leader cut off from the majority kept raising its window"
    );
    drop(tso);

    // Leader 3, elected by the majority, starts above what both predecessors handed out.
    let (third, tso) = open_leader_tso(&c, window_ms);
    assert_ne!(third, second);
    let mut next = deposed_last.max(last);
    assert_eq!(run_ahead(&tso, 100, &mut next), 100);
    c.lock().unwrap().heal();
}
