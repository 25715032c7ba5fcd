//! The worker's life: register, open the assignment stream, heartbeat
//! with every held lease, run assignments within the concurrency limit,
//! report results, and come back by itself when the server or the stream
//! goes away. Graceful stop (SIGTERM, or the server's Shutdown) closes the
//! stream so no new work arrives, finishes running jobs up to a deadline,
//! deregisters and returns.
//!
//! Architecture invariant: a job runs only after the server accepted its
//! ack for that exact attempt, and at most `concurrency` jobs hold a permit
//! at once (FR-021), whatever the server sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jq_client::{ClientError, Clients, Target};
use jq_config::WorkerConfig;
use jq_core::WorkerStatus;
use jq_core::records::Lease;
use jq_telemetry::WorkerMetrics;
use jq_telemetry::http::{Readiness, health_router, serve, worker_metrics_router};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

use crate::calls::Calls;
use crate::executor::ExecConfig;
use crate::handler::Handlers;
use crate::job::{self, Attempt, StopReason, Stopper};
use crate::wire::{self, Message};

/// Semver and git commit (NFR-017).
pub const VERSION: &str = jq_config::VERSION;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("worker.{0}")]
    Queues(jq_core::ValidationError),
}

/// A lease this worker holds, and how to stop its attempt.
struct Held {
    attempt: u32,
    stopper: Stopper,
}

struct Inner {
    id: String,
    hostname: String,
    cfg: WorkerConfig,
    handlers: Handlers,
    exec: ExecConfig,
    clients: Clients,
    /// Acks and results, batched (calls.rs).
    calls: Calls,
    metrics: Arc<WorkerMetrics>,
    permits: Arc<Semaphore>,
    held: Mutex<HashMap<Uuid, Held>>,
    draining: AtomicBool,
    connected: AtomicBool,
    /// Graceful stop requested: take nothing new.
    stop: CancellationToken,
    /// Deadline passed or stopped: give up on reports and heartbeats.
    hard_stop: CancellationToken,
    /// The server no longer knows us: register again.
    reregister: Notify,
    heartbeat_ms: AtomicU64,
    /// The server's heartbeat timeout: past it, it hands our jobs to others.
    heartbeat_timeout_ms: AtomicU64,
    /// The server told us a (new) heartbeat interval.
    heartbeat_changed: Notify,
}

/// A started worker. Dropping it does not stop it; call [`shutdown`].
///
/// [`shutdown`]: RunningWorker::shutdown
pub struct RunningWorker {
    pub worker_id: String,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    inner: Arc<Inner>,
    /// Cancelled once the worker has stopped.
    done: CancellationToken,
}

impl RunningWorker {
    /// Begin a graceful stop (what SIGTERM does); returns at once.
    pub fn begin_shutdown(&self) {
        self.inner.stop.cancel();
    }

    /// Graceful stop: no new jobs, running ones finish (up to
    /// `worker.shutdown_grace_s`), deregister.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        self.wait().await;
    }

    /// Until the worker has stopped (after [`begin_shutdown`] or the
    /// server's Shutdown).
    ///
    /// [`begin_shutdown`]: RunningWorker::begin_shutdown
    pub async fn wait(&mut self) {
        self.done.cancelled().await;
    }

    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Attempts held now (queued for a slot or running).
    pub fn held_jobs(&self) -> usize {
        self.inner.held.lock().unwrap().len()
    }
}

/// `<hostname>-<pid>`, the default worker id.
pub fn default_worker_id() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn target(cfg: &WorkerConfig) -> Target {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Target {
        addr: cfg.worker.server_addr.clone(),
        tls_ca: some(&cfg.tls.ca),
        tls_cert: some(&cfg.tls.cert),
        tls_key: some(&cfg.tls.key),
        tls_domain: some(&cfg.tls.domain),
        token: some(&cfg.auth.token),
        connect_timeout: Some(Duration::from_secs(5)),
        request_timeout: Some(Duration::from_secs(30)),
    }
}

struct Ready(Arc<Inner>);

impl Readiness for Ready {
    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if self.0.stop.is_cancelled() {
                Err("shutting down".into())
            } else if !self.0.connected.load(Ordering::Relaxed) {
                Err("not connected to jq-server".into())
            } else {
                Ok(())
            }
        })
    }
}

async fn listen(bind: &str, port: u16) -> Result<TcpListener, WorkerError> {
    let addr = format!("{bind}:{port}");
    TcpListener::bind(&addr)
        .await
        .map_err(|source| WorkerError::Listen { addr, source })
}

/// Start a worker: bind health and metrics, then connect (retrying until
/// the server answers) and run jobs until stopped.
pub async fn start(cfg: WorkerConfig, handlers: Handlers) -> Result<RunningWorker, WorkerError> {
    let id = if cfg.worker.id.is_empty() {
        default_worker_id()
    } else {
        cfg.worker.id.clone()
    };
    // Refused here, before anything runs, rather than at each register.
    jq_core::weights::parse_queue_weights(&cfg.worker.queues).map_err(WorkerError::Queues)?;
    let clients = target(&cfg).connect_lazy()?;
    let health = listen(&cfg.worker.bind, cfg.worker.health_port).await?;
    let metrics_l = listen(&cfg.worker.bind, cfg.worker.metrics_port).await?;
    let (health_addr, metrics_addr) = (
        health.local_addr().expect("bound"),
        metrics_l.local_addr().expect("bound"),
    );
    let metrics = Arc::new(WorkerMetrics::new(&id));
    metrics.capacity.set(cfg.worker.concurrency as i64);
    let allow: Vec<&str> = cfg.exec.env_allowlist.iter().map(String::as_str).collect();
    let exec = ExecConfig {
        inherited_env: ExecConfig::inherit(std::env::vars(), &allow),
        default_timeout: Duration::from_secs(cfg.exec.default_timeout_s),
        kill_grace: Duration::from_secs(cfg.exec.kill_grace_s),
        output_cap: cfg.exec.output_cap_bytes as usize,
        allowed_commands: cfg.exec.allowed_commands.clone(),
    };
    let inner = Arc::new(Inner {
        id: id.clone(),
        hostname: hostname(),
        permits: Arc::new(Semaphore::new(cfg.worker.concurrency as usize)),
        cfg,
        handlers,
        exec,
        calls: Calls::new(&clients),
        clients,
        metrics: metrics.clone(),
        held: Mutex::default(),
        draining: AtomicBool::new(false),
        connected: AtomicBool::new(false),
        stop: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
        reregister: Notify::new(),
        heartbeat_ms: AtomicU64::new(5000),
        heartbeat_timeout_ms: AtomicU64::new(30_000),
        heartbeat_changed: Notify::new(),
    });
    let done = CancellationToken::new();
    tokio::spawn(serve(
        health,
        health_router(Arc::new(Ready(inner.clone()))),
        inner.hard_stop.clone().cancelled_owned(),
    ));
    tokio::spawn(serve(
        metrics_l,
        worker_metrics_router(metrics),
        inner.hard_stop.clone().cancelled_owned(),
    ));
    tokio::spawn(heartbeats(inner.clone()));
    {
        let (inner, done) = (inner.clone(), done.clone());
        tokio::spawn(async move {
            run(inner.clone()).await;
            inner.hard_stop.cancel();
            done.cancel();
        });
    }
    tracing::info!(worker_id = %id, queues = ?inner.cfg.worker.queues, concurrency = inner.cfg.worker.concurrency,
        server = %inner.cfg.worker.server_addr, handlers = ?inner.handlers, %health_addr, %metrics_addr, "worker started");
    Ok(RunningWorker {
        worker_id: id,
        health_addr,
        metrics_addr,
        inner,
        done,
    })
}

/// Doubling, jittered delays between reconnects.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min_ms: u64, max_ms: u64) -> Backoff {
        let min = Duration::from_millis(min_ms);
        Backoff {
            min,
            max: Duration::from_millis(max_ms),
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Half to full: workers restarted together don't reconnect in step.
        d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// Sleep, unless a stop comes first (then false).
async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

/// What a refused ack or report means for its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The server was not reached, or did not answer in time: try again
    /// for as long as the attempt may (the call is idempotent).
    Unreached,
    /// The server answered with a failure of its own (INTERNAL, UNKNOWN,
    /// RESOURCE_EXHAUSTED): try again, a bounded number of times, since a
    /// fault that persists would otherwise hold the job forever.
    ServerFault,
    /// ABORTED or FAILED_PRECONDITION: the attempt is no longer current
    /// (JQ-110). End it quietly.
    NotCurrent,
    /// Any other code (INVALID_ARGUMENT, PERMISSION_DENIED…): the server
    /// will not take this call however often it comes. End it loudly.
    Refused,
}

fn refusal(s: &tonic::Status) -> Refusal {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Refusal::Unreached,
        Code::Internal | Code::Unknown | Code::ResourceExhausted => Refusal::ServerFault,
        Code::Aborted | Code::FailedPrecondition => Refusal::NotCurrent,
        _ => Refusal::Refused,
    }
}

fn retried(r: Refusal) -> bool {
    matches!(r, Refusal::Unreached | Refusal::ServerFault)
}

/// Tries of a result the server keeps answering with a fault of its own
/// (about a minute at the 5 s cap); then the job is left to the server's
/// reclaim of attempts the worker no longer holds.
const SERVER_FAULT_TRIES: u32 = 15;

impl Inner {
    fn leases(&self) -> Vec<Lease> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .map(|(job_id, h)| Lease {
                job_id: *job_id,
                attempt: h.attempt,
            })
            .collect()
    }

    fn stop_lease(&self, l: &Lease, why: StopReason) {
        if let Some(h) = self.held.lock().unwrap().get(&l.job_id)
            && h.attempt == l.attempt
        {
            tracing::info!(job_id = %l.job_id, attempt = l.attempt, reason = ?why, "stopping attempt");
            h.stopper.stop(why);
        }
    }

    async fn register(&self) -> Result<wire::Registered, tonic::Status> {
        // Checked by `start`, so this parses.
        let (queues, queue_weights) = jq_core::weights::parse_queue_weights(&self.cfg.worker.queues)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let r = wire::register(
            &self.clients,
            wire::Registration {
                worker_id: &self.id,
                hostname: &self.hostname,
                concurrency: self.cfg.worker.concurrency,
                queues: &queues,
                queue_weights: &queue_weights,
                version: VERSION,
                held: self.leases(),
                draining: self.draining.load(Ordering::Relaxed),
            },
        )
        .await?;
        if let Some(every) = r.heartbeat_interval {
            self.heartbeat_ms
                .store(every.as_millis() as u64, Ordering::Relaxed);
            // The heartbeat loop may be sleeping out the default interval,
            // longer than this server's timeout.
            self.heartbeat_changed.notify_waiters();
        }
        if let Some(timeout) = r.heartbeat_timeout {
            self.heartbeat_timeout_ms
                .store(timeout.as_millis() as u64, Ordering::Relaxed);
        }
        Ok(r)
    }

    fn drain(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!(worker_id = %self.id, "draining: finishing running jobs, taking no new ones");
        }
    }
}

/// Connect, take work, reconnect; then the graceful part of stopping.
async fn run(inner: Arc<Inner>) {
    let mut jobs = JoinSet::new();
    let mut backoff = Backoff::new(
        inner.cfg.worker.reconnect_min_ms,
        inner.cfg.worker.reconnect_max_ms,
    );
    let stop = inner.stop.clone();
    let mut first = true;
    'session: while !stop.is_cancelled() {
        if !first && !pause(backoff.step(), &inner.stop).await {
            break;
        }
        first = false;
        match inner.register().await {
            Ok(r) => {
                tracing::info!(worker_id = %inner.id, server_version = %r.server_version, kept = inner.held.lock().unwrap().len(), "registered");
            }
            Err(e) => {
                tracing::warn!(worker_id = %inner.id, code = ?e.code(), error = %e.message(), "cannot register; retrying");
                continue;
            }
        }
        let mut stream = match wire::Assignments::open(&inner.clients, &inner.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(worker_id = %inner.id, error = %e.message(), "cannot open the assignment stream; retrying");
                continue;
            }
        };
        inner.connected.store(true, Ordering::Relaxed);
        inner.metrics.connected.set(1);
        backoff.reset();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break 'session,
                _ = inner.reregister.notified() => {
                    tracing::warn!(worker_id = %inner.id, "the server no longer knows this worker; registering again");
                    break;
                }
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                msg = stream.next() => match msg {
                    Ok(Some(Message::Assignment(a))) => {
                        let stopper = Stopper::default();
                        inner.held.lock().unwrap().insert(a.job_id, Held { attempt: a.attempt, stopper: stopper.clone() });
                        jobs.spawn(run_assignment(inner.clone(), a, stopper));
                    }
                    Ok(Some(Message::Cancel(l))) => inner.stop_lease(&l, StopReason::Cancel),
                    Ok(Some(Message::Drain)) => inner.drain(),
                    Ok(Some(Message::Shutdown)) => {
                        tracing::info!(worker_id = %inner.id, "the server asked this worker to shut down");
                        break 'session;
                    }
                    Ok(None) => {
                        tracing::warn!(worker_id = %inner.id, "the server closed the assignment stream; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(worker_id = %inner.id, error = %e.message(), "assignment stream failed; reconnecting");
                        break;
                    }
                }
            }
        }
        inner.connected.store(false, Ordering::Relaxed);
        inner.metrics.connected.set(0);
        inner.metrics.reconnects.inc();
    }
    // Closing the stream (leaving scope above) tells the server to send
    // nothing more; assignments not yet acked go back to PENDING there.
    inner.connected.store(false, Ordering::Relaxed);
    inner.metrics.connected.set(0);
    inner.stop.cancel();
    let grace = Duration::from_secs(inner.cfg.worker.shutdown_grace_s);
    let running = inner.held.lock().unwrap().len();
    tracing::info!(worker_id = %inner.id, running, grace_s = grace.as_secs(), "stopping: finishing running jobs");
    let finished = tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} })
        .await
        .is_ok();
    if !finished {
        let left = inner.leases();
        tracing::warn!(worker_id = %inner.id, jobs = left.len(), "shutdown deadline passed; stopping the rest, the server reclaims them");
        for l in &left {
            inner.stop_lease(l, StopReason::Abandon);
        }
        // Reports and retries end now; processes get their kill grace.
        inner.hard_stop.cancel();
        let _ = tokio::time::timeout(inner.exec.kill_grace + Duration::from_secs(1), async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        jobs.abort_all();
    }
    inner.hard_stop.cancel();
    let dereg = wire::deregister(&inner.clients, &inner.id);
    match tokio::time::timeout(Duration::from_secs(5), dereg).await {
        Ok(Ok(_)) => tracing::info!(worker_id = %inner.id, "deregistered; stopped"),
        Ok(Err(e)) => {
            tracing::warn!(worker_id = %inner.id, error = %e.message(), "deregister failed; the server will notice the missing heartbeats")
        }
        Err(_) => {
            tracing::warn!(worker_id = %inner.id, "deregister timed out; the server will notice the missing heartbeats")
        }
    }
}

/// Heartbeat every interval with the held leases (FR-019) and act on the
/// answer: stale leases stop, cancels stop and report, an unknown worker
/// registers again, DRAINING/STOPPING are honoured even when the control
/// message went to another server replica.
async fn heartbeats(inner: Arc<Inner>) {
    let hard = inner.hard_stop.clone();
    let mut last_ok = std::time::Instant::now();
    loop {
        // Listen before reading the interval, so a change in between wakes us.
        let changed = inner.heartbeat_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let every = Duration::from_millis(inner.heartbeat_ms.load(Ordering::Relaxed));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = changed => continue,
            _ = hard.cancelled() => return,
        }
        // No longer than an interval: a hung server must not stall the
        // lease check below.
        let sent =
            tokio::time::timeout(every, wire::heartbeat(&inner.clients, &inner.id, &inner.leases())).await;
        let r = match sent {
            Ok(Ok(r)) => r,
            failed => {
                if let Ok(Err(e)) = failed {
                    tracing::debug!(worker_id = %inner.id, error = %e.message(), "heartbeat failed");
                }
                fence(&inner, last_ok.elapsed(), every);
                continue;
            }
        };
        if !r.registered {
            inner.reregister.notify_waiters();
            fence(&inner, last_ok.elapsed(), every);
            continue;
        }
        last_ok = std::time::Instant::now();
        for l in &r.stale {
            inner.stop_lease(l, StopReason::Abandon);
        }
        for l in &r.cancel {
            inner.stop_lease(l, StopReason::Cancel);
        }
        match r.status {
            Some(WorkerStatus::Draining) => inner.drain(),
            Some(WorkerStatus::Stopping) if !inner.stop.is_cancelled() => {
                tracing::info!(worker_id = %inner.id, "the server asked this worker to shut down");
                inner.stop.cancel();
            }
            _ => {}
        }
    }
}

/// Self-fencing: when no heartbeat has been accepted for nearly the
/// server's timeout, the server is about to hand this worker's jobs to
/// another one. Stop them first (abandon: nothing is reported), so an
/// attempt never runs on here while its retry runs elsewhere — whether the
/// server died, the network split, or this worker was too slow to answer.
fn fence(inner: &Inner, silent: Duration, interval: Duration) {
    if silent < lease_limit(inner, interval) {
        return;
    }
    let held = inner.leases();
    if held.is_empty() {
        return;
    }
    tracing::warn!(worker_id = %inner.id, jobs = held.len(), silent_s = silent.as_secs_f64(),
        "no heartbeat accepted for too long; stopping running jobs before the server hands them to another worker");
    for l in &held {
        inner.stop_lease(l, StopReason::Abandon);
    }
}

/// How long a lease can be trusted without an accepted heartbeat: the
/// server's timeout less two intervals (its reaper runs on its own clock).
fn lease_limit(inner: &Inner, interval: Duration) -> Duration {
    let timeout = Duration::from_millis(inner.heartbeat_timeout_ms.load(Ordering::Relaxed));
    timeout.saturating_sub(interval * 2).max(interval)
}

/// The entry a running assignment holds in `Inner::held`, released when its
/// task ends, whichever way it ends (mini-redis moves its connection permit
/// into the task the same way). Only its own attempt's entry: a newer
/// attempt of the job given to this worker meanwhile keeps its lease.
struct HeldLease {
    inner: Arc<Inner>,
    lease: Lease,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock().unwrap();
        if held
            .get(&self.lease.job_id)
            .is_some_and(|h| h.attempt == self.lease.attempt)
        {
            held.remove(&self.lease.job_id);
        }
    }
}

/// One assignment from slot to report.
async fn run_assignment(inner: Arc<Inner>, a: Attempt, stopper: Stopper) {
    let lease = HeldLease {
        inner: inner.clone(),
        lease: Lease {
            job_id: a.job_id,
            attempt: a.attempt,
        },
    };
    let mut stopped = stopper.subscribe();
    let permit = tokio::select! {
        p = inner.permits.clone().acquire_owned() => p.ok(),
        _ = stopped.wait_for(|s| *s) => None,
        _ = inner.stop.cancelled() => None,
    };
    let Some(permit) = permit else {
        // Never acked: the server returns it to PENDING (stream closed) or
        // it was cancelled meanwhile.
        return;
    };
    let asked = std::time::Instant::now();
    if let Err(e) = ack(&inner, &a).await {
        tracing::warn!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(), "ack refused; not running it");
        return;
    }
    // An answer that took longer than a lease can be trusted (this worker
    // was frozen, or the network stalled, with the ack in flight) may be
    // for a job the server has handed on meanwhile: do not start it.
    let every = Duration::from_millis(inner.heartbeat_ms.load(Ordering::Relaxed));
    if asked.elapsed() >= lease_limit(&inner, every) {
        tracing::warn!(job_id = %a.job_id, attempt = a.attempt, waited_s = asked.elapsed().as_secs_f64(),
            "ack answered too late to trust the lease; not running it");
        return;
    }
    inner.metrics.job_concurrency.inc();
    tracing::info!(job_id = %a.job_id, queue = %a.queue, attempt = a.attempt, "job started");
    let report = job::execute(&a, &inner.handlers, &inner.exec, &stopper).await;
    inner.metrics.job_concurrency.dec();
    let label = report.as_ref().map(|r| r.outcome_label()).unwrap_or("abandoned");
    inner.metrics.jobs.with_label_values(&[&a.queue, label]).inc();
    if let Some(r) = report {
        inner
            .metrics
            .job_duration
            .with_label_values(&[&a.queue])
            .observe(r.duration.as_secs_f64());
        report_result(&inner, &a, r).await;
    } else {
        tracing::info!(job_id = %a.job_id, attempt = a.attempt, "attempt abandoned; nothing reported");
    }
    // The lease goes before the slot, so a heartbeat never lists a
    // finished attempt beside a new one.
    drop(lease);
    drop(permit);
}

/// How a worker call is retried.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// Tries after the first; `None`: until the hard stop.
    tries: Option<u32>,
    /// Longest wait between tries (they start at 100 ms and double).
    max_delay: Duration,
}

/// A few tries only: an assignment not acked in time is reclaimed by the
/// server anyway.
const ACK_RETRY: Retry = Retry {
    tries: Some(5),
    max_delay: Duration::from_secs(5),
};

/// Until the server answers (results are idempotent per attempt) or the
/// shutdown deadline passes.
const REPORT_RETRY: Retry = Retry {
    tries: None,
    max_delay: Duration::from_secs(5),
};

/// Make `call` until it succeeds or is refused for good. A refusal the
/// call may outlive (the server unreached, or a fault of its own) is tried
/// again as `retry` says, the server's own faults at most
/// [`SERVER_FAULT_TRIES`] times; the hard stop ends the tries at once.
async fn with_retries<T, F, Fut>(
    inner: &Inner,
    what: &str,
    a: &Attempt,
    retry: Retry,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut delay = Duration::from_millis(100);
    let (mut tries, mut faults) = (0, 0);
    loop {
        let e = match call().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let kind = refusal(&e);
        if !retried(kind) || retry.tries.is_some_and(|n| tries >= n) {
            return Err(e);
        }
        if kind == Refusal::ServerFault {
            faults += 1;
            if faults >= SERVER_FAULT_TRIES {
                tracing::error!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(),
                    tries = faults, "{what} refused by a server fault every time; giving up, the server will retry the job");
                return Err(e);
            }
        }
        tries += 1;
        tracing::warn!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(), "{what} failed; retrying");
        if !pause(delay, &inner.hard_stop).await {
            tracing::warn!(job_id = %a.job_id, attempt = a.attempt, "{what} not answered before the deadline; the server will retry the job");
            return Err(e);
        }
        delay = (delay * 2).min(retry.max_delay);
    }
}

async fn ack(inner: &Inner, a: &Attempt) -> Result<(), tonic::Status> {
    with_retries(inner, "ack", a, ACK_RETRY, || wire::ack(&inner.calls, a)).await
}

/// Report the attempt's result; whatever the end, the attempt is over here.
async fn report_result(inner: &Inner, a: &Attempt, r: job::Report) {
    let retries = &inner.metrics.report_retries;
    let mut first = true;
    let sent = with_retries(inner, "result", a, REPORT_RETRY, || {
        if !std::mem::take(&mut first) {
            retries.inc();
        }
        wire::report(&inner.calls, a, &r)
    })
    .await;
    match sent {
        Ok(status) => {
            tracing::info!(job_id = %a.job_id, queue = %a.queue, attempt = a.attempt, outcome = ?r.outcome,
                status = ?status, error = r.error.as_deref().unwrap_or(""), "result reported");
        }
        Err(e) if refusal(&e) == Refusal::NotCurrent => {
            tracing::info!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(),
                "result refused: the attempt is no longer current");
        }
        Err(e) if retried(refusal(&e)) => {} // said by with_retries
        Err(e) => {
            tracing::error!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(),
                "result refused by the server; not retrying it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jq_105_only_aborted_and_failed_precondition_end_an_attempt_quietly() {
        let of = |c| refusal(&tonic::Status::new(c, "x"));
        for c in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled] {
            assert_eq!(of(c), Refusal::Unreached, "{c:?}");
        }
        // A server fault is not "no longer current": the result is retried.
        for c in [Code::Internal, Code::Unknown, Code::ResourceExhausted] {
            assert_eq!(of(c), Refusal::ServerFault, "{c:?}");
            assert!(retried(of(c)));
        }
        for c in [Code::Aborted, Code::FailedPrecondition] {
            assert_eq!(of(c), Refusal::NotCurrent, "{c:?}");
            assert!(!retried(of(c)));
        }
        for c in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Unimplemented,
        ] {
            assert_eq!(of(c), Refusal::Refused, "{c:?}");
            assert!(!retried(of(c)));
        }
    }
}
