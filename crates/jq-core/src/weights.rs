//! Priority weights (FR-025, ADR 0019): bands named by their lowest
//! priority (`9:8,5:3,0:1` is band 9 weight 8, band 5–8 weight 3, band
//! 0–4 weight 1), and the deterministic smooth weighted round-robin that
//! shares dispatches between them. Pure: the store keeps the round-robin's
//! state with the queue, so every replica continues one sequence.

use std::fmt;

use crate::error::ValidationError;

const FIELD: &str = "priority_weights";

/// The most a band's weight may be (the round-robin's sums stay small).
pub const MAX_WEIGHT: u32 = 1000;

/// One band: priorities `lowest..=highest`, and its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Band {
    pub lowest: u8,
    pub highest: u8,
    pub weight: u32,
}

/// A queue's bands, highest first; together they cover priorities 0–9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityWeights {
    bands: Vec<Band>,
}

impl PriorityWeights {
    /// Parse `LOWEST:WEIGHT,…`; every fault is named.
    pub fn parse(text: &str) -> Result<PriorityWeights, ValidationError> {
        let mut given: Vec<(u8, u32)> = vec![];
        for part in text.split(',').map(str::trim) {
            let Some((lo, w)) = part.split_once(':') else {
                return Err(invalid(format!(
                    "{} is not LOWEST_PRIORITY:WEIGHT (e.g. 9:8,5:3,0:1)",
                    crate::input::Echo(part)
                )));
            };
            let lo: u8 = match lo.trim().parse() {
                Ok(p) if p <= 9 => p,
                _ => {
                    return Err(invalid(format!(
                        "band {}: a priority is 0-9",
                        crate::input::Echo(lo.trim())
                    )));
                }
            };
            let w: u32 = match w.trim().parse() {
                Ok(w) if (1..=MAX_WEIGHT).contains(&w) => w,
                _ => {
                    return Err(invalid(format!(
                        "band {lo}: weight {} is not 1-{MAX_WEIGHT}",
                        crate::input::Echo(w.trim())
                    )));
                }
            };
            if given.iter().any(|(l, _)| *l == lo) {
                return Err(invalid(format!("band {lo} is given twice")));
            }
            given.push((lo, w));
        }
        if !given.iter().any(|(l, _)| *l == 0) {
            return Err(invalid(
                "no band holds priorities below the lowest given: add a band 0 (e.g. 0:1)",
            ));
        }
        given.sort_by_key(|g| std::cmp::Reverse(g.0));
        let mut bands = Vec::with_capacity(given.len());
        let mut highest = 9;
        for (lowest, weight) in given {
            bands.push(Band {
                lowest,
                highest,
                weight,
            });
            highest = lowest.saturating_sub(1);
        }
        Ok(PriorityWeights { bands })
    }

    /// The bands, highest first.
    pub fn bands(&self) -> &[Band] {
        &self.bands
    }

    /// The bands' weights, highest band first (the round-robin's input).
    pub fn weights(&self) -> Vec<u32> {
        self.bands.iter().map(|b| b.weight).collect()
    }

    /// The index of the band that holds `priority`.
    pub fn band_of(&self, priority: u8) -> usize {
        self.bands
            .iter()
            .position(|b| priority >= b.lowest)
            .expect("band 0 holds every priority")
    }
}

impl fmt::Display for PriorityWeights {
    /// The canonical form, highest band first: `9:8,5:3,0:1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.bands.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}", b.lowest, b.weight)?;
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError::invalid(FIELD, message)
}

/// A worker's queues as configured (`critical:3`, `default`): the names,
/// and their weights — empty when none is given (the queues then share by
/// dispatch order, FR-014), else one per queue, 1 where not given.
pub fn parse_queue_weights(entries: &[String]) -> Result<(Vec<String>, Vec<u32>), ValidationError> {
    let mut names = Vec::with_capacity(entries.len());
    let mut weights = Vec::with_capacity(entries.len());
    let mut any = false;
    for e in entries {
        let (name, w) = match e.trim().split_once(':') {
            None => (e.trim(), 1),
            Some((name, w)) => {
                any = true;
                match w.trim().parse::<u32>() {
                    Ok(w) if (1..=MAX_WEIGHT).contains(&w) => (name.trim(), w),
                    _ => {
                        return Err(ValidationError::invalid(
                            "queues",
                            format!(
                                "{}: weight {} is not 1-{MAX_WEIGHT} (e.g. critical:3,default:1)",
                                crate::input::Echo(name.trim()),
                                crate::input::Echo(w.trim())
                            ),
                        ));
                    }
                }
            }
        };
        if names.contains(&name.to_string()) {
            return Err(ValidationError::invalid(
                "queues",
                format!("{} is given twice", crate::input::Echo(name)),
            ));
        }
        names.push(name.to_string());
        weights.push(w);
    }
    if !any {
        weights.clear();
    }
    Ok((names, weights))
}

/// Smooth weighted round-robin (the nginx upstream algorithm): each pick
/// adds every eligible band's weight to its credit, takes the band with the
/// most credit (the higher band on a tie) and takes the eligible total from
/// it. Deterministic, and spread out: `9:9,0:1` gives band 0 one pick in
/// every ten, not ten in a row. Bands without work are not eligible and
/// keep their credit, so their share goes to the others (work-conserving).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundRobin {
    /// One credit per band, as stored with the queue.
    pub credit: Vec<i64>,
}

impl RoundRobin {
    /// Continue from stored credits (any length: missing bands start at 0,
    /// extra ones are dropped, as after the bands were changed).
    pub fn resume(credit: Vec<i64>, bands: usize) -> RoundRobin {
        let mut credit = credit;
        credit.resize(bands, 0);
        RoundRobin { credit }
    }

    /// The next band among those with work; `None` if none has.
    pub fn pick(&mut self, weights: &[u32], has_work: &[bool]) -> Option<usize> {
        self.credit.resize(weights.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, w) in weights.iter().enumerate() {
            if !has_work.get(i).copied().unwrap_or(false) {
                continue;
            }
            self.credit[i] += i64::from(*w);
            total += i64::from(*w);
            if best.is_none_or(|k| self.credit[i] > self.credit[k]) {
                best = Some(i);
            }
        }
        let k = best?;
        self.credit[k] -= total;
        Some(k)
    }

    /// Up to `n` picks when band `i` has `available[i]` jobs: a band that
    /// runs out stops being eligible, so its picks go to the others. The
    /// first `k` picks of a plan of `n` are the plan of `k` (a claim that
    /// hands out fewer replays the shorter plan for the credit it stores).
    pub fn plan(&mut self, weights: &[u32], available: &[usize], n: usize) -> Vec<usize> {
        let mut left = available.to_vec();
        let mut picks = Vec::with_capacity(n);
        while picks.len() < n {
            let has_work: Vec<bool> = left.iter().map(|l| *l > 0).collect();
            let Some(k) = self.pick(weights, &has_work) else {
                break;
            };
            left[k] -= 1;
            picks.push(k);
        }
        picks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> PriorityWeights {
        PriorityWeights::parse(text).unwrap()
    }

    #[test]
    fn fr_025_bands_are_named_by_their_lowest_priority() {
        let p = w("9:8,5:3,0:1");
        let b = p.bands();
        assert_eq!((b[0].lowest, b[0].highest, b[0].weight), (9, 9, 8), "band 9");
        assert_eq!((b[1].lowest, b[1].highest, b[1].weight), (5, 8, 3));
        assert_eq!((b[2].lowest, b[2].highest, b[2].weight), (0, 4, 1));
        assert_eq!([9, 8, 5, 4, 0].map(|x| p.band_of(x)), [0, 1, 1, 2, 2]);
        assert_eq!(w(" 0:1 , 5:3,9:8").to_string(), "9:8,5:3,0:1", "canonical form");
    }

    #[test]
    fn fr_025_every_fault_is_named() {
        for (text, says) in [
            ("9-8,0:1", "is not LOWEST_PRIORITY:WEIGHT"),
            ("10:1,0:1", "band \"10\": a priority is 0-9"),
            ("9:0,0:1", "band 9: weight \"0\" is not 1-1000"),
            ("9:x,0:1", "weight \"x\""),
            ("9:1,9:2,0:1", "band 9 is given twice"),
            ("9:8,5:3", "add a band 0"),
            ("", "is not LOWEST_PRIORITY:WEIGHT"),
        ] {
            let e = PriorityWeights::parse(text).unwrap_err().to_string();
            assert!(e.starts_with("priority_weights: "), "{e}");
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn fr_025_round_robin_gives_each_band_its_share_spread_out() {
        let p = w("9:9,0:1");
        let mut rr = RoundRobin::default();
        let picks: Vec<usize> = (0..100)
            .map(|_| rr.pick(&p.weights(), &[true, true]).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|b| **b == 1).count(), 10);
        // Spread out: one low pick in every window of ten.
        for window in picks.chunks(10) {
            assert_eq!(window.iter().filter(|b| **b == 1).count(), 1, "{window:?}");
        }
        let p = w("9:8,5:3,0:1");
        let mut rr = RoundRobin::default();
        let mut n = [0; 3];
        for _ in 0..1200 {
            n[rr.pick(&p.weights(), &[true; 3]).unwrap()] += 1;
        }
        assert_eq!(n, [800, 300, 100]);
    }

    #[test]
    fn fr_025_an_empty_band_gives_its_share_away() {
        let p = w("9:9,0:1");
        let mut rr = RoundRobin::default();
        let picks: Vec<usize> = (0..20)
            .map(|_| rr.pick(&p.weights(), &[false, true]).unwrap())
            .collect();
        assert!(picks.iter().all(|b| *b == 1), "only band 0 has work: {picks:?}");
        assert_eq!(rr.pick(&p.weights(), &[false, false]), None);
    }

    #[test]
    fn fr_025_the_sequence_continues_from_stored_credit() {
        let p = w("9:3,0:1");
        let mut whole = RoundRobin::default();
        let all: Vec<usize> = (0..12)
            .map(|_| whole.pick(&p.weights(), &[true, true]).unwrap())
            .collect();
        // As two replicas taking turns through the stored credit.
        let mut stored = vec![];
        let mut split = vec![];
        for _ in 0..12 {
            let mut rr = RoundRobin::resume(stored, 2);
            split.push(rr.pick(&p.weights(), &[true, true]).unwrap());
            stored = rr.credit;
        }
        assert_eq!(all, split);
        assert_eq!(RoundRobin::resume(vec![5, 6, 7], 2).credit, [5, 6]);
    }

    #[test]
    fn fr_025_a_plan_gives_a_short_bands_picks_to_the_others() {
        let p = w("9:1,0:1");
        let mut rr = RoundRobin::default();
        // Band 9 has two jobs, band 0 eight: alternate, then band 0 alone.
        let plan = rr.plan(&p.weights(), &[2, 8], 6);
        assert_eq!(plan, [0, 1, 0, 1, 1, 1]);
        assert_eq!(
            RoundRobin::default().plan(&p.weights(), &[1, 1], 5),
            [0, 1],
            "no more than there is"
        );
        // A prefix of a plan is the shorter plan, credit included.
        let mut long = RoundRobin::default();
        let whole = long.plan(&w("9:5,3:2,0:1").weights(), &[3, 9, 9], 12);
        for k in 0..=12 {
            let mut short = RoundRobin::default();
            assert_eq!(short.plan(&w("9:5,3:2,0:1").weights(), &[3, 9, 9], k), whole[..k]);
        }
    }

    #[test]
    fn jq_123_worker_queue_weights_parse_and_default_to_one() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_queue_weights(&v(&["critical:3", " default "])).unwrap(),
            (v(&["critical", "default"]), vec![3, 1])
        );
        assert_eq!(
            parse_queue_weights(&v(&["a", "b"])).unwrap(),
            (v(&["a", "b"]), vec![]),
            "none given"
        );
        for (bad, says) in [
            (v(&["a:0"]), "\"a\": weight \"0\" is not 1-1000"),
            (v(&["a:x", "b"]), "weight \"x\""),
            (v(&["a:2", "a"]), "\"a\" is given twice"),
        ] {
            let e = parse_queue_weights(&bad).unwrap_err().to_string();
            assert!(e.starts_with("queues: ") && e.contains(says), "{bad:?}: {e}");
        }
    }
}
