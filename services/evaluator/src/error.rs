//! The one error type of this crate.

/// Why a confusion matrix or an evaluation report could not be built or updated.
///
/// Every fallible operation in this crate checks its input completely before it changes
/// anything, so a value that returned an error is left exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    /// A confusion matrix was asked for with zero classes.
    #[error("a confusion matrix needs at least one class")]
    NoClasses,

    /// A gold or predicted class index is not below the number of classes.
    #[error("class index {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The offending class index.
        index: usize,
        /// The number of classes of the matrix.
        classes: usize,
    },

    /// The gold and predicted label sequences have different lengths.
    #[error("{gold} gold labels but {predicted} predicted labels")]
    LengthMismatch {
        /// Number of gold labels.
        gold: usize,
        /// Number of predicted labels.
        predicted: usize,
    },

    /// Two confusion matrices with different numbers of classes were merged.
    #[error("cannot merge a {found}-class confusion matrix into a {expected}-class one")]
    ClassCountMismatch {
        /// Number of classes of the matrix being merged into.
        expected: usize,
        /// Number of classes of the matrix being merged.
        found: usize,
    },

    /// A report was given a number of label names that differs from the number of classes.
    #[error("{labels} label names for a confusion matrix of {classes} classes")]
    LabelCountMismatch {
        /// Number of label names given.
        labels: usize,
        /// Number of classes of the confusion matrix.
        classes: usize,
    },

    /// A report was given the same label name twice.
    #[error("label {label:?} appears more than once")]
    DuplicateLabel {
        /// The repeated label name.
        label: String,
    },

    /// Explicit matrix rows (for example from deserialization) do not form a square matrix.
    #[error("row {row} of the confusion matrix has {length} cells, expected {classes}")]
    MalformedMatrix {
        /// Index of the first row with the wrong length.
        row: usize,
        /// Its number of cells.
        length: usize,
        /// The number of classes (rows) of the matrix.
        classes: usize,
    },

    /// The total number of recorded examples would no longer fit in a `u64`.
    #[error("the confusion matrix total would overflow u64")]
    CountOverflow,
}

#[cfg(test)]
mod tests {
    use super::EvaluationError;

    #[test]
    fn messages_name_the_numbers() {
        let cases = [
            (
                EvaluationError::NoClasses,
                "a confusion matrix needs at least one class",
            ),
            (
                EvaluationError::LabelOutOfRange {
                    index: 5,
                    classes: 3,
                },
                "class index 5 is out of range for 3 classes",
            ),
            (
                EvaluationError::LengthMismatch {
                    gold: 4,
                    predicted: 2,
                },
                "4 gold labels but 2 predicted labels",
            ),
            (
                EvaluationError::ClassCountMismatch {
                    expected: 2,
                    found: 11,
                },
                "cannot merge a 11-class confusion matrix into a 2-class one",
            ),
            (
                EvaluationError::LabelCountMismatch {
                    labels: 1,
                    classes: 2,
                },
                "1 label names for a confusion matrix of 2 classes",
            ),
            (
                EvaluationError::DuplicateLabel {
                    label: "مدنی".to_owned(),
                },
                "label \"مدنی\" appears more than once",
            ),
            (
                EvaluationError::MalformedMatrix {
                    row: 1,
                    length: 3,
                    classes: 2,
                },
                "row 1 of the confusion matrix has 3 cells, expected 2",
            ),
            (
                EvaluationError::CountOverflow,
                "the confusion matrix total would overflow u64",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
