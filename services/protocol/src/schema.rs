//! JSON Schemas of every message, generated from the types. `schemas/` at the repository root
//! holds them as files (`lexmesh schemas --out schemas/`); a test fails when a file is stale.

use std::path::Path;

use schemars::{JsonSchema, Schema, schema_for};

use crate::PROTOCOL_VERSION;
use crate::{alert, deadletter, health, metrics};

/// One message's schema.
#[derive(Debug, Clone)]
pub struct MessageSchema {
    /// Message name, e.g. `train-job`.
    pub name: &'static str,
    /// Subject(s) it travels on, for people.
    pub subject: &'static str,
    /// The schema, with `$id`, `title` and `x-lexmesh-protocol-version` set.
    pub schema: Schema,
}

impl MessageSchema {
    /// File name: `<name>.v<version>.json`.
    pub fn file_name(&self) -> String {
        format!("{}.v{PROTOCOL_VERSION}.json", self.name)
    }

    /// Pretty JSON with a trailing newline, as written to disk.
    pub fn to_file_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.schema).unwrap_or_default();
        text.push('\n');
        text
    }
}

fn message<T: JsonSchema>(name: &'static str, subject: &'static str) -> MessageSchema {
    let mut schema = schema_for!(T);
    schema.insert(
        "$id".into(),
        format!("https://lexmesh.dev/schemas/v{PROTOCOL_VERSION}/{name}.json").into(),
    );
    schema.insert("title".into(), name.into());
    schema.insert("x-lexmesh-protocol-version".into(), PROTOCOL_VERSION.into());
    schema.insert("x-lexmesh-subject".into(), subject.into());
    MessageSchema {
        name,
        subject,
        schema,
    }
}

/// Every message schema, in a stable order.
pub fn all() -> Vec<MessageSchema> {
    use crate::{classify, control, error, event, heartbeat, job, record, status};
    vec![
        message::<job::TrainJob>("train-job", "lexmesh.jobs.train"),
        message::<job::PreprocessJob>(
            "preprocess-job",
            "lexmesh.jobs.preprocess, lexmesh.api.preprocessor.prepare",
        ),
        message::<job::EvaluateJob>("evaluate-job", "lexmesh.jobs.evaluate"),
        message::<job::OptimizeJob>("optimize-job", "lexmesh.jobs.optimize"),
        message::<event::JobEvent>("job-event", "lexmesh.events.<job>.<event>"),
        message::<event::PreparedSummary>(
            "prepare-reply",
            "reply to lexmesh.api.preprocessor.prepare",
        ),
        message::<control::CancelRequest>("cancel-request", "lexmesh.control.<job>.cancel"),
        message::<control::CancelReply>("cancel-reply", "reply to lexmesh.control.<job>.cancel"),
        message::<classify::ClassifyRequest>("classify-request", "lexmesh.api.evaluator.classify"),
        message::<classify::ClassifyReply>(
            "classify-reply",
            "reply to lexmesh.api.evaluator.classify",
        ),
        message::<heartbeat::Heartbeat>("heartbeat", "lexmesh.heartbeat.<service>.<instance>"),
        message::<status::WorkerStatus>("worker-status", "reply to lexmesh.api.<service>.status"),
        message::<record::JobRecord>("job-record", "KV lexmesh_jobs, key <job>"),
        message::<record::InstanceExit>("instance-exit", "KV lexmesh_instances, key <instance>"),
        message::<health::HealthEvent>("health-event", "lexmesh.health.<instance>.<state>"),
        message::<health::HealthReport>("health-report", "reply to lexmesh.api.health.instances"),
        message::<deadletter::DeadLetter>("dead-letter", "lexmesh.deadletter.<kind>"),
        message::<alert::Alert>("alert", "lexmesh.alerts.<kind>"),
        message::<metrics::WorkerMetrics>(
            "worker-metrics",
            "lexmesh.metrics.<service>.<instance>, $SRV.STATS data",
        ),
        message::<metrics::MetricsSnapshot>(
            "metrics-snapshot",
            "reply to lexmesh.api.metrics.snapshot",
        ),
        message::<record::ModelManifest>(
            "model-manifest",
            "object lexmesh_models <model>/manifest.json",
        ),
        message::<error::ErrorReply>(
            "error-reply",
            "reply of any lexmesh.api endpoint that failed",
        ),
    ]
}

/// The schema named `name`.
pub fn by_name(name: &str) -> Option<MessageSchema> {
    all().into_iter().find(|m| m.name == name)
}

/// Writes every schema into `dir` (created if missing); returns the files written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for m in all() {
        let path = dir.join(m.file_name());
        std::fs::write(&path, m.to_file_text())?;
        written.push(path);
    }
    Ok(written)
}

/// Names of the schema files in `dir` that are missing or differ from the types, and files
/// there that no message has any more.
pub fn stale_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut stale = Vec::new();
    let expected = all();
    for m in &expected {
        let path = dir.join(m.file_name());
        match std::fs::read_to_string(&path) {
            Ok(text) if text == m.to_file_text() => {}
            _ => stale.push(m.file_name()),
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !expected.iter().any(|m| m.file_name() == name) {
            stale.push(name);
        }
    }
    Ok(stale)
}

/// Rewrites the `oneOf` schemars makes for an externally tagged enum (one object per variant,
/// each with a single required key) into one object with exactly one of those keys. Both say
/// the same; this one lets a validator report the real mistake (`/dataset/inline/train: []
/// has fewer than 1 item`) instead of "not valid under any of the given schemas".
pub fn one_key_object(schema: &mut Schema) {
    let Some(serde_json::Value::Array(variants)) = schema.remove("oneOf") else {
        return;
    };
    let mut properties = serde_json::Map::new();
    for variant in variants {
        let serde_json::Value::Object(mut variant) = variant else {
            continue;
        };
        let description = variant.remove("description");
        let Some(serde_json::Value::Object(props)) = variant.remove("properties") else {
            continue;
        };
        for (key, mut value) in props {
            if let (Some(d), Some(obj)) = (&description, value.as_object_mut()) {
                obj.entry("description").or_insert_with(|| d.clone());
            }
            properties.insert(key, value);
        }
    }
    schema.insert("type".into(), "object".into());
    schema.insert("properties".into(), properties.into());
    schema.insert("additionalProperties".into(), false.into());
    schema.insert("minProperties".into(), 1.into());
    schema.insert("maxProperties".into(), 1.into());
}

/// The compiled validator of the schema named `name` (compiled once per process).
pub fn validator(name: &str) -> Option<&'static jsonschema::Validator> {
    static VALIDATORS: std::sync::OnceLock<
        std::collections::HashMap<&'static str, jsonschema::Validator>,
    > = std::sync::OnceLock::new();
    VALIDATORS
        .get_or_init(|| {
            all()
                .into_iter()
                .filter_map(|m| {
                    let v = jsonschema::validator_for(m.schema.as_value()).ok()?;
                    Some((m.name, v))
                })
                .collect()
        })
        .get(name)
}
