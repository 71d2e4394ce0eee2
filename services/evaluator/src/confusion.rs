//! The confusion matrix and the scores derived from it.
//!
//! Conventions follow scikit-learn's `precision_recall_fscore_support` with
//! `zero_division=0`: a ratio whose denominator is zero counts as `0.0`, and the macro and
//! weighted averages run over *all* classes of the matrix, including classes that never occur
//! in the gold labels (those have F1 `0.0` and weight `0`).

use serde::{Deserialize, Serialize};

use crate::error::EvaluationError;

/// Counts of (gold class, predicted class) pairs over a fixed number of classes.
///
/// Row `g`, column `p` holds how many examples of gold class `g` were predicted as class `p`;
/// classes are indices `0..classes()`. The matrix always has at least one class, is always
/// square, and its total always fits in a `u64`.
///
/// Serialized as `{"counts": [[...], ...]}`; deserialization checks the same invariants as
/// [`ConfusionMatrix::from_rows`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConfusionMatrix")]
pub struct ConfusionMatrix {
    /// `counts[gold][predicted]`.
    counts: Vec<Vec<u64>>,
    /// Sum of all cells, kept so that overflow can be refused cheaply.
    #[serde(skip)]
    total: u64,
}

/// The unchecked serialized form of [`ConfusionMatrix`].
#[derive(Deserialize)]
struct RawConfusionMatrix {
    counts: Vec<Vec<u64>>,
}

impl TryFrom<RawConfusionMatrix> for ConfusionMatrix {
    type Error = EvaluationError;

    fn try_from(raw: RawConfusionMatrix) -> Result<Self, Self::Error> {
        Self::from_rows(raw.counts)
    }
}

/// Precision, recall, F1 and support of one class.
///
/// A ratio with a zero denominator is `0.0` (scikit-learn's `zero_division=0`): a class that
/// is never predicted has precision `0.0`, a class that never occurs in the gold labels has
/// recall `0.0`, and F1 is `2·tp / (2·tp + fp + fn)`, `0.0` when that denominator is zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// Of the examples predicted as this class, the fraction that really are: `tp / (tp + fp)`.
    pub precision: f64,
    /// Of the examples of this class, the fraction predicted as it: `tp / (tp + fn)`.
    pub recall: f64,
    /// Harmonic mean of precision and recall: `2·tp / (2·tp + fp + fn)`.
    pub f1: f64,
    /// Number of examples whose gold class is this class.
    pub support: u64,
}

impl ClassScores {
    /// Scores from the true-positive, false-positive and false-negative counts of one class.
    pub fn from_counts(true_positives: u64, false_positives: u64, false_negatives: u64) -> Self {
        let tp = true_positives as f64;
        let fp = false_positives as f64;
        let fn_ = false_negatives as f64;
        Self {
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
            // tp + fn is a row sum of a matrix whose total fits in u64, so this cannot
            // overflow when called from a matrix; saturate for direct callers.
            support: true_positives.saturating_add(false_negatives),
        }
    }
}

/// `numerator / denominator`, or `0.0` when the denominator is zero.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

impl ConfusionMatrix {
    /// An empty matrix over `classes` classes.
    ///
    /// # Errors
    ///
    /// [`EvaluationError::NoClasses`] when `classes` is zero.
    pub fn new(classes: usize) -> Result<Self, EvaluationError> {
        if classes == 0 {
            return Err(EvaluationError::NoClasses);
        }
        Ok(Self {
            counts: vec![vec![0; classes]; classes],
            total: 0,
        })
    }

    /// A matrix from explicit rows: `rows[gold][predicted]`.
    ///
    /// # Errors
    ///
    /// [`EvaluationError::NoClasses`] when `rows` is empty,
    /// [`EvaluationError::MalformedMatrix`] when a row's length differs from the number of
    /// rows, and [`EvaluationError::CountOverflow`] when the cells sum past `u64::MAX`.
    pub fn from_rows(rows: Vec<Vec<u64>>) -> Result<Self, EvaluationError> {
        let classes = rows.len();
        if classes == 0 {
            return Err(EvaluationError::NoClasses);
        }
        let mut total: u64 = 0;
        for (row, cells) in rows.iter().enumerate() {
            if cells.len() != classes {
                return Err(EvaluationError::MalformedMatrix {
                    row,
                    length: cells.len(),
                    classes,
                });
            }
            for &cell in cells {
                total = total
                    .checked_add(cell)
                    .ok_or(EvaluationError::CountOverflow)?;
            }
        }
        Ok(Self {
            counts: rows,
            total,
        })
    }

    /// A matrix over `classes` classes holding the pairs `(gold[i], predicted[i])`.
    ///
    /// # Errors
    ///
    /// [`EvaluationError::NoClasses`] when `classes` is zero,
    /// [`EvaluationError::LengthMismatch`] when the slices differ in length, and
    /// [`EvaluationError::LabelOutOfRange`] for the first label that is not below `classes`.
    pub fn from_pairs(
        classes: usize,
        gold: &[usize],
        predicted: &[usize],
    ) -> Result<Self, EvaluationError> {
        let mut matrix = Self::new(classes)?;
        if gold.len() != predicted.len() {
            return Err(EvaluationError::LengthMismatch {
                gold: gold.len(),
                predicted: predicted.len(),
            });
        }
        for (&g, &p) in gold.iter().zip(predicted) {
            matrix.record(g, p)?;
        }
        Ok(matrix)
    }

    /// Counts one example of gold class `gold` predicted as class `predicted`.
    ///
    /// # Errors
    ///
    /// [`EvaluationError::LabelOutOfRange`] when either index is not below
    /// [`classes`](Self::classes) (gold is checked first), and
    /// [`EvaluationError::CountOverflow`] when the total would pass `u64::MAX`. The matrix is
    /// unchanged on error.
    pub fn record(&mut self, gold: usize, predicted: usize) -> Result<(), EvaluationError> {
        let classes = self.classes();
        for index in [gold, predicted] {
            if index >= classes {
                return Err(EvaluationError::LabelOutOfRange { index, classes });
            }
        }
        let total = self
            .total
            .checked_add(1)
            .ok_or(EvaluationError::CountOverflow)?;
        if let Some(cell) = self
            .counts
            .get_mut(gold)
            .and_then(|row| row.get_mut(predicted))
        {
            // A cell never exceeds the total, so it cannot overflow when the total does not.
            *cell += 1;
            self.total = total;
        }
        Ok(())
    }

    /// Adds every count of `other` to this matrix, as if its pairs had been recorded here.
    ///
    /// # Errors
    ///
    /// [`EvaluationError::ClassCountMismatch`] when the matrices have different numbers of
    /// classes, and [`EvaluationError::CountOverflow`] when the total would pass `u64::MAX`.
    /// The matrix is unchanged on error.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<(), EvaluationError> {
        if other.classes() != self.classes() {
            return Err(EvaluationError::ClassCountMismatch {
                expected: self.classes(),
                found: other.classes(),
            });
        }
        let total = self
            .total
            .checked_add(other.total)
            .ok_or(EvaluationError::CountOverflow)?;
        for (row, other_row) in self.counts.iter_mut().zip(&other.counts) {
            for (cell, &other_cell) in row.iter_mut().zip(other_row) {
                // Each cell is at most the new total, which fits.
                *cell += other_cell;
            }
        }
        self.total = total;
        Ok(())
    }

    /// Number of classes (rows, and columns).
    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Number of recorded examples: the sum of all cells.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of examples of gold class `gold` predicted as class `predicted`; `0` when either
    /// index is out of range (no such example can have been recorded).
    pub fn count(&self, gold: usize, predicted: usize) -> u64 {
        self.counts
            .get(gold)
            .and_then(|row| row.get(predicted))
            .copied()
            .unwrap_or(0)
    }

    /// The rows of the matrix: `rows()[gold][predicted]`.
    pub fn rows(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// The rows of the matrix, by value: `into_rows()[gold][predicted]`.
    pub fn into_rows(self) -> Vec<Vec<u64>> {
        self.counts
    }

    /// Number of correctly classified examples: the sum of the diagonal.
    pub fn correct(&self) -> u64 {
        (0..self.classes())
            .map(|class| self.count(class, class))
            .sum()
    }

    /// Number of examples whose gold class is `class` (its row sum); `0` when out of range.
    pub fn support(&self, class: usize) -> u64 {
        self.counts
            .get(class)
            .map_or(0, |row| row.iter().sum::<u64>())
    }

    /// Number of examples predicted as `class` (its column sum); `0` when out of range.
    pub fn predicted(&self, class: usize) -> u64 {
        self.counts
            .iter()
            .map(|row| row.get(class).copied().unwrap_or(0))
            .sum()
    }

    /// Fraction of examples classified correctly; `0.0` when the matrix is empty.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct() as f64, self.total as f64)
    }

    /// Precision, recall, F1 and support of `class`.
    ///
    /// # Errors
    ///
    /// [`EvaluationError::LabelOutOfRange`] when `class` is not below
    /// [`classes`](Self::classes).
    pub fn class_scores(&self, class: usize) -> Result<ClassScores, EvaluationError> {
        if class >= self.classes() {
            return Err(EvaluationError::LabelOutOfRange {
                index: class,
                classes: self.classes(),
            });
        }
        let true_positives = self.count(class, class);
        Ok(ClassScores::from_counts(
            true_positives,
            self.predicted(class) - true_positives,
            self.support(class) - true_positives,
        ))
    }

    /// Scores of every class, in class order.
    pub fn per_class(&self) -> Vec<ClassScores> {
        (0..self.classes())
            .filter_map(|class| self.class_scores(class).ok())
            .collect()
    }

    /// Unweighted mean of per-class precision over all classes (scikit-learn
    /// `average='macro'`).
    pub fn macro_precision(&self) -> f64 {
        self.macro_mean(|scores| scores.precision)
    }

    /// Unweighted mean of per-class recall over all classes (scikit-learn `average='macro'`,
    /// also known as balanced accuracy when every class has support).
    pub fn macro_recall(&self) -> f64 {
        self.macro_mean(|scores| scores.recall)
    }

    /// Unweighted mean of per-class F1 over all classes, including classes with no support
    /// (scikit-learn `average='macro'`). Each class counts equally, so a model that ignores a
    /// minority class scores low here even when its accuracy is high.
    pub fn macro_f1(&self) -> f64 {
        self.macro_mean(|scores| scores.f1)
    }

    /// Mean of per-class F1 weighted by support (scikit-learn `average='weighted'`); `0.0`
    /// when the matrix is empty.
    pub fn weighted_f1(&self) -> f64 {
        let weighted_sum: f64 = self
            .per_class()
            .iter()
            .map(|scores| scores.f1 * scores.support as f64)
            .sum();
        ratio(weighted_sum, self.total as f64)
    }

    fn macro_mean(&self, score: impl Fn(&ClassScores) -> f64) -> f64 {
        let per_class = self.per_class();
        let sum: f64 = per_class.iter().map(score).sum();
        ratio(sum, per_class.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::{ClassScores, ConfusionMatrix};
    use crate::error::EvaluationError;

    const TOLERANCE: f64 = 1e-9;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= TOLERANCE,
            "expected {expected}, got {actual}"
        );
    }

    fn assert_scores(actual: &ClassScores, precision: f64, recall: f64, f1: f64, support: u64) {
        assert_close(actual.precision, precision);
        assert_close(actual.recall, recall);
        assert_close(actual.f1, f1);
        assert_eq!(actual.support, support, "support");
    }

    #[test]
    fn two_classes() -> Result<(), EvaluationError> {
        // gold      0 0 0 1 1
        // predicted 0 0 1 1 0
        // matrix [[2, 1],
        //         [1, 1]]
        // accuracy = (2 + 1) / 5 = 0.6
        // class 0: tp 2, fp 1, fn 1 -> P = 2/3, R = 2/3, F1 = 4/6 = 2/3, support 3
        // class 1: tp 1, fp 1, fn 1 -> P = 1/2, R = 1/2, F1 = 2/4 = 1/2, support 2
        // macro F1 = (2/3 + 1/2) / 2 = 7/12
        // weighted F1 = (3 * 2/3 + 2 * 1/2) / 5 = 3/5
        let matrix = ConfusionMatrix::from_pairs(2, &[0, 0, 0, 1, 1], &[0, 0, 1, 1, 0])?;
        assert_eq!(matrix.rows(), &[vec![2, 1], vec![1, 1]]);
        assert_eq!(matrix.classes(), 2);
        assert_eq!(matrix.total(), 5);
        assert_eq!(matrix.correct(), 3);
        assert_eq!(matrix.count(0, 1), 1);
        assert_close(matrix.accuracy(), 0.6);
        let per_class = matrix.per_class();
        assert_eq!(per_class.len(), 2);
        assert_scores(&per_class[0], 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 3);
        assert_scores(&per_class[1], 0.5, 0.5, 0.5, 2);
        assert_close(matrix.macro_f1(), 7.0 / 12.0);
        assert_close(matrix.weighted_f1(), 0.6);
        // macro P = macro R = (2/3 + 1/2) / 2 = 7/12
        assert_close(matrix.macro_precision(), 7.0 / 12.0);
        assert_close(matrix.macro_recall(), 7.0 / 12.0);
        Ok(())
    }

    #[test]
    fn three_classes_with_unpredicted_and_unsupported_classes() -> Result<(), EvaluationError> {
        // gold      0 0 0 2 2 2
        // predicted 0 0 1 0 1 0
        // matrix [[2, 1, 0],
        //         [0, 0, 0],   <- class 1 never occurs in gold: no support
        //         [2, 1, 0]]   <- column 2 is all zero: class 2 never predicted
        // accuracy = 2 / 6 = 1/3
        // class 0: tp 2, fp 2, fn 1 -> P = 2/4 = 1/2, R = 2/3, F1 = 4/(4+2+1) = 4/7, support 3
        // class 1: tp 0, fp 2, fn 0 -> P = 0/2 = 0, R = 0/0 -> 0, F1 = 0/2 = 0, support 0
        // class 2: tp 0, fp 0, fn 3 -> P = 0/0 -> 0, R = 0/3 = 0, F1 = 0/3 = 0, support 3
        // macro F1 = (4/7 + 0 + 0) / 3 = 4/21 (the unsupported class still counts)
        // weighted F1 = (3 * 4/7 + 0 * 0 + 3 * 0) / 6 = 2/7
        // macro P = (1/2 + 0 + 0) / 3 = 1/6; macro R = (2/3 + 0 + 0) / 3 = 2/9
        let matrix = ConfusionMatrix::from_pairs(3, &[0, 0, 0, 2, 2, 2], &[0, 0, 1, 0, 1, 0])?;
        assert_eq!(
            matrix.rows(),
            &[vec![2, 1, 0], vec![0, 0, 0], vec![2, 1, 0]]
        );
        assert_eq!(matrix.support(1), 0);
        assert_eq!(matrix.predicted(2), 0);
        assert_close(matrix.accuracy(), 1.0 / 3.0);
        let per_class = matrix.per_class();
        assert_eq!(per_class.len(), 3);
        assert_scores(&per_class[0], 0.5, 2.0 / 3.0, 4.0 / 7.0, 3);
        assert_scores(&per_class[1], 0.0, 0.0, 0.0, 0);
        assert_scores(&per_class[2], 0.0, 0.0, 0.0, 3);
        assert_close(matrix.macro_f1(), 4.0 / 21.0);
        assert_close(matrix.weighted_f1(), 2.0 / 7.0);
        assert_close(matrix.macro_precision(), 1.0 / 6.0);
        assert_close(matrix.macro_recall(), 2.0 / 9.0);
        Ok(())
    }

    #[test]
    fn perfect_predictions() -> Result<(), EvaluationError> {
        // gold = predicted = 0 1 2 2 1 0 2: a diagonal matrix diag(2, 2, 3).
        // Every class: fp = fn = 0 -> P = R = F1 = 1; accuracy 7/7 = 1; both averages 1.
        let labels = [0, 1, 2, 2, 1, 0, 2];
        let matrix = ConfusionMatrix::from_pairs(3, &labels, &labels)?;
        assert_eq!(
            matrix.rows(),
            &[vec![2, 0, 0], vec![0, 2, 0], vec![0, 0, 3]]
        );
        assert_close(matrix.accuracy(), 1.0);
        let supports = [2, 2, 3];
        for (scores, support) in matrix.per_class().iter().zip(supports) {
            assert_scores(scores, 1.0, 1.0, 1.0, support);
        }
        assert_close(matrix.macro_f1(), 1.0);
        assert_close(matrix.weighted_f1(), 1.0);
        Ok(())
    }

    #[test]
    fn majority_class_predictor_on_an_imbalanced_set() -> Result<(), EvaluationError> {
        // 79 civil (class 0) and 21 criminal (class 1) rulings, every one predicted civil.
        // matrix [[79, 0],
        //         [21, 0]]
        // accuracy = 79 / 100 = 0.79
        // civil:    tp 79, fp 21, fn 0  -> P = 79/100, R = 1, F1 = 158/(158+21) = 158/179
        // criminal: tp 0,  fp 0,  fn 21 -> P = 0/0 -> 0, R = 0, F1 = 0
        // macro F1 = (158/179 + 0) / 2 = 79/179 ≈ 0.441341
        // weighted F1 = (79 * 158/179 + 21 * 0) / 100 = 12482/17900 ≈ 0.697318
        let gold: Vec<usize> = [vec![0; 79], vec![1; 21]].concat();
        let predicted = vec![0; 100];
        let matrix = ConfusionMatrix::from_pairs(2, &gold, &predicted)?;
        assert_eq!(matrix.rows(), &[vec![79, 0], vec![21, 0]]);
        assert_close(matrix.accuracy(), 0.79);
        let per_class = matrix.per_class();
        assert_scores(&per_class[0], 0.79, 1.0, 158.0 / 179.0, 79);
        assert_scores(&per_class[1], 0.0, 0.0, 0.0, 21);
        assert_close(matrix.macro_f1(), 79.0 / 179.0);
        assert!((matrix.macro_f1() - 0.441).abs() < 1e-3);
        assert_close(matrix.weighted_f1(), 12482.0 / 17900.0);
        Ok(())
    }

    #[test]
    fn empty_matrix_scores_zero() -> Result<(), EvaluationError> {
        // No examples: every ratio is 0/0 -> 0.
        let matrix = ConfusionMatrix::new(3)?;
        assert_eq!(matrix.total(), 0);
        assert_eq!(matrix.rows(), &[vec![0; 3], vec![0; 3], vec![0; 3]]);
        assert_close(matrix.accuracy(), 0.0);
        assert_close(matrix.macro_f1(), 0.0);
        assert_close(matrix.weighted_f1(), 0.0);
        for scores in matrix.per_class() {
            assert_scores(&scores, 0.0, 0.0, 0.0, 0);
        }
        Ok(())
    }

    #[test]
    fn single_class_matrix() -> Result<(), EvaluationError> {
        // One class, every example correct: P = R = F1 = accuracy = 1.
        let matrix = ConfusionMatrix::from_pairs(1, &[0, 0], &[0, 0])?;
        assert_close(matrix.accuracy(), 1.0);
        assert_close(matrix.macro_f1(), 1.0);
        Ok(())
    }

    #[test]
    fn record_builds_the_same_matrix_as_from_pairs() -> Result<(), EvaluationError> {
        let gold = [0, 1, 2, 1, 0];
        let predicted = [1, 1, 2, 0, 0];
        let mut recorded = ConfusionMatrix::new(3)?;
        for (&g, &p) in gold.iter().zip(&predicted) {
            recorded.record(g, p)?;
        }
        assert_eq!(recorded, ConfusionMatrix::from_pairs(3, &gold, &predicted)?);
        assert_eq!(recorded.count(0, 1), 1);
        assert_eq!(recorded.count(1, 0), 1);
        Ok(())
    }

    #[test]
    fn merge_equals_recording_all_pairs() -> Result<(), EvaluationError> {
        let gold_a = [0, 1, 2, 2, 1];
        let predicted_a = [0, 2, 2, 1, 1];
        let gold_b = [2, 0, 0, 1];
        let predicted_b = [2, 1, 0, 1];
        let mut merged = ConfusionMatrix::from_pairs(3, &gold_a, &predicted_a)?;
        merged.merge(&ConfusionMatrix::from_pairs(3, &gold_b, &predicted_b)?)?;

        let gold_all: Vec<usize> = gold_a.iter().chain(&gold_b).copied().collect();
        let predicted_all: Vec<usize> = predicted_a.iter().chain(&predicted_b).copied().collect();
        let whole = ConfusionMatrix::from_pairs(3, &gold_all, &predicted_all)?;
        assert_eq!(merged, whole);
        assert_eq!(merged.total(), 9);
        // pairs (0,0) (1,2) (2,2) (2,1) (1,1) + (2,2) (0,1) (0,0) (1,1)
        // matrix [[2, 1, 0], [0, 2, 1], [0, 1, 2]] -> 2 + 2 + 2 = 6 correct of 9 = 2/3.
        assert_eq!(
            merged.rows(),
            &[vec![2, 1, 0], vec![0, 2, 1], vec![0, 1, 2]]
        );
        assert_close(merged.accuracy(), 2.0 / 3.0);
        Ok(())
    }

    #[test]
    fn merging_an_empty_matrix_changes_nothing() -> Result<(), EvaluationError> {
        let mut matrix = ConfusionMatrix::from_pairs(2, &[0, 1], &[1, 1])?;
        let before = matrix.clone();
        matrix.merge(&ConfusionMatrix::new(2)?)?;
        assert_eq!(matrix, before);
        Ok(())
    }

    #[test]
    fn zero_classes_is_an_error() {
        assert_eq!(ConfusionMatrix::new(0), Err(EvaluationError::NoClasses));
        assert_eq!(
            ConfusionMatrix::from_pairs(0, &[], &[]),
            Err(EvaluationError::NoClasses)
        );
        assert_eq!(
            ConfusionMatrix::from_rows(Vec::new()),
            Err(EvaluationError::NoClasses)
        );
    }

    #[test]
    fn out_of_range_labels_are_errors() -> Result<(), EvaluationError> {
        let mut matrix = ConfusionMatrix::from_pairs(2, &[0], &[1])?;
        let before = matrix.clone();
        assert_eq!(
            matrix.record(2, 0),
            Err(EvaluationError::LabelOutOfRange {
                index: 2,
                classes: 2
            })
        );
        assert_eq!(
            matrix.record(0, 7),
            Err(EvaluationError::LabelOutOfRange {
                index: 7,
                classes: 2
            })
        );
        assert_eq!(
            matrix, before,
            "a failed record leaves the matrix unchanged"
        );
        assert_eq!(
            ConfusionMatrix::from_pairs(2, &[0, 1, 3], &[0, 1, 1]),
            Err(EvaluationError::LabelOutOfRange {
                index: 3,
                classes: 2
            })
        );
        assert_eq!(
            matrix.class_scores(2),
            Err(EvaluationError::LabelOutOfRange {
                index: 2,
                classes: 2
            })
        );
        // Out-of-range look-ups count nothing rather than panic.
        assert_eq!(matrix.count(5, 0), 0);
        assert_eq!(matrix.support(5), 0);
        assert_eq!(matrix.predicted(5), 0);
        Ok(())
    }

    #[test]
    fn length_mismatch_is_an_error() {
        assert_eq!(
            ConfusionMatrix::from_pairs(2, &[0, 1, 1], &[0, 1]),
            Err(EvaluationError::LengthMismatch {
                gold: 3,
                predicted: 2
            })
        );
    }

    #[test]
    fn merging_different_class_counts_is_an_error() -> Result<(), EvaluationError> {
        let mut matrix = ConfusionMatrix::from_pairs(2, &[0], &[0])?;
        let before = matrix.clone();
        assert_eq!(
            matrix.merge(&ConfusionMatrix::new(3)?),
            Err(EvaluationError::ClassCountMismatch {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(matrix, before);
        Ok(())
    }

    #[test]
    fn non_square_rows_are_an_error() {
        assert_eq!(
            ConfusionMatrix::from_rows(vec![vec![1, 2], vec![3]]),
            Err(EvaluationError::MalformedMatrix {
                row: 1,
                length: 1,
                classes: 2
            })
        );
        assert_eq!(
            ConfusionMatrix::from_rows(vec![vec![1, 2, 3]]),
            Err(EvaluationError::MalformedMatrix {
                row: 0,
                length: 3,
                classes: 1
            })
        );
    }

    #[test]
    fn overflow_is_an_error_and_changes_nothing() -> Result<(), EvaluationError> {
        assert_eq!(
            ConfusionMatrix::from_rows(vec![vec![u64::MAX, 1], vec![0, 0]]),
            Err(EvaluationError::CountOverflow)
        );
        let mut full = ConfusionMatrix::from_rows(vec![vec![u64::MAX, 0], vec![0, 0]])?;
        let before = full.clone();
        assert_eq!(full.record(1, 1), Err(EvaluationError::CountOverflow));
        assert_eq!(
            full.merge(&ConfusionMatrix::from_pairs(2, &[1], &[0])?),
            Err(EvaluationError::CountOverflow)
        );
        assert_eq!(full, before);
        Ok(())
    }

    #[test]
    fn from_rows_round_trips_and_into_rows_gives_them_back() -> Result<(), EvaluationError> {
        let rows = vec![vec![3, 1], vec![2, 4]];
        let matrix = ConfusionMatrix::from_rows(rows.clone())?;
        assert_eq!(matrix.total(), 10);
        assert_eq!(
            matrix,
            ConfusionMatrix::from_pairs(
                2,
                &[0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
                &[0, 0, 0, 1, 0, 0, 1, 1, 1, 1]
            )?
        );
        assert_eq!(matrix.into_rows(), rows);
        Ok(())
    }

    #[test]
    fn json_round_trip_checks_invariants() -> Result<(), Box<dyn std::error::Error>> {
        let matrix = ConfusionMatrix::from_pairs(2, &[0, 1, 1], &[0, 0, 1])?;
        let json = serde_json::to_string(&matrix)?;
        assert_eq!(json, r#"{"counts":[[1,0],[1,1]]}"#);
        let back: ConfusionMatrix = serde_json::from_str(&json)?;
        assert_eq!(back, matrix);
        assert_eq!(back.total(), 3);

        for bad in [
            r#"{"counts":[]}"#,
            r#"{"counts":[[1,0],[1]]}"#,
            r#"{"counts":[[18446744073709551615,1],[0,0]]}"#,
        ] {
            assert!(
                serde_json::from_str::<ConfusionMatrix>(bad).is_err(),
                "{bad} should be rejected"
            );
        }
        Ok(())
    }

    #[test]
    fn class_scores_from_counts_with_zero_denominators() {
        // tp 0, fp 0, fn 0: every ratio is 0/0 -> 0.
        assert_scores(&ClassScores::from_counts(0, 0, 0), 0.0, 0.0, 0.0, 0);
        // tp 3, fp 1, fn 2: P = 3/4, R = 3/5, F1 = 6/(6+1+2) = 2/3
        // (equals 2PR/(P+R) = 2 * 9/20 / (27/20) = 2/3).
        assert_scores(&ClassScores::from_counts(3, 1, 2), 0.75, 0.6, 2.0 / 3.0, 5);
    }
}
