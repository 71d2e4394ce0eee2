//! Publishing job events. Progress goes out as a core publish (fast, captured by the events
//! stream all the same); the events that end or start a job are published through JetStream
//! and wait for the stream's acknowledgement, so they are stored before the job message is
//! acknowledged. Each carries the trace context of the current span (the job's) in its
//! headers when tracing is on.

use lexmesh_protocol::{JobEvent, subjects};

use crate::error::RuntimeError;
use crate::mesh::Mesh;

/// Publishes `event` on `lexmesh.events.<job>.<event>`.
pub async fn publish(mesh: &Mesh, event: &JobEvent) -> Result<(), RuntimeError> {
    let subject = subjects::event(event.job_id(), event.kind());
    let payload = serde_json::to_vec(event).map_err(|e| RuntimeError::Corrupt {
        what: "a job event".into(),
        reason: e.to_string(),
    })?;
    let mut headers = async_nats::HeaderMap::new();
    crate::telemetry::inject_current(&mut headers);
    let traced = !headers.is_empty();
    if matches!(event, JobEvent::Progress(_)) {
        let sent = if traced {
            mesh.client
                .publish_with_headers(subject, headers, payload.into())
                .await
        } else {
            mesh.client.publish(subject, payload.into()).await
        };
        sent.map_err(RuntimeError::nats("publishing a progress event"))
    } else {
        let sent = if traced {
            mesh.js
                .publish_with_headers(subject, headers, payload.into())
                .await
        } else {
            mesh.js.publish(subject, payload.into()).await
        };
        sent.map_err(RuntimeError::nats("publishing a job event"))?
            .await
            .map(|_| ())
            .map_err(RuntimeError::nats("storing a job event"))
    }
}
