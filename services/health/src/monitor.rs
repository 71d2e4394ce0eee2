//! From heartbeats to a state per instance.
//!
//! - **stopped**: its last heartbeat said it was shutting down on purpose.
//! - **unresponsive**: no heartbeat for `dead_after` (observer's clock) *and* no answer to a
//!   ping. A late heartbeat alone is not enough: the caller pings the instances
//!   [`Monitor::overdue`] names and reports the answer with [`Monitor::ping_result`].
//! - **over budget**: resident memory above its budget in `over_budget_heartbeats` heartbeats
//!   in a row (one spike is not enough).
//! - **stalled**: heartbeats arrive, but a running job that reports progress (training) has
//!   finished no batch for `worker_timeout`. Measured on the worker's own clock (heartbeat
//!   time minus last progress), so clock skew between hosts does not matter; found at the
//!   first heartbeat after the timeout.
//! - **healthy**: none of these.
//! - **replaced**: the caller replaced it ([`Monitor::mark_replaced`]); it stays so until a
//!   heartbeat from a new process (another pid) arrives.
//!
//! Pure: time comes in as an argument (ms since the Unix epoch), nothing is published here.

use std::collections::BTreeMap;
use std::time::Duration;

use lexmesh_protocol::health::{HealthState, InstanceHealth};
use lexmesh_protocol::heartbeat::Heartbeat;
use lexmesh_protocol::status::RunningJob;

use crate::replace::Target;

/// When an instance counts as what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// No heartbeat for this long makes an instance a suspect (then pinged).
    pub dead_after: Duration,
    /// A training job without progress for this long makes its instance stalled.
    pub worker_timeout: Duration,
    /// Heartbeats in a row above the memory budget that make an instance over budget.
    pub over_budget_heartbeats: u32,
    /// Instances not heard of for this long (and not healthy) are dropped.
    pub forget_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            dead_after: Duration::from_secs(3),
            worker_timeout: Duration::from_secs(30),
            over_budget_heartbeats: 5,
            forget_after: Duration::from_secs(600),
        }
    }
}

/// A change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub instance: String,
    /// The state before (None for an instance heard of for the first time).
    pub from: Option<HealthState>,
    /// The new state.
    pub to: HealthState,
    /// Why, in words.
    pub reason: String,
    /// Jobs its last heartbeat listed.
    pub jobs: Vec<RunningJob>,
    /// Jobs a previous process of this instance was running when it died: a supervisor
    /// restarted the instance (same id, another pid) before anyone replaced it. Those
    /// deliveries are orphans to hand back.
    pub orphaned: Vec<RunningJob>,
    /// Where it runs, for a replacer.
    pub target: Target,
}

#[derive(Debug, Clone)]
struct Tracked {
    heartbeat: Heartbeat,
    received_ms: f64,
    state: HealthState,
    reason: String,
    since_ms: f64,
    over_budget_streak: u32,
    pinging: bool,
    replacements: u32,
}

impl Tracked {
    fn target(&self) -> Target {
        target_of(&self.heartbeat)
    }
}

fn target_of(h: &Heartbeat) -> Target {
    Target {
        service: h.service.clone(),
        instance: h.instance.clone(),
        host: h.host.clone(),
        pid: h.pid,
        namespace: h.namespace.clone(),
    }
}

/// The health of every instance heard of.
#[derive(Debug, Clone, Default)]
pub struct Monitor {
    thresholds: Thresholds,
    instances: BTreeMap<String, Tracked>,
}

impl Monitor {
    /// Nothing heard of yet.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            instances: BTreeMap::new(),
        }
    }

    /// The thresholds.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// Takes a heartbeat received at `now_ms`; returns the change it causes, if any.
    pub fn observe(&mut self, heartbeat: Heartbeat, now_ms: f64) -> Option<Transition> {
        let over_budget = heartbeat.memory_budget_bytes > 0
            && heartbeat.rss_bytes > heartbeat.memory_budget_bytes;
        let Some(tracked) = self.instances.get_mut(&heartbeat.instance) else {
            let (state, reason) = if heartbeat.stopping {
                (HealthState::Stopped, "shutting down".to_string())
            } else {
                (HealthState::Healthy, "first heartbeat".to_string())
            };
            let tracked = Tracked {
                heartbeat,
                received_ms: now_ms,
                state,
                reason: reason.clone(),
                since_ms: now_ms,
                over_budget_streak: u32::from(over_budget),
                pinging: false,
                replacements: 0,
            };
            let transition = Transition {
                service: tracked.heartbeat.service.clone(),
                instance: tracked.heartbeat.instance.clone(),
                from: None,
                to: state,
                reason,
                jobs: tracked.heartbeat.running.clone(),
                orphaned: Vec::new(),
                target: tracked.target(),
            };
            self.instances
                .insert(tracked.heartbeat.instance.clone(), tracked);
            return Some(transition);
        };
        let new_process = heartbeat.pid != tracked.heartbeat.pid;
        if tracked.state == HealthState::Replaced && !new_process {
            // A heartbeat the replaced process sent before it died, arriving late.
            return None;
        }
        let orphaned = if new_process && tracked.state != HealthState::Replaced {
            std::mem::take(&mut tracked.heartbeat.running)
        } else {
            Vec::new()
        };
        if new_process {
            tracked.over_budget_streak = 0;
        }
        tracked.over_budget_streak = if over_budget {
            tracked.over_budget_streak + 1
        } else {
            0
        };
        tracked.heartbeat = heartbeat;
        tracked.received_ms = now_ms;
        tracked.pinging = false;
        let (state, reason) = assess(tracked, &self.thresholds, new_process);
        if new_process {
            // Always reported: a restart is news even when the state stays `healthy`.
            return Some(enter(tracked, state, reason, now_ms, orphaned));
        }
        change(tracked, state, reason, now_ms)
    }

    /// Instances whose heartbeat is overdue and that are not being pinged yet: ping each and
    /// report the answer with [`Monitor::ping_result`]. Marks them as being pinged.
    pub fn overdue(&mut self, now_ms: f64) -> Vec<Target> {
        let limit = self.thresholds.dead_after.as_secs_f64() * 1000.0;
        self.instances
            .values_mut()
            .filter(|t| is_live(t.state) && !t.pinging && now_ms - t.received_ms > limit)
            .map(|t| {
                t.pinging = true;
                t.target()
            })
            .collect()
    }

    /// The answer (or not) to the ping of an overdue instance.
    pub fn ping_result(
        &mut self,
        instance: &str,
        answered: bool,
        now_ms: f64,
    ) -> Option<Transition> {
        let limit = self.thresholds.dead_after.as_secs_f64() * 1000.0;
        let tracked = self.instances.get_mut(instance)?;
        if !tracked.pinging {
            return None;
        }
        tracked.pinging = false;
        if !is_live(tracked.state) {
            return None;
        }
        if answered {
            // Heartbeats late (a busy host, a slow network), but it answers: alive.
            tracked.received_ms = now_ms;
            return None;
        }
        let silent_s = (now_ms - tracked.received_ms) / 1000.0;
        if now_ms - tracked.received_ms <= limit {
            return None;
        }
        change(
            tracked,
            HealthState::Unresponsive,
            format!("no heartbeat for {silent_s:.1}s and no answer to a ping"),
            now_ms,
        )
    }

    /// Notes that `instance` was replaced.
    pub fn mark_replaced(&mut self, instance: &str, how: &str, now_ms: f64) -> Option<Transition> {
        let tracked = self.instances.get_mut(instance)?;
        tracked.replacements += 1;
        tracked.heartbeat.running.clear();
        change(tracked, HealthState::Replaced, how.to_string(), now_ms)
    }

    /// Drops instances that are gone (stopped, replaced, unresponsive) and were not heard of
    /// for `forget_after`; returns their ids.
    pub fn forget_gone(&mut self, now_ms: f64) -> Vec<String> {
        let limit = self.thresholds.forget_after.as_secs_f64() * 1000.0;
        let gone: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, t)| !is_live(t.state) || t.state == HealthState::Unresponsive)
            .filter(|(_, t)| now_ms - t.received_ms > limit)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.instances.remove(id);
        }
        gone
    }

    /// The state of one instance.
    pub fn state(&self, instance: &str) -> Option<HealthState> {
        self.instances.get(instance).map(|t| t.state)
    }

    /// Where an instance runs.
    pub fn target(&self, instance: &str) -> Option<Target> {
        self.instances.get(instance).map(Tracked::target)
    }

    /// Jobs an instance's last heartbeat listed.
    pub fn jobs(&self, instance: &str) -> Vec<RunningJob> {
        self.instances
            .get(instance)
            .map(|t| t.heartbeat.running.clone())
            .unwrap_or_default()
    }

    /// Every instance, by service then instance id.
    pub fn report(&self, now_ms: f64) -> Vec<InstanceHealth> {
        let mut all: Vec<InstanceHealth> = self
            .instances
            .values()
            .map(|t| InstanceHealth {
                service: t.heartbeat.service.clone(),
                instance: t.heartbeat.instance.clone(),
                host: t.heartbeat.host.clone(),
                pid: t.heartbeat.pid,
                state: t.state,
                reason: t.reason.clone(),
                since_ms: t.since_ms,
                heartbeat_age_s: ((now_ms - t.received_ms) / 1000.0).max(0.0),
                rss_bytes: t.heartbeat.rss_bytes,
                memory_budget_bytes: t.heartbeat.memory_budget_bytes,
                running: t.heartbeat.running.clone(),
                replacements: t.replacements,
            })
            .collect();
        all.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
        all
    }
}

/// States in which an instance is expected to send heartbeats.
fn is_live(state: HealthState) -> bool {
    matches!(
        state,
        HealthState::Healthy | HealthState::Stalled | HealthState::OverBudget
    )
}

fn assess(t: &Tracked, thresholds: &Thresholds, new_process: bool) -> (HealthState, String) {
    let h = &t.heartbeat;
    if h.stopping {
        return (HealthState::Stopped, "shutting down".into());
    }
    if t.over_budget_streak >= thresholds.over_budget_heartbeats.max(1) {
        return (
            HealthState::OverBudget,
            format!(
                "resident memory {} MiB above its budget of {} MiB in {} heartbeats in a row",
                h.rss_bytes >> 20,
                h.memory_budget_bytes >> 20,
                t.over_budget_streak
            ),
        );
    }
    let timeout_ms = thresholds.worker_timeout.as_secs_f64() * 1000.0;
    if let Some(job) = h
        .running
        .iter()
        .filter(|j| j.epoch.is_some())
        .find(|j| h.timestamp_ms - j.last_progress_ms > timeout_ms)
    {
        return (
            HealthState::Stalled,
            format!(
                "job {} made no progress for {:.1}s",
                job.job_id,
                (h.timestamp_ms - job.last_progress_ms) / 1000.0
            ),
        );
    }
    let reason = match t.state {
        _ if new_process => format!("running again (pid {})", h.pid),
        HealthState::Unresponsive => "answering again".into(),
        HealthState::Stopped => "running again".into(),
        _ => "heartbeats on time, jobs progressing".into(),
    };
    (HealthState::Healthy, reason)
}

fn change(
    tracked: &mut Tracked,
    state: HealthState,
    reason: String,
    now_ms: f64,
) -> Option<Transition> {
    if tracked.state == state {
        return None;
    }
    Some(enter(tracked, state, reason, now_ms, Vec::new()))
}

/// Puts `tracked` in `state` and describes the step.
fn enter(
    tracked: &mut Tracked,
    state: HealthState,
    reason: String,
    now_ms: f64,
    orphaned: Vec<RunningJob>,
) -> Transition {
    let from = tracked.state;
    tracked.state = state;
    tracked.reason = reason.clone();
    tracked.since_ms = now_ms;
    Transition {
        service: tracked.heartbeat.service.clone(),
        instance: tracked.heartbeat.instance.clone(),
        from: Some(from),
        to: state,
        reason,
        jobs: tracked.heartbeat.running.clone(),
        orphaned,
        target: tracked.target(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lexmesh_protocol::JobKind;

    const S: f64 = 1000.0;

    fn beat(instance: &str, pid: u32, at_s: f64) -> Heartbeat {
        Heartbeat {
            service: "trainer".into(),
            instance: instance.into(),
            protocol_version: 1,
            pid,
            host: "here".into(),
            namespace: None,
            service_id: "abc".into(),
            stopping: false,
            running: Vec::new(),
            rss_bytes: 100 << 20,
            memory_budget_bytes: 512 << 20,
            interval_s: 1.0,
            timestamp_ms: at_s * S,
        }
    }

    fn training(job: &str, last_progress_s: f64) -> RunningJob {
        RunningJob {
            job_id: job.into(),
            kind: JobKind::Train,
            attempt: 1,
            started_ms: 0.0,
            last_progress_ms: last_progress_s * S,
            epoch: Some(1),
            total_epochs: Some(10),
            completion_percentage: Some(5.0),
            ack_subject: Some("$JS.ACK.x".into()),
        }
    }

    fn to(t: Option<Transition>) -> Option<HealthState> {
        t.map(|t| t.to)
    }

    #[test]
    fn a_new_instance_is_healthy_and_stays_so() {
        let mut m = Monitor::new(Thresholds::default());
        assert_eq!(
            to(m.observe(beat("t1", 10, 0.0), 0.0)),
            Some(HealthState::Healthy)
        );
        for i in 1..10 {
            assert_eq!(
                m.observe(beat("t1", 10, f64::from(i)), f64::from(i) * S),
                None
            );
            assert!(m.overdue(f64::from(i) * S + 500.0).is_empty());
        }
    }

    #[test]
    fn silence_makes_a_suspect_and_an_unanswered_ping_makes_it_unresponsive() {
        let mut m = Monitor::new(Thresholds::default());
        m.observe(beat("t1", 10, 0.0), 0.0);
        assert!(m.overdue(2.9 * S).is_empty());
        let suspects = m.overdue(3.1 * S);
        assert_eq!(suspects.len(), 1);
        assert_eq!(suspects[0].pid, 10);
        // Not pinged twice while a ping is out.
        assert!(m.overdue(3.2 * S).is_empty());
        let t = m.ping_result("t1", false, 3.6 * S).unwrap();
        assert_eq!(t.to, HealthState::Unresponsive);
        assert!(t.reason.contains("no answer to a ping"), "{}", t.reason);
        // Unresponsive instances are not pinged again.
        assert!(m.overdue(10.0 * S).is_empty());
    }

    #[test]
    fn late_heartbeats_with_an_answered_ping_are_not_death() {
        let mut m = Monitor::new(Thresholds::default());
        m.observe(beat("t1", 10, 0.0), 0.0);
        assert_eq!(m.overdue(3.5 * S).len(), 1);
        assert_eq!(m.ping_result("t1", true, 3.6 * S), None);
        assert_eq!(m.state("t1"), Some(HealthState::Healthy));
        assert!(m.overdue(4.0 * S).is_empty());
    }

    #[test]
    fn an_unresponsive_instance_that_speaks_again_is_healthy() {
        let mut m = Monitor::new(Thresholds::default());
        m.observe(beat("t1", 10, 0.0), 0.0);
        m.overdue(4.0 * S);
        m.ping_result("t1", false, 4.5 * S);
        let t = m.observe(beat("t1", 10, 9.0), 9.0 * S).unwrap();
        assert_eq!(
            (t.from, t.to),
            (Some(HealthState::Unresponsive), HealthState::Healthy)
        );
    }

    #[test]
    fn a_job_without_progress_for_the_timeout_stalls_its_instance() {
        let mut m = Monitor::new(Thresholds::default());
        let mut b = beat("t1", 10, 10.0);
        b.running = vec![training("j1", 9.0)];
        m.observe(b.clone(), 10.0 * S);
        // 30 s without a batch: not yet (strictly more is needed).
        b.timestamp_ms = 39.0 * S;
        assert_eq!(m.observe(b.clone(), 39.0 * S), None);
        b.timestamp_ms = 39.5 * S;
        let t = m.observe(b.clone(), 39.5 * S).unwrap();
        assert_eq!(t.to, HealthState::Stalled);
        assert!(t.reason.contains("j1"), "{}", t.reason);
        assert_eq!(t.jobs.len(), 1);
        // Progress again: healthy.
        b.running = vec![training("j1", 40.0)];
        b.timestamp_ms = 40.5 * S;
        assert_eq!(to(m.observe(b, 40.5 * S)), Some(HealthState::Healthy));
    }

    #[test]
    fn jobs_that_report_no_progress_never_stall() {
        let mut m = Monitor::new(Thresholds::default());
        let mut b = beat("e1", 10, 100.0);
        let mut job = training("j1", 0.0);
        job.epoch = None;
        b.running = vec![job];
        m.observe(b, 100.0 * S);
        assert_eq!(m.state("e1"), Some(HealthState::Healthy));
    }

    #[test]
    fn memory_over_budget_counts_only_when_it_lasts() {
        let mut m = Monitor::new(Thresholds::default());
        let mut b = beat("t1", 10, 0.0);
        b.rss_bytes = 600 << 20;
        for i in 0..4 {
            b.timestamp_ms = f64::from(i) * S;
            let t = m.observe(b.clone(), f64::from(i) * S);
            assert!(t.is_none() || i == 0, "{t:?}");
        }
        // A dip resets the count.
        b.rss_bytes = 100 << 20;
        assert_eq!(m.observe(b.clone(), 4.0 * S), None);
        b.rss_bytes = 600 << 20;
        for i in 5..9 {
            assert_eq!(m.observe(b.clone(), f64::from(i) * S), None);
        }
        let t = m.observe(b.clone(), 9.0 * S).unwrap();
        assert_eq!(t.to, HealthState::OverBudget);
        assert!(t.reason.contains("600 MiB"), "{}", t.reason);
    }

    #[test]
    fn goodbye_is_stopped_not_dead() {
        let mut m = Monitor::new(Thresholds::default());
        m.observe(beat("t1", 10, 0.0), 0.0);
        let mut last = beat("t1", 10, 1.0);
        last.stopping = true;
        assert_eq!(to(m.observe(last, 1.0 * S)), Some(HealthState::Stopped));
        assert!(m.overdue(60.0 * S).is_empty());
    }

    #[test]
    fn a_replaced_instance_is_healthy_again_only_as_a_new_process() {
        let mut m = Monitor::new(Thresholds::default());
        m.observe(beat("t1", 10, 0.0), 0.0);
        m.overdue(4.0 * S);
        m.ping_result("t1", false, 4.5 * S);
        let t = m.mark_replaced("t1", "killed pid 10", 4.6 * S).unwrap();
        assert_eq!(t.to, HealthState::Replaced);
        // A late heartbeat of the old process changes nothing.
        assert_eq!(m.observe(beat("t1", 10, 3.0), 4.7 * S), None);
        let t = m.observe(beat("t1", 11, 6.0), 6.0 * S).unwrap();
        assert_eq!(t.to, HealthState::Healthy);
        assert!(t.reason.contains("pid 11"), "{}", t.reason);
        assert_eq!(m.report(6.0 * S)[0].replacements, 1);
    }

    #[test]
    fn a_restart_before_anyone_noticed_leaves_orphaned_jobs() {
        let mut m = Monitor::new(Thresholds::default());
        let mut b = beat("t1", 10, 0.0);
        b.running = vec![training("j1", 0.0)];
        m.observe(b, 0.0);
        // The supervisor restarted it within a second: never overdue.
        let t = m.observe(beat("t1", 11, 1.5), 1.5 * S).unwrap();
        assert_eq!(
            (t.from, t.to),
            (Some(HealthState::Healthy), HealthState::Healthy)
        );
        assert_eq!(t.orphaned.len(), 1);
        assert_eq!(t.orphaned[0].job_id, "j1");
        assert!(t.jobs.is_empty());
        // The next heartbeat of the new process is no news.
        assert_eq!(m.observe(beat("t1", 11, 2.5), 2.5 * S), None);
    }

    #[test]
    fn gone_instances_are_forgotten_and_the_report_is_sorted() {
        let mut m = Monitor::new(Thresholds::default());
        m.observe(beat("t2", 10, 0.0), 0.0);
        let mut e = beat("e1", 11, 0.0);
        e.service = "evaluator".into();
        m.observe(e, 0.0);
        let names: Vec<_> = m.report(0.0).into_iter().map(|i| i.instance).collect();
        assert_eq!(names, ["e1", "t2"]);
        m.overdue(5.0 * S);
        m.ping_result("t2", false, 5.0 * S);
        assert!(m.forget_gone(100.0 * S).is_empty());
        assert_eq!(m.forget_gone(700.0 * S), vec!["t2".to_string()]);
    }
}
