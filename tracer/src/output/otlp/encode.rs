//! A log record written straight into its protobuf encoding, in one pass,
//! into a buffer that is reused from one record to the next.
//!
//! The fields and their numbers are those of `opentelemetry-proto`'s
//! `LogRecord`, `KeyValue`, `AnyValue` and `ArrayValue`, written in the
//! order and form prost gives them, so that the bytes are exactly what
//! `LogRecord::encode` makes of the same record (the tests decode every
//! record with the crate's definitions and encode it again with prost).
//! Building a `LogRecord` and encoding it with prost measured every
//! attribute's length three times over (value, `AnyValue`, `KeyValue`), and
//! the structures themselves were a third of the loader's export cost;
//! here a length is known before its bytes are written.

use prost::encoding::{encoded_len_varint, WireType};

/// A key: every field number here is below 16, so one byte.
#[inline]
fn encode_key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    debug_assert!(tag < 16);
    buf.push(((tag << 3) | wire_type as u32) as u8);
}

const fn key_byte(tag: u32, wire_type: WireType) -> u8 {
    ((tag << 3) | wire_type as u32) as u8
}

/// prost's varint, for a Vec: one push for the small values that are
/// nearly all of them (prost's generic one cost a sixth of the export).
#[inline(always)]
pub(super) fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    if v < 0x80 {
        buf.push(v as u8);
        return;
    }
    let mut tmp = [0u8; 10];
    let mut i = 0;
    while v >= 0x80 {
        tmp[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    tmp[i] = v as u8;
    buf.extend_from_slice(&tmp[..=i]);
}

// LogRecord
const TIME_UNIX_NANO: u32 = 1;
const SEVERITY_NUMBER: u32 = 2;
const SEVERITY_TEXT: u32 = 3;
const BODY: u32 = 5;
const ATTRIBUTES: u32 = 6;
const OBSERVED_TIME_UNIX_NANO: u32 = 11;
const EVENT_NAME: u32 = 12;
// KeyValue
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
// AnyValue (a oneof: always written, even when zero or empty)
const STRING_VALUE: u32 = 1;
const BOOL_VALUE: u32 = 2;
const INT_VALUE: u32 = 3;
const DOUBLE_VALUE: u32 = 4;
const ARRAY_VALUE: u32 = 5;
// ArrayValue
const ARRAY_VALUES: u32 = 1;

/// A key of one byte: every field number here is below 16.
fn key_len(_tag: u32) -> usize {
    1
}

/// Bytes of a length-delimited field of `len` bytes, key and length
/// included.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited_head(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_delimited_head(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

/// The scratch space a record is written with, kept between records.
#[derive(Default)]
pub(super) struct Scratch {
    /// A string value, written before its length is known.
    text: String,
    /// The items of an array value, and where each ends in `text`.
    ends: Vec<usize>,
    /// A string value that was too long for one-byte lengths.
    bytes: Vec<u8>,
}

/// Writes one `LogRecord` (its fields, without the key and length that
/// put it in a `ScopeLogs`) into `buf`, which it clears.
pub(super) struct RecordWriter<'a> {
    buf: &'a mut Vec<u8>,
    scratch: &'a mut Scratch,
}

impl<'a> RecordWriter<'a> {
    /// Starts a record: its time, severity and body (fields 1, 2, 3, 5);
    /// its attributes come next, then [`Self::finish`].
    pub(super) fn start(
        buf: &'a mut Vec<u8>,
        scratch: &'a mut Scratch,
        time_unix_nano: u64,
        severity_number: i32,
        severity_text: &str,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Self {
        buf.clear();
        // What an exit record takes, once for a recycled buffer.
        buf.reserve(2048);
        // proto3 scalars: a zero is not written.
        if time_unix_nano != 0 {
            encode_key(TIME_UNIX_NANO, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&time_unix_nano.to_le_bytes());
        }
        if severity_number != 0 {
            encode_key(SEVERITY_NUMBER, WireType::Varint, buf);
            encode_varint(i64::from(severity_number) as u64, buf);
        }
        if !severity_text.is_empty() {
            put_bytes(buf, SEVERITY_TEXT, severity_text.as_bytes());
        }
        let mut w = Self { buf, scratch };
        // The body: an AnyValue holding a string, always present.
        let at = w.buf.len();
        w.buf.extend_from_slice(&[
            key_byte(BODY, WireType::LengthDelimited),
            0,
            key_byte(STRING_VALUE, WireType::LengthDelimited),
            0,
        ]);
        body(w.buf);
        let s = w.buf.len() - at - 4;
        if s < 0x7e {
            // Both lengths are one byte, as they nearly always are.
            w.buf[at + 1] = (s + 2) as u8;
            w.buf[at + 3] = s as u8;
        } else {
            w.rewrite_long(at, 4, |buf, text| {
                put_delimited_head(buf, BODY, delimited_len(STRING_VALUE, text.len()));
                put_bytes(buf, STRING_VALUE, text);
            });
        }
        w
    }

    /// The field that starts at `at` in `buf` was written with one-byte
    /// lengths (`head` bytes before its text) that its text turned out too
    /// long for: `write` writes it again, whole, from the text.
    #[cold]
    fn rewrite_long(&mut self, at: usize, head: usize, write: impl FnOnce(&mut Vec<u8>, &[u8])) {
        let text = &mut self.scratch.bytes;
        text.clear();
        text.extend_from_slice(&self.buf[at + head..]);
        self.buf.truncate(at);
        write(self.buf, text);
    }

    /// The key and length of an attribute whose `AnyValue` is `any_len`
    /// bytes; its value's field comes next.
    #[inline(always)]
    fn attr_head(&mut self, key: &str, any_len: usize) {
        let kv_len = delimited_len(KV_KEY, key.len()) + delimited_len(KV_VALUE, any_len);
        if kv_len < 0x80 {
            // Nearly every attribute: every length is one byte.
            let b = &mut *self.buf;
            b.reserve(kv_len + 2);
            b.extend_from_slice(&[
                key_byte(ATTRIBUTES, WireType::LengthDelimited),
                kv_len as u8,
                key_byte(KV_KEY, WireType::LengthDelimited),
                key.len() as u8,
            ]);
            b.extend_from_slice(key.as_bytes());
            b.extend_from_slice(&[key_byte(KV_VALUE, WireType::LengthDelimited), any_len as u8]);
            return;
        }
        put_delimited_head(self.buf, ATTRIBUTES, kv_len);
        put_bytes(self.buf, KV_KEY, key.as_bytes());
        put_delimited_head(self.buf, KV_VALUE, any_len);
    }

    #[inline(always)]
    pub(super) fn int(&mut self, key: &str, v: impl Into<i64>) {
        let v = v.into() as u64;
        self.attr_head(key, key_len(INT_VALUE) + encoded_len_varint(v));
        encode_key(INT_VALUE, WireType::Varint, self.buf);
        encode_varint(v, self.buf);
    }

    /// An unsigned count: as an int while it fits one, else as text.
    #[inline(always)]
    pub(super) fn uint(&mut self, key: &str, v: u64) {
        match i64::try_from(v) {
            Ok(v) => self.int(key, v),
            Err(_) => self.text(key, |s| {
                s.extend_from_slice(itoa::Buffer::new().format(v).as_bytes())
            }),
        }
    }

    #[inline(always)]
    pub(super) fn opt_uint(&mut self, key: &str, v: Option<u64>) {
        if let Some(v) = v {
            self.uint(key, v);
        }
    }

    /// A string value, written by `f` straight into the record (`f`
    /// writes UTF-8): its lengths are patched in after it, one byte each
    /// as nearly always; a longer value is moved once.
    #[inline]
    pub(super) fn text(&mut self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        // Key, value and string heads, with the lengths to be set.
        let head = 4 + key.len() + 4;
        let b = &mut *self.buf;
        b.reserve(head + 64);
        b.extend_from_slice(&[
            key_byte(ATTRIBUTES, WireType::LengthDelimited),
            0,
            key_byte(KV_KEY, WireType::LengthDelimited),
            key.len() as u8,
        ]);
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&[
            key_byte(KV_VALUE, WireType::LengthDelimited),
            0,
            key_byte(STRING_VALUE, WireType::LengthDelimited),
            0,
        ]);
        f(b);
        let s = b.len() - at - head;
        // KeyValue: what follows its own key and length.
        let kv_len = head - 2 + s;
        if kv_len < 0x80 {
            b[at + 1] = kv_len as u8;
            b[at + head - 3] = (s + 2) as u8;
            b[at + head - 1] = s as u8;
        } else {
            self.rewrite_long(at, head, |buf, text| {
                let any_len = delimited_len(STRING_VALUE, text.len());
                let kv_len = delimited_len(KV_KEY, key.len()) + delimited_len(KV_VALUE, any_len);
                put_delimited_head(buf, ATTRIBUTES, kv_len);
                put_bytes(buf, KV_KEY, key.as_bytes());
                put_delimited_head(buf, KV_VALUE, any_len);
                put_bytes(buf, STRING_VALUE, text);
            });
        }
    }

    #[inline(always)]
    pub(super) fn bool(&mut self, key: &str, v: bool) {
        self.attr_head(key, key_len(BOOL_VALUE) + 1);
        encode_key(BOOL_VALUE, WireType::Varint, self.buf);
        self.buf.push(u8::from(v));
    }

    /// Seconds from ns, as a double.
    #[inline(always)]
    pub(super) fn secs(&mut self, key: &str, ns: u64) {
        self.attr_head(key, key_len(DOUBLE_VALUE) + 8);
        encode_key(DOUBLE_VALUE, WireType::SixtyFourBit, self.buf);
        self.buf
            .extend_from_slice(&(ns as f64 / 1e9).to_bits().to_le_bytes());
    }

    pub(super) fn strs<'s>(&mut self, key: &str, items: impl Iterator<Item = &'s str>) {
        self.byte_strs(key, items.map(str::as_bytes));
    }

    /// An array of strings from bytes (kernel strings: up to a NUL,
    /// invalid UTF-8 replaced).
    pub(super) fn byte_strs<'s>(&mut self, key: &str, items: impl Iterator<Item = &'s [u8]>) {
        let Scratch { text, ends, .. } = &mut *self.scratch;
        text.clear();
        ends.clear();
        for item in items {
            super::push_text(text, item);
            ends.push(text.len());
        }
        let mut array_len = 0;
        let mut start = 0;
        for &end in ends.iter() {
            array_len += delimited_len(ARRAY_VALUES, delimited_len(STRING_VALUE, end - start));
            start = end;
        }
        self.attr_head(key, delimited_len(ARRAY_VALUE, array_len));
        put_delimited_head(self.buf, ARRAY_VALUE, array_len);
        let Scratch { text, ends, .. } = &*self.scratch;
        let mut start = 0;
        for &end in ends {
            let s = &text.as_bytes()[start..end];
            put_delimited_head(self.buf, ARRAY_VALUES, delimited_len(STRING_VALUE, s.len()));
            put_bytes(self.buf, STRING_VALUE, s);
            start = end;
        }
    }

    /// The fields after the attributes (11, 12).
    pub(super) fn finish(self, observed_time_unix_nano: u64, event_name: &str) {
        if observed_time_unix_nano != 0 {
            encode_key(OBSERVED_TIME_UNIX_NANO, WireType::SixtyFourBit, self.buf);
            self.buf
                .extend_from_slice(&observed_time_unix_nano.to_le_bytes());
        }
        if !event_name.is_empty() {
            put_bytes(self.buf, EVENT_NAME, event_name.as_bytes());
        }
    }
}
