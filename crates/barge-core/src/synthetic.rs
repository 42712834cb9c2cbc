//! Deterministic synthetic tables for trying barge and for benchmarks (`barge bench --generate`).
//! A shape is a list of columns whose values are functions of the row number `n` (1..=rows), so
//! every engine generates the same rows server-side; engines render the expressions (SQL engines
//! through `barge_sql::synthetic::Dialect`).

/// How one column's value follows from the row number `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `n`, the primary key.
    Key,
    /// `(n * mul) % modulo`.
    Int { mul: i64, modulo: i64 },
    /// `prefix` followed by `n % modulo`; NULL when `n % null_every == 0` (0: never).
    Text { prefix: &'static str, modulo: i64, null_every: i64 },
    /// `((n * 37) % modulo) / 100` as decimal(12,2).
    Decimal { modulo: i64 },
    /// 2024-01-01 00:00:00 plus `(n * step) % 31536000` seconds.
    Timestamp { step: i64 },
    /// `n % modulo <> 0`.
    Bool { modulo: i64 },
}

/// One column of a synthetic table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

fn column(name: &str, kind: Kind) -> Column {
    Column { name: name.into(), kind }
}

/// The shapes `--generate` knows.
pub const SHAPES: &[&str] = &["orders", "events", "wide"];

/// The columns of shape `name` (`orders`: the benchmark table; `events`: narrow; `wide`: 50
/// columns of mixed types).
pub fn shape(name: &str) -> Option<Vec<Column>> {
    Some(match name {
        "orders" => vec![
            column("id", Kind::Key),
            column("customer_id", Kind::Int { mul: 7919, modulo: 100_000 }),
            column("email", Kind::Text { prefix: "customer", modulo: 100_000, null_every: 0 }),
            column("name", Kind::Text { prefix: "Name ", modulo: 5000, null_every: 10 }),
            column("amount", Kind::Decimal { modulo: 100_000 }),
            column("status", Kind::Text { prefix: "status-", modulo: 5, null_every: 0 }),
            column("created_at", Kind::Timestamp { step: 1 }),
            column("updated_at", Kind::Timestamp { step: 7 }),
            column("is_active", Kind::Bool { modulo: 4 }),
            column("note", Kind::Text { prefix: "note ", modulo: 1_000_000_000, null_every: 5 }),
        ],
        "events" => vec![
            column("id", Kind::Key),
            column("at", Kind::Timestamp { step: 3 }),
            column("kind", Kind::Text { prefix: "event-", modulo: 12, null_every: 0 }),
            column("value", Kind::Int { mul: 31, modulo: 1000 }),
        ],
        "wide" => {
            let mut columns = vec![column("id", Kind::Key)];
            for i in 1..50 {
                let kind = match i % 5 {
                    0 => Kind::Int { mul: i, modulo: 10_000 + i },
                    1 => Kind::Text { prefix: "w", modulo: 1000 + i, null_every: 7 },
                    2 => Kind::Decimal { modulo: 50_000 + i },
                    3 => Kind::Timestamp { step: i },
                    _ => Kind::Bool { modulo: 2 + i % 3 },
                };
                columns.push(Column { name: format!("c{i:02}"), kind });
            }
            columns
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_has_a_key_first_and_wide_has_fifty_columns() {
        for name in SHAPES {
            let columns = shape(name).unwrap();
            assert_eq!(columns[0].kind, Kind::Key, "{name}");
        }
        assert_eq!(shape("wide").unwrap().len(), 50);
        assert!(shape("nope").is_none());
    }
}
