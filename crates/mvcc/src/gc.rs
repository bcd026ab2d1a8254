//! Garbage collection of the versions no reader at or above a safe point can see.
//!
//! For each key, the newest data version at or below the safe point is what a reader at
//! the safe point sees: a value stays, a deletion goes once nothing older remains below it.
//! Everything older goes, and so do rollback and lock records at or below the safe point.
//! Versions above the safe point are never touched. The safe point's owner keeps it below
//! every open transaction's snapshot and below every lock's start_ts, so nothing is written
//! at or below it any more and no lock's fate depends on a record removed here.

use flotilla_storage::{Cf, WriteBatch};
use flotilla_types::Timestamp;

use crate::error::MvccError;
use crate::keys::{decode_user_key, encode_range, versioned_key};
use crate::records::{Write, WriteKind};
use crate::store::Mvcc;

/// Bytes of the descending timestamp at the end of a versioned key.
const TS_BYTES: usize = 8;

/// What one [`Mvcc::gc`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcProgress {
    /// The user key to continue from; `None` once the range is done.
    pub next: Option<Vec<u8>>,
    /// Records removed: write records (versions, rollback and lock records) and the
    /// long values of removed versions.
    pub records_deleted: u64,
    /// Keys looked at.
    pub keys_examined: u64,
}

/// The key being collected.
struct KeyState {
    ek: Vec<u8>,
    /// The newest data version at or below the safe point was found.
    decided: bool,
    /// That version is a deletion: its write record, removed once every older version of
    /// the key is (a deletion removed first would let an older value show through if
    /// the work stopped in between).
    deletion: Option<(Vec<u8>, Timestamp)>,
}

impl Mvcc {
    /// Removes, in the user-key range `[start, end)` (empty end: unbounded), the versions
    /// no reader at or above `safe_point` can see, and raises this store's safe point to
    /// it first. Stops after about `work_max` units of work (a key looked at, a record
    /// removed) and returns where to continue. The removals are one batch, not synced: a
    /// removal lost in a crash is made again by a later run.
    pub fn gc(
        &self,
        start: &[u8],
        end: &[u8],
        safe_point: Timestamp,
        work_max: usize,
    ) -> Result<GcProgress, MvccError> {
        assert!(work_max > 0, "gc needs room for some work");
        self.raise_safe_point(safe_point);
        let (es, ee) = encode_range(start, end);
        let mut batch = WriteBatch::new();
        let mut progress = GcProgress::default();
        // Keys whose newest version at or below the safe point is a deletion removed here:
        // their `latest` entry goes too if it still names that deletion.
        let mut emptied: Vec<(Vec<u8>, Timestamp)> = Vec::new();
        let mut current: Option<KeyState> = None;
        let mut next = None;
        let work = |batch: &WriteBatch, progress: &GcProgress| {
            batch.len() + progress.keys_examined as usize
        };
        for item in self.engine.scan(Cf::Write, &es, &ee, false) {
            let (vk, value) = item?;
            if vk.len() < TS_BYTES {
                return Err(MvccError::Corrupt("write key length".into()));
            }
            let (ek, mut ts_bytes) = vk.split_at(vk.len() - TS_BYTES);
            let commit_ts = Timestamp(
                flotilla_codec::decode_u64_desc(&mut ts_bytes)
                    .map_err(|e| MvccError::Corrupt(e.to_string()))?,
            );
            if current.as_ref().is_none_or(|c| c.ek != ek) {
                if let Some(done) = current.take() {
                    finish_key(&mut batch, &mut emptied, done);
                }
                if work(&batch, &progress) >= work_max {
                    next = Some(ek.to_vec());
                    break;
                }
                current = Some(KeyState {
                    ek: ek.to_vec(),
                    decided: false,
                    deletion: None,
                });
                progress.keys_examined += 1;
            } else if work(&batch, &progress) >= work_max {
                // Within a key: everything removed so far keeps the key's visible version
                // (a pending deletion stays), so the next call starts the key again.
                current = None;
                next = Some(ek.to_vec());
                break;
            }
            if commit_ts > safe_point {
                continue;
            }
            let state = current.as_mut().expect("set above");
            let write = Write::from_bytes(&value)?;
            if state.decided {
                if write.kind == WriteKind::Put && write.short_value.is_none() {
                    batch.delete(Cf::Default, versioned_key(ek, write.start_ts));
                }
                batch.delete(Cf::Write, vk.clone());
                continue;
            }
            match write.kind {
                WriteKind::Put => state.decided = true,
                WriteKind::Delete => {
                    state.decided = true;
                    state.deletion = Some((vk.clone(), commit_ts));
                }
                WriteKind::Lock | WriteKind::Rollback => batch.delete(Cf::Write, vk.clone()),
            }
        }
        if let Some(done) = current.take() {
            finish_key(&mut batch, &mut emptied, done);
        }
        progress.records_deleted = batch.len() as u64;
        // A commit racing this one may have made a newer version the key's latest; the
        // latches of the emptied keys keep commits out while their entries are checked
        // and the batch is written.
        let emptied_keys: Vec<&Vec<u8>> = emptied.iter().map(|(ek, _)| ek).collect();
        let _latch = (!emptied_keys.is_empty()).then(|| self.latches.acquire(&emptied_keys));
        for (ek, deleted_at) in &emptied {
            if self
                .latest(ek)?
                .is_some_and(|(commit_ts, _)| commit_ts == *deleted_at)
            {
                batch.delete(Cf::Latest, ek.clone());
                progress.records_deleted += 1;
            }
        }
        if !batch.is_empty() {
            let _unsynced = self.apply(batch)?;
        }
        progress.next = next.map(|ek| decode_user_key(&ek)).transpose()?;
        Ok(progress)
    }
}

/// A key's versions were all seen: a pending deletion goes now, with nothing older left.
fn finish_key(batch: &mut WriteBatch, emptied: &mut Vec<(Vec<u8>, Timestamp)>, key: KeyState) {
    if let Some((vk, commit_ts)) = key.deletion {
        batch.delete(Cf::Write, vk);
        emptied.push((key.ek, commit_ts));
    }
}
