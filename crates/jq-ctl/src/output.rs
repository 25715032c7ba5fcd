//! What commands print. Each result is a plain serializable view (stable
//! field names for JSON/YAML scripts) with a table form for humans:
//! aligned columns, absolute and relative times, long payloads truncated,
//! status colours only when `Style::color` says so.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use jq_proto::v1;
use serde::Serialize;
use serde_json::Value;

use crate::cli::Format;

/// How to draw tables.
#[derive(Debug, Clone)]
pub struct Style {
    pub color: bool,
    /// "Now" for relative times (fixed in snapshot tests).
    pub now: DateTime<Utc>,
    /// Show payloads and results in full.
    pub full: bool,
}

impl Style {
    pub fn plain(now: DateTime<Utc>) -> Style {
        Style {
            color: false,
            now,
            full: false,
        }
    }
}

/// A printable result.
pub trait View: Serialize {
    fn table(&self, s: &Style) -> String;
}

/// Render for stdout; always ends with a newline (or is empty).
pub fn render<V: View + ?Sized>(v: &V, f: Format, s: &Style) -> String {
    let mut out = match f {
        Format::Table => v.table(s),
        Format::Json => serde_json::to_string_pretty(v).expect("views serialize"),
        Format::Yaml => serde_yaml_ng::to_string(v).expect("views serialize"),
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

// ---------- shared helpers ----------

fn status_name(v: i32) -> String {
    v1::JobStatus::try_from(v)
        .map(|s| s.as_str_name().trim_start_matches("JOB_STATUS_").to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({v})"))
}

fn worker_status_name(v: i32) -> String {
    v1::WorkerStatus::try_from(v)
        .map(|s| s.as_str_name().trim_start_matches("WORKER_STATUS_").to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({v})"))
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

/// Payload bytes as JSON when they are JSON, else text, else base64.
fn bytes_value(b: &[u8]) -> Option<Value> {
    if b.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(b) {
        return Some(v);
    }
    match std::str::from_utf8(b) {
        Ok(s) => Some(Value::String(s.to_string())),
        Err(_) => Some(serde_json::json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(b)
        })),
    }
}

fn compact(v: &Option<Value>) -> String {
    match v {
        None => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// At most `max` characters, with a marker saying what was cut.
fn truncate(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let kept: String = s.chars().take(max).collect();
    format!("{kept}… (+{} chars)", n - max)
}

fn one_line(s: &str) -> String {
    s.replace('\n', "⏎")
}

fn abs(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// "5m ago", "in 2h", "just now".
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now.signed_duration_since(t);
    let (secs, future) = if d.num_seconds() < 0 {
        (-d.num_seconds(), true)
    } else {
        (d.num_seconds(), false)
    };
    let amount = match secs {
        0..=1 => return "just now".into(),
        2..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn when(t: Option<DateTime<Utc>>, s: &Style) -> String {
    match t {
        Some(t) => format!("{} ({})", abs(t), relative(t, s.now)),
        None => "-".into(),
    }
}

fn short_when(t: Option<DateTime<Utc>>, s: &Style) -> String {
    t.map(|t| relative(t, s.now)).unwrap_or_else(|| "-".into())
}

fn paint(status: &str, s: &Style) -> String {
    if !s.color {
        return status.to_string();
    }
    let code = match status {
        "DONE" | "ONLINE" | "ok" => "32",
        "DEAD_LETTERED" | "OFFLINE" | "down" => "31",
        "FAILED" | "DRAINING" | "STOPPING" | "degraded" => "33",
        "RUNNING" | "ASSIGNED" => "36",
        _ => return status.to_string(),
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

fn visible_len(s: &str) -> usize {
    // Colour codes take no room on screen.
    let mut n = 0;
    let mut in_esc = false;
    for c in s.chars() {
        match (in_esc, c) {
            (false, '\x1b') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            _ => n += 1,
        }
    }
    n
}

/// Aligned columns; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(visible_len(c));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len() - 1;
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - visible_len(c) + 2));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `Key:  value` lines, keys aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:w$}  {v}\n", format!("{k}:")))
        .collect()
}

fn secs(v: Option<u32>) -> String {
    match v {
        None | Some(0) => "-".into(),
        Some(s) if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        Some(s) if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        Some(s) if s.is_multiple_of(60) => format!("{}m", s / 60),
        Some(s) => format!("{s}s"),
    }
}

fn millis(ms: u32) -> String {
    if ms.is_multiple_of(1000) {
        secs(Some(ms / 1000))
    } else {
        format!("{ms}ms")
    }
}

// ---------- jobs ----------

#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    pub status: String,
    pub priority: u32,
    pub attempt: u32,
    pub retries: u32,
    pub max_retries: u32,
    pub worker_id: Option<String>,
    pub payload: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub cancel_requested: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<v1::Job> for JobView {
    fn from(j: v1::Job) -> JobView {
        JobView {
            status: status_name(j.status),
            priority: j.priority,
            attempt: j.attempt,
            retries: j.retries,
            max_retries: j.max_retries,
            worker_id: non_empty(j.worker_id),
            payload: bytes_value(&j.payload),
            result: bytes_value(&j.result),
            error: non_empty(j.error),
            idempotency_key: non_empty(j.idempotency_key),
            cancel_requested: j.cancel_requested,
            created_at: time(&j.created_at),
            not_before: time(&j.not_before),
            expires_at: time(&j.expires_at),
            assigned_at: time(&j.assigned_at),
            started_at: time(&j.started_at),
            completed_at: time(&j.completed_at),
            updated_at: time(&j.updated_at),
            id: j.id,
            queue: j.queue,
        }
    }
}

impl View for JobView {
    fn table(&self, s: &Style) -> String {
        let cut = |v: &Option<Value>| {
            let t = compact(v);
            if s.full { t } else { truncate(&one_line(&t), 200) }
        };
        let mut status = paint(&self.status, s);
        if self.cancel_requested {
            status.push_str(" (cancel requested)");
        }
        let mut rows = vec![
            ("ID", self.id.clone()),
            ("Queue", self.queue.clone()),
            ("Status", status),
            ("Priority", self.priority.to_string()),
            (
                "Attempt",
                format!(
                    "{} (retries used {} of {})",
                    self.attempt, self.retries, self.max_retries
                ),
            ),
            ("Worker", self.worker_id.clone().unwrap_or_else(|| "-".into())),
            ("Created", when(self.created_at, s)),
        ];
        if let Some(nb) = self.not_before.filter(|nb| Some(*nb) > self.created_at) {
            rows.push(("Not before", when(Some(nb), s)));
        }
        if self.expires_at.is_some() {
            rows.push(("Expires", when(self.expires_at, s)));
        }
        rows.push(("Started", when(self.started_at, s)));
        rows.push(("Completed", when(self.completed_at, s)));
        if let Some(k) = &self.idempotency_key {
            rows.push(("Idempotency key", k.clone()));
        }
        rows.push(("Payload", cut(&self.payload)));
        rows.push(("Result", cut(&self.result)));
        rows.push(("Error", self.error.clone().unwrap_or_else(|| "-".into())));
        fields(&rows)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub next_page_token: Option<String>,
}

impl View for JobList {
    fn table(&self, s: &Style) -> String {
        if self.jobs.is_empty() {
            return "No jobs.\n".into();
        }
        let rows: Vec<Vec<String>> = self
            .jobs
            .iter()
            .map(|j| {
                let payload = compact(&j.payload);
                vec![
                    j.id.clone(),
                    j.queue.clone(),
                    paint(&j.status, s),
                    j.priority.to_string(),
                    j.attempt.to_string(),
                    j.worker_id.clone().unwrap_or_else(|| "-".into()),
                    short_when(j.created_at, s),
                    if s.full {
                        payload
                    } else {
                        truncate(&one_line(&payload), 40)
                    },
                ]
            })
            .collect();
        let mut out = table(
            &[
                "ID", "QUEUE", "STATUS", "PRI", "ATTEMPT", "WORKER", "CREATED", "PAYLOAD",
            ],
            &rows,
        );
        if let Some(t) = &self.next_page_token {
            out.push_str(&format!("\nMore: --page-token {t}\n"));
        }
        out
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub event_id: String,
    pub job_id: String,
    pub queue: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub attempt: u32,
    pub worker_id: Option<String>,
    pub detail: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

impl From<v1::JobEvent> for EventView {
    fn from(e: v1::JobEvent) -> EventView {
        EventView {
            from: (e.from_status != 0).then(|| status_name(e.from_status)),
            to: status_name(e.to_status),
            reason: e.reason,
            attempt: e.attempt,
            worker_id: non_empty(e.worker_id),
            detail: non_empty(e.detail),
            at: time(&e.occurred_at),
            event_id: e.event_id,
            job_id: e.job_id,
            queue: e.queue,
        }
    }
}

impl EventView {
    /// One line per transition, for `job watch`.
    pub fn line(&self, s: &Style) -> String {
        let at = self
            .at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default();
        let mut l = format!(
            "{at}  {} -> {}  {}  attempt={}",
            self.from.as_deref().unwrap_or("-"),
            paint(&self.to, s),
            self.reason,
            self.attempt
        );
        if let Some(w) = &self.worker_id {
            l.push_str(&format!(" worker={w}"));
        }
        if let Some(d) = &self.detail {
            l.push_str(&format!("  {}", truncate(&one_line(d), 200)));
        }
        l + "\n"
    }
}

impl View for EventView {
    fn table(&self, s: &Style) -> String {
        self.line(s)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobLogs {
    pub job_id: String,
    pub events: Vec<EventView>,
}

impl View for JobLogs {
    fn table(&self, s: &Style) -> String {
        let rows: Vec<Vec<String>> = self
            .events
            .iter()
            .map(|e| {
                vec![
                    e.at.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        .unwrap_or_default(),
                    e.from.clone().unwrap_or_else(|| "-".into()),
                    paint(&e.to, s),
                    e.reason.clone(),
                    e.attempt.to_string(),
                    e.worker_id.clone().unwrap_or_else(|| "-".into()),
                    e.detail
                        .as_deref()
                        .map(|d| truncate(&one_line(d), 80))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &["TIME", "FROM", "TO", "REASON", "ATTEMPT", "WORKER", "DETAIL"],
            &rows,
        )
    }
}

/// `job submit`: only the id(s) in table mode (FR-008).
#[derive(Debug, Clone, Serialize)]
pub struct Submitted {
    pub job_ids: Vec<String>,
    /// Ids whose idempotency key matched an existing job (JQ-101).
    pub already_existed: Vec<String>,
}

impl View for Submitted {
    fn table(&self, _s: &Style) -> String {
        self.job_ids.iter().map(|id| format!("{id}\n")).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cancelled {
    pub job_id: String,
    pub status: String,
    pub cancel_requested: bool,
}

impl View for Cancelled {
    fn table(&self, s: &Style) -> String {
        if self.cancel_requested {
            format!(
                "job {}: cancel requested; its worker is stopping it (it ends DEAD_LETTERED, reason CANCELLED)\n",
                self.job_id
            )
        } else {
            format!("job {}: cancelled ({})\n", self.job_id, paint(&self.status, s))
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Retried {
    pub job_ids: Vec<String>,
}

impl View for Retried {
    fn table(&self, _s: &Style) -> String {
        match self.job_ids.as_slice() {
            [one] => format!("job {one}: back to PENDING (retry count reset)\n"),
            ids => format!("{} jobs back to PENDING (retry counts reset)\n", ids.len()),
        }
    }
}

/// A one-line confirmation (`job delete`, `queue delete`).
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    #[serde(skip)]
    pub message: String,
    #[serde(flatten)]
    pub data: serde_json::Map<String, Value>,
}

impl View for Done {
    fn table(&self, _s: &Style) -> String {
        format!("{}\n", self.message)
    }
}

/// A queue's or schedule's state column.
fn state(paused: bool, s: &Style) -> String {
    if paused {
        paint("paused", s)
    } else {
        "active".into()
    }
}

// ---------- queues ----------

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    pub max_retries: u32,
    pub default_ttl_seconds: Option<u32>,
    pub default_timeout_seconds: Option<u32>,
    pub backoff_base_ms: u32,
    pub backoff_max_ms: u32,
    pub concurrency_limit: Option<u32>,
    pub rate_limit_per_second: Option<f64>,
    /// -1: the server's default; 0: kept until deleted; n seconds.
    pub retain_done_seconds: i64,
    pub retain_dead_seconds: i64,
    /// Shares between priority bands (`9:8,5:3,0:1`); empty: strict.
    pub priority_weights: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// A retention as the table shows it.
fn retention(v: i64) -> String {
    match v {
        -1 => "default".into(),
        0 => "keep".into(),
        n => secs(Some(u32::try_from(n).unwrap_or(u32::MAX))),
    }
}

impl From<v1::Queue> for QueueView {
    fn from(q: v1::Queue) -> QueueView {
        QueueView {
            paused: q.paused,
            max_retries: q.max_retries,
            default_ttl_seconds: q.default_ttl_seconds,
            default_timeout_seconds: q.default_timeout_seconds,
            backoff_base_ms: q.backoff_base_ms,
            backoff_max_ms: q.backoff_max_ms,
            concurrency_limit: q.concurrency_limit,
            rate_limit_per_second: q.rate_limit_per_second,
            retain_done_seconds: q.retain_done_seconds,
            retain_dead_seconds: q.retain_dead_seconds,
            priority_weights: q.priority_weights,
            created_at: time(&q.created_at),
            name: q.name,
        }
    }
}

impl QueueView {
    fn row(&self, s: &Style) -> Vec<String> {
        vec![
            self.name.clone(),
            state(self.paused, s),
            self.max_retries.to_string(),
            secs(self.default_ttl_seconds),
            secs(self.default_timeout_seconds),
            format!(
                "{}..{}",
                millis(self.backoff_base_ms),
                millis(self.backoff_max_ms)
            ),
            self.concurrency_limit
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            self.rate_limit_per_second
                .map(|r| format!("{r}/s"))
                .unwrap_or_else(|| "-".into()),
            retention(self.retain_done_seconds),
            retention(self.retain_dead_seconds),
            if self.priority_weights.is_empty() {
                "strict".into()
            } else {
                self.priority_weights.clone()
            },
        ]
    }
}

const QUEUE_HEADERS: [&str; 11] = [
    "NAME",
    "STATE",
    "MAX_RETRIES",
    "TTL",
    "TIMEOUT",
    "BACKOFF",
    "CONCURRENCY",
    "RATE",
    "RETAIN_DONE",
    "RETAIN_DEAD",
    "PRIORITY",
];

impl View for QueueView {
    fn table(&self, s: &Style) -> String {
        table(&QUEUE_HEADERS, &[self.row(s)])
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueList {
    pub queues: Vec<QueueView>,
}

impl View for QueueList {
    fn table(&self, s: &Style) -> String {
        let rows: Vec<Vec<String>> = self.queues.iter().map(|q| q.row(s)).collect();
        table(&QUEUE_HEADERS, &rows)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsView {
    pub queue: String,
    pub pending: u64,
    pub scheduled: u64,
    pub assigned: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub total_processed: u64,
    pub avg_processing_seconds: f64,
    pub error_rate: f64,
}

impl From<v1::QueueStats> for StatsView {
    fn from(q: v1::QueueStats) -> StatsView {
        StatsView {
            pending: q.pending,
            scheduled: q.scheduled,
            assigned: q.assigned,
            running: q.running,
            done: q.done,
            failed: q.failed,
            dead_lettered: q.dead_lettered,
            total_processed: q.total_processed,
            avg_processing_seconds: q.avg_processing_seconds,
            error_rate: q.error_rate,
            queue: q.queue,
        }
    }
}

fn seconds_f(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1}ms", s * 1000.0)
    } else {
        format!("{s:.2}s")
    }
}

impl View for StatsView {
    fn table(&self, _s: &Style) -> String {
        fields(&[
            ("Queue", self.queue.clone()),
            (
                "Pending",
                format!("{} ({} scheduled for later)", self.pending, self.scheduled),
            ),
            ("Assigned", self.assigned.to_string()),
            ("Running", self.running.to_string()),
            ("Done", self.done.to_string()),
            ("Failed", self.failed.to_string()),
            ("Dead-lettered", self.dead_lettered.to_string()),
            ("Total processed", self.total_processed.to_string()),
            ("Avg processing", seconds_f(self.avg_processing_seconds)),
            ("Error rate", format!("{:.1}%", self.error_rate * 100.0)),
        ])
    }
}

// ---------- schedules ----------

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub queue: String,
    pub paused: bool,
    pub next_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_job_id: String,
    pub priority: u32,
    pub max_retries: Option<u32>,
    pub ttl_seconds: Option<u32>,
    pub missed: String,
    pub overlap: String,
    pub fires: u64,
    pub skipped: u64,
    pub last_error: String,
    pub payload: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<v1::Schedule> for ScheduleView {
    fn from(s: v1::Schedule) -> ScheduleView {
        ScheduleView {
            next_at: time(&s.next_at),
            last_fired_at: time(&s.last_fired_at),
            created_at: time(&s.created_at),
            payload: bytes_value(&s.payload),
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            queue: s.queue,
            paused: s.paused,
            last_job_id: s.last_job_id,
            priority: s.priority,
            max_retries: s.max_retries,
            ttl_seconds: s.ttl_seconds,
            missed: s.missed,
            overlap: s.overlap,
            fires: s.fires,
            skipped: s.skipped,
            last_error: s.last_error,
        }
    }
}

impl ScheduleView {
    fn row(&self, s: &Style) -> Vec<String> {
        vec![
            self.name.clone(),
            state(self.paused, s),
            self.cron.clone(),
            self.timezone.clone(),
            self.queue.clone(),
            short_when(self.next_at, s),
            short_when(self.last_fired_at, s),
            self.fires.to_string(),
            self.skipped.to_string(),
        ]
    }
}

const SCHEDULE_HEADERS: [&str; 9] = [
    "NAME", "STATE", "CRON", "TIMEZONE", "QUEUE", "NEXT", "LAST", "FIRES", "SKIPPED",
];

impl View for ScheduleView {
    fn table(&self, s: &Style) -> String {
        let mut out = table(&SCHEDULE_HEADERS, &[self.row(s)]);
        out += &fields(&[
            ("Priority", self.priority.to_string()),
            (
                "Max retries",
                self.max_retries
                    .map_or_else(|| "queue default".into(), |m| m.to_string()),
            ),
            ("TTL", secs(self.ttl_seconds)),
            ("Missed", self.missed.clone()),
            ("Overlap", self.overlap.clone()),
            (
                "Last job",
                if self.last_job_id.is_empty() {
                    "-".into()
                } else {
                    self.last_job_id.clone()
                },
            ),
            (
                "Last error",
                if self.last_error.is_empty() {
                    "-".into()
                } else {
                    self.last_error.clone()
                },
            ),
            ("Payload", {
                let t = compact(&self.payload);
                if s.full { t } else { truncate(&one_line(&t), 200) }
            }),
        ]);
        out
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

impl View for ScheduleList {
    fn table(&self, s: &Style) -> String {
        let rows: Vec<Vec<String>> = self.schedules.iter().map(|v| v.row(s)).collect();
        table(&SCHEDULE_HEADERS, &rows)
    }
}

// ---------- workers ----------

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub status: String,
    pub hostname: String,
    pub queues: Vec<String>,
    /// One weight per queue (JQ-123); empty when none was given.
    pub queue_weights: Vec<u32>,
    pub concurrency: u32,
    pub active_jobs: u32,
    pub version: String,
    pub registered_at: Option<DateTime<Utc>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
}

impl From<v1::Worker> for WorkerView {
    fn from(w: v1::Worker) -> WorkerView {
        WorkerView {
            status: worker_status_name(w.status),
            hostname: w.hostname,
            queues: w.queues,
            queue_weights: w.queue_weights,
            concurrency: w.concurrency,
            active_jobs: w.active_jobs,
            version: w.version,
            registered_at: time(&w.registered_at),
            last_heartbeat_at: time(&w.last_heartbeat_at),
            id: w.id,
        }
    }
}

impl WorkerView {
    fn row(&self, s: &Style) -> Vec<String> {
        vec![
            self.id.clone(),
            paint(&self.status, s),
            if self.queue_weights.len() == self.queues.len() {
                let weighted: Vec<String> = self
                    .queues
                    .iter()
                    .zip(&self.queue_weights)
                    .map(|(q, w)| format!("{q}:{w}"))
                    .collect();
                weighted.join(",")
            } else {
                self.queues.join(",")
            },
            format!("{}/{}", self.active_jobs, self.concurrency),
            self.hostname.clone(),
            short_when(self.last_heartbeat_at, s),
            self.version.clone(),
        ]
    }
}

const WORKER_HEADERS: [&str; 7] = ["ID", "STATUS", "QUEUES", "ACTIVE", "HOST", "HEARTBEAT", "VERSION"];

impl View for WorkerView {
    fn table(&self, s: &Style) -> String {
        table(&WORKER_HEADERS, &[self.row(s)])
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

impl View for WorkerList {
    fn table(&self, s: &Style) -> String {
        if self.workers.is_empty() {
            return "No workers.\n".into();
        }
        let rows: Vec<Vec<String>> = self.workers.iter().map(|w| w.row(s)).collect();
        table(&WORKER_HEADERS, &rows)
    }
}

// ---------- system ----------

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub name: String,
    pub state: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemView {
    pub server: String,
    pub server_version: String,
    pub healthy: bool,
    pub components: Vec<Component>,
    pub active_workers: u32,
    pub outbox_backlog: u64,
    /// Age of the oldest unpublished event (JQ-161).
    pub outbox_lag_seconds: f64,
    pub queues: Vec<StatsView>,
}

impl SystemView {
    pub fn new(server: String, r: v1::GetSystemStatusResponse) -> SystemView {
        let components: Vec<Component> = r
            .components
            .into_iter()
            .map(|c| Component {
                name: c.name,
                state: c.state,
                detail: c.detail,
            })
            .collect();
        SystemView {
            server,
            // A security warning is not an outage: it has its own row.
            healthy: components
                .iter()
                .all(|c| matches!(c.state.as_str(), "ok" | "disabled" | "warning")),
            server_version: r.server_version,
            components,
            active_workers: r.active_workers,
            outbox_backlog: r.outbox_backlog,
            outbox_lag_seconds: r.outbox_lag_seconds,
            queues: r.queues.into_iter().map(StatsView::from).collect(),
        }
    }
}

impl View for SystemView {
    fn table(&self, s: &Style) -> String {
        let health = if self.healthy {
            paint("ok", s)
        } else {
            paint("degraded", s)
        };
        let mut out = fields(&[
            (
                "Server",
                format!("{} reachable, jq-server {}", self.server, self.server_version),
            ),
            ("Health", health),
            ("Active workers", self.active_workers.to_string()),
            ("Outbox backlog", self.outbox_backlog.to_string()),
            ("Outbox lag", format!("{:.1} s", self.outbox_lag_seconds)),
        ]);
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .components
            .iter()
            .map(|c| vec![c.name.clone(), paint(&c.state, s), c.detail.clone()])
            .collect();
        out.push_str(&table(&["COMPONENT", "STATE", "DETAIL"], &rows));
        out.push('\n');
        let rows: Vec<Vec<String>> = self
            .queues
            .iter()
            .map(|q| {
                vec![
                    q.queue.clone(),
                    q.pending.to_string(),
                    q.assigned.to_string(),
                    q.running.to_string(),
                    q.done.to_string(),
                    q.failed.to_string(),
                    q.dead_lettered.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "QUEUE",
                "PENDING",
                "ASSIGNED",
                "RUNNING",
                "DONE",
                "FAILED",
                "DEAD_LETTERED",
            ],
            &rows,
        ));
        out
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub client: String,
    /// None when the server could not be reached.
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_error: Option<String>,
}

impl View for VersionView {
    fn table(&self, _s: &Style) -> String {
        let server = match (&self.server, &self.server_error) {
            (Some(v), _) => format!("jq-server {v}"),
            (None, Some(e)) => format!("jq-server unreachable ({e})"),
            (None, None) => "jq-server unknown".into(),
        };
        format!("jq-ctl {}\n{server}\n", self.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .to_utc();
        let at = |s: i64| now - chrono::Duration::seconds(s);
        assert_eq!(relative(at(0), now), "just now");
        assert_eq!(relative(at(42), now), "42s ago");
        assert_eq!(relative(at(300), now), "5m ago");
        assert_eq!(relative(at(7300), now), "2h ago");
        assert_eq!(relative(at(-90_000), now), "in 1d");
    }

    #[test]
    fn payload_bytes_are_json_text_or_base64() {
        assert_eq!(bytes_value(br#"{"a":1}"#), Some(serde_json::json!({"a":1})));
        assert_eq!(bytes_value(b"plain"), Some(Value::String("plain".into())));
        assert_eq!(
            bytes_value(&[0xff, 0]),
            Some(serde_json::json!({"base64": "/wA="}))
        );
        assert_eq!(bytes_value(b""), None);
    }

    #[test]
    fn colour_codes_do_not_break_alignment() {
        let s = Style {
            color: true,
            ..Style::plain(Utc::now())
        };
        let t = table(
            &["A", "B"],
            &[
                vec![paint("DONE", &s), "x".into()],
                vec!["PENDING".into(), "y".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(visible_len(lines[1]).min(9), visible_len(lines[2]).min(9));
        assert!(lines[1].contains("\x1b[32mDONE\x1b[0m"));
    }

    #[test]
    fn truncation_says_how_much_was_cut() {
        assert_eq!(truncate("abcdef", 3), "abc… (+3 chars)");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
