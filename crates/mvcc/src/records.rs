//! The records stored in the `lock` and `write` column families and their binary form.

use flotilla_types::Timestamp;

use crate::error::MvccError;

/// Values up to this size are stored inside the lock and then the write record, saving a
/// second lookup in `default` on every read (TiKV's short-value optimisation).
pub(crate) const SHORT_VALUE_MAX_BYTES: usize = 255;

/// The byte after a lock's short value when the lock is `key_only`.
const KEY_ONLY: u8 = b'k';

/// What a lock protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// A prewritten value.
    Put,
    /// A prewritten deletion.
    Delete,
    /// A read lock taken only to detect conflicts (SELECT ... FOR UPDATE after prewrite).
    Lock,
    /// A pessimistic lock taken when a statement wrote the key; becomes one of the above at
    /// prewrite. Does not block readers.
    Pessimistic,
    /// A shared lock (`FOR SHARE`, a foreign key's referenced row), taken by a statement:
    /// stored beside the key under its transaction's start_ts (`keys::shared_lock_key`), so
    /// any number of transactions hold one key at once. Blocks writers and exclusive
    /// lockers (a `key_only` one: only those that may delete the key), never readers or
    /// other shared lockers. Like `Pessimistic` it may live in memory; it is released at
    /// commit unless kept (`SharedPrewritten`).
    Shared,
    /// A shared lock the transaction depends on until it commits (a foreign key's
    /// referenced row), prewritten: durable, so it cannot be lost before the commit, which
    /// records it as a `WriteKind::Lock` (the record of a primary's fate).
    SharedPrewritten,
}

impl LockKind {
    /// Taken by a statement and not prewritten: the lock has no fate to read (its
    /// transaction commits only after prewriting every lock it keeps), it may live in
    /// memory, and a transaction may give it back before it ends.
    pub fn is_pessimistic(self) -> bool {
        matches!(self, LockKind::Pessimistic | LockKind::Shared)
    }

    /// One of several transactions' locks on one key (see `Shared`).
    pub fn is_shared(self) -> bool {
        matches!(self, LockKind::Shared | LockKind::SharedPrewritten)
    }
}

/// A lock record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// Kind of the lock.
    pub kind: LockKind,
    /// The transaction's primary key.
    pub primary: Vec<u8>,
    /// The transaction's start_ts.
    pub start_ts: Timestamp,
    /// The newest timestamp the transaction checked this key against.
    pub for_update_ts: Timestamp,
    /// Lifetime after `start_ts` (physical) without a heartbeat.
    pub ttl_ms: u64,
    /// The value, when short enough to live in the lock.
    pub short_value: Option<Vec<u8>>,
    /// The lock is about the key's existence only (PostgreSQL's key-level strengths). On a
    /// shared lock: `FOR KEY SHARE`, a foreign key's referenced key, which keeps the key
    /// from being deleted but lets others change its value and lock it `key_only`. On an
    /// exclusive one (pessimistic, or the `Put` or `Lock` it became): `FOR NO KEY
    /// UPDATE`, an update that keeps the key, which `key_only` sharers may join.
    pub key_only: bool,
}

/// What a write record says about its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// The key holds a value.
    Put,
    /// The key was deleted.
    Delete,
    /// The key was only locked: no change, look at older versions.
    Lock,
    /// The transaction at `start_ts` rolled back; stored at `start_ts` so a late prewrite
    /// of that transaction is refused.
    Rollback,
}

/// A write (commit or rollback) record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Kind of the record.
    pub kind: WriteKind,
    /// The writer's start_ts (where its long value lives in `default`).
    pub start_ts: Timestamp,
    /// The value, when short.
    pub short_value: Option<Vec<u8>>,
}

fn corrupt(what: &str) -> MvccError {
    MvccError::Corrupt(what.to_string())
}

fn take<'a>(input: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], MvccError> {
    if input.len() < n {
        return Err(corrupt(what));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn take_u64(input: &mut &[u8], what: &str) -> Result<u64, MvccError> {
    let bytes = take(input, 8, what)?;
    Ok(u64::from_le_bytes(
        bytes.try_into().expect("length checked"),
    ))
}

fn take_bytes(input: &mut &[u8], what: &str) -> Result<Vec<u8>, MvccError> {
    let len_bytes = take(input, 4, what)?;
    let len = u32::from_le_bytes(len_bytes.try_into().expect("length checked")) as usize;
    Ok(take(input, len, what)?.to_vec())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_short_value(out: &mut Vec<u8>, value: &Option<Vec<u8>>) {
    match value {
        Some(v) => {
            out.push(1);
            put_bytes(out, v);
        }
        None => out.push(0),
    }
}

fn take_short_value(input: &mut &[u8]) -> Result<Option<Vec<u8>>, MvccError> {
    match take(input, 1, "short value flag")?[0] {
        0 => Ok(None),
        1 => Ok(Some(take_bytes(input, "short value")?)),
        _ => Err(corrupt("short value flag")),
    }
}

impl Lock {
    /// Binary form stored in the `lock` CF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.primary.len());
        out.push(match self.kind {
            LockKind::Put => b'P',
            LockKind::Delete => b'D',
            LockKind::Lock => b'L',
            LockKind::Pessimistic => b'S',
            LockKind::Shared => b'h',
            LockKind::SharedPrewritten => b'H',
        });
        out.extend_from_slice(&self.start_ts.0.to_le_bytes());
        out.extend_from_slice(&self.for_update_ts.0.to_le_bytes());
        out.extend_from_slice(&self.ttl_ms.to_le_bytes());
        put_bytes(&mut out, &self.primary);
        put_short_value(&mut out, &self.short_value);
        // Only when set, so a lock without it reads the same in a build from before it
        // (which ignores what follows the short value).
        if self.key_only {
            out.push(KEY_ONLY);
        }
        out
    }

    /// Parses the binary form.
    pub fn from_bytes(mut input: &[u8]) -> Result<Self, MvccError> {
        let kind = match take(&mut input, 1, "lock kind")?[0] {
            b'P' => LockKind::Put,
            b'D' => LockKind::Delete,
            b'L' => LockKind::Lock,
            b'S' => LockKind::Pessimistic,
            b'h' => LockKind::Shared,
            b'H' => LockKind::SharedPrewritten,
            _ => return Err(corrupt("lock kind")),
        };
        let start_ts = Timestamp(take_u64(&mut input, "lock start_ts")?);
        let for_update_ts = Timestamp(take_u64(&mut input, "lock for_update_ts")?);
        let ttl_ms = take_u64(&mut input, "lock ttl")?;
        let primary = take_bytes(&mut input, "lock primary")?;
        let short_value = take_short_value(&mut input)?;
        let key_only = match input {
            [] => false,
            [KEY_ONLY] => true,
            _ => return Err(corrupt("lock flags")),
        };
        Ok(Lock {
            kind,
            primary,
            start_ts,
            for_update_ts,
            ttl_ms,
            short_value,
            key_only,
        })
    }

    /// True when the lock's lifetime has passed at `current_ts` (physical clock).
    pub fn is_expired(&self, current_ts: Timestamp) -> bool {
        current_ts.physical_ms() >= self.start_ts.physical_ms().saturating_add(self.ttl_ms)
    }
}

impl Write {
    /// Binary form stored in the `write` CF.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.push(match self.kind {
            WriteKind::Put => b'P',
            WriteKind::Delete => b'D',
            WriteKind::Lock => b'L',
            WriteKind::Rollback => b'R',
        });
        out.extend_from_slice(&self.start_ts.0.to_le_bytes());
        put_short_value(&mut out, &self.short_value);
        out
    }

    /// Parses the binary form.
    pub fn from_bytes(mut input: &[u8]) -> Result<Self, MvccError> {
        let kind = match take(&mut input, 1, "write kind")?[0] {
            b'P' => WriteKind::Put,
            b'D' => WriteKind::Delete,
            b'L' => WriteKind::Lock,
            b'R' => WriteKind::Rollback,
            _ => return Err(corrupt("write kind")),
        };
        let start_ts = Timestamp(take_u64(&mut input, "write start_ts")?);
        let short_value = take_short_value(&mut input)?;
        Ok(Write {
            kind,
            start_ts,
            short_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let lock = Lock {
            kind: LockKind::Pessimistic,
            primary: b"pk".to_vec(),
            start_ts: Timestamp(7),
            for_update_ts: Timestamp(9),
            ttl_ms: 3000,
            short_value: Some(b"v".to_vec()),
            key_only: false,
        };
        assert_eq!(Lock::from_bytes(&lock.to_bytes()).unwrap(), lock);
        let key_share = Lock {
            kind: LockKind::Shared,
            key_only: true,
            ..lock.clone()
        };
        let bytes = key_share.to_bytes();
        assert_eq!(Lock::from_bytes(&bytes).unwrap(), key_share);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Lock::from_bytes(&trailing).is_err());
        let write = Write {
            kind: WriteKind::Rollback,
            start_ts: Timestamp(5),
            short_value: None,
        };
        assert_eq!(Write::from_bytes(&write.to_bytes()).unwrap(), write);
        assert!(Lock::from_bytes(b"Sxx").is_err());
        assert!(Write::from_bytes(b"").is_err());
    }
}
