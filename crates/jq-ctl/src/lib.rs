//! # jq-ctl
//!
//! The operator CLI. `main.rs` hands the arguments and real stdio to
//! [`main_with`]; everything else is here so tests can drive it.
//!
//! # Layout
//! - [`cli`]: the clap command tree, parsed into plain values.
//! - [`commands`]: each command as gRPC calls producing a view.
//! - [`output`]: views and their table/JSON/YAML forms.
//! - [`error`]: one-line errors and exit codes.

pub mod cli;
pub mod commands;
pub mod error;
pub mod output;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;

pub use error::CtlError;

/// Semver and git commit (NFR-017).
pub const VERSION: &str = jq_config::VERSION;

/// Where output goes and how it looks.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Colours allowed (stdout is a TTY and NO_COLOR is unset).
    pub color: bool,
}

/// Parse `args`, run, print, and return the exit code.
pub async fn main_with(args: impl IntoIterator<Item = OsString>, io: &mut Io<'_>) -> u8 {
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help goes to stdout with status 0; mistakes to stderr, 2.
            let code = e.exit_code() as u8;
            let text = if io.color {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let _ = if code == 0 {
                write!(io.out, "{text}")
            } else {
                write!(io.err, "{text}")
            };
            return code;
        }
    };
    match commands::run(cli, io).await {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(io.err, "error: {e}");
            e.exit_code()
        }
    }
}
