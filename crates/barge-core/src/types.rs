//! The one place that decides whether moving a value from one Arrow type into another is exact,
//! lossy (and why) or impossible. Plan, run and tests all consult [`fidelity`]; engines only declare
//! their native ↔ Arrow tables.

use arrow_schema::{DataType, TimeUnit};

/// What happens to values when a column of one Arrow type lands in a column of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fidelity {
    /// Every value arrives unchanged, and hashes the same on both sides.
    Exact,
    /// Some values may change or be rejected; the reason says which.
    Lossy(String),
    /// No mapping exists.
    Impossible,
}

impl Fidelity {
    pub fn is_exact(&self) -> bool {
        matches!(self, Fidelity::Exact)
    }
}

/// Bits of magnitude and whether the type is signed, for integer types.
fn int_shape(t: &DataType) -> Option<(u32, bool)> {
    use DataType::*;
    Some(match t {
        Int8 => (8, true),
        Int16 => (16, true),
        Int32 => (32, true),
        Int64 => (64, true),
        UInt8 => (8, false),
        UInt16 => (16, false),
        UInt32 => (32, false),
        UInt64 => (64, false),
        _ => return None,
    })
}

fn decimal_shape(t: &DataType) -> Option<(u8, i8)> {
    match t {
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => Some((*p, *s)),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    }
}

fn unit_rank(u: &TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_binary(t: &DataType) -> bool {
    matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_))
}

/// Decides how values of `from` fare in a column that reads back as `to`.
pub fn fidelity(from: &DataType, to: &DataType) -> Fidelity {
    use DataType::*;
    if from == to {
        return Fidelity::Exact;
    }
    let lossy = |why: &str| Fidelity::Lossy(why.to_string());
    if let (Some((fb, fs)), Some((tb, ts))) = (int_shape(from), int_shape(to)) {
        let fits = match (fs, ts) {
            (true, true) | (false, false) => tb >= fb,
            (false, true) => tb > fb,
            (true, false) => false,
        };
        return if fits { Fidelity::Exact } else { lossy("integers outside the target range are rejected") };
    }
    if let Some((bits, _)) = int_shape(from) {
        if let Some((p, s)) = decimal_shape(to) {
            let digits = if bits <= 8 {
                3
            } else if bits <= 16 {
                5
            } else if bits <= 32 {
                10
            } else {
                20
            };
            return if i32::from(p) - i32::from(s) >= digits {
                Fidelity::Exact
            } else {
                lossy("integers wider than the decimal's precision are rejected")
            };
        }
        if matches!(to, Float64) {
            return if bits <= 32 { Fidelity::Exact } else { lossy("integers beyond 2^53 lose precision as doubles") };
        }
        if is_text(to) {
            return lossy("integers stored as text");
        }
    }
    if let (Some((fp, fs)), Some((tp, ts))) = (decimal_shape(from), decimal_shape(to)) {
        let int_digits_fit = i32::from(tp) - i32::from(ts) >= i32::from(fp) - i32::from(fs);
        return if int_digits_fit && ts >= fs {
            Fidelity::Exact
        } else {
            lossy("decimals beyond the target precision or scale are rejected")
        };
    }
    match (from, to) {
        (Float16 | Float32, Float32 | Float64) | (Float64, Float64) => Fidelity::Exact,
        (Float64, Float32) => lossy("doubles rounded to single precision"),
        (Date32 | Date64, Date32 | Date64) => Fidelity::Exact,
        (Timestamp(fu, ftz), Timestamp(tu, ttz)) => {
            if unit_rank(fu) > unit_rank(tu) {
                lossy("sub-precision fractions of a second are rejected")
            } else if ftz.is_none() && ttz.is_some() {
                lossy("naive timestamps interpreted as UTC")
            } else if ftz.is_some() && ttz.is_none() {
                lossy("time zone dropped (values stored as UTC)")
            } else {
                Fidelity::Exact
            }
        }
        (Time32(fu) | Time64(fu), Time32(tu) | Time64(tu)) => {
            if unit_rank(fu) > unit_rank(tu) {
                lossy("sub-precision fractions are rejected")
            } else {
                Fidelity::Exact
            }
        }
        // A time of day in a duration column (MySQL's TIME): the interval since midnight, which
        // verification hashes alike; interval columns here hold microseconds.
        (Time32(fu) | Time64(fu), Interval(_)) => {
            if unit_rank(fu) > unit_rank(&TimeUnit::Microsecond) {
                lossy("sub-microsecond fractions are rejected")
            } else {
                Fidelity::Exact
            }
        }
        (a, b) if is_text(a) && is_text(b) => Fidelity::Exact,
        (a, b) if is_binary(a) && is_binary(b) => Fidelity::Exact,
        (a, b) if is_text(b) && !matches!(a, List(_) | LargeList(_)) => lossy("values stored as text"),
        (List(f), List(t)) | (LargeList(f), LargeList(t)) | (List(f), LargeList(t)) | (LargeList(f), List(t)) => {
            fidelity(f.data_type(), t.data_type())
        }
        _ => Fidelity::Impossible,
    }
}

/// [`portable_default`]'s token for the current date and time (`now()`, `CURRENT_TIMESTAMP`,
/// MariaDB's `current_timestamp()`), which each target spells its own way.
pub const DEFAULT_NOW: &str = "CURRENT_TIMESTAMP";
/// [`portable_default`]'s token for the current date (`CURRENT_DATE`, `curdate()`).
pub const DEFAULT_TODAY: &str = "CURRENT_DATE";
/// [`portable_default`]'s token for a new random UUID (`gen_random_uuid()`, `uuid()`).
pub const DEFAULT_UUID: &str = "UUID()";

/// A column default every engine can have, from a default expression as an engine prints it: a
/// literal (a number, a single-quoted string, TRUE or FALSE: `'pending'::character varying`, `0`,
/// `(1.5)`), or one of the tokens [`DEFAULT_NOW`], [`DEFAULT_TODAY`], [`DEFAULT_UUID`] for the
/// common functions. `None` for anything else (other functions, NULL, expressions), which a
/// target would interpret differently or not at all: the copy lists those as not migrated.
pub fn portable_default(expression: &str) -> Option<String> {
    let mut e = expression.trim();
    while let Some(inner) = e.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
        e = inner.trim();
    }
    let function = e.to_ascii_lowercase();
    let function = function.split('(').next().unwrap_or_default().trim();
    let call_args = e.find('(').map(|open| &e[open..]);
    let bare_call = call_args.is_none_or(|args| args.starts_with('(') && args.ends_with(')'));
    if bare_call {
        match function {
            "now" | "current_timestamp" | "localtimestamp" | "transaction_timestamp" | "statement_timestamp" => {
                return Some(DEFAULT_NOW.into());
            }
            "current_date" | "curdate" => return Some(DEFAULT_TODAY.into()),
            "gen_random_uuid" | "uuid" | "uuid_generate_v4" => return Some(DEFAULT_UUID.into()),
            _ => {}
        }
    }
    // A trailing cast to a named type (PostgreSQL prints literals that way) does not change the value.
    if let Some(at) = e.rfind("::")
        && e[at + 2..].chars().all(|c| c.is_ascii_alphanumeric() || " _\"()[],".contains(c))
    {
        e = e[..at].trim();
    }
    let number = e.strip_prefix('-').unwrap_or(e);
    let numeric = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().any(|c| c.is_ascii_digit());
    if numeric {
        return Some(e.to_string());
    }
    if e.eq_ignore_ascii_case("true") || e.eq_ignore_ascii_case("false") {
        return Some(e.to_ascii_uppercase());
    }
    let quoted = e.strip_prefix('\'')?.strip_suffix('\'')?;
    // Inside, quotes come doubled; a lone quote would mean this was not one literal.
    let unescaped = quoted.replace("''", "");
    (!unescaped.contains('\'')).then(|| format!("'{quoted}'"))
}

/// Records a column's default `expression` (as the source's catalog prints it) in field
/// `metadata`: its [`portable_default`] as [`crate::META_DEFAULT`], or, when it has none, the
/// expression as [`crate::META_DEFAULT_UNTRANSLATED`] (an explicit NULL default is no default).
pub fn record_default(expression: Option<&str>, metadata: &mut std::collections::HashMap<String, String>) {
    let Some(expression) = expression.map(str::trim).filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("null"))
    else {
        return;
    };
    match portable_default(expression) {
        Some(portable) => metadata.insert(crate::META_DEFAULT.to_string(), portable),
        None => metadata.insert(crate::META_DEFAULT_UNTRANSLATED.to_string(), expression.to_string()),
    };
}

/// The declared length of a character column (`varchar(120)`, `character varying(120)`,
/// `NVARCHAR(120)`, `char(4)`), from its source's native type ([`crate::META_NATIVE_TYPE`]): what
/// a target of another engine keeps as `varchar(n)`.
pub fn max_chars(field: &arrow_schema::Field) -> Option<u32> {
    if !matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return None;
    }
    let native = field.metadata().get(crate::META_NATIVE_TYPE)?.to_ascii_lowercase();
    let (name, rest) = native.split_once('(')?;
    let known = ["character varying", "varchar", "nvarchar", "varchar2", "character", "char", "nchar", "bpchar"];
    if !known.contains(&name.trim()) {
        return None;
    }
    rest.split(')').next()?.trim().parse().ok().filter(|n| *n > 0)
}

/// The length of a fixed-length character column ([`crate::META_FIXED_CHARS`]), where it is also
/// the declared length a target keeps.
pub fn fixed_chars(field: &arrow_schema::Field) -> Option<u32> {
    let n = field.metadata().get(crate::META_FIXED_CHARS)?.parse().ok()?;
    (max_chars(field) == Some(n)).then_some(n)
}

/// A column's default as `render` spells the [`portable_default`] it carries
/// ([`crate::META_DEFAULT`]) for the target: a literal as is, except 0/1 for a boolean column
/// (MySQL's `tinyint(1) DEFAULT 1`), which is FALSE/TRUE; a token through `render`, which returns
/// `None` when the target column cannot have it.
pub fn default_sql(field: &arrow_schema::Field, render: impl Fn(&str) -> Option<String>) -> Option<String> {
    let default = field.metadata().get(crate::META_DEFAULT)?;
    if [DEFAULT_NOW, DEFAULT_TODAY, DEFAULT_UUID].contains(&default.as_str()) {
        return render(default);
    }
    if field.data_type() == &DataType::Boolean {
        return match default.trim_matches('\'') {
            "0" => Some("FALSE".into()),
            "1" => Some("TRUE".into()),
            _ => Some(default.clone()),
        };
    }
    Some(default.clone())
}

/// The geometry subtypes every spatial engine has, as OGC spells them (MySQL's column types and
/// PostGIS's type modifiers, case aside).
pub const GEOMETRY_TYPES: &[&str] = &[
    "Geometry",
    "Point",
    "LineString",
    "Polygon",
    "MultiPoint",
    "MultiLineString",
    "MultiPolygon",
    "GeometryCollection",
];

/// The subtype in [`GEOMETRY_TYPES`] that `name` spells (`point`, `LINESTRING`, `Polygon`).
pub fn geometry_type(name: &str) -> Option<&'static str> {
    GEOMETRY_TYPES.iter().find(|t| t.eq_ignore_ascii_case(name.trim())).copied()
}

/// The labels a field's metadata holds under `key` ([`crate::META_ENUM`], [`crate::META_SET`]).
pub fn labels(field: &arrow_schema::Field, key: &str) -> Option<Vec<String>> {
    serde_json::from_str(field.metadata().get(key)?).ok()
}

/// Records `labels` under `key` ([`crate::META_ENUM`], [`crate::META_SET`]) in field `metadata`.
pub fn record_labels(labels: &[String], key: &str, metadata: &mut std::collections::HashMap<String, String>) {
    metadata.insert(key.to_string(), serde_json::Value::from(labels).to_string());
}

/// The CHECK that keeps a text column to its enumeration ([`crate::META_ENUM`]), for a target
/// without enumerations, with `literal` quoting a label for the target.
pub fn enum_check(field: &arrow_schema::Field, column: &str, literal: impl Fn(&str) -> String) -> Option<String> {
    let labels = labels(field, crate::META_ENUM)?;
    Some(format!("CHECK ({column} IN ({}))", labels.iter().map(|l| literal(l)).collect::<Vec<_>>().join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;

    #[test]
    fn character_columns_keep_their_declared_length() {
        let field = |native: &str, t: DataType| {
            arrow_schema::Field::new("c", t, true)
                .with_metadata(std::collections::HashMap::from([(crate::META_NATIVE_TYPE.to_string(), native.into())]))
        };
        assert_eq!(max_chars(&field("character varying(120)", Utf8)), Some(120));
        assert_eq!(max_chars(&field("NVARCHAR(40)", Utf8)), Some(40));
        assert_eq!(max_chars(&field("char(4)", Utf8)), Some(4));
        assert_eq!(max_chars(&field("varchar(10)", Binary)), None);
        assert_eq!(max_chars(&field("numeric(10,2)", Utf8)), None);
        assert_eq!(max_chars(&field("text", Utf8)), None);
    }

    #[test]
    fn the_common_default_functions_become_tokens() {
        for now in ["now()", "CURRENT_TIMESTAMP", "current_timestamp()", "current_timestamp(6)", "(now())"] {
            assert_eq!(portable_default(now).as_deref(), Some(DEFAULT_NOW), "{now}");
        }
        assert_eq!(portable_default("curdate()").as_deref(), Some(DEFAULT_TODAY));
        assert_eq!(portable_default("gen_random_uuid()").as_deref(), Some(DEFAULT_UUID));
        assert_eq!(portable_default("uuid()").as_deref(), Some(DEFAULT_UUID));
        assert_eq!(portable_default("nextval('s'::regclass)"), None);
        assert_eq!(portable_default("now() + '1 day'::interval"), None);
        let boolean = |d: &str| {
            arrow_schema::Field::new("b", Boolean, true)
                .with_metadata(std::collections::HashMap::from([(crate::META_DEFAULT.to_string(), d.to_string())]))
        };
        assert_eq!(default_sql(&boolean("1"), |_| None).as_deref(), Some("TRUE"));
        assert_eq!(default_sql(&boolean("'0'"), |_| None).as_deref(), Some("FALSE"));
        assert_eq!(default_sql(&boolean("TRUE"), |_| None).as_deref(), Some("TRUE"));
        let now = arrow_schema::Field::new("t", Utf8, true).with_metadata(std::collections::HashMap::from([(
            crate::META_DEFAULT.to_string(),
            DEFAULT_NOW.to_string(),
        )]));
        assert_eq!(default_sql(&now, |t| Some(format!("<{t}>"))).as_deref(), Some("<CURRENT_TIMESTAMP>"));
    }

    #[test]
    fn widening_integers_is_exact_and_narrowing_is_lossy() {
        assert_eq!(fidelity(&Int32, &Int64), Fidelity::Exact);
        assert_eq!(fidelity(&UInt32, &Int64), Fidelity::Exact);
        assert!(matches!(fidelity(&UInt64, &Int64), Fidelity::Lossy(_)));
        assert!(matches!(fidelity(&Int64, &Int32), Fidelity::Lossy(_)));
        assert!(matches!(fidelity(&Int8, &UInt64), Fidelity::Lossy(_)));
    }

    #[test]
    fn decimals_need_room_for_integer_digits_and_scale() {
        assert_eq!(fidelity(&Decimal128(12, 2), &Decimal128(14, 2)), Fidelity::Exact);
        assert_eq!(fidelity(&Decimal128(12, 2), &Decimal128(13, 3)), Fidelity::Exact);
        assert!(matches!(fidelity(&Decimal128(12, 2), &Decimal128(12, 3)), Fidelity::Lossy(_)));
        assert!(matches!(fidelity(&Decimal128(12, 2), &Decimal128(12, 1)), Fidelity::Lossy(_)));
        assert_eq!(fidelity(&UInt64, &Decimal128(20, 0)), Fidelity::Exact);
    }

    #[test]
    fn naive_to_zoned_timestamps_are_flagged() {
        let naive = Timestamp(TimeUnit::Microsecond, None);
        let utc = Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
        assert!(matches!(fidelity(&naive, &utc), Fidelity::Lossy(_)));
        assert_eq!(fidelity(&Timestamp(TimeUnit::Second, None), &naive), Fidelity::Exact);
        assert!(matches!(fidelity(&Timestamp(TimeUnit::Nanosecond, None), &naive), Fidelity::Lossy(_)));
    }

    #[test]
    fn literal_defaults_are_portable_and_other_expressions_are_not() {
        assert_eq!(portable_default("'pending'::character varying").as_deref(), Some("'pending'"));
        assert_eq!(portable_default("'it''s'::text").as_deref(), Some("'it''s'"));
        assert_eq!(portable_default("0").as_deref(), Some("0"));
        assert_eq!(portable_default("(-1.5)").as_deref(), Some("-1.5"));
        assert_eq!(portable_default("'0'::numeric").as_deref(), Some("'0'"));
        assert_eq!(portable_default("true").as_deref(), Some("TRUE"));
        for not_portable in ["nextval('s'::regclass)", "NULL", "1 + 1", "'a' || 'b'", ""] {
            assert_eq!(portable_default(not_portable), None, "{not_portable}");
        }
    }

    #[test]
    fn unrelated_types_are_impossible() {
        assert_eq!(fidelity(&Binary, &Int64), Fidelity::Impossible);
        assert_eq!(fidelity(&Utf8, &Boolean), Fidelity::Impossible);
    }
}
