//! `lexmesh models`: the stored models, read from their manifests in the `lexmesh_models`
//! object store (a model without a manifest is incomplete and not listed).

use std::process::ExitCode;

use lexmesh_protocol::record::ModelManifest;
use lexmesh_runtime::objects;

use crate::cli::FormatArg;
use crate::cli_mesh::ModelsArgs;
use crate::client;

/// The object name every manifest ends with (`<model>/manifest.json`).
const MANIFEST_SUFFIX: &str = "/manifest.json";

/// Labels shown by name in the table; the rest are counted.
const LABELS_SHOWN: usize = 3;

/// Runs the command.
pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let manifests = client::runtime()?.block_on(async {
        let mesh = client::open_mesh(&args.mesh).await?;
        let mut manifests = Vec::new();
        for (name, _) in objects::list(&mesh.models, "").await? {
            if !name.ends_with(MANIFEST_SUFFIX) {
                continue;
            }
            let Some(bytes) = objects::get_bytes(&mesh.models, &name).await? else {
                continue;
            };
            match lexmesh_protocol::decode::<ModelManifest>(&bytes) {
                Ok(manifest) => manifests.push(manifest),
                Err(e) => eprintln!("warning: skipped {name}: {e}"),
            }
        }
        anyhow::Ok(manifests)
    })?;
    let mut manifests = manifests;
    manifests.sort_by(|a, b| a.created_ms.total_cmp(&b.created_ms));
    match args.format {
        FormatArg::Json => crate::render::print_line(&serde_json::to_string(&manifests)?),
        FormatArg::Text if manifests.is_empty() => eprintln!("no models"),
        FormatArg::Text => {
            let rows: Vec<Vec<String>> = manifests.iter().map(row).collect();
            client::print_table(
                &[
                    "MODEL", "KIND", "LABELS", "MACRO-F1", "CREATED", "SIZE", "JOB",
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(m: &ModelManifest) -> Vec<String> {
    vec![
        m.model_id.clone(),
        m.model_kind.clone(),
        labels(&m.labels),
        format!("{:.4}", m.validation_macro_f1),
        client::format_utc_ms(m.created_ms),
        client::format_bytes(m.files.iter().map(|f| f.bytes).sum()),
        m.job_id.clone(),
    ]
}

/// `3: a, b, c` or `12: a, b, c, …`.
fn labels(labels: &[String]) -> String {
    let shown: Vec<&str> = labels
        .iter()
        .take(LABELS_SHOWN)
        .map(String::as_str)
        .collect();
    let more = if labels.len() > LABELS_SHOWN {
        ", …"
    } else {
        ""
    };
    format!("{}: {}{more}", labels.len(), shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_counted_and_shortened() {
        let few: Vec<String> = ["a", "b"].map(String::from).to_vec();
        assert_eq!(labels(&few), "2: a, b");
        let many: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(labels(&many), "4: a, b, c, …");
    }
}
