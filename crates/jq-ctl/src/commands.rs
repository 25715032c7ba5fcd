//! Each command: check its input (usage errors send nothing), call the
//! server, print a view.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use jq_client::{Clients, Target};
use jq_proto::v1;
use serde::Deserialize;
use serde_json::Value;

use crate::cli::{
    Cli, Cmd, Format, JobCmd, QueueCmd, QueueFlags, Retry, ScheduleCmd, ScheduleFlags, StatusArg, Submit,
    WorkerCmd,
};
use crate::error::{CtlError, Ctx};
use crate::output::*;
use crate::{Io, VERSION};

const JOB_HINT: &str = "list job ids with `jq-ctl job list`";
const QUEUE_HINT: &str = "see `jq-ctl queue list`, or create it with `jq-ctl queue create <name>`";
const WORKER_HINT: &str = "see `jq-ctl worker list --all`";
const SCHEDULE_HINT: &str = "see `jq-ctl schedule list`";
/// SubmitJobs accepts at most this many per call (JQ-102).
const BULK_BATCH: usize = 10_000;

fn status_arg(s: StatusArg) -> v1::JobStatus {
    match s {
        StatusArg::Pending => v1::JobStatus::Pending,
        StatusArg::Assigned => v1::JobStatus::Assigned,
        StatusArg::Running => v1::JobStatus::Running,
        StatusArg::Done => v1::JobStatus::Done,
        StatusArg::Failed => v1::JobStatus::Failed,
        StatusArg::DeadLettered => v1::JobStatus::DeadLettered,
    }
}

fn job_id(s: &str) -> Result<String, CtlError> {
    uuid::Uuid::parse_str(s.trim())
        .map(|u| u.to_string())
        .map_err(|_| {
            CtlError::Usage(format!(
                "{s:?} is not a job id (ids are UUIDs like 3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b); {JOB_HINT}"
            ))
        })
}

struct Session<'a, 'b> {
    io: &'a mut Io<'b>,
    format: Format,
    style: Style,
    ctx: Ctx,
    target: Target,
}

impl Session<'_, '_> {
    async fn connect(&self) -> Result<Clients, CtlError> {
        match tokio::time::timeout(self.ctx.timeout, self.target.connect()).await {
            Err(_) => Err(self.ctx.too_slow()),
            Ok(Ok(c)) => Ok(c),
            Ok(Err(jq_client::ClientError::Connect { source, .. })) => {
                // The innermost cause says the most (e.g. "Connection refused").
                let mut why = source.to_string();
                let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&source);
                while let Some(c) = cause {
                    why = c.to_string();
                    cause = c.source();
                }
                Err(self.ctx.unreachable(&why))
            }
            Ok(Err(e)) => Err(CtlError::Usage(e.to_string())),
        }
    }

    fn print<V: View + ?Sized>(&mut self, v: &V) -> Result<(), CtlError> {
        let text = render(v, self.format, &self.style);
        self.io.out.write_all(text.as_bytes())?;
        Ok(())
    }

    /// A unary call under the global timeout.
    async fn call<T>(
        &self,
        hint: &str,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CtlError> {
        match tokio::time::timeout(self.ctx.timeout, f).await {
            Err(_) => Err(self.ctx.too_slow()),
            Ok(r) => r.map(|r| r.into_inner()).map_err(|s| self.ctx.status(s, hint)),
        }
    }
}

pub async fn run(cli: Cli, io: &mut Io<'_>) -> Result<(), CtlError> {
    let g = cli.global;
    let target = Target {
        addr: g.server_addr.clone(),
        tls_ca: g.tls_ca,
        tls_cert: g.tls_cert,
        tls_key: g.tls_key,
        tls_domain: None,
        token: g.token,
        connect_timeout: Some(g.timeout),
        request_timeout: Some(g.timeout),
    };
    // Bad addresses and TLS files are usage errors, found before dialling.
    target.endpoint().map_err(|e| CtlError::Usage(e.to_string()))?;
    let full = matches!(
        &cli.command,
        Some(Cmd::Job(JobCmd::Status { full: true, .. })) | Some(Cmd::Job(JobCmd::List { full: true, .. }))
    );
    let mut s = Session {
        style: Style {
            color: io.color,
            now: Utc::now(),
            full,
        },
        io,
        format: g.output,
        ctx: Ctx {
            addr: g.server_addr,
            timeout: g.timeout,
        },
        target,
    };
    match cli.command {
        _ if cli.version => version(&mut s).await,
        None => Err(CtlError::Usage(
            "a command is required, e.g. `jq-ctl status`; see `jq-ctl --help`".into(),
        )),
        Some(Cmd::Version) => version(&mut s).await,
        Some(Cmd::Status) => status(&mut s).await,
        Some(Cmd::Job(c)) => job(&mut s, c).await,
        Some(Cmd::Queue(c)) => queue(&mut s, c).await,
        Some(Cmd::Worker(c)) => worker(&mut s, c).await,
        Some(Cmd::Schedule(c)) => schedule(&mut s, c).await,
    }
}

async fn version(s: &mut Session<'_, '_>) -> Result<(), CtlError> {
    // The server's version is a bonus: unreachable still exits 0.
    s.ctx.timeout = s.ctx.timeout.min(Duration::from_secs(3));
    let server = match s.connect().await {
        Ok(c) => s
            .call(
                "",
                c.admin.clone().get_system_status(v1::GetSystemStatusRequest {}),
            )
            .await
            .map(|r| r.server_version),
        Err(e) => Err(e),
    };
    let v = VersionView {
        client: VERSION.to_string(),
        server_error: server.as_ref().err().map(|e| e.to_string()),
        server: server.ok(),
    };
    s.print(&v)
}

async fn status(s: &mut Session<'_, '_>) -> Result<(), CtlError> {
    let c = s.connect().await?;
    let r = s
        .call(
            "",
            c.admin.clone().get_system_status(v1::GetSystemStatusRequest {}),
        )
        .await?;
    let v = SystemView::new(s.ctx.addr.clone(), r);
    s.print(&v)
}

async fn job(s: &mut Session<'_, '_>, cmd: JobCmd) -> Result<(), CtlError> {
    match cmd {
        JobCmd::Submit(sub) => submit(s, sub).await,
        JobCmd::Status { job_id: id, .. } => {
            let id = job_id(&id)?;
            let c = s.connect().await?;
            let r = s
                .call(JOB_HINT, c.jobs.clone().get_job(v1::GetJobRequest { job_id: id }))
                .await?;
            let v = JobView::from(r.job.unwrap_or_default());
            s.print(&v)
        }
        JobCmd::Cancel { job_id: id } => {
            let id = job_id(&id)?;
            let c = s.connect().await?;
            let r = s
                .call(
                    JOB_HINT,
                    c.jobs
                        .clone()
                        .cancel_job(v1::CancelJobRequest { job_id: id.clone() }),
                )
                .await?;
            let status = JobView::from(v1::Job {
                status: r.status,
                ..Default::default()
            })
            .status;
            s.print(&Cancelled {
                job_id: id,
                status,
                cancel_requested: r.cancel_requested,
            })
        }
        JobCmd::List {
            queue,
            status,
            limit,
            page_token,
            ..
        } => {
            let c = s.connect().await?;
            let req = v1::ListJobsRequest {
                queue: queue.unwrap_or_default(),
                status: status.map(status_arg).unwrap_or_default() as i32,
                limit,
                page_token: page_token.unwrap_or_default(),
                omit_payloads: false,
            };
            let r = s.call(QUEUE_HINT, c.jobs.clone().list_jobs(req)).await?;
            let v = JobList {
                jobs: r.jobs.into_iter().map(JobView::from).collect(),
                next_page_token: (!r.next_page_token.is_empty()).then_some(r.next_page_token),
            };
            s.print(&v)
        }
        JobCmd::Logs { job_id: id } => {
            let id = job_id(&id)?;
            let c = s.connect().await?;
            let r = s
                .call(
                    JOB_HINT,
                    c.jobs
                        .clone()
                        .get_job_events(v1::GetJobEventsRequest { job_id: id.clone() }),
                )
                .await?;
            let v = JobLogs {
                job_id: id,
                events: r.events.into_iter().map(EventView::from).collect(),
            };
            s.print(&v)
        }
        JobCmd::Retry(r) => retry(s, r).await,
        JobCmd::Watch { job_id: id } => watch(s, &job_id(&id)?).await,
        JobCmd::Delete { job_id: id } => {
            let id = job_id(&id)?;
            let c = s.connect().await?;
            s.call(
                JOB_HINT,
                c.jobs
                    .clone()
                    .delete_job(v1::DeleteJobRequest { job_id: id.clone() }),
            )
            .await?;
            let mut data = serde_json::Map::new();
            data.insert("deleted_job_id".into(), Value::String(id.clone()));
            s.print(&Done {
                message: format!("job {id} deleted"),
                data,
            })
        }
    }
}

/// One line of a `--file` NDJSON submission.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    payload: Value,
    queue: Option<String>,
    priority: Option<i32>,
    max_retries: Option<i32>,
    ttl_seconds: Option<u32>,
    delay_ms: Option<u64>,
    idempotency_key: Option<String>,
}

fn read_input(path: &Path) -> Result<Vec<u8>, CtlError> {
    if path == Path::new("-") {
        let mut buf = vec![];
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CtlError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// Parse an NDJSON file into specs; any bad line is a usage error naming
/// the line, and nothing is sent.
pub fn parse_ndjson(text: &[u8], default_queue: &str, name: &str) -> Result<Vec<v1::JobSpec>, CtlError> {
    let text = std::str::from_utf8(text).map_err(|_| CtlError::Usage(format!("{name} is not UTF-8 text")))?;
    let mut specs = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |why: String| CtlError::Usage(format!("{name} line {}: {why}; nothing was submitted", i + 1));
        let l: Line =
            serde_json::from_str(line).map_err(|e| bad(jq_core::input::clip(e.to_string(), 300)))?;
        if let Some(p) = l.priority
            && !(0..=9).contains(&p)
        {
            return Err(bad(format!("priority {p} is outside 0-9")));
        }
        if l.max_retries.is_some_and(|m| m < 0) {
            return Err(bad("max_retries must be >= 0".into()));
        }
        let payload = match l.payload {
            // A string is sent as its text, so non-JSON payloads fit too.
            Value::String(s) => s.into_bytes(),
            v => v.to_string().into_bytes(),
        };
        specs.push(v1::JobSpec {
            queue: l.queue.unwrap_or_else(|| default_queue.to_string()),
            payload,
            priority: l.priority,
            max_retries: l.max_retries,
            ttl_seconds: l.ttl_seconds,
            run_at: None,
            delay_ms: l.delay_ms,
            idempotency_key: l.idempotency_key,
        });
    }
    if specs.is_empty() {
        return Err(CtlError::Usage(format!(
            "{name} has no jobs (one JSON object per line)"
        )));
    }
    Ok(specs)
}

async fn submit(s: &mut Session<'_, '_>, sub: Submit) -> Result<(), CtlError> {
    if let Some(path) = &sub.file {
        let specs = parse_ndjson(&read_input(path)?, &sub.queue, &path.display().to_string())?;
        let c = s.connect().await?;
        let mut out = Submitted {
            job_ids: vec![],
            already_existed: vec![],
        };
        for batch in specs.chunks(BULK_BATCH) {
            let r = s
                .call(
                    QUEUE_HINT,
                    c.jobs
                        .clone()
                        .submit_jobs(v1::SubmitJobsRequest { jobs: batch.to_vec() }),
                )
                .await
                .map_err(|e| match (&e, out.job_ids.len()) {
                    (CtlError::Server { code, message }, n) if n > 0 => CtlError::Server {
                        code: *code,
                        message: format!("{message} (the first {n} jobs were submitted)"),
                    },
                    _ => e,
                })?;
            for r in r.results {
                if r.already_existed {
                    out.already_existed.push(r.job_id.clone());
                }
                out.job_ids.push(r.job_id);
            }
        }
        return s.print(&out);
    }
    let payload = match (&sub.payload, &sub.payload_file) {
        (Some(p), None) => p.clone().into_bytes(),
        (None, Some(f)) => read_input(f)?,
        _ => {
            return Err(CtlError::Usage(
                "give the payload as an argument, --payload-file FILE or --file jobs.ndjson".into(),
            ));
        }
    };
    let spec = v1::JobSpec {
        queue: sub.queue,
        payload,
        priority: sub.priority,
        max_retries: sub.max_retries,
        ttl_seconds: sub.ttl.map(|d| d.as_secs().max(1) as u32),
        run_at: sub.run_at.map(|t| prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }),
        delay_ms: sub.delay.map(|d| d.as_millis() as u64),
        idempotency_key: sub.idempotency_key,
    };
    let c = s.connect().await?;
    let r = s
        .call(
            QUEUE_HINT,
            c.jobs
                .clone()
                .submit_job(v1::SubmitJobRequest { job: Some(spec) }),
        )
        .await?;
    let already = if r.already_existed {
        // stderr: stdout carries only the id (FR-008).
        writeln!(
            s.io.err,
            "note: a job with this idempotency key already existed; its id is printed"
        )?;
        vec![r.job_id.clone()]
    } else {
        vec![]
    };
    s.print(&Submitted {
        job_ids: vec![r.job_id],
        already_existed: already,
    })
}

async fn retry(s: &mut Session<'_, '_>, r: Retry) -> Result<(), CtlError> {
    let c = s.connect().await?;
    let ids = match (r.job_id, r.queue) {
        (Some(id), _) => {
            let id = job_id(&id)?;
            let job = s
                .call(
                    JOB_HINT,
                    c.jobs.clone().retry_job(v1::RetryJobRequest { job_id: id }),
                )
                .await?
                .job
                .unwrap_or_default();
            vec![job.id]
        }
        (None, Some(queue)) => {
            let req = v1::RetryJobsRequest {
                queue,
                status: r.status.map(status_arg).unwrap_or(v1::JobStatus::DeadLettered) as i32,
                limit: r.limit.unwrap_or(0),
            };
            s.call(QUEUE_HINT, c.jobs.clone().retry_jobs(req)).await?.job_ids
        }
        (None, None) => unreachable!("clap requires one"),
    };
    s.print(&Retried { job_ids: ids })
}

/// Follow a job's transitions until it is terminal. The stream has no
/// deadline; connecting does.
async fn watch(s: &mut Session<'_, '_>, id: &str) -> Result<(), CtlError> {
    let c = s.connect().await?;
    let mut jobs = c.jobs.clone();
    let req = v1::WatchJobRequest {
        job_id: id.to_string(),
        since: None,
    };
    let mut stream = match tokio::time::timeout(s.ctx.timeout, jobs.watch_job(req)).await {
        Err(_) => return Err(s.ctx.too_slow()),
        Ok(r) => r.map_err(|e| s.ctx.status(e, JOB_HINT))?.into_inner(),
    };
    loop {
        match stream.message().await {
            Ok(Some(e)) => {
                let v = EventView::from(e);
                let text = match s.format {
                    Format::Table => v.line(&s.style),
                    Format::Json => serde_json::to_string(&v).expect("serializes") + "\n",
                    Format::Yaml => format!("---\n{}", serde_yaml_ng::to_string(&v).expect("serializes")),
                };
                s.io.out.write_all(text.as_bytes())?;
                s.io.out.flush()?;
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(s.ctx.status(e, JOB_HINT)),
        }
    }
}

fn settings(f: QueueFlags) -> v1::QueueSettings {
    let secs = |d: std::time::Duration| d.as_secs().min(u32::MAX as u64) as u32;
    let ms = |d: std::time::Duration| d.as_millis().min(u32::MAX as u128) as u32;
    v1::QueueSettings {
        max_retries: f.max_retries,
        default_ttl_seconds: f.ttl.map(secs),
        default_timeout_seconds: f.job_timeout.map(secs),
        backoff_base_ms: f.backoff_base.map(ms),
        backoff_max_ms: f.backoff_max.map(ms),
        concurrency_limit: f.concurrency_limit,
        rate_limit_per_second: f.rate_limit,
        retain_done_seconds: f.retain_done,
        retain_dead_seconds: f.retain_dead,
        priority_weights: f.priority_weights,
    }
}

async fn queue(s: &mut Session<'_, '_>, cmd: QueueCmd) -> Result<(), CtlError> {
    let c = s.connect().await?;
    let mut admin = c.admin.clone();
    match cmd {
        QueueCmd::List => {
            let r = s.call("", admin.list_queues(v1::ListQueuesRequest {})).await?;
            s.print(&QueueList {
                queues: r.queues.into_iter().map(QueueView::from).collect(),
            })
        }
        QueueCmd::Create { name, settings: f } => {
            let req = v1::CreateQueueRequest {
                name,
                settings: Some(settings(f)),
            };
            let q = s
                .call("", admin.create_queue(req))
                .await?
                .queue
                .unwrap_or_default();
            s.print(&QueueView::from(q))
        }
        QueueCmd::Update { name, settings: f } => {
            let req = v1::UpdateQueueRequest {
                name,
                settings: Some(settings(f)),
            };
            let q = s
                .call(QUEUE_HINT, admin.update_queue(req))
                .await?
                .queue
                .unwrap_or_default();
            s.print(&QueueView::from(q))
        }
        QueueCmd::Delete { name, force } => {
            let r = s
                .call(
                    QUEUE_HINT,
                    admin.delete_queue(v1::DeleteQueueRequest {
                        name: name.clone(),
                        force,
                    }),
                )
                .await
                .map_err(|e| match e {
                    CtlError::Server { code, message } if code == tonic::Code::FailedPrecondition => {
                        CtlError::Server {
                            code,
                            message: format!("{message}; add --force to delete its jobs too"),
                        }
                    }
                    e => e,
                })?;
            let mut data = serde_json::Map::new();
            data.insert("deleted_queue".into(), Value::String(name.clone()));
            data.insert("deleted_jobs".into(), Value::from(r.deleted_jobs));
            s.print(&Done {
                message: format!("queue {name} deleted ({} jobs deleted)", r.deleted_jobs),
                data,
            })
        }
        QueueCmd::Stats { name } => {
            let r = s
                .call(
                    QUEUE_HINT,
                    admin.get_queue_stats(v1::GetQueueStatsRequest { name }),
                )
                .await?;
            s.print(&StatsView::from(r.stats.unwrap_or_default()))
        }
        QueueCmd::Get { name } => {
            let q = s
                .call(QUEUE_HINT, admin.get_queue(v1::GetQueueRequest { name }))
                .await?;
            s.print(&QueueView::from(q.queue.unwrap_or_default()))
        }
        QueueCmd::Pause { name } => {
            let q = s
                .call(QUEUE_HINT, admin.pause_queue(v1::PauseQueueRequest { name }))
                .await?;
            s.print(&QueueView::from(q.queue.unwrap_or_default()))
        }
        QueueCmd::Resume { name } => {
            let q = s
                .call(QUEUE_HINT, admin.resume_queue(v1::ResumeQueueRequest { name }))
                .await?;
            s.print(&QueueView::from(q.queue.unwrap_or_default()))
        }
    }
}

async fn worker(s: &mut Session<'_, '_>, cmd: WorkerCmd) -> Result<(), CtlError> {
    let c = s.connect().await?;
    let mut admin = c.admin.clone();
    match cmd {
        WorkerCmd::List { all } => {
            let r = s
                .call(
                    "",
                    admin.list_workers(v1::ListWorkersRequest { include_offline: all }),
                )
                .await?;
            s.print(&WorkerList {
                workers: r.workers.into_iter().map(WorkerView::from).collect(),
            })
        }
        WorkerCmd::Drain { worker_id } => {
            let w = s
                .call(
                    WORKER_HINT,
                    admin.drain_worker(v1::DrainWorkerRequest { worker_id }),
                )
                .await?
                .worker
                .unwrap_or_default();
            s.print(&WorkerView::from(w))
        }
        WorkerCmd::Shutdown { worker_id } => {
            let w = s
                .call(
                    WORKER_HINT,
                    admin.shutdown_worker(v1::ShutdownWorkerRequest { worker_id }),
                )
                .await?
                .worker
                .unwrap_or_default();
            s.print(&WorkerView::from(w))
        }
    }
}

fn schedule_spec(f: ScheduleFlags, payload: Option<String>) -> v1::ScheduleSpec {
    v1::ScheduleSpec {
        cron: f.cron,
        timezone: f.timezone,
        queue: f.queue,
        payload: payload.map(String::into_bytes),
        priority: f.priority,
        max_retries: f.max_retries,
        ttl_seconds: f.ttl.map(|d| d.as_secs().min(u32::MAX as u64) as u32),
        missed: f.missed,
        overlap: f.overlap,
    }
}

async fn schedule(s: &mut Session<'_, '_>, cmd: ScheduleCmd) -> Result<(), CtlError> {
    let c = s.connect().await?;
    let mut admin = c.admin.clone();
    let one = |r: v1::ScheduleResponse| ScheduleView::from(r.schedule.unwrap_or_default());
    match cmd {
        ScheduleCmd::Create { name, payload, flags } => {
            if flags.cron.is_none() {
                return Err(CtlError::Usage(
                    "give the pattern with --cron (e.g. --cron '*/5 * * * *')".into(),
                ));
            }
            let req = v1::CreateScheduleRequest {
                name,
                spec: Some(schedule_spec(flags, Some(payload))),
            };
            let r = s.call(QUEUE_HINT, admin.create_schedule(req)).await?;
            s.print(&one(r))
        }
        ScheduleCmd::List => {
            let r = s
                .call("", admin.list_schedules(v1::ListSchedulesRequest {}))
                .await?;
            s.print(&ScheduleList {
                schedules: r.schedules.into_iter().map(ScheduleView::from).collect(),
            })
        }
        ScheduleCmd::Get { name } => {
            let r = s
                .call(SCHEDULE_HINT, admin.get_schedule(v1::ScheduleRef { name }))
                .await?;
            s.print(&one(r))
        }
        ScheduleCmd::Update { name, flags, payload } => {
            let req = v1::UpdateScheduleRequest {
                name,
                spec: Some(schedule_spec(flags, payload)),
            };
            let r = s.call(SCHEDULE_HINT, admin.update_schedule(req)).await?;
            s.print(&one(r))
        }
        ScheduleCmd::Pause { name } => {
            let r = s
                .call(SCHEDULE_HINT, admin.pause_schedule(v1::ScheduleRef { name }))
                .await?;
            s.print(&one(r))
        }
        ScheduleCmd::Resume { name } => {
            let r = s
                .call(SCHEDULE_HINT, admin.resume_schedule(v1::ScheduleRef { name }))
                .await?;
            s.print(&one(r))
        }
        ScheduleCmd::Delete { name } => {
            s.call(
                SCHEDULE_HINT,
                admin.delete_schedule(v1::ScheduleRef { name: name.clone() }),
            )
            .await?;
            let mut data = serde_json::Map::new();
            data.insert("deleted_schedule".into(), Value::String(name.clone()));
            s.print(&Done {
                message: format!("schedule {name} deleted"),
                data,
            })
        }
        ScheduleCmd::Trigger { name } => {
            let r = s
                .call(
                    SCHEDULE_HINT,
                    admin.trigger_schedule(v1::ScheduleRef { name: name.clone() }),
                )
                .await?;
            let mut data = serde_json::Map::new();
            data.insert("schedule".into(), Value::String(name.clone()));
            data.insert("job_id".into(), Value::String(r.job_id.clone()));
            s.print(&Done {
                message: format!("schedule {name} fired: job {}", r.job_id),
                data,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jq_102_ndjson_lines_become_specs_and_bad_lines_are_named() {
        let text = b"{\"payload\":{\"a\":1}}\n\n{\"payload\":\"raw text\",\"queue\":\"q2\",\"priority\":9}\n";
        let specs = parse_ndjson(text, "default", "jobs.ndjson").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].queue.as_str(), specs[0].payload.as_slice()),
            ("default", &b"{\"a\":1}"[..])
        );
        assert_eq!(
            (specs[1].queue.as_str(), specs[1].payload.as_slice()),
            ("q2", &b"raw text"[..])
        );
        assert_eq!(specs[1].priority, Some(9));
        for (bad, why) in [
            (&b"{\"payload\":1}\nnot json\n"[..], "jobs.ndjson line 2"),
            (b"{\"payload\":1,\"priority\":12}", "priority 12 is outside 0-9"),
            (b"{\"payload\":1,\"colour\":\"red\"}", "unknown field `colour`"),
            (b"{\"queue\":\"q\"}", "missing field `payload`"),
            (b"\n\n", "has no jobs"),
        ] {
            let e = parse_ndjson(bad, "default", "jobs.ndjson").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn job_ids_must_be_uuids() {
        assert!(job_id("3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b").is_ok());
        let e = job_id("42").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("not a job id"));
    }
}
