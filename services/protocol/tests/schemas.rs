//! `schemas/` matches the types, and real messages validate against it.
#![allow(clippy::expect_used)]

use std::path::PathBuf;

use lexmesh_protocol::schema;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

#[test]
fn schema_files_are_up_to_date() {
    let stale = schema::stale_files(&schemas_dir()).expect("reading schemas/");
    assert!(
        stale.is_empty(),
        "schemas/ is stale ({stale:?}); regenerate with `cargo run -- schemas --out schemas/`"
    );
}

#[test]
fn every_schema_carries_its_version_and_rejects_unknown_fields() {
    for m in schema::all() {
        let value = m.schema.as_value();
        assert_eq!(value["x-lexmesh-protocol-version"], 1, "{}", m.name);
        assert!(
            value["$id"].as_str().is_some_and(|id| id.contains("/v1/")),
            "{}",
            m.name
        );
        let text = value.to_string();
        assert!(
            text.contains("\"additionalProperties\":false")
                || text.contains("\"unevaluatedProperties\":false"),
            "{} does not reject unknown fields",
            m.name
        );
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    let m = schema::by_name(name).expect("schema exists");
    jsonschema::validator_for(m.schema.as_value()).expect("schema compiles")
}

#[test]
fn examples_validate_and_bad_ones_do_not() {
    let train = validator("train-job");
    let good = serde_json::json!({
        "job_id": "job-1",
        "dataset": {"inline": {"train": [{"text": "متن", "label": "civil"}]}},
        "settings": {"model": "bow", "epochs": 3}
    });
    assert!(train.is_valid(&good));
    for bad in [
        serde_json::json!({"job_id": "job-1"}),
        serde_json::json!({"job_id": "a.b", "dataset": {"inline": {"train": []}}}),
        serde_json::json!({"job_id": "j", "dataset": {"inline": {"train": []}}, "extra": 1}),
        serde_json::json!({"job_id": "j", "dataset": {"inline": {"train": []}}, "settings": {"model": "svm"}}),
        serde_json::json!({"job_id": "j", "dataset": {"inline": {"train": []}}, "settings": {"epochs": -1}}),
    ] {
        assert!(!train.is_valid(&bad), "accepted {bad}");
    }
}

#[test]
fn serialized_events_validate() {
    use lexmesh_protocol::JobKind;
    use lexmesh_protocol::event::*;
    let events = validator("job-event");
    let progress = JobEvent::Progress(Progress {
        job_id: "j".into(),
        model_id: "m".into(),
        session_id: "j".into(),
        attempt: 1,
        instance: "trainer-1".into(),
        phase: ProgressPhase::Epoch,
        epoch: 1,
        total_epochs: 3,
        batch: 10,
        total_batches: 10,
        loss: 0.5,
        accuracy: 0.8,
        validation_loss: Some(0.4),
        validation_accuracy: Some(0.9),
        validation_macro_f1: Some(0.8),
        completion_percentage: 33.3,
        estimated_time_remaining_s: 2.0,
        examples_per_sec: 1000.0,
        resumed_from_epoch: None,
        resumed_from_batch: None,
        timestamp_ms: 1.0,
    });
    let failed = JobEvent::Failed(Failed {
        job_id: "j".into(),
        kind: JobKind::Train,
        attempt: 1,
        instance: "trainer-1".into(),
        code: lexmesh_protocol::ErrorCode::InvalidJson,
        reason: "x".into(),
        retrying: false,
        timestamp_ms: 1.0,
    });
    let stopped = JobEvent::TrialStopped(TrialStopped {
        job_id: "s".into(),
        trial_id: "s-t1".into(),
        index: 1,
        status: TrialStatus::Stopped,
        reason: TrialStopReason::Rung {
            milestone: 3.0,
            value: 0.4,
            cutoff: 0.5,
        },
        epochs_run: 3,
        best: Some(TrialScore {
            macro_f1: 0.4,
            validation_loss: 0.7,
        }),
        instance: "trainer-1".into(),
        timestamp_ms: 1.0,
    });
    let leaderboard = JobEvent::Leaderboard(Leaderboard {
        job_id: "s".into(),
        version: 4,
        entries: vec![LeaderboardEntry {
            rank: 1,
            trial_id: "s-t0".into(),
            index: 0,
            status: TrialStatus::Running,
            epochs_run: 2,
            best: None,
        }],
        instance: "trainer-1".into(),
        timestamp_ms: 1.0,
    });
    for e in [progress, failed, stopped, leaderboard] {
        let value = serde_json::to_value(&e).unwrap();
        assert!(events.is_valid(&value), "{value}");
        let mut extra = value.clone();
        extra["surprise"] = 1.into();
        assert!(
            !events.is_valid(&extra),
            "accepted an unknown field: {extra}"
        );
        let back: JobEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, e);
        assert!(serde_json::from_value::<JobEvent>(extra).is_err());
    }
}
