//! WorkerService (SPEC §5, JQ-110, JQ-111, JQ-113).

use std::sync::Arc;

use jq_core::records::{Lease, WorkerRegistration};
use jq_core::{JobStatus, WorkerStatus};
use jq_proto::v1::worker_service_server::WorkerService;
use jq_proto::v1::{self, *};
use jq_proto::{job_status_to_proto, outcome_from_proto, worker_status_to_proto};
use jq_store::{CallOutcome, ResultReport, WorkerCall};
use tonic::{Code, Request, Response, Status};

use crate::batch::Batcher;
use crate::effects::Effects;
use crate::grpc::control;
use crate::registry::AssignmentStream;
use crate::status::{from_store, job_id, job_id_of};
use crate::{Shared, VERSION};

pub struct Workers(pub Arc<Shared>);

/// The group commit of workers' acks and results (ADR 0010): calls that
/// arrive while a batch is being written form the next. Started jobs'
/// dispatch locks are released before the batch is answered.
pub fn lane(
    store: jq_store::Store,
    effects: Arc<Effects>,
) -> Batcher<WorkerCall, jq_store::Result<CallOutcome>> {
    Batcher::spawn(
        crate::BATCH_LANES,
        crate::BATCH_MAX,
        move |calls: Vec<WorkerCall>| {
            let (store, effects) = (store.clone(), effects.clone());
            async move {
                let out = store.worker_calls_many(&calls).await;
                effects.release_locks().await;
                out
            }
        },
    )
}

fn leases(v: Vec<v1::Lease>) -> Result<Vec<Lease>, Status> {
    v.into_iter()
        .map(|l| {
            Ok(Lease {
                job_id: job_id_of("in_flight.job_id", &l.job_id)?,
                attempt: l.attempt,
            })
        })
        .collect()
}

fn wire(l: &[Lease]) -> Vec<v1::Lease> {
    l.iter()
        .map(|l| v1::Lease {
            job_id: l.job_id.to_string(),
            attempt: l.attempt,
        })
        .collect()
}

#[tonic::async_trait]
impl WorkerService for Workers {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        let reg = WorkerRegistration {
            id: r.worker_id,
            hostname: r.hostname,
            concurrency: r.concurrency,
            queues: r.queues,
            queue_weights: r.queue_weights,
            version: r.version,
            keep: leases(r.in_flight)?,
            draining: r.draining,
        };
        let reclaimed = s.store.register_worker(&reg).await.map_err(from_store)?;
        tracing::info!(worker_id = %reg.id, queues = ?reg.queues, concurrency = reg.concurrency, "worker registered");
        if !reclaimed.is_empty() {
            tracing::warn!(worker_id = %reg.id, jobs = reclaimed.len(), "jobs of the previous incarnation returned for retry");
        }
        let sc = &s.cfg.scheduler;
        Ok(Response::new(RegisterResponse {
            heartbeat_interval_ms: (sc.heartbeat_interval_s * 1000) as u32,
            heartbeat_timeout_ms: (sc.worker_heartbeat_timeout_s * 1000) as u32,
            server_version: VERSION.to_string(),
        }))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        let held = leases(r.in_flight)?;
        let hb = s.store.heartbeat(&r.worker_id, &held).await.map_err(from_store)?;
        if hb.registered {
            // Two intervals: a heartbeat built just before an ack must not
            // cost that job its attempt.
            let grace = std::time::Duration::from_secs(s.cfg.scheduler.heartbeat_interval_s * 2);
            let every = grace.max(std::time::Duration::from_secs(30));
            let check = s.registry.unlisted_check_due(&r.worker_id, every);
            let looked = if check {
                let started = std::time::Instant::now();
                let found = s.store.reclaim_unlisted(&r.worker_id, &held, grace).await;
                s.registry.unlisted_checked(&r.worker_id, started.elapsed());
                found
            } else {
                Ok(vec![])
            };
            match looked {
                Ok(lost) if !lost.is_empty() => {
                    tracing::warn!(worker_id = %r.worker_id, jobs = lost.len(), "RUNNING jobs the worker no longer holds returned for retry");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(worker_id = %r.worker_id, error = %e, "cannot check unlisted jobs"),
            }
        }
        for l in &hb.stale {
            s.registry.finished(&r.worker_id, l.job_id);
        }
        Ok(Response::new(HeartbeatResponse {
            stale: wire(&hb.stale),
            status: hb.status.map(|st| worker_status_to_proto(st) as i32).unwrap_or(0),
            registered: hb.registered,
            cancel: wire(&hb.cancel),
        }))
    }

    type StreamAssignmentsStream = AssignmentStream;

    async fn stream_assignments(
        &self,
        req: Request<StreamAssignmentsRequest>,
    ) -> Result<Response<Self::StreamAssignmentsStream>, Status> {
        let s = self.0.clone();
        let worker_id = req.into_inner().worker_id;
        let w = s.store.get_worker(&worker_id).await.map_err(|e| match e {
            jq_store::StoreError::WorkerNotFound(_) => Status::failed_precondition(format!(
                "worker {worker_id:?} is not registered; call Register first"
            )),
            other => from_store(other),
        })?;
        if w.status == WorkerStatus::Offline {
            return Err(Status::failed_precondition(format!(
                "worker {worker_id:?} is OFFLINE; call Register again"
            )));
        }
        let (generation, rx) = s.registry.connect(
            &worker_id,
            w.queues.clone(),
            w.queue_weights.clone(),
            w.concurrency,
        );
        match w.status {
            WorkerStatus::Draining => {
                s.registry
                    .send(&worker_id, control(v1::server_message::Kind::Drain(v1::Drain {})));
            }
            WorkerStatus::Stopping => {
                s.registry.send(
                    &worker_id,
                    control(v1::server_message::Kind::Shutdown(v1::Shutdown {})),
                );
            }
            _ => {}
        }
        tracing::info!(worker_id = %worker_id, "assignment stream opened");
        let on_drop = {
            let s = s.clone();
            let worker_id = worker_id.clone();
            Box::new(move || {
                let unacked = s.registry.disconnect(&worker_id, generation);
                tracing::info!(worker_id = %worker_id, returned = unacked.len(), "assignment stream closed");
                if unacked.is_empty() {
                    return;
                }
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        for (job, attempt) in unacked {
                            if let Err(e) = s.store.delivery_failed(&worker_id, job, attempt).await {
                                tracing::debug!(job_id = %job, error = %e, "undelivered job already moved on");
                            }
                        }
                    });
                }
            }) as Box<dyn FnOnce() + Send>
        };
        Ok(Response::new(AssignmentStream {
            rx,
            on_drop: Some(on_drop),
        }))
    }

    async fn ack_job(&self, req: Request<AckJobRequest>) -> Result<Response<AckJobResponse>, Status> {
        self.ack_one(req.into_inner()).await.map(Response::new)
    }

    async fn report_result(
        &self,
        req: Request<ReportResultRequest>,
    ) -> Result<Response<ReportResultResponse>, Status> {
        self.report_one(req.into_inner()).await.map(Response::new)
    }

    async fn ack_jobs(&self, req: Request<AckJobsRequest>) -> Result<Response<AckJobsResponse>, Status> {
        let acks = req.into_inner().acks;
        within_batch_limit(acks.len())?;
        // All at once into the group commit: they share its next batch.
        let results = futures::future::join_all(acks.into_iter().map(|r| self.ack_one(r))).await;
        Ok(Response::new(AckJobsResponse {
            results: results.iter().map(|r| call_status(r.as_ref().err())).collect(),
        }))
    }

    async fn report_results(
        &self,
        req: Request<ReportResultsRequest>,
    ) -> Result<Response<ReportResultsResponse>, Status> {
        let reports = req.into_inner().reports;
        within_batch_limit(reports.len())?;
        let results = futures::future::join_all(reports.into_iter().map(|r| self.report_one(r))).await;
        Ok(Response::new(ReportResultsResponse {
            results: results
                .into_iter()
                .map(|r| ReportResultsItem {
                    status: Some(call_status(r.as_ref().err())),
                    response: r.ok(),
                })
                .collect(),
        }))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let s = &self.0;
        let w = req.into_inner().worker_id;
        s.store.deregister_worker(&w).await.map_err(from_store)?;
        s.registry.remove(&w);
        tracing::info!(worker_id = %w, "worker deregistered");
        Ok(Response::new(DeregisterResponse {}))
    }
}

/// Most calls one AckJobs/ReportResults may carry.
const MAX_BATCH: usize = 1000;

fn within_batch_limit(n: usize) -> Result<(), Status> {
    if n > MAX_BATCH {
        return Err(Status::invalid_argument(format!(
            "{n} calls in one batch; at most {MAX_BATCH}"
        )));
    }
    Ok(())
}

/// A batched call's answer: what the single call would have returned.
fn call_status(err: Option<&Status>) -> CallStatus {
    match err {
        None => CallStatus {
            code: Code::Ok as i32,
            message: String::new(),
        },
        Some(e) => CallStatus {
            code: e.code() as i32,
            message: e.message().to_string(),
        },
    }
}

impl Workers {
    /// ASSIGNED -> RUNNING, group-committed with the other acks arriving now.
    async fn ack_one(&self, r: AckJobRequest) -> Result<AckJobResponse, Status> {
        let s = &self.0;
        let id = job_id(&r.job_id)?;
        // Group commit with the other acks arriving now (batch.rs).
        let res = s
            .worker_calls
            .call(WorkerCall::Ack {
                worker_id: r.worker_id.clone(),
                job_id: id,
                attempt: r.attempt,
                expected: s.registry.expected(&r.worker_id, id, r.attempt),
            })
            .await
            .ok_or_else(|| Status::unavailable("the server is shutting down"))?;
        match res {
            Ok(out) => {
                // Its lock, registry entry and start latency: crate::effects.
                if !matches!(out, CallOutcome::Acked { .. }) {
                    return Err(Status::internal("an ack was answered as a result"));
                }
                tracing::debug!(job_id = %id, worker_id = %r.worker_id, attempt = r.attempt, "job started");
                Ok(AckJobResponse {})
            }
            Err(e) => {
                // No transition, so the effects hook did not hear of it: the
                // worker must drop this attempt, and it no longer counts.
                s.registry.finished(&r.worker_id, id);
                Err(from_store(e))
            }
        }
    }

    /// One attempt's result (FR-029), group-committed.
    async fn report_one(&self, r: ReportResultRequest) -> Result<ReportResultResponse, Status> {
        let s = &self.0;
        let id = job_id(&r.job_id)?;
        let outcome = outcome_from_proto(r.outcome, r.retryable).ok_or_else(|| {
            Status::invalid_argument("outcome is required (SUCCEEDED, FAILED or CANCELLED)")
        })?;
        let report = ResultReport {
            worker_id: r.worker_id.clone(),
            job_id: id,
            attempt: r.attempt,
            outcome,
            result: r.result,
            error: (!r.error.is_empty()).then_some(r.error),
        };
        let expected = s.registry.expected(&r.worker_id, id, r.attempt);
        let res = s
            .worker_calls
            .call(WorkerCall::Report { report, expected })
            .await
            .ok_or_else(|| Status::unavailable("the server is shutting down"))?;
        // An applied result freed the worker's room in crate::effects; a
        // refused or duplicate one changed nothing there, so it is freed here.
        if !matches!(&res, Ok(CallOutcome::Reported { outcome, .. }) if !outcome.duplicate) {
            s.registry.finished(&r.worker_id, id);
        }
        let (out, queue) = match res.map_err(from_store)? {
            CallOutcome::Reported { outcome, queue } => (outcome, queue),
            CallOutcome::Acked { .. } => return Err(Status::internal("a result was answered as an ack")),
        };
        if !out.duplicate {
            if out.status == JobStatus::Done {
                s.metrics
                    .processing_duration
                    .with_label_values(&[&queue])
                    .observe(r.duration_ms as f64 / 1000.0);
            }
            tracing::info!(job_id = %id, worker_id = %r.worker_id, queue = %queue, attempt = r.attempt, status = %out.status, "result recorded");
        }
        Ok(ReportResultResponse {
            status: job_status_to_proto(out.status) as i32,
            duplicate: out.duplicate,
        })
    }
}
