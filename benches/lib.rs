//! Inputs shared by the criterion benches (`benches/hot_paths.rs`).

use jq_proto::v1;

/// An assignment as the dispatcher sends it: a typical small JSON payload.
pub fn assignment() -> v1::Assignment {
    v1::Assignment {
        job_id: "3f0c2a4e-8d1b-4e7a-9c55-0b1d2e3f4a5b".into(),
        queue: "default".into(),
        attempt: 1,
        payload: br#"{"command":["convert","in.png","-resize","50%","out.png"],"timeout_s":30}"#.to_vec(),
        priority: 5,
        timeout_seconds: Some(600),
        retries: 0,
        created_at: Some(prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 123_000,
        }),
        scheduled_at: None,
    }
}
