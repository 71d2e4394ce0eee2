//! [`EvaluationReport`]: the scores of a confusion matrix under human-readable label names,
//! as JSON (through serde) or as a text table ([`EvaluationReport::render_text`]).

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::confusion::{ClassScores, ConfusionMatrix};
use crate::error::EvaluationError;

/// The scores of one class under its label name.
///
/// Serialized flat: `{"label", "precision", "recall", "f1", "support"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelledClassScores {
    /// The class's label name.
    pub label: String,
    /// See [`ClassScores::precision`].
    pub precision: f64,
    /// See [`ClassScores::recall`].
    pub recall: f64,
    /// See [`ClassScores::f1`].
    pub f1: f64,
    /// See [`ClassScores::support`].
    pub support: u64,
}

impl LabelledClassScores {
    /// Attaches a label name to a class's scores.
    pub fn new(label: impl Into<String>, scores: &ClassScores) -> Self {
        Self {
            label: label.into(),
            precision: scores.precision,
            recall: scores.recall,
            f1: scores.f1,
            support: scores.support,
        }
    }

    /// The scores without the label.
    pub fn scores(&self) -> ClassScores {
        ClassScores {
            precision: self.precision,
            recall: self.recall,
            f1: self.f1,
            support: self.support,
        }
    }
}

/// Everything an evaluation run reports; what `lexmesh evaluate --format json` prints.
///
/// Class `i` of the matrix is named `labels[i]`; `per_class` and the rows and columns of
/// `confusion_matrix` (rows = gold, columns = predicted) follow the same order. Built by
/// [`EvaluationReport::new`], which checks that the label names match the matrix; a report
/// deserialized from elsewhere is not re-checked, and [`render_text`](Self::render_text)
/// renders whatever it holds without panicking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// Label names, in class-index order.
    pub labels: Vec<String>,
    /// Number of evaluated examples.
    pub count: u64,
    /// Fraction of examples classified correctly.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 over all classes.
    pub macro_f1: f64,
    /// Mean of per-class F1 weighted by support.
    pub weighted_f1: f64,
    /// Scores of each class, in label order.
    pub per_class: Vec<LabelledClassScores>,
    /// `confusion_matrix[gold][predicted]`, in label order.
    pub confusion_matrix: Vec<Vec<u64>>,
}

impl EvaluationReport {
    /// The report of `matrix`, whose class `i` is named `labels[i]`.
    ///
    /// # Errors
    ///
    /// [`EvaluationError::LabelCountMismatch`] when the number of labels differs from the
    /// number of classes, and [`EvaluationError::DuplicateLabel`] when a label name repeats.
    pub fn new(labels: Vec<String>, matrix: &ConfusionMatrix) -> Result<Self, EvaluationError> {
        if labels.len() != matrix.classes() {
            return Err(EvaluationError::LabelCountMismatch {
                labels: labels.len(),
                classes: matrix.classes(),
            });
        }
        let mut seen = HashSet::with_capacity(labels.len());
        for label in &labels {
            if !seen.insert(label.as_str()) {
                return Err(EvaluationError::DuplicateLabel {
                    label: label.clone(),
                });
            }
        }
        let per_class = labels
            .iter()
            .zip(matrix.per_class())
            .map(|(label, scores)| LabelledClassScores::new(label.as_str(), &scores))
            .collect();
        Ok(Self {
            count: matrix.total(),
            accuracy: matrix.accuracy(),
            macro_f1: matrix.macro_f1(),
            weighted_f1: matrix.weighted_f1(),
            per_class,
            confusion_matrix: matrix.rows().to_vec(),
            labels,
        })
    }

    /// The report of the pairs `(gold[i], predicted[i])` over classes named `labels`.
    ///
    /// # Errors
    ///
    /// Those of [`ConfusionMatrix::from_pairs`] (with `labels.len()` classes) and of
    /// [`EvaluationReport::new`].
    pub fn from_predictions(
        labels: Vec<String>,
        gold: &[usize],
        predicted: &[usize],
    ) -> Result<Self, EvaluationError> {
        let matrix = ConfusionMatrix::from_pairs(labels.len(), gold, predicted)?;
        Self::new(labels, &matrix)
    }

    /// A plain-text rendering for terminals: a summary, a per-class table of precision,
    /// recall, F1 and support, and the confusion matrix with label headers.
    ///
    /// Columns are aligned by displayed character count, not bytes, so Persian labels line
    /// up; zero-width characters (such as the zero-width non-joiner common in Persian) and
    /// combining marks take no column. Control characters in labels are escaped so a label
    /// cannot break the table. Scores are printed with four decimals. Every line ends with
    /// `\n` and has no trailing spaces.
    pub fn render_text(&self) -> String {
        let labels: Vec<String> = self.labels.iter().map(|label| sanitize(label)).collect();
        let mut out = String::new();

        let summary = [
            ("examples", self.count.to_string()),
            ("accuracy", format_score(self.accuracy)),
            ("macro-F1", format_score(self.macro_f1)),
            ("weighted-F1", format_score(self.weighted_f1)),
        ];
        let key_width = summary
            .iter()
            .map(|(key, _)| display_width(key))
            .max()
            .unwrap_or(0);
        for (key, value) in &summary {
            push_line(&mut out, &[pad_right(key, key_width), value.clone()]);
        }

        out.push('\n');
        let header = ["label", "precision", "recall", "f1", "support"];
        let rows: Vec<[String; 5]> = self
            .per_class
            .iter()
            .map(|scores| {
                [
                    sanitize(&scores.label),
                    format_score(scores.precision),
                    format_score(scores.recall),
                    format_score(scores.f1),
                    scores.support.to_string(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|column| {
                rows.iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| display_width(cell))
                    .chain(header.get(column).map(|cell| display_width(cell)))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let table_line = |cells: &[&str]| -> Vec<String> {
            cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, &width))| {
                    if column == 0 {
                        pad_right(cell, width)
                    } else {
                        pad_left(cell, width)
                    }
                })
                .collect()
        };
        push_line(&mut out, &table_line(&header));
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            push_line(&mut out, &table_line(&cells));
        }

        out.push('\n');
        out.push_str("confusion matrix (rows: gold, columns: predicted)\n");
        let corner = "gold \\ predicted";
        let cell = |gold: usize, predicted: usize| -> String {
            self.confusion_matrix
                .get(gold)
                .and_then(|row| row.get(predicted))
                .map_or_else(String::new, u64::to_string)
        };
        let row_header_width = labels
            .iter()
            .map(|label| display_width(label))
            .chain([display_width(corner)])
            .max()
            .unwrap_or(0);
        let column_widths: Vec<usize> = labels
            .iter()
            .enumerate()
            .map(|(predicted, label)| {
                (0..labels.len())
                    .map(|gold| display_width(&cell(gold, predicted)))
                    .chain([display_width(label)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut header_cells = vec![pad_right(corner, row_header_width)];
        header_cells.extend(
            labels
                .iter()
                .zip(&column_widths)
                .map(|(label, &width)| pad_left(label, width)),
        );
        push_line(&mut out, &header_cells);
        for (gold, label) in labels.iter().enumerate() {
            let mut cells = vec![pad_right(label, row_header_width)];
            cells.extend(
                column_widths
                    .iter()
                    .enumerate()
                    .map(|(predicted, &width)| pad_left(&cell(gold, predicted), width)),
            );
            push_line(&mut out, &cells);
        }
        out
    }
}

impl fmt::Display for EvaluationReport {
    /// Writes [`EvaluationReport::render_text`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_text())
    }
}

/// Column separator of the text tables.
const GAP: &str = "  ";

/// Appends `cells` joined by [`GAP`], without trailing spaces, and a newline.
fn push_line(out: &mut String, cells: &[String]) {
    out.push_str(cells.join(GAP).trim_end_matches(' '));
    out.push('\n');
}

fn format_score(score: f64) -> String {
    format!("{score:.4}")
}

/// `text` followed by spaces up to `width` displayed columns.
fn pad_right(text: &str, width: usize) -> String {
    let mut padded = text.to_owned();
    padded.extend(std::iter::repeat_n(
        ' ',
        width.saturating_sub(display_width(text)),
    ));
    padded
}

/// `text` preceded by spaces up to `width` displayed columns.
fn pad_left(text: &str, width: usize) -> String {
    let mut padded: String =
        std::iter::repeat_n(' ', width.saturating_sub(display_width(text))).collect();
    padded.push_str(text);
    padded
}

/// Number of terminal columns `text` takes: its characters, less those that take none.
///
/// Counts characters, not bytes (Persian letters are two bytes each in UTF-8). East Asian
/// wide characters are counted as one column; labels of this product are Persian or Latin.
fn display_width(text: &str) -> usize {
    text.chars().filter(|&c| !is_zero_width(c)).count()
}

/// Format characters and combining marks that a terminal draws with no width of their own.
fn is_zero_width(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'     // combining diacritical marks
        | '\u{0610}'..='\u{061A}'   // Arabic signs above/below
        | '\u{064B}'..='\u{065F}'   // Arabic harakat (fatha, kasra, tashdid, ...)
        | '\u{0670}'                // superscript alef
        | '\u{06D6}'..='\u{06DC}'
        | '\u{06DF}'..='\u{06E4}'
        | '\u{06E7}'..='\u{06E8}'
        | '\u{06EA}'..='\u{06ED}'
        | '\u{200B}'..='\u{200F}'   // zero-width space, ZWNJ, ZWJ, LRM, RLM
        | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}'   // bidi isolates
        | '\u{FE00}'..='\u{FE0F}'   // variation selectors
        | '\u{FEFF}' // zero-width no-break space
    )
}

/// `label` with control characters (newlines, tabs, escapes) written as escapes.
fn sanitize(label: &str) -> String {
    let mut clean = String::with_capacity(label.len());
    for c in label.chars() {
        if c.is_control() {
            clean.extend(c.escape_default());
        } else {
            clean.push(c);
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::{EvaluationReport, LabelledClassScores, display_width, pad_left, pad_right};
    use crate::confusion::ConfusionMatrix;
    use crate::error::EvaluationError;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const TOLERANCE: f64 = 1e-9;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= TOLERANCE,
            "expected {expected}, got {actual}"
        );
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// The 79/21 majority-class case of the confusion tests, with Persian labels:
    /// matrix [[79, 0], [21, 0]], accuracy 0.79, macro F1 79/179, weighted F1 12482/17900;
    /// civil P = 0.79, R = 1, F1 = 158/179 ≈ 0.8827; criminal all 0.
    fn majority_report() -> Result<EvaluationReport, EvaluationError> {
        let matrix = ConfusionMatrix::from_rows(vec![vec![79, 0], vec![21, 0]])?;
        EvaluationReport::new(labels(&["حقوقی", "کیفری"]), &matrix)
    }

    #[test]
    fn report_copies_the_matrix_scores() -> Result<(), EvaluationError> {
        let report = majority_report()?;
        assert_eq!(report.labels, labels(&["حقوقی", "کیفری"]));
        assert_eq!(report.count, 100);
        assert_close(report.accuracy, 0.79);
        assert_close(report.macro_f1, 79.0 / 179.0);
        assert_close(report.weighted_f1, 12482.0 / 17900.0);
        assert_eq!(report.confusion_matrix, vec![vec![79, 0], vec![21, 0]]);
        assert_eq!(report.per_class.len(), 2);
        let civil = &report.per_class[0];
        assert_eq!(civil.label, "حقوقی");
        assert_close(civil.precision, 0.79);
        assert_close(civil.recall, 1.0);
        assert_close(civil.f1, 158.0 / 179.0);
        assert_eq!(civil.support, 79);
        let criminal = &report.per_class[1];
        assert_eq!(criminal.label, "کیفری");
        assert_close(criminal.f1, 0.0);
        assert_eq!(criminal.support, 21);
        Ok(())
    }

    #[test]
    fn from_predictions_matches_new() -> Result<(), EvaluationError> {
        // gold 0 0 0 1 1, predicted 0 0 1 1 0: matrix [[2, 1], [1, 1]], accuracy 3/5,
        // macro F1 (2/3 + 1/2) / 2 = 7/12.
        let names = labels(&["civil", "criminal"]);
        let report =
            EvaluationReport::from_predictions(names.clone(), &[0, 0, 0, 1, 1], &[0, 0, 1, 1, 0])?;
        let matrix = ConfusionMatrix::from_rows(vec![vec![2, 1], vec![1, 1]])?;
        assert_eq!(report, EvaluationReport::new(names, &matrix)?);
        assert_close(report.accuracy, 0.6);
        assert_close(report.macro_f1, 7.0 / 12.0);
        Ok(())
    }

    #[test]
    fn label_count_must_match_the_classes() -> Result<(), EvaluationError> {
        let matrix = ConfusionMatrix::new(3)?;
        assert_eq!(
            EvaluationReport::new(labels(&["a", "b"]), &matrix),
            Err(EvaluationError::LabelCountMismatch {
                labels: 2,
                classes: 3
            })
        );
        assert_eq!(
            EvaluationReport::from_predictions(Vec::new(), &[], &[]),
            Err(EvaluationError::NoClasses)
        );
        assert_eq!(
            EvaluationReport::from_predictions(labels(&["a", "b"]), &[0, 2], &[0, 1]),
            Err(EvaluationError::LabelOutOfRange {
                index: 2,
                classes: 2
            })
        );
        Ok(())
    }

    #[test]
    fn labels_must_be_distinct() -> Result<(), EvaluationError> {
        let matrix = ConfusionMatrix::new(3)?;
        assert_eq!(
            EvaluationReport::new(labels(&["ورزشی", "سیاسی", "ورزشی"]), &matrix),
            Err(EvaluationError::DuplicateLabel {
                label: "ورزشی".to_owned()
            })
        );
        Ok(())
    }

    #[test]
    fn json_has_the_documented_keys() -> TestResult {
        let report = majority_report()?;
        let value = serde_json::to_value(&report)?;
        let object = value.as_object().ok_or("report is not a JSON object")?;
        for key in [
            "labels",
            "count",
            "accuracy",
            "macro_f1",
            "weighted_f1",
            "per_class",
            "confusion_matrix",
        ] {
            assert!(object.contains_key(key), "missing key {key}");
        }
        assert_eq!(value["count"], 100);
        assert_eq!(value["labels"], serde_json::json!(["حقوقی", "کیفری"]));
        assert_eq!(
            value["confusion_matrix"],
            serde_json::json!([[79, 0], [21, 0]])
        );
        let civil = value["per_class"][0]
            .as_object()
            .ok_or("per_class entry is not an object")?;
        let mut keys: Vec<&str> = civil.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["f1", "label", "precision", "recall", "support"]);
        assert_eq!(civil["label"], "حقوقی");
        assert_eq!(civil["support"], 79);
        let accuracy = value["accuracy"]
            .as_f64()
            .ok_or("accuracy is not a number")?;
        assert_close(accuracy, 0.79);

        let back: EvaluationReport = serde_json::from_value(value)?;
        assert_eq!(back, report);
        Ok(())
    }

    #[test]
    fn labelled_scores_round_trip() -> Result<(), EvaluationError> {
        let matrix = ConfusionMatrix::from_rows(vec![vec![2, 1], vec![1, 1]])?;
        let scores = matrix.class_scores(0)?;
        let labelled = LabelledClassScores::new("civil", &scores);
        assert_eq!(labelled.label, "civil");
        assert_eq!(labelled.scores(), scores);
        Ok(())
    }

    #[test]
    fn text_shows_labels_and_numbers() -> Result<(), EvaluationError> {
        let text = majority_report()?.render_text();
        for expected in [
            "حقوقی",
            "کیفری",
            "examples     100",
            "accuracy     0.7900",
            "macro-F1     0.4413", // 79/179 = 0.44134...
            "weighted-F1  0.6973", // 12482/17900 = 0.69731...
            "0.8827",              // civil F1 158/179 = 0.88268...
            "79",
            "21",
            "precision",
            "recall",
            "support",
            "gold \\ predicted",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        Ok(())
    }

    #[test]
    fn text_layout_is_exact() -> Result<(), EvaluationError> {
        let text = majority_report()?.render_text();
        let expected = "\
examples     100
accuracy     0.7900
macro-F1     0.4413
weighted-F1  0.6973

label  precision  recall      f1  support
حقوقی     0.7900  1.0000  0.8827       79
کیفری     0.0000  0.0000  0.0000       21

confusion matrix (rows: gold, columns: predicted)
gold \\ predicted  حقوقی  کیفری
حقوقی                79      0
کیفری                21      0
";
        assert_eq!(text, expected);
        assert_eq!(format!("{}", majority_report()?), expected);
        Ok(())
    }

    #[test]
    fn persian_columns_align_by_characters() -> Result<(), EvaluationError> {
        // Labels of different byte lengths, one with a zero-width non-joiner.
        let names = labels(&["ورزشی", "اقتصادی", "علمی\u{200c}فناوری"]);
        let report = EvaluationReport::from_predictions(names, &[0, 1, 2, 2, 1], &[0, 1, 2, 1, 1])?;
        let text = report.render_text();
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|line| line.starts_with("label"))
            .unwrap_or(usize::MAX);
        assert!(header < lines.len(), "no per-class header in\n{text}");
        let table = &lines[header..header + 4];
        let matrix_header = lines
            .iter()
            .position(|line| line.starts_with("gold"))
            .unwrap_or(usize::MAX);
        assert!(matrix_header < lines.len(), "no matrix header in\n{text}");
        let matrix = &lines[matrix_header..matrix_header + 4];
        for block in [table, matrix] {
            let widths: Vec<usize> = block.iter().map(|line| display_width(line)).collect();
            assert!(
                widths.iter().all(|&width| width == widths[0]),
                "misaligned {widths:?} in\n{text}"
            );
        }
        Ok(())
    }

    #[test]
    fn control_characters_in_labels_are_escaped() -> Result<(), EvaluationError> {
        let matrix = ConfusionMatrix::from_rows(vec![vec![1, 0], vec![0, 1]])?;
        let report = EvaluationReport::new(labels(&["a\nb", "c\td"]), &matrix)?;
        let text = report.render_text();
        assert!(text.contains("a\\nb"));
        assert!(text.contains("c\\td"));
        assert!(!text.contains('\t'));
        // 4 summary + blank + 3 table + blank + title + 3 matrix lines.
        assert_eq!(text.lines().count(), 13);
        Ok(())
    }

    #[test]
    fn inconsistent_report_renders_without_panicking() -> TestResult {
        let report: EvaluationReport = serde_json::from_str(
            r#"{"labels":["a","b","c"],"count":1,"accuracy":1.0,"macro_f1":1.0,
                "weighted_f1":1.0,"per_class":[],"confusion_matrix":[[1]]}"#,
        )?;
        let text = report.render_text();
        assert!(text.contains("gold \\ predicted  a  b  c"));
        assert!(!text.lines().any(|line| line.ends_with(' ')));
        Ok(())
    }

    #[test]
    fn no_trailing_spaces() -> Result<(), EvaluationError> {
        let text = majority_report()?.render_text();
        assert!(text.ends_with('\n'));
        assert!(!text.lines().any(|line| line.ends_with(' ')));
        Ok(())
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        assert_eq!(display_width("civil"), 5);
        // Five letters, ten bytes of UTF-8: five columns.
        assert_eq!(display_width("کیفری"), 5);
        // ZWNJ and a fatha take no column: م ی (ZWNJ) ش و د -> 5, م (fatha) ن -> 2.
        assert_eq!(display_width("می\u{200c}شود"), 5);
        assert_eq!(display_width("مَن"), 2);
        assert_eq!(pad_right("کیفری", 7), "کیفری  ");
        assert_eq!(pad_left("کیفری", 7), "  کیفری");
        assert_eq!(pad_left("long text", 3), "long text");
    }
}
