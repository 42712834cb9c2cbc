//! Column transforms, compiled once per table against its schema and evaluated column-at-a-time
//! over Arrow record batches (arrow's cast, zip, nullif and filter kernels, and short string loops
//! where arrow has no kernel). A value that cannot be transformed fails its row, not the batch:
//! the row is left out of the output and reported, so the runtime can reject it.
//!
//! | function | result |
//! |---|---|
//! | `lower(s)`, `upper(s)`, `trim(s)`, `ltrim(s)`, `rtrim(s)` | text |
//! | `replace(s, 'from', 'to')` | every literal occurrence replaced |
//! | `regex_replace(s, 'pattern', 'to')` | every match replaced (`$1` names a group) |
//! | `substring(s, start[, length])` | characters, 1-based like SQL |
//! | `coalesce(a, b, …)`, `default(a, b)` | the first non-NULL, in `a`'s type |
//! | `null_if(a, 'value')` | NULL where `a` equals the value |
//! | `concat(a, b, …)` | text; NULL arguments are skipped |
//! | `hash(a)` | hex blake3 keyed hash of `a`'s text (the pipeline's `hash_key`): deterministic, so joins still match |
//! | `mask(s, n)` | every character but the last `n` replaced by `*` |
//! | `cast(a, 'type')` | `a` as `type`; a value that does not convert rejects its row |
//! | a literal | a constant column |
//!
//! Non-text arguments of text functions are converted to their text form first. NULL in gives NULL
//! out, except for `coalesce`, `default` and `concat`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, new_null_array};
use arrow_cast::cast::{CastOptions, cast_with_options};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use barge_core::{
    Error, META_DEFAULT, META_ENGINE, META_IDENTITY, META_NATIVE_TYPE, Result, TableInfo, Transform, Transformed,
};
use regex::Regex;

use crate::expr::{Expr, Literal};

/// One column entry of a pipeline table, as the transform needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColumnSpec {
    /// The output column's name.
    pub name: String,
    /// Renames this source column to `name`.
    pub from: Option<String>,
    /// Computes the column.
    pub expr: Option<Expr>,
    /// The target column type, in the target's own SQL (`varchar(320)`), overriding the mapping.
    pub native_type: Option<String>,
}

/// What a pipeline table does to its columns.
#[derive(Clone, Debug, Default)]
pub struct TransformSpec {
    pub columns: Vec<ColumnSpec>,
    /// Source columns left out of the target (still readable by expressions).
    pub drop: Vec<String>,
    /// Key of `hash()`, derived from the pipeline's `hash_key`.
    pub hash_key: Option<[u8; 32]>,
    /// The target's engine name, for type overrides (`native_type`).
    pub target_engine: String,
}

impl TransformSpec {
    /// True when the table is copied as is.
    pub fn is_identity(&self) -> bool {
        self.columns.is_empty() && self.drop.is_empty()
    }

    /// Checks the spec against `table` and builds its evaluator. Unknown columns, unknown functions,
    /// wrong arguments and duplicate output names are configuration errors.
    pub fn compile(&self, table: &TableInfo) -> Result<Arc<Compiled>> {
        let schema = table.schema.as_ref();
        let config = |what: String| Error::Config(format!("table `{}`: {what}", table.name));
        let index = |column: &str| {
            schema.index_of(column).map_err(|_| Error::UnknownColumn {
                side: "source",
                table: table.name.clone(),
                column: column.to_string(),
            })
        };
        for dropped in &self.drop {
            index(dropped)?;
        }
        let mut renamed: HashMap<usize, &ColumnSpec> = HashMap::new();
        let mut by_name: HashMap<&str, &ColumnSpec> = HashMap::new();
        for spec in &self.columns {
            if spec.from.is_some() && spec.expr.is_some() {
                return Err(config(format!("column `{}` has both `from` and `expr`; use one", spec.name)));
            }
            if let Some(from) = &spec.from {
                if renamed.insert(index(from)?, spec).is_some() {
                    return Err(config(format!("column `{from}` is renamed twice")));
                }
            } else if by_name.insert(spec.name.as_str(), spec).is_some() {
                return Err(config(format!("column `{}` is listed twice", spec.name)));
            }
        }
        let mut outputs = Vec::new();
        let mut placed: Vec<&str> = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            if let Some(spec) = renamed.get(&i) {
                outputs.push(self.output(table, spec, Some(i))?);
                placed.push(&spec.name);
            } else if self.drop.contains(field.name()) {
                continue;
            } else if let Some(spec) = by_name.get(field.name().as_str()) {
                outputs.push(self.output(table, spec, Some(i))?);
                placed.push(&spec.name);
            } else {
                let kept = Field::new(field.name(), field.data_type().clone(), field.is_nullable());
                outputs.push(Output { field: kept, node: Node::Column(i) });
            }
        }
        for spec in &self.columns {
            if spec.from.is_none() && !placed.contains(&spec.name.as_str()) {
                if schema.index_of(&spec.name).is_ok() {
                    return Err(config(format!("column `{}` is dropped and listed; drop it or list it", spec.name)));
                }
                outputs.push(self.output(table, spec, None)?);
            }
        }
        let mut names = std::collections::HashSet::new();
        for output in &outputs {
            if !names.insert(output.field.name().clone()) {
                return Err(config(format!("two target columns are named `{}`", output.field.name())));
            }
        }
        let mut compiled = Compiled {
            table: table.name.clone(),
            hash_key: self.hash_key,
            loose: Arc::new(Schema::empty()),
            schema: Arc::new(Schema::empty()),
            outputs,
        };
        // Evaluating an empty batch settles every output's Arrow type with the same code as rows.
        let empty = RecordBatch::new_empty(table.schema.clone());
        let mut failures = Failures::new(0);
        let mut fields = Vec::with_capacity(compiled.outputs.len());
        for output in &compiled.outputs {
            let array = compiled.eval(&output.node, &empty, &mut failures, output.field.name())?;
            fields.push(output_field(output, array.data_type(), schema, &self.target_engine));
        }
        compiled.loose =
            Arc::new(Schema::new(fields.iter().map(|f| f.clone().with_nullable(true)).collect::<Vec<_>>()));
        compiled.schema = Arc::new(Schema::new(fields));
        Ok(Arc::new(compiled))
    }

    fn output(&self, table: &TableInfo, spec: &ColumnSpec, source: Option<usize>) -> Result<Output> {
        let node = match (&spec.expr, source) {
            (Some(expr), _) => self.node(table, expr, &spec.name)?,
            (None, Some(i)) => Node::Column(i),
            (None, None) => {
                return Err(Error::Config(format!(
                    "table `{}`: column `{}` is not in the source; give it an `expr` (or `from` to rename)",
                    table.name, spec.name
                )));
            }
        };
        let nullable = node.nullable(&table.schema);
        let mut field = Field::new(spec.name.clone(), DataType::Null, nullable);
        if let Some(native) = &spec.native_type {
            field.set_metadata([(META_NATIVE_TYPE, native.clone())]);
        }
        Ok(Output { field, node })
    }

    fn node(&self, table: &TableInfo, expr: &Expr, column: &str) -> Result<Node> {
        let bad = |what: String| Error::Config(format!("table `{}`, column `{column}`: {what}", table.name));
        Ok(match expr {
            Expr::Column(name) => Node::Column(table.schema.index_of(name).map_err(|_| Error::UnknownColumn {
                side: "source",
                table: table.name.clone(),
                column: name.clone(),
            })?),
            Expr::Literal(literal) => Node::Literal(literal.clone()),
            Expr::Call(name, args) => {
                let func = Func::resolve(name, args, self.hash_key.is_some()).map_err(bad)?;
                let skip = func.literal_args();
                let args = args[..args.len() - skip]
                    .iter()
                    .map(|a| self.node(table, a, column))
                    .collect::<Result<Vec<_>>>()?;
                Node::Call(func, args)
            }
        })
    }
}

/// The output field: type from evaluation; a column kept or renamed keeps its source metadata; a
/// computed column keeps its first column argument's type metadata when the type is unchanged
/// (`lower(email)` stays `varchar(320)`); a declared `type` wins over both.
fn output_field(output: &Output, data_type: &DataType, source: &Schema, target_engine: &str) -> Field {
    let declared = output.field.metadata().get(META_NATIVE_TYPE).cloned();
    let mut field = Field::new(output.field.name(), data_type.clone(), output.field.is_nullable());
    let origin = match &output.node {
        Node::Column(i) => Some((source.field(*i), true)),
        node => node.first_column().map(|i| (source.field(i), false)),
    };
    if let Some((from, whole)) = origin.filter(|(from, _)| from.data_type() == data_type) {
        let mut metadata = from.metadata().clone();
        if !whole {
            metadata.remove(META_IDENTITY);
            metadata.remove(META_DEFAULT);
            // Another engine would keep the argument's declared length, which a computed value
            // (a hash of it) need not fit.
            if metadata.get(META_ENGINE).is_some_and(|engine| engine != target_engine) {
                metadata.remove(META_NATIVE_TYPE);
            }
        }
        field.set_metadata(metadata);
    }
    if let Some(native) = declared {
        let mut metadata = field.metadata().clone();
        metadata.insert(META_NATIVE_TYPE, native);
        metadata.insert(META_ENGINE, target_engine);
        field.set_metadata(metadata);
    }
    field
}

#[derive(Debug)]
struct Output {
    field: Field,
    node: Node,
}

#[derive(Debug)]
enum Node {
    Column(usize),
    Literal(Literal),
    Call(Func, Vec<Node>),
}

impl Node {
    /// Whether the column can hold NULL: NULL in gives NULL out, `concat` never returns NULL,
    /// `coalesce` only when all its arguments can, `null_if` always can. (A failed `cast` rejects
    /// its row rather than producing NULL.)
    fn nullable(&self, schema: &Schema) -> bool {
        match self {
            Node::Column(i) => schema.field(*i).is_nullable(),
            Node::Literal(literal) => *literal == Literal::Null,
            Node::Call(Func::NullIf(_), _) => true,
            Node::Call(Func::Concat, _) => false,
            Node::Call(Func::Coalesce, args) => args.iter().all(|a| a.nullable(schema)),
            Node::Call(_, args) => args.iter().any(|a| a.nullable(schema)),
        }
    }

    fn first_column(&self) -> Option<usize> {
        match self {
            Node::Column(i) => Some(*i),
            Node::Literal(_) => None,
            Node::Call(_, args) => args.first().and_then(Node::first_column),
        }
    }
}

/// A resolved function, with its literal arguments checked and prepared.
#[derive(Debug)]
enum Func {
    Lower,
    Upper,
    Trim,
    LTrim,
    RTrim,
    Replace(String, String),
    RegexReplace(Regex, String),
    Substring(usize, Option<usize>),
    Coalesce,
    NullIf(Literal),
    Concat,
    Hash,
    Mask(usize),
    Cast(DataType),
}

impl Func {
    fn resolve(name: &str, args: &[Expr], has_hash_key: bool) -> std::result::Result<Func, String> {
        let arity = |n: std::ops::RangeInclusive<usize>| {
            if n.contains(&args.len()) {
                Ok(())
            } else if n.start() == n.end() {
                Err(format!("{name}() takes {} argument(s), not {}", n.start(), args.len()))
            } else {
                Err(format!("{name}() takes {} to {} arguments, not {}", n.start(), n.end(), args.len()))
            }
        };
        let text = |i: usize| match args.get(i) {
            Some(Expr::Literal(Literal::Text(s))) => Ok(s.clone()),
            _ => Err(format!("argument {} of {name}() must be a text literal ('…')", i + 1)),
        };
        let count = |i: usize| match args.get(i) {
            Some(Expr::Literal(Literal::Int(n))) if *n >= 0 => Ok(*n as usize),
            _ => Err(format!("argument {} of {name}() must be a non-negative integer", i + 1)),
        };
        Ok(match name {
            "lower" | "upper" | "trim" | "ltrim" | "rtrim" => {
                arity(1..=1)?;
                match name {
                    "lower" => Func::Lower,
                    "upper" => Func::Upper,
                    "trim" => Func::Trim,
                    "ltrim" => Func::LTrim,
                    _ => Func::RTrim,
                }
            }
            "replace" => {
                arity(3..=3)?;
                let from = text(1)?;
                if from.is_empty() {
                    return Err("replace() cannot replace the empty string".into());
                }
                Func::Replace(from, text(2)?)
            }
            "regex_replace" => {
                arity(3..=3)?;
                let pattern = text(1)?;
                let regex = Regex::new(&pattern).map_err(|e| format!("bad regular expression `{pattern}`: {e}"))?;
                Func::RegexReplace(regex, text(2)?)
            }
            "substring" => {
                arity(2..=3)?;
                let start = count(1)?;
                if start == 0 {
                    return Err("substring() counts characters from 1".into());
                }
                Func::Substring(start, if args.len() == 3 { Some(count(2)?) } else { None })
            }
            "coalesce" => {
                arity(1..=64)?;
                Func::Coalesce
            }
            "default" => {
                arity(2..=2)?;
                Func::Coalesce
            }
            "null_if" | "nullif" => {
                arity(2..=2)?;
                match &args[1] {
                    Expr::Literal(literal) if *literal != Literal::Null => Func::NullIf(literal.clone()),
                    _ => return Err(format!("argument 2 of {name}() must be a literal")),
                }
            }
            "concat" => {
                arity(1..=64)?;
                Func::Concat
            }
            "hash" => {
                arity(1..=1)?;
                if !has_hash_key {
                    return Err("hash() needs `hash_key` at the top of the pipeline file".into());
                }
                Func::Hash
            }
            "mask" => {
                arity(2..=2)?;
                Func::Mask(count(1)?)
            }
            "cast" => {
                arity(2..=2)?;
                Func::Cast(cast_type(&text(1)?)?)
            }
            other => {
                return Err(format!(
                    "unknown function {other}() (known: lower, upper, trim, ltrim, rtrim, replace, regex_replace, \
                     substring, coalesce, default, null_if, concat, hash, mask, cast)"
                ));
            }
        })
    }

    /// Trailing arguments that are literals consumed at resolution, not evaluated per row.
    fn literal_args(&self) -> usize {
        match self {
            Func::Replace(..) | Func::RegexReplace(..) => 2,
            Func::Substring(_, len) => 1 + usize::from(len.is_some()),
            Func::NullIf(_) | Func::Mask(_) | Func::Cast(_) => 1,
            _ => 0,
        }
    }
}

/// The Arrow type of a `cast()` target.
fn cast_type(name: &str) -> std::result::Result<DataType, String> {
    let lower = name.trim().to_lowercase();
    if let Some(inner) = lower.strip_prefix("decimal(").and_then(|s| s.strip_suffix(')')) {
        let mut parts = inner.split(',').map(|p| p.trim().parse::<u8>());
        if let (Some(Ok(p)), Some(Ok(s)), None) = (parts.next(), parts.next(), parts.next())
            && (1..=38).contains(&p)
            && s <= p
        {
            return Ok(DataType::Decimal128(p, s as i8));
        }
        return Err(format!("`{name}`: decimal(p, s) needs 1 ≤ p ≤ 38 and 0 ≤ s ≤ p"));
    }
    Ok(match lower.as_str() {
        "int8" | "tinyint" => DataType::Int8,
        "int16" | "smallint" => DataType::Int16,
        "int32" | "int" | "integer" => DataType::Int32,
        "int64" | "bigint" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float32" | "real" => DataType::Float32,
        "float64" | "double" | "float" => DataType::Float64,
        "bool" | "boolean" => DataType::Boolean,
        "text" | "string" | "utf8" | "varchar" => DataType::Utf8,
        "binary" | "bytes" => DataType::Binary,
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Microsecond),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        _ => {
            return Err(format!(
                "unknown cast type `{name}` (int8…int64, uint8…uint64, float32, float64, bool, text, binary, date, \
                 time, timestamp, timestamptz, decimal(p, s))"
            ));
        }
    })
}

/// The first failure of each row of a batch.
struct Failures {
    rows: Vec<Option<(String, String)>>,
    any: bool,
}

impl Failures {
    fn new(rows: usize) -> Self {
        Failures { rows: vec![None; rows], any: false }
    }

    fn fail(&mut self, row: usize, column: &str, reason: String) {
        if self.rows[row].is_none() {
            self.rows[row] = Some((column.to_string(), reason));
            self.any = true;
        }
    }
}

/// A compiled table transform.
#[derive(Debug)]
pub struct Compiled {
    table: String,
    hash_key: Option<[u8; 32]>,
    outputs: Vec<Output>,
    /// `schema` with every column nullable: the shape before failed rows are removed.
    loose: SchemaRef,
    schema: SchemaRef,
}

impl Transform for Compiled {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn passthrough(&self, index: usize) -> Option<usize> {
        self.outputs.iter().position(|o| matches!(o.node, Node::Column(i) if i == index))
    }

    fn apply(&self, batch: &RecordBatch) -> Result<Transformed> {
        let mut failures = Failures::new(batch.num_rows());
        let columns = self
            .outputs
            .iter()
            .map(|o| self.eval(&o.node, batch, &mut failures, o.field.name()))
            .collect::<Result<Vec<_>>>()?;
        if !failures.any {
            let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
            return Ok(Transformed { batch, failures: Vec::new() });
        }
        let keep = BooleanArray::from(failures.rows.iter().map(Option::is_none).collect::<Vec<_>>());
        let loose = RecordBatch::try_new(self.loose.clone(), columns)?;
        let kept = arrow_select::filter::filter_record_batch(&loose, &keep)?;
        let batch = RecordBatch::try_new(self.schema.clone(), kept.columns().to_vec())?;
        let failures = failures
            .rows
            .into_iter()
            .enumerate()
            .filter_map(|(row, f)| f.map(|(column, reason)| (row, column, reason)))
            .collect();
        Ok(Transformed { batch, failures })
    }
}

impl Compiled {
    fn eval(&self, node: &Node, batch: &RecordBatch, failures: &mut Failures, column: &str) -> Result<ArrayRef> {
        let rows = batch.num_rows();
        Ok(match node {
            Node::Column(i) => batch.column(*i).clone(),
            Node::Literal(literal) => literal_array(literal, rows),
            Node::Call(func, args) => {
                let values = args.iter().map(|a| self.eval(a, batch, failures, column)).collect::<Result<Vec<_>>>()?;
                self.call(func, values, rows, failures, column)?
            }
        })
    }

    fn call(
        &self,
        func: &Func,
        mut args: Vec<ArrayRef>,
        rows: usize,
        failures: &mut Failures,
        column: &str,
    ) -> Result<ArrayRef> {
        let first = || args[0].clone();
        Ok(match func {
            Func::Lower => map_text(&first(), |s| Cow::Owned(s.to_lowercase()))?,
            Func::Upper => map_text(&first(), |s| Cow::Owned(s.to_uppercase()))?,
            Func::Trim => map_text(&first(), |s| Cow::Borrowed(s.trim()))?,
            Func::LTrim => map_text(&first(), |s| Cow::Borrowed(s.trim_start()))?,
            Func::RTrim => map_text(&first(), |s| Cow::Borrowed(s.trim_end()))?,
            Func::Replace(from, to) => map_text(&first(), |s| Cow::Owned(s.replace(from.as_str(), to)))?,
            Func::RegexReplace(regex, to) => map_text(&first(), |s| regex.replace_all(s, to.as_str()))?,
            Func::Substring(start, len) => map_text(&first(), |s| {
                let tail = s.char_indices().nth(start - 1).map_or("", |(at, _)| &s[at..]);
                match len {
                    Some(len) => Cow::Borrowed(tail.char_indices().nth(*len).map_or(tail, |(end, _)| &tail[..end])),
                    None => Cow::Borrowed(tail),
                }
            })?,
            Func::Mask(keep) => map_text(&first(), |s| {
                let chars = s.chars().count();
                let hidden = chars.saturating_sub(*keep);
                Cow::Owned(s.chars().enumerate().map(|(i, c)| if i < hidden { '*' } else { c }).collect())
            })?,
            Func::Hash => {
                let key = self.hash_key.expect("hash() is resolved only with a key");
                map_text(&first(), |s| Cow::Owned(blake3::keyed_hash(&key, s.as_bytes()).to_hex().to_string()))?
            }
            Func::Concat => {
                let texts = args.iter().map(text).collect::<Result<Vec<_>>>()?;
                let mut out = StringBuilder::with_capacity(rows, rows * 16);
                let mut row_text = String::new();
                for row in 0..rows {
                    row_text.clear();
                    for t in &texts {
                        if t.is_valid(row) {
                            row_text.push_str(t.value(row));
                        }
                    }
                    out.append_value(&row_text);
                }
                Arc::new(out.finish())
            }
            Func::Coalesce => {
                let data_type =
                    args.iter().map(|a| a.data_type().clone()).find(|t| *t != DataType::Null).unwrap_or(DataType::Null);
                let mut result = new_null_array(&data_type, rows);
                for arg in args.drain(..).rev() {
                    let arg = cast_exact(&arg, &data_type, &self.table, column)?;
                    let present = present_mask(arg.as_ref());
                    result = arrow_select::zip::zip(&present, &arg, &result)?;
                }
                result
            }
            Func::NullIf(literal) => {
                let value = first();
                let probe = cast_exact(&literal_array(literal, 1), value.data_type(), &self.table, column)?;
                let probe = text(&probe)?;
                let values = text(&value)?;
                let equal = BooleanArray::from(
                    (0..rows).map(|r| values.is_valid(r) && values.value(r) == probe.value(0)).collect::<Vec<_>>(),
                );
                arrow_select::nullif::nullif(value.as_ref(), &equal)?
            }
            Func::Cast(to) => {
                let value = first();
                let options = CastOptions { safe: true, ..CastOptions::default() };
                let cast = cast_with_options(value.as_ref(), to, &options).map_err(|e| Error::BadValue {
                    table: self.table.clone(),
                    column: column.to_string(),
                    key: None,
                    reason: format!("cannot cast {} to {to}: {e}", value.data_type()),
                })?;
                if cast.null_count() > value.null_count() {
                    let shown = ArrayFormatter::try_new(value.as_ref(), &FormatOptions::default())?;
                    for row in 0..rows {
                        if value.is_valid(row) && cast.is_null(row) {
                            failures.fail(row, column, format!("cannot cast `{}` to {to}", shown.value(row)));
                        }
                    }
                }
                cast
            }
        })
    }
}

/// A constant column.
fn literal_array(literal: &Literal, rows: usize) -> ArrayRef {
    match literal {
        Literal::Null => new_null_array(&DataType::Null, rows),
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b; rows])),
        Literal::Int(i) => Arc::new(Int64Array::from(vec![*i; rows])),
        Literal::Float(x) => Arc::new(Float64Array::from(vec![*x; rows])),
        Literal::Text(s) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s.as_str(), rows))),
    }
}

/// True where the array holds a value.
fn present_mask(array: &dyn Array) -> BooleanArray {
    match array.logical_nulls() {
        Some(nulls) => BooleanArray::new(nulls.inner().clone(), None),
        None => BooleanArray::from(vec![true; array.len()]),
    }
}

/// Converts between types for `coalesce`/`null_if` arguments; a value that does not convert is
/// an error naming the column (the arguments of one call must agree).
fn cast_exact(array: &ArrayRef, to: &DataType, table: &str, column: &str) -> Result<ArrayRef> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    let options = CastOptions { safe: false, ..CastOptions::default() };
    cast_with_options(array.as_ref(), to, &options).map_err(|e| Error::BadValue {
        table: table.to_string(),
        column: column.to_string(),
        key: None,
        reason: format!("arguments must share a type: {} to {to}: {e}", array.data_type()),
    })
}

/// Any array as text (values in their display form).
fn text(array: &ArrayRef) -> Result<StringArray> {
    let utf8 = match array.data_type() {
        DataType::Utf8 => array.clone(),
        _ => arrow_cast::cast(array.as_ref(), &DataType::Utf8)?,
    };
    Ok(utf8.as_any().downcast_ref::<StringArray>().expect("cast to Utf8 yields a StringArray").clone())
}

/// Applies `f` to every non-NULL value's text.
fn map_text(array: &ArrayRef, f: impl Fn(&str) -> Cow<'_, str>) -> Result<ArrayRef> {
    let values = text(array)?;
    let mut out = StringBuilder::with_capacity(values.len(), values.values().len());
    for row in 0..values.len() {
        if values.is_valid(row) {
            out.append_value(f(values.value(row)));
        } else {
            out.append_null();
        }
    }
    Ok(Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use barge_core::KeySpec;
    use proptest::prelude::*;

    use super::*;
    use crate::expr::parse;

    fn table() -> TableInfo {
        let mut email = Field::new("email", DataType::Utf8, false);
        email.set_metadata([(META_NATIVE_TYPE, "varchar(320)")]);
        TableInfo {
            name: "users".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                email,
                Field::new("name", DataType::Utf8, true),
                Field::new("created", DataType::Utf8, true),
                Field::new("modified", DataType::Utf8, true),
            ])),
            key: KeySpec::Primary(vec![0]),
            estimated_rows: 0,
            indexes: Vec::new(),
            foreign_keys: Vec::new(),
            checks: Vec::new(),
            sql_indexes: Vec::new(),
            comment: None,
            filter: None,
            window: None,
        }
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            table().schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["A@X.org", "b@y.ORG", "ÄÖ@z"])),
                Arc::new(StringArray::from(vec![Some("  Ann "), None, Some("Bo")])),
                Arc::new(StringArray::from(vec![Some("2020"), Some("2021"), Some("x")])),
                Arc::new(StringArray::from(vec![None, Some("2022"), None])),
            ],
        )
        .unwrap()
    }

    fn column(name: &str, expr: &str) -> ColumnSpec {
        ColumnSpec { name: name.into(), expr: Some(parse(expr).unwrap()), ..ColumnSpec::default() }
    }

    fn run(spec: &TransformSpec) -> Transformed {
        spec.compile(&table()).unwrap().apply(&batch()).unwrap()
    }

    fn texts(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let array = batch.column_by_name(name).unwrap();
        text(array).unwrap().iter().map(|v| v.map(str::to_string)).collect()
    }

    fn strings(values: &[Option<&str>]) -> Vec<Option<String>> {
        values.iter().map(|v| v.map(str::to_string)).collect()
    }

    #[test]
    fn the_seed_example_reshapes_users() {
        let spec = TransformSpec {
            columns: vec![
                column("email", "lower(email)"),
                column("name", "trim(name)"),
                ColumnSpec { name: "created_at".into(), from: Some("created".into()), ..ColumnSpec::default() },
                column("updated_at", "coalesce(modified, created)"),
            ],
            drop: vec!["modified".into()],
            ..TransformSpec::default()
        };
        let compiled = spec.compile(&table()).unwrap();
        let names: Vec<_> = compiled.output_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["id", "email", "name", "created_at", "updated_at"]);
        assert_eq!(compiled.passthrough(0), Some(0));
        assert_eq!(compiled.passthrough(3), Some(3));
        assert_eq!(compiled.passthrough(1), None);
        let email = compiled.output_schema().field(1).clone();
        assert_eq!(email.metadata().get(META_NATIVE_TYPE).map(String::as_str), Some("varchar(320)"));
        let out = compiled.apply(&batch()).unwrap();
        assert!(out.failures.is_empty());
        assert_eq!(texts(&out.batch, "email"), strings(&[Some("a@x.org"), Some("b@y.org"), Some("äö@z")]));
        assert_eq!(texts(&out.batch, "name"), strings(&[Some("Ann"), None, Some("Bo")]));
        assert_eq!(texts(&out.batch, "updated_at"), strings(&[Some("2020"), Some("2022"), Some("x")]));
    }

    #[test]
    fn text_functions() {
        let spec = TransformSpec {
            columns: vec![
                column("a", "upper(email)"),
                column("b", "replace(email, '@', ' at ')"),
                column("c", "regex_replace(email, '^([^@]*)@.*$', '$1')"),
                column("d", "substring(email, 2, 3)"),
                column("e", "mask(email, 3)"),
                column("f", "concat(id, '-', name)"),
                column("g", "null_if(created, 'x')"),
                column("h", "default(name, 'anon')"),
                column("i", "'const'"),
                column("j", "ltrim(name)"),
                column("k", "rtrim(name)"),
            ],
            ..TransformSpec::default()
        };
        let out = run(&spec).batch;
        assert_eq!(texts(&out, "a"), strings(&[Some("A@X.ORG"), Some("B@Y.ORG"), Some("ÄÖ@Z")]));
        assert_eq!(texts(&out, "b"), strings(&[Some("A at X.org"), Some("b at y.ORG"), Some("ÄÖ at z")]));
        assert_eq!(texts(&out, "c"), strings(&[Some("A"), Some("b"), Some("ÄÖ")]));
        assert_eq!(texts(&out, "d"), strings(&[Some("@X."), Some("@y."), Some("Ö@z")]));
        assert_eq!(texts(&out, "e"), strings(&[Some("****org"), Some("****ORG"), Some("*Ö@z")]));
        assert_eq!(texts(&out, "f"), strings(&[Some("1-  Ann "), Some("2-"), Some("3-Bo")]));
        assert_eq!(texts(&out, "g"), strings(&[Some("2020"), Some("2021"), None]));
        assert_eq!(texts(&out, "h"), strings(&[Some("  Ann "), Some("anon"), Some("Bo")]));
        assert_eq!(texts(&out, "i"), strings(&[Some("const"), Some("const"), Some("const")]));
        assert_eq!(texts(&out, "j"), strings(&[Some("Ann "), None, Some("Bo")]));
        assert_eq!(texts(&out, "k"), strings(&[Some("  Ann"), None, Some("Bo")]));
    }

    #[test]
    fn hashing_is_keyed_and_deterministic() {
        let spec = |key: u8| TransformSpec {
            columns: vec![column("email", "hash(email)")],
            hash_key: Some([key; 32]),
            ..TransformSpec::default()
        };
        let a = texts(&run(&spec(1)).batch, "email");
        assert_eq!(a, texts(&run(&spec(1)).batch, "email"));
        assert_ne!(a, texts(&run(&spec(2)).batch, "email"));
        assert_eq!(a[0].as_deref(), Some(blake3::keyed_hash(&[1; 32], b"A@X.org").to_hex().as_str()));
    }

    #[test]
    fn a_failed_cast_rejects_its_row_only() {
        let spec =
            TransformSpec { columns: vec![column("year", "cast(created, 'int64')")], ..TransformSpec::default() };
        let out = run(&spec);
        assert_eq!(out.failures, vec![(2, "year".to_string(), "cannot cast `x` to Int64".to_string())]);
        assert_eq!(out.batch.num_rows(), 2);
        let years = out.batch.column_by_name("year").unwrap().as_primitive::<Int64Type>();
        assert_eq!(years.values().to_vec(), vec![2020, 2021]);
        assert_eq!(out.batch.column(0).as_primitive::<Int64Type>().values().to_vec(), vec![1, 2]);
    }

    #[test]
    fn bad_specs_are_configuration_errors() {
        let error = |spec: TransformSpec| spec.compile(&table()).unwrap_err().to_string();
        let one = |c: ColumnSpec| TransformSpec { columns: vec![c], ..TransformSpec::default() };
        assert_eq!(error(one(column("x", "lower(nope)"))), "column `nope` not found in source table `users`");
        assert!(error(one(column("x", "shout(email)"))).contains("unknown function shout()"));
        assert!(error(one(column("x", "lower(email, name)"))).contains("lower() takes 1 argument(s), not 2"));
        assert!(error(one(column("x", "hash(email)"))).contains("hash_key"));
        assert!(error(one(column("x", "cast(email, 'money')"))).contains("unknown cast type `money`"));
        assert!(error(one(ColumnSpec { name: "x".into(), ..ColumnSpec::default() })).contains("give it an `expr`"));
        let twice = TransformSpec {
            columns: vec![ColumnSpec { name: "name".into(), from: Some("email".into()), ..ColumnSpec::default() }],
            ..TransformSpec::default()
        };
        assert!(error(twice).contains("two target columns are named `name`"));
    }

    proptest! {
        #[test]
        fn mask_keeps_length_and_tail(s in "\\PC{0,20}", keep in 0usize..6) {
            let table = TableInfo {
                schema: Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)])),
                ..table()
            };
            let spec = TransformSpec {
                columns: vec![column("s", &format!("mask(s, {keep})"))],
                ..TransformSpec::default()
            };
            let input = RecordBatch::try_new(table.schema.clone(), vec![Arc::new(StringArray::from(vec![s.clone()]))])
                .unwrap();
            let out = spec.compile(&table).unwrap().apply(&input).unwrap().batch;
            let masked = out.column(0).as_string::<i32>().value(0).to_string();
            prop_assert_eq!(masked.chars().count(), s.chars().count());
            let hidden = s.chars().count().saturating_sub(keep);
            let tail: String = s.chars().skip(hidden).collect();
            prop_assert!(masked.ends_with(&tail));
            prop_assert!(masked.chars().take(hidden).all(|c| c == '*'));
        }
    }
}
