//! What the standard `OTEL_*` environment variables ask of trace export, read without side
//! effects so that every rule is unit-tested.

use std::time::Duration;

/// The OTLP/HTTP path of traces, appended to `OTEL_EXPORTER_OTLP_ENDPOINT`.
const TRACES_PATH: &str = "v1/traces";

/// The specification's default export timeout.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ExportSettings {
    /// Tracing is not configured (or disabled): install nothing.
    Off,
    /// Tracing is configured in a way lexmesh cannot export; the reason, for a warning.
    Unsupported(String),
    /// Export over OTLP/HTTP protobuf.
    Otlp(OtlpTarget),
}

/// Where and how to export.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OtlpTarget {
    /// The full URL of the traces endpoint (`…/v1/traces`).
    pub(super) endpoint: String,
    /// Whether the endpoint is `https`.
    pub(super) tls: bool,
    /// Timeout of one export request.
    pub(super) timeout: Duration,
    /// Settings that are ignored, for warnings.
    pub(super) warnings: Vec<String>,
}

impl ExportSettings {
    /// Reads the settings through `var` (the environment, or a map in tests); unset and empty
    /// variables are the same.
    pub(super) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Self::Off;
        }
        let endpoint = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(endpoint) => endpoint,
            None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => format!("{}/{TRACES_PATH}", base.trim_end_matches('/')),
                None => return Self::Off,
            },
        };
        if let Some(exporters) = var("OTEL_TRACES_EXPORTER") {
            let exporters: Vec<String> = exporters
                .split(',')
                .map(|e| e.trim().to_ascii_lowercase())
                .collect();
            if exporters.iter().any(|e| e == "none") {
                return Self::Off;
            }
            if !exporters.iter().any(|e| e == "otlp") {
                return Self::Unsupported(format!(
                    "OTEL_TRACES_EXPORTER={}: lexmesh exports traces over OTLP only; set it to \
                     `otlp` (or `none`). Traces are not exported.",
                    exporters.join(",")
                ));
            }
        }
        for protocol_var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(protocol_var) {
                if protocol != "http/protobuf" {
                    return Self::Unsupported(format!(
                        "{protocol_var}={protocol}: lexmesh exports traces over OTLP \
                         `http/protobuf` only (usually port 4318); set it to http/protobuf. \
                         Traces are not exported."
                    ));
                }
                break;
            }
        }
        let tls = match endpoint.parse::<http::Uri>() {
            Ok(uri) if uri.host().is_some() && uri.scheme_str() == Some("http") => false,
            Ok(uri) if uri.host().is_some() && uri.scheme_str() == Some("https") => true,
            _ => {
                return Self::Unsupported(format!(
                    "OTLP traces endpoint `{endpoint}` is not an http:// or https:// URL. \
                     Traces are not exported."
                ));
            }
        };
        let timeout = [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .into_iter()
        .find_map(|name| var(name)?.parse::<u64>().ok())
        .map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis);
        let mut warnings = Vec::new();
        for compression_var in [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ] {
            if let Some(compression) = var(compression_var) {
                if !compression.eq_ignore_ascii_case("none") {
                    warnings.push(format!(
                        "{compression_var}={compression}: lexmesh does not compress OTLP \
                         exports; traces are sent uncompressed."
                    ));
                }
                break;
            }
        }
        Self::Otlp(OtlpTarget {
            endpoint,
            tls,
            timeout,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> ExportSettings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportSettings::from_lookup(|name| vars.get(name).cloned())
    }

    fn otlp(endpoint: &str, tls: bool, timeout_ms: u64) -> ExportSettings {
        ExportSettings::Otlp(OtlpTarget {
            endpoint: endpoint.into(),
            tls,
            timeout: Duration::from_millis(timeout_ms),
            warnings: Vec::new(),
        })
    }

    #[test]
    fn off_unless_an_endpoint_is_given() {
        assert_eq!(settings(&[]), ExportSettings::Off);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]),
            ExportSettings::Off
        );
        assert_eq!(
            settings(&[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_TRACES_SAMPLER", "always_on")
            ]),
            ExportSettings::Off
        );
    }

    #[test]
    fn endpoint_per_specification() {
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]),
            otlp("http://collector:4318/v1/traces", false, 10_000)
        );
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example/base/")]),
            otlp("https://otel.example/base/v1/traces", true, 10_000)
        );
        // The signal's own endpoint is used as is, and wins.
        assert_eq!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:9999/custom"
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            otlp("http://traces:9999/custom", false, 2_500)
        );
        assert_eq!(
            settings(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:9999/custom"
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
            otlp("http://traces:9999/custom", false, 700)
        );
    }

    #[test]
    fn disabled_by_the_sdk_switch_or_the_none_exporter() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]),
            ExportSettings::Off
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            ExportSettings::Off
        );
        assert!(matches!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")]),
            ExportSettings::Otlp(_)
        ));
        assert!(matches!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")]),
            ExportSettings::Otlp(_)
        ));
        assert!(matches!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]),
            ExportSettings::Unsupported(_)
        ));
    }

    #[test]
    fn only_http_protobuf_is_exported() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert!(matches!(
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            ExportSettings::Otlp(_)
        ));
        let ExportSettings::Unsupported(reason) =
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
        else {
            panic!("grpc is not supported");
        };
        assert!(
            reason.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
            "{reason}"
        );
        // The signal's own protocol wins over the general one.
        assert!(matches!(
            settings(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]),
            ExportSettings::Otlp(_)
        ));
        assert!(matches!(
            settings(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
            ]),
            ExportSettings::Unsupported(_)
        ));
        assert!(matches!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]),
            ExportSettings::Unsupported(_)
        ));
    }

    #[test]
    fn compression_is_ignored_with_a_warning() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let ExportSettings::Otlp(target) =
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")])
        else {
            panic!("exported uncompressed");
        };
        assert_eq!(target.warnings.len(), 1);
        assert!(target.warnings[0].contains("OTEL_EXPORTER_OTLP_COMPRESSION=gzip"));
        let ExportSettings::Otlp(target) =
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")])
        else {
            panic!("exported");
        };
        assert!(target.warnings.is_empty());
    }
}
