//! Reading labelled texts: JSON Lines (`{"text": ..., "label": ...}`, other fields ignored) and
//! CSV/TSV with a header row. Field names are configurable, so the same rulings file can be read
//! by its `title` or `principle` instead of its full `text`.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The raw text, as read.
    pub text: String,
    /// The class label, as read (numbers and booleans are turned into their JSON text).
    pub label: String,
    /// 1-based line of the record in its file (the header is line 1 for CSV/TSV).
    pub line: usize,
}

/// Which fields hold the text and the label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldNames {
    /// The text field (default `text`).
    pub text: String,
    /// The label field (default `label`).
    pub label: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            text: "text".into(),
            label: "label".into(),
        }
    }
}

/// File formats understood by [`Dataset::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetFormat {
    /// One JSON object per line.
    JsonLines,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
}

impl DatasetFormat {
    /// The format a file's extension says (`.jsonl`, `.ndjson`, `.json`, `.csv`, `.tsv`).
    pub fn from_path(path: &Path) -> Result<Self, DataError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson" | "json") => Ok(Self::JsonLines),
            Some("csv") => Ok(Self::Csv),
            Some("tsv" | "tab") => Ok(Self::Tsv),
            _ => Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// A file of labelled texts.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it was read from.
    pub path: PathBuf,
    /// The records, in file order.
    pub examples: Vec<Example>,
}

impl Dataset {
    /// Reads a labelled dataset; every record must have a non-empty text and label.
    pub fn load(path: &Path, fields: &FieldNames) -> Result<Self, DataError> {
        let records = read_records(path, fields, true)?;
        let examples = records
            .into_iter()
            .map(|r| Example {
                text: r.text,
                label: r.label.unwrap_or_default(),
                line: r.line,
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            examples,
        })
    }

    /// Builds a dataset from records already in memory (the path is only used in messages).
    pub fn from_examples(path: impl Into<PathBuf>, examples: Vec<Example>) -> Self {
        Self {
            path: path.into(),
            examples,
        }
    }

    /// Builds a dataset from JSON objects already in memory (a job's inline records), read
    /// exactly as the lines of a JSON Lines file: the text must be a non-blank string, the label
    /// a non-blank string, number or boolean, other fields are ignored. `name` stands for the
    /// file in messages; record `i` is reported as line `i + 1`.
    pub fn from_json_records<'a>(
        name: &str,
        records: impl IntoIterator<Item = &'a serde_json::Map<String, serde_json::Value>>,
        fields: &FieldNames,
    ) -> Result<Self, DataError> {
        let path = Path::new(name);
        let examples = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                Ok(Example {
                    text: field_string(path, i + 1, record, &fields.text, false)?,
                    label: field_string(path, i + 1, record, &fields.label, true)?,
                    line: i + 1,
                })
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        if examples.is_empty() {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self::from_examples(name, examples))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Count of records per label, in label order.
    pub fn label_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for e in &self.examples {
            *counts.entry(e.label.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The labels of a training set: sorted, at least two, else [`DataError::SingleClass`].
    pub fn training_labels(&self) -> Result<LabelSet, DataError> {
        let counts = self.label_counts();
        let mut labels = counts.keys();
        match (labels.next(), labels.next()) {
            (None, _) => Err(DataError::Empty {
                path: self.path.clone(),
            }),
            (Some(only), None) => Err(DataError::SingleClass {
                path: self.path.clone(),
                label: only.clone(),
            }),
            _ => Ok(LabelSet::new(counts.into_keys().collect())),
        }
    }
}

/// Reads texts for prediction: the label field is not required (and ignored).
pub fn load_texts(path: &Path, text_field: &str) -> Result<Vec<String>, DataError> {
    let fields = FieldNames {
        text: text_field.to_string(),
        label: String::new(),
    };
    Ok(read_records(path, &fields, false)?
        .into_iter()
        .map(|r| r.text)
        .collect())
}

/// Parses one JSON Lines record for prediction (`{"text": ...}`); `source` and `line` only
/// serve the error message.
pub fn parse_text_record(
    source: &Path,
    line: usize,
    raw: &str,
    text_field: &str,
) -> Result<String, DataError> {
    let value = parse_json_object(source, line, raw)?;
    field_string(source, line, &value, text_field, false)
}

/// The ordered set of class labels a model predicts; index = class id. Stored as the plain list
/// of labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct LabelSet {
    labels: Vec<String>,
    index: HashMap<String, usize>,
}

impl From<Vec<String>> for LabelSet {
    fn from(labels: Vec<String>) -> Self {
        Self::new(labels)
    }
}

impl From<LabelSet> for Vec<String> {
    fn from(set: LabelSet) -> Self {
        set.labels
    }
}

impl LabelSet {
    /// A label set from labels in class-id order.
    pub fn new(labels: Vec<String>) -> Self {
        let index = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        Self { labels, index }
    }

    /// Labels in class-id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Class id of a label.
    pub fn id(&self, label: &str) -> Option<usize> {
        self.index.get(label).copied()
    }

    /// Label of a class id.
    pub fn label(&self, id: usize) -> Option<&str> {
        self.labels.get(id).map(String::as_str)
    }

    /// Class ids of a dataset's labels; an unseen label is [`DataError::UnknownLabel`].
    pub fn encode(&self, dataset: &Dataset) -> Result<Vec<usize>, DataError> {
        dataset
            .examples
            .iter()
            .map(|e| {
                self.id(&e.label).ok_or_else(|| DataError::UnknownLabel {
                    path: dataset.path.clone(),
                    line: e.line,
                    label: e.label.clone(),
                    known: self.labels.join(", "),
                })
            })
            .collect()
    }
}

/// A record as read, before it is known whether a label is required.
struct RawRecord {
    text: String,
    label: Option<String>,
    line: usize,
}

fn read_records(
    path: &Path,
    fields: &FieldNames,
    need_label: bool,
) -> Result<Vec<RawRecord>, DataError> {
    let format = DatasetFormat::from_path(path)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let records = match format {
        DatasetFormat::JsonLines => read_json_lines(path, &bytes, fields, need_label)?,
        DatasetFormat::Csv => read_delimited(path, &bytes, b',', fields, need_label)?,
        DatasetFormat::Tsv => read_delimited(path, &bytes, b'\t', fields, need_label)?,
    };
    if records.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(records)
}

fn read_json_lines(
    path: &Path,
    bytes: &[u8],
    fields: &FieldNames,
    need_label: bool,
) -> Result<Vec<RawRecord>, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut records = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = std::str::from_utf8(raw).map_err(|_| DataError::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
        })?;
        if raw.trim().is_empty() {
            continue;
        }
        let value = parse_json_object(path, line, raw)?;
        let text = field_string(path, line, &value, &fields.text, false)?;
        let label = if need_label {
            Some(field_string(path, line, &value, &fields.label, true)?)
        } else {
            None
        };
        records.push(RawRecord { text, label, line });
    }
    Ok(records)
}

fn parse_json_object(
    path: &Path,
    line: usize,
    raw: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, DataError> {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(other) => Err(DataError::Json {
            path: path.to_path_buf(),
            line,
            message: format!("expected an object, found {}", json_type(&other)),
        }),
        Err(e) => Err(DataError::Json {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        }),
    }
}

fn field_string(
    path: &Path,
    line: usize,
    record: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    is_label: bool,
) -> Result<String, DataError> {
    let missing = || DataError::MissingField {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
    };
    let value = match record.get(field) {
        None | Some(serde_json::Value::Null) => return Err(missing()),
        Some(v) => v,
    };
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if is_label => n.to_string(),
        serde_json::Value::Bool(b) if is_label => b.to_string(),
        other => {
            return Err(DataError::WrongType {
                path: path.to_path_buf(),
                line,
                field: field.to_string(),
                found: json_type(other),
            });
        }
    };
    if text.trim().is_empty() {
        return Err(missing());
    }
    Ok(if is_label {
        text.trim().to_string()
    } else {
        text
    })
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_delimited(
    path: &Path,
    bytes: &[u8],
    delimiter: u8,
    fields: &FieldNames,
    need_label: bool,
) -> Result<Vec<RawRecord>, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let csv_error = |e: csv::Error, fallback_line: usize| {
        let line = e
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or(fallback_line);
        DataError::Csv {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        }
    };
    let headers = reader.byte_headers().map_err(|e| csv_error(e, 1))?.clone();
    let headers: Vec<String> = headers
        .iter()
        .map(|h| {
            std::str::from_utf8(h)
                .map(|s| s.trim().to_string())
                .map_err(|_| DataError::InvalidUtf8 {
                    path: path.to_path_buf(),
                    line: 1,
                })
        })
        .collect::<Result<_, _>>()?;
    // An empty file has no header at all; a blank first line has one empty column.
    if headers.iter().all(String::is_empty) {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let column = |field: &str| {
        headers
            .iter()
            .position(|h| h == field)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                field: field.to_string(),
                columns: headers.join(", "),
            })
    };
    let text_col = column(&fields.text)?;
    let label_col = if need_label {
        Some(column(&fields.label)?)
    } else {
        None
    };
    let mut records = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(e, records.len() + 2)),
        }
        let line = record
            .position()
            .map(|p| p.line() as usize)
            .unwrap_or(records.len() + 2);
        let get = |col: usize, field: &str| -> Result<String, DataError> {
            let raw = record.get(col).unwrap_or_default();
            let text = std::str::from_utf8(raw).map_err(|_| DataError::InvalidUtf8 {
                path: path.to_path_buf(),
                line,
            })?;
            if text.trim().is_empty() {
                return Err(DataError::MissingField {
                    path: path.to_path_buf(),
                    line,
                    field: field.to_string(),
                });
            }
            Ok(text.to_string())
        };
        let text = get(text_col, &fields.text)?;
        let label = match label_col {
            Some(col) => Some(get(col, &fields.label)?.trim().to_string()),
            None => None,
        };
        records.push(RawRecord { text, label, line });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content)
            .unwrap();
        (dir, path)
    }

    #[test]
    fn reads_json_lines_with_other_fields_and_blank_lines() {
        let (_d, p) = write(
            "a.jsonl",
            "{\"id\":1,\"text\":\"رأی دادگاه\",\"label\":\"civil\"}\n\n{\"text\":\"متهم\",\"label\":\"criminal\",\"x\":[1]}\n".as_bytes(),
        );
        let ds = Dataset::load(&p, &FieldNames::default()).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.examples[1].label, "criminal");
        assert_eq!(ds.examples[1].line, 3);
        assert_eq!(
            ds.training_labels().unwrap().labels(),
            ["civil", "criminal"]
        );
    }

    #[test]
    fn picks_other_fields() {
        let (_d, p) = write(
            "a.jsonl",
            b"{\"title\":\"t1\",\"cls\":1}\n{\"title\":\"t2\",\"cls\":2}\n",
        );
        let fields = FieldNames {
            text: "title".into(),
            label: "cls".into(),
        };
        let ds = Dataset::load(&p, &fields).unwrap();
        assert_eq!(ds.examples[0].text, "t1");
        assert_eq!(ds.examples[1].label, "2");
    }

    #[test]
    fn reads_csv_and_tsv_with_quotes_and_newlines() {
        let (_d, p) = write(
            "a.csv",
            "label,text\ncivil,\"دعوی, خواهان\"\ncriminal,\"متهم\nدوم\"\ncivil,x\n".as_bytes(),
        );
        let ds = Dataset::load(&p, &FieldNames::default()).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.examples[0].text, "دعوی, خواهان");
        assert_eq!(ds.examples[1].text, "متهم\nدوم");
        assert_eq!(ds.examples[2].line, 5);
        let (_d2, p2) = write("a.tsv", b"text\tlabel\nx y\ta\nz\tb\n");
        let ds = Dataset::load(&p2, &FieldNames::default()).unwrap();
        assert_eq!(ds.examples[1].label, "b");
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let (_d, p) = write(
            "a.jsonl",
            b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"\xff\xfe\",\"label\":\"y\"}\n",
        );
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidUtf8 { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("a.jsonl:2"), "{err}");
        let (_d, p) = write("a.csv", b"text,label\nok,x\n\xff,y\n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidUtf8 { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn broken_json_names_the_line() {
        let (_d, p) = write(
            "a.jsonl",
            b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\": \"a\", \"label\": \n",
        );
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(matches!(err, DataError::Json { line: 2, .. }), "{err}");
        let (_d, p) = write("a.jsonl", b"[1,2]\n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(err.to_string().contains("expected an object"), "{err}");
    }

    #[test]
    fn missing_and_mistyped_fields() {
        let (_d, p) = write("a.jsonl", b"{\"text\":\"a\"}\n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingField { line: 1, field, .. } if field == "label"),
            "{err}"
        );
        let (_d, p) = write("a.jsonl", b"{\"text\":\"  \",\"label\":\"x\"}\n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(matches!(&err, DataError::MissingField { field, .. } if field == "text"));
        let (_d, p) = write("a.jsonl", b"{\"text\":5,\"label\":\"x\"}\n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(matches!(err, DataError::WrongType { .. }), "{err}");
        let (_d, p) = write("a.csv", b"body,label\nx,y\n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(err.to_string().contains("no column `text`"), "{err}");
        let (_d, p) = write("a.csv", b"text,label\nx,\n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(
            matches!(err, DataError::MissingField { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn empty_and_single_class() {
        let (_d, p) = write("a.jsonl", b"\n  \n");
        let err = Dataset::load(&p, &FieldNames::default()).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
        let (_d, p) = write("a.csv", b"");
        assert!(matches!(
            Dataset::load(&p, &FieldNames::default()).unwrap_err(),
            DataError::Empty { .. }
        ));
        let (_d, p) = write(
            "a.jsonl",
            b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"x\"}\n",
        );
        let ds = Dataset::load(&p, &FieldNames::default()).unwrap();
        assert!(matches!(
            ds.training_labels().unwrap_err(),
            DataError::SingleClass { .. }
        ));
    }

    #[test]
    fn unknown_label_is_reported_with_line() {
        let (_d, p) = write(
            "a.jsonl",
            b"{\"text\":\"a\",\"label\":\"civil\"}\n{\"text\":\"b\",\"label\":\"admin\"}\n",
        );
        let ds = Dataset::load(&p, &FieldNames::default()).unwrap();
        let labels = LabelSet::new(vec!["civil".into(), "criminal".into()]);
        let err = labels.encode(&ds).unwrap_err();
        assert!(
            err.to_string().contains(":2: unknown label `admin`"),
            "{err}"
        );
    }

    #[test]
    fn label_set_round_trips_through_json() {
        let labels = LabelSet::new(vec!["b".into(), "a".into()]);
        let json = serde_json::to_string(&labels).unwrap();
        assert_eq!(json, "[\"b\",\"a\"]");
        let back: LabelSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.id("a"), Some(1));
    }

    #[test]
    fn unknown_extension() {
        let (_d, p) = write("a.txt", b"x");
        assert!(matches!(
            Dataset::load(&p, &FieldNames::default()).unwrap_err(),
            DataError::UnknownFormat { .. }
        ));
    }
}
