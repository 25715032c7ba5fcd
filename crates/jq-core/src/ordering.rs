//! Dispatch order (FR-014): priority descending, then creation time
//! ascending (FIFO within a priority), then submission sequence as the tie
//! breaker for jobs created in the same transaction. The claim query's
//! `ORDER BY` and index follow this exactly.

use std::cmp::Ordering;

/// What decides a job's place in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchKey {
    pub priority: u8,
    /// Creation time in microseconds since the epoch.
    pub created_at_micros: i64,
    /// Monotonic submission sequence.
    pub seq: i64,
}

impl Ord for DispatchKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.created_at_micros.cmp(&other.created_at_micros))
            .then(self.seq.cmp(&other.seq))
    }
}

impl PartialOrd for DispatchKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(priority: u8, created: i64, seq: i64) -> DispatchKey {
        DispatchKey {
            priority,
            created_at_micros: created,
            seq,
        }
    }

    #[test]
    fn fr_014_higher_priority_first_then_oldest_first() {
        let mut v = vec![
            key(0, 1, 1),
            key(9, 5, 2),
            key(5, 3, 3),
            key(9, 2, 4),
            key(0, 1, 0),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                key(9, 2, 4),
                key(9, 5, 2),
                key(5, 3, 3),
                key(0, 1, 0),
                key(0, 1, 1)
            ]
        );
    }

    proptest! {
        #[test]
        fn fr_014_sorted_order_is_priority_desc_fifo(keys in prop::collection::vec((0u8..10, 0i64..50, 0i64..1000), 0..60)) {
            let mut v: Vec<DispatchKey> = keys.into_iter().map(|(p, c, s)| key(p, c, s)).collect();
            v.sort();
            for w in v.windows(2) {
                let (a, b) = (w[0], w[1]);
                prop_assert!(a.priority >= b.priority);
                if a.priority == b.priority {
                    prop_assert!(a.created_at_micros <= b.created_at_micros);
                    if a.created_at_micros == b.created_at_micros {
                        prop_assert!(a.seq <= b.seq);
                    }
                }
            }
        }
    }
}
