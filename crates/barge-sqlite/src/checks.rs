//! The CHECK constraints of a table, read from its `CREATE TABLE` statement (SQLite's catalog
//! keeps no other record of them).

use barge_core::checks::{pieces, unquoted};

/// One CHECK of a `CREATE TABLE` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The column whose definition holds it (a column constraint), else `None`.
    pub column: Option<String>,
    /// Its `CONSTRAINT name`, if it has one.
    pub name: Option<String>,
    /// The condition in portable SQL: names in backticks or brackets are put in double quotes.
    pub condition: String,
}

/// Each byte of `sql`: whether it lies inside quotes.
fn quoted_bytes(sql: &str) -> Vec<bool> {
    let mut mask = Vec::with_capacity(sql.len());
    for (quoted, piece) in pieces(sql, true) {
        mask.extend(std::iter::repeat_n(quoted, piece.len()));
    }
    mask
}

/// The byte ranges of `sql` between top-level commas of its first parenthesised list (a
/// `CREATE TABLE`'s column and constraint definitions).
fn definitions(sql: &str, mask: &[bool]) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if mask[i] {
            continue;
        }
        match b {
            b'(' => {
                depth += 1;
                if depth == 1 {
                    start = i + 1;
                }
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    parts.push((start, i));
                    return parts;
                }
            }
            b',' if depth == 1 => {
                parts.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts
}

/// Where the column list of `create` (a `CREATE TABLE` statement) starts: its first `(` outside
/// quotes.
pub fn columns_start(create: &str) -> Option<usize> {
    let mask = quoted_bytes(create);
    create.bytes().enumerate().position(|(i, b)| b == b'(' && !mask[i])
}

/// The first word or quoted name of `text` and the rest of it.
fn first_name(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    match pieces(text, true).first()? {
        (true, piece) if !piece.starts_with('\'') => Some((unquoted(piece), &text[piece.len()..])),
        (false, piece) => {
            let word: String = piece.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            (!word.is_empty()).then(|| (word.clone(), &text[word.len()..]))
        }
        _ => None,
    }
}

/// `condition` with names in backticks or brackets put in double quotes.
fn portable(condition: &str) -> String {
    pieces(condition, true)
        .into_iter()
        .map(|(quoted, piece)| match (quoted, piece.as_bytes()[0]) {
            (true, b'`' | b'[') => format!("\"{}\"", unquoted(piece).replace('"', "\"\"")),
            _ => piece.to_string(),
        })
        .collect()
}

/// The keys and the WHERE condition of `create` (a `CREATE INDEX` statement), in portable SQL.
pub fn index_parts(create: &str) -> Option<(Vec<String>, Option<String>)> {
    let mask = quoted_bytes(create);
    let parts = definitions(create, &mask);
    let &(_, end) = parts.last()?;
    let keys = parts.iter().map(|&(s, e)| portable(create[s..e].trim())).collect();
    let rest = create[end + 1..].trim();
    let predicate = rest
        .get(..5)
        .filter(|w| w.eq_ignore_ascii_case("where"))
        .map(|_| portable(rest[5..].trim().trim_end_matches(';').trim()));
    Some((keys, predicate))
}

/// The CHECK constraints of `create` (a `CREATE TABLE` statement as `sqlite_schema` keeps it).
pub fn table_checks(create: &str) -> Vec<Check> {
    let mask = quoted_bytes(create);
    let mut checks = Vec::new();
    for (start, end) in definitions(create, &mask) {
        let part = &create[start..end];
        let column = match first_name(part) {
            Some((word, _))
                if ["CONSTRAINT", "CHECK", "PRIMARY", "UNIQUE", "FOREIGN"]
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&word)) =>
            {
                None
            }
            Some((name, _)) => Some(name),
            None => continue,
        };
        let upper = part.to_ascii_uppercase();
        let mut from = 0;
        while let Some(at) = upper[from..].find("CHECK").map(|i| from + i) {
            from = at + 5;
            let boundary = |i: Option<&u8>| i.is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'));
            if mask[start + at]
                || !boundary(at.checked_sub(1).and_then(|i| part.as_bytes().get(i)))
                || !boundary(part.as_bytes().get(at + 5))
            {
                continue;
            }
            let open = at + 5 + (part[at + 5..].len() - part[at + 5..].trim_start().len());
            if part.as_bytes().get(open) != Some(&b'(') {
                continue;
            }
            let mut depth = 0;
            let Some(close) = (open..part.len()).find(|&i| {
                if !mask[start + i] {
                    match part.as_bytes()[i] {
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                }
                depth == 0
            }) else {
                break;
            };
            // `CONSTRAINT name` right before CHECK names it.
            let before: Vec<&str> = part[..at].split_whitespace().collect();
            let name = match before.as_slice() {
                [.., keyword, name] if keyword.eq_ignore_ascii_case("CONSTRAINT") => {
                    Some(first_name(name).map_or(name.to_string(), |(n, _)| n))
                }
                _ => None,
            };
            checks.push(Check { column: column.clone(), name, condition: portable(part[open + 1..close].trim()) });
            from = close;
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_and_table_checks_are_found_with_their_names() {
        let create = r#"CREATE TABLE "t" (
            "id" INTEGER PRIMARY KEY,
            "mood" TEXT NOT NULL CHECK ("mood" IN ('sad', 'it''s, ok (really)', 'happy')),
            [price] NUMERIC CONSTRAINT positive CHECK ([price] > 0) DEFAULT 1,
            `note` TEXT DEFAULT 'CHECK (x)',
            checked INTEGER,
            CONSTRAINT "order" CHECK (price < 100 AND (checked IS NULL OR checked IN (0, 1))),
            CHECK(length(`note`) < 10)
        )"#;
        let checks = table_checks(create);
        assert_eq!(
            checks,
            [
                Check {
                    column: Some("mood".into()),
                    name: None,
                    condition: r#""mood" IN ('sad', 'it''s, ok (really)', 'happy')"#.into()
                },
                Check {
                    column: Some("price".into()),
                    name: Some("positive".into()),
                    condition: r#""price" > 0"#.into()
                },
                Check {
                    column: None,
                    name: Some("order".into()),
                    condition: "price < 100 AND (checked IS NULL OR checked IN (0, 1))".into()
                },
                Check { column: None, name: None, condition: r#"length("note") < 10"#.into() },
            ]
        );
        assert!(table_checks("CREATE TABLE t (a, b)").is_empty());
    }

    #[test]
    fn index_keys_and_predicates_are_read() {
        assert_eq!(
            index_parts(
                r#"CREATE UNIQUE INDEX "i (x)" ON [t] (lower(`email`), "b") WHERE deleted IS NULL AND b > 'x)'"#
            ),
            Some((
                vec![r#"lower("email")"#.to_string(), r#""b""#.to_string()],
                Some("deleted IS NULL AND b > 'x)'".into())
            ))
        );
        assert_eq!(index_parts("CREATE INDEX i ON t (a + b)"), Some((vec!["a + b".to_string()], None)));
    }
}
