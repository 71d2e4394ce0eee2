//! Domain values as the protocol reports them: one place for each mapping, used by every
//! service that needs it.

use lexmesh_evaluator::EvaluationReport;
use lexmesh_protocol::event::{ClassSummary, EvaluationSummary};
use lexmesh_protocol::{ErrorCode, ProtocolError};
use lexmesh_trainer::TrainError;

use crate::internal;

/// An evaluation report (validation of a train job, an evaluate job) as events carry it.
pub fn evaluation_summary(report: EvaluationReport) -> EvaluationSummary {
    EvaluationSummary {
        labels: report.labels,
        count: report.count,
        accuracy: report.accuracy,
        macro_f1: report.macro_f1,
        weighted_f1: report.weighted_f1,
        per_class: report
            .per_class
            .into_iter()
            .map(|c| ClassSummary {
                label: c.label,
                precision: c.precision,
                recall: c.recall,
                f1: c.f1,
                support: c.support,
            })
            .collect(),
        confusion_matrix: report.confusion_matrix,
    }
}

/// What a [`TrainError`] happened during: it decides the code of a model's own failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Training a model (a train job): a model that cannot be trained is `training_failed`.
    Training,
    /// Running a trained model (evaluation, classification): any failure of the model or its
    /// files is lexmesh's, `internal`.
    Inference,
}

/// The protocol error of a [`TrainError`]: the publisher's mistakes (`invalid_value` for
/// settings, `invalid_dataset` for data) are client errors; file I/O is `internal` (worth
/// another attempt); a model that fails is `training_failed` while training, `internal`
/// otherwise.
pub fn train_error(error: TrainError, stage: Stage) -> ProtocolError {
    match (error, stage) {
        (TrainError::Config(reason), _) => ProtocolError::new(ErrorCode::InvalidValue, reason),
        (TrainError::Data(d), _) => ProtocolError::new(ErrorCode::InvalidDataset, d.to_string()),
        (e @ TrainError::Io { .. }, Stage::Training) => internal("training", e),
        (e, Stage::Training) => ProtocolError::new(ErrorCode::TrainingFailed, e.to_string()),
        (e, Stage::Inference) => internal("running the model", e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use lexmesh_evaluator::ConfusionMatrix;

    use super::*;

    #[test]
    fn an_evaluation_summary_holds_every_figure_of_the_report() {
        let mut matrix = ConfusionMatrix::new(2).unwrap();
        for (gold, predicted) in [(0, 0), (0, 1), (1, 1), (1, 1), (0, 0)] {
            matrix.record(gold, predicted).unwrap();
        }
        let report = EvaluationReport::new(vec!["حقوقی".into(), "کیفری".into()], &matrix).unwrap();
        let summary = evaluation_summary(report.clone());
        // The summary is what the report says, field for field, in JSON too.
        assert_eq!(
            serde_json::to_value(&summary).unwrap(),
            serde_json::to_value(&report).unwrap()
        );
        assert_eq!(summary.count, 5);
        assert_eq!(summary.confusion_matrix, vec![vec![2, 1], vec![0, 2]]);
        assert_eq!(summary.per_class[1].label, "کیفری");
        assert_eq!(summary.per_class[1].support, 2);
    }

    #[test]
    fn training_errors_map_by_cause_and_stage() {
        let code = |e: TrainError, stage| train_error(e, stage).code;
        assert_eq!(
            code(TrainError::Config("x".into()), Stage::Training),
            ErrorCode::InvalidValue
        );
        let io = || TrainError::Io {
            path: "model.bin".into(),
            source: std::io::Error::other("disk"),
        };
        assert_eq!(code(io(), Stage::Training), ErrorCode::Internal);
        assert_eq!(code(io(), Stage::Inference), ErrorCode::Internal);
        let diverged = || TrainError::Diverged {
            epoch: 2,
            batch: 7,
            loss: f32::NAN,
        };
        assert_eq!(code(diverged(), Stage::Training), ErrorCode::TrainingFailed);
        assert_eq!(code(diverged(), Stage::Inference), ErrorCode::Internal);
        assert_eq!(
            code(TrainError::Device("cuda".into()), Stage::Training),
            ErrorCode::TrainingFailed
        );
    }
}
