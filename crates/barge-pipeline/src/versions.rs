//! A pipeline's versioned target schema (its `[schema]` section): SQL files named as Flyway names
//! them (`V1__create.sql`, `V2__add_status.sql`, …), applied to the target in version order with a
//! history table. The files, their versions, checksums and order, and the history table are
//! refinery's (`refinery-core`, without a driver); the SQL runs through the target engine's
//! [`barge_core::SqlScripts`], so every target engine barge writes takes them.
//!
//! The order of a copy with a versioned schema follows the safe order of a schema change: the
//! versions before `after_data` (tables, nullable columns with their defaults) before the bulk
//! copy; the rows; then the versions from `after_data` on (indexes, foreign keys, a backfill and
//! the NOT NULL it allows). A file that changed or went missing after the target applied it is
//! refused, by name and checksum, before anything is written.

use std::path::{Path, PathBuf};

use crate::SchemaVersions;
use barge_core::{Error, SqlScripts, Target};
use refinery_core::traits::sync::{Query, Transaction};
use refinery_core::{Migrate, Migration, Runner};
use serde::Serialize;

/// Which versions to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The versions before `after_data` (all of them without it): before the bulk copy.
    BeforeData,
    /// Every version: once the rows are in.
    All,
}

/// One version, as `plan` and a run report it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VersionStatus {
    pub version: i64,
    /// `V2__add_status`.
    pub name: String,
    /// The file's path.
    pub file: String,
    /// refinery's checksum of the file (name, version and SQL), as the history table keeps it.
    pub checksum: String,
    /// `applied` or `pending`.
    pub state: String,
    /// `before the rows` or `after the rows`.
    pub stage: String,
    /// When the target applied it (RFC 3339), for an applied version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_on: Option<String>,
}

/// A version file as read.
struct File {
    migration: Migration,
    path: PathBuf,
}

/// The version files of `dir`, in version order. A file whose name does not follow the
/// convention, or two files of one version, are refused.
fn files(dir: &Path) -> Result<Vec<File>, Error> {
    let shown = dir.display();
    let paths = refinery_core::find_migration_files(dir, refinery_core::MigrationType::Sql)
        .map_err(|e| Error::Config(format!("[schema] path {shown}: {e}")))?;
    let mut files: Vec<File> = Vec::new();
    for path in paths {
        let sql = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("[schema]: cannot read {}: {e}", path.display())))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let migration = Migration::unapplied(&stem, &sql).map_err(|e| {
            Error::Config(format!("[schema]: {}: {e} (name files V<version>__<name>.sql)", path.display()))
        })?;
        if let Some(other) = files.iter().find(|f| f.migration.version() == migration.version()) {
            return Err(Error::Config(format!(
                "[schema]: {} and {} have the same version {}",
                other.path.display(),
                path.display(),
                migration.version()
            )));
        }
        files.push(File { migration, path });
    }
    files.sort_by_key(|f| f.migration.version());
    Ok(files)
}

/// The target's SQL runner, as refinery drives a connection.
struct Scripts<'a>(&'a dyn SqlScripts);

impl Transaction for Scripts<'_> {
    type Error = Error;

    fn execute<'a, T: Iterator<Item = &'a str>>(&mut self, queries: T) -> Result<usize, Error> {
        let queries: Vec<&str> = queries.collect();
        self.0.run_scripts(&queries)?;
        Ok(queries.len())
    }
}

impl Query<Vec<Migration>> for Scripts<'_> {
    fn query(&mut self, query: &str) -> Result<Vec<Migration>, Error> {
        self.0.query_text(query)?.into_iter().map(|row| applied(&row)).collect()
    }
}

impl Migrate for Scripts<'_> {}

/// A history row: version, name, applied_on (RFC 3339), checksum.
fn applied(row: &[Option<String>]) -> Result<Migration, Error> {
    let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let bad = |what: &str| Error::Config(format!("the schema history holds a row with a bad {what}: {row:?}"));
    let version = text(0).trim().parse().map_err(|_| bad("version"))?;
    let checksum = text(3).trim().parse().map_err(|_| bad("checksum"))?;
    let applied_on = time::OffsetDateTime::parse(&text(2), &time::format_description::well_known::Rfc3339)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Ok(Migration::applied(version, text(1), applied_on, checksum))
}

fn scripts_of(target: &dyn Target) -> Result<&dyn SqlScripts, Error> {
    target.sql_scripts().ok_or_else(|| Error::unsupported(target.display_name(), "run versioned schema files"))
}

/// The versions the target applied (none when it has no history table yet).
fn history(spec: &SchemaVersions, target: &dyn Target) -> Result<Vec<Migration>, Error> {
    if !target.table_exists(&spec.history_table)? {
        return Ok(Vec::new());
    }
    let mut runner = Runner::new(&[]);
    runner.set_migration_table_name(&spec.history_table);
    runner.get_applied_migrations(&mut Scripts(scripts_of(target)?)).map_err(|e| match e.kind() {
        refinery_core::error::Kind::Connection(_, cause) => Error::Config(format!(
            "target {}: reading schema history table {}: {cause}",
            target.display_name(),
            spec.history_table
        )),
        _ => Error::Config(format!("target {}: reading the schema history: {e}", target.display_name())),
    })
}

fn stage_of(spec: &SchemaVersions, version: i64) -> &'static str {
    match spec.after_data {
        Some(after) if version >= after => "after the rows",
        _ => "before the rows",
    }
}

/// Every version of the files and of the target's history, checked against each other: a file
/// the target applied must be there, unchanged, and no pending file may be older than the last
/// version applied. Reads only.
pub fn status(spec: &SchemaVersions, target: &dyn Target) -> Result<Vec<VersionStatus>, Error> {
    Ok(checked(spec, target)?.1)
}

/// [`status`], with the files as read (what [`apply`] runs).
fn checked(spec: &SchemaVersions, target: &dyn Target) -> Result<(Vec<File>, Vec<VersionStatus>), Error> {
    let files = files(&spec.dir)?;
    let applied = history(spec, target)?;
    let dir = spec.dir.display();
    let shown = target.display_name();
    for done in &applied {
        match files.iter().find(|f| f.migration.version() == done.version()) {
            None => {
                return Err(Error::Config(format!(
                    "[schema]: target {shown} applied version {done} (checksum {}), but no file of {dir} holds \
                     version {}: a version the target applied must keep its file",
                    done.checksum(),
                    done.version()
                )));
            }
            Some(file) if file.migration != *done => {
                return Err(Error::Config(format!(
                    "[schema]: {} changed after target {shown} applied it: its checksum is now {}, the target \
                     applied {done} with checksum {} (add a new version instead of editing an applied one)",
                    file.path.display(),
                    file.migration.checksum(),
                    done.checksum()
                )));
            }
            Some(_) => {}
        }
    }
    let last = applied.iter().map(|m| m.version()).max();
    let mut out = Vec::with_capacity(files.len());
    for file in &files {
        let version = file.migration.version();
        let done = applied.iter().find(|m| m.version() == version);
        if done.is_none()
            && let Some(last) = last.filter(|last| *last > version)
        {
            return Err(Error::Config(format!(
                "[schema]: {} (version {version}) is older than version {last}, which target {shown} already \
                 applied: give it a version after {last}",
                file.path.display()
            )));
        }
        out.push(VersionStatus {
            version: i64::from(version),
            name: file.migration.to_string(),
            file: file.path.display().to_string(),
            checksum: file.migration.checksum().to_string(),
            state: if done.is_some() { "applied" } else { "pending" }.into(),
            stage: stage_of(spec, i64::from(version)).into(),
            applied_on: done
                .and_then(|m| m.applied_on())
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        });
    }
    Ok((files, out))
}

/// Applies the pending versions of `stage` to the target, in order, in one transaction where its
/// DDL allows (after [`status`]'s checks). Returns the versions applied.
pub fn apply(spec: &SchemaVersions, target: &dyn Target, stage: Stage) -> Result<Vec<VersionStatus>, Error> {
    let (files, known) = checked(spec, target)?;
    let pending: Vec<&VersionStatus> = known
        .iter()
        .filter(|v| v.state == "pending" && (stage == Stage::All || v.stage == "before the rows"))
        .collect();
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let migrations: Vec<Migration> = files.into_iter().map(|f| f.migration).collect();
    let until = match (stage, spec.after_data) {
        (Stage::BeforeData, Some(after)) => {
            let before = i32::try_from(after.saturating_sub(1)).unwrap_or(i32::MAX);
            refinery_core::Target::Version(before.max(0) as _)
        }
        _ => refinery_core::Target::Latest,
    };
    let mut runner =
        Runner::new(&migrations).set_target(until).set_grouped(true).set_abort_divergent(true).set_abort_missing(true);
    runner.set_migration_table_name(&spec.history_table);
    let names = pending.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ");
    runner.run(&mut Scripts(scripts_of(target)?)).map_err(|e| {
        let cause = match e.kind() {
            refinery_core::error::Kind::Connection(_, cause) => cause.to_string(),
            _ => e.to_string(),
        };
        Error::Engine {
            context: format!("target {}: applying schema versions {names}", target.display_name()),
            message: cause,
        }
    })?;
    for version in &pending {
        tracing::info!(version = %version.name, stage = %version.stage, "schema version applied");
    }
    Ok(pending.into_iter().map(|v| VersionStatus { state: "applied".into(), ..v.clone() }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_files_are_read_in_version_order_and_misnamed_or_repeated_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("V10__later.sql"), "SELECT 1").unwrap();
        std::fs::write(dir.path().join("V2__second.sql"), "SELECT 2").unwrap();
        std::fs::write(dir.path().join("README.md"), "not a version").unwrap();
        let read = files(dir.path()).unwrap();
        let names: Vec<String> = read.iter().map(|f| f.migration.to_string()).collect();
        assert_eq!(names, ["V2__second", "V10__later"]);
        // The checksum covers the SQL: the same name with other SQL differs.
        let again = Migration::unapplied("V2__second", "SELECT 3").unwrap();
        assert_ne!(again.checksum(), read[0].migration.checksum());

        std::fs::write(dir.path().join("V2__other.sql"), "SELECT 4").unwrap();
        let error = files(dir.path()).err().unwrap().to_string();
        assert!(error.contains("the same version 2"), "{error}");
    }

    #[test]
    fn history_rows_parse_and_a_bad_one_is_named() {
        let row = |v: &str, c: &str| {
            vec![Some(v.to_string()), Some("create".into()), Some("2026-12-07T18:00:00Z".into()), Some(c.into())]
        };
        let migration = applied(&row("3", "1234")).unwrap();
        assert_eq!((migration.version(), migration.checksum(), migration.name()), (3, 1234, "create"));
        assert!(applied(&row("x", "1")).unwrap_err().to_string().contains("bad version"));
        assert!(applied(&row("1", "")).unwrap_err().to_string().contains("bad checksum"));
    }
}
