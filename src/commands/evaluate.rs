//! `lexmesh evaluate`: accuracy, macro-F1, per-class scores and confusion matrix of a saved
//! model on a labelled file.

use std::process::ExitCode;

use anyhow::Context;
use lexmesh_preprocessor::{Dataset, FieldNames};
use lexmesh_trainer::Classifier;

use crate::cli::{EvaluateArgs, FormatArg};
use crate::commands::train::RunInputs;

/// Runs the command.
pub fn run(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let classifier = Classifier::load(&args.model, args.device)
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
    let report = classifier.evaluate(&dataset)?;
    match args.format {
        FormatArg::Json => println!("{}", serde_json::to_string(&report)?),
        FormatArg::Text => print!("{}", report.render_text()),
    }
    Ok(ExitCode::SUCCESS)
}
