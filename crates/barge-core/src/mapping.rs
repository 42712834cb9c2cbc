//! The one shape in which every engine declares its types, as data: a native type, the codec its
//! values travel with, the Arrow type it reads as, and whether barge creates that native type for
//! that Arrow type. Each engine's `types::mapping()` returns its rows; from them come
//!
//! * the engine's documentation table ([`markdown_table`], checked against the engine's
//!   `TYPES.md` by [`check_doc_table`] in a unit test),
//! * the DDL rules' check ([`check_mapping`]: every row resolves to its Arrow type, and every Arrow
//!   type a row is created for comes back as itself), and
//! * the end-to-end round trips: `barge-cli`'s `mappings` tests build one table per row with
//!   [`TypeMapping::samples`] and copy them into every engine, verified (a value the target cannot
//!   hold rejected with its reason, never lost); each engine's type tests round-trip every row's
//!   samples through Arrow and back; MySQL's rows are the columns of its every-type fixture.
//!
//! So a new row cannot go undocumented or untested.

use arrow_schema::DataType;

/// One row of an engine's type mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeMapping {
    /// The native type as a column declares it, with example parameters (`numeric(12,2)`).
    pub native: &'static str,
    /// How values of it travel (the engine's decoder/encoder choice, by name).
    pub codec: &'static str,
    /// The Arrow type it reads as.
    pub arrow: DataType,
    /// barge creates `native` for a column of this Arrow type coming from another engine.
    pub created: bool,
    /// Literals of typical and edge values, in the engine's SQL, from which the round-trip tests
    /// are generated (empty: the row is covered by the engine's own hand-written type tests).
    pub samples: &'static [&'static str],
    /// What a user must know (normalisations, limits).
    pub notes: &'static str,
}

impl TypeMapping {
    /// A row read as `arrow` through `codec`.
    pub fn new(native: &'static str, codec: &'static str, arrow: DataType) -> Self {
        TypeMapping { native, codec, arrow, created: false, samples: &[], notes: "" }
    }

    /// barge creates this native type for the row's Arrow type.
    pub fn created(mut self) -> Self {
        self.created = true;
        self
    }

    /// Literals for the generated round trips.
    pub fn samples(mut self, literals: &'static [&'static str]) -> Self {
        self.samples = literals;
        self
    }

    pub fn notes(mut self, notes: &'static str) -> Self {
        self.notes = notes;
        self
    }
}

/// The documentation table of `rows` (Markdown).
pub fn markdown_table(rows: &[TypeMapping]) -> String {
    let mut out = String::from("| native type | codec | Arrow | created for Arrow | notes |\n|---|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.native.replace('|', "\\|"),
            row.codec,
            row.arrow,
            if row.created { "yes" } else { "" },
            row.notes.replace('|', "\\|")
        ));
    }
    out
}

/// Markers around the generated table in an engine's `TYPES.md`.
pub const TABLE_BEGIN: &str = "<!-- generated from types::mapping(): begin -->";
pub const TABLE_END: &str = "<!-- generated from types::mapping(): end -->";

/// Checks that `doc` holds [`markdown_table`] of `rows` between [`TABLE_BEGIN`] and [`TABLE_END`];
/// on a mismatch, returns the document as it should be.
pub fn check_doc_table(doc: &str, rows: &[TypeMapping]) -> Result<(), String> {
    let table = markdown_table(rows);
    let (Some(begin), Some(end)) = (doc.find(TABLE_BEGIN), doc.find(TABLE_END)) else {
        return Err(format!("{doc}\n{TABLE_BEGIN}\n{table}{TABLE_END}\n"));
    };
    let current = &doc[begin + TABLE_BEGIN.len()..end];
    if current.trim() == table.trim() {
        return Ok(());
    }
    Err(format!("{}{TABLE_BEGIN}\n{table}{}", &doc[..begin], &doc[end..]))
}

/// The check an engine's unit test makes of its `TYPES.md` at `path`: panics when the file does not
/// hold the table of `rows`, or with `BARGE_BLESS` set in the environment rewrites it.
pub fn assert_doc_table(path: &str, rows: &[TypeMapping]) {
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    if let Err(fixed) = check_doc_table(&doc, rows) {
        if std::env::var_os("BARGE_BLESS").is_some() {
            std::fs::write(path, fixed).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        } else {
            panic!("{path} is stale: run the test with BARGE_BLESS=1 to regenerate it");
        }
    }
}

/// The problems of a mapping: a row whose native type does not `resolve` to its Arrow type, a row
/// marked created whose Arrow type `create` turns into another native type or into one that does
/// not resolve back to itself, or an Arrow type two rows claim to create.
pub fn check_mapping(
    rows: &[TypeMapping],
    resolve: impl Fn(&str) -> Option<DataType>,
    create: impl Fn(&DataType) -> Option<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for row in rows {
        match resolve(row.native) {
            Some(arrow) if arrow == row.arrow => {}
            other => problems.push(format!("`{}` resolves to {other:?}, the mapping says {}", row.native, row.arrow)),
        }
        if row.created {
            match create(&row.arrow).as_deref().map(|native| (native.to_string(), resolve(native))) {
                Some((_, Some(back))) if back == row.arrow => {}
                other => {
                    problems.push(format!("{} is created as {other:?}, which does not read back as itself", row.arrow))
                }
            }
            if rows.iter().filter(|r| r.created && r.arrow == row.arrow).count() > 1 {
                problems.push(format!("{} is created by more than one row", row.arrow));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<TypeMapping> {
        vec![
            TypeMapping::new("int", "Int", DataType::Int32).created().samples(&["7"]),
            TypeMapping::new("text", "Text", DataType::Utf8).created().notes("a | b"),
        ]
    }

    #[test]
    fn the_table_escapes_pipes_and_marks_created_rows() {
        let table = markdown_table(&rows());
        assert!(table.contains("| int | Int | Int32 | yes |  |"), "{table}");
        assert!(table.contains("a \\| b"), "{table}");
    }

    #[test]
    fn a_stale_doc_table_is_rewritten_between_its_markers() {
        let doc = format!("# T\n{TABLE_BEGIN}\nold\n{TABLE_END}\ntail\n");
        let fixed = check_doc_table(&doc, &rows()).unwrap_err();
        assert!(fixed.starts_with("# T\n") && fixed.ends_with(&format!("{TABLE_END}\ntail\n")), "{fixed}");
        assert_eq!(check_doc_table(&fixed, &rows()), Ok(()));
    }

    #[test]
    fn a_row_that_disagrees_with_the_resolver_is_a_problem() {
        let resolve = |n: &str| match n {
            "int" => Some(DataType::Int64),
            "text" => Some(DataType::Utf8),
            _ => None,
        };
        let create = |t: &DataType| Some(if *t == DataType::Utf8 { "text" } else { "int" }.to_string());
        let problems = check_mapping(&rows(), resolve, create);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("`int` resolves to Some(Int64)"), "{problems:?}");
    }
}
