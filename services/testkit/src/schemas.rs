//! The JSON Schemas of `schemas/`: every message a test captures (events, replies, status, job
//! records) is checked against them, and an invalid one fails the test.
#![allow(
    clippy::expect_used,
    reason = "a harness fails the test with a message when the repository's schemas are broken"
)]

use std::collections::HashMap;

use serde_json::Value;

use crate::fixtures::repo_root;

/// Validators for every `schemas/<name>.v1.json`, by `<name>`.
pub struct Schemas {
    validators: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    /// Loads and compiles every schema of the repository.
    ///
    /// # Panics
    ///
    /// When `schemas/` cannot be read, a schema is not JSON or does not compile, or there is
    /// no `job-event` schema.
    pub fn load() -> Self {
        let dir = repo_root().join("schemas");
        let mut validators = HashMap::new();
        for entry in std::fs::read_dir(&dir).expect("read schemas/") {
            let path = entry.expect("schemas/ entry").path();
            let file = path
                .file_name()
                .expect("a schemas/ entry has a name")
                .to_string_lossy()
                .into_owned();
            let Some(name) = file.strip_suffix(".v1.json") else {
                continue;
            };
            let schema: Value = serde_json::from_slice(&std::fs::read(&path).expect("read schema"))
                .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
            let validator = jsonschema::validator_for(&schema)
                .unwrap_or_else(|e| panic!("{file} does not compile: {e}"));
            validators.insert(name.to_string(), validator);
        }
        assert!(
            validators.contains_key("job-event"),
            "no job-event schema in {}",
            dir.display()
        );
        Self { validators }
    }

    /// What is wrong with `value` according to schema `name` (empty when it is valid).
    ///
    /// # Panics
    ///
    /// When there is no schema `name`.
    pub fn violations(&self, name: &str, value: &Value) -> Vec<String> {
        let validator = self
            .validators
            .get(name)
            .unwrap_or_else(|| panic!("no schema `{name}` in schemas/"));
        validator
            .iter_errors(value)
            .map(|e| format!("at `{}`: {e}", e.instance_path()))
            .collect()
    }

    /// Fails the test when `value` does not match schema `name`; `what` names the message.
    ///
    /// # Panics
    ///
    /// When `value` does not match, or there is no schema `name`.
    pub fn check(&self, name: &str, what: &str, value: &Value) {
        let errors = self.violations(name, value);
        assert!(
            errors.is_empty(),
            "{what} does not match schema {name}:\n  {}\nmessage: {}",
            errors.join("\n  "),
            short(value)
        );
    }

    /// Checks a reply: an error reply (`{"error": …}`) against `error-reply`, anything else
    /// against `ok_schema`.
    ///
    /// # Panics
    ///
    /// As [`check`](Self::check).
    pub fn check_reply(&self, ok_schema: &str, what: &str, value: &Value) {
        if value.get("error").is_some() {
            self.check("error-reply", what, value);
        } else {
            self.check(ok_schema, what, value);
        }
    }
}

/// A value as JSON text, cut to a readable length for failure messages.
pub fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 2000 {
        text
    } else {
        let mut end = 2000;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    }
}
