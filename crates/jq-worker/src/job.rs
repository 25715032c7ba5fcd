//! One attempt: decide how the payload runs (named handler or subprocess),
//! run it under its timeout and stop signal, and shape the report.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use jq_core::Outcome;
use uuid::Uuid;

use crate::executor::{self, ExecConfig, ExecResult};
use crate::handler::{HandlerError, Handlers, JobContext};

/// An assignment as the runner needs it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub job_id: Uuid,
    pub queue: String,
    pub attempt: u32,
    pub retries: u32,
    pub payload: Vec<u8>,
    /// The queue's default timeout, when it has one.
    pub timeout: Option<Duration>,
    /// The worker running it (handed to subprocesses as `JQ_WORKER_ID`).
    pub worker_id: String,
    /// The schedule occurrence it was submitted for (JQ-124).
    pub scheduled_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why an attempt is being stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An operator cancelled the job (JQ-113): report CANCELLED.
    Cancel,
    /// The lease is no longer ours (reassigned, timed out) or the worker's
    /// shutdown deadline passed: stop and report nothing, the server has
    /// moved on or will reclaim it.
    Abandon,
}

/// Stops one running attempt. The reason is set before the signal flips.
#[derive(Debug, Clone)]
pub struct Stopper {
    tx: Arc<watch::Sender<bool>>,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl Default for Stopper {
    fn default() -> Self {
        Stopper {
            tx: Arc::new(watch::channel(false).0),
            reason: Arc::default(),
        }
    }
}

impl Stopper {
    pub fn stop(&self, why: StopReason) {
        let mut r = self.reason.lock().unwrap();
        // An abandon wins over a cancel: once the lease is gone nothing is
        // reported either way.
        if r.is_none() || why == StopReason::Abandon {
            *r = Some(why);
        }
        drop(r);
        self.tx.send_replace(true);
    }

    pub fn reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub result: Vec<u8>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration: Duration,
}

impl Report {
    /// The attempt failed; the server retries it while retries are left.
    fn retryable(message: String, started: Instant) -> Report {
        Report::failed(message, Outcome::Failed { retryable: true }, started)
    }

    /// The attempt failed for good (a bad payload, an unknown handler).
    fn permanent(message: String, started: Instant) -> Report {
        Report::failed(message, Outcome::Failed { retryable: false }, started)
    }

    fn failed(message: String, outcome: Outcome, started: Instant) -> Report {
        Report {
            outcome,
            result: Vec::new(),
            error: Some(message),
            exit_code: None,
            signal: None,
            duration: started.elapsed(),
        }
    }

    /// Label for metrics.
    pub fn outcome_label(&self) -> &'static str {
        match self.outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// What the payload asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Handler {
        name: String,
        input: Value,
        timeout: Option<Duration>,
    },
    Subprocess(executor::SubprocessSpec),
}

/// Read a payload (the server never does: FR-007). Any bytes give a plan or
/// an error fit for the job's record, never a panic (fuzzed: `fuzz/`).
pub fn plan(payload: &[u8]) -> Result<Plan, String> {
    // Parser errors quote the input (an unknown key, say): bounded, since
    // the message becomes the job's error.
    read_plan(payload).map_err(|e| jq_core::input::clip(e, 512))
}

fn read_plan(payload: &[u8]) -> Result<Plan, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    match v.as_object().and_then(|o| o.get("handler")) {
        Some(name) => {
            let o = v.as_object().expect("checked");
            let name = name
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or("payload \"handler\" must be a non-empty string")?;
            if let Some(k) = o
                .keys()
                .find(|k| !["handler", "input", "timeout_s"].contains(&k.as_str()))
            {
                return Err(format!(
                    "payload key {k:?} is not allowed with \"handler\" (handler, input, timeout_s)"
                ));
            }
            let timeout = match o.get("timeout_s") {
                None => None,
                Some(t) => Some(Duration::from_secs(
                    t.as_u64()
                        .filter(|s| *s > 0)
                        .ok_or("payload \"timeout_s\" must be a positive integer")?,
                )),
            };
            Ok(Plan::Handler {
                name: name.to_string(),
                input: o.get("input").cloned().unwrap_or(Value::Null),
                timeout,
            })
        }
        None => executor::parse_payload(payload)
            .map(Plan::Subprocess)
            .map_err(|e| e.to_string()),
    }
}

/// An occurrence as a schedule's subprocess sees it: RFC 3339, UTC.
fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Run one attempt to its report. `None` when it was abandoned (nothing
/// to report). Never panics on bad input: that is a permanent failure.
pub async fn execute(a: &Attempt, handlers: &Handlers, exec: &ExecConfig, stop: &Stopper) -> Option<Report> {
    let started = Instant::now();
    // Whether the stop cut the attempt short (an attempt that ended by
    // itself first is reported even when a stop came after).
    let mut interrupted = false;
    let report = match plan(&a.payload) {
        Err(msg) => Report::permanent(msg, started),
        // JQ-173: a program this worker may not start fails the job at once
        // (no retry: another attempt would be refused the same way).
        Ok(Plan::Subprocess(spec)) if !exec.allows(&spec.command[0]) => Report::permanent(
            format!(
                "{} is not in this worker's exec.allowed_commands ({}); nothing was started",
                jq_core::input::echo(&spec.command[0]),
                exec.allowed_commands.join(", ")
            ),
            started,
        ),
        Ok(Plan::Subprocess(mut spec)) => {
            // Which attempt this is, for the job's own de-duplication
            // (NFR-006); these win over the payload's env.
            spec.env.insert("JQ_JOB_ID".into(), a.job_id.to_string());
            spec.env.insert("JQ_JOB_ATTEMPT".into(), a.attempt.to_string());
            spec.env.insert("JQ_JOB_QUEUE".into(), a.queue.clone());
            spec.env.insert("JQ_WORKER_ID".into(), a.worker_id.clone());
            if let Some(at) = a.scheduled_at {
                spec.env.insert("JQ_SCHEDULED_AT".into(), rfc3339(at));
            }
            match executor::run(&spec, exec, a.timeout, stop.subscribe()).await {
                Ok(r) => {
                    interrupted = r.cancelled;
                    subprocess_report(&spec, r)
                }
                Err(e) => Report::retryable(e.to_string(), started),
            }
        }
        Ok(Plan::Handler { name, input, timeout }) => match handlers.get(&name) {
            None => Report::permanent(
                format!(
                    "no handler named {name:?} on this worker (it has: {})",
                    handlers.names().join(", ")
                ),
                started,
            ),
            Some(h) => {
                let timeout = timeout.or(a.timeout).unwrap_or(exec.default_timeout);
                let ctx = JobContext {
                    job_id: a.job_id.to_string(),
                    queue: a.queue.clone(),
                    attempt: a.attempt,
                    retries: a.retries,
                    input,
                    payload: a.payload.clone(),
                    scheduled_at: a.scheduled_at,
                    cancelled: stop.subscribe(),
                };
                // Its own task, so a panic fails the attempt, not the worker.
                let mut task = tokio::spawn(h.call(ctx));
                let mut stopped = stop.subscribe();
                let res = tokio::select! {
                    // A handler that already returned wins over a stop.
                    biased;
                    r = &mut task => match r {
                        Ok(r) => Some(r),
                        Err(e) => Some(Err(HandlerError::retryable(format!("handler {name:?} panicked: {e}")))),
                    },
                    _ = tokio::time::sleep(timeout) => {
                        task.abort();
                        Some(Err(HandlerError::retryable(format!("timed out after {}s", timeout.as_secs()))))
                    }
                    _ = stopped.wait_for(|s| *s) => { task.abort(); None }
                };
                match res {
                    Some(Ok(result)) => Report {
                        outcome: Outcome::Succeeded,
                        result,
                        error: None,
                        exit_code: None,
                        signal: None,
                        duration: started.elapsed(),
                    },
                    Some(Err(e)) => Report::failed(
                        e.message,
                        Outcome::Failed {
                            retryable: e.retryable,
                        },
                        started,
                    ),
                    None => {
                        interrupted = true;
                        Report::retryable("stopped".into(), started)
                    }
                }
            }
        },
    };
    match stop.reason() {
        // Abandoned mid-run: nothing to report. One that finished first
        // (say its process exited while the worker was frozen and the
        // fence ran on waking) is reported; the server refuses it if its
        // attempt is no longer current.
        Some(StopReason::Abandon) if interrupted => None,
        Some(StopReason::Abandon) => Some(report),
        Some(StopReason::Cancel) => Some(Report {
            outcome: Outcome::Cancelled,
            error: Some("cancelled by an operator".into()),
            ..report
        }),
        None => Some(report),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The result payload of a subprocess attempt: exit status and output.
fn subprocess_report(spec: &executor::SubprocessSpec, r: ExecResult) -> Report {
    let result = serde_json::json!({
        "exit_code": r.exit_code,
        "signal": r.signal,
        "timed_out": r.timed_out,
        "stdout": lossy(&r.stdout.bytes),
        "stderr": lossy(&r.stderr.bytes),
        "stdout_truncated": r.stdout.truncated(),
        "stderr_truncated": r.stderr.truncated(),
        "stdout_dropped_bytes": r.stdout.dropped,
        "stderr_dropped_bytes": r.stderr.dropped,
        "duration_ms": r.duration.as_millis() as u64,
    });
    let outcome = if r.succeeded() {
        Outcome::Succeeded
    } else {
        Outcome::Failed { retryable: true }
    };
    let error = (!r.succeeded()).then(|| {
        let what = if r.timed_out {
            "timed out (process group killed)".to_string()
        } else if let Some(sig) = r.signal {
            format!("killed by signal {sig}")
        } else {
            format!("exited with code {}", r.exit_code.unwrap_or(-1))
        };
        let tail = lossy(&r.stderr.bytes);
        let tail = tail.trim_end();
        let tail: String = tail
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if tail.is_empty() {
            format!("{:?} {what}", spec.command[0])
        } else {
            format!("{:?} {what}: {tail}", spec.command[0])
        }
    });
    Report {
        outcome,
        result: serde_json::to_vec(&result).expect("json"),
        error,
        exit_code: r.exit_code,
        signal: r.signal,
        duration: r.duration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jq_130_payload_routes_to_handler_or_subprocess_and_bad_ones_are_named() {
        assert_eq!(
            plan(br#"{"handler":"echo","input":{"a":1},"timeout_s":3}"#).unwrap(),
            Plan::Handler {
                name: "echo".into(),
                input: serde_json::json!({"a":1}),
                timeout: Some(Duration::from_secs(3)),
            }
        );
        assert!(matches!(
            plan(br#"{"command":["true"]}"#).unwrap(),
            Plan::Subprocess(_)
        ));
        for (bad, why) in [
            (&b"not json"[..], "not JSON"),
            (br#"{"handler":5}"#, "non-empty string"),
            (br#"{"handler":"x","command":["a"]}"#, "not allowed"),
            (br#"{"handler":"x","timeout_s":0}"#, "positive integer"),
            (br#"{"command":[]}"#, "non-empty array"),
        ] {
            let e = plan(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    fn attempt(payload: &str) -> Attempt {
        Attempt {
            job_id: Uuid::nil(),
            queue: "default".into(),
            attempt: 1,
            retries: 0,
            payload: payload.as_bytes().to_vec(),
            timeout: None,
            worker_id: "w".into(),
            scheduled_at: None,
        }
    }

    fn exec() -> ExecConfig {
        ExecConfig {
            inherited_env: vec![],
            default_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(1),
            output_cap: 1024,
            allowed_commands: vec![],
        }
    }

    #[tokio::test]
    async fn jq_173_a_program_outside_allowed_commands_fails_permanently_and_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let exec = ExecConfig {
            allowed_commands: vec!["echo".into(), "/bin/true".into()],
            ..exec()
        };
        let payload = format!(r#"{{"command":["touch","{}"]}}"#, marker.display());
        let r = execute(&attempt(&payload), &Handlers::empty(), &exec, &Stopper::default())
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Failed { retryable: false });
        let e = r.error.unwrap();
        assert!(
            e.contains("\"touch\"") && e.contains("exec.allowed_commands"),
            "{e}"
        );
        assert!(!marker.exists(), "nothing may be started");
        // A bare name allows only the bare name: a path ending in it does not pass.
        assert!(exec.allows("echo") && exec.allows("/bin/true"));
        assert!(!exec.allows("/tmp/evil/echo") && !exec.allows("true") && !exec.allows("./echo"));
        let r = execute(
            &attempt(r#"{"command":["echo","hi"]}"#),
            &Handlers::empty(),
            &exec,
            &Stopper::default(),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, Outcome::Succeeded, "{:?}", r.error);
        // Empty: any program (the default).
        assert!(self::exec().allows("anything"));
    }

    #[tokio::test]
    async fn jq_105_a_payload_with_a_nul_in_its_argv_fails_permanently() {
        let r = execute(
            &attempt(r#"{"command":["echo","a\u0000b"]}"#),
            &Handlers::empty(),
            &exec(),
            &Stopper::default(),
        )
        .await
        .unwrap();
        assert_eq!(r.outcome, Outcome::Failed { retryable: false });
        assert!(r.error.unwrap().contains("NUL"));
    }

    #[tokio::test]
    async fn jq_110_an_attempt_that_finished_before_the_fence_is_still_reported() {
        // The fence (abandon) fires while the attempt is already done —
        // as when a SIGSTOPped worker wakes up after its job's process
        // exited. The result goes to the server (which refuses it if the
        // attempt is stale) instead of being dropped.
        let stop = Stopper::default();
        let fence = stop.clone();
        let handlers = Handlers::empty().with("done-then-fenced", move |_job: JobContext| {
            let fence = fence.clone();
            async move {
                // Done, and the fence fires as it returns: both are ready
                // when the attempt looks next.
                fence.stop(StopReason::Abandon);
                Ok(b"done".to_vec())
            }
        });
        let r = execute(
            &attempt(r#"{"handler":"done-then-fenced"}"#),
            &handlers,
            &exec(),
            &stop,
        )
        .await;
        let r = r.expect("a finished attempt is reported");
        assert_eq!(r.outcome, Outcome::Succeeded);
        assert_eq!(r.result, b"done");
    }

    #[tokio::test]
    async fn jq_110_an_attempt_cut_short_by_the_fence_reports_nothing() {
        let stop = Stopper::default();
        let fence = stop.clone();
        let handlers = Handlers::empty().with("fenced-while-running", move |_job: JobContext| {
            fence.stop(StopReason::Abandon);
            std::future::pending::<Result<Vec<u8>, HandlerError>>()
        });
        let r = execute(
            &attempt(r#"{"handler":"fenced-while-running"}"#),
            &handlers,
            &exec(),
            &stop,
        )
        .await;
        assert!(r.is_none(), "{r:?}");
    }

    #[test]
    fn jq_113_abandon_wins_over_cancel() {
        let s = Stopper::default();
        s.stop(StopReason::Cancel);
        s.stop(StopReason::Abandon);
        s.stop(StopReason::Cancel);
        assert_eq!(s.reason(), Some(StopReason::Abandon));
        assert!(*s.subscribe().borrow());
    }
}
