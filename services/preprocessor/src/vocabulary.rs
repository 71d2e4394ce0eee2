//! The fitted vocabulary: token ↔ id, with the reserved padding and unknown ids, and document
//! frequencies for TF-IDF weighting.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How a vocabulary is fitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VocabularyConfig {
    /// A token must occur at least this many times in the training texts.
    pub min_frequency: usize,
    /// At most this many entries, `<pad>` and `<unk>` included; the most frequent win.
    pub max_size: usize,
}

impl Default for VocabularyConfig {
    fn default() -> Self {
        Self {
            min_frequency: 2,
            max_size: 50_000,
        }
    }
}

/// Token ↔ id. Id 0 is `<pad>`, id 1 is `<unk>`; the rest are ordered by frequency, then by
/// token, so fitting is deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "VocabularyFile", into = "VocabularyFile")]
pub struct Vocabulary {
    tokens: Vec<String>,
    document_frequency: Vec<u32>,
    documents: u32,
    index: HashMap<String, u32>,
}

/// The saved form of a [`Vocabulary`] (the index is rebuilt on load).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabularyFile {
    tokens: Vec<String>,
    document_frequency: Vec<u32>,
    documents: u32,
}

impl From<VocabularyFile> for Vocabulary {
    fn from(f: VocabularyFile) -> Self {
        let index = f
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Self {
            tokens: f.tokens,
            document_frequency: f.document_frequency,
            documents: f.documents,
            index,
        }
    }
}

impl From<Vocabulary> for VocabularyFile {
    fn from(v: Vocabulary) -> Self {
        Self {
            tokens: v.tokens,
            document_frequency: v.document_frequency,
            documents: v.documents,
        }
    }
}

impl Vocabulary {
    /// Id of the padding token.
    pub const PAD: u32 = 0;
    /// Id of the unknown token.
    pub const UNK: u32 = 1;

    /// Fits a vocabulary on documents given as token lists.
    pub fn fit<'a, D, T>(documents: D, config: &VocabularyConfig) -> Self
    where
        D: IntoIterator<Item = T>,
        T: IntoIterator<Item = &'a str>,
    {
        let mut counts: HashMap<&'a str, (u64, u32)> = HashMap::new();
        let mut n_docs = 0u32;
        let mut seen_in_doc: HashMap<&'a str, u32> = HashMap::new();
        for doc in documents {
            n_docs += 1;
            for token in doc {
                let entry = counts.entry(token).or_insert((0, 0));
                entry.0 += 1;
                let last = seen_in_doc.entry(token).or_insert(0);
                if *last != n_docs {
                    *last = n_docs;
                    entry.1 += 1;
                }
            }
        }
        let mut kept: Vec<(&str, u64, u32)> = counts
            .into_iter()
            .filter(|(_, (count, _))| *count >= config.min_frequency.max(1) as u64)
            .map(|(t, (c, df))| (t, c, df))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        kept.truncate(config.max_size.saturating_sub(2));
        let mut tokens = vec!["<pad>".to_string(), "<unk>".to_string()];
        let mut document_frequency = vec![0, 0];
        for (t, _, df) in kept {
            tokens.push(t.to_string());
            document_frequency.push(df);
        }
        VocabularyFile {
            tokens,
            document_frequency,
            documents: n_docs,
        }
        .into()
    }

    /// Number of entries, `<pad>` and `<unk>` included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether only the reserved entries exist.
    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= 2
    }

    /// Id of a token, if known.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// Id of a token, `<unk>` if unknown.
    pub fn id_or_unk(&self, token: &str) -> u32 {
        self.id(token).unwrap_or(Self::UNK)
    }

    /// Token of an id.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Smoothed inverse document frequency of an id (scikit-learn's `smooth_idf`):
    /// `ln((1 + N) / (1 + df)) + 1`.
    pub fn idf(&self, id: u32) -> f32 {
        let df = self
            .document_frequency
            .get(id as usize)
            .copied()
            .unwrap_or(0);
        smoothed_idf(self.documents, df)
    }

    /// Number of documents the vocabulary was fitted on.
    pub fn documents(&self) -> u32 {
        self.documents
    }
}

/// `ln((1 + N) / (1 + df)) + 1`.
pub fn smoothed_idf(documents: u32, df: u32) -> f32 {
    (((1.0 + f64::from(documents)) / (1.0 + f64::from(df))).ln() + 1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<Vec<&'static str>> {
        vec![
            vec!["دادگاه", "حکم", "دادگاه"],
            vec!["دادگاه", "متهم"],
            vec!["خواهان", "حکم", "یکبار"],
        ]
    }

    #[test]
    fn orders_by_frequency_and_applies_min_frequency() {
        let v = Vocabulary::fit(
            docs(),
            &VocabularyConfig {
                min_frequency: 2,
                max_size: 100,
            },
        );
        assert_eq!(v.token(0), Some("<pad>"));
        assert_eq!(v.token(1), Some("<unk>"));
        assert_eq!(v.token(2), Some("دادگاه"));
        assert_eq!(v.token(3), Some("حکم"));
        assert_eq!(v.len(), 4);
        assert_eq!(v.id_or_unk("متهم"), Vocabulary::UNK);
    }

    #[test]
    fn max_size_counts_reserved_tokens() {
        let v = Vocabulary::fit(
            docs(),
            &VocabularyConfig {
                min_frequency: 1,
                max_size: 3,
            },
        );
        assert_eq!(v.len(), 3);
        assert_eq!(v.id("دادگاه"), Some(2));
    }

    #[test]
    fn idf_uses_document_frequency() {
        let v = Vocabulary::fit(
            docs(),
            &VocabularyConfig {
                min_frequency: 1,
                max_size: 100,
            },
        );
        // دادگاه is in 2 of 3 documents (twice in the first): ln(4/3) + 1.
        let id = v.id("دادگاه").unwrap();
        assert!((v.idf(id) - ((4.0f32 / 3.0).ln() + 1.0)).abs() < 1e-6);
        let rare = v.id("یکبار").unwrap();
        assert!(v.idf(rare) > v.idf(id));
    }

    #[test]
    fn round_trips_through_json() {
        let v = Vocabulary::fit(docs(), &VocabularyConfig::default());
        let back: Vocabulary = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.id("حکم"), v.id("حکم"));
    }
}
