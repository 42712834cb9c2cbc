//! Synthetic tables ([`barge_core::synthetic`]) as SQL: one `CREATE TABLE` column list and one
//! `SELECT` list over the row number `n`, spelled by each engine's [`Dialect`].

use barge_core::synthetic::{Column, Kind};

/// How an engine spells the parts of a synthetic table: column types, text concatenation, decimal
/// and timestamp expressions, identifier quoting. The expressions themselves are shared, so every
/// engine generates the same values.
pub struct Dialect {
    /// Column types: key, integer, text NOT NULL, text NULL, decimal, timestamp, boolean.
    pub types: [&'static str; 7],
    /// `prefix` (a literal) followed by the value of an integer expression.
    pub concat: fn(&str, &str) -> String,
    /// A decimal(12,2) from an integer expression counting hundredths.
    pub hundredths: fn(&str) -> String,
    /// 2024-01-01 00:00:00 plus an integer expression of seconds.
    pub timestamp: fn(&str) -> String,
    pub quote: fn(&str) -> String,
}

impl Dialect {
    /// `name type` of each column.
    pub fn column_defs(&self, columns: &[Column]) -> Vec<String> {
        columns
            .iter()
            .map(|c| {
                let t = match c.kind {
                    Kind::Key => self.types[0],
                    Kind::Int { .. } => self.types[1],
                    Kind::Text { null_every: 0, .. } => self.types[2],
                    Kind::Text { .. } => self.types[3],
                    Kind::Decimal { .. } => self.types[4],
                    Kind::Timestamp { .. } => self.types[5],
                    Kind::Bool { .. } => self.types[6],
                };
                format!("{} {t}", (self.quote)(&c.name))
            })
            .collect()
    }

    /// The value expression of each column over the row number `n`.
    pub fn values(&self, columns: &[Column]) -> Vec<String> {
        columns
            .iter()
            .map(|c| match c.kind {
                Kind::Key => "n".into(),
                Kind::Int { mul, modulo } => format!("(n * {mul}) % {modulo}"),
                Kind::Text { prefix, modulo, null_every } => {
                    let text = (self.concat)(prefix, &format!("n % {modulo}"));
                    if null_every > 0 {
                        format!("CASE WHEN n % {null_every} = 0 THEN NULL ELSE {text} END")
                    } else {
                        text
                    }
                }
                Kind::Decimal { modulo } => (self.hundredths)(&format!("(n * 37) % {modulo}")),
                Kind::Timestamp { step } => (self.timestamp)(&format!("(n * {step}) % 31536000")),
                Kind::Bool { modulo } => format!("n % {modulo} <> 0"),
            })
            .collect()
    }
}
