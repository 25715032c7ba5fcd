//! JQ-105: every input in `fuzz/corpus/<target>/` (what `cargo fuzz` found
//! and kept, plus the seeds) still passes its check. This replays the
//! corpus; it does not fuzz.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| check(&data));
        assert!(run.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    n
}

#[test]
fn jq_105_fuzz_corpus_worker_payload_replays_clean() {
    assert!(replay("worker_payload", jq_fuzz::worker_payload) >= 10);
}

#[test]
fn jq_105_fuzz_corpus_ctl_ndjson_replays_clean() {
    assert!(replay("ctl_ndjson", jq_fuzz::ctl_ndjson) >= 10);
}

#[test]
fn jq_105_fuzz_corpus_page_token_replays_clean() {
    assert!(replay("page_token", jq_fuzz::page_token) >= 10);
}
