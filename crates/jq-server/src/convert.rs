//! `jq-core` records to wire messages. Prost types exist only here and in
//! the service modules.

use jq_core::records::{Assignment, Job, JobEvent, Queue, QueueStats, Worker};
use jq_proto::v1;
use jq_proto::{job_status_to_proto, opt_timestamp, timestamp, worker_status_to_proto};

pub fn job(j: Job) -> v1::Job {
    v1::Job {
        id: j.id.to_string(),
        queue: j.queue,
        status: job_status_to_proto(j.status) as i32,
        priority: u32::from(j.priority),
        payload: j.payload,
        has_result: j.result.is_some(),
        result: j.result.unwrap_or_default(),
        error: j.error.unwrap_or_default(),
        attempt: j.attempt,
        retries: j.retries,
        max_retries: j.max_retries,
        worker_id: j.worker_id.unwrap_or_default(),
        idempotency_key: j.idempotency_key.unwrap_or_default(),
        created_at: Some(timestamp(j.created_at)),
        not_before: Some(timestamp(j.not_before)),
        expires_at: opt_timestamp(j.expires_at),
        assigned_at: opt_timestamp(j.assigned_at),
        started_at: opt_timestamp(j.started_at),
        completed_at: opt_timestamp(j.completed_at),
        updated_at: Some(timestamp(j.updated_at)),
        cancel_requested: j.cancel_requested,
    }
}

pub fn event(e: JobEvent) -> v1::JobEvent {
    v1::JobEvent {
        event_id: e.event_id.to_string(),
        job_id: e.job_id.to_string(),
        queue: e.queue,
        from_status: e.from.map(|s| job_status_to_proto(s) as i32).unwrap_or(0),
        to_status: job_status_to_proto(e.to) as i32,
        reason: e.reason,
        worker_id: e.worker_id.unwrap_or_default(),
        attempt: e.attempt,
        occurred_at: Some(timestamp(e.occurred_at)),
        detail: e.detail.unwrap_or_default(),
    }
}

fn secs(d: Option<std::time::Duration>) -> Option<u32> {
    d.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

pub fn queue(q: Queue) -> v1::Queue {
    let s = q.settings;
    v1::Queue {
        name: q.name,
        max_retries: s.max_retries,
        default_ttl_seconds: secs(s.default_ttl),
        default_timeout_seconds: secs(s.default_timeout),
        backoff_base_ms: u32::try_from(s.backoff.base.as_millis()).unwrap_or(u32::MAX),
        backoff_max_ms: u32::try_from(s.backoff.max.as_millis()).unwrap_or(u32::MAX),
        concurrency_limit: s.concurrency_limit,
        rate_limit_per_second: s.rate_limit_per_second,
        paused: q.paused,
        created_at: Some(timestamp(q.created_at)),
        retain_done_seconds: s.retain_done.as_seconds(),
        retain_dead_seconds: s.retain_dead.as_seconds(),
        priority_weights: s.priority_weights.map(|w| w.to_string()).unwrap_or_default(),
    }
}

pub fn stats(s: QueueStats) -> v1::QueueStats {
    v1::QueueStats {
        queue: s.queue,
        pending: s.pending,
        assigned: s.assigned,
        running: s.running,
        done: s.done,
        failed: s.failed,
        dead_lettered: s.dead_lettered,
        total_processed: s.total_processed,
        avg_processing_seconds: s.avg_processing_seconds,
        error_rate: s.error_rate,
        scheduled: s.scheduled,
    }
}

pub fn worker(w: Worker) -> v1::Worker {
    v1::Worker {
        id: w.id,
        hostname: w.hostname,
        concurrency: w.concurrency,
        queues: w.queues,
        queue_weights: w.queue_weights,
        status: worker_status_to_proto(w.status) as i32,
        registered_at: Some(timestamp(w.registered_at)),
        last_heartbeat_at: Some(timestamp(w.last_heartbeat_at)),
        active_jobs: w.active_jobs,
        version: w.version,
    }
}

pub fn assignment(a: &Assignment) -> v1::Assignment {
    v1::Assignment {
        job_id: a.job_id.to_string(),
        queue: a.queue.clone(),
        attempt: a.attempt,
        payload: a.payload.clone(),
        priority: u32::from(a.priority),
        timeout_seconds: secs(a.timeout),
        retries: a.retries,
        created_at: Some(timestamp(a.created_at)),
        scheduled_at: opt_timestamp(a.scheduled_at),
    }
}

pub fn schedule(r: jq_store::schedules::ScheduleRecord) -> v1::Schedule {
    let d = r.def;
    v1::Schedule {
        cron: d.spec.expr().to_string(),
        timezone: d.spec.timezone().to_string(),
        name: d.name,
        queue: d.queue,
        payload: d.payload,
        priority: u32::from(d.priority),
        max_retries: d.max_retries,
        ttl_seconds: secs(d.ttl),
        missed: d.missed.to_string(),
        overlap: d.overlap.to_string(),
        paused: r.paused,
        next_at: opt_timestamp(r.next_at),
        last_fired_at: opt_timestamp(r.last_fired_at),
        last_job_id: r.last_job_id.map(|i| i.to_string()).unwrap_or_default(),
        fires: r.fires,
        skipped: r.skipped,
        last_error: r.last_error.unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
    }
}

/// A schedule's fields as given; unset stay unset (a create fills the
/// defaults, an update keeps the current values).
pub fn schedule_patch(s: Option<v1::ScheduleSpec>) -> jq_core::cron::SchedulePatch {
    let s = s.unwrap_or_default();
    jq_core::cron::SchedulePatch {
        cron: s.cron,
        timezone: s.timezone,
        queue: s.queue,
        payload: s.payload,
        priority: s.priority,
        max_retries: s.max_retries.map(|m| (m >= 0).then_some(m)),
        ttl_seconds: s.ttl_seconds.map(|t| (t > 0).then_some(t)),
        missed: s.missed,
        overlap: s.overlap,
    }
}
