use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use flotilla_storage::{Cf, EngineRef, KvEngine, WriteBatch};
use parking_lot::Mutex;

use crate::schema::{CatalogSnapshot, SchemaChange, SequenceDef, TableDef, ViewDef};
use crate::{Catalog, CatalogError, IdKind};

const VERSION_KEY: &[u8] = b"catalog/version";
const TABLE_PREFIX: &[u8] = b"catalog/table/";
const VIEW_PREFIX: &[u8] = b"catalog/view/";
const SEQUENCE_PREFIX: &[u8] = b"catalog/sequence/";
const TABLE_ID_KEY: &[u8] = b"catalog/next_table_id";
const ROW_ID_PREFIX: &[u8] = b"catalog/next_row_id/";
/// First table id handed out; lower ids are reserved for system relations.
const FIRST_TABLE_ID: i64 = 16_384;

fn table_key(id: i64) -> Vec<u8> {
    let mut k = TABLE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn sequence_key(id: i64) -> Vec<u8> {
    let mut k = SEQUENCE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn view_key(id: i64) -> Vec<u8> {
    let mut k = VIEW_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    *e.last_mut().expect("non-empty prefix") += 1;
    e
}

fn row_id_key(table: i64) -> Vec<u8> {
    let mut k = ROW_ID_PREFIX.to_vec();
    k.extend_from_slice(&table.to_be_bytes());
    k
}

fn storage_err(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Storage(e.to_string())
}

/// Row ids are persisted this many at a time, so allocation rarely touches the disk.
const ROW_ID_BATCH: i64 = 10_000;
/// Sequence values are persisted this many at a time: a restart skips at most this many
/// (users see sequence gaps, so fewer than row ids, which nobody sees).
pub const SEQUENCE_BATCH: i64 = 1_000;

/// A range of ids reserved on disk and handed out from memory.
#[derive(Default, Clone, Copy)]
struct Reserved {
    next: i64,
    end: i64,
}

/// The catalog of a standalone node, persisted in the meta column family. Every change is
/// one synced write batch: after a crash the catalog is at the old or the new version.
pub struct LocalCatalog {
    engine: EngineRef,
    limits: CatalogLimits,
    /// The current snapshot: held only to read or swap it, never across a write (async
    /// readers on a runtime that may have one thread take it).
    current: Mutex<Arc<CatalogSnapshot>>,
    /// Serialises commits (each computed from the snapshot it found, written, then
    /// swapped in).
    commits: Mutex<()>,
    ids: Mutex<HashMap<IdKindKey, Reserved>>,
}

#[derive(Hash, PartialEq, Eq, Clone, Copy)]
enum IdKindKey {
    Table,
    RowId(i64),
}

fn check_sequence(seq: &SequenceDef) -> Result<(), CatalogError> {
    if seq.increment == 0 || !(seq.min..=seq.max).contains(&seq.start) {
        return Err(CatalogError::Invalid(format!(
            "sequence \"{}\": START {} must lie in [{}, {}] and INCREMENT ({}) must not be zero",
            seq.name, seq.start, seq.min, seq.max, seq.increment
        )));
    }
    Ok(())
}

/// The definitions of one kind (tables, views, sequences) stored as JSON under `prefix`,
/// by name.
fn load_definitions<T: serde::de::DeserializeOwned>(
    engine: &dyn KvEngine,
    prefix: &[u8],
    what: &str,
    name: impl Fn(&T) -> &String,
) -> Result<BTreeMap<String, Arc<T>>, CatalogError> {
    let mut out = BTreeMap::new();
    for item in engine.scan(Cf::Meta, prefix, &prefix_end(prefix), false) {
        let (_, value) = item.map_err(storage_err)?;
        let def: T = serde_json::from_slice(&value)
            .map_err(|e| CatalogError::Storage(format!("corrupt {what} definition: {e}")))?;
        out.insert(name(&def).clone(), Arc::new(def));
    }
    Ok(out)
}

/// Bounds on the catalog's size, checked on every change that grows it (a catalog already
/// past a lowered bound can still shrink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogLimits {
    /// Most relations: tables, views, sequences and indexes together (54000 past it). Each
    /// table starts in a Raft region of its own, and every SQL node holds the whole catalog.
    pub relations_max: usize,
    /// Most columns of one table (54011 past it), PostgreSQL's 1,600 by default.
    pub columns_per_table_max: usize,
}

impl Default for CatalogLimits {
    /// 10,000 relations and 1,600 columns a table.
    fn default() -> Self {
        Self {
            relations_max: 10_000,
            columns_per_table_max: 1_600,
        }
    }
}

/// Tables, views, sequences (owned ones included) and indexes.
fn relation_count(s: &CatalogSnapshot) -> usize {
    let per_table: usize = s
        .tables
        .values()
        .map(|t| 1 + t.indexes.len() + t.columns.iter().filter(|c| c.sequence.is_some()).count())
        .sum();
    per_table + s.views.len() + s.sequences.len()
}

impl LocalCatalog {
    /// Loads the catalog persisted in `engine` (empty on a new store), with the default
    /// limits.
    pub fn open(engine: EngineRef) -> Result<Self, CatalogError> {
        Self::open_with_limits(engine, CatalogLimits::default())
    }

    /// Loads the catalog persisted in `engine`, bounded by `limits`.
    pub fn open_with_limits(
        engine: EngineRef,
        limits: CatalogLimits,
    ) -> Result<Self, CatalogError> {
        let version = match engine.get(Cf::Meta, VERSION_KEY).map_err(storage_err)? {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().expect("checked")),
            Some(_) => return Err(CatalogError::Storage("corrupt catalog version".into())),
            None => 0,
        };
        let tables = load_definitions(&*engine, TABLE_PREFIX, "table", |t: &TableDef| &t.name)?;
        let views = load_definitions(&*engine, VIEW_PREFIX, "view", |v: &ViewDef| &v.name)?;
        let sequences =
            load_definitions(&*engine, SEQUENCE_PREFIX, "sequence", |s: &SequenceDef| {
                &s.name
            })?;
        Ok(Self {
            engine,
            limits,
            current: Mutex::new(Arc::new(CatalogSnapshot {
                version,
                tables,
                views,
                sequences,
            })),
            ids: Mutex::new(HashMap::new()),
            commits: Mutex::new(()),
        })
    }

    /// Past a bound only where the change grows the catalog past it.
    fn check_limits(
        limits: &CatalogLimits,
        current: &CatalogSnapshot,
        next: &CatalogSnapshot,
    ) -> Result<(), CatalogError> {
        let relations = relation_count(next);
        if relations > limits.relations_max && relations > relation_count(current) {
            return Err(CatalogError::Invalid(format!(
                "too many relations: the catalog holds at most {} tables, views, sequences and \
                 indexes (relations_max); drop some or raise the limit",
                limits.relations_max
            )));
        }
        for table in next.tables.values() {
            let before = current
                .tables
                .values()
                .find(|t| t.id == table.id)
                .map_or(0, |t| t.columns.len());
            if table.columns.len() > limits.columns_per_table_max && table.columns.len() > before {
                return Err(CatalogError::Invalid(format!(
                    "tables can have at most {} columns (columns_per_table_max)",
                    limits.columns_per_table_max
                )));
            }
        }
        Ok(())
    }

    fn validate(next: &CatalogSnapshot) -> Result<(), CatalogError> {
        let mut seen_relations = std::collections::HashSet::new();
        for sequence in next.sequences.values() {
            if !seen_relations.insert(sequence.name.clone()) {
                return Err(CatalogError::Invalid(format!(
                    "relation \"{}\" already exists",
                    sequence.name
                )));
            }
            check_sequence(sequence)?;
        }
        for view in next.views.values() {
            if !seen_relations.insert(view.name.clone()) {
                return Err(CatalogError::Invalid(format!(
                    "relation \"{}\" already exists",
                    view.name
                )));
            }
        }
        for table in next.tables.values() {
            if !seen_relations.insert(table.name.clone()) {
                return Err(CatalogError::Invalid(format!(
                    "relation \"{}\" already exists",
                    table.name
                )));
            }
            let mut columns = std::collections::HashSet::new();
            for c in &table.columns {
                assert!(c.id < table.next_column_id, "column id beyond allocator");
                if let Some(seq) = &c.sequence {
                    if !seen_relations.insert(seq.name.clone()) {
                        return Err(CatalogError::Invalid(format!(
                            "relation \"{}\" already exists",
                            seq.name
                        )));
                    }
                    check_sequence(seq)?;
                }
                if !columns.insert(c.name.as_str()) {
                    return Err(CatalogError::Invalid(format!(
                        "column \"{}\" specified more than once",
                        c.name
                    )));
                }
            }
            for index in &table.indexes {
                if !seen_relations.insert(index.name.clone()) {
                    return Err(CatalogError::Invalid(format!(
                        "relation \"{}\" already exists",
                        index.name
                    )));
                }
                for col in &index.columns {
                    if table.column_by_id(*col).is_none() {
                        return Err(CatalogError::Invalid(format!(
                            "index \"{}\" names a column that does not exist",
                            index.name
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Commits `change` together with the records already in `batch`, in one synced
    /// write: both or neither.
    /// The DDL job runner records a job's step with the schema change it makes, so a step
    /// re-run after a crash finds itself done.
    pub fn commit_with(
        &self,
        change: SchemaChange,
        mut batch: WriteBatch,
    ) -> Result<Arc<CatalogSnapshot>, CatalogError> {
        let _commits = self.commits.lock();
        let current = self.current.lock().clone();
        if current.version != change.base_version {
            return Err(CatalogError::VersionMismatch {
                expected: change.base_version,
                actual: current.version,
            });
        }
        let mut next = (*current).clone();
        next.version += 1;
        for id in &change.drops {
            next.tables.retain(|_, t| t.id != *id);
            batch.delete(Cf::Meta, table_key(*id));
        }
        for table in change.upserts {
            next.tables.retain(|_, t| t.id != table.id);
            let bytes = serde_json::to_vec(&table).map_err(storage_err)?;
            batch.put(Cf::Meta, table_key(table.id), bytes);
            next.tables.insert(table.name.clone(), Arc::new(table));
        }
        for id in &change.view_drops {
            next.views.retain(|_, v| v.id != *id);
            batch.delete(Cf::Meta, view_key(*id));
        }
        for view in change.view_upserts {
            next.views.retain(|_, v| v.id != view.id);
            let bytes = serde_json::to_vec(&view).map_err(storage_err)?;
            batch.put(Cf::Meta, view_key(view.id), bytes);
            next.views.insert(view.name.clone(), Arc::new(view));
        }
        for id in &change.sequence_drops {
            next.sequences.retain(|_, s| s.id != *id);
            batch.delete(Cf::Meta, sequence_key(*id));
        }
        for sequence in change.sequence_upserts {
            next.sequences.retain(|_, s| s.id != sequence.id);
            let bytes = serde_json::to_vec(&sequence).map_err(storage_err)?;
            batch.put(Cf::Meta, sequence_key(sequence.id), bytes);
            next.sequences
                .insert(sequence.name.clone(), Arc::new(sequence));
        }
        // Validated in full before anything is written: an invalid change leaves no trace.
        Self::validate(&next)?;
        Self::check_limits(&self.limits, &current, &next)?;
        batch.put(
            Cf::Meta,
            VERSION_KEY.to_vec(),
            next.version.to_be_bytes().to_vec(),
        );
        self.engine.write(batch, true).map_err(storage_err)?;
        let next = Arc::new(next);
        *self.current.lock() = next.clone();
        Ok(next)
    }
}

impl Catalog for LocalCatalog {
    fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.current.lock().clone()
    }

    fn commit(&self, change: SchemaChange) -> Result<Arc<CatalogSnapshot>, CatalogError> {
        self.commit_with(change, WriteBatch::new())
    }

    fn allocate(&self, kind: IdKind, count: u64) -> Result<Range<i64>, CatalogError> {
        if count == 0 {
            // A request off the wire (AllocateCatalogIds) may say 0.
            return Err(CatalogError::Invalid(
                "asked for 0 ids; ask for at least one".into(),
            ));
        }
        let count =
            i64::try_from(count).map_err(|_| CatalogError::Invalid("too many ids".into()))?;
        let (key_kind, key, floor, batch) = match kind {
            IdKind::Table => (
                IdKindKey::Table,
                TABLE_ID_KEY.to_vec(),
                FIRST_TABLE_ID,
                ROW_ID_BATCH,
            ),
            IdKind::RowId(t) => (IdKindKey::RowId(t), row_id_key(t), 1, ROW_ID_BATCH),
            // A sequence counts as the row ids of table `-id` (table ids are positive):
            // a meta service that predates sequences, asked for those row ids, then
            // continues the same counter (see `AllocateCatalogIdsRequest`).
            IdKind::Sequence(s) => (IdKindKey::RowId(-s), row_id_key(-s), 1, SEQUENCE_BATCH),
        };
        let mut ids = self.ids.lock();
        let reserved = ids.entry(key_kind).or_default();
        if reserved.end - reserved.next < count {
            let persisted = match self.engine.get(Cf::Meta, &key).map_err(storage_err)? {
                Some(b) if b.len() == 8 => i64::from_be_bytes(b.try_into().expect("checked")),
                _ => floor,
            };
            let start = persisted.max(reserved.next).max(floor);
            // Near the top of i64 the counter ends rather than wraps to negative ids (and
            // from there back to the floor: ids handed out twice).
            let end = start.saturating_add(count.max(batch));
            if end - start < count {
                return Err(CatalogError::Exhausted(format!(
                    "{} ids left of this counter, {count} asked for",
                    end - start
                )));
            }
            let mut batch = WriteBatch::new();
            batch.put(Cf::Meta, key, end.to_be_bytes().to_vec());
            self.engine.write(batch, true).map_err(storage_err)?;
            *reserved = Reserved { next: start, end };
        }
        let range = reserved.next..reserved.next + count;
        reserved.next += count;
        Ok(range)
    }

    fn restart_sequence(&self, sequence: i64, next: i64) -> Result<(), CatalogError> {
        if next < 1 {
            return Err(CatalogError::Invalid(format!(
                "a sequence restarts at ordinal 1 or later, not {next}"
            )));
        }
        // Under the allocator's lock, so no allocation of this counter interleaves.
        let mut ids = self.ids.lock();
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, row_id_key(-sequence), next.to_be_bytes().to_vec());
        self.engine.write(batch, true).map_err(storage_err)?;
        ids.insert(IdKindKey::RowId(-sequence), Reserved { next, end: next });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, Handle, SqlType};
    use flotilla_storage::{FjallEngine, FjallOptions};

    fn engine(dir: &std::path::Path) -> EngineRef {
        Arc::new(FjallEngine::open(dir, &FjallOptions::default()).unwrap())
    }

    fn table(id: i64, name: &str, columns: &[&str]) -> TableDef {
        TableDef {
            id,
            storage_id: id,
            name: name.into(),
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, c)| ColumnDef {
                    id: i as u32,
                    name: c.to_string(),
                    ty: SqlType::Int64,
                    nullable: true,
                    not_null_pending: false,
                    default: None,
                    origin_default: None,
                    sequence: None,
                })
                .collect(),
            handle: Handle::RowId,
            indexes: vec![],
            next_column_id: columns.len() as u32,
            next_index_id: 1,
            checks: Vec::new(),
            foreign_keys: Vec::new(),
        }
    }

    #[test]
    fn the_catalog_grows_only_within_its_limits_and_can_always_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let limits = CatalogLimits {
            relations_max: 2,
            columns_per_table_max: 3,
        };
        let cat = LocalCatalog::open_with_limits(engine(dir.path()), limits).unwrap();
        let create = |cat: &LocalCatalog, t: TableDef| {
            cat.commit(SchemaChange {
                base_version: cat.snapshot().version,
                upserts: vec![t],
                ..SchemaChange::default()
            })
        };
        create(&cat, table(1, "a", &["x", "y", "z"])).unwrap();
        create(&cat, table(2, "b", &["x"])).unwrap();
        // A third relation, and a fourth column: refused, nothing changed.
        let e = create(&cat, table(3, "c", &["x"])).unwrap_err();
        assert_eq!(e.sqlstate(), "54000", "{e}");
        let e = create(&cat, table(2, "b", &["x", "y", "z", "w"])).unwrap_err();
        assert_eq!(e.sqlstate(), "54011", "{e}");
        let snap = cat.snapshot();
        assert_eq!((snap.version, snap.tables.len()), (2, 2));
        assert_eq!(snap.tables["b"].columns.len(), 1);
        // An index is a relation too.
        let mut indexed = table(2, "b", &["x"]);
        indexed.indexes.push(crate::schema::IndexDef {
            id: 1,
            name: "b_x".into(),
            columns: vec![0],
            unique: false,
            primary: false,
            clustered: false,
            state: crate::schema::IndexState::Public,
            predicate: None,
        });
        assert_eq!(create(&cat, indexed).unwrap_err().sqlstate(), "54000");
        // Reopened with lower limits, the catalog is past them, and may still shrink.
        drop(cat);
        let cat = LocalCatalog::open_with_limits(
            engine(dir.path()),
            CatalogLimits {
                relations_max: 1,
                columns_per_table_max: 1,
            },
        )
        .unwrap();
        create(&cat, table(1, "a", &["x", "y"])).unwrap();
        cat.commit(SchemaChange {
            base_version: cat.snapshot().version,
            drops: vec![2],
            ..SchemaChange::default()
        })
        .unwrap();
        assert_eq!(cat.snapshot().tables.len(), 1);
    }

    #[test]
    fn changes_persist_and_bump_the_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cat = LocalCatalog::open(engine(dir.path())).unwrap();
            let id = cat.allocate(IdKind::Table, 1).unwrap().start;
            let snap = cat
                .commit(SchemaChange {
                    base_version: 0,
                    upserts: vec![table(id, "t", &["a", "ts"])],
                    ..SchemaChange::default()
                })
                .unwrap();
            assert_eq!(snap.version, 1);
        }
        let cat = LocalCatalog::open(engine(dir.path())).unwrap();
        let snap = cat.snapshot();
        assert_eq!(snap.version, 1);
        assert_eq!(snap.table("t").unwrap().columns.len(), 2);
        // Ids never repeat across restarts.
        assert!(cat.allocate(IdKind::Table, 1).unwrap().start > snap.table("t").unwrap().id);
    }

    #[test]
    fn a_stale_or_invalid_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cat = LocalCatalog::open(engine(dir.path())).unwrap();
        cat.commit(SchemaChange {
            base_version: 0,
            upserts: vec![table(1, "t", &["a"])],
            drops: vec![],
            ..SchemaChange::default()
        })
        .unwrap();
        let stale = cat.commit(SchemaChange {
            base_version: 0,
            upserts: vec![table(2, "u", &["a"])],
            drops: vec![],
            ..SchemaChange::default()
        });
        assert!(matches!(stale, Err(CatalogError::VersionMismatch { .. })));
        // The incident of ORIGINS.md §1: adding `a` again and `b` in one change must fail whole.
        let mut bad = table(1, "t", &["a", "a", "b"]);
        bad.columns[2].id = 2;
        let invalid = cat.commit(SchemaChange {
            base_version: 1,
            upserts: vec![bad],
            drops: vec![],
            ..SchemaChange::default()
        });
        assert!(matches!(invalid, Err(CatalogError::Invalid(_))));
        let snap = cat.snapshot();
        assert_eq!(snap.version, 1);
        assert_eq!(snap.table("t").unwrap().columns.len(), 1);
        assert!(snap.table("u").is_none());
    }

    #[test]
    fn sequence_values_are_unique_across_restart_and_apart_from_row_ids() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let cat = LocalCatalog::open(engine(dir.path())).unwrap();
            assert_eq!(cat.allocate(IdKind::RowId(7), 3).unwrap(), 1..4);
            cat.allocate(IdKind::Sequence(7), 5).unwrap()
        };
        assert_eq!(first, 1..6, "a sequence of its own, counted from 1");
        let cat = LocalCatalog::open(engine(dir.path())).unwrap();
        let second = cat.allocate(IdKind::Sequence(7), 5).unwrap();
        assert!(second.start >= first.end, "{second:?} after {first:?}");
        // A restart skips at most what one reservation held.
        assert!(second.start <= first.start + SEQUENCE_BATCH, "{second:?}");
        assert_eq!(cat.allocate(IdKind::Sequence(8), 1).unwrap(), 1..2);
        // One counter with the row ids of table -8, which an older meta leader allocates.
        assert_eq!(cat.allocate(IdKind::RowId(-8), 1).unwrap(), 2..3);
        assert_eq!(cat.allocate(IdKind::Sequence(8), 1).unwrap(), 3..4);
    }

    #[test]
    fn a_restarted_sequence_continues_from_its_new_ordinal_also_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cat = LocalCatalog::open(engine(dir.path())).unwrap();
            assert_eq!(cat.allocate(IdKind::Sequence(3), 5).unwrap(), 1..6);
            // Forward, past what this catalog had reserved.
            cat.restart_sequence(3, 5_000).unwrap();
            assert_eq!(cat.allocate(IdKind::Sequence(3), 2).unwrap(), 5_000..5_002);
            // Back.
            cat.restart_sequence(3, 2).unwrap();
            assert_eq!(cat.allocate(IdKind::Sequence(3), 1).unwrap(), 2..3);
            assert!(matches!(
                cat.restart_sequence(3, 0),
                Err(CatalogError::Invalid(_))
            ));
            // Other counters are untouched.
            assert_eq!(cat.allocate(IdKind::Sequence(4), 1).unwrap(), 1..2);
            cat.restart_sequence(3, 40).unwrap();
        }
        let cat = LocalCatalog::open(engine(dir.path())).unwrap();
        assert_eq!(cat.allocate(IdKind::Sequence(3), 1).unwrap(), 40..41);
    }

    #[test]
    fn created_sequences_are_kept_across_a_reopen_and_share_the_relation_names() {
        let dir = tempfile::tempdir().unwrap();
        let sequence = |id: i64, name: &str| SequenceDef {
            id,
            name: name.into(),
            start: 1,
            increment: 1,
            min: 1,
            max: i64::MAX,
            identity: None,
        };
        {
            let cat = LocalCatalog::open(engine(dir.path())).unwrap();
            cat.commit(SchemaChange {
                base_version: 0,
                upserts: vec![table(1, "t", &["a"])],
                sequence_upserts: vec![sequence(2, "s"), sequence(3, "gone")],
                ..SchemaChange::default()
            })
            .unwrap();
            cat.commit(SchemaChange {
                base_version: 1,
                sequence_drops: vec![3],
                ..SchemaChange::default()
            })
            .unwrap();
            // A sequence may not take a table's name, nor break its own bounds.
            for bad in [
                sequence(4, "t"),
                SequenceDef {
                    start: 0,
                    ..sequence(4, "z")
                },
            ] {
                let refused = cat.commit(SchemaChange {
                    base_version: 2,
                    sequence_upserts: vec![bad],
                    ..SchemaChange::default()
                });
                assert!(
                    matches!(refused, Err(CatalogError::Invalid(_))),
                    "{refused:?}"
                );
            }
        }
        let snap = LocalCatalog::open(engine(dir.path())).unwrap().snapshot();
        assert_eq!(snap.version, 2);
        assert_eq!(snap.sequence("s"), Some(&sequence(2, "s")));
        assert!(snap.sequence("gone").is_none());
        assert!(snap.relation_exists("s") && snap.sequence_id_exists(2));
    }

    #[test]
    fn row_ids_are_unique_across_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let cat = LocalCatalog::open(engine(dir.path())).unwrap();
            cat.allocate(IdKind::RowId(7), 5).unwrap()
        };
        let cat = LocalCatalog::open(engine(dir.path())).unwrap();
        let second = cat.allocate(IdKind::RowId(7), 5).unwrap();
        assert!(second.start >= first.end);
        let third = cat.allocate(IdKind::RowId(7), 20_000).unwrap();
        assert_eq!(third.end - third.start, 20_000);
        assert!(third.start >= second.end);
    }
}
