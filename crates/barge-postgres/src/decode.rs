//! Binary COPY → Arrow: a streaming tuple parser and one decoder per column, chosen once per read.

use std::sync::Arc;

use arrow_array::builder::*;
use arrow_array::types::IntervalMonthDayNano;
use arrow_array::{ArrayRef, BinaryArray, ListArray, RecordBatch, RecordBatchOptions, StringArray};
use arrow_buffer::{Buffer, NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, FieldRef, Schema, SchemaRef};
use bytes::Bytes;

use crate::types::{Codec, PgColumnType, UTC};
use crate::wire::{self, COPY_HEADER, COPY_TRAILER, Numeric, be_i16, be_i32, be_i64};

/// Appends PostgreSQL binary values of one column to an Arrow builder.
pub enum Decoder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Oid(UInt32Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    NumericText(StringBuilder),
    Money(Decimal128Builder),
    /// Text gathered as bytes and checked as UTF-8 once per batch (see [`Decoder::finish`]).
    Text(BinaryBuilder),
    Jsonb(BinaryBuilder),
    Bytea(BinaryBuilder),
    /// PostGIS EWKB, kept in barge's canonical geometry layout.
    Geometry(BinaryBuilder),
    Uuid(StringBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Interval(IntervalMonthDayNanoBuilder),
    List {
        field: FieldRef,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        items: Box<Decoder>,
    },
}

fn expect_len(b: &[u8], n: usize, what: &str) -> Result<(), String> {
    if b.len() == n { Ok(()) } else { Err(format!("{what} value has {} bytes, expected {n}", b.len())) }
}

impl Decoder {
    pub fn new(column: &PgColumnType, capacity: usize) -> Self {
        let element = PgColumnType { array: false, ..column.clone() };
        if column.array {
            let DataType::List(field) = column.arrow() else { unreachable!("arrays are lists") };
            return Decoder::List {
                field,
                offsets: vec![0],
                nulls: NullBufferBuilder::new(capacity),
                items: Box::new(Decoder::new(&element, capacity)),
            };
        }
        match (column.codec, element.element_arrow()) {
            (Codec::Bool, _) => Decoder::Bool(BooleanBuilder::with_capacity(capacity)),
            (Codec::Int2, _) => Decoder::Int2(Int16Builder::with_capacity(capacity)),
            (Codec::Int4, _) => Decoder::Int4(Int32Builder::with_capacity(capacity)),
            (Codec::Int8, _) => Decoder::Int8(Int64Builder::with_capacity(capacity)),
            (Codec::Oid, _) => Decoder::Oid(UInt32Builder::with_capacity(capacity)),
            (Codec::Float4, _) => Decoder::Float4(Float32Builder::with_capacity(capacity)),
            (Codec::Float8, _) => Decoder::Float8(Float64Builder::with_capacity(capacity)),
            (Codec::Numeric, DataType::Decimal128(p, s)) => {
                Decoder::Decimal(Decimal128Builder::with_capacity(capacity), p, s)
            }
            (Codec::Numeric, _) => Decoder::NumericText(StringBuilder::with_capacity(capacity, capacity * 8)),
            (Codec::Money, _) => Decoder::Money(Decimal128Builder::with_capacity(capacity)),
            (Codec::Jsonb, _) => Decoder::Jsonb(BinaryBuilder::with_capacity(capacity, capacity * 32)),
            (Codec::Text | Codec::Char | Codec::Json | Codec::AsText, _) => {
                Decoder::Text(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            (Codec::Bytea, _) => Decoder::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            (Codec::Geometry, _) => Decoder::Geometry(BinaryBuilder::with_capacity(capacity, capacity * 32)),
            (Codec::Uuid, _) => Decoder::Uuid(StringBuilder::with_capacity(capacity, capacity * 36)),
            (Codec::Date, _) => Decoder::Date(Date32Builder::with_capacity(capacity)),
            (Codec::Time, _) => Decoder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            (Codec::Timestamp, _) => Decoder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), false),
            (Codec::TimestampTz, _) => Decoder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), true),
            (Codec::Interval, _) => Decoder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity)),
        }
    }

    /// Appends one field: `None` is SQL NULL.
    pub fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(b) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            Decoder::Bool(x) => {
                expect_len(b, 1, "boolean")?;
                x.append_value(b[0] != 0);
            }
            Decoder::Int2(x) => {
                expect_len(b, 2, "smallint")?;
                x.append_value(be_i16(b));
            }
            Decoder::Int4(x) => {
                expect_len(b, 4, "integer")?;
                x.append_value(be_i32(b));
            }
            Decoder::Int8(x) => {
                expect_len(b, 8, "bigint")?;
                x.append_value(be_i64(b));
            }
            Decoder::Oid(x) => {
                expect_len(b, 4, "oid")?;
                x.append_value(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            Decoder::Float4(x) => {
                expect_len(b, 4, "real")?;
                x.append_value(f32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
            Decoder::Float8(x) => {
                expect_len(b, 8, "double precision")?;
                x.append_value(f64::from_bits(be_i64(b) as u64));
            }
            Decoder::Decimal(x, _, s) => x.append_value(Numeric::parse(b)?.to_i128(*s)?),
            Decoder::NumericText(x) => {
                let mut text = String::new();
                Numeric::parse(b)?.to_text(&mut text);
                x.append_value(text);
            }
            Decoder::Money(x) => {
                expect_len(b, 8, "money")?;
                x.append_value(i128::from(be_i64(b)));
            }
            Decoder::Text(x) => x.append_value(b),
            Decoder::Jsonb(x) => match b.split_first() {
                Some((1, json)) => x.append_value(json),
                _ => return Err("unknown jsonb binary version".into()),
            },
            Decoder::Bytea(x) => x.append_value(b),
            Decoder::Geometry(x) => x.append_value(crate::geometry::from_ewkb(b)?),
            Decoder::Uuid(x) => {
                expect_len(b, 16, "uuid")?;
                let mut text = String::with_capacity(36);
                wire::uuid_text(b, &mut text);
                x.append_value(text);
            }
            Decoder::Date(x) => {
                expect_len(b, 4, "date")?;
                let days = be_i32(b);
                if days == i32::MAX || days == i32::MIN {
                    return Err("date ±infinity has no Arrow representation".into());
                }
                x.append_value(days + wire::PG_EPOCH_DAYS);
            }
            Decoder::Time(x) => {
                expect_len(b, 8, "time")?;
                x.append_value(be_i64(b));
            }
            Decoder::Timestamp(x, _) => {
                expect_len(b, 8, "timestamp")?;
                let micros = be_i64(b);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err("timestamp ±infinity has no Arrow representation".into());
                }
                x.append_value(micros.checked_add(wire::PG_EPOCH_MICROS).ok_or("timestamp out of range")?);
            }
            Decoder::Interval(x) => {
                expect_len(b, 16, "interval")?;
                let micros = be_i64(b);
                x.append_value(IntervalMonthDayNano::new(be_i32(&b[12..]), be_i32(&b[8..]), micros * 1_000));
            }
            Decoder::List { offsets, nulls, items, .. } => {
                let count = decode_array(b, items)?;
                let last = *offsets.last().expect("starts with 0");
                offsets.push(last + i32::try_from(count).map_err(|_| "array too long")?);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Decoder::Bool(x) => x.append_null(),
            Decoder::Int2(x) => x.append_null(),
            Decoder::Int4(x) => x.append_null(),
            Decoder::Int8(x) => x.append_null(),
            Decoder::Oid(x) => x.append_null(),
            Decoder::Float4(x) => x.append_null(),
            Decoder::Float8(x) => x.append_null(),
            Decoder::Decimal(x, ..) | Decoder::Money(x) => x.append_null(),
            Decoder::NumericText(x) | Decoder::Uuid(x) => x.append_null(),
            Decoder::Text(x) | Decoder::Jsonb(x) | Decoder::Bytea(x) | Decoder::Geometry(x) => x.append_null(),
            Decoder::Date(x) => x.append_null(),
            Decoder::Time(x) => x.append_null(),
            Decoder::Timestamp(x, _) => x.append_null(),
            Decoder::Interval(x) => x.append_null(),
            Decoder::List { offsets, nulls, .. } => {
                offsets.push(*offsets.last().expect("starts with 0"));
                nulls.append_null();
            }
        }
    }

    /// The column so far. Text is checked as UTF-8 here, in one pass over the batch's values (each
    /// starting on a character boundary), instead of one check per value.
    pub fn finish(&mut self) -> Result<ArrayRef, String> {
        Ok(match self {
            Decoder::Bool(x) => Arc::new(x.finish()),
            Decoder::Int2(x) => Arc::new(x.finish()),
            Decoder::Int4(x) => Arc::new(x.finish()),
            Decoder::Int8(x) => Arc::new(x.finish()),
            Decoder::Oid(x) => Arc::new(x.finish()),
            Decoder::Float4(x) => Arc::new(x.finish()),
            Decoder::Float8(x) => Arc::new(x.finish()),
            Decoder::Decimal(x, p, s) => Arc::new(x.finish().with_precision_and_scale(*p, *s).expect("valid")),
            Decoder::Money(x) => Arc::new(x.finish().with_precision_and_scale(19, 2).expect("valid")),
            Decoder::NumericText(x) | Decoder::Uuid(x) => Arc::new(x.finish()),
            Decoder::Text(x) | Decoder::Jsonb(x) => Arc::new(
                StringArray::try_from_binary(x.finish()).map_err(|e| format!("text is not valid UTF-8 ({e})"))?,
            ),
            Decoder::Bytea(x) | Decoder::Geometry(x) => Arc::new(x.finish()),
            Decoder::Date(x) => Arc::new(x.finish()),
            Decoder::Time(x) => Arc::new(x.finish()),
            Decoder::Timestamp(x, false) => Arc::new(x.finish()),
            Decoder::Timestamp(x, true) => Arc::new(x.finish().with_timezone(UTC)),
            Decoder::Interval(x) => Arc::new(x.finish()),
            Decoder::List { field, offsets, nulls, items } => {
                let values = items.finish()?;
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(ListArray::new(field.clone(), offsets, values, nulls.finish()))
            }
        })
    }
}

/// Decodes a one-dimensional binary array into `items`; returns the element count.
fn decode_array(b: &[u8], items: &mut Decoder) -> Result<usize, String> {
    if b.len() < 12 {
        return Err("truncated array".into());
    }
    let dimensions = be_i32(b);
    if dimensions == 0 {
        return Ok(0);
    }
    if dimensions != 1 {
        return Err(format!("{dimensions}-dimensional arrays are not supported (one dimension only)"));
    }
    let count = usize::try_from(be_i32(&b[12..])).map_err(|_| "negative array length")?;
    let mut pos = 20; // ndim, has_null, element oid, length, lower bound
    for _ in 0..count {
        let len = be_i32(b.get(pos..pos + 4).ok_or("truncated array")?);
        pos += 4;
        if len < 0 {
            items.append(None)?;
        } else {
            let end = pos + len as usize;
            items.append(Some(b.get(pos..end).ok_or("truncated array element")?))?;
            pos = end;
        }
    }
    Ok(count)
}

/// The buffer capacity a parser keeps between chunks; rows from this size on go on without
/// being copied (see [`CopyParser::take_rows`] and [`CopyParser::shared_row`]).
pub(crate) const PENDING_KEEP_BYTES: usize = 4 << 20;
/// Text and bytea values from this size on, in a row read without copying, stay where they were
/// read: the batch's array refers to the stream.
const HUGE_VALUE_BYTES: usize = 1 << 20;

/// Parses a binary COPY stream fed in arbitrary chunks, emitting record batches of `batch_rows`.
pub struct CopyParser {
    schema: SchemaRef,
    decoders: Vec<Decoder>,
    batch_rows: usize,
    /// A batch also closes once its rows took this many bytes of the stream.
    batch_bytes: usize,
    /// Bytes of the stream the current batch's rows took.
    bytes: usize,
    pending: Vec<u8>,
    header_done: bool,
    done: bool,
    rows: usize,
    /// With [`Self::keeping_native`]: the current batch's rows as read, as a binary COPY stream of
    /// their own (header, rows, trailer) that a target with the same column types loads unchanged.
    native: Option<Vec<u8>>,
    /// False when only the native stream is wanted: rows are framed and counted, not decoded,
    /// and batches carry no columns.
    decode: bool,
}

/// A batch, and its rows' binary COPY stream when the parser keeps it.
pub type Emit<'a> = dyn FnMut(RecordBatch, Option<Bytes>) -> barge_core::Result<()> + 'a;

/// A value that did not decode: which column, and why.
pub struct DecodeError {
    pub column: usize,
    pub reason: String,
}

impl CopyParser {
    /// Closes batches once their rows took `bytes` bytes of the stream too (at least one row).
    pub fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    pub fn new(schema: SchemaRef, columns: &[PgColumnType], batch_rows: usize) -> Self {
        CopyParser {
            schema,
            decoders: columns.iter().map(|c| Decoder::new(c, batch_rows)).collect(),
            batch_rows,
            batch_bytes: usize::MAX,
            bytes: 0,
            pending: Vec::new(),
            header_done: false,
            done: false,
            rows: 0,
            native: None,
            decode: true,
        }
    }

    /// Also hands each batch's rows over as they were read, as a binary COPY stream of their own;
    /// only them, in batches without columns, unless `decode`.
    pub fn keeping_native(mut self, decode: bool) -> Self {
        self.native = Some(COPY_HEADER.to_vec());
        self.decode = decode;
        self
    }

    fn keep(&mut self, rows: &[u8]) {
        if let Some(native) = &mut self.native {
            native.extend_from_slice(rows);
        }
    }

    /// The buffer to append COPY data to (then call [`Self::parse`]): filling it directly saves a
    /// copy of every row.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Appends COPY data to [`Self::buffer`], leaving room behind it for a stream trailer and
    /// header, so that a batch of huge values can leave as the buffer itself (see
    /// [`Self::take_rows`]).
    pub fn append(&mut self, data: &[u8]) {
        let room = COPY_HEADER.len() + COPY_TRAILER.len();
        if self.pending.capacity() - self.pending.len() < data.len() + room {
            self.pending.reserve(data.len() + room);
        }
        self.pending.extend_from_slice(data);
    }

    /// Decodes every complete tuple in the buffer, calling `emit` for every full batch; an
    /// incomplete tuple at the end stays buffered.
    pub fn parse(&mut self, emit: &mut Emit<'_>) -> Result<(), FeedError> {
        let mut pos = 0;
        if !self.header_done {
            if self.pending.len() < COPY_HEADER.len() {
                return Ok(());
            }
            if self.pending[..11] != COPY_HEADER[..11] {
                return Err(FeedError::Decode(DecodeError { column: 0, reason: "not a binary COPY stream".into() }));
            }
            pos = COPY_HEADER.len() + usize::try_from(be_i32(&self.pending[15..])).unwrap_or(0);
            self.header_done = true;
        }
        // Taken out while decoding so batches can be finished mid-buffer; errors end the stream.
        let mut buf = std::mem::take(&mut self.pending);
        // Rows decoded but not yet kept, as a byte span (copied whole, not row by row).
        let (mut kept, mut rows_end) = (pos, pos);
        while !self.done && buf.len() - pos >= 2 {
            let fields = be_i16(&buf[pos..]);
            if fields == -1 {
                self.done = true;
                pos += 2;
                break;
            }
            // Only decode a tuple once all of it has arrived.
            let mut end = pos + 2;
            let mut complete = true;
            for _ in 0..fields {
                if buf.len() - end < 4 {
                    complete = false;
                    break;
                }
                let len = be_i32(&buf[end..]);
                end += 4;
                if len > 0 {
                    if buf.len() - end < len as usize {
                        complete = false;
                        break;
                    }
                    end += len as usize;
                }
            }
            if !complete {
                break;
            }
            if fields as usize != self.decoders.len() {
                return Err(FeedError::Decode(DecodeError {
                    column: 0,
                    reason: format!("tuple has {fields} fields, expected {}", self.decoders.len()),
                }));
            }
            // A huge row alone in its batch: its values stay where they were read (see
            // `Self::shared_row`), so that the batch holds no second copy of them.
            let tuple = end - pos;
            if self.decode
                && self.rows == 0
                && tuple >= PENDING_KEEP_BYTES
                && (self.batch_rows == 1 || tuple >= self.batch_bytes)
                && let Some(stream) = Self::stream_from(&mut buf, pos, end)
            {
                let (batch, native) = self.shared_row(Bytes::from(stream))?;
                emit(batch, native).map_err(FeedError::Emit)?;
                (pos, kept, rows_end) = (0, 0, 0);
                continue;
            }
            let mut at = pos + 2;
            let decoders = if self.decode { self.decoders.as_mut_slice() } else { &mut [] };
            for (column, decoder) in decoders.iter_mut().enumerate() {
                let len = be_i32(&buf[at..]);
                at += 4;
                let value = if len < 0 {
                    None
                } else {
                    at += len as usize;
                    Some(&buf[at - len as usize..at])
                };
                decoder.append(value).map_err(|reason| FeedError::Decode(DecodeError { column, reason }))?;
            }
            self.bytes += end - pos;
            (pos, rows_end) = (end, end);
            self.rows += 1;
            if self.rows == self.batch_rows || self.bytes >= self.batch_bytes {
                let taken = self.take_rows(&mut buf, kept, rows_end);
                if taken.is_some() {
                    (pos, kept, rows_end) = (0, 0, 0);
                } else if self.native.is_none() && rows_end >= PENDING_KEEP_BYTES {
                    // Decoded, and not kept: the rows as read go before the batch travels on.
                    Self::release(&mut buf, pos);
                    (pos, kept, rows_end) = (0, 0, 0);
                } else {
                    self.keep(&buf[kept..rows_end]);
                    kept = rows_end;
                }
                let (batch, native) = self.finish_batch(taken)?;
                emit(batch, native).map_err(FeedError::Emit)?;
            }
        }
        self.keep(&buf[kept..rows_end]);
        Self::release(&mut buf, pos);
        self.pending = buf;
        Ok(())
    }

    /// Drops the first `consumed` bytes of `buf`; a huge row leaves its capacity behind, which is
    /// given back rather than held while the batch it went into travels on.
    fn release(buf: &mut Vec<u8>, consumed: usize) {
        buf.drain(..consumed);
        if buf.capacity() > PENDING_KEEP_BYTES && buf.len() < buf.capacity() / 4 {
            buf.shrink_to(buf.len().max(PENDING_KEEP_BYTES));
        }
    }

    /// A batch's native stream made of the buffer itself, without copying its rows, when they are
    /// all in `buf[kept..rows_end]` and large (huge values): `buf` keeps only what follows them.
    /// `None` when the rows should be copied as usual.
    fn take_rows(&self, buf: &mut Vec<u8>, kept: usize, rows_end: usize) -> Option<Vec<u8>> {
        let fresh = self.native.as_ref().is_some_and(|native| native.len() == COPY_HEADER.len());
        if !fresh || rows_end - kept < PENDING_KEEP_BYTES {
            return None;
        }
        Self::stream_from(buf, kept, rows_end)
    }

    /// The rows `buf[start..end]` as a binary COPY stream of their own, made of `buf` itself
    /// (header written in front, trailer behind); `buf` keeps only what follows them. `None` when
    /// that would reallocate: there must be room for the header in front (consumed bytes before
    /// `start`, or spare capacity) and for the trailer behind.
    fn stream_from(buf: &mut Vec<u8>, start: usize, end: usize) -> Option<Vec<u8>> {
        let header = COPY_HEADER.len();
        if buf.capacity() - end + start.min(header) < header + COPY_TRAILER.len() {
            return None;
        }
        let tail = buf[end..].to_vec();
        buf.truncate(end);
        if start >= header {
            buf.drain(..start - header);
        } else {
            buf.splice(0..0, std::iter::repeat_n(0, header - start));
        }
        buf[..header].copy_from_slice(COPY_HEADER);
        buf.extend_from_slice(COPY_TRAILER);
        Some(std::mem::replace(buf, tail))
    }

    /// The batch of the one row that `stream` (a binary COPY stream of it alone) holds, with its
    /// huge text and bytea values referring to `stream` rather than copied, and `stream` as its
    /// native rows when they are kept.
    fn shared_row(&mut self, stream: Bytes) -> Result<(RecordBatch, Option<Bytes>), FeedError> {
        let mut at = COPY_HEADER.len() + 2;
        let mut shared: Vec<(usize, ArrayRef)> = Vec::new();
        for (column, decoder) in self.decoders.iter_mut().enumerate() {
            let len = be_i32(&stream[at..]);
            at += 4;
            let failed = |reason: String| FeedError::Decode(DecodeError { column, reason });
            if len < 0 {
                decoder.append(None).map_err(failed)?;
                continue;
            }
            let value = at..at + len as usize;
            at = value.end;
            let huge = value.len() >= HUGE_VALUE_BYTES;
            let array: ArrayRef = match decoder {
                Decoder::Bytea(_) if huge => {
                    let offsets = OffsetBuffer::new(vec![0, len].into());
                    Arc::new(BinaryArray::new(offsets, Buffer::from(stream.slice(value)), None))
                }
                Decoder::Text(_) if huge => {
                    let offsets = OffsetBuffer::new(vec![0, len].into());
                    let text = StringArray::try_new(offsets, Buffer::from(stream.slice(value)), None)
                        .map_err(|e| failed(format!("text is not valid UTF-8 ({e})")))?;
                    Arc::new(text)
                }
                _ => {
                    decoder.append(Some(&stream[value])).map_err(failed)?;
                    continue;
                }
            };
            // The decoder stays a row long; its value is replaced by the shared one.
            decoder.append(None).map_err(failed)?;
            shared.push((column, array));
        }
        (self.rows, self.bytes) = (0, 0);
        let mut columns = self.finish_columns()?;
        for (column, array) in shared {
            columns[column] = array;
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| FeedError::Emit(e.into()))?;
        Ok((batch, self.native.is_some().then_some(stream)))
    }

    /// Ends the current batch; `taken` is its native stream when [`Self::take_rows`] made it.
    fn finish_batch(&mut self, taken: Option<Vec<u8>>) -> Result<(RecordBatch, Option<Bytes>), FeedError> {
        let rows = std::mem::take(&mut self.rows);
        self.bytes = 0;
        let native = match taken {
            Some(stream) => Some(stream.into()),
            None => self.native.as_mut().map(|native| {
                let mut next = Vec::with_capacity(native.len().min(PENDING_KEEP_BYTES));
                next.extend_from_slice(COPY_HEADER);
                let mut stream = std::mem::replace(native, next);
                stream.extend_from_slice(COPY_TRAILER);
                stream.into()
            }),
        };
        let batch = if self.decode {
            RecordBatch::try_new(self.schema.clone(), self.finish_columns()?)
        } else {
            let options = RecordBatchOptions::new().with_row_count(Some(rows));
            RecordBatch::try_new_with_options(Arc::new(Schema::empty()), Vec::new(), &options)
        };
        let batch = batch.map_err(|e| FeedError::Emit(e.into()))?;
        Ok((batch, native))
    }

    fn finish_columns(&mut self) -> Result<Vec<ArrayRef>, FeedError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.decoders.len());
        for (column, decoder) in self.decoders.iter_mut().enumerate() {
            columns.push(decoder.finish().map_err(|reason| FeedError::Decode(DecodeError { column, reason }))?);
        }
        Ok(columns)
    }

    /// Emits the last partial batch; the stream must have ended with its trailer.
    pub fn finish(mut self, emit: &mut Emit<'_>) -> Result<(), FeedError> {
        if !self.done {
            return Err(FeedError::Decode(DecodeError { column: 0, reason: "COPY stream ended early".into() }));
        }
        if self.rows > 0 {
            let (batch, native) = self.finish_batch(None)?;
            emit(batch, native).map_err(FeedError::Emit)?;
        }
        Ok(())
    }
}

/// Why feeding stopped: a value that would not decode, or the consumer refused a batch.
pub enum FeedError {
    Decode(DecodeError),
    Emit(barge_core::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{TargetType, encode_batch};
    use crate::types::resolve;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use proptest::prelude::*;

    fn columns() -> Vec<PgColumnType> {
        ["bigint", "text"].iter().map(|t| resolve(t).unwrap()).collect()
    }

    fn batch(rows: &[(i64, Option<String>)]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("t", DataType::Utf8, true)]);
        let ids = Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let texts = StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ids), Arc::new(texts)]).unwrap()
    }

    /// Feeds `stream` in chunks of `chunk` bytes; returns each batch with its kept stream.
    fn parse(stream: &[u8], schema: SchemaRef, batch_rows: usize, chunk: usize) -> Vec<(RecordBatch, Vec<u8>)> {
        parse_as(stream, schema, batch_rows, chunk, true)
    }

    fn parse_as(
        stream: &[u8],
        schema: SchemaRef,
        batch_rows: usize,
        chunk: usize,
        decode: bool,
    ) -> Vec<(RecordBatch, Vec<u8>)> {
        let mut parser = CopyParser::new(schema, &columns(), batch_rows).keeping_native(decode);
        let mut out = Vec::new();
        let mut emit = |b: RecordBatch, native: Option<Bytes>| {
            out.push((b, native.expect("kept").to_vec()));
            Ok(())
        };
        for piece in stream.chunks(chunk.max(1)) {
            parser.buffer().extend_from_slice(piece);
            assert!(parser.parse(&mut emit).is_ok());
        }
        assert!(parser.finish(&mut emit).is_ok());
        out
    }

    /// A COPY stream of (bigint, text) rows with these raw text bytes.
    fn raw_stream(texts: &[&[u8]]) -> Vec<u8> {
        let mut out = COPY_HEADER.to_vec();
        for (i, text) in texts.iter().enumerate() {
            out.extend_from_slice(&2i16.to_be_bytes());
            out.extend_from_slice(&8i32.to_be_bytes());
            out.extend_from_slice(&(i as i64).to_be_bytes());
            out.extend_from_slice(&(text.len() as i32).to_be_bytes());
            out.extend_from_slice(text);
        }
        out.extend_from_slice(COPY_TRAILER);
        out
    }

    #[test]
    fn batches_close_at_their_byte_limit_and_hold_at_least_one_row() {
        let wide = vec![b'x'; 1000];
        let texts: Vec<&[u8]> = (0..10).map(|_| wide.as_slice()).collect();
        let stream = raw_stream(&texts);
        for (limit, expected) in [(3_500, vec![4, 4, 2]), (1, vec![1; 10]), (usize::MAX, vec![10])] {
            let mut parser = CopyParser::new(batch(&[]).schema(), &columns(), 100).with_batch_bytes(limit);
            let mut sizes = Vec::new();
            let mut emit = |b: RecordBatch, _: Option<Bytes>| {
                sizes.push(b.num_rows());
                Ok(())
            };
            parser.buffer().extend_from_slice(&stream);
            assert!(parser.parse(&mut emit).is_ok());
            assert!(parser.finish(&mut emit).is_ok());
            assert_eq!(sizes, expected, "limit {limit}");
        }
    }

    #[test]
    fn batches_of_huge_values_hand_their_rows_over_intact() {
        // Rows above PENDING_KEEP_BYTES go out as the parser's own buffer (no copy): each batch's
        // stream must still be a whole COPY stream of exactly its rows, however the input came.
        let huge: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; PENDING_KEEP_BYTES + 1000 * usize::from(i)]).collect();
        let texts: Vec<&[u8]> = huge.iter().map(Vec::as_slice).collect();
        let stream = raw_stream(&texts);
        let row = |i: usize| {
            let mut one = raw_stream(&[texts[i]]);
            one[COPY_HEADER.len() + 6..COPY_HEADER.len() + 14].copy_from_slice(&(i as i64).to_be_bytes());
            one
        };
        for chunk in [stream.len(), 1 << 20, 4099, PENDING_KEEP_BYTES + 7] {
            for decode in [false, true] {
                // NOT NULL, as such columns usually are: a shared value must not leave a null behind.
                let schema = Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Int64, false),
                    Field::new("t", DataType::Utf8, false),
                ]));
                let mut parser = CopyParser::new(schema, &columns(), 100).with_batch_bytes(1).keeping_native(decode);
                let mut out = Vec::new();
                let mut emit = |b: RecordBatch, native: Option<Bytes>| {
                    out.push((b, native.expect("kept").to_vec()));
                    Ok(())
                };
                for piece in stream.chunks(chunk) {
                    parser.append(piece);
                    assert!(parser.parse(&mut emit).is_ok());
                }
                assert!(parser.finish(&mut emit).is_ok());
                assert_eq!(out.len(), 3, "chunk {chunk}");
                for (i, (b, native)) in out.iter().enumerate() {
                    assert_eq!(b.num_rows(), 1);
                    assert!(native == &row(i), "chunk {chunk}, decode {decode}: batch {i}'s stream differs");
                    if decode {
                        let text = b.column(1).as_any().downcast_ref::<StringArray>().unwrap().value(0);
                        assert_eq!(text.as_bytes(), texts[i]);
                    }
                }
            }
        }
    }

    fn decode_error(stream: &[u8]) -> Option<(usize, String)> {
        let mut parser = CopyParser::new(batch(&[]).schema(), &columns(), 16);
        parser.buffer().extend_from_slice(stream);
        let mut emit = |_: RecordBatch, _: Option<Bytes>| Ok(());
        match parser.parse(&mut emit).and_then(|()| parser.finish(&mut emit)) {
            Err(FeedError::Decode(e)) => Some((e.column, e.reason)),
            _ => None,
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_per_column() {
        assert_eq!(decode_error(&raw_stream(&[b"caf\xc3\xa9", b"ok"])), None);
        let (column, reason) = decode_error(&raw_stream(&[b"ok", b"\xff"])).expect("refused");
        assert_eq!(column, 1);
        assert!(reason.contains("not valid UTF-8"), "{reason}");
        // Halves of one character in two values: each alone is not text, though together they are.
        assert_eq!(decode_error(&raw_stream(&[b"\xc3", b"\xa9"])).map(|e| e.0), Some(1));
    }

    proptest! {
        /// Each batch's kept stream is a binary COPY stream of exactly its rows, however the input
        /// was cut into chunks.
        #[test]
        fn kept_streams_hold_exactly_their_batch(
            rows in prop::collection::vec((any::<i64>(), prop::option::of(".{0,20}")), 0..40),
            batch_rows in 1usize..8,
            chunk in 1usize..64,
        ) {
            let whole = batch(&rows);
            let targets: Vec<TargetType> = columns().into_iter().map(|column| TargetType { column, element_oid: 0 }).collect();
            let stream = encode_batch(&whole, &targets).unwrap();
            let parsed = parse(&stream, whole.schema(), batch_rows, chunk);
            prop_assert_eq!(parsed.iter().map(|(b, _)| b.num_rows()).sum::<usize>(), rows.len());
            // Without decoding: the same streams, batches of the same sizes without columns.
            let framed = parse_as(&stream, whole.schema(), batch_rows, chunk, false);
            prop_assert_eq!(framed.len(), parsed.len());
            for ((f, f_native), (p, p_native)) in framed.iter().zip(&parsed) {
                prop_assert_eq!((f.num_rows(), f.num_columns()), (p.num_rows(), 0));
                prop_assert_eq!(f_native, p_native);
            }
            for (b, native) in &parsed {
                prop_assert!(native.starts_with(COPY_HEADER) && native.ends_with(COPY_TRAILER));
                let again = parse(native, whole.schema(), 64, 7);
                prop_assert_eq!(again.len(), 1);
                prop_assert_eq!(&again[0].0, b);
                // And the target gets what the encoder would have written for this batch.
                prop_assert_eq!(native, &encode_batch(b, &targets).unwrap());
            }
        }
    }
}
