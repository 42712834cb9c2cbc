//! Arrow → binary COPY. One value writer per column, chosen once per batch from the Arrow type and
//! the target column's type; runs on the CPU pool.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, IntervalUnit, TimeUnit};

use barge_core::arrays::{Get, bytes, strings};

use crate::types::{Codec, PgColumnType};
use crate::wire::{self, COPY_HEADER, COPY_TRAILER, PG_EPOCH_DAYS, PG_EPOCH_MICROS};

/// Writes one non-null value's body (without its length prefix).
type Put<'a> = Box<dyn Fn(usize, &mut Vec<u8>) -> Result<(), String> + 'a>;

/// A target column as the encoder needs it.
#[derive(Clone, Debug)]
pub struct TargetType {
    pub column: PgColumnType,
    /// Element type OID for arrays (array_recv checks it).
    pub element_oid: u32,
}

fn decimals<'a>(a: &'a dyn Array) -> Option<(Get<'a, i128>, i8)> {
    match a.data_type() {
        DataType::Decimal128(_, s) => {
            let p = a.as_primitive::<Decimal128Type>();
            Some((Box::new(move |i| p.value(i)), *s))
        }
        DataType::Decimal64(_, s) => {
            let p = a.as_primitive::<Decimal64Type>();
            Some((Box::new(move |i| i128::from(p.value(i))), *s))
        }
        DataType::Decimal32(_, s) => {
            let p = a.as_primitive::<Decimal32Type>();
            Some((Box::new(move |i| i128::from(p.value(i))), *s))
        }
        _ => None,
    }
}

/// Microseconds of a temporal value, refusing sub-microsecond precision rather than rounding.
fn micros_of(value: i64, unit: TimeUnit) -> Result<i64, String> {
    match unit {
        TimeUnit::Second => value.checked_mul(1_000_000).ok_or_else(|| "out of range".into()),
        TimeUnit::Millisecond => value.checked_mul(1_000).ok_or_else(|| "out of range".into()),
        TimeUnit::Microsecond => Ok(value),
        TimeUnit::Nanosecond if value % 1_000 == 0 => Ok(value / 1_000),
        TimeUnit::Nanosecond => Err("sub-microsecond precision cannot be stored in PostgreSQL".into()),
    }
}

fn temporal<'a>(a: &'a dyn Array) -> Option<Get<'a, Result<i64, String>>> {
    macro_rules! get {
        ($t:ty, $unit:expr) => {{
            let p = a.as_primitive::<$t>();
            Some(Box::new(move |i| micros_of(i64::from(p.value(i)), $unit)))
        }};
    }
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => get!(TimestampSecondType, TimeUnit::Second),
        DataType::Timestamp(TimeUnit::Millisecond, _) => get!(TimestampMillisecondType, TimeUnit::Millisecond),
        DataType::Timestamp(TimeUnit::Microsecond, _) => get!(TimestampMicrosecondType, TimeUnit::Microsecond),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => get!(TimestampNanosecondType, TimeUnit::Nanosecond),
        DataType::Time32(TimeUnit::Second) => get!(Time32SecondType, TimeUnit::Second),
        DataType::Time32(_) => get!(Time32MillisecondType, TimeUnit::Millisecond),
        DataType::Time64(TimeUnit::Nanosecond) => get!(Time64NanosecondType, TimeUnit::Nanosecond),
        DataType::Time64(_) => get!(Time64MicrosecondType, TimeUnit::Microsecond),
        _ => None,
    }
}

fn int_writer<'a>(get: Get<'a, i128>, width: usize, what: &'static str) -> Put<'a> {
    Box::new(move |i, out| {
        let v = get(i);
        match width {
            2 => {
                out.extend_from_slice(&i16::try_from(v).map_err(|_| format!("{v} does not fit {what}"))?.to_be_bytes())
            }
            4 if what == "oid" => {
                out.extend_from_slice(&u32::try_from(v).map_err(|_| format!("{v} does not fit {what}"))?.to_be_bytes())
            }
            4 => {
                out.extend_from_slice(&i32::try_from(v).map_err(|_| format!("{v} does not fit {what}"))?.to_be_bytes())
            }
            _ => {
                out.extend_from_slice(&i64::try_from(v).map_err(|_| format!("{v} does not fit {what}"))?.to_be_bytes())
            }
        }
        Ok(())
    })
}

/// The value writer for `array` into a column of `target`; `None` when the pair has no encoding.
pub fn value_writer<'a>(array: &'a dyn Array, target: &TargetType) -> Option<Put<'a>> {
    let column = &target.column;
    if column.array {
        let list = array.as_list_opt::<i32>()?;
        let element = TargetType { column: PgColumnType { array: false, ..column.clone() }, element_oid: 0 };
        let values = list.values();
        let put_item = value_writer(values.as_ref(), &element)?;
        let offsets = list.value_offsets();
        let oid = target.element_oid;
        return Some(Box::new(move |i, out| {
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            let has_null = (start..end).any(|j| values.is_null(j));
            if start == end {
                out.extend_from_slice(&0i32.to_be_bytes()); // no dimensions
                out.extend_from_slice(&0i32.to_be_bytes());
                out.extend_from_slice(&oid.to_be_bytes());
                return Ok(());
            }
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&i32::from(has_null).to_be_bytes());
            out.extend_from_slice(&oid.to_be_bytes());
            out.extend_from_slice(&i32::try_from(end - start).map_err(|_| "array too long")?.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            for j in start..end {
                put_field(values.as_ref(), &put_item, j, out)?;
            }
            Ok(())
        }));
    }
    Some(match column.codec {
        Codec::Bool => {
            let b = array.as_boolean_opt()?;
            Box::new(move |i, out| {
                out.push(u8::from(b.value(i)));
                Ok(())
            })
        }
        Codec::Int2 => int_writer(barge_core::arrays::integers(array)?, 2, "smallint"),
        Codec::Int4 => int_writer(barge_core::arrays::integers(array)?, 4, "integer"),
        Codec::Int8 => int_writer(barge_core::arrays::integers(array)?, 8, "bigint"),
        Codec::Oid => int_writer(barge_core::arrays::integers(array)?, 4, "oid"),
        Codec::Float4 => match array.data_type() {
            DataType::Float32 => {
                let p = array.as_primitive::<Float32Type>();
                Box::new(move |i, out| {
                    out.extend_from_slice(&p.value(i).to_be_bytes());
                    Ok(())
                })
            }
            _ => return None,
        },
        Codec::Float8 => match array.data_type() {
            DataType::Float64 => {
                let p = array.as_primitive::<Float64Type>();
                Box::new(move |i, out| {
                    out.extend_from_slice(&p.value(i).to_be_bytes());
                    Ok(())
                })
            }
            DataType::Float32 => {
                let p = array.as_primitive::<Float32Type>();
                Box::new(move |i, out| {
                    out.extend_from_slice(&f64::from(p.value(i)).to_be_bytes());
                    Ok(())
                })
            }
            _ => {
                let get = barge_core::arrays::integers(array)?;
                Box::new(move |i, out| {
                    out.extend_from_slice(&(get(i) as f64).to_be_bytes());
                    Ok(())
                })
            }
        },
        Codec::Numeric => {
            if let Some((get, scale)) = decimals(array) {
                Box::new(move |i, out| {
                    wire::put_numeric_i128(get(i), scale, out);
                    Ok(())
                })
            } else if let Some(get) = barge_core::arrays::integers(array) {
                Box::new(move |i, out| {
                    wire::put_numeric_i128(get(i), 0, out);
                    Ok(())
                })
            } else {
                let get = strings(array)?;
                Box::new(move |i, out| wire::put_numeric_text(get(i), out))
            }
        }
        Codec::Money => {
            let (get, scale) = decimals(array)?;
            Box::new(move |i, out| {
                let cents = match scale {
                    2 => Some(get(i)),
                    s if s < 2 => get(i).checked_mul(10i128.pow((2 - s) as u32)),
                    s => {
                        let divisor = 10i128.pow((s - 2) as u32);
                        (get(i) % divisor == 0).then(|| get(i) / divisor)
                    }
                };
                let cents = cents.and_then(|c| i64::try_from(c).ok()).ok_or("value does not fit money exactly")?;
                out.extend_from_slice(&cents.to_be_bytes());
                Ok(())
            })
        }
        Codec::Text | Codec::Char | Codec::Json | Codec::AsText => {
            let get = strings(array)?;
            Box::new(move |i, out| {
                out.extend_from_slice(get(i).as_bytes());
                Ok(())
            })
        }
        Codec::Jsonb => {
            let get = strings(array)?;
            Box::new(move |i, out| {
                out.push(1);
                out.extend_from_slice(get(i).as_bytes());
                Ok(())
            })
        }
        Codec::Bytea => {
            let get = bytes(array)?;
            Box::new(move |i, out| {
                out.extend_from_slice(get(i));
                Ok(())
            })
        }
        Codec::Geometry => {
            let get = bytes(array)?;
            Box::new(move |i, out| {
                out.extend_from_slice(&crate::geometry::to_ewkb(get(i))?);
                Ok(())
            })
        }
        Codec::Uuid => {
            if let Some(get) = strings(array) {
                Box::new(move |i, out| {
                    out.extend_from_slice(&wire::uuid_bytes(get(i))?);
                    Ok(())
                })
            } else {
                let get = bytes(array)?;
                Box::new(move |i, out| {
                    let b = get(i);
                    if b.len() != 16 {
                        return Err(format!("{} bytes is not a UUID", b.len()));
                    }
                    out.extend_from_slice(b);
                    Ok(())
                })
            }
        }
        Codec::Date => match array.data_type() {
            DataType::Date32 => {
                let p = array.as_primitive::<Date32Type>();
                Box::new(move |i, out| {
                    out.extend_from_slice(&(p.value(i) - PG_EPOCH_DAYS).to_be_bytes());
                    Ok(())
                })
            }
            DataType::Date64 => {
                let p = array.as_primitive::<Date64Type>();
                Box::new(move |i, out| {
                    let days = i32::try_from(p.value(i).div_euclid(86_400_000)).map_err(|_| "date out of range")?;
                    out.extend_from_slice(&(days - PG_EPOCH_DAYS).to_be_bytes());
                    Ok(())
                })
            }
            _ => return None,
        },
        Codec::Time => {
            if !matches!(array.data_type(), DataType::Time32(_) | DataType::Time64(_)) {
                return None;
            }
            let get = temporal(array)?;
            Box::new(move |i, out| {
                out.extend_from_slice(&get(i)?.to_be_bytes());
                Ok(())
            })
        }
        Codec::Timestamp | Codec::TimestampTz => {
            if !matches!(array.data_type(), DataType::Timestamp(..)) {
                return None;
            }
            let get = temporal(array)?;
            Box::new(move |i, out| {
                let micros = get(i)?.checked_sub(PG_EPOCH_MICROS).ok_or("timestamp out of range")?;
                out.extend_from_slice(&micros.to_be_bytes());
                Ok(())
            })
        }
        Codec::Interval => match array.data_type() {
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                let p = array.as_primitive::<IntervalMonthDayNanoType>();
                Box::new(move |i, out| {
                    let v = p.value(i);
                    if v.nanoseconds % 1_000 != 0 {
                        return Err("sub-microsecond interval cannot be stored in PostgreSQL".into());
                    }
                    out.extend_from_slice(&(v.nanoseconds / 1_000).to_be_bytes());
                    out.extend_from_slice(&v.days.to_be_bytes());
                    out.extend_from_slice(&v.months.to_be_bytes());
                    Ok(())
                })
            }
            _ => return None,
        },
    })
}

/// Writes a field: length and body, or -1 for NULL.
fn put_field(array: &dyn Array, put: &Put<'_>, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if array.is_null(row) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    put(row, out)?;
    let len = i32::try_from(out.len() - at - 4).map_err(|_| "value larger than 2 GiB")?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A whole batch as one binary COPY payload (header, tuples, trailer).
pub fn encode_batch(batch: &RecordBatch, targets: &[TargetType]) -> Result<Vec<u8>, (usize, String)> {
    let columns = batch.columns();
    let writers: Vec<Put<'_>> = columns
        .iter()
        .zip(targets)
        .enumerate()
        .map(|(i, (array, target))| {
            value_writer(array.as_ref(), target)
                .ok_or_else(|| (i, format!("no binary encoding from Arrow {} to this column", array.data_type())))
        })
        .collect::<Result<_, _>>()?;
    let field_count = i16::try_from(columns.len()).map_err(|_| (0, "too many columns".to_string()))?;
    let mut out = Vec::with_capacity(COPY_HEADER.len() + batch.get_array_memory_size() + batch.num_rows() * 8);
    out.extend_from_slice(COPY_HEADER);
    for row in 0..batch.num_rows() {
        out.extend_from_slice(&field_count.to_be_bytes());
        for (i, (array, put)) in columns.iter().zip(&writers).enumerate() {
            put_field(array.as_ref(), put, row, &mut out).map_err(|reason| (i, reason))?;
        }
    }
    out.extend_from_slice(COPY_TRAILER);
    Ok(out)
}
