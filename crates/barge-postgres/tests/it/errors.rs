//! Clear errors: unsupported types before any row moves, bad credentials and unreachable servers
//! without the password.

use barge_core::EngineFactory;
use barge_postgres::PgEngine;

use crate::TestDb;

#[test]
fn a_type_without_a_binary_codec_is_read_as_text() {
    let db = TestDb::new("astext");
    db.sql("CREATE TABLE shapes (id integer PRIMARY KEY, p point);");
    let table = db.source().table("shapes").unwrap();
    assert_eq!(table.schema.field(1).data_type(), &arrow_schema::DataType::Utf8);
}

#[test]
fn a_wrong_password_and_an_unreachable_port_never_print_the_password() {
    let db = TestDb::new("auth");
    db.sql("DO $$ BEGIN CREATE ROLE barge_pw_test LOGIN PASSWORD 'right'; EXCEPTION WHEN duplicate_object THEN NULL; END $$;");
    let host = crate::server().replace("postgres://postgres@", "");
    let wrong = format!("postgres://barge_pw_test:hunter2@{host}/{}", db.name);
    match PgEngine.open_source(&wrong) {
        Ok(_) => {
            // Trust authentication on loopback accepts any password: nothing to assert but secrecy.
        }
        Err(e) => assert!(!e.to_string().contains("hunter2"), "{e}"),
    }
    let err = PgEngine.open_source(&format!("postgres://postgres:hunter2@127.0.0.1:1/{}", db.name)).err().unwrap();
    let message = err.to_string();
    assert!(message.contains("cannot connect to postgres://postgres:***@127.0.0.1:1/"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn an_unknown_table_is_a_usage_error() {
    let db = TestDb::new("unknown");
    let err = db.source().table("nope").unwrap_err();
    assert!(err.is_usage() && err.to_string().contains("`nope`"), "{err}");
}
