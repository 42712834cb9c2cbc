//! The one way barge writes values into JSON text: the arrays it stores in engines without an
//! array type (MySQL JSON, SQLite TEXT columns) and the rows of reject files. Numbers JSON has
//! are numbers (floats in their shortest round-trip form); NaN and ±Infinity, which JSON lacks,
//! are the strings [`NAN`], [`INFINITY`] and [`NEG_INFINITY`] (PostgreSQL's spelling, which Rust's
//! float parser and every barge reader take back); binary is a lower-case hex string.

use std::fmt::Write as _;

pub const NAN: &str = "NaN";
pub const INFINITY: &str = "Infinity";
pub const NEG_INFINITY: &str = "-Infinity";

/// The string standing for a float JSON cannot hold as a number.
fn non_finite(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some(NAN)
    } else if x.is_infinite() {
        Some(if x > 0.0 { INFINITY } else { NEG_INFINITY })
    } else {
        None
    }
}

/// Appends a float (`f32` in its own shortest form, not widened).
pub fn push_float<T: serde::Serialize + Into<f64> + Copy>(x: T, out: &mut String) {
    match non_finite(x.into()) {
        Some(word) => {
            out.push('"');
            out.push_str(word);
            out.push('"');
        }
        None => out.push_str(&serde_json::to_string(&x).expect("a finite float serialises")),
    }
}

/// A float as a JSON value.
pub fn float_value(x: f64) -> serde_json::Value {
    match non_finite(x) {
        Some(word) => serde_json::Value::String(word.into()),
        None => serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number),
    }
}

/// Appends a JSON string literal.
pub fn push_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
}

/// Appends binary as a hex string literal.
pub fn push_hex(bytes: &[u8], out: &mut String) {
    out.push('"');
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn non_finite_floats_are_spelled_as_postgresql_does() {
        let mut out = String::new();
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            push_float(x, &mut out);
            out.push(',');
        }
        push_float(0.1f32, &mut out);
        assert_eq!(out, "\"NaN\",\"Infinity\",\"-Infinity\",0.1");
        assert_eq!(float_value(f64::NEG_INFINITY), serde_json::json!("-Infinity"));
        let mut hex = String::new();
        push_hex(&[0, 0xab], &mut hex);
        assert_eq!(hex, "\"00ab\"");
    }

    proptest! {
        #[test]
        fn every_float_reads_back_as_itself(x in any::<f64>()) {
            let mut out = String::new();
            push_float(x, &mut out);
            // Readers take the number's text to Rust's (exact) float parser.
            let back: f64 = out.trim_matches('"').parse().unwrap();
            prop_assert!(back == x || (back.is_nan() && x.is_nan()), "{x} → {out}");
        }
    }
}
