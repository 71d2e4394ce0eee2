//! Alerts on `lexmesh.alerts.<kind>` (schema `alert`): raised by the health service
//! (replacements given up or failed), by `lexmesh up` (crash loops) and by the metrics service
//! (thresholds); each is also a log line.

use lexmesh_protocol::alert::{Alert, AlertKind, AlertState};
use lexmesh_protocol::subjects;
use lexmesh_protocol::time::now_ms;

/// An alert about one instance.
pub fn new_alert(
    kind: AlertKind,
    state: AlertState,
    (service, instance): (&str, &str),
    (value, threshold): (f64, f64),
    message: &str,
    source: &str,
) -> Alert {
    Alert {
        kind,
        state,
        service: service.into(),
        instance: instance.into(),
        value,
        threshold,
        message: message.into(),
        source: source.into(),
        timestamp_ms: now_ms(),
    }
}

/// Publishes an alert on `lexmesh.alerts.<kind>`, and logs it.
pub async fn publish_alert(client: &async_nats::Client, alert: &Alert) {
    tracing::warn!(
        kind = %alert.kind,
        instance = %alert.instance,
        "alert {:?}: {}",
        alert.state,
        alert.message
    );
    match serde_json::to_vec(alert) {
        Ok(body) => {
            if let Err(e) = client
                .publish(subjects::alert(alert.kind), body.into())
                .await
            {
                tracing::warn!("cannot publish an alert: {e}");
            }
            let _ = client.flush().await;
        }
        Err(e) => tracing::warn!("cannot encode an alert: {e}"),
    }
}
