//! CHECK conditions as PostgreSQL prints them (`pg_get_expr(conbin, conrelid, true)`), in portable
//! SQL for a target of another engine, and barge's own CHECK for a MySQL SET read back as one.

use barge_core::checks::{literal_list, pieces};

/// Types whose casts PostgreSQL adds around text columns and literals by itself (`name::text`).
const TEXT_TYPES: &[&str] = &["text", "character varying", "varchar", "bpchar", "character", "name"];

/// Words that continue a type's name (`character varying`, `timestamp without time zone`).
const TYPE_WORDS: &[&str] = &["varying", "precision", "without", "with", "time", "zone"];

/// `condition` in portable SQL: `x = ANY (ARRAY[a, b])` as `x IN (a, b)`, `~~` as LIKE, and
/// the casts PostgreSQL prints but another engine would refuse dropped where they change nothing
/// a target needs: on literals (`0::numeric`, `'a'::text`, `'2020-01-01'::date`, which the
/// target reads in the column's type) and to text on columns. Other casts stay (the target then
/// refuses the condition, and it is listed).
pub fn portable_condition(condition: &str) -> String {
    let mut out = String::with_capacity(condition.len());
    let mut previous_literal = false;
    // `= ANY (ARRAY[` rewritten and waiting for its `])`.
    let mut open_lists = 0usize;
    for (quoted, piece) in pieces(condition, false) {
        if quoted {
            out.push_str(piece);
            previous_literal = piece.starts_with('\'');
            continue;
        }
        let mut rest = piece;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("::") {
                let (type_name, len) = type_name(after);
                let ends_in_number = out.ends_with(|c: char| c.is_ascii_digit())
                    && !out.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.').ends_with(is_word);
                if len > 0 && (previous_literal || ends_in_number || TEXT_TYPES.contains(&type_name.as_str())) {
                    rest = &after[len..];
                    previous_literal = false;
                    continue;
                }
            }
            if let Some(after) = rest.strip_prefix(" = ANY (ARRAY[") {
                out.push_str(" IN (");
                open_lists += 1;
                rest = after;
                continue;
            }
            if open_lists > 0
                && let Some(after) = rest.strip_prefix("])")
            {
                open_lists -= 1;
                out.push(')');
                rest = after;
                continue;
            }
            if let Some(after) = rest.strip_prefix(" !~~ ") {
                out.push_str(" NOT LIKE ");
                rest = after;
                continue;
            }
            if let Some(after) = rest.strip_prefix(" ~~ ") {
                out.push_str(" LIKE ");
                rest = after;
                continue;
            }
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
            if !c.is_whitespace() {
                previous_literal = false;
            }
        }
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '"'
}

/// The type name at the start of `text` (after `::`), lowercased, and its length with any
/// modifier (`(10,2)`) and array brackets.
fn type_name(text: &str) -> (String, usize) {
    let mut words: Vec<&str> = Vec::new();
    let mut len = 0;
    loop {
        let rest = &text[len..];
        let skip = if words.is_empty() { 0 } else { rest.len() - rest.trim_start_matches(' ').len() };
        let word_len =
            rest[skip..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len() - skip);
        let word = &rest[skip..skip + word_len];
        if word.is_empty() || (!words.is_empty() && !TYPE_WORDS.contains(&word)) {
            break;
        }
        words.push(word);
        len += skip + word_len;
    }
    if text[len..].starts_with('(')
        && let Some(close) = text[len..].find(')')
    {
        len += close + 1;
    }
    while text[len..].starts_with("[]") {
        len += 2;
    }
    (words.join(" ").to_ascii_lowercase(), len)
}

/// The members of the CHECK barge writes for a MySQL SET kept in a text column (see the target's
/// DDL), as PostgreSQL prints it for `column` (as `quote_ident` spells it); `None` for any other
/// condition.
pub fn set_members(condition: &str, column: &str) -> Option<Vec<String>> {
    let list = condition
        .strip_prefix(&format!("{column} = ''::text OR string_to_array({column}, ','::text) <@ ARRAY["))?
        .strip_suffix(']')?;
    let mut plain = String::new();
    for (quoted, piece) in pieces(list, false) {
        plain.push_str(if quoted { piece } else { piece.strip_prefix("::text").unwrap_or(piece) });
    }
    literal_list(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_conditions_become_portable() {
        for (printed, portable) in [
            ("m = ANY (ARRAY['x'::text, 'y'::text])", "m IN ('x', 'y')"),
            ("p > 0::numeric AND p < 1000.5", "p > 0 AND p < 1000.5"),
            (
                r#""Odd Col"::text ~~ 'a%'::text AND length("Odd Col"::text) > 1"#,
                r#""Odd Col" LIKE 'a%' AND length("Odd Col") > 1"#,
            ),
            ("d > '2020-01-01'::date", "d > '2020-01-01'"),
            ("c::character varying(5) !~~ 'a::b'::text", "c NOT LIKE 'a::b'"),
            ("t > '2020-01-01 00:00:00'::timestamp without time zone", "t > '2020-01-01 00:00:00'"),
            ("p IS NULL OR m IS NOT NULL", "p IS NULL OR m IS NOT NULL"),
            // A cast that changes the value stays: the target refuses it and it is listed.
            ("p::integer > 3", "p::integer > 3"),
            ("x2::integer > 3", "x2::integer > 3"),
            ("(tags[1]) > 'a'::text", "(tags[1]) > 'a'"),
        ] {
            assert_eq!(portable_condition(printed), portable, "{printed}");
        }
    }

    #[test]
    fn barges_set_check_is_read_back_as_its_members() {
        let printed =
            "tags = ''::text OR string_to_array(tags, ','::text) <@ ARRAY['a'::text, 'it''s'::text, 'c'::text]";
        assert_eq!(set_members(printed, "tags"), Some(vec!["a".into(), "it's".into(), "c".into()]));
        assert_eq!(set_members(printed, "other"), None);
        assert_eq!(set_members("tags = ''::text", "tags"), None);
    }
}
