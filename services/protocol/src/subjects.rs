//! Every subject lexmesh publishes or listens on. Job and model ids must pass
//! [`crate::valid_id`] before they are put into a subject.

use crate::job::JobKind;

/// Root of all lexmesh subjects.
pub const ROOT: &str = "lexmesh";

/// Where jobs of `kind` are submitted: `lexmesh.jobs.<kind>` (stream `LEXMESH_JOBS`).
pub fn jobs(kind: JobKind) -> String {
    format!("lexmesh.jobs.{}", kind.name())
}

/// Every job subject: `lexmesh.jobs.*` (the subjects of the jobs stream).
pub const ALL_JOBS: &str = "lexmesh.jobs.*";

/// An event of a job: `lexmesh.events.<job>.<event>` (stream `LEXMESH_EVENTS`).
pub fn event(job_id: &str, event: crate::EventKind) -> String {
    format!("lexmesh.events.{job_id}.{}", event.name())
}

/// Every event of one job: `lexmesh.events.<job>.>`.
pub fn events_of(job_id: &str) -> String {
    format!("lexmesh.events.{job_id}.>")
}

/// Every event: `lexmesh.events.>` (the subjects of the events stream).
pub const ALL_EVENTS: &str = "lexmesh.events.>";

/// Cancels a job: `lexmesh.control.<job>.cancel` (request/reply or plain publish).
pub fn cancel(job_id: &str) -> String {
    format!("lexmesh.control.{job_id}.cancel")
}

/// Every cancel message: `lexmesh.control.*.cancel`.
pub const ALL_CANCELS: &str = "lexmesh.control.*.cancel";

/// Heartbeats of an instance: `lexmesh.heartbeat.<service>.<instance>`.
pub fn heartbeat(service: &str, instance: &str) -> String {
    format!("lexmesh.heartbeat.{service}.{instance}")
}

/// Every heartbeat: `lexmesh.heartbeat.>`.
pub const ALL_HEARTBEATS: &str = "lexmesh.heartbeat.>";

/// A change of an instance's health: `lexmesh.health.<instance>.<state>`.
pub fn health(instance: &str, state: crate::health::HealthState) -> String {
    format!("lexmesh.health.{instance}.{}", state.name())
}

/// Every health change: `lexmesh.health.>`.
pub const ALL_HEALTH: &str = "lexmesh.health.>";

/// Jobs given up on: `lexmesh.deadletter.<kind>` (stream `LEXMESH_DEADLETTER`).
pub fn deadletter(kind: JobKind) -> String {
    format!("lexmesh.deadletter.{}", kind.name())
}

/// Every dead letter: `lexmesh.deadletter.>`.
pub const ALL_DEADLETTERS: &str = "lexmesh.deadletter.>";

/// Alerts of one kind: `lexmesh.alerts.<kind>`.
pub fn alert(kind: crate::alert::AlertKind) -> String {
    format!("lexmesh.alerts.{}", kind.as_str())
}

/// Every alert: `lexmesh.alerts.>`.
pub const ALL_ALERTS: &str = "lexmesh.alerts.>";

/// Metrics reports of one instance: `lexmesh.metrics.<service>.<instance>`.
pub fn metrics(service: &str, instance: &str) -> String {
    format!("{ROOT}.metrics.{service}.{instance}")
}

/// Every instance's metrics reports.
pub const ALL_METRICS: &str = "lexmesh.metrics.>";

/// The metrics service's snapshot endpoint (schema `metrics-snapshot`).
pub const METRICS_SNAPSHOT: &str = "lexmesh.api.metrics.snapshot";

/// `lexmesh.api.health.instances`: the health service's view of every instance.
pub const HEALTH_INSTANCES: &str = "lexmesh.api.health.instances";

/// JetStream's advisory when a job message ran out of deliveries: the job is then
/// dead-lettered by whichever instance of its service hears it.
pub fn max_deliveries_advisory(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Request/reply endpoints of a service live under `lexmesh.api.<service>` (NATS service API
/// group); see [`crate::names`] for the endpoint names.
pub fn api_group(service: &str) -> String {
    format!("lexmesh.api.{service}")
}

/// `lexmesh.api.evaluator.classify`: inference on a stored model.
pub const CLASSIFY: &str = "lexmesh.api.evaluator.classify";

/// `lexmesh.api.preprocessor.prepare`: the trainer's way to get a prepared dataset (same body
/// as a preprocess job, answered directly instead of through the jobs stream).
pub const PREPARE: &str = "lexmesh.api.preprocessor.prepare";

/// `lexmesh.api.<service>.status`: what one instance of a service is doing (any instance of
/// the service answers; `lexmesh.api.<service>.<instance>.status` addresses one).
pub fn status(service: &str) -> String {
    format!("lexmesh.api.{service}.status")
}

/// `lexmesh.api.<service>.<instance>.status`: the status of one instance.
pub fn instance_status(service: &str, instance: &str) -> String {
    format!("lexmesh.api.{service}.{instance}.status")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    #[test]
    fn subjects_are_as_documented() {
        assert_eq!(jobs(JobKind::Train), "lexmesh.jobs.train");
        assert_eq!(
            event("j1", EventKind::Progress),
            "lexmesh.events.j1.progress"
        );
        assert_eq!(cancel("j1"), "lexmesh.control.j1.cancel");
        assert_eq!(heartbeat("trainer", "t-1"), "lexmesh.heartbeat.trainer.t-1");
        assert_eq!(status("trainer"), "lexmesh.api.trainer.status");
    }

    #[test]
    fn api_subjects_are_outside_the_streams() {
        // A service endpoint captured by a stream would store every request.
        for s in [CLASSIFY, PREPARE] {
            assert!(!s.starts_with("lexmesh.jobs.") && !s.starts_with("lexmesh.events."));
        }
    }
}
