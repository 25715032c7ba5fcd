//! Errors of the pure domain: text that does not parse and input that breaks
//! a rule. Both carry a message fit to show a user unchanged.

/// A text form (status, token, …) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {}: expected {expected}", crate::input::Echo(value))]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl ParseError {
    pub fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        ParseError {
            what,
            value: value.to_string(),
            expected,
        }
    }
}

/// Input that breaks a documented limit; maps to `INVALID_ARGUMENT`
/// (or `RESOURCE_EXHAUSTED` for sizes) at the gRPC edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{field} is {actual} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        field: &'static str,
        actual: usize,
        limit: usize,
    },
}

impl ValidationError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ValidationError::Invalid {
            field,
            message: message.into(),
        }
    }
}
