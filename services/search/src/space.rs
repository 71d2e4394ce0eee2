//! Search spaces: per setting, the values a search may try.
//!
//! A space names settings (the fields of a train job's `settings`, such as `learning_rate` or
//! `model`) and gives each a [`Domain`]. The names are checked by the caller against what a
//! job accepts; this module checks that every domain can be sampled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SearchError;

/// The values one setting may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Domain {
    /// One of these values, each as likely.
    Choice(Vec<Value>),
    /// A real number in `[low, high]`, uniformly.
    Uniform {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// A positive real number in `[low, high]`, uniformly in its logarithm (a learning rate).
    LogUniform {
        /// Smallest value (> 0).
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// An integer in `[low, high]`, each as likely.
    Int {
        /// Smallest value.
        low: i64,
        /// Largest value.
        high: i64,
    },
}

impl Domain {
    /// Checks that the domain holds at least one value and can be sampled.
    pub fn validate(&self, setting: &str) -> Result<(), SearchError> {
        let bad = |reason: String| {
            Err(SearchError::InvalidDomain {
                setting: setting.to_string(),
                reason,
            })
        };
        match self {
            Self::Choice(values) if values.is_empty() => bad("the choice list is empty".into()),
            Self::Choice(_) => Ok(()),
            Self::Uniform { low, high } | Self::LogUniform { low, high }
                if !(low.is_finite() && high.is_finite()) =>
            {
                bad(format!(
                    "bounds must be finite numbers, got [{low}, {high}]"
                ))
            }
            Self::Uniform { low, high } | Self::LogUniform { low, high } if low > high => {
                bad(format!("the range [{low}, {high}] is inverted"))
            }
            Self::LogUniform { low, .. } if *low <= 0.0 => bad(format!(
                "a log-uniform range must be above 0, got low = {low}"
            )),
            Self::Int { low, high } if low > high => {
                bad(format!("the range [{low}, {high}] is inverted"))
            }
            _ => Ok(()),
        }
    }

    /// How many values a grid takes from this domain; `None` for a continuous range.
    pub fn grid_size(&self) -> Option<u64> {
        match self {
            Self::Choice(values) => Some(values.len() as u64),
            Self::Int { low, high } => Some(high.abs_diff(*low).saturating_add(1)),
            Self::Uniform { .. } | Self::LogUniform { .. } => None,
        }
    }

    /// The `index`-th value of a grid over this domain (`index < grid_size`).
    pub fn grid_value(&self, index: u64) -> Option<Value> {
        match self {
            Self::Choice(values) => values.get(usize::try_from(index).ok()?).cloned(),
            Self::Int { low, high } => {
                let v = low.checked_add(i64::try_from(index).ok()?)?;
                (v <= *high).then(|| Value::from(v))
            }
            Self::Uniform { .. } | Self::LogUniform { .. } => None,
        }
    }
}

/// Settings and their domains (sorted by name, so that sampling is reproducible).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Space(pub BTreeMap<String, Domain>);

impl Space {
    /// Checks every domain; an empty space is an error (there would be nothing to search).
    pub fn validate(&self) -> Result<(), SearchError> {
        if self.0.is_empty() {
            return Err(SearchError::EmptySpace);
        }
        for (setting, domain) in &self.0 {
            domain.validate(setting)?;
        }
        Ok(())
    }

    /// The settings it names.
    pub fn settings(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// One point of a space: a value per setting.
pub type Configuration = BTreeMap<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn domains_read_from_json() {
        let space: Space = serde_json::from_value(json!({
            "learning_rate": {"log_uniform": {"low": 1e-4, "high": 0.1}},
            "dropout": {"uniform": {"low": 0.0, "high": 0.5}},
            "embedding_dim": {"int": {"low": 16, "high": 128}},
            "model": {"choice": ["bow", "cnn"]},
        }))
        .unwrap();
        space.validate().unwrap();
        assert_eq!(
            space.settings().collect::<Vec<_>>(),
            ["dropout", "embedding_dim", "learning_rate", "model"]
        );
        let err = serde_json::from_value::<Space>(json!({"x": {"normal": {"mu": 0}}}));
        assert!(err.is_err());
    }

    #[test]
    fn empty_inverted_and_non_positive_domains_are_rejected() {
        let cases = [
            (Domain::Choice(vec![]), "empty"),
            (
                Domain::Uniform {
                    low: 1.0,
                    high: 0.5,
                },
                "inverted",
            ),
            (Domain::Int { low: 3, high: 2 }, "inverted"),
            (
                Domain::LogUniform {
                    low: 0.0,
                    high: 1.0,
                },
                "above 0",
            ),
            (
                Domain::LogUniform {
                    low: -1.0,
                    high: 1.0,
                },
                "above 0",
            ),
            (
                Domain::Uniform {
                    low: f64::NEG_INFINITY,
                    high: 0.0,
                },
                "finite",
            ),
        ];
        for (domain, words) in cases {
            let err = domain.validate("lr").unwrap_err().to_string();
            assert!(err.contains("lr") && err.contains(words), "{err}");
        }
        // One value is a valid (if dull) range.
        Domain::Int { low: 2, high: 2 }.validate("x").unwrap();
        Domain::Uniform {
            low: 0.5,
            high: 0.5,
        }
        .validate("x")
        .unwrap();
        assert!(matches!(
            Space::default().validate(),
            Err(SearchError::EmptySpace)
        ));
    }

    #[test]
    fn grids_enumerate_choices_and_integers_only() {
        let d = Domain::Int { low: -1, high: 2 };
        assert_eq!(d.grid_size(), Some(4));
        let values: Vec<Value> = (0..4).filter_map(|i| d.grid_value(i)).collect();
        assert_eq!(values, [json!(-1), json!(0), json!(1), json!(2)]);
        assert_eq!(d.grid_value(4), None);
        let c = Domain::Choice(vec![json!("bow"), json!("cnn")]);
        assert_eq!(c.grid_size(), Some(2));
        assert_eq!(c.grid_value(1), Some(json!("cnn")));
        assert_eq!(
            Domain::Uniform {
                low: 0.0,
                high: 1.0
            }
            .grid_size(),
            None
        );
    }
}
