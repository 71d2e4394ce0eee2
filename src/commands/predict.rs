//! `lexmesh predict`: labels and class probabilities for texts given as arguments or as JSON
//! Lines on stdin.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use lexmesh_preprocessor::dataset::parse_text_record;
use lexmesh_trainer::{Classifier, Prediction};

use crate::cli::{FormatArg, PredictArgs};

/// Runs the command.
pub fn run(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let classifier = Classifier::load(&args.model, args.device)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let texts = if args.texts.is_empty() {
        read_stdin(&args.text_field)?
    } else {
        args.texts
    };
    let predictions = classifier.predict(&texts)?;
    let mut out = std::io::stdout().lock();
    for (text, p) in texts.iter().zip(&predictions) {
        match args.format {
            FormatArg::Json => writeln!(out, "{}", prediction_json(p))?,
            FormatArg::Text => {
                let confidence = p.probabilities.get(p.class).map(|(_, v)| *v).unwrap_or(0.0);
                let preview: String = text.chars().take(60).collect();
                writeln!(out, "{}\t{confidence:.3}\t{preview}", p.label)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn prediction_json(p: &Prediction) -> serde_json::Value {
    let probabilities: serde_json::Map<String, serde_json::Value> = p
        .probabilities
        .iter()
        .map(|(label, v)| (label.clone(), serde_json::json!(v)))
        .collect();
    serde_json::json!({ "label": p.label, "probabilities": probabilities })
}

fn read_stdin(text_field: &str) -> anyhow::Result<Vec<String>> {
    let source = Path::new("<stdin>");
    let mut texts = Vec::new();
    let stdin = std::io::stdin().lock();
    for (i, line) in stdin.split(b'\n').enumerate() {
        let line = line.context("reading stdin")?;
        let line = String::from_utf8(line)
            .map_err(|_| anyhow::anyhow!("<stdin>:{}: not valid UTF-8 text", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        texts.push(parse_text_record(source, i + 1, &line, text_field)?);
    }
    if texts.is_empty() {
        anyhow::bail!("no texts: give them as arguments or as JSON Lines on stdin");
    }
    Ok(texts)
}
