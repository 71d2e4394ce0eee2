//! Bytes to messages, with the failure typed: every inbound message goes through [`decode`].

use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, ProtocolError};

/// A wire message: something [`decode`] can produce.
pub trait Message: DeserializeOwned {
    /// Checks beyond the types (ranges, ids, non-empty data). The default accepts anything
    /// that parsed.
    fn check(&self) -> Result<(), ProtocolError> {
        Ok(())
    }
}

impl<T: crate::job::JobRequest + DeserializeOwned> Message for T {
    fn check(&self) -> Result<(), ProtocolError> {
        self.validate()
    }
}

/// Parses and checks a message: oversize, non-UTF-8, bad JSON, wrong shape and bad values each
/// get their own [`ErrorCode`] and a reason that says where.
pub fn decode<T: Message>(payload: &[u8]) -> Result<T, ProtocolError> {
    if payload.len() > crate::MAX_MESSAGE_BYTES {
        return Err(ProtocolError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "payload of {} bytes exceeds the limit of {} bytes; upload large datasets to the object store",
                payload.len(),
                crate::MAX_MESSAGE_BYTES
            ),
        ));
    }
    let value: T = serde_json::from_slice(payload).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::InvalidMessage,
            _ => ErrorCode::InvalidJson,
        };
        ProtocolError::new(code, e.to_string())
    })?;
    value.check()?;
    Ok(value)
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

    fn code(payload: &str) -> ErrorCode {
        match decode::<TrainJob>(payload.as_bytes()) {
            Ok(_) => panic!("accepted {payload}"),
            Err(e) => e.code,
        }
    }

    const OK: &str = r#"{"job_id":"j1","dataset":{"inline":{"train":[{"text":"a","label":"x"}]}}}"#;

    #[test]
    fn a_minimal_train_job_decodes() {
        let job = decode::<TrainJob>(OK.as_bytes()).unwrap();
        assert_eq!(job.model_id(), "j1");
    }

    #[test]
    fn each_failure_has_its_code() {
        assert_eq!(code("{"), ErrorCode::InvalidJson);
        assert_eq!(code("\u{0}"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"job_id":5}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(&OK.replace("\"job_id\"", "\"extra\":1,\"job_id\"")),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(&OK.replace("j1", "a.b")), ErrorCode::InvalidJobId);
        assert_eq!(
            code(
                r#"{"job_id":"j1","dataset":{"inline":{"train":[{"text":"a","label":"x"}]}},"settings":{"epochs":0}}"#
            ),
            ErrorCode::InvalidValue
        );
        assert_eq!(
            code(r#"{"job_id":"j","dataset":{"inline":{"train":[]}}}"#),
            ErrorCode::EmptyDataset
        );
        let big = format!(
            "{{\"job_id\":\"{}\"}}",
            "x".repeat(crate::MAX_MESSAGE_BYTES)
        );
        assert_eq!(code(&big), ErrorCode::PayloadTooLarge);
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
