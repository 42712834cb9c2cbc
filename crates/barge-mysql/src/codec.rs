//! Values as MySQL's text protocol sends them → Arrow, and Arrow → LOAD DATA's tab-separated
//! format. Decoders and encoders are chosen once per column.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::*;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, FieldRef, IntervalUnit, TimeUnit};
use barge_core::text;

use crate::types::{ColumnKind, Kind, UTC};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Appends text values of one column to an Arrow builder.
pub enum Decoder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Float(Float32Builder),
    Double(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    DateTime(TimestampMicrosecondBuilder, bool),
    Time(IntervalMonthDayNanoBuilder),
    /// bit(n): big-endian bytes from the server, n binary digits in Arrow.
    Bit(StringBuilder, u8),
    /// char(n): padded back to n characters (see [`Kind::Char`]).
    Char(StringBuilder, u16),
    /// A JSON array whose elements go through the element's own decoder (see
    /// [`crate::types::ColumnKind`]).
    List {
        element: Box<Decoder>,
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

// Called for nearly every value: left out of line, it cost ~12% of text decoding (criterion).
#[inline]
fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|e| format!("text is not valid UTF-8 ({e})"))
}

fn number<T: std::str::FromStr>(b: &[u8]) -> Result<T, String> {
    let t = utf8(b)?;
    t.parse().map_err(|_| format!("`{t}` is not a number of this column's type"))
}

/// `[-]H…H:MM:SS[.ffffff]` (MySQL TIME, up to ±838 hours) → microseconds.
pub fn parse_mysql_time(t: &str) -> Option<i64> {
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let mut parts = body.splitn(3, ':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds = parts.next()?;
    let (whole, frac) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole: i64 = whole.parse().ok()?;
    if minutes > 59 || whole > 59 || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: i64 = if frac.is_empty() { 0 } else { frac.parse::<i64>().ok()? * 10i64.pow(6 - frac.len() as u32) };
    let micros = ((hours * 60 + minutes) * 60 + whole) * 1_000_000 + frac;
    Some(if negative { -micros } else { micros })
}

impl Decoder {
    /// The decoder of a column: a scalar, or a JSON array of scalars.
    pub fn column(column: ColumnKind, capacity: usize) -> Self {
        if !column.array {
            return Decoder::new(column.kind, capacity);
        }
        let DataType::List(field) = column.arrow() else { unreachable!("an array column is an Arrow list") };
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        Decoder::List {
            element: Box::new(Decoder::new(column.kind, capacity)),
            field,
            offsets,
            nulls: NullBufferBuilder::new(capacity),
        }
    }

    pub fn new(kind: Kind, capacity: usize) -> Self {
        match kind {
            Kind::Bool => Decoder::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Int(8) => Decoder::I8(Int8Builder::with_capacity(capacity)),
            Kind::Int(16) => Decoder::I16(Int16Builder::with_capacity(capacity)),
            Kind::Int(32) => Decoder::I32(Int32Builder::with_capacity(capacity)),
            Kind::Int(_) => Decoder::I64(Int64Builder::with_capacity(capacity)),
            Kind::UInt(8) => Decoder::U8(UInt8Builder::with_capacity(capacity)),
            Kind::UInt(16) => Decoder::U16(UInt16Builder::with_capacity(capacity)),
            Kind::UInt(32) => Decoder::U32(UInt32Builder::with_capacity(capacity)),
            Kind::UInt(_) => Decoder::U64(UInt64Builder::with_capacity(capacity)),
            Kind::Decimal(p, s) => Decoder::Decimal(Decimal128Builder::with_capacity(capacity), p, s),
            Kind::Float => Decoder::Float(Float32Builder::with_capacity(capacity)),
            Kind::Double => Decoder::Double(Float64Builder::with_capacity(capacity)),
            Kind::DecimalText | Kind::Text | Kind::Json => {
                Decoder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            Kind::Bytes => Decoder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Date => Decoder::Date(Date32Builder::with_capacity(capacity)),
            Kind::DateTime => Decoder::DateTime(TimestampMicrosecondBuilder::with_capacity(capacity), false),
            Kind::Timestamp => Decoder::DateTime(TimestampMicrosecondBuilder::with_capacity(capacity), true),
            Kind::Time => Decoder::Time(IntervalMonthDayNanoBuilder::with_capacity(capacity)),
            Kind::Bit(width) => {
                Decoder::Bit(StringBuilder::with_capacity(capacity, capacity * usize::from(width)), width)
            }
            Kind::Char(width) => {
                Decoder::Char(StringBuilder::with_capacity(capacity, capacity * usize::from(width)), width)
            }
        }
    }

    /// Appends one value; `None` is SQL NULL. With `zero_dates_as_null`, a zero date becomes NULL
    /// and `Ok(true)` says so (the caller counts them); otherwise it is an error.
    pub fn append(&mut self, value: Option<&[u8]>, zero_dates_as_null: bool) -> Result<bool, String> {
        let Some(b) = value else {
            self.append_null();
            return Ok(false);
        };
        // MySQL's zero dates (0000-00-00) and zero-in-date values (2024-00-15) name no day.
        if matches!(self, Decoder::Date(_) | Decoder::DateTime(..)) {
            let t = utf8(b)?;
            let date = t.get(..10).unwrap_or(t);
            if date.starts_with("0000") || date.contains("-00") {
                if zero_dates_as_null {
                    self.append_null();
                    return Ok(true);
                }
                return Err(format!("zero date `{t}` has no calendar value (zero_dates=error)"));
            }
        }
        match self {
            Decoder::Bool(x) => match b {
                b"0" => x.append_value(false),
                b"1" => x.append_value(true),
                other => return Err(format!("expected 0 or 1, found `{}`", String::from_utf8_lossy(other))),
            },
            Decoder::I8(x) => x.append_value(number(b)?),
            Decoder::I16(x) => x.append_value(number(b)?),
            Decoder::I32(x) => x.append_value(number(b)?),
            Decoder::I64(x) => x.append_value(number(b)?),
            Decoder::U8(x) => x.append_value(number(b)?),
            Decoder::U16(x) => x.append_value(number(b)?),
            Decoder::U32(x) => x.append_value(number(b)?),
            Decoder::U64(x) => x.append_value(number(b)?),
            Decoder::Decimal(x, p, s) => x.append_value(text::parse_decimal(utf8(b)?, *p, *s)?),
            Decoder::Float(x) => x.append_value(number(b)?),
            Decoder::Double(x) => x.append_value(number(b)?),
            Decoder::Text(x) => x.append_value(utf8(b)?),
            Decoder::Bytes(x) => x.append_value(b),
            Decoder::Date(x) => {
                let t = utf8(b)?;
                x.append_value(text::parse_date(t).ok_or_else(|| format!("`{t}` is not a date"))?);
            }
            Decoder::DateTime(x, _) => {
                let t = utf8(b)?;
                x.append_value(text::parse_datetime(t).ok_or_else(|| format!("`{t}` is not a datetime"))?);
            }
            Decoder::Time(x) => {
                let t = utf8(b)?;
                let micros = parse_mysql_time(t).ok_or_else(|| format!("`{t}` is not a time"))?;
                x.append_value(IntervalMonthDayNano::new(0, 0, micros * 1_000));
            }
            Decoder::Bit(x, width) => {
                if b.len() > 8 {
                    return Err(format!("bit value of {} bytes", b.len()));
                }
                let value = b.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
                x.append_value(format!("{value:0width$b}", width = usize::from(*width)));
            }
            Decoder::Char(x, width) => {
                let t = utf8(b)?;
                let missing = usize::from(*width).saturating_sub(t.chars().count());
                if missing == 0 {
                    x.append_value(t);
                } else {
                    x.append_value(format!("{t}{:missing$}", ""));
                }
            }
            Decoder::List { element, offsets, nulls, .. } => {
                let values: Vec<serde_json::Value> =
                    serde_json::from_slice(b).map_err(|e| format!("not a JSON array ({e})"))?;
                let mut zero_dates = false;
                for value in &values {
                    zero_dates |= element.append_json(value, zero_dates_as_null)?;
                }
                let end =
                    offsets.last().copied().unwrap_or(0) + i32::try_from(values.len()).map_err(|_| "array too long")?;
                offsets.push(end);
                nulls.append_non_null();
                return Ok(zero_dates);
            }
        }
        Ok(false)
    }

    /// Appends one element of a JSON array in the text form the element's decoder reads: numbers
    /// as their digits, booleans as 1/0, binary as hex strings (as [`encode_batch`] writes them).
    fn append_json(&mut self, value: &serde_json::Value, zero_dates_as_null: bool) -> Result<bool, String> {
        use serde_json::Value;
        match (value, &*self) {
            (Value::Null, _) => self.append(None, zero_dates_as_null),
            (Value::Bool(b), _) => self.append(Some(if *b { b"1" } else { b"0" }), zero_dates_as_null),
            (Value::Number(n), _) => self.append(Some(n.to_string().as_bytes()), zero_dates_as_null),
            (Value::String(s), Decoder::Bytes(_)) => {
                let bytes = unhex(s).ok_or_else(|| format!("`{s}` is not hex-encoded binary"))?;
                self.append(Some(&bytes), zero_dates_as_null)
            }
            (Value::String(s), _) => self.append(Some(s.as_bytes()), zero_dates_as_null),
            (other, _) => Err(format!("array element {other} is not a scalar")),
        }
    }

    fn append_null(&mut self) {
        match self {
            Decoder::Bool(x) => x.append_null(),
            Decoder::I8(x) => x.append_null(),
            Decoder::I16(x) => x.append_null(),
            Decoder::I32(x) => x.append_null(),
            Decoder::I64(x) => x.append_null(),
            Decoder::U8(x) => x.append_null(),
            Decoder::U16(x) => x.append_null(),
            Decoder::U32(x) => x.append_null(),
            Decoder::U64(x) => x.append_null(),
            Decoder::Decimal(x, ..) => x.append_null(),
            Decoder::Float(x) => x.append_null(),
            Decoder::Double(x) => x.append_null(),
            Decoder::Text(x) => x.append_null(),
            Decoder::Bytes(x) => x.append_null(),
            Decoder::Date(x) => x.append_null(),
            Decoder::DateTime(x, _) => x.append_null(),
            Decoder::Time(x) => x.append_null(),
            Decoder::Bit(x, _) => x.append_null(),
            Decoder::Char(x, _) => x.append_null(),
            Decoder::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Decoder::Bool(x) => Arc::new(x.finish()),
            Decoder::I8(x) => Arc::new(x.finish()),
            Decoder::I16(x) => Arc::new(x.finish()),
            Decoder::I32(x) => Arc::new(x.finish()),
            Decoder::I64(x) => Arc::new(x.finish()),
            Decoder::U8(x) => Arc::new(x.finish()),
            Decoder::U16(x) => Arc::new(x.finish()),
            Decoder::U32(x) => Arc::new(x.finish()),
            Decoder::U64(x) => Arc::new(x.finish()),
            Decoder::Decimal(x, p, s) => Arc::new(x.finish().with_precision_and_scale(*p, *s).expect("valid")),
            Decoder::Float(x) => Arc::new(x.finish()),
            Decoder::Double(x) => Arc::new(x.finish()),
            Decoder::Text(x) => Arc::new(x.finish()),
            Decoder::Bytes(x) => Arc::new(x.finish()),
            Decoder::Date(x) => Arc::new(x.finish()),
            Decoder::DateTime(x, false) => Arc::new(x.finish()),
            Decoder::DateTime(x, true) => Arc::new(x.finish().with_timezone(UTC)),
            Decoder::Time(x) => Arc::new(x.finish()),
            Decoder::Bit(x, _) => Arc::new(x.finish()),
            Decoder::Char(x, _) => Arc::new(x.finish()),
            Decoder::List { element, field, offsets, nulls } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::new(field.clone(), offsets, element.finish(), nulls.finish()))
            }
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// How a list's elements are written into its JSON array.
enum ElementJson<'a> {
    /// Integers (their digits) and floats ([`barge_core::json::push_float`]): written as they are.
    Raw(Put<'a>),
    Bool(&'a arrow_array::BooleanArray),
    /// Binary: a hex string.
    Hex(barge_core::arrays::Get<'a, &'a [u8]>),
    /// Everything else (decimals kept exact, text, dates, times): the value's text as a string.
    Text(Put<'a>),
}

/// The writer of a list column: a JSON array per row (MySQL has no arrays; see
/// [`crate::types::column_type_for_arrow`]).
fn put_list<'a>(list: &'a arrow_array::ListArray) -> Option<Put<'a>> {
    let values = list.values().as_ref();
    let element = if let Some(get) = barge_core::arrays::bytes(values) {
        ElementJson::Hex(get)
    } else {
        match values.data_type() {
            t if t.is_integer() => ElementJson::Raw(put(values)?),
            DataType::Float32 => ElementJson::Raw(json_floats::<Float32Type>(values)),
            DataType::Float64 => ElementJson::Raw(json_floats::<Float64Type>(values)),
            DataType::Boolean => ElementJson::Bool(values.as_boolean()),
            DataType::List(_) | DataType::LargeList(_) => return None,
            _ => ElementJson::Text(put(values)?),
        }
    };
    let offsets = list.value_offsets();
    Some(Box::new(move |row, out: &mut String| {
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        out.push('[');
        let mut scratch = String::new();
        for i in start..end {
            if i > start {
                out.push_str(", ");
            }
            if values.is_null(i) {
                out.push_str("null");
                continue;
            }
            match &element {
                ElementJson::Raw(put) => put(i, out)?,
                ElementJson::Bool(b) => out.push_str(if b.value(i) { "true" } else { "false" }),
                ElementJson::Hex(get) => barge_core::json::push_hex(get(i), out),
                ElementJson::Text(put) => {
                    scratch.clear();
                    put(i, &mut scratch)?;
                    barge_core::json::push_string(&scratch, out);
                }
            }
        }
        out.push(']');
        Ok(())
    }))
}

/// The writer of a float column's values in a JSON array ([`barge_core::json::push_float`]).
fn json_floats<'a, T: ArrowPrimitiveType>(values: &'a dyn Array) -> Put<'a>
where
    T::Native: serde::Serialize + Into<f64>,
{
    let p = values.as_primitive::<T>();
    Box::new(move |i, out: &mut String| {
        barge_core::json::push_float(p.value(i), out);
        Ok(())
    })
}

/// Writes one non-null value as LOAD DATA text (before escaping) into `out`.
type Put<'a> = Box<dyn Fn(usize, &mut String) -> Result<(), String> + 'a>;

macro_rules! display {
    ($a:expr, $t:ty) => {{
        let p = $a.as_primitive::<$t>();
        // Straight into the row buffer: no String per value.
        Box::new(move |i, out: &mut String| {
            let _ = write!(out, "{}", p.value(i));
            Ok(())
        })
    }};
}

fn micros_of(value: i64, unit: &TimeUnit) -> Result<i64, String> {
    match unit {
        TimeUnit::Second => Ok(value * 1_000_000),
        TimeUnit::Millisecond => Ok(value * 1_000),
        TimeUnit::Microsecond => Ok(value),
        TimeUnit::Nanosecond if value % 1_000 == 0 => Ok(value / 1_000),
        TimeUnit::Nanosecond => Err("sub-microsecond precision cannot be stored in MySQL".into()),
    }
}

/// `[-]H:MM:SS[.f]` with hours beyond 24, as MySQL TIME accepts.
fn push_mysql_time(micros: i64, out: &mut String) {
    if micros < 0 {
        out.push('-');
    }
    let abs = micros.unsigned_abs();
    let secs = abs / 1_000_000;
    let _ = write!(out, "{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let frac = abs % 1_000_000;
    if frac != 0 {
        let _ = write!(out, ".{frac:06}");
    }
}

/// A finite float in its shortest round-trip form; MySQL has no NaN or infinities.
fn push_float(x: impl std::fmt::Display + Into<f64> + Copy, out: &mut String) -> Result<(), String> {
    if !x.into().is_finite() {
        return Err(format!("MySQL cannot store {x}"));
    }
    let _ = write!(out, "{x}");
    Ok(())
}

/// The text writer for an Arrow column, or `None` when MySQL has no column for it.
fn put<'a>(a: &'a dyn Array) -> Option<Put<'a>> {
    Some(match a.data_type() {
        DataType::Boolean => {
            let b = a.as_boolean();
            Box::new(move |i, out: &mut String| {
                out.push(if b.value(i) { '1' } else { '0' });
                Ok(())
            })
        }
        DataType::Int8 => display!(a, Int8Type),
        DataType::Int16 => display!(a, Int16Type),
        DataType::Int32 => display!(a, Int32Type),
        DataType::Int64 => display!(a, Int64Type),
        DataType::UInt8 => display!(a, UInt8Type),
        DataType::UInt16 => display!(a, UInt16Type),
        DataType::UInt32 => display!(a, UInt32Type),
        DataType::UInt64 => display!(a, UInt64Type),
        DataType::Float32 => {
            let p = a.as_primitive::<Float32Type>();
            // f32's own shortest form: widening to f64 first would print 0.1f32 as 0.10000000149…
            // Except next to f32::MAX, whose shortest form reads as a double above FLOAT's range
            // (3.4028235e38 > 3.402823466e38): its exact double is in range and reads back as it.
            Box::new(move |i, out: &mut String| {
                let v = p.value(i);
                if v.is_finite() && v.abs() > 3.4028e38 { push_float(f64::from(v), out) } else { push_float(v, out) }
            })
        }
        DataType::Float64 => {
            let p = a.as_primitive::<Float64Type>();
            Box::new(move |i, out: &mut String| push_float(p.value(i), out))
        }
        DataType::Decimal128(_, s) => {
            let (p, s) = (a.as_primitive::<Decimal128Type>(), *s);
            Box::new(move |i, out: &mut String| {
                text::format_decimal(p.value(i), s, out);
                Ok(())
            })
        }
        DataType::Utf8 => {
            let s = a.as_string::<i32>();
            Box::new(move |i, out: &mut String| {
                out.push_str(s.value(i));
                Ok(())
            })
        }
        DataType::LargeUtf8 => {
            let s = a.as_string::<i64>();
            Box::new(move |i, out: &mut String| {
                out.push_str(s.value(i));
                Ok(())
            })
        }
        DataType::Date32 => {
            let p = a.as_primitive::<Date32Type>();
            Box::new(move |i, out: &mut String| {
                text::format_date(p.value(i), out);
                Ok(())
            })
        }
        DataType::Timestamp(unit, _) => {
            let unit = *unit;
            let get: Box<dyn Fn(usize) -> i64 + 'a> = match unit {
                TimeUnit::Second => {
                    let p = a.as_primitive::<TimestampSecondType>();
                    Box::new(move |i| p.value(i))
                }
                TimeUnit::Millisecond => {
                    let p = a.as_primitive::<TimestampMillisecondType>();
                    Box::new(move |i| p.value(i))
                }
                TimeUnit::Microsecond => {
                    let p = a.as_primitive::<TimestampMicrosecondType>();
                    Box::new(move |i| p.value(i))
                }
                TimeUnit::Nanosecond => {
                    let p = a.as_primitive::<TimestampNanosecondType>();
                    Box::new(move |i| p.value(i))
                }
            };
            // Zoned values are UTC already; MySQL DATETIME takes them without an offset.
            Box::new(move |i, out: &mut String| {
                text::format_datetime(micros_of(get(i), &unit)?, false, out);
                Ok(())
            })
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let p = a.as_primitive::<Time64MicrosecondType>();
            Box::new(move |i, out: &mut String| {
                push_mysql_time(p.value(i), out);
                Ok(())
            })
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let p = a.as_primitive::<IntervalMonthDayNanoType>();
            Box::new(move |i, out: &mut String| {
                let v = p.value(i);
                if v.months != 0 || v.nanoseconds % 1_000 != 0 {
                    return Err("MySQL TIME holds no months or sub-microseconds".into());
                }
                push_mysql_time(i64::from(v.days) * MICROS_PER_DAY + v.nanoseconds / 1_000, out);
                Ok(())
            })
        }
        DataType::List(_) => return put_list(a.as_list::<i32>()),
        _ => return None,
    })
}

/// Whether MySQL can take this Arrow type (as text or bytes).
pub fn can_encode(data_type: &DataType) -> bool {
    let empty = arrow_array::new_empty_array(data_type);
    barge_core::arrays::bytes(empty.as_ref()).is_some() || put(empty.as_ref()).is_some()
}

/// Appends bytes with LOAD DATA's escapes (`ESCAPED BY '\\'`): tab, newline, backslash, NUL.
fn push_escaped(mut bytes: &[u8], out: &mut Vec<u8>) {
    // Runs without a byte to escape are copied whole.
    while let Some(at) = bytes.iter().position(|b| matches!(b, b'\t' | b'\n' | b'\\' | 0)) {
        out.extend_from_slice(&bytes[..at]);
        out.extend_from_slice(match bytes[at] {
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\\' => b"\\\\",
            _ => b"\\0",
        });
        bytes = &bytes[at + 1..];
    }
    out.extend_from_slice(bytes);
}

/// A batch as LOAD DATA input: one line per row, tab-separated, `\N` for NULL.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, (usize, String)> {
    enum Column<'a> {
        Text(Put<'a>),
        Bytes(Box<dyn Fn(usize) -> &'a [u8] + 'a>),
    }
    let columns: Vec<(&dyn Array, Column<'_>)> = batch
        .columns()
        .iter()
        .enumerate()
        .map(|(c, array)| {
            let a = array.as_ref();
            let column = match barge_core::arrays::bytes(a) {
                Some(get) => Column::Bytes(get),
                None => {
                    Column::Text(put(a).ok_or_else(|| (c, format!("MySQL has no column for Arrow {}", a.data_type())))?)
                }
            };
            Ok((a, column))
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() + batch.num_rows() * columns.len() * 2);
    let mut scratch = String::new();
    for row in 0..batch.num_rows() {
        for (c, (array, column)) in columns.iter().enumerate() {
            if c > 0 {
                out.push(b'\t');
            }
            if array.is_null(row) {
                out.extend_from_slice(b"\\N");
                continue;
            }
            match column {
                Column::Bytes(get) => push_escaped(get(row), &mut out),
                Column::Text(put) => {
                    scratch.clear();
                    put(row, &mut scratch).map_err(|reason| (c, reason))?;
                    push_escaped(scratch.as_bytes(), &mut out);
                }
            }
        }
        out.push(b'\n');
    }
    Ok(out)
}

/// Splits LOAD DATA input back into rows of fields (`None` for `\N`), unescaped: the INSERT
/// fallback for servers that refuse LOCAL INFILE reuses the same encoding.
pub fn decode_lines(data: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = Vec::new();
    let mut null = false;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\\' if i + 1 < data.len() => {
                match data[i + 1] {
                    b't' => field.push(b'\t'),
                    b'n' => field.push(b'\n'),
                    b'0' => field.push(0),
                    b'N' if field.is_empty() => null = true,
                    other => field.push(other),
                }
                i += 2;
                continue;
            }
            b'\t' | b'\n' => {
                row.push(if null { None } else { Some(std::mem::take(&mut field)) });
                field.clear();
                null = false;
                if data[i] == b'\n' {
                    rows.push(std::mem::take(&mut row));
                }
            }
            other => field.push(other),
        }
        i += 1;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BinaryArray, Int64Array, StringArray};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn load_data_text_round_trips(texts in prop::collection::vec(prop::option::of(".*"), 1..20),
                                      blobs in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..20)), 1..20)) {
            let n = texts.len().min(blobs.len());
            let ids: Vec<i64> = (0..n as i64).collect();
            let batch = RecordBatch::try_from_iter([
                ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
                ("t", Arc::new(StringArray::from(texts[..n].to_vec())) as ArrayRef),
                ("b", Arc::new(BinaryArray::from(blobs[..n].iter().map(|b| b.as_deref()).collect::<Vec<_>>())) as ArrayRef),
            ]).unwrap();
            let rows = decode_lines(&encode_batch(&batch).unwrap());
            prop_assert_eq!(rows.len(), n);
            for (i, row) in rows.iter().enumerate() {
                let id = ids[i].to_string();
                prop_assert_eq!(row[0].as_deref(), Some(id.as_bytes()));
                prop_assert_eq!(row[1].as_deref(), texts[i].as_deref().map(str::as_bytes));
                prop_assert_eq!(row[2].as_deref(), blobs[i].as_deref());
            }
        }
    }

    /// A list column through LOAD DATA text and back through the text decoder.
    fn list_round_trip(list: ListArray) {
        let element = match list.data_type() {
            DataType::List(f) => f.data_type().clone(),
            _ => unreachable!(),
        };
        let created = crate::types::column_type_for_arrow(list.data_type(), false).unwrap();
        let column = ColumnKind::resolve("json", &created, true).unwrap();
        assert!(column.array, "{created}");
        assert_eq!(column.kind.arrow(), element, "{created}");
        let batch = RecordBatch::try_from_iter([("l", Arc::new(list) as ArrayRef)]).unwrap();
        let rows = decode_lines(&encode_batch(&batch).unwrap());
        let mut decoder = Decoder::column(column, rows.len());
        for row in &rows {
            decoder.append(row[0].as_deref(), false).unwrap();
        }
        assert_eq!(decoder.finish().as_ref(), batch.column(0).as_ref());
    }

    #[test]
    fn lists_travel_as_json_arrays_and_come_back_as_lists() {
        use arrow_array::types::{Float64Type, Int32Type};
        list_round_trip(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None, Some(-3)]),
            Some(vec![]),
            None,
            Some(vec![Some(i32::MAX)]),
        ]));
        list_round_trip(ListArray::from_iter_primitive::<Float64Type, _, _>(vec![Some(vec![
            Some(0.1),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(-0.0),
            Some(1e300),
        ])]));
        let texts = StringArray::from(vec![Some("a \"quoted\"\ttab\\"), None, Some("🚀 ünï"), Some("")]);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![0, 2, 4]));
        let field = Arc::new(arrow_schema::Field::new("item", DataType::Utf8, true));
        list_round_trip(ListArray::new(field, offsets.clone(), Arc::new(texts), None));
        let blobs = BinaryArray::from(vec![Some(&b"\x00\xff"[..]), Some(&b""[..]), None, Some(&b"\t\n"[..])]);
        let field = Arc::new(arrow_schema::Field::new("item", DataType::Binary, true));
        list_round_trip(ListArray::new(field, offsets.clone(), Arc::new(blobs), None));
        let decimals = arrow_array::Decimal128Array::from(vec![Some(1250), Some(-1), None, Some(99_999_999_999_999)])
            .with_precision_and_scale(16, 2)
            .unwrap();
        let field = Arc::new(arrow_schema::Field::new("item", DataType::Decimal128(16, 2), true));
        list_round_trip(ListArray::new(field, offsets.clone(), Arc::new(decimals), None));
        let flags = arrow_array::BooleanArray::from(vec![Some(true), None, Some(false), Some(true)]);
        let field = Arc::new(arrow_schema::Field::new("item", DataType::Boolean, true));
        list_round_trip(ListArray::new(field, offsets.clone(), Arc::new(flags), None));
        let times =
            arrow_array::TimestampMicrosecondArray::from(vec![Some(0), Some(-1), None, Some(1_700_000_000_123_456)]);
        let field = Arc::new(arrow_schema::Field::new("item", times.data_type().clone(), true));
        list_round_trip(ListArray::new(field, offsets, Arc::new(times), None));
    }

    #[test]
    fn a_json_array_element_that_is_no_scalar_is_refused() {
        let mut decoder = Decoder::column(ColumnKind { kind: Kind::Int(32), array: true }, 1);
        let err = decoder.append(Some(b"[1, [2]]"), false).unwrap_err();
        assert!(err.contains("not a scalar"), "{err}");
        let err = decoder.append(Some(b"{\"a\": 1}"), false).unwrap_err();
        assert!(err.contains("not a JSON array"), "{err}");
    }

    #[test]
    fn char_values_are_padded_back_to_their_width() {
        let mut decoder = Decoder::new(Kind::Char(5), 4);
        for value in [Some(&b"ab"[..]), Some("é🚀".as_bytes()), Some(b"abcde"), None] {
            decoder.append(value, false).unwrap();
        }
        let array = decoder.finish();
        let expected: ArrayRef = Arc::new(StringArray::from(vec![Some("ab   "), Some("é🚀   "), Some("abcde"), None]));
        assert_eq!(array.as_ref(), expected.as_ref());
    }

    #[test]
    fn mysql_times_keep_sign_and_hours_beyond_a_day() {
        assert_eq!(parse_mysql_time("-838:59:59.000000"), Some(-(838 * 3600 + 59 * 60 + 59) * 1_000_000));
        assert_eq!(parse_mysql_time("25:00:00.5"), Some(25 * 3_600_000_000 + 500_000));
        let mut out = String::new();
        push_mysql_time(-(838 * 3600 + 59 * 60 + 59) * 1_000_000, &mut out);
        assert_eq!(out, "-838:59:59");
    }
}
