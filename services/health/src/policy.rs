//! When to restart or replace an instance again: the old system's recovery strategy
//! (a first delay, growing by a factor up to a maximum) plus a limit of restarts within a
//! window, after which the instance is given up on so that a crash loop does not spin.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The recovery strategy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub first_delay: Duration,
    /// Growth of the delay from one restart to the next (at least 1).
    pub factor: f64,
    /// Longest delay.
    pub max_delay: Duration,
    /// Restarts within `window` after which the instance is given up on.
    pub max_restarts: u32,
    /// The window of `max_restarts`; an instance that ran this long without a restart starts
    /// over at the first delay.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// What to do about an instance that needs a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart it now; the next restart comes no sooner than `next_after`.
    Now {
        /// The delay the next restart will have to wait.
        next_after: Duration,
    },
    /// Too soon after the last restart: wait this long.
    Wait(Duration),
    /// It restarted `max_restarts` times within the window: give up on it.
    GiveUp,
}

/// The restart history of one instance (or one supervised slot).
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    restarts: VecDeque<Instant>,
    delay: Duration,
    not_before: Option<Instant>,
}

impl RestartTracker {
    /// No restarts yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            restarts: VecDeque::new(),
            delay: policy.first_delay,
            not_before: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Restarts within the window before `now`.
    pub fn recent(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.restarts.len()
    }

    fn prune(&mut self, now: Instant) {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.policy.window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.is_empty() {
            // Quiet for a whole window: start over at the first delay.
            self.delay = self.policy.first_delay;
        }
    }

    fn grow(&mut self) -> Duration {
        let delay = self.delay;
        let next = self.delay.as_secs_f64() * self.policy.factor.max(1.0);
        self.delay = Duration::from_secs_f64(next.min(self.policy.max_delay.as_secs_f64()));
        delay
    }

    /// For a supervisor whose process exited at `now`: the delay to wait before starting it
    /// again, or None to give up. 1 s, 2 s, 4 s, ... with the default policy.
    pub fn delay_before_restart(&mut self, now: Instant) -> Option<Duration> {
        self.prune(now);
        if self.restarts.len() >= self.policy.max_restarts as usize {
            return None;
        }
        self.restarts.push_back(now);
        Some(self.grow())
    }

    /// For a replacer that found the instance unhealthy at `now`: replace at once unless the
    /// last replacement was too recent, or give up after too many.
    pub fn request(&mut self, now: Instant) -> Decision {
        self.prune(now);
        if self.restarts.len() >= self.policy.max_restarts as usize {
            return Decision::GiveUp;
        }
        if let Some(not_before) = self.not_before
            && now < not_before
        {
            return Decision::Wait(not_before - now);
        }
        self.restarts.push_back(now);
        let next_after = self.grow();
        self.not_before = Some(now + next_after);
        Decision::Now { next_after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delays_grow_then_the_supervisor_gives_up() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        let start = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|i| t.delay_before_restart(start + secs(i)).map(|d| d.as_secs()))
            .collect();
        assert_eq!(delays, [Some(1), Some(2), Some(4), Some(8), Some(16)]);
        assert_eq!(t.delay_before_restart(start + secs(10)), None);
        // A minute after the first, one more is allowed.
        assert!(t.delay_before_restart(start + secs(60)).is_some());
    }

    #[test]
    fn delays_are_capped() {
        let policy = RestartPolicy {
            max_restarts: 100,
            ..RestartPolicy::default()
        };
        let mut t = RestartTracker::new(policy);
        let start = Instant::now();
        let last = (0..8)
            .filter_map(|i| t.delay_before_restart(start + secs(i)))
            .last();
        assert_eq!(last, Some(secs(30)));
    }

    #[test]
    fn a_quiet_window_starts_over() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        let start = Instant::now();
        t.delay_before_restart(start);
        t.delay_before_restart(start + secs(1));
        assert_eq!(t.delay_before_restart(start + secs(200)), Some(secs(1)));
    }

    #[test]
    fn replacements_are_spaced_and_limited() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        let start = Instant::now();
        assert_eq!(
            t.request(start),
            Decision::Now {
                next_after: secs(1)
            }
        );
        assert_eq!(
            t.request(start + Duration::from_millis(500)),
            Decision::Wait(Duration::from_millis(500))
        );
        assert_eq!(
            t.request(start + secs(1)),
            Decision::Now {
                next_after: secs(2)
            }
        );
        assert_eq!(
            t.request(start + secs(3)),
            Decision::Now {
                next_after: secs(4)
            }
        );
        assert_eq!(
            t.request(start + secs(7)),
            Decision::Now {
                next_after: secs(8)
            }
        );
        assert_eq!(
            t.request(start + secs(15)),
            Decision::Now {
                next_after: secs(16)
            }
        );
        assert_eq!(t.request(start + secs(40)), Decision::GiveUp);
    }
}
