//! Publishing job events. Progress goes out as a core publish (fast, captured by the events
//! stream all the same); the events that end or start a job are published through JetStream
//! and wait for the stream's acknowledgement, so they are stored before the job message is
//! acknowledged. Each carries the job's trace context in its headers: the current span's when
//! spans are exported, else the one the job message came with.

use lexmesh_protocol::{JobEvent, subjects};

use crate::error::RuntimeError;
use crate::mesh::Mesh;

/// Publishes `event` on `lexmesh.events.<job>.<event>`, with the trace context of the current
/// span, or, when this process exports no spans, the trace context `trace` of the job message
/// (so that a publisher's trace passes through whatever lexmesh's own settings).
pub async fn publish(
    mesh: &Mesh,
    event: &JobEvent,
    trace: Option<&async_nats::HeaderMap>,
) -> Result<(), RuntimeError> {
    let subject = subjects::event(event.job_id(), event.kind());
    let payload = serde_json::to_vec(event).map_err(RuntimeError::encode("a job event"))?;
    let headers = crate::telemetry::outgoing_headers(&tracing::Span::current(), trace);
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
