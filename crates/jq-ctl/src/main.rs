//! jq-ctl binary: real stdio and the process exit code; the rest is in the
//! library.

use std::io::IsTerminal;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut out = stdout.lock();
    let mut err = std::io::stderr().lock();
    let mut io = jq_ctl::Io {
        out: &mut out,
        err: &mut err,
        color,
    };
    ExitCode::from(jq_ctl::main_with(std::env::args_os(), &mut io).await)
}
