//! Errors as operators read them: one line saying what went wrong and what
//! to try, and an exit code scripts can branch on (see `--help`).

use std::time::Duration;

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad flags, arguments or input; nothing was sent. Exit 2.
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error. Exit 1.
    #[error("{message}")]
    Server { code: Code, message: String },
    /// No server, or no answer in time. Exit 3.
    #[error("{0}")]
    Unreachable(String),
    /// Writing to stdout failed (e.g. a closed pipe). Exit 1.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Server { .. } | CtlError::Output(_) => 1,
            CtlError::Unreachable(_) => 3,
        }
    }
}

pub use jq_proto::code_name;

/// Where the request went, to word errors.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub addr: String,
    pub timeout: Duration,
}

impl Ctx {
    pub fn unreachable(&self, why: &str) -> CtlError {
        CtlError::Unreachable(format!(
            "cannot reach jq-server at {}: {why}. Is it running? Check --server-addr or JQ_SERVER_ADDR",
            self.addr
        ))
    }

    pub fn too_slow(&self) -> CtlError {
        CtlError::Unreachable(format!(
            "no answer from jq-server at {} within {:?}; try again or raise --timeout",
            self.addr, self.timeout
        ))
    }

    /// A server error; `hint` says what to try on NOT_FOUND.
    pub fn status(&self, s: tonic::Status, hint: &str) -> CtlError {
        let msg = s.message().trim().to_string();
        let try_ = match s.code() {
            Code::Unavailable => return self.unreachable(if msg.is_empty() { "unavailable" } else { &msg }),
            Code::DeadlineExceeded => return self.too_slow(),
            // tonic reports its own request deadline as CANCELLED.
            Code::Cancelled if msg.to_ascii_lowercase().contains("timeout") => return self.too_slow(),
            Code::Unauthenticated => "pass a token with --token or JQ_TOKEN".to_string(),
            Code::PermissionDenied => {
                "this token's role may not do that; use a token with the right role".into()
            }
            Code::NotFound if !hint.is_empty() => hint.to_string(),
            Code::InvalidArgument => "check the arguments; see --help".into(),
            _ => String::new(),
        };
        let mut message = format!("{msg} ({})", code_name(s.code()));
        if !try_.is_empty() {
            message.push_str(&format!("; {try_}"));
        }
        CtlError::Server {
            code: s.code(),
            message,
        }
    }
}
