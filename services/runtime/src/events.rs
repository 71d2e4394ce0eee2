//! Publishing job events. Progress goes out as a core publish (fast, captured by the events
//! stream all the same); the events that end or start a job are published through JetStream
//! and wait for the stream's acknowledgement, so they are stored before the job message is
//! acknowledged.

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
    if matches!(event, JobEvent::Progress(_)) {
        mesh.client
            .publish(subject, payload.into())
            .await
            .map_err(RuntimeError::nats("publishing a progress event"))
    } else {
        mesh.js
            .publish(subject, payload.into())
            .await
            .map_err(RuntimeError::nats("publishing a job event"))?
            .await
            .map(|_| ())
            .map_err(RuntimeError::nats("storing a job event"))
    }
}
