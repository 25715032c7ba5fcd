//! Opaque cursor for `job list` pagination (FR-032). Lists run newest first
//! in submission order (`jobs.seq`); the token holds the last row's `seq`,
//! so pages stay stable while new jobs arrive.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ParseError;

const EXPECTED: &str = "a token returned by a previous list call";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    /// `jobs.seq` of the last job listed; the next page starts below it.
    pub seq: i64,
}

impl PageToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v2:{}", self.seq))
    }

    pub fn decode(s: &str) -> Result<PageToken, ParseError> {
        let bad = |why: &'static str| ParseError::new("page token", s, why);
        let raw = URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| bad(EXPECTED))?;
        let text = String::from_utf8(raw).map_err(|_| bad(EXPECTED))?;
        match text.split_once(':') {
            Some(("v2", seq)) => Ok(PageToken {
                seq: seq.parse().map_err(|_| bad(EXPECTED))?,
            }),
            // Tokens of servers before schema v3 ordered by (created_at, id).
            Some(("v1", _)) => Err(bad(
                "a token of this server version; that one came from an older one, so list again from the first page",
            )),
            _ => Err(bad(EXPECTED)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fr_032_page_token_round_trips_and_rejects_garbage() {
        let t = PageToken { seq: 1_700_000_123 };
        assert_eq!(PageToken::decode(&t.encode()).unwrap(), t);
        for bad in [
            "",
            "abc",
            "djE6eDp5",
            &URL_SAFE_NO_PAD.encode("v2:x"),
            &URL_SAFE_NO_PAD.encode("v3:1"),
        ] {
            assert!(PageToken::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fr_032_a_token_from_before_schema_v3_asks_to_start_over() {
        let old = URL_SAFE_NO_PAD.encode("v1:1700000000123456:8f7c1c3e-4d7a-4a43-9a5e-2f0d2f1b6c11");
        let e = PageToken::decode(&old).unwrap_err().to_string();
        assert!(e.contains("first page"), "{e}");
    }
}
