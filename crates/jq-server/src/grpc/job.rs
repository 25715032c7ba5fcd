//! JobService (SPEC §2, §3, §7, §8).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jq_core::submit::validate_bulk;
use jq_core::{JobRequest, JobStatus};
use jq_proto::v1::job_service_server::JobService;
use jq_proto::v1::{self, *};
use jq_proto::{from_timestamp, job_status_from_proto, job_status_to_proto};
use jq_store::{CancelOutcome, ListFilter};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::status::{from_store, from_validation, job_id};
use crate::{Shared, convert};

/// The group commit of single submits from many clients.
pub fn lane(
    store: jq_store::Store,
) -> crate::batch::Batcher<jq_core::NewJob, jq_store::Result<jq_store::Submitted>> {
    crate::batch::Batcher::spawn(
        crate::SUBMIT_LANES,
        crate::BATCH_MAX,
        move |jobs: Vec<jq_core::NewJob>| {
            let store = store.clone();
            async move { store.submit_each(&jobs).await }
        },
    )
}

pub struct Jobs(pub Arc<Shared>);

fn request(spec: JobSpec) -> Result<JobRequest, Status> {
    let run_at = match &spec.run_at {
        Some(t) => Some(
            from_timestamp(t).ok_or_else(|| Status::invalid_argument("run_at is not a valid timestamp"))?,
        ),
        None => None,
    };
    Ok(JobRequest {
        queue: spec.queue,
        payload: spec.payload,
        priority: spec.priority,
        max_retries: spec.max_retries,
        ttl_seconds: spec.ttl_seconds,
        run_at,
        delay: spec.delay_ms.map(Duration::from_millis),
        idempotency_key: spec.idempotency_key,
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Jobs {
    async fn submit_job(
        &self,
        req: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let s = &self.0;
        let spec = req
            .into_inner()
            .job
            .ok_or_else(|| Status::invalid_argument("job is required"))?;
        let job = request(spec)?
            .validate(s.cfg.server.max_payload_bytes as usize)
            .map_err(from_validation)?;
        let queue = job.queue.clone();
        // Group commit with the other single submits arriving now.
        let r = s
            .submits
            .call(job)
            .await
            .ok_or_else(|| Status::unavailable("the server is shutting down"))?
            .map_err(from_store)?;
        if !r.already_existed {
            s.inserted();
            tracing::info!(job_id = %r.job_id, queue = %queue, "job submitted");
        }
        Ok(Response::new(SubmitJobResponse {
            job_id: r.job_id.to_string(),
            already_existed: r.already_existed,
        }))
    }

    async fn submit_jobs(
        &self,
        req: Request<SubmitJobsRequest>,
    ) -> Result<Response<SubmitJobsResponse>, Status> {
        let s = &self.0;
        let reqs = req
            .into_inner()
            .jobs
            .into_iter()
            .map(request)
            .collect::<Result<Vec<_>, _>>()?;
        let jobs = validate_bulk(reqs, s.cfg.server.max_payload_bytes as usize).map_err(from_validation)?;
        let res = s.store.submit_many(jobs).await.map_err(from_store)?;
        let new = res.iter().filter(|r| !r.already_existed).count();
        if new > 0 {
            s.inserted();
        }
        tracing::info!(jobs = res.len(), new, "bulk submit");
        Ok(Response::new(SubmitJobsResponse {
            results: res
                .into_iter()
                .map(|r| SubmitJobResponse {
                    job_id: r.job_id.to_string(),
                    already_existed: r.already_existed,
                })
                .collect(),
        }))
    }

    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<GetJobResponse>, Status> {
        let id = job_id(&req.into_inner().job_id)?;
        let j = self.0.store.get_job(id).await.map_err(from_store)?;
        Ok(Response::new(GetJobResponse {
            job: Some(convert::job(j)),
        }))
    }

    async fn list_jobs(&self, req: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let r = req.into_inner();
        let status = match r.status {
            0 => None,
            v => Some(
                job_status_from_proto(v)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown status {v}")))?,
            ),
        };
        let f = ListFilter {
            queue: (!r.queue.is_empty()).then_some(r.queue),
            status,
            limit: (r.limit > 0).then_some(r.limit.min(1000)),
            page_token: (!r.page_token.is_empty()).then_some(r.page_token),
            omit_payloads: r.omit_payloads,
        };
        let page = self.0.store.list_jobs(&f).await.map_err(from_store)?;
        Ok(Response::new(ListJobsResponse {
            jobs: page.jobs.into_iter().map(convert::job).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_job_events(
        &self,
        req: Request<GetJobEventsRequest>,
    ) -> Result<Response<GetJobEventsResponse>, Status> {
        let id = job_id(&req.into_inner().job_id)?;
        let ev = self.0.store.job_events(id).await.map_err(from_store)?;
        Ok(Response::new(GetJobEventsResponse {
            events: ev.into_iter().map(convert::event).collect(),
        }))
    }

    async fn cancel_job(
        &self,
        req: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let s = &self.0;
        let id = job_id(&req.into_inner().job_id)?;
        let out = s.store.cancel(id).await.map_err(from_store)?;
        tracing::info!(job_id = %id, outcome = ?out, "cancel");
        // The notice to the worker holding it: crate::effects.
        let (status, requested) = match out {
            CancelOutcome::Cancelled { .. } => (JobStatus::DeadLettered, false),
            CancelOutcome::KillRequested { .. } => (JobStatus::Running, true),
        };
        Ok(Response::new(CancelJobResponse {
            status: job_status_to_proto(status) as i32,
            cancel_requested: requested,
        }))
    }

    async fn retry_job(&self, req: Request<RetryJobRequest>) -> Result<Response<RetryJobResponse>, Status> {
        let s = &self.0;
        let id = job_id(&req.into_inner().job_id)?;
        s.store.retry(id).await.map_err(from_store)?;
        s.submitted();
        let j = s.store.get_job(id).await.map_err(from_store)?;
        Ok(Response::new(RetryJobResponse {
            job: Some(convert::job(j)),
        }))
    }

    async fn retry_jobs(
        &self,
        req: Request<RetryJobsRequest>,
    ) -> Result<Response<RetryJobsResponse>, Status> {
        let s = &self.0;
        let r = req.into_inner();
        if r.queue.is_empty() {
            return Err(Status::invalid_argument("queue is required for a bulk retry"));
        }
        let status = match r.status {
            0 => JobStatus::DeadLettered,
            v => job_status_from_proto(v)
                .ok_or_else(|| Status::invalid_argument(format!("unknown status {v}")))?,
        };
        let limit = if r.limit == 0 { 1000 } else { r.limit };
        let ids = s
            .store
            .retry_many(&r.queue, status, limit)
            .await
            .map_err(from_store)?;
        if !ids.is_empty() {
            s.submitted();
        }
        Ok(Response::new(RetryJobsResponse {
            job_ids: ids.iter().map(|i| i.to_string()).collect(),
        }))
    }

    async fn delete_job(
        &self,
        req: Request<DeleteJobRequest>,
    ) -> Result<Response<DeleteJobResponse>, Status> {
        let id = job_id(&req.into_inner().job_id)?;
        self.0.store.delete_job(id).await.map_err(from_store)?;
        Ok(Response::new(DeleteJobResponse {}))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        req: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let s = self.0.clone();
        let r = req.into_inner();
        let id = job_id(&r.job_id)?;
        let since = r.since.as_ref().and_then(from_timestamp);
        // Fail fast on an unknown job.
        s.store.get_job(id).await.map_err(from_store)?;
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        tokio::spawn(async move {
            let mut sent = 0usize;
            loop {
                let events = match s.store.job_events(id).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(from_store(e))).await;
                        return;
                    }
                };
                let terminal = events.last().is_some_and(|e| e.to.is_terminal());
                for e in events.into_iter().skip(sent) {
                    sent += 1;
                    if since.is_some_and(|t| e.occurred_at <= t) {
                        continue;
                    }
                    if tx.send(Ok(convert::event(e))).await.is_err() {
                        return;
                    }
                }
                if terminal {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
