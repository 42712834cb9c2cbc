//! The canonical value encoding described in the crate docs. Each column's accessor is chosen once
//! per batch (downcast and unit conversion), then applied per value.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_buffer::{NullBuffer, i256};
use arrow_schema::{DataType, IntervalUnit, TimeUnit};
use barge_core::{Error, Result};
use serde_json::Value;

const TAG_NULL: u8 = 0x00;
const TAG_BOOL: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_FLOAT: u8 = 0x03;
const TAG_DECIMAL: u8 = 0x04;
const TAG_TEXT: u8 = 0x05;
const TAG_BYTES: u8 = 0x06;
const TAG_DATE: u8 = 0x07;
const TAG_TIMESTAMP: u8 = 0x08;
/// `0x09` was the time-of-day tag; times of day now hash as intervals (`0x0B`).
const TAG_LIST: u8 = 0x0A;
const TAG_INTERVAL: u8 = 0x0B;
const TAG_JSON: u8 = 0x0C;

const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

type Get<'a, T> = Box<dyn Fn(usize) -> T + Send + Sync + 'a>;

/// How one column's values are read, decided once per batch.
enum Accessor<'a> {
    Bool(&'a BooleanArray),
    Int(Get<'a, i128>),
    Float(Get<'a, f64>),
    Decimal(Get<'a, i256>, i8),
    Text(Get<'a, &'a str>),
    Bytes(Get<'a, &'a [u8]>),
    Date(Get<'a, i32>),
    /// Nanoseconds since the epoch (or since midnight for times), widened so no unit overflows.
    Timestamp(Get<'a, i128>),
    Time(Get<'a, i128>),
    List {
        offsets: Get<'a, (usize, usize)>,
        values: Box<Column<'a>>,
    },
    /// (months, days, nanoseconds): the three independent parts of a calendar interval.
    Interval(Get<'a, (i32, i32, i64)>),
    /// JSON documents held as text, hashed in canonical form.
    Json(Get<'a, &'a str>),
}

struct Column<'a> {
    nulls: Option<&'a NullBuffer>,
    accessor: Accessor<'a>,
}

macro_rules! prim {
    ($array:expr, $t:ty, $conv:expr) => {{
        let a = $array.as_primitive::<$t>();
        Box::new(move |i| $conv(a.value(i)))
    }};
}

fn nanos_per(unit: &TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

impl<'a> Column<'a> {
    fn new(array: &'a dyn Array) -> Option<Self> {
        use DataType::*;
        let accessor = match array.data_type() {
            Boolean => Accessor::Bool(array.as_boolean()),
            Int8 => Accessor::Int(prim!(array, Int8Type, i128::from)),
            Int16 => Accessor::Int(prim!(array, Int16Type, i128::from)),
            Int32 => Accessor::Int(prim!(array, Int32Type, i128::from)),
            Int64 => Accessor::Int(prim!(array, Int64Type, i128::from)),
            UInt8 => Accessor::Int(prim!(array, UInt8Type, i128::from)),
            UInt16 => Accessor::Int(prim!(array, UInt16Type, i128::from)),
            UInt32 => Accessor::Int(prim!(array, UInt32Type, i128::from)),
            UInt64 => Accessor::Int(prim!(array, UInt64Type, i128::from)),
            Float16 => Accessor::Float(prim!(array, Float16Type, f64::from)),
            Float32 => Accessor::Float(prim!(array, Float32Type, f64::from)),
            Float64 => Accessor::Float(prim!(array, Float64Type, |v| v)),
            Decimal32(_, s) => Accessor::Decimal(prim!(array, Decimal32Type, |v| i256::from_i128(i128::from(v))), *s),
            Decimal64(_, s) => Accessor::Decimal(prim!(array, Decimal64Type, |v| i256::from_i128(i128::from(v))), *s),
            Decimal128(_, s) => Accessor::Decimal(prim!(array, Decimal128Type, i256::from_i128), *s),
            Decimal256(_, s) => Accessor::Decimal(prim!(array, Decimal256Type, |v| v), *s),
            Utf8 => Accessor::Text(prim_str(array.as_string::<i32>())),
            LargeUtf8 => Accessor::Text(prim_str(array.as_string::<i64>())),
            Utf8View => {
                let a = array.as_string_view();
                Accessor::Text(Box::new(move |i| a.value(i)))
            }
            Binary => {
                let a = array.as_binary::<i32>();
                Accessor::Bytes(Box::new(move |i| a.value(i)))
            }
            LargeBinary => {
                let a = array.as_binary::<i64>();
                Accessor::Bytes(Box::new(move |i| a.value(i)))
            }
            BinaryView => {
                let a = array.as_binary_view();
                Accessor::Bytes(Box::new(move |i| a.value(i)))
            }
            FixedSizeBinary(_) => {
                let a = array.as_fixed_size_binary();
                Accessor::Bytes(Box::new(move |i| a.value(i)))
            }
            Date32 => Accessor::Date(prim!(array, Date32Type, |v| v)),
            Date64 => Accessor::Date(prim!(array, Date64Type, |v: i64| {
                i32::try_from(v.div_euclid(86_400_000)).unwrap_or(i32::MAX)
            })),
            Timestamp(unit, _) => {
                let scale = nanos_per(unit);
                Accessor::Timestamp(match unit {
                    TimeUnit::Second => prim!(array, TimestampSecondType, |v| i128::from(v) * scale),
                    TimeUnit::Millisecond => prim!(array, TimestampMillisecondType, |v| i128::from(v) * scale),
                    TimeUnit::Microsecond => prim!(array, TimestampMicrosecondType, |v| i128::from(v) * scale),
                    TimeUnit::Nanosecond => prim!(array, TimestampNanosecondType, i128::from),
                })
            }
            Time32(unit) => {
                let scale = nanos_per(unit);
                Accessor::Time(match unit {
                    TimeUnit::Second => prim!(array, Time32SecondType, |v| i128::from(v) * scale),
                    _ => prim!(array, Time32MillisecondType, |v| i128::from(v) * scale),
                })
            }
            Time64(unit) => {
                let scale = nanos_per(unit);
                Accessor::Time(match unit {
                    TimeUnit::Nanosecond => prim!(array, Time64NanosecondType, i128::from),
                    _ => prim!(array, Time64MicrosecondType, |v| i128::from(v) * scale),
                })
            }
            List(_) => {
                let a = array.as_list::<i32>();
                let offsets = a.value_offsets();
                Accessor::List {
                    offsets: Box::new(move |i| (offsets[i] as usize, offsets[i + 1] as usize)),
                    values: Box::new(Column::new(a.values().as_ref())?),
                }
            }
            LargeList(_) => {
                let a = array.as_list::<i64>();
                let offsets = a.value_offsets();
                Accessor::List {
                    offsets: Box::new(move |i| (offsets[i] as usize, offsets[i + 1] as usize)),
                    values: Box::new(Column::new(a.values().as_ref())?),
                }
            }
            Interval(IntervalUnit::MonthDayNano) => {
                let a = array.as_primitive::<IntervalMonthDayNanoType>();
                Accessor::Interval(Box::new(move |i| {
                    let v = a.value(i);
                    (v.months, v.days, v.nanoseconds)
                }))
            }
            Interval(IntervalUnit::DayTime) => {
                let a = array.as_primitive::<IntervalDayTimeType>();
                Accessor::Interval(Box::new(move |i| {
                    let v = a.value(i);
                    (0, v.days, i64::from(v.milliseconds) * 1_000_000)
                }))
            }
            Interval(IntervalUnit::YearMonth) => {
                let a = array.as_primitive::<IntervalYearMonthType>();
                Accessor::Interval(Box::new(move |i| (a.value(i), 0, 0)))
            }
            _ => return None,
        };
        Some(Column { nulls: array.nulls(), accessor })
    }

    fn is_null(&self, i: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(i))
    }

    /// The tag and bytes of a text or binary value of at least [`HUGE_VALUE_BYTES`] at row `i`,
    /// which [`Self::encode`] would copy whole: such a value is hashed where it lies instead.
    fn huge(&self, i: usize) -> Option<(u8, &[u8])> {
        if self.is_null(i) {
            return None;
        }
        let (tag, bytes) = match &self.accessor {
            Accessor::Text(get) => (TAG_TEXT, get(i).as_bytes()),
            Accessor::Bytes(get) => (TAG_BYTES, get(i)),
            _ => return None,
        };
        (bytes.len() >= HUGE_VALUE_BYTES).then_some((tag, bytes))
    }

    /// Whether [`Self::huge`] can find a value in `array` at all (its buffers are that large).
    fn may_hold_huge(&self, array: &dyn Array) -> bool {
        matches!(self.accessor, Accessor::Text(_) | Accessor::Bytes(_))
            && array.get_buffer_memory_size() >= HUGE_VALUE_BYTES
    }

    fn encode(&self, i: usize, out: &mut Vec<u8>) {
        if self.is_null(i) {
            out.push(TAG_NULL);
            return;
        }
        match &self.accessor {
            Accessor::Bool(a) => out.extend_from_slice(&[TAG_BOOL, u8::from(a.value(i))]),
            Accessor::Int(get) => {
                out.push(TAG_INT);
                out.extend_from_slice(&get(i).to_le_bytes());
            }
            Accessor::Float(get) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&canonical_float_bits(get(i)).to_le_bytes());
            }
            Accessor::Decimal(get, scale) => put_decimal(out, get(i), *scale),
            Accessor::Text(get) => put_bytes(out, TAG_TEXT, get(i).as_bytes()),
            Accessor::Json(get) => put_bytes(out, TAG_JSON, canonical_json(get(i)).as_bytes()),
            Accessor::Bytes(get) => put_bytes(out, TAG_BYTES, get(i)),
            Accessor::Date(get) => {
                out.push(TAG_DATE);
                out.extend_from_slice(&get(i).to_le_bytes());
            }
            Accessor::Timestamp(get) => put_micros(out, TAG_TIMESTAMP, get(i)),
            // A time of day is the interval since midnight: MySQL has one TIME type for both, so
            // PostgreSQL's `time '10:00'` must equal MySQL's TIME '10:00:00' (read as an interval).
            Accessor::Time(get) => put_interval(out, 0, get(i)),
            Accessor::Interval(get) => {
                let (months, days, nanos) = get(i);
                // A day is 24 hours, as PostgreSQL's own interval equality has it ('1 day' =
                // '24 hours'), so MySQL's TIME '-24:00:00' equals '-1 day'; months stay apart.
                put_interval(out, months, i128::from(days) * 86_400_000_000_000 + i128::from(nanos));
            }
            Accessor::List { offsets, values } => {
                let (start, end) = offsets(i);
                out.push(TAG_LIST);
                out.extend_from_slice(&((end - start) as u64).to_le_bytes());
                for j in start..end {
                    values.encode(j, out);
                }
            }
        }
    }

    fn json(&self, i: usize) -> Value {
        if self.is_null(i) {
            return Value::Null;
        }
        match &self.accessor {
            Accessor::Bool(a) => Value::Bool(a.value(i)),
            Accessor::Int(get) => {
                let v = get(i);
                i64::try_from(v)
                    .map(Value::from)
                    .or_else(|_| u64::try_from(v).map(Value::from))
                    .unwrap_or_else(|_| Value::String(v.to_string()))
            }
            Accessor::Float(get) => {
                serde_json::Number::from_f64(get(i)).map_or_else(|| Value::String(get(i).to_string()), Value::Number)
            }
            Accessor::Decimal(get, scale) => Value::String(decimal_to_string(get(i), *scale)),
            Accessor::Text(get) | Accessor::Json(get) => Value::String(get(i).to_string()),
            Accessor::Bytes(get) => Value::String(get(i).iter().map(|b| format!("{b:02x}")).collect()),
            Accessor::Date(get) => Value::String(
                chrono::NaiveDate::from_num_days_from_ce_opt(get(i) + 719_163)
                    .map_or_else(|| get(i).to_string(), |d| d.to_string()),
            ),
            Accessor::Timestamp(get) => {
                let nanos = get(i);
                let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
                let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).expect("below 1e9");
                Value::String(
                    chrono::DateTime::from_timestamp(secs, sub)
                        .map_or_else(|| nanos.to_string(), |t| t.naive_utc().to_string()),
                )
            }
            Accessor::Time(get) => {
                let nanos = get(i);
                let secs = u32::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(u32::MAX);
                let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).expect("below 1e9");
                Value::String(
                    chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, sub)
                        .map_or_else(|| nanos.to_string(), |t| t.to_string()),
                )
            }
            Accessor::List { offsets, values } => {
                let (start, end) = offsets(i);
                Value::Array((start..end).map(|j| values.json(j)).collect())
            }
            Accessor::Interval(get) => {
                let (months, days, nanos) = get(i);
                Value::String(format!(
                    "{months} months {days} days {}.{:09} s",
                    nanos / 1_000_000_000,
                    (nanos % 1_000_000_000).abs()
                ))
            }
        }
    }
}

/// A JSON document with sorted keys, no insignificant whitespace and numbers as serde_json prints
/// them; text that is not JSON stays as it is.
fn canonical_json(text: &str) -> String {
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_string(), |v| v.to_string())
}

fn prim_str<'a, O: arrow_array::OffsetSizeTrait>(a: &'a arrow_array::GenericStringArray<O>) -> Get<'a, &'a str> {
    Box::new(move |i| a.value(i))
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    put_bytes_header(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

/// What [`put_bytes`] writes before the bytes themselves.
fn put_bytes_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_interval(out: &mut Vec<u8>, months: i32, nanos: i128) {
    out.push(TAG_INTERVAL);
    out.extend_from_slice(&months.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
}

fn put_micros(out: &mut Vec<u8>, tag: u8, nanos: i128) {
    out.push(tag);
    // In 64 bits when the value fits (years 1677 to 2262): 128-bit division is a library call,
    // 64-bit division by a constant a multiplication. The results are the same.
    let (micros, rest) = match i64::try_from(nanos) {
        Ok(nanos) => (nanos.div_euclid(1_000), nanos.rem_euclid(1_000) as u16),
        Err(_) => (
            i64::try_from(nanos.div_euclid(1_000)).unwrap_or(i64::MAX),
            u16::try_from(nanos.rem_euclid(1_000)).expect("below 1000"),
        ),
    };
    out.extend_from_slice(&micros.to_le_bytes());
    out.extend_from_slice(&rest.to_le_bytes());
}

fn canonical_float_bits(x: f64) -> u64 {
    if x.is_nan() {
        CANONICAL_NAN
    } else if x == 0.0 {
        0 // both +0.0 and -0.0
    } else {
        x.to_bits()
    }
}

/// Appends the canonical encoding of the decimal `value × 10^-scale`. Most decimals fit an i64 and
/// are normalised there, without 256-bit division (the slow part); the bytes are the same, since
/// neither the normal form nor the minimal two's complement depends on the width that held it.
fn put_decimal(out: &mut Vec<u8>, value: i256, scale: i8) {
    match value.to_i128().and_then(|v| i64::try_from(v).ok()) {
        Some(small) => {
            let (mantissa, exponent) = normalise_small_decimal(small, scale);
            let whole = u32::try_from(exponent)
                .ok()
                .and_then(|e| 10i128.checked_pow(e))
                .and_then(|power| i128::from(mantissa).checked_mul(power));
            put_normal_decimal(out, whole, exponent, &i128::from(mantissa).to_be_bytes());
        }
        None => put_wide_decimal(out, value, scale),
    }
}

/// [`put_decimal`] in 256-bit arithmetic, for any value.
fn put_wide_decimal(out: &mut Vec<u8>, value: i256, scale: i8) {
    let (mantissa, exponent) = normalise_decimal(value, scale);
    put_normal_decimal(out, integral(mantissa, exponent), exponent, &mantissa.to_be_bytes());
}

/// A normalised decimal: `whole` when it is a whole number that fits an i128 (then it is an
/// integer, whichever column holds it: MySQL's bigint unsigned lands in PostgreSQL's
/// numeric(20,0)), else the exponent and the mantissa (big-endian two's complement, any width).
fn put_normal_decimal(out: &mut Vec<u8>, whole: Option<i128>, exponent: i32, mantissa: &[u8]) {
    if let Some(integer) = whole {
        out.push(TAG_INT);
        out.extend_from_slice(&integer.to_le_bytes());
        return;
    }
    out.push(TAG_DECIMAL);
    out.extend_from_slice(&exponent.to_le_bytes());
    let minimal = minimal_twos_complement(mantissa);
    out.push(u8::try_from(minimal.len()).expect("at most 32 bytes"));
    out.extend_from_slice(minimal);
}

/// [`normalise_decimal`] for a mantissa that fits an i64.
fn normalise_small_decimal(mut mantissa: i64, scale: i8) -> (i64, i32) {
    let mut exponent = -i32::from(scale);
    if mantissa == 0 {
        return (0, 0);
    }
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    (mantissa, exponent)
}

/// `m × 10^-scale` as `(m', e)` with no trailing zeros in `m'`, so equal numbers of any scale agree.
fn normalise_decimal(mut mantissa: i256, scale: i8) -> (i256, i32) {
    let mut exponent = -i32::from(scale);
    if mantissa == i256::ZERO {
        return (i256::ZERO, 0);
    }
    let ten = i256::from_i128(10);
    while mantissa.checked_rem(ten) == Some(i256::ZERO) {
        mantissa = mantissa.checked_div(ten).expect("non-zero divisor");
        exponent += 1;
    }
    (mantissa, exponent)
}

/// The integer `m × 10^e` equals, when `e ≥ 0` and it fits an i128.
fn integral(mantissa: i256, exponent: i32) -> Option<i128> {
    if exponent < 0 {
        return None;
    }
    let scaled = mantissa.checked_mul(i256::from_i128(10).checked_pow(u32::try_from(exponent).ok()?)?)?;
    scaled.to_i128()
}

fn minimal_twos_complement(bytes: &[u8]) -> &[u8] {
    let mut start = 0;
    while start + 1 < bytes.len() {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    &bytes[start..]
}

fn decimal_to_string(mantissa: i256, scale: i8) -> String {
    let digits = mantissa.wrapping_abs().to_string();
    let sign = if mantissa < i256::ZERO { "-" } else { "" };
    if scale <= 0 {
        return format!("{sign}{digits}{}", "0".repeat(usize::from(scale.unsigned_abs())));
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Buffers reused by [`RowEncoder::row_hashes`]: the rows' canonical bytes and their hashes.
#[derive(Default)]
pub struct HashScratch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    hashes: Vec<u128>,
}

/// Text and binary values from this size on are hashed in place rather than copied into a row's
/// canonical bytes first, so that hashing a batch of huge values holds no second copy of them.
const HUGE_VALUE_BYTES: usize = 1 << 20;

/// Encodes rows of a batch canonically. Build one per batch (cheap), then call per row.
pub struct RowEncoder<'a> {
    columns: Vec<Column<'a>>,
    /// Whether some row may hold a value of [`HUGE_VALUE_BYTES`] or more.
    huge: bool,
}

impl<'a> RowEncoder<'a> {
    /// An encoder over all columns of `batch`. A column type outside the contract is an
    /// [`Error::UnsupportedType`] naming `table` and the column.
    pub fn new(table: &str, batch: &'a RecordBatch) -> Result<Self> {
        Self::for_columns(table, batch, &(0..batch.num_columns()).collect::<Vec<_>>())
    }

    /// An encoder over the columns at `indices` (e.g. the key columns).
    pub fn for_columns(table: &str, batch: &'a RecordBatch, indices: &[usize]) -> Result<Self> {
        let columns = indices
            .iter()
            .map(|&i| {
                let array: &'a ArrayRef = batch.column(i);
                let field = batch.schema_ref().field(i);
                if field.metadata().get(barge_core::META_LOGICAL).map(String::as_str) == Some(barge_core::LOGICAL_JSON)
                    && let Some(texts) = array.as_string_opt::<i32>()
                {
                    return Ok(Column {
                        nulls: array.nulls(),
                        accessor: Accessor::Json(Box::new(move |r| texts.value(r))),
                    });
                }
                Column::new(array.as_ref()).ok_or_else(|| Error::UnsupportedType {
                    table: table.to_string(),
                    column: batch.schema_ref().field(i).name().clone(),
                    type_name: array.data_type().to_string(),
                    reason: Some("it has no canonical encoding for verification".into()),
                })
            })
            .collect::<Result<Vec<Column<'a>>>>()?;
        let huge = columns.iter().zip(indices).any(|(c, &i)| c.may_hold_huge(batch.column(i).as_ref()));
        Ok(RowEncoder { columns, huge })
    }

    /// Appends the canonical bytes of `row` to `out`.
    pub fn encode_row(&self, row: usize, out: &mut Vec<u8>) {
        for column in &self.columns {
            column.encode(row, out);
        }
    }

    /// The row's hash: the first 16 bytes of blake3 over its canonical bytes. `scratch` is reused.
    pub fn row_hash(&self, row: usize, scratch: &mut Vec<u8>) -> u128 {
        if let Some(hash) = self.streamed_hash(row) {
            return hash;
        }
        scratch.clear();
        self.encode_row(row, scratch);
        crate::lanes::row_hash(scratch)
    }

    /// The hashes of `rows`, in order, each as [`Self::row_hash`] gives it; hashed several rows
    /// at a time where the CPU allows (see `lanes.rs`), so prefer this over a loop of `row_hash`.
    pub fn row_hashes<'s>(&self, rows: std::ops::Range<usize>, scratch: &'s mut HashScratch) -> &'s [u128] {
        let HashScratch { bytes, ends, hashes } = scratch;
        bytes.clear();
        ends.clear();
        // Rows with a huge value: (position among `rows`, hash), hashed alone and in place.
        let mut streamed = Vec::new();
        for (n, row) in rows.enumerate() {
            match self.streamed_hash(row) {
                Some(hash) => streamed.push((n, hash)),
                None => self.encode_row(row, bytes),
            }
            ends.push(bytes.len());
        }
        let mut start = 0;
        let rows: Vec<&[u8]> = ends
            .iter()
            .map(|&end| {
                let row = &bytes[start..end];
                start = end;
                row
            })
            .collect();
        crate::lanes::row_hashes(&rows, hashes);
        for (n, hash) in streamed {
            hashes[n] = hash;
        }
        hashes
    }

    /// [`Self::row_hash`] of a row holding a huge value, without copying that value: the row's
    /// canonical bytes are fed to the hasher in pieces, the huge values straight from the batch.
    /// `None` when the row holds no huge value.
    fn streamed_hash(&self, row: usize) -> Option<u128> {
        if !self.huge || !self.columns.iter().any(|c| c.huge(row).is_some()) {
            return None;
        }
        let mut hasher = blake3::Hasher::new();
        let mut small = Vec::new();
        for column in &self.columns {
            match column.huge(row) {
                Some((tag, value)) => {
                    put_bytes_header(&mut small, tag, value.len());
                    hasher.update(&small);
                    small.clear();
                    hasher.update(value);
                }
                None => column.encode(row, &mut small),
            }
        }
        hasher.update(&small);
        Some(crate::lanes::truncated(&hasher.finalize()))
    }

    /// The row's values as a JSON array, for reports (bytes as hex, decimals and times as strings).
    pub fn json_row(&self, row: usize) -> Value {
        Value::Array(self.columns.iter().map(|c| c.json(row)).collect())
    }
}

/// One value as JSON, for reports.
pub fn json_value(array: &dyn Array, row: usize) -> Option<Value> {
    Column::new(array).map(|c| c.json(row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray};
    use proptest::strategy::Strategy;
    use std::sync::Arc;

    #[test]
    fn rows_with_huge_values_hash_as_their_canonical_bytes_do() {
        // Huge values are hashed in place; the hash must be the one of the row's canonical bytes.
        let huge_text = "é".repeat(HUGE_VALUE_BYTES);
        let huge_bytes = vec![7u8; HUGE_VALUE_BYTES + 3];
        let texts = StringArray::from(vec![
            Some("small"),
            Some(huge_text.as_str()),
            None,
            Some(&huge_text[..HUGE_VALUE_BYTES - 2]),
        ]);
        let bytes = arrow_array::BinaryArray::from(vec![
            Some(huge_bytes.as_slice()),
            Some(&b"x"[..]),
            Some(huge_bytes.as_slice()),
            None,
        ]);
        let ids = Int64Array::from(vec![1, 2, 3, 4]);
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("t", Arc::new(texts) as ArrayRef),
            ("b", Arc::new(bytes) as ArrayRef),
        ])
        .unwrap();
        let encoder = RowEncoder::new("t", &batch).unwrap();
        assert!(encoder.huge);
        let expected: Vec<u128> = (0..4)
            .map(|row| {
                let mut out = Vec::new();
                encoder.encode_row(row, &mut out);
                crate::lanes::row_hash(&out)
            })
            .collect();
        assert!(encoder.streamed_hash(3).is_none(), "no value of row 3 is huge");
        assert_eq!(encoder.row_hashes(0..4, &mut HashScratch::default()), expected.as_slice());
        assert_eq!(encoder.row_hashes(1..3, &mut HashScratch::default()), &expected[1..3]);
        let singles: Vec<u128> = (0..4).map(|row| encoder.row_hash(row, &mut Vec::new())).collect();
        assert_eq!(singles, expected);
    }

    proptest::proptest! {
        #[test]
        fn small_decimals_encode_as_in_256_bit_arithmetic(value in proptest::prelude::any::<i64>(), scale in -40i8..=76) {
            let (mut fast, mut wide) = (Vec::new(), Vec::new());
            put_decimal(&mut fast, i256::from_i128(i128::from(value)), scale);
            put_wide_decimal(&mut wide, i256::from_i128(i128::from(value)), scale);
            proptest::prop_assert_eq!(fast, wide);
        }

        #[test]
        fn instants_encode_as_in_128_bit_arithmetic(
            nanos in proptest::prop_oneof![
                proptest::prelude::any::<i64>().prop_map(i128::from),
                proptest::prelude::any::<i128>(),
                (-2000i128..2000).prop_map(|d| i128::from(i64::MAX) + d),
                (-2000i128..2000).prop_map(|d| i128::from(i64::MIN) + d),
            ]
        ) {
            let mut fast = Vec::new();
            put_micros(&mut fast, TAG_TIMESTAMP, nanos);
            // The same bytes in 128-bit arithmetic throughout.
            let mut wide = vec![TAG_TIMESTAMP];
            wide.extend_from_slice(&i64::try_from(nanos.div_euclid(1_000)).unwrap_or(i64::MAX).to_le_bytes());
            wide.extend_from_slice(&u16::try_from(nanos.rem_euclid(1_000)).unwrap().to_le_bytes());
            proptest::prop_assert_eq!(fast, wide);
        }
    }

    #[test]
    fn decimal_edges_encode_as_in_256_bit_arithmetic() {
        for value in [0, 1, -1, 10, -10, 1_000_000, i64::MAX, i64::MIN, i64::MIN + 1, 9_223_372_036_854_775_800] {
            for scale in [-38, -19, -1, 0, 1, 2, 18, 19, 38, 76] {
                let (mut fast, mut wide) = (Vec::new(), Vec::new());
                put_decimal(&mut fast, i256::from_i128(i128::from(value)), scale);
                put_wide_decimal(&mut wide, i256::from_i128(i128::from(value)), scale);
                assert_eq!(fast, wide, "{value} scale {scale}");
            }
        }
    }

    fn bytes_of(array: ArrayRef) -> Vec<u8> {
        let batch = RecordBatch::try_from_iter([("c", array)]).unwrap();
        let mut out = Vec::new();
        RowEncoder::new("t", &batch).unwrap().encode_row(0, &mut out);
        out
    }

    #[test]
    fn a_time_of_day_hashes_as_the_interval_since_midnight() {
        use arrow_array::{IntervalMonthDayNanoArray, Time64MicrosecondArray};
        let ten = 10 * 3_600_000_000i64 + 1;
        let time = bytes_of(Arc::new(Time64MicrosecondArray::from(vec![ten])));
        let interval =
            bytes_of(Arc::new(IntervalMonthDayNanoArray::from(vec![IntervalMonthDayNano::new(0, 0, ten * 1_000)])));
        assert_eq!(time, interval);
        let month =
            bytes_of(Arc::new(IntervalMonthDayNanoArray::from(vec![IntervalMonthDayNano::new(1, 0, ten * 1_000)])));
        assert_ne!(time, month);
    }

    #[test]
    fn integer_width_does_not_change_the_encoding() {
        assert_eq!(bytes_of(Arc::new(Int32Array::from(vec![42]))), bytes_of(Arc::new(Int64Array::from(vec![42]))));
    }

    #[test]
    fn decimal_scale_does_not_change_the_encoding() {
        let a = Decimal128Array::from(vec![1230]).with_precision_and_scale(12, 2).unwrap();
        let b = Decimal128Array::from(vec![123]).with_precision_and_scale(10, 1).unwrap();
        assert_eq!(bytes_of(Arc::new(a)), bytes_of(Arc::new(b)));
        let c = Decimal128Array::from(vec![124]).with_precision_and_scale(10, 1).unwrap();
        assert_ne!(bytes_of(Arc::new(c)), bytes_of(Arc::new(Decimal128Array::from(vec![123]))));
    }

    #[test]
    fn json_documents_hash_canonically_and_only_when_marked() {
        let json = |text: &str, marked: bool| {
            let mut field = arrow_schema::Field::new("j", arrow_schema::DataType::Utf8, true);
            if marked {
                field = field.with_metadata(std::collections::HashMap::from([(
                    barge_core::META_LOGICAL.to_string(),
                    barge_core::LOGICAL_JSON.to_string(),
                )]));
            }
            let schema = Arc::new(arrow_schema::Schema::new(vec![field]));
            let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![text]))]).unwrap();
            let mut out = Vec::new();
            RowEncoder::new("t", &batch).unwrap().encode_row(0, &mut out);
            out
        };
        assert_eq!(json(r#"{"b": 1,  "a": [1, 2]}"#, true), json(r#"{"a":[1,2],"b":1}"#, true));
        assert_ne!(json(r#"{"b": 1,  "a": [1, 2]}"#, false), json(r#"{"a":[1,2],"b":1}"#, false));
        assert_ne!(json(r#"{"a": 1}"#, true), json(r#"{"a": 2}"#, true));
        assert_eq!(json("not json", true), json("not json", true));
    }

    #[test]
    fn whole_decimals_hash_as_the_integers_they_equal() {
        let unsigned = bytes_of(Arc::new(arrow_array::UInt64Array::from(vec![u64::MAX])));
        let numeric = Decimal128Array::from(vec![i128::from(u64::MAX)]).with_precision_and_scale(20, 0).unwrap();
        assert_eq!(unsigned, bytes_of(Arc::new(numeric)));
        let scaled = Decimal128Array::from(vec![1200]).with_precision_and_scale(6, 2).unwrap();
        assert_eq!(bytes_of(Arc::new(scaled)), bytes_of(Arc::new(Int64Array::from(vec![12]))));
        let fraction = Decimal128Array::from(vec![1250]).with_precision_and_scale(6, 2).unwrap();
        assert_ne!(bytes_of(Arc::new(fraction)), bytes_of(Arc::new(Int64Array::from(vec![12]))));
    }

    #[test]
    fn negative_zero_and_nans_are_normalised() {
        let a = bytes_of(Arc::new(Float64Array::from(vec![-0.0])));
        assert_eq!(a, bytes_of(Arc::new(Float64Array::from(vec![0.0]))));
        let nan = bytes_of(Arc::new(Float64Array::from(vec![f64::NAN])));
        assert_eq!(nan, bytes_of(Arc::new(Float64Array::from(vec![-f64::NAN]))));
    }

    #[test]
    fn null_differs_from_empty_text() {
        let null = bytes_of(Arc::new(StringArray::from(vec![None::<&str>])));
        let empty = bytes_of(Arc::new(StringArray::from(vec![Some("")])));
        assert_ne!(null, empty);
    }

    #[test]
    fn decimal_strings_keep_their_scale() {
        assert_eq!(decimal_to_string(i256::from_i128(-5), 2), "-0.05");
        assert_eq!(decimal_to_string(i256::from_i128(12345), 2), "123.45");
        assert_eq!(decimal_to_string(i256::from_i128(7), 0), "7");
    }

    #[test]
    fn minimal_bytes_agree_across_widths() {
        let narrow = (-300i128).to_be_bytes();
        let wide = i256::from_i128(-300).to_be_bytes();
        assert_eq!(minimal_twos_complement(&narrow), minimal_twos_complement(&wide));
        assert_eq!(minimal_twos_complement(&128i128.to_be_bytes()), &[0x00, 0x80]);
    }
}
