//! MySQL/MariaDB ↔ Arrow, declared once, as data: [`mapping`] (its table is `TYPES.md` beside
//! this crate's `Cargo.toml`, generated from it and checked by a test).
//!
//! Columns are looked up by `information_schema.COLUMNS.DATA_TYPE` ([`MYSQL_TYPES`]);
//! `COLUMN_TYPE` decides unsignedness, `tinyint(1)` and decimal precision. Values travel as text
//! (the text protocol and LOAD DATA), in the forms of [`barge_core::text`].
//!

use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit};
use barge_core::mapping::TypeMapping;

/// The comment of a JSON column that holds arrays, before the element's column type.
pub const ARRAY_COMMENT: &str = "barge:array:";

/// A column: values of one [`Kind`], or JSON arrays of them (`array`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnKind {
    pub kind: Kind,
    pub array: bool,
}

impl ColumnKind {
    pub fn scalar(kind: Kind) -> Self {
        ColumnKind { kind, array: false }
    }

    pub fn arrow(&self) -> DataType {
        let element = self.kind.arrow();
        if self.array { DataType::List(Field::new("item", element, true).into()) } else { element }
    }

    /// Resolves a column from `DATA_TYPE` and `COLUMN_TYPE`; a `COLUMN_TYPE` carrying barge's
    /// array comment is an array of its element type (whose `tinyint(1)` is always boolean: barge
    /// wrote it from an Arrow boolean).
    pub fn resolve(data_type: &str, column_type: &str, tinyint1_as_bool: bool) -> Option<Self> {
        match array_element(column_type) {
            Some(element) => {
                resolve_with(&data_type_of(element), element, true).map(|kind| ColumnKind { kind, array: true })
            }
            None => resolve_with(data_type, column_type, tinyint1_as_bool).map(ColumnKind::scalar),
        }
    }
}

/// The `DATA_TYPE` of a `COLUMN_TYPE` (`decimal(12,2) unsigned` → `decimal`).
pub fn data_type_of(column_type: &str) -> String {
    column_type.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_lowercase()
}

/// The parameters of a `COLUMN_TYPE`, between its parentheses (`decimal(12,2)` → `12,2`).
fn type_params(column_type: &str) -> Option<&str> {
    column_type.split_once('(').and_then(|(_, p)| p.split_once(')')).map(|(p, _)| p)
}

/// The labels of an `enum(…)` or `set(…)` `COLUMN_TYPE`, in order, as MySQL quotes them there
/// (quotes doubled, backslashes escaped): `enum('it''s','ok')` → `it's`, `ok`.
pub fn labels_of(column_type: &str) -> Option<Vec<String>> {
    let lower = column_type.to_ascii_lowercase();
    if !lower.starts_with("enum(") && !lower.starts_with("set(") {
        return None;
    }
    let inner = &column_type[column_type.find('(')? + 1..];
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        match chars.next()? {
            '\'' => {}
            ')' => return Some(labels),
            ',' | ' ' => continue,
            _ => return None,
        }
        let mut label = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => label.push(chars.next()?),
                c => label.push(c),
            }
        }
        labels.push(label);
    }
}

/// The element column type of an array column created as `column_type`
/// (`json COMMENT 'barge:array:bigint'` → `bigint`).
pub fn array_element(column_type: &str) -> Option<&str> {
    let at = column_type.to_ascii_lowercase().find(&format!("comment '{ARRAY_COMMENT}"))?;
    let rest = &column_type[at + "comment '".len() + ARRAY_COMMENT.len()..];
    rest.strip_suffix('\'')
}

/// How values of a column are read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// Signed integer of this many bits.
    Int(u8),
    /// Unsigned integer of this many bits.
    UInt(u8),
    Decimal(u8, i8),
    DecimalText,
    Float,
    Double,
    Text,
    /// char(n): MySQL strips trailing spaces when it returns a CHAR; barge pads the value back to
    /// n characters, as PostgreSQL's char(n) reads (and as MySQL's PAD_CHAR_TO_FULL_LENGTH did).
    Char(u16),
    Json,
    Bytes,
    Date,
    DateTime,
    Timestamp,
    Time,
    /// bit(n), as n binary digits.
    Bit(u8),
}

/// Types by `DATA_TYPE`, before `COLUMN_TYPE` refines them.
pub const MYSQL_TYPES: &[(&str, Kind)] = &[
    ("tinyint", Kind::Int(8)),
    ("smallint", Kind::Int(16)),
    ("mediumint", Kind::Int(32)),
    ("int", Kind::Int(32)),
    ("integer", Kind::Int(32)),
    ("bigint", Kind::Int(64)),
    ("year", Kind::Int(16)),
    ("decimal", Kind::Decimal(0, 0)),
    ("numeric", Kind::Decimal(0, 0)),
    ("float", Kind::Float),
    ("double", Kind::Double),
    ("char", Kind::Char(0)),
    ("varchar", Kind::Text),
    ("tinytext", Kind::Text),
    ("text", Kind::Text),
    ("mediumtext", Kind::Text),
    ("longtext", Kind::Text),
    ("enum", Kind::Text),
    ("set", Kind::Text),
    ("json", Kind::Json),
    ("binary", Kind::Bytes),
    ("varbinary", Kind::Bytes),
    ("tinyblob", Kind::Bytes),
    ("blob", Kind::Bytes),
    ("mediumblob", Kind::Bytes),
    ("longblob", Kind::Bytes),
    ("date", Kind::Date),
    ("datetime", Kind::DateTime),
    ("timestamp", Kind::Timestamp),
    ("time", Kind::Time),
    ("bit", Kind::Bit(1)),
    ("geometry", Kind::Bytes),
    ("point", Kind::Bytes),
    ("linestring", Kind::Bytes),
    ("polygon", Kind::Bytes),
    ("multipoint", Kind::Bytes),
    ("multilinestring", Kind::Bytes),
    ("multipolygon", Kind::Bytes),
    ("geometrycollection", Kind::Bytes),
];

/// The spatial `DATA_TYPE`s: their values read and write as MySQL stores them (a 4-byte SRID,
/// then WKB), which is barge's canonical geometry ([`barge_core::LOGICAL_GEOMETRY`]).
pub fn is_spatial(data_type: &str) -> bool {
    let data_type = data_type.to_ascii_lowercase();
    MYSQL_TYPES[MYSQL_TYPES.iter().position(|(n, _)| *n == "geometry").unwrap_or(MYSQL_TYPES.len())..]
        .iter()
        .any(|(n, _)| *n == data_type)
}

/// Every MySQL/MariaDB column type barge maps, by `COLUMN_TYPE`, with its [`Kind`], its Arrow
/// type and whether barge creates it for that Arrow type ([`column_type_for_arrow`] of a column
/// that is not part of a key). Round trips: `fixtures/mysql_every_type.sql` holds a column of
/// every row (checked by a test), copied MySQL → PostgreSQL → MySQL and MySQL → SQLite → MySQL.
pub fn mapping() -> Vec<TypeMapping> {
    use DataType::*;
    let m = TypeMapping::new;
    let micros = TimeUnit::Microsecond;
    vec![
        m("tinyint(1)", "Bool", Boolean)
            .created()
            .notes("also boolean; other values than 0/1 are refused per row; `?tinyint1=integer` reads them as Int8"),
        m("tinyint", "Int", Int8).created(),
        m("smallint", "Int", Int16).created(),
        m("mediumint", "Int", Int32),
        m("int", "Int", Int32).created(),
        m("bigint", "Int", Int64).created(),
        m("tinyint unsigned", "UInt", UInt8).created(),
        m("smallint unsigned", "UInt", UInt16).created(),
        m("mediumint unsigned", "UInt", UInt32),
        m("int unsigned", "UInt", UInt32).created(),
        m("bigint unsigned", "UInt", UInt64).created().notes("above 2^63 kept (numeric(20,0) in PostgreSQL)"),
        m("year", "Int", Int16),
        m("decimal(12,2)", "Decimal", Decimal128(12, 2)).created().notes("p ≤ 38"),
        m("decimal(65,30)", "DecimalText", Utf8).notes("p > 38: exact text"),
        m("float", "Float", Float32).created(),
        m("double", "Double", Float64).created(),
        m("char(5)", "Char", Utf8).notes(
            "padded back to n characters (MySQL strips them when it returns a CHAR), as PostgreSQL's char(n) reads, \
             so the same value hashes alike in both; key bounds in range predicates stay unpadded",
        ),
        m("varchar(50)", "Text", Utf8).notes("utf8mb4; barge creates varchar(255) for a text key column"),
        m("longtext", "Text", Utf8).created().notes("also tinytext, text, mediumtext"),
        m("enum('sad','ok','happy')", "Text", Utf8).notes(
            "labels kept in order (barge.enum): PostgreSQL creates an enum type `<table>_<column>`, \
             SQLite a CHECK (… IN …), MySQL the same ENUM",
        ),
        m("set('a','b','c')", "Text", Utf8).notes(
            "members kept (barge.set), values as MySQL prints them (`a,c`): PostgreSQL text with a CHECK \
             that each member is one of them, MySQL the same SET, SQLite plain TEXT",
        ),
        m("json", "Json", Utf8).notes("MariaDB: longtext with a json_valid check; logical type json"),
        m("varbinary(20)", "Bytes", Binary)
            .notes("also binary(n); barge creates varbinary(255) for a binary key column"),
        m("longblob", "Bytes", Binary).created().notes("also tinyblob, blob, mediumblob"),
        m("date", "Date", Date32).created().notes(
            "zero dates (`0000-00-00`, `2024-00-15`) read as NULL and counted in the table's notices; \
             `?zero_dates=error` refuses them",
        ),
        m("datetime(6)", "DateTime", Timestamp(micros, None))
            .created()
            .notes("datetime(0-6); zero dates as for date; zoned values are stored in UTC"),
        m("timestamp(6)", "Timestamp", Timestamp(micros, Some(UTC.into())))
            .notes("timestamp(0-6); sessions run in UTC"),
        m("time(6)", "Time", Interval(IntervalUnit::MonthDayNano))
            .created()
            .notes("time(0-6); negative and > 24 h values kept (days 0, µs)"),
        m("bit(12)", "Bit", Utf8)
            .notes("n binary digits (`0101`), as PostgreSQL's bit(n) travels; written back with CONV"),
        m("point", "Bytes", Binary).notes(
            "also geometry, linestring, polygon, multipoint, multilinestring, multipolygon, geometrycollection: \
             logical type geometry, as MySQL stores it \
             (4-byte SRID, then WKB); PostgreSQL creates PostGIS geometry (bytea of the same bytes without PostGIS), \
             SQLite a GEOMETRY blob",
        ),
        m("json COMMENT 'barge:array:bigint'", "Int, array", List(Field::new("item", Int64, true).into()))
            .created()
            .notes(
                "MySQL has no arrays: Arrow lists are JSON arrays whose column comment names the element type \
                 (any type above), so they read back as lists; values written by barge_core::json",
            ),
    ]
}

/// Timestamps are UTC and labelled with this offset.
pub const UTC: &str = barge_core::text::UTC_OFFSET;

/// Resolves a column from `DATA_TYPE` and `COLUMN_TYPE` (e.g. `int`, `int(10) unsigned`),
/// reading `tinyint(1)` as boolean.
pub fn resolve(data_type: &str, column_type: &str) -> Option<Kind> {
    resolve_with(data_type, column_type, true)
}

/// [`resolve`], choosing whether `tinyint(1)` is a boolean or a small integer.
pub fn resolve_with(data_type: &str, column_type: &str, tinyint1_as_bool: bool) -> Option<Kind> {
    let data_type = data_type.to_ascii_lowercase();
    let column_type = column_type.to_ascii_lowercase();
    let kind = MYSQL_TYPES.iter().find(|(n, _)| *n == data_type).map(|(_, k)| *k)?;
    Some(match kind {
        Kind::Int(8)
            if tinyint1_as_bool && column_type.starts_with("tinyint(1)") && !column_type.contains("unsigned") =>
        {
            Kind::Bool
        }
        Kind::Int(bits) if column_type.contains("unsigned") => Kind::UInt(bits),
        Kind::Decimal(..) => {
            // `decimal(12,2) unsigned` → "12,2"; a bare `decimal` is decimal(10,0).
            let mut parts = type_params(&column_type).unwrap_or("10,0").split(',').map(|p| p.trim().parse::<u8>());
            let precision = parts.next()?.ok()?;
            let scale = parts.next().map_or(Some(0), |s| s.ok())?;
            if precision <= 38 { Kind::Decimal(precision, scale as i8) } else { Kind::DecimalText }
        }
        Kind::Bit(_) => Kind::Bit(type_params(&column_type).unwrap_or("1").trim().parse().ok()?),
        Kind::Char(_) => Kind::Char(type_params(&column_type).unwrap_or("1").trim().parse().ok()?),
        other => other,
    })
}

impl Kind {
    pub fn arrow(&self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int(8) => DataType::Int8,
            Kind::Int(16) => DataType::Int16,
            Kind::Int(32) => DataType::Int32,
            Kind::Int(_) => DataType::Int64,
            Kind::UInt(8) => DataType::UInt8,
            Kind::UInt(16) => DataType::UInt16,
            Kind::UInt(32) => DataType::UInt32,
            Kind::UInt(_) => DataType::UInt64,
            Kind::Decimal(p, s) => DataType::Decimal128(*p, *s),
            Kind::DecimalText | Kind::Text | Kind::Char(_) | Kind::Json | Kind::Bit(_) => DataType::Utf8,
            Kind::Float => DataType::Float32,
            Kind::Double => DataType::Float64,
            Kind::Bytes => DataType::Binary,
            Kind::Date => DataType::Date32,
            Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Kind::Time => DataType::Interval(IntervalUnit::MonthDayNano),
        }
    }
}

/// The MySQL column type barge creates for an Arrow type; `indexed` text and binary columns get
/// a bounded type (MySQL cannot index TEXT/BLOB without a prefix).
pub fn column_type_for_arrow(data_type: &DataType, indexed: bool) -> Option<String> {
    use DataType::*;
    Some(match data_type {
        Boolean => "tinyint(1)".into(),
        Int8 => "tinyint".into(),
        Int16 => "smallint".into(),
        Int32 => "int".into(),
        Int64 => "bigint".into(),
        UInt8 => "tinyint unsigned".into(),
        UInt16 => "smallint unsigned".into(),
        UInt32 => "int unsigned".into(),
        UInt64 => "bigint unsigned".into(),
        Float16 | Float32 => "float".into(),
        Float64 => "double".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) if *p <= 65 && *s >= 0 => {
            format!("decimal({p},{s})")
        }
        Utf8 | LargeUtf8 | Utf8View if indexed => "varchar(255)".into(),
        Utf8 | LargeUtf8 | Utf8View => "longtext".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) if indexed => "varbinary(255)".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "longblob".into(),
        Date32 | Date64 => "date".into(),
        // DATETIME, not TIMESTAMP: TIMESTAMP stops in 2038. Zoned values are stored in UTC.
        Timestamp(..) => "datetime(6)".into(),
        Time32(_) | Time64(_) | Interval(_) => "time(6)".into(),
        // MySQL cannot index JSON; lists of lists have no element type here.
        List(item) if !indexed && !matches!(item.data_type(), List(_) | LargeList(_)) => {
            format!("json COMMENT '{ARRAY_COMMENT}{}'", column_type_for_arrow(item.data_type(), false)?)
        }
        _ => return None,
    })
}

/// Arrow type that a column created as `column_type` reads back as.
pub fn read_back(column_type: &str) -> Option<DataType> {
    ColumnKind::resolve(&data_type_of(column_type), column_type, true).map(|c| c.arrow())
}

/// A view's SELECT as MySQL stores it (every name in backticks, qualified by its database) in
/// portable SQL: names unqualified and in double quotes. Backticks inside string literals are
/// left alone.
pub fn portable_select(select: &str, database: &str) -> String {
    let qualifier = format!("`{}`.", database.replace('`', "``"));
    let mut out = String::with_capacity(select.len());
    let mut rest = select;
    let mut quote: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        match (quote, c) {
            (None, '`') if rest.starts_with(&qualifier) => {
                rest = &rest[qualifier.len()..];
                continue;
            }
            (None, '`') => {
                // An identifier: to the closing backtick (`` inside it is one backtick).
                let mut name = String::new();
                let mut chars = rest[1..].char_indices();
                let mut end = rest.len();
                while let Some((i, ch)) = chars.next() {
                    if ch == '`' {
                        if rest[1 + i + 1..].starts_with('`') {
                            name.push('`');
                            chars.next();
                            continue;
                        }
                        end = 1 + i + 1;
                        break;
                    }
                    name.push(ch);
                }
                out.push('"');
                out.push_str(&name.replace('"', "\"\""));
                out.push('"');
                rest = &rest[end..];
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), ch) if ch == q => quote = None,
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn view_selects_lose_their_database_and_backticks() {
        let stored = "select `app`.`t`.`id` AS `id`,'a`b' AS `q`,`app`.`t`.`we``ird` AS `x` from `app`.`t` where `app`.`t`.`id` > 1";
        assert_eq!(
            super::portable_select(stored, "app"),
            "select \"t\".\"id\" AS \"id\",'a`b' AS \"q\",\"t\".\"we`ird\" AS \"x\" from \"t\" where \"t\".\"id\" > 1"
        );
    }

    use super::*;

    #[test]
    fn enum_and_set_labels_read_as_mysql_quotes_them() {
        let labels = |t: &str| labels_of(t).map(|l| l.join("|"));
        assert_eq!(labels("enum('it''s','a\\\\b','x,y','ok')").as_deref(), Some("it's|a\\b|x,y|ok"));
        assert_eq!(labels("set('a','b','c')").as_deref(), Some("a|b|c"));
        assert_eq!(labels("ENUM('')").as_deref(), Some(""));
        assert_eq!(labels("varchar(10)"), None);
        assert_eq!(labels("enum('unterminated"), None);
    }

    #[test]
    fn column_types_refine_data_types() {
        assert_eq!(resolve("tinyint", "tinyint(1)"), Some(Kind::Bool));
        assert_eq!(resolve("tinyint", "tinyint(3) unsigned"), Some(Kind::UInt(8)));
        assert_eq!(resolve("bigint", "bigint(20) unsigned"), Some(Kind::UInt(64)));
        assert_eq!(resolve("decimal", "decimal(12,2)"), Some(Kind::Decimal(12, 2)));
        assert_eq!(resolve("decimal", "decimal(65,30)"), Some(Kind::DecimalText));
        assert_eq!(resolve("decimal", "decimal(20,0) unsigned"), Some(Kind::Decimal(20, 0)));
        assert_eq!(resolve("geometry", "geometry"), Some(Kind::Bytes));
        assert!(is_spatial("POINT") && is_spatial("geometrycollection") && !is_spatial("blob"));
        assert_eq!(resolve("vector", "vector(3)"), None);
        assert_eq!(resolve("bit", "bit(12)"), Some(Kind::Bit(12)));
        assert_eq!(resolve("char", "char(5)"), Some(Kind::Char(5)));
        assert_eq!(resolve("char", "char"), Some(Kind::Char(1)));
    }

    #[test]
    fn array_columns_name_their_element_type_in_their_comment() {
        let list = DataType::List(Field::new("item", DataType::Decimal128(12, 2), true).into());
        let created = column_type_for_arrow(&list, false).unwrap();
        assert_eq!(created, "json COMMENT 'barge:array:decimal(12,2)'");
        assert_eq!(array_element(&created), Some("decimal(12,2)"));
        assert_eq!(column_type_for_arrow(&list, true), None, "JSON cannot be a key");
        let nested = DataType::List(Field::new("item", list, true).into());
        assert_eq!(column_type_for_arrow(&nested, false), None);
        assert_eq!(array_element("json"), None);
    }

    #[test]
    fn the_mapping_agrees_with_the_resolver_and_the_ddl_rules() {
        let rows = mapping();
        let problems = barge_core::mapping::check_mapping(&rows, read_back, |t| column_type_for_arrow(t, false));
        assert!(problems.is_empty(), "{problems:#?}");
        for (name, _) in MYSQL_TYPES.iter().filter(|(n, _)| !matches!(*n, "integer" | "numeric")) {
            let covered = rows.iter().any(|r| data_type_of(r.native) == *name || r.notes.contains(name));
            assert!(covered, "`{name}` has no row in mapping()");
        }
    }

    #[test]
    fn the_round_trip_fixture_has_a_column_of_every_row() {
        let fixture = include_str!("../../../fixtures/mysql_every_type.sql").to_ascii_lowercase();
        // (Array columns come from PostgreSQL arrays: the PostgreSQL type tests carry them here.)
        for row in mapping().iter().filter(|r| !r.native.contains("COMMENT")) {
            let base = row.native.split('(').next().unwrap();
            assert!(fixture.contains(&format!(" {base}")), "fixtures/mysql_every_type.sql has no `{base}` column");
        }
    }

    #[test]
    fn types_md_is_generated_from_the_mapping() {
        barge_core::mapping::assert_doc_table(concat!(env!("CARGO_MANIFEST_DIR"), "/TYPES.md"), &mapping());
    }

    #[test]
    fn every_type_barge_creates_reads_back_as_itself() {
        use DataType::*;
        for t in [
            Boolean,
            Int8,
            Int16,
            Int32,
            Int64,
            UInt8,
            UInt16,
            UInt32,
            UInt64,
            Float32,
            Float64,
            Decimal128(12, 2),
            Utf8,
            Binary,
            Date32,
            Timestamp(TimeUnit::Microsecond, None),
            Interval(IntervalUnit::MonthDayNano),
            List(Field::new("item", Int32, true).into()),
            List(Field::new("item", Decimal128(12, 2), true).into()),
            List(Field::new("item", Timestamp(TimeUnit::Microsecond, None), true).into()),
            List(Field::new("item", Binary, true).into()),
        ] {
            let created = column_type_for_arrow(&t, false).unwrap();
            assert_eq!(read_back(&created), Some(t.clone()), "{created}");
        }
    }
}
