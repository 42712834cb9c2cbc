//! Range reads keep their connection for the next read, and a kept connection the server ended
//! while it sat idle is replaced without failing the read.

use barge_core::KeyRange;

use crate::{TestDb, read_all};

/// Sessions of this database whose last statement was a range read's COPY.
fn copy_sessions(db: &TestDb) -> usize {
    db.sql(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'COPY (SELECT%'",
    )[0]
    .as_deref()
    .unwrap()
    .parse()
    .unwrap()
}

#[test]
fn range_reads_reuse_a_connection_and_replace_one_the_server_ended() {
    let db = TestDb::new("reads");
    db.sql("CREATE TABLE t (id integer PRIMARY KEY, v text); INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;");
    let source = db.source();
    let info = source.table("t").unwrap();
    let rows = |source: &dyn barge_core::Source| -> usize {
        read_all(source, &info, &KeyRange::all()).iter().map(|b| b.num_rows()).sum()
    };
    for _ in 0..3 {
        assert_eq!(rows(source.as_ref()), 100);
    }
    assert_eq!(copy_sessions(&db), 1, "three reads in a row use one kept connection");

    db.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'COPY (SELECT%'",
    );
    // The kept connection is gone: the next read opens another, and succeeds.
    assert_eq!(rows(source.as_ref()), 100);
    assert_eq!(copy_sessions(&db), 1);
}
