//! SQLite ↔ Arrow, declared once, as data: [`mapping`] (its table is `TYPES.md` beside this
//! crate's `Cargo.toml`, generated from it and checked by a test).
//!
//! SQLite is dynamically typed: a column's declared type is a hint (its *affinity*), and values
//! carry their own storage class. barge reads a column by its declared type through
//! [`DECLARED_TYPES`], falling back to SQLite's own affinity rules for names it does not list, so
//! every declared type has a mapping. A value whose storage class does not fit its column (text in
//! an INTEGER column) is a per-row error naming table, column and key.

use arrow_schema::{DataType, Field, IntervalUnit, TimeUnit};
use barge_core::mapping::TypeMapping;
use barge_core::{Error, Result, TargetColumn};

/// How barge reads and writes a column, before type parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Integer,
    Real,
    Text,
    Blob,
    Boolean,
    Decimal,
    NumericText,
    Date,
    DateTime,
    DateTimeTz,
    Time,
    Interval,
}

/// Declared type names (upper case, parameters removed, spaces collapsed) and their family.
pub const DECLARED_TYPES: &[(&str, Family)] = &[
    ("INTEGER", Family::Integer),
    ("INT", Family::Integer),
    ("BIGINT", Family::Integer),
    ("SMALLINT", Family::Integer),
    ("TINYINT", Family::Integer),
    ("MEDIUMINT", Family::Integer),
    ("INT2", Family::Integer),
    ("INT8", Family::Integer),
    ("UNSIGNED BIG INT", Family::Integer),
    ("REAL", Family::Real),
    ("DOUBLE", Family::Real),
    ("DOUBLE PRECISION", Family::Real),
    ("FLOAT", Family::Real),
    ("TEXT", Family::Text),
    ("VARCHAR", Family::Text),
    ("CHAR", Family::Text),
    ("CHARACTER", Family::Text),
    ("VARYING CHARACTER", Family::Text),
    ("NCHAR", Family::Text),
    ("NATIVE CHARACTER", Family::Text),
    ("NVARCHAR", Family::Text),
    ("CLOB", Family::Text),
    ("JSON", Family::Text),
    ("UUID", Family::Text),
    ("BLOB", Family::Blob),
    ("GEOMETRY", Family::Blob),
    ("POINT", Family::Blob),
    ("LINESTRING", Family::Blob),
    ("POLYGON", Family::Blob),
    ("MULTIPOINT", Family::Blob),
    ("MULTILINESTRING", Family::Blob),
    ("MULTIPOLYGON", Family::Blob),
    ("GEOMETRYCOLLECTION", Family::Blob),
    ("", Family::Blob),
    ("BOOLEAN", Family::Boolean),
    ("BOOL", Family::Boolean),
    ("DECIMAL", Family::Decimal),
    ("NUMERIC", Family::Decimal),
    ("DECIMAL_TEXT", Family::Decimal),
    ("DATE", Family::Date),
    ("DATETIME", Family::DateTime),
    ("TIMESTAMP", Family::DateTime),
    ("TIMESTAMPTZ", Family::DateTimeTz),
    ("TIMESTAMP WITH TIME ZONE", Family::DateTimeTz),
    ("TIME", Family::Time),
    ("INTERVAL", Family::Interval),
];

/// A column declared `GEOMETRY` or as one of its subtypes (`POINT`, `MULTIPOLYGON`, …, as
/// SpatiaLite and GeoPackage declare them) holds geometries in barge's canonical layout (a 4-byte
/// little-endian SRID, then WKB: [`barge_core::LOGICAL_GEOMETRY`]).
pub fn is_geometry(declared: &str) -> bool {
    barge_core::types::geometry_type(declared).is_some()
}

/// The declared types barge reads and creates, one row per family (the names each family also
/// covers are in [`DECLARED_TYPES`]), with the samples the round-trip tests use.
pub fn mapping() -> Vec<TypeMapping> {
    use DataType::*;
    let m = TypeMapping::new;
    let micros = TimeUnit::Microsecond;
    let list = |t: DataType| List(Field::new("item", t, true).into());
    vec![
        m("INTEGER", "Integer", Int64)
            .created()
            .samples(&["0", "-9223372036854775808", "9223372036854775807"])
            .notes("also INT, BIGINT, SMALLINT, TINYINT, MEDIUMINT, INT2, INT8, UNSIGNED BIG INT, any name with INT"),
        m("REAL", "Real", Float64)
            .created()
            .samples(&["0.0", "-1.5e300", "9e999", "-9e999", "3.141592653589793", "'NaN'"])
            .notes("also DOUBLE, DOUBLE PRECISION, FLOAT; NaN stored as the text `NaN` (SQLite would store NULL)"),
        m("TEXT", "Text", Utf8)
            .created()
            .samples(&["''", "'héllo'", "'日本 🚀'", "' padded  '"])
            .notes("also VARCHAR(n), CHAR(n), CLOB, JSON, UUID, NCHAR, NVARCHAR"),
        m("BLOB", "Blob", Binary)
            .created()
            .samples(&["x''", "x'00ff'"])
            .notes("also no declared type; other storage classes are refused, not converted"),
        m("BOOLEAN", "Boolean", Boolean).created().samples(&["0", "1"]).notes("also BOOL; stored as 0/1"),
        m("DECIMAL(9,2)", "Decimal", Decimal128(9, 2))
            .created()
            .samples(&["'0'", "'-123.45'", "'99999.99'", "7"])
            .notes("also NUMERIC(p,s); p ≤ 15, stored by NUMERIC affinity (reals rounded to s places)"),
        m("DECIMAL_TEXT(30,4)", "Decimal", Decimal128(30, 4))
            .created()
            .samples(&["'0'", "'-123456789012345678901234.5678'", "7"])
            .notes("created by barge for p > 15: TEXT, exact beyond 15 digits"),
        m("NUMERIC", "NumericText", Utf8)
            .samples(&["1", "-2.5", "'not a number'"])
            .notes("also DECIMAL without precision and unknown names (NUMERIC affinity): the stored number as text"),
        m("DATE", "Date", Date32)
            .created()
            .samples(&["'0001-01-01'", "'2024-02-29'", "'9999-12-31'"])
            .notes("TEXT `YYYY-MM-DD`"),
        m("DATETIME", "DateTime", Timestamp(micros, None))
            .created()
            .samples(&["'1970-01-01 00:00:00'", "'2024-02-29 13:45:10.123456'", "'1900-06-01T00:00:00Z'"])
            .notes("also TIMESTAMP; TEXT `YYYY-MM-DD HH:MM:SS[.ffffff]`; integers read as Unix seconds"),
        m("TIMESTAMPTZ", "DateTimeTz", Timestamp(micros, Some(UTC.into())))
            .created()
            .samples(&["'1970-01-01 00:00:00'", "'2024-02-29 13:45:10.123456'", "'1900-06-01T00:00:00Z'"])
            .notes("also TIMESTAMP WITH TIME ZONE; TEXT `…+00:00`"),
        m("TIME", "Time", Time64(micros))
            .created()
            .samples(&["'00:00:00'", "'23:59:59.999999'", "'12:30'"])
            .notes("TEXT `HH:MM:SS[.ffffff]`"),
        m("INTERVAL", "Interval", Interval(IntervalUnit::MonthDayNano))
            .created()
            .samples(&[
                "'1 months 2 days 3.5 seconds'",
                "'-14 months 0 days -0.000001 seconds'",
                "'0 months 0 days 0 seconds'",
            ])
            .notes("TEXT `M months D days S seconds` (PostgreSQL reads it as is)"),
        m("INTEGER_ARRAY", "List", list(Int64))
            .created()
            .samples(&["'[1, null, -9223372036854775808]'", "'[]'"])
            .notes("T_ARRAY for any T above: TEXT holding a JSON array (barge_core::json)"),
        m("REAL_ARRAY", "List", list(Float64)).created().samples(&["'[1.5, \"NaN\", \"-Infinity\", 2]'"]),
        m("TEXT_ARRAY", "List", list(Utf8)).created().samples(&["'[\"a\", \"日本 \\\"q\\\"\", \"\"]'"]),
        m("DECIMAL_ARRAY(12,2)", "List", list(Decimal128(12, 2)))
            .created()
            .samples(&["'[\"12.30\", \"-0.01\", null]'"])
            .notes("decimals as strings"),
        m("BLOB_ARRAY", "List", list(Binary)).created().samples(&["'[\"00ff\", \"\"]'"]).notes("hex strings"),
        m("BOOLEAN_ARRAY", "List", list(Boolean)).created().samples(&["'[1, 0, null]'"]),
        m("TIMESTAMPTZ_ARRAY", "List", list(Timestamp(micros, Some(UTC.into()))))
            .created()
            .samples(&["'[\"2024-01-01 00:00:00.5+00:00\"]'"]),
        m("INTERVAL_ARRAY", "List", list(Interval(IntervalUnit::MonthDayNano)))
            .created()
            .samples(&["'[\"1 months 0 days 0 seconds\"]'"]),
    ]
}

/// Suffix of a declared list type: `BIGINT_ARRAY` holds JSON arrays of BIGINT values.
pub const ARRAY_SUFFIX: &str = "_ARRAY";

/// A declared type resolved to what barge reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Integer,
    Real,
    Text,
    Blob,
    Boolean,
    Decimal {
        precision: u8,
        scale: i8,
    },
    NumericText,
    Date,
    DateTime,
    DateTimeTz,
    Time,
    Interval,
    /// A JSON array of the element kind (never itself a list).
    List(Box<Kind>),
}

/// Timestamps with a zone are normalised to UTC and labelled with this offset.
pub const UTC: &str = "+00:00";
/// Beyond this precision SQLite's NUMERIC affinity would round a decimal through a double.
const MAX_NUMERIC_AFFINITY_DIGITS: u8 = 15;

impl Kind {
    pub fn arrow(&self) -> DataType {
        match self {
            Kind::Integer => DataType::Int64,
            Kind::Real => DataType::Float64,
            Kind::Text | Kind::NumericText => DataType::Utf8,
            Kind::Blob => DataType::Binary,
            Kind::Boolean => DataType::Boolean,
            Kind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Kind::Date => DataType::Date32,
            Kind::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::DateTimeTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            Kind::List(element) => DataType::List(Field::new("item", element.arrow(), true).into()),
        }
    }
}

/// Resolves a declared type. `table` and `column` only name the culprit in errors.
pub fn kind_of(declared: &str, table: &str, column: &str) -> Result<Kind> {
    let upper = declared.trim().to_ascii_uppercase();
    let (base, params) = match upper.split_once('(') {
        Some((base, rest)) => (base, Some(rest.trim_end_matches(')'))),
        None => (upper.as_str(), None),
    };
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(element) = base.strip_suffix(ARRAY_SUFFIX) {
        let element_declared = match params {
            Some(p) => format!("{element}({p})"),
            None => element.to_string(),
        };
        return match kind_of(&element_declared, table, column)? {
            Kind::List(_) => Err(Error::UnsupportedType {
                table: table.into(),
                column: column.into(),
                type_name: declared.into(),
                reason: Some("lists of lists are not supported".into()),
            }),
            element => Ok(Kind::List(Box::new(element))),
        };
    }
    let family = DECLARED_TYPES.iter().find(|(name, _)| *name == base).map_or_else(|| affinity(&base), |(_, f)| *f);
    let unsupported = |reason: &str| Error::UnsupportedType {
        table: table.into(),
        column: column.into(),
        type_name: declared.into(),
        reason: Some(reason.into()),
    };
    Ok(match family {
        Family::Integer => Kind::Integer,
        Family::Real => Kind::Real,
        Family::Text => Kind::Text,
        Family::Blob => Kind::Blob,
        Family::Boolean => Kind::Boolean,
        Family::NumericText => Kind::NumericText,
        Family::Date => Kind::Date,
        Family::DateTime => Kind::DateTime,
        Family::DateTimeTz => Kind::DateTimeTz,
        Family::Time => Kind::Time,
        Family::Interval => Kind::Interval,
        Family::Decimal => match params {
            None => Kind::NumericText,
            Some(params) => {
                let mut parts = params.split(',').map(|p| p.trim().parse::<u8>());
                let precision = parts.next().and_then(|p| p.ok()).ok_or_else(|| unsupported("bad precision"))?;
                let scale = match parts.next() {
                    None => 0,
                    Some(s) => s.map_err(|_| unsupported("bad scale"))?,
                };
                if precision == 0 || precision > 38 || scale > precision {
                    return Err(unsupported("precision must be 1..=38 and scale at most the precision"));
                }
                Kind::Decimal { precision, scale: scale as i8 }
            }
        },
    })
}

/// SQLite's affinity rules (section 3.1 of its datatype documentation) for names not in the table.
fn affinity(name: &str) -> Family {
    if name.contains("INT") {
        Family::Integer
    } else if name.contains("CHAR") || name.contains("CLOB") || name.contains("TEXT") {
        Family::Text
    } else if name.contains("BLOB") {
        Family::Blob
    } else if name.contains("REAL") || name.contains("FLOA") || name.contains("DOUB") {
        Family::Real
    } else {
        Family::NumericText
    }
}

/// The declared type barge creates for an Arrow type, and what it reads back as.
pub fn column_for_arrow(data_type: &DataType) -> Option<TargetColumn> {
    use DataType::*;
    let declared = match data_type {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 => "INTEGER".to_string(),
        // Above 2^63 SQLite's INTEGER overflows and NUMERIC affinity rounds: exact text instead.
        UInt64 => "DECIMAL_TEXT(20,0)".to_string(),
        Float16 | Float32 | Float64 => "REAL".into(),
        Boolean => "BOOLEAN".into(),
        Utf8 | LargeUtf8 | Utf8View => "TEXT".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "BLOB".into(),
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) if *s >= 0 => {
            if *p <= MAX_NUMERIC_AFFINITY_DIGITS {
                format!("DECIMAL({p},{s})")
            } else {
                format!("DECIMAL_TEXT({p},{s})")
            }
        }
        Date32 | Date64 => "DATE".into(),
        Timestamp(_, None) => "DATETIME".into(),
        Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        Time32(_) | Time64(_) => "TIME".into(),
        Interval(_) => "INTERVAL".into(),
        List(item) | LargeList(item) => {
            let element = column_for_arrow(item.data_type())?.native_type;
            if element.contains(ARRAY_SUFFIX) {
                return None; // one level only
            }
            // DECIMAL(12,2) → DECIMAL_ARRAY(12,2): the parameters stay at the end.
            match element.split_once('(') {
                Some((name, params)) => format!("{name}{ARRAY_SUFFIX}({params}"),
                None => format!("{element}{ARRAY_SUFFIX}"),
            }
        }
        _ => return None,
    };
    let read_back = kind_of(&declared, "", "").ok()?.arrow();
    Some(TargetColumn { native_type: declared, read_back, note: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_declared_type_resolves() {
        for (name, _) in DECLARED_TYPES {
            kind_of(name, "t", "c").unwrap();
        }
    }

    #[test]
    fn unlisted_names_follow_sqlite_affinity() {
        assert_eq!(kind_of("INTEGER UNSIGNED", "t", "c").unwrap(), Kind::Integer);
        assert_eq!(kind_of("BIGSERIAL", "t", "c").unwrap(), Kind::NumericText);
        assert_eq!(kind_of("varchar(255)", "t", "c").unwrap(), Kind::Text);
        assert_eq!(kind_of("MONEY", "t", "c").unwrap(), Kind::NumericText);
        assert_eq!(kind_of("decimal(12, 2)", "t", "c").unwrap(), Kind::Decimal { precision: 12, scale: 2 });
    }

    #[test]
    fn bad_decimal_parameters_name_the_column() {
        let err = kind_of("DECIMAL(50,2)", "orders", "amount").unwrap_err().to_string();
        assert!(err.contains("orders") && err.contains("amount") && err.contains("DECIMAL(50,2)"), "{err}");
    }

    #[test]
    fn the_mapping_agrees_with_the_resolver_and_the_ddl_rules() {
        let rows = mapping();
        let resolve = |n: &str| kind_of(n, "t", "c").ok().map(|k| k.arrow());
        let create = |t: &DataType| column_for_arrow(t).map(|c| c.native_type);
        let problems = barge_core::mapping::check_mapping(&rows, resolve, create);
        assert!(problems.is_empty(), "{problems:#?}");
        for (name, family) in DECLARED_TYPES {
            let family_row = rows.iter().any(|r| {
                let base = r.native.split('(').next().unwrap_or_default();
                DECLARED_TYPES.iter().any(|(n, f)| *n == base && f == family)
            });
            assert!(family_row, "`{name}` ({family:?}) has no row of its family in mapping()");
        }
    }

    #[test]
    fn types_md_is_generated_from_the_mapping() {
        barge_core::mapping::assert_doc_table(concat!(env!("CARGO_MANIFEST_DIR"), "/TYPES.md"), &mapping());
    }

    #[test]
    fn every_arrow_type_barge_creates_reads_back_as_itself() {
        use DataType::*;
        for t in [
            Int64,
            Float64,
            Boolean,
            Utf8,
            Binary,
            Decimal128(12, 2),
            Decimal128(30, 4),
            Date32,
            Timestamp(TimeUnit::Microsecond, None),
            Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            Time64(TimeUnit::Microsecond),
            Interval(IntervalUnit::MonthDayNano),
            List(Field::new("item", Int64, true).into()),
            List(Field::new("item", Decimal128(30, 4), true).into()),
            List(Field::new("item", Timestamp(TimeUnit::Microsecond, Some(UTC.into())), true).into()),
        ] {
            assert_eq!(column_for_arrow(&t).unwrap().read_back, t);
        }
    }
}
