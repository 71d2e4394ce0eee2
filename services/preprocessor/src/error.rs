//! Errors of reading and preparing data. Each names the file and, where there is one, the
//! 1-based line, so a user can go straight to the problem.

use std::path::PathBuf;

/// Why a dataset could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{path}:{line}: not valid UTF-8 text")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A JSON Lines record is not a valid JSON object.
    #[error("{path}:{line}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// A CSV/TSV record could not be parsed.
    #[error("{path}:{line}: invalid CSV: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the CSV parser said.
        message: String,
    },
    /// A record lacks a required field, or has it empty.
    #[error("{path}:{line}: missing or empty field `{field}`")]
    MissingField {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field name.
        field: String,
    },
    /// A field holds something other than a string (or, for labels, a number or boolean).
    #[error("{path}:{line}: field `{field}` must be a string, found {found}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field name.
        field: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// The CSV/TSV header lacks a column.
    #[error("{path}: header has no column `{field}` (columns: {columns})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        field: String,
        /// The columns present, comma-separated.
        columns: String,
    },
    /// The file holds no records.
    #[error("{path}: no records")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Training needs at least two classes.
    #[error("{path}: every record has the label `{label}`; training needs at least two classes")]
    SingleClass {
        /// The file.
        path: PathBuf,
        /// The one label found.
        label: String,
    },
    /// A label that the model was not trained on.
    #[error("{path}:{line}: unknown label `{label}` (the model knows: {known})")]
    UnknownLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The label found.
        label: String,
        /// The labels the model knows, comma-separated.
        known: String,
    },
    /// The file extension does not say which format it is.
    #[error("{path}: unknown format; use .jsonl/.ndjson/.json (JSON Lines), .csv or .tsv")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A validation split was asked for but a class has too few examples for it.
    #[error("cannot split: {reason}")]
    Split {
        /// Why.
        reason: String,
    },
    /// A fitted preprocessor could not be used (e.g. an empty vocabulary).
    #[error("preprocessing: {reason}")]
    Preprocessing {
        /// Why.
        reason: String,
    },
}
