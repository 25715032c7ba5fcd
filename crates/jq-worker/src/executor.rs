//! Safe subprocess execution (JQ-130).
//!
//! A job payload `{"command": [...], "env": {...}, "timeout_s": N, "cwd": "..."}`
//! runs as an argv — never through a shell — with a cleared environment
//! plus an allowlist copied from the worker's own, in a process group of its
//! own, so a timeout or a cancel ends the whole tree: SIGTERM to the group,
//! then SIGKILL after a grace period. Output is captured up to a cap; the
//! rest is dropped and marked truncated. A malformed payload is an error
//! for the job, never a crash of the worker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

/// What a subprocess job asks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubprocessSpec {
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is not a JSON subprocess spec: {0}")]
    Json(String),
    #[error("payload \"command\" must be a non-empty array of strings")]
    EmptyCommand,
    #[error("payload \"env\" key {} is not a valid variable name", jq_core::input::Echo(.0))]
    BadEnvName(String),
    /// A NUL cannot be passed to a process (argv, environment, path).
    #[error("payload {0} holds a NUL byte, which cannot be passed to a process")]
    Nul(&'static str),
}

/// Parse and check a payload (the server never does: FR-007).
pub fn parse_payload(bytes: &[u8]) -> Result<SubprocessSpec, PayloadError> {
    let spec: SubprocessSpec = serde_json::from_slice(bytes)
        .map_err(|e| PayloadError::Json(jq_core::input::clip(e.to_string(), 512)))?;
    if spec.command.is_empty() || spec.command[0].is_empty() {
        return Err(PayloadError::EmptyCommand);
    }
    if let Some(bad) = spec
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(PayloadError::BadEnvName(bad.clone()));
    }
    if spec.command.iter().any(|a| a.contains('\0')) {
        return Err(PayloadError::Nul("\"command\""));
    }
    if spec.env.values().any(|v| v.contains('\0')) {
        return Err(PayloadError::Nul("\"env\" value"));
    }
    if spec
        .cwd
        .as_ref()
        .is_some_and(|c| c.as_os_str().as_encoded_bytes().contains(&0))
    {
        return Err(PayloadError::Nul("\"cwd\""));
    }
    Ok(spec)
}

/// How the executor runs jobs.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Variables a job inherits from the worker (names and values), already
    /// filtered by the allowlist: everything else is cleared.
    pub inherited_env: Vec<(String, String)>,
    /// Timeout when neither payload nor queue sets one.
    pub default_timeout: Duration,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Bytes kept of stdout and of stderr each.
    pub output_cap: usize,
    /// Programs a payload may start (`exec.allowed_commands`); empty: any.
    pub allowed_commands: Vec<String>,
}

impl ExecConfig {
    /// Whether `program` (a payload's `command[0]`) may start (JQ-173). A
    /// bare name is allowed by the same bare name (the worker's PATH finds
    /// it); anything with a `/` only by that exact absolute path, so
    /// `/tmp/x/echo` never passes for `echo`.
    pub fn allows(&self, program: &str) -> bool {
        self.allowed_commands.is_empty() || self.allowed_commands.iter().any(|a| a == program)
    }

    /// Inherit only `allow` (e.g. PATH, LANG, TZ) from `parent`.
    pub fn inherit(
        parent: impl IntoIterator<Item = (String, String)>,
        allow: &[&str],
    ) -> Vec<(String, String)> {
        parent
            .into_iter()
            .filter(|(k, _)| allow.contains(&k.as_str()))
            .collect()
    }
}

/// Captured output of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Bytes beyond the cap that were dropped.
    pub dropped: u64,
}

impl Captured {
    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub timed_out: bool,
    pub cancelled: bool,
    pub duration: Duration,
}

impl ExecResult {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for the job failed: {0}")]
    Wait(#[source] std::io::Error),
}

async fn capture(mut r: impl AsyncRead + Unpin, cap: usize) -> Captured {
    let mut out = Captured::default();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = cap.saturating_sub(out.bytes.len());
                let keep = n.min(room);
                out.bytes.extend_from_slice(&buf[..keep]);
                out.dropped += (n - keep) as u64;
            }
        }
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: killpg only sends a signal; a stale pgid yields ESRCH, which
    // we ignore.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// Run `spec`. `cancel` flipping to true stops it like a timeout does
/// (JQ-113). `timeout` overrides the config default (queue default or the
/// payload's `timeout_s`, which wins).
pub async fn run(
    spec: &SubprocessSpec,
    cfg: &ExecConfig,
    timeout: Option<Duration>,
    mut cancel: watch::Receiver<bool>,
) -> Result<ExecResult, ExecError> {
    let start = Instant::now();
    let timeout = spec
        .timeout_s
        .map(Duration::from_secs)
        .or(timeout)
        .unwrap_or(cfg.default_timeout);
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .env_clear()
        .envs(cfg.inherited_env.iter().map(|(k, v)| (k, v)))
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    // If the worker dies (SIGKILL, OOM), its job must not run on unsupervised
    // while the server hands the job to another worker: the kernel kills the
    // job's first process with its parent.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only this child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
        program: spec.command[0].clone(),
        source,
    })?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let out = tokio::spawn(capture(child.stdout.take().expect("piped"), cfg.output_cap));
    let err = tokio::spawn(capture(child.stderr.take().expect("piped"), cfg.output_cap));

    let (mut timed_out, mut cancelled) = (false, false);
    let status = tokio::select! {
        // A process that already exited wins over a timeout or a stop that
        // became ready at the same time (a worker resumed from SIGSTOP).
        biased;
        s = child.wait() => Some(s.map_err(ExecError::Wait)?),
        _ = tokio::time::sleep(timeout) => { timed_out = true; None }
        // wait_for sees a cancel that came before the job started, too.
        _ = async { if cancel.wait_for(|c| *c).await.is_err() { std::future::pending::<()>().await } } => { cancelled = true; None }
    };
    let status = match status {
        Some(s) => s,
        None => {
            // The whole tree: the job and anything it started.
            signal_group(pgid, libc::SIGTERM);
            match tokio::time::timeout(cfg.kill_grace, child.wait()).await {
                Ok(s) => s.map_err(ExecError::Wait)?,
                Err(_) => {
                    signal_group(pgid, libc::SIGKILL);
                    child.wait().await.map_err(ExecError::Wait)?
                }
            }
        }
    };
    // No process of the job outlives it: background children left behind
    // (or that ignored SIGTERM) go now, which also closes the pipes.
    signal_group(pgid, libc::SIGKILL);
    // Bounded, in case something escaped the group and holds a pipe.
    let grace = cfg.kill_grace.max(Duration::from_secs(1));
    let stdout = tokio::time::timeout(grace, out)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let stderr = tokio::time::timeout(grace, err)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    Ok(ExecResult {
        exit_code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
        timed_out,
        cancelled,
        duration: start.elapsed(),
    })
}
