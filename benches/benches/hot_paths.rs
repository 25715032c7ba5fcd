//! The pure code on every job's path: one transition per lifecycle step,
//! the backoff of every retry, dispatch-order comparisons, and the
//! protobuf encoding of every assignment pushed to a worker.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jq_core::ordering::DispatchKey;
use jq_core::{BackoffPolicy, Command, Context, JobState, Outcome, transition};
use prost::Message;

fn lifecycle(c: &mut Criterion) {
    let ctx = Context::default();
    let fresh = JobState::new(3);
    c.bench_function("transition/claim", |b| {
        b.iter(|| {
            transition(
                black_box(&fresh),
                black_box(&Command::Claim {
                    worker_id: "w1".into(),
                }),
                &ctx,
            )
        })
    });
    // A full happy life: claim, ack, report success.
    c.bench_function("transition/claim_ack_complete", |b| {
        b.iter(|| {
            let mut s = fresh.clone();
            for cmd in [
                Command::Claim {
                    worker_id: "w1".into(),
                },
                Command::Ack {
                    worker_id: "w1".into(),
                    attempt: 1,
                },
                Command::Report {
                    worker_id: "w1".into(),
                    attempt: 1,
                    outcome: Outcome::Succeeded,
                },
            ] {
                if let Ok(jq_core::Decision::Apply(e)) = transition(&s, &cmd, &ctx) {
                    s = e.next;
                }
            }
            black_box(s)
        })
    });
}

fn backoff(c: &mut Criterion) {
    let p = BackoffPolicy::default();
    c.bench_function("backoff/delay", |b| {
        b.iter(|| p.delay(black_box(7), black_box(0.37)))
    });
}

fn ordering(c: &mut Criterion) {
    let mut keys: Vec<DispatchKey> = (0..1000)
        .map(|i: i64| DispatchKey {
            priority: (i * 7 % 10) as u8,
            created_at_micros: 1_795_000_000_000_000 + (i * 7919 % 1000),
            seq: i,
        })
        .collect();
    c.bench_function("ordering/sort_1000", |b| {
        b.iter(|| {
            keys.sort_unstable_by_key(|k| std::cmp::Reverse(k.seq));
            keys.sort();
            black_box(keys[0])
        })
    });
}

fn proto(c: &mut Criterion) {
    let a = jq_benches::assignment();
    let bytes = a.encode_to_vec();
    c.bench_function("proto/encode_assignment", |b| {
        b.iter(|| black_box(&a).encode_to_vec())
    });
    c.bench_function("proto/decode_assignment", |b| {
        b.iter(|| jq_proto::v1::Assignment::decode(black_box(bytes.as_slice())).unwrap())
    });
}

criterion_group!(benches, lifecycle, backoff, ordering, proto);
criterion_main!(benches);
