//! PostgreSQL ↔ Arrow, declared once.
//!
//! Types are looked up by `format_type(oid, NULL)` (the SQL name without modifiers); enums read as
//! text, domains as their base type, one-dimensional arrays as Arrow lists of their element.
//!
//! | PostgreSQL | [`Codec`] | Arrow | notes |
//! |---|---|---|---|
//! | boolean | Bool | Boolean | |
//! | smallint, integer, bigint | Int2/Int4/Int8 | Int16/Int32/Int64 | |
//! | oid | Oid | UInt32 | |
//! | real, double precision | Float4/Float8 | Float32/Float64 | NaN, ±Infinity and -0.0 kept |
//! | numeric(p,s), p ≤ 38 | Numeric | Decimal128(p,s) | NaN/±Infinity cannot be Decimal: a clear per-row error |
//! | numeric (unconstrained, or p > 38) | Numeric | Utf8 | PostgreSQL's exact text, including `NaN` and `Infinity` |
//! | money | Money | Decimal128(19,2) | assumes 2 fractional digits (lc_monetary of C/en_US) |
//! | text, character varying(n), character(n), name, citext, enums | Text | Utf8 | char(n) keeps its padding |
//! | "char" | Char | Utf8 | one byte |
//! | json, jsonb | Json/Jsonb | Utf8 | jsonb as PostgreSQL normalises it |
//! | bytea | Bytea | Binary | |
//! | uuid | Uuid | Utf8 | lower-case, hyphenated (the form MySQL and SQLite store) |
//! | date | Date | Date32 | ±infinity refused per row |
//! | time | Time | Time64(µs) | |
//! | timestamp / timestamptz | Timestamp/TimestampTz | Timestamp(µs) / Timestamp(µs, +00:00) | ±infinity refused per row |
//! | interval | Interval | Interval(MonthDayNano) | months, days and µs kept apart |
//! | time with time zone, inet, cidr, macaddr, macaddr8, bit(n), bit varying(n), tsvector | AsText | Utf8 | read as PostgreSQL's text form; written back with text COPY |
//! | T[] for T above | (element) | List(T) | one dimension |

use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit};

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
];

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
/// `None`: not a type barge maps.
pub fn resolve(sql_type: &str) -> Option<PgColumnType> {
    let (name, array, modifier) = base_name(sql_type);
    let name = name.to_lowercase();
    let name = PG_ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name.as_str(), |(_, full)| full);
    let codec = PG_TYPES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)?;
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
            Codec::Bytea => DataType::Binary,
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
        assert_eq!(resolve("point"), None);
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
