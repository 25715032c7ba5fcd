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
use jq_proto::v1::{self, server_message::Kind};
use jq_telemetry::WorkerMetrics;
use jq_telemetry::http::{Readiness, health_router, serve, worker_metrics_router};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tonic::Code;

use crate::calls::Calls;
use crate::executor::ExecConfig;
use crate::handler::Handlers;
use crate::job::{self, Attempt, Outcome, StopReason, Stopper};

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
    held: Mutex<HashMap<String, Held>>,
    draining: AtomicBool,
    connected: AtomicBool,
    /// Graceful stop requested: take nothing new.
    stop: watch::Sender<bool>,
    /// Deadline passed or stopped: give up on reports and heartbeats.
    hard_stop: watch::Sender<bool>,
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
    done: watch::Receiver<bool>,
}

impl RunningWorker {
    /// Begin a graceful stop (what SIGTERM does); returns at once.
    pub fn begin_shutdown(&self) {
        self.inner.stop.send_replace(true);
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
        let _ = self.done.wait_for(|d| *d).await;
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
            if *self.0.stop.borrow() {
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
        stop: watch::channel(false).0,
        hard_stop: watch::channel(false).0,
        reregister: Notify::new(),
        heartbeat_ms: AtomicU64::new(5000),
        heartbeat_timeout_ms: AtomicU64::new(30_000),
        heartbeat_changed: Notify::new(),
    });
    let (done_tx, done) = watch::channel(false);
    tokio::spawn(serve(
        health,
        health_router(Arc::new(Ready(inner.clone()))),
        stopped(&inner.hard_stop),
    ));
    tokio::spawn(serve(
        metrics_l,
        worker_metrics_router(metrics),
        stopped(&inner.hard_stop),
    ));
    tokio::spawn(heartbeats(inner.clone()));
    {
        let inner = inner.clone();
        tokio::spawn(async move {
            run(inner.clone()).await;
            inner.hard_stop.send_replace(true);
            done_tx.send_replace(true);
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

/// Resolves once the flag is set.
fn stopped(flag: &watch::Sender<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = flag.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Sleep, unless a stop comes first (then false).
async fn pause(d: Duration, stop: &watch::Sender<bool>) -> bool {
    let mut rx = stop.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = rx.wait_for(|s| *s) => false,
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
    fn leases(&self) -> Vec<v1::Lease> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .map(|(job_id, h)| v1::Lease {
                job_id: job_id.clone(),
                attempt: h.attempt,
            })
            .collect()
    }

    fn stop_lease(&self, l: &v1::Lease, why: StopReason) {
        if let Some(h) = self.held.lock().unwrap().get(&l.job_id)
            && h.attempt == l.attempt
        {
            tracing::info!(job_id = %l.job_id, attempt = l.attempt, reason = ?why, "stopping attempt");
            h.stopper.stop(why);
        }
    }

    async fn register(&self) -> Result<v1::RegisterResponse, tonic::Status> {
        let req = v1::RegisterRequest {
            worker_id: self.id.clone(),
            hostname: self.hostname.clone(),
            concurrency: self.cfg.worker.concurrency,
            queues: self.cfg.worker.queues.clone(),
            version: VERSION.to_string(),
            in_flight: self.leases(),
            draining: self.draining.load(Ordering::Relaxed),
        };
        let r = self.clients.workers.clone().register(req).await?.into_inner();
        if r.heartbeat_interval_ms > 0 {
            self.heartbeat_ms
                .store(r.heartbeat_interval_ms as u64, Ordering::Relaxed);
            // The heartbeat loop may be sleeping out the default interval,
            // longer than this server's timeout.
            self.heartbeat_changed.notify_waiters();
        }
        if r.heartbeat_timeout_ms > 0 {
            self.heartbeat_timeout_ms
                .store(r.heartbeat_timeout_ms as u64, Ordering::Relaxed);
        }
        Ok(r)
    }

    fn control(&self, m: Kind) -> bool {
        match m {
            Kind::CancelJob(c) => {
                self.stop_lease(
                    &v1::Lease {
                        job_id: c.job_id,
                        attempt: c.attempt,
                    },
                    StopReason::Cancel,
                );
                true
            }
            Kind::Drain(_) => {
                if !self.draining.swap(true, Ordering::Relaxed) {
                    tracing::info!(worker_id = %self.id, "draining: finishing running jobs, taking no new ones");
                }
                true
            }
            Kind::Shutdown(_) => {
                tracing::info!(worker_id = %self.id, "the server asked this worker to shut down");
                self.stop.send_replace(true);
                false
            }
            Kind::Assignment(_) => true,
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
    let mut stop = inner.stop.subscribe();
    let mut first = true;
    'session: while !*stop.borrow() {
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
        let mut stream = match inner
            .clients
            .workers
            .clone()
            .stream_assignments(v1::StreamAssignmentsRequest {
                worker_id: inner.id.clone(),
            })
            .await
        {
            Ok(s) => s.into_inner(),
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
                _ = stop.wait_for(|s| *s) => break 'session,
                _ = inner.reregister.notified() => {
                    tracing::warn!(worker_id = %inner.id, "the server no longer knows this worker; registering again");
                    break;
                }
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                msg = stream.message() => match msg {
                    Ok(Some(v1::ServerMessage { kind: Some(Kind::Assignment(a)) })) => {
                        let stopper = Stopper::default();
                        inner.held.lock().unwrap().insert(a.job_id.clone(), Held { attempt: a.attempt, stopper: stopper.clone() });
                        jobs.spawn(run_assignment(inner.clone(), a, stopper));
                    }
                    Ok(Some(v1::ServerMessage { kind: Some(k) })) => {
                        if !inner.control(k) {
                            break 'session;
                        }
                    }
                    Ok(Some(_)) => {}
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
    inner.stop.send_replace(true);
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
        inner.hard_stop.send_replace(true);
        let _ = tokio::time::timeout(inner.exec.kill_grace + Duration::from_secs(1), async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        jobs.abort_all();
    }
    inner.hard_stop.send_replace(true);
    let mut client = inner.clients.workers.clone();
    let dereg = client.deregister(v1::DeregisterRequest {
        worker_id: inner.id.clone(),
    });
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
    let mut hard = inner.hard_stop.subscribe();
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
            _ = hard.wait_for(|s| *s) => return,
        }
        let req = v1::HeartbeatRequest {
            worker_id: inner.id.clone(),
            in_flight: inner.leases(),
        };
        // No longer than an interval: a hung server must not stall the
        // lease check below.
        let sent = tokio::time::timeout(every, inner.clients.workers.clone().heartbeat(req)).await;
        let r = match sent {
            Ok(Ok(r)) => r.into_inner(),
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
        match v1::WorkerStatus::try_from(r.status) {
            Ok(v1::WorkerStatus::Draining) => {
                inner.control(Kind::Drain(v1::Drain {}));
            }
            Ok(v1::WorkerStatus::Stopping) if !*inner.stop.borrow() => {
                inner.control(Kind::Shutdown(v1::Shutdown {}));
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
    job_id: String,
    attempt: u32,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock().unwrap();
        if held.get(&self.job_id).is_some_and(|h| h.attempt == self.attempt) {
            held.remove(&self.job_id);
        }
    }
}

/// One assignment from slot to report.
async fn run_assignment(inner: Arc<Inner>, a: v1::Assignment, stopper: Stopper) {
    let job_id = a.job_id.clone();
    let lease = HeldLease {
        inner: inner.clone(),
        job_id: job_id.clone(),
        attempt: a.attempt,
    };
    let mut stopped = stopper.subscribe();
    let mut stop = inner.stop.subscribe();
    let permit = tokio::select! {
        p = inner.permits.clone().acquire_owned() => p.ok(),
        _ = stopped.wait_for(|s| *s) => None,
        _ = stop.wait_for(|s| *s) => None,
    };
    let Some(permit) = permit else {
        // Never acked: the server returns it to PENDING (stream closed) or
        // it was cancelled meanwhile.
        return;
    };
    let asked = std::time::Instant::now();
    if let Err(e) = ack(&inner, &a).await {
        tracing::warn!(job_id = %job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(), "ack refused; not running it");
        return;
    }
    // An answer that took longer than a lease can be trusted (this worker
    // was frozen, or the network stalled, with the ack in flight) may be
    // for a job the server has handed on meanwhile: do not start it.
    let every = Duration::from_millis(inner.heartbeat_ms.load(Ordering::Relaxed));
    if asked.elapsed() >= lease_limit(&inner, every) {
        tracing::warn!(job_id = %job_id, attempt = a.attempt, waited_s = asked.elapsed().as_secs_f64(),
            "ack answered too late to trust the lease; not running it");
        return;
    }
    inner.metrics.job_concurrency.inc();
    tracing::info!(job_id = %job_id, queue = %a.queue, attempt = a.attempt, "job started");
    let attempt = Attempt {
        job_id: job_id.clone(),
        queue: a.queue.clone(),
        attempt: a.attempt,
        retries: a.retries,
        payload: a.payload,
        timeout: a.timeout_seconds.map(|s| Duration::from_secs(s as u64)),
        worker_id: inner.id.clone(),
    };
    let report = job::execute(&attempt, &inner.handlers, &inner.exec, &stopper).await;
    inner.metrics.job_concurrency.dec();
    let label = report.as_ref().map(|r| r.outcome_label()).unwrap_or("abandoned");
    inner.metrics.jobs.with_label_values(&[&a.queue, label]).inc();
    if let Some(r) = report {
        inner
            .metrics
            .job_duration
            .with_label_values(&[&a.queue])
            .observe(r.duration.as_secs_f64());
        report_result(&inner, &attempt, r).await;
    } else {
        tracing::info!(job_id = %job_id, attempt = a.attempt, "attempt abandoned; nothing reported");
    }
    // The lease goes before the slot, so a heartbeat never lists a
    // finished attempt beside a new one.
    drop(lease);
    drop(permit);
}

async fn ack(inner: &Inner, a: &v1::Assignment) -> Result<(), tonic::Status> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        let req = v1::AckJobRequest {
            worker_id: inner.id.clone(),
            job_id: a.job_id.clone(),
            attempt: a.attempt,
        };
        match inner.calls.ack(req).await {
            Ok(()) => return Ok(()),
            // A few tries only: an assignment not acked in time is reclaimed
            // by the server anyway.
            Err(e) if retried(refusal(&e)) && tries < 5 => {
                tries += 1;
                tracing::debug!(job_id = %a.job_id, code = ?e.code(), error = %e.message(), "ack failed; retrying");
                if !pause(delay, &inner.hard_stop).await {
                    return Err(e);
                }
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Report until the server answers (results are idempotent per attempt,
/// so retrying is safe) or the shutdown deadline passes.
async fn report_result(inner: &Inner, a: &Attempt, r: job::Report) {
    let (outcome, retryable) = match r.outcome {
        Outcome::Succeeded => (v1::Outcome::Succeeded, false),
        Outcome::Failed { retryable } => (v1::Outcome::Failed, retryable),
        Outcome::Cancelled => (v1::Outcome::Cancelled, false),
    };
    let req = v1::ReportResultRequest {
        worker_id: inner.id.clone(),
        job_id: a.job_id.clone(),
        attempt: a.attempt,
        outcome: outcome as i32,
        result: r.result,
        error: r.error.clone().unwrap_or_default(),
        retryable,
        exit_code: r.exit_code,
        signal: r.signal,
        duration_ms: r.duration.as_millis() as u64,
    };
    let mut delay = Duration::from_millis(100);
    let mut faults = 0;
    loop {
        match inner.calls.report(req.clone()).await {
            Ok(resp) => {
                let st = v1::JobStatus::try_from(resp.status).unwrap_or_default();
                tracing::info!(job_id = %a.job_id, queue = %a.queue, attempt = a.attempt, outcome = ?outcome,
                    status = ?st, error = r.error.as_deref().unwrap_or(""), "result reported");
                return;
            }
            Err(e) if retried(refusal(&e)) => {
                if refusal(&e) == Refusal::ServerFault {
                    faults += 1;
                    if faults >= SERVER_FAULT_TRIES {
                        tracing::error!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(),
                            tries = faults, "result refused by a server fault every time; giving up, the server will retry the job");
                        return;
                    }
                }
                inner.metrics.report_retries.inc();
                tracing::warn!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(),
                    "report failed; retrying");
                if !pause(delay, &inner.hard_stop).await {
                    tracing::warn!(job_id = %a.job_id, attempt = a.attempt, "result not reported before the deadline; the server will retry the job");
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) if refusal(&e) == Refusal::NotCurrent => {
                tracing::info!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(),
                    "result refused: the attempt is no longer current");
                return;
            }
            Err(e) => {
                tracing::error!(job_id = %a.job_id, attempt = a.attempt, code = ?e.code(), error = %e.message(),
                    "result refused by the server; not retrying it");
                return;
            }
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
