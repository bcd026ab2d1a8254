//! Cluster versions (ORIGINS.md §3): components may be upgraded in any order, so a new
//! behaviour that every node must understand is used only once every node can.
//!
//! A binary understands cluster versions up to [`BINARY_CLUSTER_VERSION`]. Every node
//! reports its own; the meta leader raises the cluster's version to the minimum reported
//! by every node that counts (stores until removed, meta members, SQL nodes holding a
//! schema lease), persists it, and never lowers it. A node older than the cluster's
//! version is refused. A node that reports nothing (a build from before versions were
//! reported) is at [`CLUSTER_VERSION_BASE`]: absent means "no information", and no
//! information never lets the version rise.

/// A cluster version: a number that only grows, one step per release that adds a
/// behaviour every node must understand.
pub type ClusterVersion = u32;

/// The version of every node that reports none, and of a cluster that never recorded one.
pub const CLUSTER_VERSION_BASE: ClusterVersion = 1;

/// The newest cluster version this build understands.
pub const BINARY_CLUSTER_VERSION: ClusterVersion = 17;

// A build understands every feature it gates. (Every build so far also runs in a
// cluster at any older version, down to the base: one that drops an old version's
// protocol must refuse to join a cluster still at it.)
const _: () = assert!(Feature::SetNotNull.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::RegionMerge.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::ForeignKeys.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::AddForeignKey.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::DeferrableForeignKeys.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::WidenColumnType.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::ReferentialActions.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::UuidType.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::JsonTypes.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::PartialIndexes.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::ArrayTypes.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::TimeType.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::SharedLocks.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::KeyShareLocks.since() <= BINARY_CLUSTER_VERSION);
const _: () = assert!(Feature::IntervalType.since() <= BINARY_CLUSTER_VERSION);

/// A behaviour gated by the cluster version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `ALTER COLUMN ... SET NOT NULL` as an online job: every SQL node must refuse NULL
    /// while `ColumnDef::not_null_pending` is set, and every meta member must decode the
    /// job kind.
    SetNotNull,
    /// Region merge: every store must apply the prepare-merge and commit-merge commands
    /// of a region's log (a build without them would skip them, and its replica would
    /// part from the others'), and freeze a region whatever it holds (version 3's builds,
    /// never released, refused to freeze one holding data, at apply).
    RegionMerge,
    /// FOREIGN KEY constraints: every SQL node must check them on every write, and a node
    /// of an older build would decode a table without its `foreign_keys` and write rows
    /// they forbid.
    ForeignKeys,
    /// `ALTER TABLE ... ADD FOREIGN KEY` and `VALIDATE CONSTRAINT` of a foreign key as
    /// online jobs: every meta member must decode the job kinds, and every SQL node must
    /// know a foreign key that is not validated yet.
    AddForeignKey,
    /// DEFERRABLE foreign keys, checked at commit (or at SET CONSTRAINTS ... IMMEDIATE):
    /// a node of an older build would decode one as NOT DEFERRABLE and refuse, as each
    /// statement ends, rows that other nodes let a transaction write before their
    /// references.
    DeferrableForeignKeys,
    /// `ALTER COLUMN ... TYPE` widening a `varchar` or `text` column: every meta member
    /// must decode the ALTER TABLE action (a node still on the table's version before
    /// refuses longer values a little longer, which is only stricter).
    WidenColumnType,
    /// A foreign key's ON DELETE / ON UPDATE action other than NO ACTION (CASCADE, SET
    /// NULL, SET DEFAULT, RESTRICT): a node of an older build would decode the constraint
    /// as NO ACTION and refuse deletes that others cascade.
    ReferentialActions,
    /// Columns of type `uuid`: a node of an older build cannot decode a table that has
    /// one (its catalog lacks the type), so it could not read or write the table.
    UuidType,
    /// Columns of type `json` or `jsonb`: a node of an older build cannot decode a table
    /// that has one.
    JsonTypes,
    /// Partial indexes (`CREATE INDEX ... WHERE`): a node of an older build would decode
    /// the index without its predicate, give every row an entry, and refuse (for a
    /// unique one) rows the predicate leaves out.
    PartialIndexes,
    /// Columns of an array type (`integer[]`): a node of an older build cannot decode a
    /// table that has one.
    ArrayTypes,
    /// Columns of type `time`: a node of an older build cannot decode a table that has
    /// one.
    TimeType,
    /// Shared row locks (`FOR SHARE`, a foreign key's referenced row): every store must
    /// take a shared lock when asked for one (an older build would take an exclusive
    /// one, which is safe) and must keep one at prewrite (an older build would read the
    /// check as an optimistic one and lose the lock). Before it, they are exclusive.
    SharedLocks,
    /// Key-level lock strengths (`FOR KEY SHARE`, `FOR NO KEY UPDATE`): a foreign key's
    /// referenced key and an update that keeps its row's keys lock only the key's
    /// existence, so neither waits for the other. Every store must know the lock flag
    /// (an older build would read such a lock as a full one, and let a key-only share
    /// wait where a newer one let it join: safe, but the behaviour would change with
    /// the region's leader). Before it, they lock fully, as `FOR SHARE` and `FOR UPDATE`.
    KeyShareLocks,
    /// Columns of type `interval`: a node of an older build cannot decode a table that
    /// has one.
    IntervalType,
}

impl Feature {
    /// The first cluster version with this behaviour.
    pub const fn since(self) -> ClusterVersion {
        match self {
            Feature::SetNotNull => 2,
            Feature::RegionMerge => 4,
            Feature::ForeignKeys => 5,
            Feature::AddForeignKey => 6,
            Feature::DeferrableForeignKeys => 7,
            Feature::WidenColumnType => 8,
            Feature::ReferentialActions => 9,
            Feature::UuidType => 10,
            Feature::JsonTypes => 11,
            Feature::PartialIndexes => 12,
            Feature::ArrayTypes => 13,
            Feature::TimeType => 14,
            Feature::SharedLocks => 15,
            Feature::KeyShareLocks => 16,
            Feature::IntervalType => 17,
        }
    }

    /// What the user asked for, for errors.
    pub const fn what(self) -> &'static str {
        match self {
            Feature::SetNotNull => "ALTER COLUMN ... SET NOT NULL",
            Feature::RegionMerge => "region merge",
            Feature::ForeignKeys => "a FOREIGN KEY constraint",
            Feature::AddForeignKey => "ALTER TABLE ... ADD FOREIGN KEY",
            Feature::DeferrableForeignKeys => "a DEFERRABLE foreign key",
            Feature::WidenColumnType => "ALTER TABLE ... ALTER COLUMN ... TYPE",
            Feature::ReferentialActions => "a foreign key's ON DELETE or ON UPDATE action",
            Feature::UuidType => "a column of type uuid",
            Feature::JsonTypes => "a column of type json or jsonb",
            Feature::PartialIndexes => "a partial index (CREATE INDEX ... WHERE)",
            Feature::ArrayTypes => "a column of an array type",
            Feature::TimeType => "a column of type time",
            Feature::SharedLocks => "a shared row lock",
            Feature::KeyShareLocks => "a key-level row lock (FOR KEY SHARE, FOR NO KEY UPDATE)",
            Feature::IntervalType => "a column of type interval",
        }
    }

    /// Whether a cluster at `version` may use it.
    pub const fn active_at(self, version: ClusterVersion) -> bool {
        version >= self.since()
    }
}

/// A node's version as a report gives it: absent is a build that predates reporting.
pub const fn reported(version: Option<ClusterVersion>) -> ClusterVersion {
    match version {
        Some(v) => v,
        None => CLUSTER_VERSION_BASE,
    }
}

/// What a node of `binary` version puts in a report: nothing at the base version (as
/// the builds before reporting did, so a test emulating one sends what it sent).
pub const fn to_report(binary: ClusterVersion) -> Option<ClusterVersion> {
    if binary > CLUSTER_VERSION_BASE {
        Some(binary)
    } else {
        None
    }
}

/// The error for a node of `binary` version that a cluster at `cluster` refuses, with
/// what to do about it.
pub fn too_old(node: &str, binary: ClusterVersion, cluster: ClusterVersion) -> String {
    format!(
        "{node} runs a build of cluster version {binary}, older than the cluster's version \
         {cluster} (a cluster never goes back to an older version): upgrade it to a build of \
         version {cluster} or newer"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_report_is_the_base_version_and_the_base_reports_nothing() {
        assert_eq!(reported(None), CLUSTER_VERSION_BASE);
        assert_eq!(
            reported(to_report(CLUSTER_VERSION_BASE)),
            CLUSTER_VERSION_BASE
        );
        assert_eq!(to_report(CLUSTER_VERSION_BASE), None);
        assert_eq!(
            reported(to_report(BINARY_CLUSTER_VERSION)),
            BINARY_CLUSTER_VERSION
        );
    }

    #[test]
    fn a_feature_is_active_from_its_version_on() {
        assert!(!Feature::SetNotNull.active_at(CLUSTER_VERSION_BASE));
        assert!(Feature::SetNotNull.active_at(2));
    }
}
