//! `lexmesh evaluate`: accuracy, macro-F1, per-class scores and confusion matrix of a saved
//! model on a labelled file.

use std::process::ExitCode;

use anyhow::Context;
use lexmesh_evaluator::{ConfusionMatrix, EvaluationReport};
use lexmesh_preprocessor::{Dataset, FieldNames};
use lexmesh_trainer::Classifier;
use lexmesh_trainer::inference::argmax;

use crate::cli::{EvaluateArgs, FormatArg};
use crate::commands::train::RunInputs;

/// Runs the command.
pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let classifier = Classifier::load(&args.model, args.device.into())
        .with_context(|| format!("loading model {}", args.model.display()))?;
    // Default to the fields the model was trained on (e.g. `title`).
    let trained_fields = RunInputs::read(&args.model).ok().map(|r| r.fields);
    let fields = FieldNames {
        text: args
            .text_field
            .or_else(|| trained_fields.as_ref().map(|f| f.text.clone()))
            .unwrap_or_else(|| "text".into()),
        label: args
            .label_field
            .or_else(|| trained_fields.as_ref().map(|f| f.label.clone()))
            .unwrap_or_else(|| "label".into()),
    };
    let dataset = Dataset::load(&args.data, &fields)?;
    let report = evaluate(&classifier, &dataset)?;
    match args.format {
        FormatArg::Json => println!("{}", serde_json::to_string(&report)?),
        FormatArg::Text => print!("{}", report.render_text()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Evaluates a loaded model on a labelled dataset; an unknown label is an error naming its line.
pub fn evaluate(classifier: &Classifier, dataset: &Dataset) -> anyhow::Result<EvaluationReport> {
    let gold = classifier.labels().encode(dataset)?;
    let texts: Vec<&str> = dataset.examples.iter().map(|e| e.text.as_str()).collect();
    let encoded = classifier.preprocessor().encode_all(&texts);
    let probabilities = classifier.probabilities_encoded(&encoded)?;
    let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
    let matrix = ConfusionMatrix::from_pairs(classifier.labels().len(), &gold, &predicted)?;
    Ok(EvaluationReport::new(
        classifier.labels().labels().to_vec(),
        &matrix,
    )?)
}
