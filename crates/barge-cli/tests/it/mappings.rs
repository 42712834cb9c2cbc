//! Every row of an engine's type mapping crosses into every engine, generated from the mapping
//! table (`types::mapping()` and its samples), so a new row cannot go untested: one table per row
//! (the row's type, its samples and NULL), copied whole into each engine and verified there.
//! MySQL's rows are the columns of `fixtures/mysql_every_type.sql` (a unit test checks it has one
//! per row), which `mysql::every_mysql_type_round_trips_through_postgres_and_sqlite` copies.

use barge_core::mapping::TypeMapping;

use crate::support::{Dir, MyDb, PgDb, barge, table};

/// The rows with samples, as (table name, row).
fn tables(rows: Vec<TypeMapping>) -> Vec<(String, TypeMapping)> {
    rows.into_iter().filter(|r| !r.samples.is_empty()).enumerate().map(|(i, r)| (format!("m{i:02}"), r)).collect()
}

/// Copies `from` (holding `tables`) into a fresh database of every engine, and checks that each
/// table arrived whole and verified, naming every row that did not.
fn crosses_everywhere(from: &str, tables: &[(String, TypeMapping)]) {
    let (pg, my, dir) = (PgDb::new("mapping"), MyDb::new("mapping"), Dir::new());
    let mut failures = Vec::new();
    for to in [pg.url(), my.url(), dir.url("mapping.db")] {
        // A value the target cannot hold (an infinity or a BC date in MySQL) is rejected with its
        // key and reason: still accounted for, never lost.
        let rejects = dir.path("rejects");
        let run = barge(&[
            "copy",
            "--from",
            from,
            "--to",
            &to,
            "--json",
            "--unrepresentable",
            "reject",
            "--error-budget",
            "100%",
            "--rejects",
            rejects.to_str().unwrap(),
        ]);
        let json = run.json();
        assert!(json["tables"].is_array(), "{from} → {to}: {json}");
        for (name, row) in tables {
            let report = table(&json, name);
            let rows = row.samples.len() as u64 + 1;
            let (written, rejected) = (report["rows_written"].as_u64(), report["rows_rejected"].as_u64());
            // Only MySQL refuses values (and names itself as the reason); NULL and at least one
            // sample (of a row with more than one) get through.
            let reasons: Vec<String> = match report["rejects_file"].as_str() {
                Some(file) => std::fs::read_to_string(file)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"].as_str().unwrap().to_string()
                    })
                    .collect(),
                None => Vec::new(),
            };
            let refused_fairly = reasons.iter().all(|r| to.starts_with("mysql:") && r.starts_with("MySQL"));
            if report["verified"] != true
                || written.zip(rejected).map(|(w, r)| w + r) != Some(rows)
                || written < Some(2.min(rows - 1))
                || !refused_fairly
            {
                failures.push(format!(
                    "{} → {}: {} (verified {}, {} written + {} rejected of {rows} rows, {reasons:?}): {}",
                    row.native,
                    to.split(':').next().unwrap(),
                    name,
                    report["verified"],
                    report["rows_written"],
                    report["rows_rejected"],
                    report["error"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "mapping rows that do not cross:\n{}", failures.join("\n"));
}

#[test]
fn every_postgres_mapping_row_crosses_into_every_engine_verified() {
    let source = PgDb::new("mapping_src");
    let tables = tables(barge_postgres::types::mapping());
    let mut ddl = String::from("CREATE EXTENSION IF NOT EXISTS postgis;\n");
    for (name, row) in &tables {
        let values: Vec<String> = row
            .samples
            .iter()
            .chain(["NULL"].iter())
            .enumerate()
            .map(|(i, v)| format!("({i}, ({v})::{})", row.native))
            .collect();
        ddl.push_str(&format!(
            "CREATE TABLE {name} (id integer PRIMARY KEY, c {}); INSERT INTO {name} VALUES {};\n",
            row.native,
            values.join(", ")
        ));
    }
    source.sql(&ddl);
    crosses_everywhere(&source.url(), &tables);
}

#[test]
fn every_sqlite_mapping_row_crosses_into_every_engine_verified() {
    let dir = Dir::new();
    let tables = tables(barge_sqlite::types::mapping());
    let mut ddl = String::new();
    for (name, row) in &tables {
        let values: Vec<String> =
            row.samples.iter().chain(["NULL"].iter()).enumerate().map(|(i, v)| format!("({i}, {v})")).collect();
        ddl.push_str(&format!(
            "CREATE TABLE {name} (id INTEGER PRIMARY KEY, c {}); INSERT INTO {name} VALUES {};\n",
            row.native,
            values.join(", ")
        ));
    }
    dir.sql("source.db", &ddl);
    crosses_everywhere(&dir.url("source.db"), &tables);
}
