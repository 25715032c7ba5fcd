//! Hostile input (JQ-105): the checks every client-supplied value passes
//! before it reaches storage, the one way an input is echoed back in an
//! error, and how text a job produced is made storable.
//!
//! Two kinds of text reach PostgreSQL, and they are treated apart:
//! - identifiers a client chooses (queue names, worker ids, hostnames,
//!   versions, idempotency keys) are refused when they hold a NUL or
//!   another control character, naming the field;
//! - text a job produced (error strings, event details) is never refused:
//!   a job's outcome must not be lost to an encoding, so [`job_text`]
//!   replaces what PostgreSQL cannot hold (ADR 0013).

use std::borrow::Cow;
use std::fmt;

use crate::error::ValidationError;

/// Characters of an echoed value shown before it is cut.
pub const ECHO_CHARS: usize = 64;

/// Longest job-produced error text stored; the rest is cut with a note.
/// The whole output of a subprocess is in its result, not in this line.
pub const MAX_JOB_TEXT_BYTES: usize = 64 * 1024;

/// Largest value of an `integer` (int4) column.
pub const INT4_MAX: u64 = i32::MAX as u64;

/// A client's value as it appears in an error message: quoted, escaped,
/// and cut after [`ECHO_CHARS`] characters with its full size, so an error
/// never grows with its input (a 100,000-character name must not make a
/// status larger than an HTTP/2 header may be).
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s.char_indices().nth(ECHO_CHARS) {
            None => write!(f, "{s:?}"),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &s[..cut], s.len()),
        }
    }
}

/// [`Echo`] as a `String`.
pub fn echo(s: &str) -> String {
    Echo(s).to_string()
}

/// A message built from input we do not control (a parser's error that
/// quotes it) cut to `max` bytes at a character boundary, with its size.
pub fn clip(msg: String, max: usize) -> String {
    if msg.len() <= max {
        return msg;
    }
    let mut cut = max;
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &msg[..cut], msg.len())
}

/// An identifier a client chose: `min..=max` bytes, no control characters
/// (NUL included: PostgreSQL `text` cannot hold it).
pub fn check_identifier(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    if value.len() < min || value.len() > max {
        let size = if min == 0 {
            format!("at most {max} bytes")
        } else {
            format!("{min}-{max} bytes")
        };
        return Err(ValidationError::invalid(
            field,
            format!("{} is {} bytes; it must be {size}", echo(value), value.len()),
        ));
    }
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(ValidationError::invalid(
            field,
            format!(
                "{} holds the control character U+{:04X} at byte {at}; control characters (NUL included) are not allowed",
                echo(value),
                c as u32
            ),
        ));
    }
    Ok(())
}

/// A worker's host name as it registers (FR-018): up to 255 bytes.
pub fn validate_hostname(h: &str) -> Result<(), ValidationError> {
    check_identifier("hostname", h, 0, 255)
}

/// A worker's version string: up to 128 bytes.
pub fn validate_version(v: &str) -> Result<(), ValidationError> {
    check_identifier("version", v, 0, 128)
}

/// A count a client sends as `uint32` into an `integer` column: at most
/// 2,147,483,647.
pub fn stored_int4(field: &'static str, v: u32) -> Result<i32, ValidationError> {
    i32::try_from(v)
        .map_err(|_| ValidationError::invalid(field, format!("{v} is out of range: at most {INT4_MAX}")))
}

/// Text a job produced, made storable and never refused: NUL, which
/// PostgreSQL `text` cannot hold, becomes U+FFFD (as invalid UTF-8 already
/// does when output is decoded), and more than [`MAX_JOB_TEXT_BYTES`] is
/// cut at a character boundary with a note of how much was dropped.
pub fn job_text(s: &str) -> Cow<'_, str> {
    let clean: Cow<'_, str> = if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    };
    if clean.len() <= MAX_JOB_TEXT_BYTES {
        return clean;
    }
    let mut cut = MAX_JOB_TEXT_BYTES;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} more bytes cut)",
        &clean[..cut],
        clean.len() - cut
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jq_105_echo_is_bounded_and_names_the_size() {
        assert_eq!(echo("abc"), "\"abc\"");
        let long = "x".repeat(100_000);
        let e = echo(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.contains("(100000 bytes)"), "{e}");
        // Multi-byte characters are cut on a boundary, not mid-character.
        let wide = "ü".repeat(1000);
        assert!(echo(&wide).contains("(2000 bytes)"));
        // Control characters are escaped, never printed raw.
        assert_eq!(echo("a\0b"), "\"a\\0b\"");
    }

    #[test]
    fn jq_105_clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("short".into(), 10), "short");
        let c = clip("é".repeat(600), 501);
        assert!(c.len() < 530 && c.ends_with("(1200 bytes)"), "{c}");
    }

    #[test]
    fn jq_105_identifiers_refuse_nul_and_control_characters_naming_the_field() {
        assert!(validate_hostname("host-1.example").is_ok());
        assert!(validate_hostname("").is_ok());
        for bad in ["a\0b", "tab\there", "new\nline", "\u{7f}", "\u{9b}"] {
            let e = validate_hostname(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ValidationError::Invalid {
                        field: "hostname",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("control character"), "{e}");
        }
        let e = validate_version(&"v".repeat(129)).unwrap_err().to_string();
        assert!(e.contains("at most 128 bytes") && e.len() < 200, "{e}");
        assert!(check_identifier("k", "", 1, 5).is_err());
    }

    #[test]
    fn jq_105_int4_fields_state_their_bound() {
        assert_eq!(stored_int4("concurrency", 4).unwrap(), 4);
        assert_eq!(stored_int4("concurrency", i32::MAX as u32).unwrap(), i32::MAX);
        let e = stored_int4("concurrency", u32::MAX).unwrap_err().to_string();
        assert!(e.starts_with("concurrency:") && e.contains("2147483647"), "{e}");
    }

    #[test]
    fn jq_105_job_text_keeps_everything_but_nul_and_is_bounded() {
        assert!(matches!(job_text("plain\ttext\n"), Cow::Borrowed(_)));
        assert_eq!(job_text("bad\0byte"), "bad\u{FFFD}byte");
        let big = "é".repeat(MAX_JOB_TEXT_BYTES);
        let t = job_text(&big);
        assert!(t.len() < MAX_JOB_TEXT_BYTES + 64);
        assert!(t.ends_with(&format!("({} more bytes cut)", big.len() - MAX_JOB_TEXT_BYTES)));
        assert!(!job_text(&format!("{}\0", "a".repeat(MAX_JOB_TEXT_BYTES))).contains('\0'));
    }
}
