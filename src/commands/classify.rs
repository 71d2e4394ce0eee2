//! `lexmesh classify`: classify texts with a stored model through the evaluator's `classify`
//! endpoint.

use std::process::ExitCode;

use anyhow::{Context, bail};
use async_nats::RequestErrorKind;
use lexmesh_protocol::classify::{ClassPrediction, ClassifyReply, ClassifyRequest, MAX_TEXTS};
use lexmesh_protocol::{ErrorReply, subjects};

use crate::cli::FormatArg;
use crate::cli_mesh::ClassifyArgs;
use crate::client;

/// Probabilities shown per text in the table.
const TOP_PROBABILITIES: usize = 3;

/// Characters of each text shown in the table.
const TEXT_PREVIEW_CHARS: usize = 60;

/// Runs the command.
pub fn run(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    if !lexmesh_protocol::valid_id(&args.model) {
        bail!(
            "`{}` is not a model id (1 to 64 of A-Z a-z 0-9 _ -)",
            args.model
        );
    }
    if args.texts.len() > MAX_TEXTS {
        bail!(
            "at most {MAX_TEXTS} texts per request, got {}",
            args.texts.len()
        );
    }
    let config = client::load_config(&args.mesh)?;
    let request = serde_json::to_vec(&ClassifyRequest {
        model_id: args.model.clone(),
        texts: args.texts.clone(),
    })?;
    let payload = client::runtime()?.block_on(async {
        let nats = client::connect(&config).await?;
        match nats.request(subjects::CLASSIFY, request.into()).await {
            Ok(reply) => anyhow::Ok(reply.payload),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => bail!(
                "no evaluator is running (start the mesh with `lexmesh up`, or one service \
                 with `lexmesh serve evaluator`)"
            ),
            Err(e) if e.kind() == RequestErrorKind::TimedOut => bail!(
                "the evaluator did not answer within {:?} (nats.request_timeout)",
                config.nats.request_timeout
            ),
            Err(e) => Err(anyhow::Error::new(e).context("sending the classify request")),
        }
    })?;
    // An error reply has `"error"` at the top level; anything else must be the answer.
    if let Ok(error) = serde_json::from_slice::<ErrorReply>(&payload) {
        eprintln!("error: {}: {}", error.error.code, error.error.reason);
        return Ok(ExitCode::FAILURE);
    }
    let reply: ClassifyReply =
        serde_json::from_slice(&payload).context("reading the evaluator's reply")?;
    match args.format {
        FormatArg::Json => crate::render::print_line(&serde_json::to_string(&reply)?),
        FormatArg::Text => {
            let rows: Vec<Vec<String>> = reply
                .predictions
                .iter()
                .zip(&args.texts)
                .enumerate()
                .map(|(i, (prediction, text))| {
                    vec![
                        (i + 1).to_string(),
                        prediction.label.clone(),
                        top_probabilities(prediction, TOP_PROBABILITIES),
                        preview(text, TEXT_PREVIEW_CHARS),
                    ]
                })
                .collect();
            client::print_table(&["#", "LABEL", "PROBABILITIES", "TEXT"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `a 0.912, b 0.070, c 0.018`: the `n` most probable labels, most probable first.
fn top_probabilities(prediction: &ClassPrediction, n: usize) -> String {
    let mut ranked: Vec<(&String, &f32)> = prediction.probabilities.iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(label, p)| format!("{label} {p:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first `chars` characters of a text on one line, with `…` when cut.
fn preview(text: &str, chars: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= chars {
        flat
    } else {
        let mut cut: String = flat.chars().take(chars).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_ranked() {
        let prediction = ClassPrediction {
            label: "b".into(),
            probabilities: [("a", 0.2), ("b", 0.7), ("c", 0.05), ("d", 0.05)]
                .into_iter()
                .map(|(l, p)| (l.to_string(), p))
                .collect(),
        };
        assert_eq!(
            top_probabilities(&prediction, 3),
            "b 0.700, a 0.200, c 0.050"
        );
    }

    #[test]
    fn previews_are_one_line_and_short() {
        assert_eq!(preview("a\n b", 10), "a b");
        assert_eq!(preview("دادگاه بدوی", 6), "دادگاه…");
    }
}
