//! PostgreSQL ↔ Arrow, declared once, as data: [`mapping`] (its table is `TYPES.md` beside this
//! crate's `Cargo.toml`, generated from it and checked by a test).
//!
//! Types are looked up by `format_type(oid, NULL)` (the SQL name without modifiers, [`PG_TYPES`]);
//! enums read as text, domains as their base type, one-dimensional arrays as Arrow lists of their
//! element (`T[]` for every row, created for `List(T)`).

use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit};
use barge_core::mapping::TypeMapping;

/// How values of a PostgreSQL type travel in binary COPY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric,
    Money,
    Text,
    Char,
    Json,
    Jsonb,
    Bytea,
    Uuid,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    /// PostGIS `geometry`: EWKB on the wire, barge's canonical geometry in Arrow.
    Geometry,
    /// No binary codec in barge: selected as `::text`, written with text COPY.
    AsText,
}

/// Base types by `format_type(oid, NULL)`.
pub const PG_TYPES: &[(&str, Codec)] = &[
    ("boolean", Codec::Bool),
    ("smallint", Codec::Int2),
    ("integer", Codec::Int4),
    ("bigint", Codec::Int8),
    ("oid", Codec::Oid),
    ("real", Codec::Float4),
    ("double precision", Codec::Float8),
    ("numeric", Codec::Numeric),
    ("money", Codec::Money),
    ("text", Codec::Text),
    ("character varying", Codec::Text),
    ("character", Codec::Text),
    ("bpchar", Codec::Text),
    ("name", Codec::Text),
    ("citext", Codec::Text),
    ("\"char\"", Codec::Char),
    ("json", Codec::Json),
    ("jsonb", Codec::Jsonb),
    ("bytea", Codec::Bytea),
    ("uuid", Codec::Uuid),
    ("date", Codec::Date),
    ("time without time zone", Codec::Time),
    ("timestamp without time zone", Codec::Timestamp),
    ("timestamp with time zone", Codec::TimestampTz),
    ("interval", Codec::Interval),
    ("time with time zone", Codec::AsText),
    ("inet", Codec::AsText),
    ("cidr", Codec::AsText),
    ("macaddr", Codec::AsText),
    ("macaddr8", Codec::AsText),
    ("bit", Codec::AsText),
    ("bit varying", Codec::AsText),
    ("tsvector", Codec::AsText),
    ("geometry", Codec::Geometry),
];

/// Every PostgreSQL type barge maps, with its codec, its Arrow type, whether barge creates it for
/// that Arrow type ([`sql_type_for_arrow`]) and the samples its round-trip tests use.
pub fn mapping() -> Vec<TypeMapping> {
    use DataType::*;
    let m = TypeMapping::new;
    let micros = TimeUnit::Microsecond;
    vec![
        m("boolean", "Bool", Boolean).created().samples(&["true", "false"]),
        m("smallint", "Int2", Int16).created().samples(&["-32768", "32767"]),
        m("integer", "Int4", Int32).created().samples(&["-2147483648", "2147483647"]),
        m("bigint", "Int8", Int64).created().samples(&["-9223372036854775808", "9223372036854775807"]),
        m("oid", "Oid", UInt32).samples(&["0", "4294967295"]),
        m("real", "Float4", Float32)
            .created()
            .samples(&["1.5", "'-Infinity'", "'NaN'", "'-0'", "3.4028235e38"])
            .notes("NaN, ±Infinity and -0.0 kept"),
        m("double precision", "Float8", Float64)
            .created()
            .samples(&["1e308", "'Infinity'", "'NaN'", "'-0'", "2.2250738585072014e-308"])
            .notes("NaN, ±Infinity and -0.0 kept"),
        m("numeric(12,2)", "Numeric", Decimal128(12, 2))
            .created()
            .samples(&["0", "-123.45", "9999999999.99", "0.01"])
            .notes("p ≤ 38; NaN/±Infinity cannot be Decimal: a clear per-row error"),
        m("numeric", "Numeric", Utf8)
            .samples(&["'NaN'", "'-1.5000'", "'123456789012345678901234567890.123456789'", "0", "'Infinity'"])
            .notes("unconstrained, or p > 38: PostgreSQL's exact text, including `NaN` and `Infinity`"),
        m("money", "Money", Decimal128(19, 2))
            .samples(&["12.34", "-5.00"])
            .notes("assumes 2 fractional digits (lc_monetary of C/en_US)"),
        m("text", "Text", Utf8).created().samples(&[
            "''",
            "'héllo'",
            "'日本 🚀'",
            "E'tab\\there\\nnew line \\\\ back'",
        ]),
        m("character varying(20)", "Text", Utf8).samples(&["'x'", "''"]),
        m("character(5)", "Text", Utf8).samples(&["'ab'", "'abcde'"]).notes("keeps its padding"),
        m("name", "Text", Utf8).samples(&["'pg_name'"]),
        m("citext", "Text", Utf8).notes(
            "extension type; enums read as text too, their labels kept in order (barge.enum): \
             MySQL creates the same ENUM, SQLite a CHECK (… IN …)",
        ),
        m("\"char\"", "Char", Utf8).samples(&["'a'"]).notes("one byte"),
        m("json", "Json", Utf8).samples(&["'{\"b\": 1,  \"a\": [1, 2]}'"]).notes("logical type json"),
        m("jsonb", "Jsonb", Utf8)
            .samples(&["'{\"b\": 1, \"a\": [1, 2]}'", "'[]'"])
            .notes("as PostgreSQL normalises it; logical type json"),
        m("bytea", "Bytea", Binary).created().samples(&["'\\x00ff10'", "''"]),
        m("uuid", "Uuid", Utf8)
            .samples(&["'123e4567-e89b-12d3-a456-426614174000'"])
            .notes("lower-case, hyphenated (the form MySQL and SQLite store); logical type uuid"),
        m("date", "Date", Date32)
            .created()
            .samples(&["'2024-02-29'", "'0001-01-01'", "'1999-12-31'", "'4713-01-01 BC'"])
            .notes("±infinity refused per row"),
        m("time without time zone", "Time", Time64(micros)).created().samples(&["'00:00:00'", "'23:59:59.999999'"]),
        m("timestamp without time zone", "Timestamp", Timestamp(micros, None))
            .created()
            .samples(&["'2024-02-29 13:45:10.123456'", "'1900-01-01 00:00:00'"])
            .notes("±infinity refused per row"),
        m("timestamp with time zone", "TimestampTz", Timestamp(micros, Some(UTC.into())))
            .created()
            .samples(&["'2024-06-01 12:00:00+02'", "'1969-12-31 23:59:59.5+00'"])
            .notes("normalised to UTC; ±infinity refused per row"),
        m("interval", "Interval", Interval(IntervalUnit::MonthDayNano))
            .created()
            .samples(&["'1 year 2 months 3 days 04:05:06.789'", "'-1 day'", "'0'"])
            .notes("months, days and µs kept apart"),
        m("time with time zone", "AsText", Utf8)
            .samples(&["'12:00:00+02'"])
            .notes("read as PostgreSQL's text form; written back with text COPY"),
        m("inet", "AsText", Utf8).samples(&["'192.168.0.1/24'", "'::1'"]).notes("as text"),
        m("cidr", "AsText", Utf8).samples(&["'10.0.0.0/8'"]).notes("as text"),
        m("macaddr", "AsText", Utf8).samples(&["'08:00:2b:01:02:03'"]).notes("as text"),
        m("macaddr8", "AsText", Utf8).samples(&["'08:00:2b:01:02:03:04:05'"]).notes("as text"),
        m("bit(3)", "AsText", Utf8).samples(&["B'101'"]).notes("as its binary digits"),
        m("bit varying(8)", "AsText", Utf8).samples(&["B'10101'"]).notes("as its binary digits"),
        m("tsvector", "AsText", Utf8).samples(&["'a fat cat'"]).notes("as text"),
        m("geometry", "Geometry", Binary)
            .samples(&[
                "'SRID=4326;POINT(-71.06 42.36)'",
                "'LINESTRING(0 0,1 1)'",
                "'SRID=3857;POLYGON((0 0,10 0,10 10,0 10,0 0),(1 1,2 1,2 2,1 1))'",
                "'GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,5 5))'",
            ])
            .notes(
                "PostGIS; also geometry(Point) and the other subtypes: logical type geometry, read as EWKB and \
                 carried as MySQL stores geometries (4-byte SRID, then WKB); created for geometries from other \
                 engines when the target has PostGIS (CREATE EXTENSION), else bytea, listed as not migrated",
            ),
        m("integer[]", "Int4 (array)", List(Field::new("item", Int32, true).into()))
            .created()
            .notes("one dimension; every row's type as T[] is List(T)"),
    ]
}

/// Timestamps with a zone are normalised to UTC and labelled with this offset.
pub const UTC: &str = "+00:00";
/// Largest numeric precision kept as an Arrow decimal; wider numerics travel as exact text.
pub const MAX_DECIMAL128_PRECISION: u8 = 38;

/// A column type resolved for reading and writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgColumnType {
    pub codec: Codec,
    /// `numeric(p,s)` precision and scale when declared.
    pub numeric: Option<(u8, i8)>,
    pub array: bool,
}

/// Removes type modifiers (`(255)`, `(3)`) wherever they appear, and a trailing `[]`.
fn base_name(sql_type: &str) -> (String, bool, Option<String>) {
    let trimmed = sql_type.trim();
    let (trimmed, array) = match trimmed.strip_suffix("[]") {
        Some(inner) => (inner, true),
        None => (trimmed, false),
    };
    let mut name = String::with_capacity(trimmed.len());
    let mut modifier = None;
    let mut rest = trimmed;
    while let Some(open) = rest.find('(') {
        name.push_str(&rest[..open]);
        let close = rest[open..].find(')').map_or(rest.len(), |c| open + c);
        modifier = Some(rest[open + 1..close.min(rest.len())].to_string());
        rest = rest.get(close + 1..).unwrap_or("");
    }
    name.push_str(rest);
    (name.split_whitespace().collect::<Vec<_>>().join(" "), array, modifier)
}

/// The short spellings PostgreSQL accepts in DDL (as a pipeline's column `type` may use them), and
/// the names `format_type` writes for them.
const PG_ALIASES: &[(&str, &str)] = &[
    ("varchar", "character varying"),
    ("char", "character"),
    ("int", "integer"),
    ("int2", "smallint"),
    ("int4", "integer"),
    ("int8", "bigint"),
    ("float4", "real"),
    ("float8", "double precision"),
    ("bool", "boolean"),
    ("decimal", "numeric"),
    ("time", "time without time zone"),
    ("timetz", "time with time zone"),
    ("timestamp", "timestamp without time zone"),
    ("timestamptz", "timestamp with time zone"),
    ("varbit", "bit varying"),
];

/// Resolves an SQL type name as `format_type` writes it (`numeric(12,2)`, `integer[]`,
/// `timestamp(3) without time zone`), or by one of its short spellings (`varchar(12)`, `int8`).
/// Every other type (ranges, geometric types, composite and other user-defined types) travels
/// as its text form, which the type's own input function reads back exactly ([`Codec::AsText`]):
/// the form `pg_dump` relies on. `None`: an empty name.
pub fn resolve(sql_type: &str) -> Option<PgColumnType> {
    let (name, array, modifier) = base_name(sql_type);
    if name.trim().is_empty() {
        return None;
    }
    let name = name.to_lowercase();
    let name = PG_ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name.as_str(), |(_, full)| full);
    let codec = PG_TYPES.iter().find(|(n, _)| *n == name).map_or(Codec::AsText, |(_, c)| *c);
    let numeric = match (codec, modifier) {
        (Codec::Numeric, Some(m)) => {
            let mut parts = m.split(',').map(|p| p.trim().parse::<i32>());
            let precision = parts.next()?.ok()?;
            let scale = parts.next().map_or(Some(0), |s| s.ok())?;
            Some((u8::try_from(precision).ok()?, i8::try_from(scale).ok()?))
        }
        _ => None,
    };
    Some(PgColumnType { codec, numeric, array })
}

impl PgColumnType {
    /// Arrow type of one element.
    pub fn element_arrow(&self) -> DataType {
        match self.codec {
            Codec::Bool => DataType::Boolean,
            Codec::Int2 => DataType::Int16,
            Codec::Int4 => DataType::Int32,
            Codec::Int8 => DataType::Int64,
            Codec::Oid => DataType::UInt32,
            Codec::Float4 => DataType::Float32,
            Codec::Float8 => DataType::Float64,
            Codec::Numeric => match self.numeric {
                Some((p, s)) if p <= MAX_DECIMAL128_PRECISION && s >= 0 && s <= p as i8 => DataType::Decimal128(p, s),
                _ => DataType::Utf8,
            },
            Codec::Money => DataType::Decimal128(19, 2),
            Codec::Text | Codec::Char | Codec::Json | Codec::Jsonb | Codec::Uuid | Codec::AsText => DataType::Utf8,
            Codec::Bytea | Codec::Geometry => DataType::Binary,
            Codec::Date => DataType::Date32,
            Codec::Time => DataType::Time64(TimeUnit::Microsecond),
            Codec::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Codec::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Codec::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        }
    }

    /// Arrow type of the column.
    pub fn arrow(&self) -> DataType {
        let element = self.element_arrow();
        if self.array { DataType::List(Field::new("item", element, true).into()) } else { element }
    }
}

/// The PostgreSQL type barge creates for an Arrow type (when the source is not PostgreSQL).
pub fn sql_type_for_arrow(data_type: &DataType) -> Option<String> {
    use DataType::*;
    Some(match data_type {
        Int8 | Int16 | UInt8 => "smallint".into(),
        Int32 | UInt16 => "integer".into(),
        Int64 | UInt32 => "bigint".into(),
        UInt64 => "numeric(20,0)".into(),
        Float16 | Float32 => "real".into(),
        Float64 => "double precision".into(),
        Boolean => "boolean".into(),
        Utf8 | LargeUtf8 | Utf8View => "text".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "bytea".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) if *s >= 0 => {
            format!("numeric({p},{s})")
        }
        Date32 | Date64 => "date".into(),
        Timestamp(_, None) => "timestamp without time zone".into(),
        Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        Time32(_) | Time64(_) => "time without time zone".into(),
        Interval(_) => "interval".into(),
        List(item) | LargeList(item) => {
            let inner = sql_type_for_arrow(item.data_type())?;
            if inner.ends_with("[]") {
                return None; // one dimension only
            }
            format!("{inner}[]")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_type_names_resolve_with_their_modifiers() {
        let numeric = resolve("numeric(12,2)").unwrap();
        assert_eq!(numeric.arrow(), DataType::Decimal128(12, 2));
        assert_eq!(resolve("numeric").unwrap().arrow(), DataType::Utf8);
        assert_eq!(resolve("numeric(60,4)").unwrap().arrow(), DataType::Utf8);
        assert_eq!(resolve("timestamp(3) without time zone").unwrap().codec, Codec::Timestamp);
        assert_eq!(resolve("character varying(255)").unwrap().codec, Codec::Text);
        let array = resolve("integer[]").unwrap();
        assert!(array.array);
        assert!(matches!(array.arrow(), DataType::List(_)));
        assert_eq!(resolve("point").unwrap().codec, Codec::AsText, "travels as text");
        assert!(resolve("public.pair[]").unwrap().array);
    }

    #[test]
    fn the_mapping_agrees_with_the_resolver_and_the_ddl_rules() {
        let rows = mapping();
        let problems = barge_core::mapping::check_mapping(&rows, |n| resolve(n).map(|t| t.arrow()), sql_type_for_arrow);
        assert!(problems.is_empty(), "{problems:#?}");
        for (name, _) in PG_TYPES.iter().filter(|(n, _)| *n != "bpchar") {
            assert!(rows.iter().any(|r| base_name(r.native).0 == *name), "`{name}` has no row in mapping()");
        }
    }

    #[test]
    fn types_md_is_generated_from_the_mapping() {
        barge_core::mapping::assert_doc_table(concat!(env!("CARGO_MANIFEST_DIR"), "/TYPES.md"), &mapping());
    }

    #[test]
    fn every_arrow_type_barge_creates_resolves_back_to_itself() {
        use DataType::*;
        for t in [
            Int16,
            Int32,
            Int64,
            Float32,
            Float64,
            Boolean,
            Utf8,
            Binary,
            Decimal128(12, 2),
            Date32,
            Timestamp(TimeUnit::Microsecond, None),
            Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Time64(TimeUnit::Microsecond),
            Interval(IntervalUnit::MonthDayNano),
            List(Field::new("item", Int64, true).into()),
        ] {
            let sql = sql_type_for_arrow(&t).unwrap();
            assert_eq!(resolve(&sql).unwrap().arrow(), t, "{sql}");
        }
    }
}
