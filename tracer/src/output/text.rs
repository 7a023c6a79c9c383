//! Appending a record's fields to a line buffer: numbers, fixed-point
//! seconds, kernel strings (NUL-padded bytes) and column padding, without
//! the `fmt` machinery or an allocation. Per record, `write!` cost more
//! than everything else the loader does; the outputs build each line
//! with these and write it whole.

/// An integer in decimal.
pub(crate) fn push_int(buf: &mut Vec<u8>, v: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `ns` as seconds with `precision` (at most 9) decimals, truncated, as
/// [`super::Secs`] formats them.
pub(crate) fn push_secs(buf: &mut Vec<u8>, ns: u64, precision: u32) {
    let p = precision.min(9);
    let v = ns / 10u64.pow(9 - p);
    if p == 0 {
        return push_int(buf, v);
    }
    let div = 10u64.pow(p);
    push_int(buf, v / div);
    buf.push(b'.');
    push_zero_padded(buf, v % div, p as usize);
}

/// Unix time with ns precision (`secs.nnnnnnnnn`); negative is 0.
pub(crate) fn push_unix_time(buf: &mut Vec<u8>, ns: i128) {
    let ns = ns.max(0) as u128;
    push_int(buf, ns / 1_000_000_000);
    buf.push(b'.');
    push_zero_padded(buf, (ns % 1_000_000_000) as u64, 9);
}

fn push_zero_padded(buf: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(v).as_bytes();
    buf.resize(buf.len() + width.saturating_sub(digits.len()), b'0');
    buf.extend_from_slice(digits);
}

/// A kernel string: the bytes up to the first NUL, each invalid UTF-8
/// sequence replaced by U+FFFD, as `String::from_utf8_lossy` does.
pub(crate) fn push_lossy(buf: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in until_nul(bytes).utf8_chunks() {
        buf.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            buf.extend_from_slice(
                char::REPLACEMENT_CHARACTER
                    .encode_utf8(&mut [0; 4])
                    .as_bytes(),
            );
        }
    }
}

/// Text from outside (a comm, a file name, a field of a recording) for a
/// person's terminal: control characters (C0, DEL, C1), bidirectional
/// overrides and each byte of an invalid UTF-8 sequence are shown as
/// `\n`, `\t`, `\r` or `\xNN` (the C1 and bidi characters as their UTF-8
/// bytes), so a crafted name can neither drive the terminal nor break a
/// line in two. Other text, backslashes included, is kept as it is.
pub(crate) fn push_escaped(buf: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut utf8 = [0; 4];
            let utf8 = c.encode_utf8(&mut utf8).as_bytes();
            match c {
                '\n' => buf.extend_from_slice(b"\\n"),
                '\t' => buf.extend_from_slice(b"\\t"),
                '\r' => buf.extend_from_slice(b"\\r"),
                c if c.is_control() || is_bidi_control(c) => {
                    utf8.iter().for_each(|&b| push_hex_escape(buf, b))
                }
                _ => buf.extend_from_slice(utf8),
            }
        }
        for &b in chunk.invalid() {
            push_hex_escape(buf, b);
        }
    }
}

/// [`push_escaped`] into a `String`, for messages and the tree.
pub(crate) fn escaped(bytes: &[u8]) -> String {
    let mut buf = Vec::with_capacity(bytes.len());
    push_escaped(&mut buf, bytes);
    // Always UTF-8: valid text is copied whole, everything else is ASCII.
    match String::from_utf8(buf) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// A path as error messages and human outputs show it: escaped, so that a
/// hostile file name cannot reach the terminal raw.
pub(crate) fn shown(path: &std::path::Path) -> String {
    escaped(path.as_os_str().as_encoded_bytes())
}

/// Marks that reorder how a terminal shows the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

fn push_hex_escape(buf: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]);
}

pub(crate) fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Pads what was appended since `start` with spaces after it, to `width`
/// characters (as `{:<width}` does; longer text is kept whole).
pub(crate) fn pad_right(buf: &mut Vec<u8>, start: usize, width: usize) {
    let missing = width.saturating_sub(chars(&buf[start..]));
    buf.resize(buf.len() + missing, b' ');
}

/// Pads what was appended since `start` with spaces before it, to `width`
/// characters (as `{:>width}` does).
pub(crate) fn pad_left(buf: &mut Vec<u8>, start: usize, width: usize) {
    let missing = width.saturating_sub(chars(&buf[start..]));
    buf.resize(buf.len() + missing, b' ');
    buf[start..].rotate_right(missing);
}

/// Characters in UTF-8 text: the bytes that do not continue a character.
fn chars(text: &[u8]) -> usize {
    text.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = b"x".to_vec();
        f(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn numbers_and_seconds_match_fmt() {
        for v in [
            0u64,
            9,
            10,
            999_999_999,
            1_000_000_000,
            1_500_000_001,
            u64::MAX,
        ] {
            assert_eq!(text(|b| push_int(b, v)), format!("x{v}"));
            for p in [0, 2, 9] {
                assert_eq!(
                    text(|b| push_secs(b, v, p)),
                    format!("x{:.p$}", super::super::Secs(v), p = p as usize)
                );
            }
        }
        assert_eq!(
            text(|b| push_unix_time(b, 1_795_000_000_000_000_001)),
            "x1795000000.000000001"
        );
        assert_eq!(text(|b| push_unix_time(b, -5)), "x0.000000000");
    }

    #[test]
    fn strings_match_lossy_decoding() {
        for bytes in [
            &b"plain\0junk"[..],
            b"\xff\xfe",
            b"a\xc3",
            b"\xc3\xa9t\xe9",
            b"\xf0\x9f\x98\x80!",
            b"",
        ] {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let want = String::from_utf8_lossy(&bytes[..end]);
            assert_eq!(text(|b| push_lossy(b, bytes)), format!("x{want}"));
        }
    }

    #[test]
    fn escaping_leaves_printable_text_alone() {
        for plain in ["", "sh", "a\\b \"c\" é 日本 😀", "x-y_z.1/2"] {
            assert_eq!(escaped(plain.as_bytes()), plain);
        }
    }

    #[test]
    fn escaping_shows_controls_and_bad_bytes() {
        assert_eq!(
            escaped(b"a\x1b]0;pwn\x07\nb\xff"),
            r"a\x1b]0;pwn\x07\nb\xff"
        );
        assert_eq!(escaped(b"\0\t\r\x7f"), r"\x00\t\r\x7f");
        // C1 controls (CSI is U+009B), bidi overrides, a truncated sequence.
        assert_eq!(escaped("\u{9b}2J".as_bytes()), r"\xc2\x9b2J");
        assert_eq!(escaped("x\u{202e}y".as_bytes()), r"x\xe2\x80\xaey");
        assert_eq!(escaped(b"\xe6\x97"), r"\xe6\x97");
        assert_eq!(escaped(b"\xc3\xa9\xc3"), r"é\xc3");
        let all: Vec<u8> = (0..=255).collect();
        assert!(escaped(&all).bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn padding_counts_characters() {
        assert_eq!(
            text(|b| {
                b.extend_from_slice("é".as_bytes());
                pad_right(b, 1, 3)
            }),
            "xé  "
        );
        assert_eq!(
            text(|b| {
                b.extend_from_slice(b"42");
                pad_left(b, 1, 5)
            }),
            "x   42"
        );
        assert_eq!(
            text(|b| {
                b.extend_from_slice(b"toolong");
                pad_left(b, 1, 3)
            }),
            "xtoolong"
        );
    }
}
