//! MySQL/MariaDB → MySQL/MariaDB: the schema exactly as the server itself shows it (`SHOW CREATE
//! TABLE`, `SHOW CREATE VIEW`, …), restored in steps around the rows:
//!
//! ```text
//!  Tables          each CREATE TABLE as shown, less its secondary indexes and foreign keys (and
//!                  the AUTO_INCREMENT counter): columns, types, defaults, ON UPDATE, generated
//!                  columns, checks, comments, the primary key, table options
//!  TableObjects(t) t's secondary, unique, fulltext and spatial indexes, in one ALTER TABLE
//!  ForeignKeys     every foreign key as shown, with its name and actions
//!  Last            AUTO_INCREMENT counters as the source has them now, routines, views (in an
//!                  order where each one's views exist), triggers, events
//! ```
//!
//! DEFINER clauses are left out (the target's user defines the views, routines and triggers it
//! creates), and said as not migrated.

use std::any::Any;

use barge_core::{DumpedSchema, Error, NotMigrated, RestoreStep, Result, SchemaObject};

use crate::conn::{LocalConn, MyUrl, connect, quote};

fn text(v: &Option<Vec<u8>>) -> String {
    v.as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
}

/// One table's `SHOW CREATE TABLE`, taken apart.
#[derive(Clone, Debug, PartialEq)]
struct TableDdl {
    name: String,
    /// CREATE TABLE without secondary indexes, foreign keys and the AUTO_INCREMENT counter.
    create: String,
    /// Secondary index definitions (`KEY `a` (`a`)`, `UNIQUE KEY …`).
    indexes: Vec<String>,
    /// Foreign key definitions (`CONSTRAINT `fk` FOREIGN KEY …`).
    foreign_keys: Vec<String>,
}

/// Splits a `SHOW CREATE TABLE` statement into what is created with the table, its secondary
/// indexes and its foreign keys.
fn split_create(name: &str, create: &str) -> TableDdl {
    let lines: Vec<&str> = create.lines().collect();
    let (mut kept, mut indexes, mut foreign_keys) = (Vec::new(), Vec::new(), Vec::new());
    let body = if lines.len() >= 2 { &lines[1..lines.len() - 1] } else { &[][..] };
    for line in body {
        let item = line.trim().trim_end_matches(',').to_string();
        let secondary = ["KEY ", "UNIQUE KEY ", "FULLTEXT KEY ", "SPATIAL KEY ", "INDEX ", "UNIQUE INDEX "]
            .iter()
            .any(|p| item.starts_with(p));
        if secondary {
            indexes.push(item);
        } else if item.starts_with("CONSTRAINT ") && item.contains(" FOREIGN KEY ") {
            foreign_keys.push(item);
        } else {
            kept.push(item);
        }
    }
    let options: Vec<&str> =
        lines.last().map(|l| l.split(' ').filter(|w| !w.starts_with("AUTO_INCREMENT=")).collect()).unwrap_or_default();
    let create =
        format!("{}\n  {}\n{}", lines.first().copied().unwrap_or_default(), kept.join(",\n  "), options.join(" "));
    TableDdl { name: name.to_string(), create, indexes, foreign_keys }
}

/// `DEFINER=`user`@`host`` taken out of a statement.
fn without_definer(sql: &str) -> String {
    let Some(at) = sql.find("DEFINER=") else { return sql.to_string() };
    let rest = &sql[at + "DEFINER=".len()..];
    // `user`@`host`, each part backquoted (a backquote inside is doubled).
    let mut end = 0;
    let mut parts = 0;
    let bytes = rest.as_bytes();
    while parts < 2 && end < bytes.len() {
        if bytes[end] != b'`' {
            break;
        }
        end += 1;
        while end < bytes.len() {
            if bytes[end] == b'`' && bytes.get(end + 1) == Some(&b'`') {
                end += 2;
            } else if bytes[end] == b'`' {
                end += 1;
                break;
            } else {
                end += 1;
            }
        }
        parts += 1;
        if parts == 1 && bytes.get(end) == Some(&b'@') {
            end += 1;
        }
    }
    format!("{}{}", &sql[..at], rest[end..].trim_start())
}

/// The schema of a MySQL source, as its server shows it.
pub struct MyDump {
    tables: Vec<TableDdl>,
    /// (kind, name, statement) of routines, views, triggers and events, in restore order.
    others: Vec<(String, String, String)>,
    /// The source, read again in the last step for its AUTO_INCREMENT counters.
    source: MyUrl,
}

impl std::fmt::Debug for MyDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MySQL schema of {} ({} tables)", self.source.display, self.tables.len())
    }
}

/// The `Create …` column of a `SHOW CREATE` result (its position differs by object kind).
fn shown(conn: &mut LocalConn, sql: &str, column: usize) -> Result<String> {
    let rows = conn.rows(sql, "reading the source's schema")?;
    Ok(rows.first().map(|r| text(&r[column])).unwrap_or_default())
}

/// Reads the schema of `url`'s database.
pub fn dump(url: &MyUrl) -> Result<MyDump> {
    let mut conn = connect(url)?;
    let names = |conn: &mut LocalConn, sql: &str| -> Result<Vec<String>> {
        Ok(conn.rows(sql, "listing the source's schema")?.iter().map(|r| text(&r[0])).collect())
    };
    let mut tables = Vec::new();
    for name in names(
        &mut conn,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()
         AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    )? {
        let create = shown(&mut conn, &format!("SHOW CREATE TABLE {}", quote(&name)), 1)?;
        tables.push(split_create(&name, &create));
    }
    let mut others = Vec::new();
    for (kind, list, show, column) in [
        (
            "function",
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = 'FUNCTION' ORDER BY 1",
            "SHOW CREATE FUNCTION",
            2,
        ),
        (
            "procedure",
            "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE() AND ROUTINE_TYPE = 'PROCEDURE' ORDER BY 1",
            "SHOW CREATE PROCEDURE",
            2,
        ),
        (
            "view",
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1",
            "SHOW CREATE VIEW",
            1,
        ),
        (
            "trigger",
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY 1",
            "SHOW CREATE TRIGGER",
            2,
        ),
        (
            "event",
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE() ORDER BY 1",
            "SHOW CREATE EVENT",
            3,
        ),
    ] {
        for name in names(&mut conn, list)? {
            let sql = shown(&mut conn, &format!("{show} {}", quote(&name)), column)?;
            others.push((kind.to_string(), name, without_definer(&sql)));
        }
    }
    Ok(MyDump { tables, others, source: url.clone() })
}

impl DumpedSchema for MyDump {
    fn engine(&self) -> &'static str {
        crate::ENGINE
    }

    fn objects(&self) -> Vec<SchemaObject> {
        let object = |kind: &str, name: &str| SchemaObject { kind: kind.into(), name: name.into() };
        let mut objects: Vec<SchemaObject> = self.tables.iter().map(|t| object("table", &t.name)).collect();
        for table in &self.tables {
            objects.extend(table.indexes.iter().map(|i| object("index", &format!("{} {}", table.name, key_name(i)))));
        }
        for table in &self.tables {
            objects.extend(
                table.foreign_keys.iter().map(|f| object("fk constraint", &format!("{} {}", table.name, key_name(f)))),
            );
        }
        objects.extend(self.others.iter().map(|(kind, name, _)| object(kind, name)));
        objects
    }

    fn not_migrated(&self) -> Vec<NotMigrated> {
        self.others
            .iter()
            .filter(|(kind, _, _)| kind != "event")
            .take(1)
            .map(|_| {
                NotMigrated::new(
                    "definer",
                    "views, routines and triggers",
                    "DEFINER clauses are left out: the target's user defines what it creates",
                )
            })
            .collect()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The backquoted name in an index or constraint definition (`KEY `a` (…)` → a).
fn key_name(definition: &str) -> String {
    definition.split('`').nth(1).unwrap_or(definition).to_string()
}

impl MyDump {
    /// Restores `step` into `target` over `conn`.
    pub fn restore(&self, conn: &mut LocalConn, step: RestoreStep<'_>) -> Result<()> {
        match step {
            RestoreStep::Tables => {
                for table in &self.tables {
                    exec(conn, &table.create, &format!("creating table `{}`", table.name))?;
                }
            }
            RestoreStep::TableObjects(name) => {
                if let Some(table) = self.tables.iter().find(|t| t.name == name).filter(|t| !t.indexes.is_empty()) {
                    let adds: Vec<String> = table.indexes.iter().map(|i| format!("ADD {i}")).collect();
                    let sql = format!("ALTER TABLE {} {}", quote(name), adds.join(", "));
                    exec(conn, &sql, &format!("building the indexes of `{name}`"))?;
                }
            }
            RestoreStep::ForeignKeys => {
                for table in self.tables.iter().filter(|t| !t.foreign_keys.is_empty()) {
                    let adds: Vec<String> = table.foreign_keys.iter().map(|f| format!("ADD {f}")).collect();
                    let sql = format!("ALTER TABLE {} {}", quote(&table.name), adds.join(", "));
                    exec(conn, &sql, &format!("adding the foreign keys of `{}`", table.name))?;
                }
            }
            RestoreStep::Last => self.restore_last(conn)?,
        }
        Ok(())
    }

    fn restore_last(&self, conn: &mut LocalConn) -> Result<()> {
        // Counters as the source has them now, after every row was read.
        let counters = connect(&self.source)?.rows(
            "SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = DATABASE() AND AUTO_INCREMENT IS NOT NULL",
            "reading AUTO_INCREMENT",
        )?;
        for table in &self.tables {
            let counter = counters.iter().find(|r| text(&r[0]) == table.name).map(|r| text(&r[1]));
            if let Some(counter) = counter.filter(|c| c.parse::<u64>().is_ok()) {
                exec(
                    conn,
                    &format!("ALTER TABLE {} AUTO_INCREMENT = {counter}", quote(&table.name)),
                    "setting AUTO_INCREMENT",
                )?;
            }
        }
        // Views may select from views: each round creates those whose views exist.
        let mut pending: Vec<&(String, String, String)> = self.others.iter().collect();
        while !pending.is_empty() {
            let mut failed = Vec::new();
            let mut last_error = None;
            for object in &pending {
                let (kind, name, sql) = object;
                match conn.exec(sql, "restoring the source's views, routines and triggers") {
                    Ok(()) => {}
                    Err(e) if kind == "view" => {
                        failed.push(*object);
                        last_error = Some(e);
                    }
                    Err(e) => return Err(Error::engine(format!("creating {kind} `{name}`"), e)),
                }
            }
            if failed.len() == pending.len() {
                let (_, name, _) = failed[0];
                return Err(Error::engine(format!("creating view `{name}`"), last_error.expect("a failure")));
            }
            pending = failed;
        }
        Ok(())
    }
}

fn exec(conn: &mut LocalConn, sql: &str, context: &str) -> Result<()> {
    conn.exec(sql, "restoring the source's schema").map_err(|e| Error::engine(context.to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_table_parts_into_table_indexes_and_foreign_keys() {
        let shown = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `a` varchar(10) DEFAULT 'x',\n  \
                     PRIMARY KEY (`id`),\n  UNIQUE KEY `a` (`a`),\n  KEY `ia` (`a`(4)),\n  \
                     CONSTRAINT `fk` FOREIGN KEY (`a`) REFERENCES `r` (`a`) ON DELETE CASCADE,\n  \
                     CONSTRAINT `ck` CHECK (`id` > 0)\n) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4";
        let ddl = split_create("t", shown);
        assert_eq!(
            ddl.create,
            "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `a` varchar(10) DEFAULT 'x',\n  \
             PRIMARY KEY (`id`),\n  CONSTRAINT `ck` CHECK (`id` > 0)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        );
        assert_eq!(ddl.indexes, ["UNIQUE KEY `a` (`a`)", "KEY `ia` (`a`(4))"]);
        assert_eq!(ddl.foreign_keys, ["CONSTRAINT `fk` FOREIGN KEY (`a`) REFERENCES `r` (`a`) ON DELETE CASCADE"]);
        assert_eq!(key_name(&ddl.indexes[1]), "ia");
    }

    #[test]
    fn definers_are_left_out() {
        assert_eq!(
            without_definer(
                "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1"
            ),
            "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select 1"
        );
        assert_eq!(
            without_definer("CREATE DEFINER=`a``b`@`%` TRIGGER `t` BEFORE INSERT ON `x` FOR EACH ROW SET @a = 1"),
            "CREATE TRIGGER `t` BEFORE INSERT ON `x` FOR EACH ROW SET @a = 1"
        );
        assert_eq!(without_definer("CREATE VIEW v AS select 1"), "CREATE VIEW v AS select 1");
    }
}
