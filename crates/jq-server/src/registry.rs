//! Workers connected to *this* server: their assignment streams, queues,
//! capacity and the jobs pushed to them. The dispatcher claims only what
//! these workers have room for (JQ-121), so replicas never over-claim.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use jq_core::JobState;
use jq_proto::v1;
use jq_store::Expected;
use tokio::sync::{Notify, mpsc};
use tokio_stream::Stream;
use tonic::Status;
use uuid::Uuid;

pub type Outbound = Result<v1::ServerMessage, Status>;

struct InFlight {
    attempt: u32,
    acked: bool,
    created_at: DateTime<Utc>,
    /// The job's state as the claim, then the ack, left it: the worker's
    /// next call is decided from it without a read (jq_store::batch).
    expected: Option<Expected>,
}

struct Conn {
    generation: u64,
    tx: mpsc::Sender<Outbound>,
    queues: Vec<String>,
    queue_weights: Vec<u32>,
    concurrency: u32,
    jobs: HashMap<Uuid, InFlight>,
    /// When its heartbeat last looked for RUNNING jobs it no longer lists,
    /// and how long that look took.
    unlisted_checked: Option<std::time::Instant>,
    unlisted_cost: std::time::Duration,
}

/// The look for unlisted jobs may use at most 1/`UNLISTED_SHARE` of one
/// connection's time per worker (as the gauges: ADR 0021).
const UNLISTED_SHARE: u32 = 50;

/// A worker with room for more jobs, as the dispatcher sees it.
#[derive(Debug, Clone)]
pub struct Free {
    pub worker_id: String,
    pub generation: u64,
    pub queues: Vec<String>,
    /// One per queue (JQ-123), or empty.
    pub queue_weights: Vec<u32>,
    pub free: u32,
}

pub struct Registry {
    conns: Mutex<HashMap<String, Conn>>,
    generation: AtomicU64,
    wake: Notify,
    /// Whether the dispatcher's last cycle may have left claimable jobs for
    /// want of room (a worker was full, or a claim got all it asked for):
    /// only then does a finished job wake it. Otherwise that wake-up would
    /// run one more claim that finds nothing; new jobs wake it themselves.
    room_wanted: AtomicBool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            conns: Mutex::default(),
            generation: AtomicU64::default(),
            wake: Notify::new(),
            room_wanted: AtomicBool::new(true),
        }
    }
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// A worker opened its stream. A second stream for the same id replaces
    /// the first (whose sender is dropped, ending it).
    pub fn connect(
        &self,
        worker_id: &str,
        queues: Vec<String>,
        queue_weights: Vec<u32>,
        concurrency: u32,
    ) -> (u64, mpsc::Receiver<Outbound>) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        // Room for every job it may hold plus control messages.
        let (tx, rx) = mpsc::channel(concurrency as usize * 2 + 16);
        let conn = Conn {
            generation,
            tx,
            queues,
            queue_weights,
            concurrency,
            jobs: HashMap::new(),
            unlisted_checked: None,
            unlisted_cost: std::time::Duration::ZERO,
        };
        self.conns.lock().unwrap().insert(worker_id.to_string(), conn);
        self.wake();
        (generation, rx)
    }

    /// The stream of `generation` ended. Returns the assignments it never
    /// acknowledged, which must go back to PENDING (JQ-111).
    pub fn disconnect(&self, worker_id: &str, generation: u64) -> Vec<(Uuid, u32)> {
        let mut conns = self.conns.lock().unwrap();
        match conns.get(worker_id) {
            Some(c) if c.generation == generation => {
                let c = conns.remove(worker_id).expect("present");
                c.jobs
                    .into_iter()
                    .filter(|(_, j)| !j.acked)
                    .map(|(id, j)| (id, j.attempt))
                    .collect()
            }
            _ => vec![],
        }
    }

    /// Whether a heartbeat of `worker_id` should look for RUNNING jobs it
    /// no longer lists: for a worker connected here at most every `every`,
    /// and no more often than 50 times the last look took (the look walks
    /// the worker's in-flight index, which a pinned horizon lengthens with
    /// every job it ran: ADR 0021); always for one whose stream is
    /// elsewhere.
    pub fn unlisted_check_due(&self, worker_id: &str, every: std::time::Duration) -> bool {
        let mut conns = self.conns.lock().unwrap();
        let Some(c) = conns.get_mut(worker_id) else {
            return true;
        };
        let now = std::time::Instant::now();
        let every = every.max(c.unlisted_cost * UNLISTED_SHARE);
        if c.unlisted_checked.is_some_and(|t| now.duration_since(t) < every) {
            return false;
        }
        c.unlisted_checked = Some(now);
        true
    }

    /// The look for `worker_id`'s unlisted jobs took `cost`.
    pub fn unlisted_checked(&self, worker_id: &str, cost: std::time::Duration) {
        if let Some(c) = self.conns.lock().unwrap().get_mut(worker_id) {
            c.unlisted_cost = cost;
        }
    }

    /// Close a worker's stream (deregistered, or declared dead).
    pub fn remove(&self, worker_id: &str) {
        self.conns.lock().unwrap().remove(worker_id);
    }

    /// Workers with free capacity, most free first.
    pub fn free(&self) -> Vec<Free> {
        let conns = self.conns.lock().unwrap();
        let mut v: Vec<Free> = conns
            .iter()
            .filter(|(_, c)| !c.tx.is_closed())
            .map(|(id, c)| Free {
                worker_id: id.clone(),
                generation: c.generation,
                queues: c.queues.clone(),
                queue_weights: c.queue_weights.clone(),
                free: c.concurrency.saturating_sub(c.jobs.len() as u32),
            })
            .filter(|f| f.free > 0)
            .collect();
        v.sort_by(|a, b| b.free.cmp(&a.free).then(a.worker_id.cmp(&b.worker_id)));
        v
    }

    /// Push an assignment; false when the stream is gone or full, in which
    /// case the caller returns the job (JQ-111).
    pub fn deliver(
        &self,
        f: &Free,
        job: Uuid,
        attempt: u32,
        created_at: DateTime<Utc>,
        expected: Option<Expected>,
        msg: v1::ServerMessage,
    ) -> bool {
        let mut conns = self.conns.lock().unwrap();
        let Some(c) = conns
            .get_mut(&f.worker_id)
            .filter(|c| c.generation == f.generation)
        else {
            return false;
        };
        if c.tx.try_send(Ok(msg)).is_err() {
            return false;
        }
        c.jobs.insert(
            job,
            InFlight {
                attempt,
                acked: false,
                created_at,
                expected,
            },
        );
        true
    }

    /// Send a control message (cancel, drain, shutdown) if the worker is
    /// connected here.
    pub fn send(&self, worker_id: &str, msg: v1::ServerMessage) -> bool {
        let conns = self.conns.lock().unwrap();
        conns
            .get(worker_id)
            .is_some_and(|c| c.tx.try_send(Ok(msg)).is_ok())
    }

    /// The worker started the job, which is now in `state`; returns when
    /// it was created.
    pub fn acked(&self, worker_id: &str, job: Uuid, state: JobState) -> Option<DateTime<Utc>> {
        let mut conns = self.conns.lock().unwrap();
        let j = conns.get_mut(worker_id)?.jobs.get_mut(&job)?;
        j.acked = true;
        if let Some(e) = j.expected.as_mut() {
            e.state = state;
        }
        Some(j.created_at)
    }

    /// The state this server last left `job` in for this worker and
    /// attempt, if it holds one.
    pub fn expected(&self, worker_id: &str, job: Uuid, attempt: u32) -> Option<Expected> {
        let conns = self.conns.lock().unwrap();
        let j = conns.get(worker_id)?.jobs.get(&job)?;
        (j.attempt == attempt).then(|| j.expected.clone()).flatten()
    }

    /// The job left the worker (result, refusal, stale lease): its room
    /// is free again, which matters if the dispatcher wants room.
    pub fn finished(&self, worker_id: &str, job: Uuid) {
        if let Some(c) = self.conns.lock().unwrap().get_mut(worker_id) {
            c.jobs.remove(&job);
        }
        if self.room_wanted.load(Ordering::Acquire) {
            self.wake();
        }
    }

    /// After a dispatch cycle: whether it may have left jobs for want of
    /// room (`more`: a claim got all it asked for), or any connected worker
    /// is full.
    pub fn cycle_ended(&self, more: bool) {
        let full = more
            || self
                .conns
                .lock()
                .unwrap()
                .values()
                .any(|c| c.jobs.len() as u32 >= c.concurrency);
        self.room_wanted.store(full, Ordering::Release);
    }

    pub fn connected(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// In-flight count per connected worker, for metrics.
    pub fn in_flight(&self) -> Vec<(String, usize)> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|(id, c)| (id.clone(), c.jobs.len()))
            .collect()
    }

    /// End every assignment stream (graceful shutdown): workers see the end
    /// of stream and reconnect, to this server when it is back or another.
    pub fn close_all(&self) {
        self.conns.lock().unwrap().clear();
    }

    /// Ask the dispatcher to run a cycle now (JQ-120).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

/// The response stream of `StreamAssignments`. When tonic drops it (the
/// worker went away), unacknowledged assignments go back to PENDING.
pub struct AssignmentStream {
    pub rx: mpsc::Receiver<Outbound>,
    pub on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Stream for AssignmentStream {
    type Item = Outbound;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for AssignmentStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> v1::ServerMessage {
        v1::ServerMessage {
            kind: Some(v1::server_message::Kind::Drain(v1::Drain {})),
        }
    }

    #[test]
    fn jq_121_free_capacity_counts_jobs_in_flight() {
        let r = Registry::default();
        let (_g, _rx) = r.connect("w", vec!["default".into()], vec![], 2);
        let f = r.free().remove(0);
        assert_eq!(f.free, 2);
        assert!(r.deliver(&f, Uuid::new_v4(), 1, Utc::now(), None, msg()));
        assert_eq!(r.free()[0].free, 1);
        assert!(r.deliver(&f, Uuid::new_v4(), 1, Utc::now(), None, msg()));
        assert!(r.free().is_empty(), "no room, nothing to claim");
    }

    #[test]
    fn jq_111_disconnect_returns_unacked_assignments_only() {
        let r = Registry::default();
        let (g, rx) = r.connect("w", vec!["default".into()], vec![], 4);
        let f = r.free().remove(0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        r.deliver(&f, a, 3, Utc::now(), None, msg());
        r.deliver(&f, b, 1, Utc::now(), None, msg());
        r.acked("w", a, JobState::new(0));
        drop(rx);
        assert!(
            !r.deliver(&f, Uuid::new_v4(), 1, Utc::now(), None, msg()),
            "closed stream takes nothing"
        );
        assert_eq!(r.disconnect("w", g), vec![(b, 1)]);
        assert_eq!(r.connected(), 0);
    }

    /// A finished job frees room; that wakes the dispatcher only when its
    /// last cycle may have left jobs for want of room. Otherwise the cycle
    /// would only run a claim that finds nothing (new jobs wake it).
    #[test]
    fn jq_120_a_finished_job_wakes_the_dispatcher_only_when_room_is_wanted() {
        use futures::FutureExt;
        let r = Registry::default();
        let woken = |r: &Registry| r.woken().now_or_never().is_some();
        let (_g, _rx) = r.connect("w", vec!["default".into()], vec![], 2);
        assert!(woken(&r), "a connecting worker wakes it");
        let f = r.free().remove(0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        r.deliver(&f, a, 1, Utc::now(), None, msg());
        r.cycle_ended(false);
        r.finished("w", a);
        assert!(!woken(&r), "the queue was drained and the worker had room");
        r.cycle_ended(true);
        r.finished("w", b);
        assert!(woken(&r), "the last claim got all it asked for");
        r.deliver(&f, a, 1, Utc::now(), None, msg());
        r.deliver(&f, b, 1, Utc::now(), None, msg());
        r.cycle_ended(false);
        r.finished("w", a);
        assert!(woken(&r), "the worker was full");
    }

    #[test]
    fn reconnect_replaces_the_old_stream() {
        let r = Registry::default();
        let (g1, _rx1) = r.connect("w", vec!["q".into()], vec![], 1);
        let (g2, _rx2) = r.connect("w", vec!["q".into()], vec![], 1);
        assert!(
            r.disconnect("w", g1).is_empty(),
            "the old stream's end does not remove the new one"
        );
        assert_eq!(r.connected(), 1);
        r.disconnect("w", g2);
        assert_eq!(r.connected(), 0);
    }

    #[test]
    fn nfr_012_the_look_for_unlisted_jobs_waits_fifty_times_its_cost() {
        let r = Registry::default();
        let (_g, _rx) = r.connect("w", vec!["default".into()], vec![], 2);
        let every = std::time::Duration::ZERO;
        assert!(r.unlisted_check_due("w", every));
        assert!(r.unlisted_check_due("w", every), "a free look may run again");
        // A look that took 10 s (a long pin): the next waits 500 s.
        r.unlisted_checked("w", std::time::Duration::from_secs(10));
        assert!(!r.unlisted_check_due("w", every));
        // A worker whose stream is elsewhere: always.
        assert!(r.unlisted_check_due("other", every));
    }
}
