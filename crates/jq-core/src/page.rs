//! Opaque cursor for `job list` pagination (FR-032). Lists run newest first;
//! the token holds the last row's (created_at, id), so pages stay stable while
//! new jobs arrive.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub created_at_micros: i64,
    pub id: Uuid,
}

impl PageToken {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", self.created_at_micros, self.id))
    }

    pub fn decode(s: &str) -> Result<PageToken, ParseError> {
        let bad = || ParseError::new("page token", s, "a token returned by a previous list call");
        let raw = URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = text.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("v1"), Some(micros), Some(id)) => Ok(PageToken {
                created_at_micros: micros.parse().map_err(|_| bad())?,
                id: id.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fr_032_page_token_round_trips_and_rejects_garbage() {
        let t = PageToken {
            created_at_micros: 1_700_000_000_123_456,
            id: Uuid::new_v4(),
        };
        assert_eq!(PageToken::decode(&t.encode()).unwrap(), t);
        for bad in ["", "abc", "djE6eDp5", &URL_SAFE_NO_PAD.encode("v2:1:x")] {
            assert!(PageToken::decode(bad).is_err(), "{bad}");
        }
    }
}
