//! The parsers jq runs on bytes it does not control, each with the
//! properties that must hold for any input (JQ-105). A check panics when
//! one does not: `cargo fuzz` reports that as a crash, and
//! `tests/corpus.rs` replays every committed input as a regression test.
//!
//! - [`worker_payload`]: what a worker reads from a job (`jq_worker::job::plan`).
//! - [`ctl_ndjson`]: `jq-ctl job submit --file` lines (`jq_ctl::commands::parse_ndjson`).
//! - [`page_token`]: a client's `page_token` (`jq_core::PageToken::decode`).

use jq_worker::job::{Plan, plan};

/// Longest error message a parser may return, whatever the input: errors
/// quote input only through `jq_core::input::echo`.
const MAX_ERROR: usize = 1024;

/// A payload gives a plan that can run, or a bounded error.
pub fn worker_payload(data: &[u8]) {
    match plan(data) {
        Ok(Plan::Subprocess(spec)) => {
            assert!(
                !spec.command.is_empty() && !spec.command[0].is_empty(),
                "{spec:?}"
            );
            // What reaches a process: no NUL anywhere (it cannot be passed).
            assert!(spec.command.iter().all(|a| !a.contains('\0')), "{spec:?}");
            for (k, v) in &spec.env {
                assert!(!k.is_empty() && !k.contains('=') && !k.contains('\0'), "{k:?}");
                assert!(!v.contains('\0'), "{v:?}");
            }
            if let Some(c) = &spec.cwd {
                assert!(!c.as_os_str().as_encoded_bytes().contains(&0), "{c:?}");
            }
        }
        Ok(Plan::Handler { name, .. }) => assert!(!name.is_empty()),
        Err(e) => assert!(e.len() <= MAX_ERROR, "error of {} bytes", e.len()),
    }
}

/// NDJSON gives specs within the documented ranges, or one bounded error.
pub fn ctl_ndjson(data: &[u8]) {
    match jq_ctl::commands::parse_ndjson(data, "default", "jobs.ndjson") {
        Ok(specs) => {
            assert!(!specs.is_empty());
            for s in &specs {
                assert!(s.priority.is_none_or(|p| (0..=9).contains(&p)), "{s:?}");
                assert!(s.max_retries.is_none_or(|m| m >= 0), "{s:?}");
            }
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.len() <= MAX_ERROR, "error of {} bytes", e.len());
        }
    }
}

/// A token decodes to what encodes back to it, or to a bounded error.
pub fn page_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match jq_core::PageToken::decode(text) {
        Ok(t) => assert_eq!(jq_core::PageToken::decode(&t.encode()), Ok(t)),
        Err(e) => {
            let e = e.to_string();
            assert!(e.len() <= MAX_ERROR, "error of {} bytes", e.len());
        }
    }
}
