//! CHECK conditions in portable SQL ([`crate::CheckInfo`]): reading the shapes barge itself writes
//! for enumerations back from them, and the pieces of SQL text engines take conditions apart with.

/// `text` split into its pieces outside quotes (`false`) and its quoted pieces with their quotes
/// (`true`: `'…'` literals, `"…"` and `` `…` `` identifiers, and with `brackets` SQLite's `[…]`
/// ones; a doubled quote stays inside).
pub fn pieces(text: &str, brackets: bool) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        let close = match bytes[i] {
            b'\'' => b'\'',
            b'"' => b'"',
            b'`' => b'`',
            b'[' if brackets => b']',
            _ => {
                i += 1;
                continue;
            }
        };
        if start < i {
            out.push((false, &text[start..i]));
        }
        let mut j = i + 1;
        loop {
            match bytes.get(j) {
                None => break,
                Some(&b) if b == close && close != b']' && bytes.get(j + 1) == Some(&close) => j += 2,
                Some(&b) if b == close => {
                    j += 1;
                    break;
                }
                Some(_) => j += 1,
            }
        }
        out.push((true, &text[i..j.min(bytes.len())]));
        start = j.min(bytes.len());
        i = start;
    }
    if start < bytes.len() {
        out.push((false, &text[start..]));
    }
    out
}

/// The value of a quoted piece (`'it''s'` → `it's`, `"a b"` → `a b`, `[x]` → `x`).
pub fn unquoted(piece: &str) -> String {
    let inner = &piece[1..piece.len().saturating_sub(1).max(1)];
    match piece.as_bytes()[0] {
        b'[' => inner.to_string(),
        q => {
            let q = q as char;
            inner.replace(&format!("{q}{q}"), &q.to_string())
        }
    }
}

/// Whether `text` is one name, bare (`email`) or quoted (`"Odd Name"`), not an expression.
pub fn is_name(text: &str) -> bool {
    let text = text.trim();
    match pieces(text, true).as_slice() {
        [(true, piece)] => !piece.starts_with('\''),
        [(false, piece)] => {
            !piece.is_empty()
                && piece.chars().all(|c| c.is_alphanumeric() || c == '_')
                && !piece.starts_with(|c: char| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// The strings of a list of SQL string literals (`'a', 'it''s'`); `None` for anything else.
pub fn literal_list(list: &str) -> Option<Vec<String>> {
    let mut values = Vec::new();
    let mut expect_value = true;
    for (quoted, piece) in pieces(list, false) {
        match (quoted, expect_value) {
            (true, true) if piece.starts_with('\'') => {
                values.push(unquoted(piece));
                expect_value = false;
            }
            (false, false) if piece.trim() == "," => expect_value = true,
            (false, _) if piece.trim().is_empty() => {}
            _ => return None,
        }
    }
    (!values.is_empty() && !expect_value).then_some(values)
}

/// The labels of `column IN ('a', 'b', …)` (the column named bare or in any quotes), the CHECK
/// that keeps a text column to an enumeration; `None` for any other condition.
pub fn in_list(condition: &str, column: &str) -> Option<Vec<String>> {
    let condition = condition.trim();
    let (name, rest) = match pieces(condition, false).first() {
        Some((true, piece)) if !piece.starts_with('\'') => (unquoted(piece), &condition[piece.len()..]),
        Some((false, piece)) => {
            let word = piece.split_whitespace().next()?;
            (word.to_string(), &condition[word.len()..])
        }
        _ => return None,
    };
    if name != column {
        return None;
    }
    let rest = rest.trim_start();
    let rest = rest.get(..2).filter(|w| w.eq_ignore_ascii_case("in")).map(|_| rest[2..].trim_start())?;
    let list = rest.strip_prefix('(')?.strip_suffix(')')?;
    literal_list(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_quotes_and_doubled_quotes_together() {
        assert_eq!(
            pieces(r#"a = 'it''s' AND "x""y" > [z]"#, true),
            [(false, "a = "), (true, "'it''s'"), (false, " AND "), (true, r#""x""y""#), (false, " > "), (true, "[z]")]
        );
        assert_eq!(unquoted("'it''s'"), "it's");
        assert_eq!(unquoted(r#""x""y""#), "x\"y");
        assert_eq!(unquoted("[z]"), "z");
    }

    #[test]
    fn enumeration_checks_are_recognised_and_nothing_else() {
        let labels = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(in_list(r#""mood" IN ('sad', 'it''s ok', 'happy')"#, "mood"), labels(&["sad", "it's ok", "happy"]));
        assert_eq!(in_list("mood in ('a','b')", "mood"), labels(&["a", "b"]));
        assert_eq!(in_list("`mood` IN ('a')", "mood"), labels(&["a"]));
        assert_eq!(in_list("mood IN ('a', 'b')", "other"), None);
        assert_eq!(in_list("mood IN ('a', 'b') OR mood IS NULL", "mood"), None);
        assert_eq!(in_list("mood IN ('a', b)", "mood"), None);
        assert_eq!(in_list("mood NOT IN ('a')", "mood"), None);
        assert_eq!(in_list("mood IN ()", "mood"), None);
        assert_eq!(literal_list("'a', 'b',"), None);
        assert!(is_name("email") && is_name(r#""Odd ""Name""#) && is_name("`x`"));
        assert!(!is_name("lower(email)") && !is_name("'a'") && !is_name("a + 1") && !is_name("1"));
    }
}
