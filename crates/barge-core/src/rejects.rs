//! Row failures that do not stop a run: each rejected row is written, with its key and the reason,
//! to `<dir>/<table>.rejects.jsonl`, and counted against an error budget.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One rejected row, as written to the reject file (one JSON object per line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// The row's key columns (name → value); empty for a table without a key.
    pub key: serde_json::Map<String, serde_json::Value>,
    /// The column at fault, when the failure names one.
    pub column: Option<String>,
    /// Why the row was refused.
    pub reason: String,
    /// `transform` (a pipeline transform failed) or `write` (the target refused the row).
    pub stage: String,
    /// The whole row as read from the source (before transforms for transform failures).
    pub row: serde_json::Map<String, serde_json::Value>,
}

/// Reject files of one run, created on the first reject of a table.
#[derive(Debug)]
pub struct RejectLog {
    dir: PathBuf,
    files: Mutex<HashMap<String, BufWriter<File>>>,
}

impl RejectLog {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RejectLog { dir: dir.into(), files: Mutex::new(HashMap::new()) }
    }

    /// Where the rejects of `table` go.
    pub fn path(&self, table: &str) -> PathBuf {
        self.dir.join(format!("{table}.rejects.jsonl"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes a reject file a previous run left for `table`, so the file always describes this run.
    pub fn start(&self, table: &str) -> Result<()> {
        match std::fs::remove_file(self.path(table)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::engine(format!("removing {}", self.path(table).display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Appends one reject to the table's file.
    pub fn record(&self, table: &str, reject: &Reject) -> Result<()> {
        let mut files = self.files.lock().expect("reject log lock");
        let file = match files.get_mut(table) {
            Some(file) => file,
            None => {
                let path = self.path(table);
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| Error::engine(format!("creating {}", self.dir.display()), e))?;
                let file = File::create(&path).map_err(|e| Error::engine(format!("creating {}", path.display()), e))?;
                files.entry(table.to_string()).or_insert(BufWriter::new(file))
            }
        };
        let line = serde_json::to_string(reject).map_err(|e| Error::engine("encoding a reject", e))?;
        writeln!(file, "{line}").map_err(|e| Error::engine(format!("writing {}", self.path(table).display()), e))
    }

    /// Flushes every open reject file.
    pub fn flush(&self) -> Result<()> {
        let mut files = self.files.lock().expect("reject log lock");
        for (table, file) in files.iter_mut() {
            file.flush().map_err(|e| Error::engine(format!("writing {}", self.path(table).display()), e))?;
        }
        Ok(())
    }
}

/// Row `row` of `batch` as a JSON object: numbers and booleans as JSON, everything else as the
/// value's display text, NULL as null.
pub fn row_json(batch: &RecordBatch, row: usize) -> serde_json::Map<String, serde_json::Value> {
    columns_json(batch, row, 0..batch.num_columns())
}

/// The given columns of row `row` as a JSON object (see [`row_json`]).
/// The key of row `row` as a message shows it (`1, "eu"`), or `None` for a table without one.
pub fn key_shown(batch: &RecordBatch, row: usize, key: &[usize]) -> Option<String> {
    let shown: Vec<String> = columns_json(batch, row, key.iter().copied()).values().map(ToString::to_string).collect();
    (!shown.is_empty()).then(|| shown.join(", "))
}

pub fn columns_json(
    batch: &RecordBatch,
    row: usize,
    columns: impl IntoIterator<Item = usize>,
) -> serde_json::Map<String, serde_json::Value> {
    let options = FormatOptions::default();
    columns
        .into_iter()
        .map(|i| {
            let array = batch.column(i);
            let name = batch.schema_ref().field(i).name().clone();
            (name, value_json(array.as_ref(), row, &options))
        })
        .collect()
}

fn value_json(array: &dyn Array, row: usize, options: &FormatOptions<'_>) -> serde_json::Value {
    if array.is_null(row) {
        return serde_json::Value::Null;
    }
    let text = match ArrayFormatter::try_new(array, options) {
        Ok(formatter) => formatter.value(row).to_string(),
        Err(_) => return serde_json::Value::String(format!("<{}>", array.data_type())),
    };
    let numeric = array.data_type().is_integer() || matches!(array.data_type(), DataType::Float32 | DataType::Float64);
    match array.data_type() {
        DataType::Boolean => serde_json::Value::Bool(text == "true"),
        DataType::Float32 | DataType::Float64 => {
            text.parse::<f64>().map(crate::json::float_value).unwrap_or(serde_json::Value::String(text))
        }
        _ if numeric => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        _ => serde_json::Value::String(text),
    }
}

/// How many rejected rows a table (or a run) tolerates before it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub enum Budget {
    /// No rejects: the first failing row stops the run (the default).
    #[default]
    None,
    /// At most this many rows.
    Rows(u64),
    /// At most this fraction (0..=1) of the rows read.
    Fraction(f64),
}

impl Budget {
    /// Parses `100` (rows) or `"0.5%"` (a percentage of the rows read).
    pub fn parse(text: &str) -> std::result::Result<Budget, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let value: f64 = percent.trim().parse().map_err(|_| format!("`{text}` is not a percentage"))?;
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("`{text}` is not between 0% and 100%"));
            }
            return Ok(Budget::Fraction(value / 100.0));
        }
        text.parse::<u64>().map(Budget::Rows).map_err(|_| format!("`{text}` is neither a row count nor a percentage"))
    }

    /// True when any reject is tolerated (so writers isolate failing rows instead of failing).
    pub fn tolerates_rejects(&self) -> bool {
        match self {
            Budget::None => false,
            Budget::Rows(n) => *n > 0,
            Budget::Fraction(f) => *f > 0.0,
        }
    }

    /// True when `rejected` rows out of `rows` exceed the budget.
    pub fn exceeded(&self, rejected: u64, rows: u64) -> bool {
        match self {
            Budget::None => rejected > 0,
            Budget::Rows(n) => rejected > *n,
            Budget::Fraction(f) => rejected as f64 > f * rows as f64,
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::None => f.write_str("0 rows"),
            Budget::Rows(n) => write!(f, "{n} rows"),
            Budget::Fraction(x) => write!(f, "{}%", x * 100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{Field, Schema};

    use super::*;

    #[test]
    fn budgets_parse_counts_and_percentages() {
        assert_eq!(Budget::parse("10"), Ok(Budget::Rows(10)));
        assert_eq!(Budget::parse("2.5%"), Ok(Budget::Fraction(0.025)));
        assert!(Budget::parse("ten").is_err());
        assert!(Budget::parse("120%").is_err());
        assert!(Budget::Rows(2).exceeded(3, 100));
        assert!(!Budget::Rows(2).exceeded(2, 100));
        assert!(Budget::Fraction(0.01).exceeded(2, 100));
        assert!(!Budget::Fraction(0.01).exceeded(1, 100));
        assert!(Budget::None.exceeded(1, 1_000_000));
        assert!(!Budget::Rows(0).tolerates_rejects());
    }

    #[test]
    fn rows_become_json_with_numbers_as_numbers() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![7, 8])), Arc::new(StringArray::from(vec![Some("x"), None]))],
        )
        .unwrap();
        assert_eq!(serde_json::Value::Object(row_json(&batch, 0)), serde_json::json!({"id": 7, "name": "x"}));
        assert_eq!(serde_json::Value::Object(row_json(&batch, 1)), serde_json::json!({"id": 8, "name": null}));
    }

    #[test]
    fn reject_files_are_created_on_first_reject_and_replaced_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let log = RejectLog::new(dir.path());
        log.start("t").unwrap();
        assert!(!log.path("t").exists());
        let reject = Reject {
            key: serde_json::Map::new(),
            column: None,
            reason: "no".into(),
            stage: "write".into(),
            row: serde_json::Map::new(),
        };
        log.record("t", &reject).unwrap();
        log.flush().unwrap();
        let text = std::fs::read_to_string(log.path("t")).unwrap();
        assert_eq!(serde_json::from_str::<Reject>(text.trim()).unwrap(), reject);
        let again = RejectLog::new(dir.path());
        again.start("t").unwrap();
        assert!(!again.path("t").exists());
    }
}
