//! The objective of a search: validation macro-F1, maximised, ties broken by the lower
//! validation loss.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// How good a trial (or one of its epochs) is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Validation macro-F1 (higher is better).
    pub macro_f1: f64,
    /// Validation loss (lower is better; breaks ties of F1).
    pub validation_loss: f64,
}

impl Score {
    /// Orders two scores: `Greater` when `self` is better. A NaN F1 is worse than any number,
    /// a NaN loss worse than any loss.
    pub fn compare(&self, other: &Score) -> Ordering {
        let f1 = |s: &Score| {
            if s.macro_f1.is_nan() {
                f64::NEG_INFINITY
            } else {
                s.macro_f1
            }
        };
        let loss = |s: &Score| {
            if s.validation_loss.is_nan() {
                f64::INFINITY
            } else {
                s.validation_loss
            }
        };
        f1(self)
            .total_cmp(&f1(other))
            .then_with(|| loss(other).total_cmp(&loss(self)))
    }

    /// Whether `self` is better than `other`.
    pub fn beats(&self, other: &Score) -> bool {
        self.compare(other) == Ordering::Greater
    }

    /// Whether it reaches a goal F1.
    pub fn reaches(&self, goal: f64) -> bool {
        self.macro_f1 >= goal
    }
}

/// The best of some scores, with its key (the first of equals wins).
pub fn best<K, I>(scores: I) -> Option<(K, Score)>
where
    I: IntoIterator<Item = (K, Score)>,
{
    scores
        .into_iter()
        .fold(None, |best, (key, score)| match best {
            Some((_, b)) if !score.beats(&b) => best,
            _ => Some((key, score)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(macro_f1: f64, validation_loss: f64) -> Score {
        Score {
            macro_f1,
            validation_loss,
        }
    }

    #[test]
    fn f1_first_then_the_lower_loss() {
        assert!(s(0.7, 0.9).beats(&s(0.6, 0.1)));
        assert!(s(0.7, 0.4).beats(&s(0.7, 0.5)));
        assert!(!s(0.7, 0.5).beats(&s(0.7, 0.5)));
        assert!(s(0.1, 1.0).beats(&s(f64::NAN, 0.1)));
        assert!(s(0.5, 1.0).beats(&s(0.5, f64::NAN)));
        assert!(s(0.72, 1.0).reaches(0.72) && !s(0.71, 0.0).reaches(0.72));
    }

    #[test]
    fn the_best_is_the_first_of_equals() {
        let scores = vec![
            ("a", s(0.6, 0.5)),
            ("b", s(0.7, 0.5)),
            ("c", s(0.7, 0.5)),
            ("d", s(0.7, 0.6)),
        ];
        assert_eq!(best(scores).map(|(k, _)| k), Some("b"));
        assert_eq!(best(Vec::<(&str, Score)>::new()), None);
    }
}
