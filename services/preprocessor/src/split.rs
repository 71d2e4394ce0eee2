//! The stratified, seeded train/validation split made when no validation file is given.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Example};
use crate::error::DataError;

/// What a split did, per label: how many records went to each side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    /// Fraction of each class held out for validation.
    pub validation_fraction: f64,
    /// The seed of the shuffle.
    pub seed: u64,
    /// label → (train count, validation count).
    pub per_label: BTreeMap<String, (usize, usize)>,
}

impl std::fmt::Display for SplitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (train, val): (usize, usize) = self
            .per_label
            .values()
            .fold((0, 0), |(a, b), (t, v)| (a + t, b + v));
        write!(
            f,
            "stratified split (seed {}, {:.0}% held out): {train} train / {val} validation;",
            self.seed,
            self.validation_fraction * 100.0
        )?;
        for (label, (t, v)) in &self.per_label {
            write!(f, " {label} {t}/{v}")?;
        }
        Ok(())
    }
}

/// Splits a dataset per class: each class keeps `1 - fraction` of its records for training and
/// gives the rest (at least one) to validation. Deterministic for a given seed. Every class
/// needs at least two records.
pub fn stratified_split(
    dataset: &Dataset,
    validation_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset, SplitReport), DataError> {
    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(DataError::Split {
            reason: format!("validation fraction must be in (0, 1), got {validation_fraction}"),
        });
    }
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in dataset.examples.iter().enumerate() {
        by_label.entry(e.label.as_str()).or_default().push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train_idx = Vec::new();
    let mut val_idx = Vec::new();
    let mut per_label = BTreeMap::new();
    for (label, mut idx) in by_label {
        if idx.len() < 2 {
            return Err(DataError::Split {
                reason: format!(
                    "{}: label `{label}` has {} record(s); a stratified split needs at least 2 per class (or give --validation)",
                    dataset.path.display(),
                    idx.len()
                ),
            });
        }
        idx.shuffle(&mut rng);
        let n_val =
            ((idx.len() as f64 * validation_fraction).round() as usize).clamp(1, idx.len() - 1);
        per_label.insert(label.to_string(), (idx.len() - n_val, n_val));
        val_idx.extend_from_slice(&idx[..n_val]);
        train_idx.extend_from_slice(&idx[n_val..]);
    }
    // Keep file order inside each side: reproducible and easy to inspect.
    train_idx.sort_unstable();
    val_idx.sort_unstable();
    let pick = |idx: &[usize]| -> Vec<Example> {
        idx.iter().map(|&i| dataset.examples[i].clone()).collect()
    };
    let report = SplitReport {
        validation_fraction,
        seed,
        per_label,
    };
    Ok((
        Dataset::from_examples(dataset.path.clone(), pick(&train_idx)),
        Dataset::from_examples(dataset.path.clone(), pick(&val_idx)),
        report,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(counts: &[(&str, usize)]) -> Dataset {
        let mut examples = Vec::new();
        for (label, n) in counts {
            for i in 0..*n {
                examples.push(Example {
                    text: format!("{label} {i}"),
                    label: label.to_string(),
                    line: examples.len() + 1,
                });
            }
        }
        Dataset::from_examples("mem.jsonl", examples)
    }

    #[test]
    fn keeps_class_proportions_and_is_seeded() {
        let ds = dataset(&[("civil", 79), ("criminal", 21)]);
        let (train, val, report) = stratified_split(&ds, 0.2, 7).unwrap();
        assert_eq!(report.per_label["civil"], (63, 16));
        assert_eq!(report.per_label["criminal"], (17, 4));
        assert_eq!(train.len() + val.len(), 100);
        let (train2, val2, _) = stratified_split(&ds, 0.2, 7).unwrap();
        assert_eq!(train.examples, train2.examples);
        assert_eq!(val.examples, val2.examples);
        let (_, val3, _) = stratified_split(&ds, 0.2, 8).unwrap();
        assert_ne!(val.examples, val3.examples);
        // No record on both sides.
        for v in &val.examples {
            assert!(!train.examples.contains(v));
        }
        assert!(report.to_string().contains("80 train / 20 validation"));
    }

    #[test]
    fn tiny_class_still_gets_one_each_side_or_errors() {
        let ds = dataset(&[("a", 10), ("b", 2)]);
        let (_, _, report) = stratified_split(&ds, 0.1, 1).unwrap();
        assert_eq!(report.per_label["b"], (1, 1));
        let ds = dataset(&[("a", 10), ("b", 1)]);
        assert!(matches!(
            stratified_split(&ds, 0.2, 1).unwrap_err(),
            DataError::Split { .. }
        ));
        assert!(stratified_split(&ds, 1.5, 1).is_err());
    }
}
