//! When a fleet scales: a pure function of the backlog (a Kafka group's lag or
//! a RabbitMQ queue's ready + unacknowledged messages), the instance count and
//! the recent recommendations, with the semantics of the KEDA and HPA
//! manifests in `deploy/k8s/autoscale-{keda,hpa}`, so a laptop run does what
//! the cluster would do with the same numbers.
//!
//! - **Desired count**: `ceil(backlog / per_instance)` (KEDA's kafka scaler
//!   `lagThreshold`, the HPA's `AverageValue` target), left at the current
//!   count within the HPA's 10 % tolerance, then bounded by `min`, `max` and,
//!   on Kafka, the partitions that have lag (KEDA's `allowIdleConsumers:
//!   "false"` and `limitToPartitionsWithLag: "true"`: more members than
//!   lagging partitions would not work the backlog faster). A queue
//!   dispatches fairly to any number of consumers: only `max` caps it.
//! - **A queue's backlog counts the unacknowledged messages**: ready alone
//!   (all KEDA's `rabbitmq` scaler sees over AMQP) drops to 0 while the
//!   workers still hold their prefetch, and scaling in then stops busy
//!   workers (kedacore/keda#638).
//! - **Stabilization**: up to the lowest count recommended over the
//!   scale-up window, down to the highest over the scale-down window (HPA
//!   `stabilizationWindowSeconds`).
//! - **Rate**: at most one change per period, up by at most `up_percent` %
//!   and down by at most `down_percent` % of the count, and at least one
//!   instance (HPA `Percent` policies: 100 % up, 50 % down in `deploy/`).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// HPA's default tolerance: a ratio within 10 % of the target is no change.
const TOLERANCE: f64 = 0.1;

/// The numbers a fleet scales by.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// Fewest instances.
    pub(crate) min: usize,
    /// Most instances (on Kafka the lagging partitions cap it too).
    pub(crate) max: usize,
    /// Messages of backlog each instance is expected to work off.
    pub(crate) per_instance: u64,
    /// Scale up only to the lowest count recommended over this window.
    pub(crate) up_window: Duration,
    /// Scale down only to the highest count recommended over this window.
    pub(crate) down_window: Duration,
    /// At most one change per period.
    pub(crate) period: Duration,
    /// The largest step up, in percent of the count.
    pub(crate) up_percent: u32,
    /// The largest step down, in percent of the count.
    pub(crate) down_percent: u32,
}

/// What the fleet saw in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    /// A Kafka group's lag.
    Lag {
        /// The group's total lag over the watched topics.
        lag: i64,
        /// The partitions of the watched topics.
        partitions: usize,
        /// Those of them with lag.
        lagging: usize,
    },
    /// A RabbitMQ queue.
    Queue {
        /// Messages ready in the queue (a passive `queue.declare`).
        ready: u64,
        /// Messages delivered and not yet acknowledged: the sum of the
        /// instances' `pythia_queue_unacked_messages`.
        unacked: u64,
    },
}

impl Observation {
    /// The messages still to work off: the lag, or ready + unacked.
    pub(crate) fn backlog(&self) -> i64 {
        match *self {
            Self::Lag { lag, .. } => lag.max(0),
            Self::Queue { ready, unacked } => ready.saturating_add(unacked) as i64,
        }
    }

    /// The most instances that can share the work, beside `--max`.
    fn cap(&self) -> usize {
        match *self {
            Self::Lag { lagging, .. } => lagging,
            Self::Queue { .. } => usize::MAX,
        }
    }
}

/// One decision, with the numbers behind it (logged as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Instances running now.
    pub(crate) current: usize,
    /// Instances wanted after this period.
    pub(crate) target: usize,
    /// Why, in numbers.
    pub(crate) reason: Reason,
}

/// Why a decision is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The backlog could not be read: keep the count (as the HPA does).
    Unread,
    /// The count was outside `--min`/`--max`.
    Bounds { min: usize, max: usize },
    /// The backlog asked for `desired`; stabilization and the step rate gave the target.
    Backlog {
        seen: Observation,
        per_instance: u64,
        /// `ceil(backlog / per_instance)`, after tolerance and bounds.
        desired: usize,
        /// After the stabilization windows.
        stabilized: usize,
        /// A change was made less than a period ago.
        waiting: bool,
    },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (current, target) = (self.current, self.target);
        match &self.reason {
            Reason::Unread => write!(f, "hold at {current}: the backlog could not be read"),
            Reason::Bounds { min, max } => {
                write!(f, "{current} -> {target}: outside --min {min} --max {max}")
            }
            Reason::Backlog {
                seen,
                per_instance,
                desired,
                stabilized,
                waiting,
            } => {
                let each = seen.backlog() / current.max(1) as i64;
                match seen {
                    Observation::Lag {
                        lag,
                        partitions,
                        lagging,
                    } => write!(
                        f,
                        "{current} -> {target}: lag {lag} over {current} instance(s) = {each} per instance (target {per_instance}), desired {desired} ({lagging} of {partitions} partitions lagging), stabilized {stabilized}",
                    )?,
                    Observation::Queue { ready, unacked } => write!(
                        f,
                        "{current} -> {target}: backlog {} (ready {ready} + unacked {unacked}) over {current} instance(s) = {each} per instance (target {per_instance}), desired {desired}, stabilized {stabilized}",
                        seen.backlog(),
                    )?,
                }
                if *waiting {
                    write!(f, ", waiting: one change per period")?;
                }
                Ok(())
            }
        }
    }
}

/// The policy and what it remembers: recent recommendations and the last change.
#[derive(Debug)]
pub(crate) struct Scaler {
    policy: Policy,
    /// (time, desired count) of recent periods, oldest first.
    recommendations: VecDeque<(Duration, usize)>,
    last_change: Option<Duration>,
}

impl Scaler {
    pub(crate) fn new(policy: Policy) -> Self {
        Self {
            policy,
            recommendations: VecDeque::new(),
            last_change: None,
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decides at time `now` (from any fixed origin) with `current` instances.
    pub(crate) fn decide(
        &mut self,
        now: Duration,
        current: usize,
        seen: Option<Observation>,
    ) -> Decision {
        let p = &self.policy;
        let bounded = current.clamp(p.min, p.max);
        if bounded != current {
            self.last_change = Some(now);
            return Decision {
                current,
                target: bounded,
                reason: Reason::Bounds {
                    min: p.min,
                    max: p.max,
                },
            };
        }
        let Some(seen) = seen else {
            return Decision {
                current,
                target: current,
                reason: Reason::Unread,
            };
        };
        let desired = desired(p, current, seen);
        self.recommendations.push_back((now, desired));
        let keep = p.up_window.max(p.down_window);
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.saturating_sub(at) > keep {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        let within = |window: Duration| {
            self.recommendations
                .iter()
                .filter(move |(at, _)| now.saturating_sub(*at) <= window)
                .map(|&(_, n)| n)
        };
        let up = within(p.up_window).min().unwrap_or(desired);
        let down = within(p.down_window).max().unwrap_or(desired);
        let mut stabilized = current;
        if stabilized < up {
            stabilized = up;
        }
        if stabilized > down {
            stabilized = down;
        }
        let waiting = stabilized != current
            && self
                .last_change
                // A tenth of slack: the period's ticks may come a hair early.
                .is_some_and(|at| now.saturating_sub(at) + p.period / 10 < p.period);
        let target = if waiting {
            current
        } else if stabilized > current {
            stabilized.min(up_limit(current, p.up_percent))
        } else {
            stabilized.max(down_limit(current, p.down_percent))
        };
        if target != current {
            self.last_change = Some(now);
        }
        Decision {
            current,
            target,
            reason: Reason::Backlog {
                seen,
                per_instance: p.per_instance,
                desired,
                stabilized,
                waiting,
            },
        }
    }
}

/// `ceil(backlog / per_instance)`, the current count within tolerance,
/// bounded by `min`, `max` and the lagging partitions on Kafka (never below
/// `min`).
fn desired(p: &Policy, current: usize, seen: Observation) -> usize {
    let per = p.per_instance.max(1) as f64;
    let backlog = seen.backlog() as f64;
    let ratio = backlog / (per * current.max(1) as f64);
    let raw = if current > 0 && (ratio - 1.0).abs() <= TOLERANCE {
        current
    } else {
        (backlog / per).ceil() as usize
    };
    raw.min(p.max).min(seen.cap()).max(p.min)
}

/// The most instances one step up reaches: `current` grown by `percent` %,
/// rounded up as the HPA does, and at least one more.
fn up_limit(current: usize, percent: u32) -> usize {
    (current * (100 + percent as usize))
        .div_ceil(100)
        .max(current + 1)
}

/// The fewest instances one step down reaches: `current` shrunk by
/// `percent` %, rounded up as the HPA does (3 at 50 % is 2), and at least
/// one fewer.
fn down_limit(current: usize, percent: u32) -> usize {
    let kept = 100usize.saturating_sub(percent as usize);
    (current * kept)
        .div_ceil(100)
        .min(current.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        // The manifests' behaviour, with windows of seconds instead of minutes.
        Policy {
            min: 1,
            max: 4,
            per_instance: 1000,
            up_window: Duration::ZERO,
            down_window: Duration::from_secs(3),
            period: Duration::from_secs(1),
            up_percent: 100,
            down_percent: 50,
        }
    }

    /// Runs a series of (second, lag) observations on 8 partitions from
    /// `start` instances; returns the count after each.
    fn run(policy: Policy, start: usize, series: &[(u64, Option<i64>)]) -> Vec<usize> {
        let mut scaler = Scaler::new(policy);
        let mut current = start;
        series
            .iter()
            .map(|&(second, lag)| {
                // Lag spread over all 8 partitions.
                let seen = lag.map(|lag| Observation::Lag {
                    lag,
                    partitions: 8,
                    lagging: if lag > 0 { 8 } else { 0 },
                });
                let decision = scaler.decide(Duration::from_secs(second), current, seen);
                assert!(!decision.to_string().is_empty());
                current = decision.target;
                current
            })
            .collect()
    }

    #[test]
    fn lag_series_to_counts() {
        // (name, policy, instances at the start, (second, lag) series, counts after each)
        type Case<'a> = (
            &'a str,
            Policy,
            usize,
            &'a [(u64, Option<i64>)],
            &'a [usize],
        );
        let cases: &[Case<'_>] = &[
            (
                "a burst doubles each period up to max, then waits the down window and halves",
                policy(),
                1,
                &[
                    (0, Some(9000)),
                    (1, Some(9000)),
                    (2, Some(5000)),
                    (3, Some(0)),
                    (4, Some(0)),
                    (5, Some(0)),
                    (6, Some(0)),
                    (7, Some(0)),
                    (8, Some(0)),
                ],
                // 4 is recommended up to second 2, so the down window
                // (3 s) keeps 4 through second 5.
                &[2, 4, 4, 4, 4, 4, 2, 1, 1],
            ),
            (
                "one change per period: a second burst inside the period waits",
                Policy {
                    period: Duration::from_secs(2),
                    ..policy()
                },
                1,
                &[(0, Some(4000)), (1, Some(4000)), (2, Some(4000))],
                &[2, 2, 4],
            ),
            (
                "within 10 % of the target per instance nothing moves",
                policy(),
                2,
                &[(0, Some(2150)), (1, Some(1850)), (2, Some(2199))],
                &[2, 2, 2],
            ),
            (
                "the partition count caps the count, whatever max says",
                Policy {
                    max: 20,
                    ..policy()
                },
                4,
                &[(0, Some(100_000)), (1, Some(100_000))],
                &[8, 8],
            ),
            (
                "an unreadable lag holds the count, as the HPA does",
                policy(),
                3,
                &[(0, None), (10, None)],
                &[3, 3],
            ),
            (
                "a count outside the bounds is brought into them at once",
                Policy { min: 2, ..policy() },
                1,
                &[(0, None)],
                &[2],
            ),
            (
                "no lag and no window: straight down to min in halving steps",
                Policy {
                    down_window: Duration::ZERO,
                    max: 8,
                    ..policy()
                },
                8,
                &[(0, Some(0)), (1, Some(0)), (2, Some(0)), (3, Some(0))],
                &[4, 2, 1, 1],
            ),
            (
                "a dip between bursts inside the down window removes nothing",
                policy(),
                4,
                &[(0, Some(4000)), (1, Some(0)), (2, Some(0)), (3, Some(4000))],
                &[4, 4, 4, 4],
            ),
            (
                "an up window holds a scale-up until the dip in it has passed",
                Policy {
                    up_window: Duration::from_secs(2),
                    ..policy()
                },
                1,
                &[
                    (0, Some(3000)),
                    (1, Some(500)),
                    (2, Some(3000)),
                    (3, Some(3000)),
                    (4, Some(3000)),
                ],
                // The dip at 1 asks for 1: until it leaves the window (at
                // 4) the lowest recommendation keeps the count where it is.
                &[2, 2, 2, 2, 3],
            ),
        ];
        for (name, policy, start, series, expected) in cases {
            assert_eq!(run(policy.clone(), *start, series), *expected, "{name}");
        }
    }

    #[test]
    fn queue_backlog_series_to_counts() {
        // (name, policy, instances at the start, (second, ready, unacked) series, counts after each)
        type Case<'a> = (&'a str, Policy, usize, &'a [(u64, u64, u64)], &'a [usize]);
        let cases: &[Case<'_>] = &[
            (
                "busy instances are not scaled in while ready is 0: unacked is backlog",
                policy(),
                3,
                // Ready alone (KEDA's AMQP mode) would say 0 and go to 1.
                &[(0, 0, 3000), (1, 0, 2900), (5, 0, 3100), (10, 0, 3000)],
                &[3, 3, 3, 3],
            ),
            (
                "a queue has no partitions to cap the count: only max does",
                Policy {
                    max: 20,
                    ..policy()
                },
                4,
                &[(0, 100_000, 40), (1, 100_000, 80), (2, 100_000, 160)],
                &[8, 16, 20],
            ),
            (
                "a burst: up to max, drained, down in halving steps after the window",
                policy(),
                1,
                &[
                    (0, 9000, 10),
                    (1, 6000, 20),
                    (2, 1500, 40),
                    (3, 0, 0),
                    (6, 0, 0),
                    (7, 0, 0),
                    (8, 0, 0),
                ],
                &[2, 4, 4, 4, 2, 1, 1],
            ),
            (
                "the last messages in progress keep one instance per threshold",
                Policy {
                    down_window: Duration::ZERO,
                    ..policy()
                },
                4,
                &[(0, 0, 1500), (1, 0, 1500), (2, 0, 900)],
                &[2, 2, 1],
            ),
        ];
        for (name, policy, start, series, expected) in cases {
            let mut scaler = Scaler::new(policy.clone());
            let mut current = *start;
            let counts: Vec<usize> = series
                .iter()
                .map(|&(second, ready, unacked)| {
                    let seen = Observation::Queue { ready, unacked };
                    let decision = scaler.decide(Duration::from_secs(second), current, Some(seen));
                    current = decision.target;
                    current
                })
                .collect();
            assert_eq!(counts, *expected, "{name}");
        }
    }

    #[test]
    fn queue_decisions_say_ready_and_unacked() {
        let mut scaler = Scaler::new(policy());
        let seen = Observation::Queue {
            ready: 2500,
            unacked: 500,
        };
        let decision = scaler.decide(Duration::ZERO, 1, Some(seen));
        assert_eq!(decision.target, 2);
        let text = decision.to_string();
        for part in [
            "1 -> 2",
            "backlog 3000 (ready 2500 + unacked 500)",
            "3000 per instance",
            "target 1000",
            "desired 3",
        ] {
            assert!(text.contains(part), "`{part}` in {text}");
        }
        assert!(!text.contains("partitions"), "{text}");
    }

    #[test]
    fn a_backlog_on_one_hot_partition_gets_one_instance() {
        let mut scaler = Scaler::new(policy());
        let seen = Some(Observation::Lag {
            lag: 50_000,
            partitions: 8,
            lagging: 1,
        });
        let decision = scaler.decide(Duration::ZERO, 1, seen);
        assert_eq!(decision.target, 1, "{decision}");
        let decision = scaler.decide(Duration::from_secs(5), 3, seen);
        assert_eq!(decision.target, 2, "down by half, rounded up: {decision}");
    }

    #[test]
    fn decisions_say_the_numbers_that_caused_them() {
        let mut scaler = Scaler::new(policy());
        let seen = Some(Observation::Lag {
            lag: 9000,
            partitions: 4,
            lagging: 4,
        });
        let decision = scaler.decide(Duration::ZERO, 1, seen);
        assert_eq!(decision.target, 2);
        let text = decision.to_string();
        for part in [
            "1 -> 2",
            "lag 9000",
            "9000 per instance",
            "target 1000",
            "desired 4",
            "4 of 4 partitions lagging",
        ] {
            assert!(text.contains(part), "`{part}` in {text}");
        }
    }
}
