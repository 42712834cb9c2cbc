//! The expression language of computed columns: column references, literals and function calls.
//!
//! ```text
//! expr    := call | column | literal
//! call    := name '(' [expr (',' expr)*] ')'
//! column  := name | '"' any text, "" for a quote '"'
//! literal := '\'' text, '' for a quote '\'' | number | true | false | null
//! ```
//!
//! Names are case-insensitive for functions and exact for columns. Parsing only builds the tree;
//! [`crate::transform`] checks it against the source schema and evaluates it over Arrow batches.

use std::fmt;

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Column(String),
    Literal(Literal),
    Call(String, Vec<Expr>),
}

/// A constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(c) if c.chars().all(|ch| ch.is_alphanumeric() || ch == '_') && !c.is_empty() => f.write_str(c),
            Expr::Column(c) => write!(f, "\"{}\"", c.replace('"', "\"\"")),
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Call(name, args) => {
                write!(f, "{name}(")?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Parses one expression; the error names the character position.
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut parser = Parser { chars: text.char_indices().collect(), pos: 0, text };
    let expr = parser.expr()?;
    parser.skip_space();
    if parser.pos < parser.chars.len() {
        return Err(parser.error("unexpected text after the expression"));
    }
    Ok(expr)
}

struct Parser<'a> {
    chars: Vec<(usize, char)>,
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        let column = self.pos + 1;
        format!("{what} at character {column} of `{}`", self.text)
    }

    fn quoted(&mut self, quote: char) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error(&format!("unterminated {quote}…{quote}"))),
                Some(c) if c == quote => {
                    self.pos += 1;
                    if self.peek() == Some(quote) {
                        out.push(quote);
                        self.pos += 1;
                    } else {
                        return Ok(out);
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.skip_space();
        match self.peek() {
            None => Err(self.error("expected an expression")),
            Some('\'') => Ok(Expr::Literal(Literal::Text(self.quoted('\'')?))),
            Some('"') => Ok(Expr::Column(self.quoted('"')?)),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '.' => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos].iter().map(|(_, c)| c).collect();
                self.skip_space();
                if self.peek() == Some('(') {
                    self.pos += 1;
                    let mut args = Vec::new();
                    self.skip_space();
                    if self.peek() == Some(')') {
                        self.pos += 1;
                    } else {
                        loop {
                            args.push(self.expr()?);
                            self.skip_space();
                            match self.peek() {
                                Some(',') => self.pos += 1,
                                Some(')') => {
                                    self.pos += 1;
                                    break;
                                }
                                _ => return Err(self.error("expected `,` or `)`")),
                            }
                        }
                    }
                    return Ok(Expr::Call(name.to_lowercase(), args));
                }
                Ok(match name.to_lowercase().as_str() {
                    "null" => Expr::Literal(Literal::Null),
                    "true" => Expr::Literal(Literal::Bool(true)),
                    "false" => Expr::Literal(Literal::Bool(false)),
                    _ => Expr::Column(name),
                })
            }
            Some(_) => Err(self.error("expected a column, a literal or a function call")),
        }
    }

    fn number(&mut self) -> Result<Expr, String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E')) {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().map(|(_, c)| c).collect();
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Expr::Literal(Literal::Int(i)));
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Expr::Literal(Literal::Float(x))),
            _ => {
                self.pos = start;
                Err(self.error(&format!("`{text}` is not a number")))
            }
        }
    }
}

/// Which columns an expression reads.
pub fn columns(expr: &Expr, out: &mut Vec<String>) {
    match expr {
        Expr::Column(c) => {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        Expr::Literal(_) => {}
        Expr::Call(_, args) => args.iter().for_each(|a| columns(a, out)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn call(name: &str, args: Vec<Expr>) -> Expr {
        Expr::Call(name.into(), args)
    }

    fn col(name: &str) -> Expr {
        Expr::Column(name.into())
    }

    #[test]
    fn parses_calls_columns_and_literals() {
        assert_eq!(
            parse("coalesce(modified_date, created_date)").unwrap(),
            call("coalesce", vec![col("modified_date"), col("created_date")])
        );
        assert_eq!(
            parse(" Replace( \"odd col\", 'it''s', '' ) ").unwrap(),
            call(
                "replace",
                vec![
                    col("odd col"),
                    Expr::Literal(Literal::Text("it's".into())),
                    Expr::Literal(Literal::Text("".into()))
                ]
            )
        );
        assert_eq!(parse("-12").unwrap(), Expr::Literal(Literal::Int(-12)));
        assert_eq!(parse("2.5").unwrap(), Expr::Literal(Literal::Float(2.5)));
        assert_eq!(parse("NULL").unwrap(), Expr::Literal(Literal::Null));
        assert_eq!(parse("now()").unwrap(), call("now", vec![]));
        let text = "concat(\"odd \"\"col\"\"\", 'it''s', 42, null)";
        assert_eq!(parse(text).unwrap().to_string(), text);
    }

    #[test]
    fn errors_name_the_position() {
        assert_eq!(parse("lower(email").unwrap_err(), "expected `,` or `)` at character 12 of `lower(email`");
        assert!(parse("lower(email) x").unwrap_err().contains("unexpected text"));
        assert!(parse("'open").unwrap_err().contains("unterminated"));
        assert!(parse("").unwrap_err().contains("expected an expression"));
    }

    proptest! {
        #[test]
        fn text_literals_round_trip(s in ".*") {
            let printed = Literal::Text(s.clone()).to_string();
            prop_assert_eq!(parse(&printed).unwrap(), Expr::Literal(Literal::Text(s)));
        }
    }
}
