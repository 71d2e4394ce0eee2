//! Bytes to messages, with the failure typed: every inbound message goes through [`decode`].
//!
//! A message that a publisher sends (job requests, classify and cancel requests) is checked
//! against its own JSON Schema, the very schema `schemas/` holds, before it becomes a Rust
//! value. So the schema and the services cannot disagree about a message's shape: a
//! schema-valid message is never rejected for its shape, and a rejected one is told which rule
//! of the schema it broke, in one code per kind of mistake.

use jsonschema::error::ValidationErrorKind;
use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, ProtocolError};

/// A wire message: something [`decode`] can produce.
pub trait Message: DeserializeOwned {
    /// The name of the schema a publisher's message is checked against (`train-job`, ...);
    /// `None` for messages only lexmesh itself sends, which are only parsed.
    const SCHEMA: Option<&'static str> = None;
}

impl<T: crate::job::JobRequest + DeserializeOwned> Message for T {
    const SCHEMA: Option<&'static str> = Some(match T::KIND {
        crate::JobKind::Train => "train-job",
        crate::JobKind::Preprocess => "preprocess-job",
        crate::JobKind::Evaluate => "evaluate-job",
        crate::JobKind::Optimize => "optimize-job",
    });
}

/// Parses and checks a message: non-UTF-8 or broken JSON is [`ErrorCode::InvalidJson`]; a
/// message of the wrong shape (a missing or unknown field, a wrong type, an unknown enum value)
/// is [`ErrorCode::InvalidMessage`]; a `job_id` that breaks its pattern is
/// [`ErrorCode::InvalidJobId`]; a value outside its schema's rules (range, length, pattern,
/// a setting that does not fit the model) is [`ErrorCode::InvalidValue`]. The reason names
/// each broken rule's place (a JSON pointer) and never repeats more than a short prefix of the
/// offending value.
pub fn decode<T: Message>(payload: &[u8]) -> Result<T, ProtocolError> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidJson, e.to_string()))?;
    if let Some(name) = T::SCHEMA {
        check(name, &value)?;
    }
    serde_json::from_value(value).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::InvalidMessage,
            _ => ErrorCode::InvalidJson,
        };
        ProtocolError::new(code, e.to_string())
    })
}

/// Checks `value` against the schema named `name`, with [`decode`]'s codes and reasons.
pub fn check(name: &str, value: &serde_json::Value) -> Result<(), ProtocolError> {
    let Some(validator) = crate::schema::validator(name) else {
        return Err(ProtocolError::new(
            ErrorCode::Internal,
            format!("no schema named `{name}`"),
        ));
    };
    let mut broken: Vec<(ErrorCode, String)> = validator
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path().as_str();
            let code = code_of(e.kind(), path);
            let place = if path.is_empty() {
                "the message".to_string()
            } else {
                format!("`{}`", brief_str(path, 120))
            };
            (
                code,
                format!("{place} {}", describe(e.kind(), e.instance())),
            )
        })
        .collect();
    if broken.is_empty() {
        return Ok(());
    }
    // One code per message: the shape first (nothing else can be trusted when it is wrong),
    // then the job id (the id the failure is reported under), then values.
    let code = [
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidJobId,
        ErrorCode::InvalidValue,
    ]
    .into_iter()
    .find(|c| broken.iter().any(|(b, _)| b == c))
    .unwrap_or(ErrorCode::InvalidValue);
    broken.sort_by_key(|(c, _)| *c != code);
    let total = broken.len();
    let mut reason = broken
        .iter()
        .take(3)
        .map(|(_, r)| r.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if total > 3 {
        reason.push_str(&format!("; and {} more", total - 3));
    }
    Err(ProtocolError::new(code, reason))
}

fn code_of(kind: &ValidationErrorKind, path: &str) -> ErrorCode {
    use ValidationErrorKind as K;
    match kind {
        K::Minimum { .. }
        | K::Maximum { .. }
        | K::ExclusiveMinimum { .. }
        | K::ExclusiveMaximum { .. }
        | K::MinLength { .. }
        | K::MaxLength { .. }
        | K::MinItems { .. }
        | K::MaxItems { .. }
        | K::MultipleOf { .. }
        | K::Format { .. }
        | K::UniqueItems => ErrorCode::InvalidValue,
        K::Pattern { .. } if path == "/job_id" => ErrorCode::InvalidJobId,
        K::Pattern { .. } => ErrorCode::InvalidValue,
        _ => ErrorCode::InvalidMessage,
    }
}

fn describe(kind: &ValidationErrorKind, instance: &serde_json::Value) -> String {
    use ValidationErrorKind as K;
    let found = brief(instance);
    match kind {
        K::Type { kind } => {
            let names: Vec<String> = match kind {
                jsonschema::error::TypeKind::Single(t) => vec![t.to_string()],
                jsonschema::error::TypeKind::Multiple(set) => {
                    set.iter().map(|t| t.to_string()).collect()
                }
            };
            format!(
                "must be {}, found {}",
                names.join(" or "),
                json_type(instance)
            )
        }
        K::Required { property } => format!("lacks the required field {}", brief(property)),
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            let names: Vec<String> = unexpected
                .iter()
                .take(5)
                .map(|n| format!("`{}`", brief_str(n, 40)))
                .collect();
            format!("has unknown field(s) {}", names.join(", "))
        }
        K::Enum { options } => format!("must be one of {options}, found {found}"),
        K::Constant { expected_value } => format!("must be {expected_value}, found {found}"),
        K::Minimum { limit } => format!("must be at least {limit}, found {found}"),
        K::Maximum { limit } => format!("must be at most {limit}, found {found}"),
        K::ExclusiveMinimum { limit } => format!("must be more than {limit}, found {found}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}, found {found}"),
        K::MinLength { limit } => format!("must hold at least {limit} character(s)"),
        K::MaxLength { limit } => format!("must hold at most {limit} character(s), found {found}"),
        K::MinItems { limit } => format!("must hold at least {limit} item(s)"),
        K::MaxItems { limit } => format!("must hold at most {limit} item(s)"),
        K::MultipleOf { multiple_of } => {
            format!("must be a multiple of {multiple_of}, found {found}")
        }
        K::Pattern { pattern } if pattern == crate::job::NON_BLANK_PATTERN => {
            "must not be empty or only whitespace".to_string()
        }
        K::Pattern { pattern } if pattern == crate::ID_PATTERN => {
            format!("must be 1 to 64 of A-Z a-z 0-9 _ -, found {found}")
        }
        K::Pattern { pattern } => format!("must match `{pattern}`, found {found}"),
        K::MinProperties { limit } | K::MaxProperties { limit } if *limit == 1 => {
            "must hold exactly one of its fields".to_string()
        }
        K::Not { .. } | K::FalseSchema => "is not allowed here".to_string(),
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            // An optional enum (`"model": "svm"`) is `anyOf [enum, null]`: say what the enum
            // allows rather than that no form matched.
            match context
                .iter()
                .flatten()
                .find(|e| matches!(e.kind(), K::Enum { .. }))
            {
                Some(inner) => describe(inner.kind(), instance),
                None => "matches none of its forms".to_string(),
            }
        }
        other => format!(
            "breaks its schema ({})",
            brief_str(&format!("{other:?}"), 80)
        ),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A value as a reason may show it: short strings and numbers whole, long strings cut to a
/// prefix with their length, arrays and objects by their size.
pub fn brief(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => {
            let n = s.chars().count();
            if n > 40 {
                format!(
                    "{:?}… ({n} characters)",
                    s.chars().take(32).collect::<String>()
                )
            } else {
                format!("{s:?}")
            }
        }
        serde_json::Value::Array(a) => format!("an array of {} item(s)", a.len()),
        serde_json::Value::Object(o) => format!("an object of {} field(s)", o.len()),
        other => brief_str(&other.to_string(), 40),
    }
}

/// `s` cut to at most `max` characters (with `…` when cut).
pub fn brief_str(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The `job_id` of a payload that failed to decode, when one can still be read, so the failure
/// can be reported on the job's event subject.
pub fn salvage_job_id(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let id = value.get("job_id")?.as_str()?;
    crate::valid_id(id).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TrainJob;

    fn error(payload: &str) -> ProtocolError {
        match decode::<TrainJob>(payload.as_bytes()) {
            Ok(_) => panic!("accepted {payload}"),
            Err(e) => e,
        }
    }

    fn code(payload: &str) -> ErrorCode {
        error(payload).code
    }

    const OK: &str = r#"{"job_id":"j1","dataset":{"inline":{"train":[{"text":"a","label":"x"}]}}}"#;

    fn with_settings(settings: &str) -> String {
        OK.replace("}}}", &format!("}}}},\"settings\":{settings}}}"))
    }

    #[test]
    fn a_minimal_train_job_decodes() {
        let job = decode::<TrainJob>(OK.as_bytes()).unwrap();
        assert_eq!(job.model_id(), "j1");
        assert!(decode::<TrainJob>(with_settings(r#"{"epochs":3}"#).as_bytes()).is_ok());
        // The largest double below 1 is inside (0, 1): numbers are read exactly.
        let job = decode::<TrainJob>(
            with_settings(r#"{"validation_fraction":0.9999999999999999}"#).as_bytes(),
        )
        .unwrap();
        assert!(job.settings.validation_fraction.unwrap() < 1.0);
    }

    #[test]
    fn each_kind_of_mistake_has_one_code() {
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code("\u{0}"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"[1]"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"job_id":5}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(&OK.replace("\"job_id\"", "\"extra\":1,\"job_id\"")),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(&with_settings(r#"{"model":"svm"}"#)),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(&OK.replace("j1", "a.b")), ErrorCode::InvalidJobId);
        // The same mistake, a value out of its range, has one code whatever the value.
        for epochs in ["-3", "0", "10001"] {
            assert_eq!(
                code(&with_settings(&format!(r#"{{"epochs":{epochs}}}"#))),
                ErrorCode::InvalidValue,
                "epochs {epochs}"
            );
        }
        for bad in [
            r#"{"learning_rate":-0.5}"#,
            r#"{"learning_rate":11}"#,
            r#"{"learning_rate":0}"#,
            r#"{"dropout":1.5}"#,
            r#"{"dropout":1}"#,
            r#"{"validation_fraction":1}"#,
            r#"{"model":"transformer","embedding_dim":30}"#,
            r#"{"model":"bigru","hidden":0}"#,
            r#"{"char_buckets":0}"#,
        ] {
            assert_eq!(code(&with_settings(bad)), ErrorCode::InvalidValue, "{bad}");
        }
        assert_eq!(
            code(r#"{"job_id":"j","dataset":{"inline":{"train":[]}}}"#),
            ErrorCode::InvalidValue
        );
        assert_eq!(
            code(&OK.replace(r#""text":"a""#, r#""text":" \n\u3000""#)),
            ErrorCode::InvalidValue
        );
        assert_eq!(
            code(r#"{"job_id":"j","dataset":{"inline":{"train":[{"text":"a"}]}}}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn records_keep_their_extra_fields_and_may_name_other_fields() {
        let job = decode::<TrainJob>(
            OK.replace(r#""label":"x""#, r#""label":"x","id":7,"title":"t""#)
                .as_bytes(),
        )
        .unwrap();
        let crate::DatasetSource::Inline(data) = job.dataset else {
            panic!("not inline");
        };
        assert_eq!(data.train[0].0["id"], 7);
        // With other field names, `text` and `label` are not required.
        let renamed = r#"{"job_id":"j","dataset":{"inline":{"text_field":"title","label_field":"kind","train":[{"title":"t","kind":"k"}]}}}"#;
        assert!(decode::<TrainJob>(renamed.as_bytes()).is_ok());
    }

    #[test]
    fn reasons_name_the_place_and_never_echo_a_long_value() {
        let e = error(r#"{"job_id":"j","model_id":5,"dataset":{"prepared":{"dataset_id":"x"}}}"#);
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        assert_eq!(
            e.reason,
            "`/model_id` must be null or string, found a number"
        );
        assert_eq!(
            error("[1]").reason,
            "the message must be object, found an array"
        );
        let e = error(&with_settings(r#"{"epochs":0}"#));
        assert!(e.reason.contains("`/settings/epochs`"), "{}", e.reason);
        let long_id = "x".repeat(1_000_000);
        let e = error(&OK.replace("j1", &long_id));
        assert_eq!(e.code, ErrorCode::InvalidJobId);
        assert!(e.reason.len() < 300, "{} bytes", e.reason.len());
        assert!(e.reason.contains("1000000 characters"), "{}", e.reason);
        let long_field = format!(r#"{{"{}":1,"job_id":"j"}}"#, "f".repeat(100_000));
        let e = error(&long_field);
        assert!(e.reason.len() < 600, "{} bytes", e.reason.len());
    }

    #[test]
    fn optimize_job_mistakes_have_their_codes() {
        use crate::job::OptimizeJob;
        let job = |extra: serde_json::Value| {
            let mut job = serde_json::json!({
                "job_id": "o1",
                "dataset": {"prepared": {"dataset_id": "d"}},
                "trials": 4,
                "search_space": {"learning_rate": {"log_uniform": {"low": 0.001, "high": 0.1}}},
            });
            if let (Some(job), serde_json::Value::Object(extra)) = (job.as_object_mut(), extra) {
                job.extend(extra);
            }
            serde_json::to_vec(&job).unwrap()
        };
        let ok = decode::<OptimizeJob>(&job(serde_json::json!({}))).unwrap();
        assert_eq!(ok.model_id(), "o1");
        // The first form of the message (choice lists only) still reads.
        let old = decode::<OptimizeJob>(&job(serde_json::json!({
            "search_space": {"learning_rate": [0.01, 0.001], "model": ["bow", "cnn"]},
        })))
        .unwrap();
        assert_eq!(
            old.search_space.0["model"].spec(),
            crate::job::DomainSpec::Choice(vec!["bow".into(), "cnn".into()])
        );
        let cases = [
            (
                serde_json::json!({"search_space": {"lr": [0.1]}}),
                ErrorCode::InvalidMessage,
            ),
            (
                serde_json::json!({"search_space": {"epochs": [1, 2]}}),
                ErrorCode::InvalidMessage,
            ),
            (
                serde_json::json!({"search_space": {"dropout": []}}),
                ErrorCode::InvalidValue,
            ),
            (
                serde_json::json!({"search_space": {"dropout": {"choice": []}}}),
                ErrorCode::InvalidValue,
            ),
            (
                serde_json::json!({"search_space": {"learning_rate": {"log_uniform": {"low": 0, "high": 0.1}}}}),
                ErrorCode::InvalidValue,
            ),
            (
                serde_json::json!({"search_space": {"learning_rate": [20]}}),
                ErrorCode::InvalidValue,
            ),
            (
                serde_json::json!({"search_space": {"model": ["svm"]}}),
                ErrorCode::InvalidMessage,
            ),
            (
                serde_json::json!({"search_space": {"hidden": {"uniform": {"low": 1, "high": 5}}}}),
                ErrorCode::InvalidMessage,
            ),
            (
                serde_json::json!({"sampler": "grid", "search_space": {"dropout": {"uniform": {"low": 0, "high": 0.5}}}}),
                ErrorCode::InvalidMessage,
            ),
            (serde_json::json!({"trials": 0}), ErrorCode::InvalidValue),
            (
                serde_json::json!({"max_concurrent_trials": 0}),
                ErrorCode::InvalidValue,
            ),
            (serde_json::json!({"goal": 1.5}), ErrorCode::InvalidValue),
            (
                serde_json::json!({"scheduler": "hyperband"}),
                ErrorCode::InvalidMessage,
            ),
            (
                serde_json::json!({"scheduler": {"asha": {"grace": 1}}}),
                ErrorCode::InvalidMessage,
            ),
            (
                serde_json::json!({"scheduler": {"asha": {"reduction_factor": 1}}}),
                ErrorCode::InvalidValue,
            ),
        ];
        for (extra, expected) in cases {
            let e = decode::<OptimizeJob>(&job(extra.clone())).unwrap_err();
            assert_eq!(e.code, expected, "{extra}: {}", e.reason);
        }
        let e =
            decode::<OptimizeJob>(&job(serde_json::json!({"scheduler": "hyperband"}))).unwrap_err();
        assert!(e.reason.contains("\"none\""), "{}", e.reason);
        let e = decode::<OptimizeJob>(&job(serde_json::json!({"search_space": {"lr": [0.1]}})))
            .unwrap_err();
        assert!(e.reason.contains("`lr`"), "{}", e.reason);
    }

    #[test]
    fn job_ids_survive_a_failed_decode() {
        assert_eq!(
            salvage_job_id(br#"{"job_id":"abc","x":1}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(salvage_job_id(br#"{"job_id":"a b"}"#), None);
        assert_eq!(salvage_job_id(b"nope"), None);
    }
}
