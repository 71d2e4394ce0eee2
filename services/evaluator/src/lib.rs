//! Classification metrics for lexmesh: how well predicted labels match gold labels, for
//! the court-ruling (civil/criminal) and news-topic classifiers alike. Pure computation and
//! formatting, no I/O, so the CLI and the mesh's evaluator service
//! (`services/mesh/src/evaluator.rs`) report identical numbers.
//!
//! - [`confusion`]: [`ConfusionMatrix`] (rows = gold class, columns = predicted class), built
//!   pair by pair, from label slices or by merging per-batch matrices, and the scores derived
//!   from it: accuracy, per-class [`ClassScores`] (precision, recall, F1, support), and macro
//!   and weighted averages. Conventions follow scikit-learn with `zero_division=0`: a ratio
//!   with a zero denominator is `0.0`, and macro averages run over every class, including
//!   classes absent from the gold labels.
//! - [`report`]: [`EvaluationReport`], the scores under label names, serialized as the JSON of
//!   `lexmesh evaluate --format json` or rendered as an aligned text table that handles
//!   Persian labels ([`EvaluationReport::render_text`]).
//! - [`error`]: [`EvaluationError`], returned by every fallible operation.
//!
//! ```
//! use lexmesh_evaluator::{ConfusionMatrix, EvaluationReport};
//!
//! // 0 = civil, 1 = criminal
//! let matrix = ConfusionMatrix::from_pairs(2, &[0, 0, 1, 1], &[0, 0, 1, 0])?;
//! assert_eq!(matrix.accuracy(), 0.75);
//! let report = EvaluationReport::new(vec!["حقوقی".into(), "کیفری".into()], &matrix)?;
//! assert!(report.render_text().contains("کیفری"));
//! # Ok::<(), lexmesh_evaluator::EvaluationError>(())
//! ```

pub mod confusion;
pub mod error;
pub mod report;

pub use confusion::{ClassScores, ConfusionMatrix};
pub use error::EvaluationError;
pub use report::{EvaluationReport, LabelledClassScores};
