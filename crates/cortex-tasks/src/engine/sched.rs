//! The queues of every level and how workers choose among them.

use std::collections::VecDeque;

use super::record::{Job, Record};
use crate::TaskId;
use crate::index::Index;

/// How workers choose among levels.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Policy {
    /// Always the highest non-empty level: high-priority work waits for nothing lower,
    /// and a steady flood of high work starves lower levels.
    Strict,
    /// Smooth weighted round robin over the non-empty levels (as nginx balances
    /// upstreams): with weights 5/3/2 and every level busy, each run of ten picks takes
    /// five high, three normal and two low tasks, so low work keeps moving under a
    /// flood while high work still goes first.
    Weighted(Vec<u32>),
}

/// The queues of every level, under one lock.
pub(super) struct Sched {
    pub(super) queues: Vec<VecDeque<Job>>,
    /// Every task's record, under the same lock as the queues: a producer takes one
    /// lock per task, not two.
    pub(super) index: Index<Record>,
    pub(super) picker: Picker,
}

impl Sched {
    pub(super) fn pop(&mut self) -> Option<Job> {
        let queues = &mut self.queues;
        let level = self.picker.pick(queues.len(), |i| !queues[i].is_empty())?;
        queues[level].pop_front()
    }

    pub(super) fn remove(&mut self, level: usize, id: TaskId) -> Option<Job> {
        let q = self.queues.get_mut(level)?;
        let at = q.iter().position(|j| j.record.id == id)?;
        q.remove(at)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }
}

/// Which level the next job comes from: the policy's choice, apart from the queues so
/// it can be reasoned about (and tested) on its own.
#[derive(Debug)]
pub(super) struct Picker {
    /// `None` for [`Policy::Strict`].
    weights: Option<Vec<i64>>,
    current: Vec<i64>,
}

impl Picker {
    /// A picker over `levels` levels.
    pub(super) fn new(policy: &Policy, levels: usize) -> Self {
        let weights = match policy {
            Policy::Strict => None,
            Policy::Weighted(w) => Some(
                (0..levels)
                    .map(|i| i64::from(w.get(i).copied().unwrap_or(1).max(1)))
                    .collect(),
            ),
        };
        Self {
            weights,
            current: vec![0; levels],
        }
    }

    /// The level to serve among `levels`, of those `busy` says hold work; `None` when
    /// none does. Weighted: smooth weighted round robin (each busy level gains its
    /// weight, the richest is served and pays back the total), so over any run of
    /// picks each busy level is served in proportion to its weight, evenly spread.
    pub(super) fn pick(&mut self, levels: usize, busy: impl Fn(usize) -> bool) -> Option<usize> {
        let weights = match &self.weights {
            Some(w) if levels > 1 => w,
            _ => return (0..levels).find(|&i| busy(i)),
        };
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in (0..levels).filter(|&i| busy(i)) {
            self.current[i] += weights[i];
            total += weights[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(p: &mut Picker, n: usize, busy: [bool; 3]) -> Vec<usize> {
        (0..n).filter_map(|_| p.pick(3, |i| busy[i])).collect()
    }

    #[test]
    fn strict_serves_the_highest_busy_level() {
        let mut p = Picker::new(&Policy::Strict, 3);
        assert_eq!(picks(&mut p, 3, [true, true, true]), [0, 0, 0]);
        assert_eq!(picks(&mut p, 2, [false, true, true]), [1, 1]);
        assert_eq!(picks(&mut p, 1, [false, false, true]), [2]);
        assert_eq!(p.pick(3, |_| false), None);
    }

    #[test]
    fn weighted_serves_in_proportion_and_spreads_the_picks() {
        let mut p = Picker::new(&Policy::Weighted(vec![5, 3, 2]), 3);
        let seq = picks(&mut p, 10, [true; 3]);
        let count = |l| seq.iter().filter(|&&x| x == l).count();
        assert_eq!((count(0), count(1), count(2)), (5, 3, 2), "{seq:?}");
        assert_eq!(seq[0], 0, "high goes first");
        // Smooth: high is never served more than twice in a row.
        assert!(!seq.windows(3).any(|w| w == [0, 0, 0]), "{seq:?}");
        // The next ten repeat the proportion exactly.
        let next = picks(&mut p, 10, [true; 3]);
        assert_eq!(next, seq);
    }

    #[test]
    fn weighted_skips_idle_levels_without_saving_credit_for_them() {
        let mut p = Picker::new(&Policy::Weighted(vec![5, 3, 2]), 3);
        assert_eq!(picks(&mut p, 4, [false, false, true]), [2, 2, 2, 2]);
        let seq = picks(&mut p, 8, [true, true, false]);
        let highs = seq.iter().filter(|&&x| x == 0).count();
        assert_eq!((highs, seq.len() - highs), (5, 3), "{seq:?}");
        assert_eq!(p.pick(3, |_| false), None);
    }

    #[test]
    fn one_level_ignores_weights() {
        let mut p = Picker::new(&Policy::Weighted(vec![5, 3, 2]), 1);
        assert_eq!(p.pick(1, |_| true), Some(0));
        assert_eq!(p.pick(1, |_| false), None);
    }
}
