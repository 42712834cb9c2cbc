//! Small readers over Arrow arrays that several crates need, chosen once per column.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_schema::DataType;

/// Reads one value of a column, its conversion chosen once per batch.
pub type Get<'a, T> = Box<dyn Fn(usize) -> T + Send + Sync + 'a>;

/// The values of any Arrow integer column, widened to i128; `None` for other types.
pub fn integers(array: &dyn Array) -> Option<Get<'_, i128>> {
    macro_rules! get {
        ($t:ty) => {{
            let p = array.as_primitive::<$t>();
            Some(Box::new(move |i| i128::from(p.value(i))))
        }};
    }
    match array.data_type() {
        DataType::Int8 => get!(Int8Type),
        DataType::Int16 => get!(Int16Type),
        DataType::Int32 => get!(Int32Type),
        DataType::Int64 => get!(Int64Type),
        DataType::UInt8 => get!(UInt8Type),
        DataType::UInt16 => get!(UInt16Type),
        DataType::UInt32 => get!(UInt32Type),
        DataType::UInt64 => get!(UInt64Type),
        _ => None,
    }
}

/// The values of any Arrow string column (Utf8, LargeUtf8, Utf8View); `None` for other types.
pub fn strings(array: &dyn Array) -> Option<Get<'_, &str>> {
    match array.data_type() {
        DataType::Utf8 => {
            let s = array.as_string::<i32>();
            Some(Box::new(move |i| s.value(i)))
        }
        DataType::LargeUtf8 => {
            let s = array.as_string::<i64>();
            Some(Box::new(move |i| s.value(i)))
        }
        DataType::Utf8View => {
            let s = array.as_string_view();
            Some(Box::new(move |i| s.value(i)))
        }
        _ => None,
    }
}

/// The values of any Arrow binary column (Binary, LargeBinary, BinaryView, FixedSizeBinary);
/// `None` for other types.
pub fn bytes(array: &dyn Array) -> Option<Get<'_, &[u8]>> {
    match array.data_type() {
        DataType::Binary => {
            let b = array.as_binary::<i32>();
            Some(Box::new(move |i| b.value(i)))
        }
        DataType::LargeBinary => {
            let b = array.as_binary::<i64>();
            Some(Box::new(move |i| b.value(i)))
        }
        DataType::BinaryView => {
            let b = array.as_binary_view();
            Some(Box::new(move |i| b.value(i)))
        }
        DataType::FixedSizeBinary(_) => {
            let b = array.as_fixed_size_binary();
            Some(Box::new(move |i| b.value(i)))
        }
        _ => None,
    }
}
