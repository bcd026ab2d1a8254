//! Keys of the `raft` column family. Every key starts with a one-byte kind and the region
//! id in big-endian, so one region's state is contiguous and its log is ordered by index.

const STORE_IDENT: u8 = 0x00;
const REGION_STATE: u8 = 0x01;
const RAFT_STATE: u8 = 0x02;
const APPLY_STATE: u8 = 0x03;
const LOG: u8 = 0x04;

/// The store's identity (cluster and store id), node-local like the rest of `Cf::Raft`.
pub fn store_ident_key() -> Vec<u8> {
    vec![STORE_IDENT]
}

fn region_key(kind: u8, region_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(kind);
    key.extend_from_slice(&region_id.to_be_bytes());
    key
}

/// Where a peer's `RegionLocalState` lives.
pub fn region_state_key(region_id: u64) -> Vec<u8> {
    region_key(REGION_STATE, region_id)
}

/// Where a peer's `RaftLocalState` (hard state, last index and term) lives.
pub fn raft_state_key(region_id: u64) -> Vec<u8> {
    region_key(RAFT_STATE, region_id)
}

/// Where a peer's `RaftApplyState` lives.
pub fn apply_state_key(region_id: u64) -> Vec<u8> {
    region_key(APPLY_STATE, region_id)
}

/// The key of one Raft log entry.
pub fn log_key(region_id: u64, index: u64) -> Vec<u8> {
    let mut key = region_key(LOG, region_id);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The index of a log key made by `log_key`.
pub fn log_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(9..17)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// `[start, end)` of every region-state key: a store scans it at startup to find its peers.
pub fn region_state_range() -> (Vec<u8>, Vec<u8>) {
    (vec![REGION_STATE], vec![REGION_STATE + 1])
}

/// The region id in a key made by `region_state_key`.
pub fn region_id_of_state_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_region_then_index() {
        assert!(log_key(1, u64::MAX) < log_key(2, 0));
        assert!(log_key(1, 255) < log_key(1, 256));
        assert_eq!(log_index(&log_key(7, 1234)), Some(1234));
        let (start, end) = region_state_range();
        let key = region_state_key(42);
        assert!(start <= key && key < end);
        assert_eq!(region_id_of_state_key(&key), Some(42));
    }
}
