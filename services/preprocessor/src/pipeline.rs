//! The fitted preprocessing saved with every model: normaliser settings, feature settings,
//! vocabulary and n-gram statistics. `encode` is the one path from raw text to model input, in
//! training and in inference alike, so a saved model reproduces its training preprocessing
//! exactly.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::normalize::{Normalizer, NormalizerConfig};
use crate::tokenize::{Tokenizer, WordTokenizer, char_ngram_hashes};
use crate::vocabulary::{Vocabulary, VocabularyConfig, smoothed_idf};

/// How texts become model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureMode {
    /// Word ids in text order (CNN, GRU/LSTM, Transformer).
    Sequence,
    /// A bag of distinct features with weights (embedding-bag models): words, optional word
    /// bigrams and hashed character n-grams.
    Bag,
}

/// Feature settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureConfig {
    /// Sequence or bag.
    pub mode: FeatureMode,
    /// Longest sequence (sequence mode) or most distinct features (bag mode) kept per text; the
    /// text's beginning is kept.
    pub max_length: usize,
    /// Vocabulary fitting.
    pub vocabulary: VocabularyConfig,
    /// Bag mode: word n-grams up to this order (1 = words, 2 = words and bigrams).
    pub word_ngrams: usize,
    /// Bag mode: character n-gram lengths `[min, max]`, or none.
    pub char_ngrams: Option<[usize; 2]>,
    /// Bag mode: number of hash buckets for character n-grams.
    pub char_buckets: usize,
    /// Bag mode: weight features by sublinear TF × IDF (L2-normalised) instead of a plain mean.
    pub tfidf: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            mode: FeatureMode::Sequence,
            max_length: 256,
            vocabulary: VocabularyConfig::default(),
            word_ngrams: 1,
            char_ngrams: None,
            char_buckets: 0,
            tfidf: false,
        }
    }
}

/// One encoded text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Encoded {
    /// Feature ids (sequence mode: word ids in order; bag mode: distinct feature ids).
    pub ids: Vec<u32>,
    /// Bag mode: one weight per id, summing or L2-normalising to 1; empty in sequence mode.
    pub weights: Vec<f32>,
}

/// Fitted preprocessing: normalise, tokenise, map to ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessor {
    normalizer: NormalizerConfig,
    features: FeatureConfig,
    vocabulary: Vocabulary,
    /// Bag mode with character n-grams: documents per hash bucket, for IDF.
    bucket_document_frequency: Vec<u32>,
    #[serde(skip)]
    normalizer_impl: Option<Normalizer>,
    /// The buckets seen in training, numbered densely (derived from
    /// `bucket_document_frequency` on first use).
    #[serde(skip)]
    bucket_index: std::sync::OnceLock<BucketIndex>,
}

/// Dense ids of the character n-gram buckets that occur in the training texts. A bucket no
/// training text fills would only ever hold an untrained row: it gets no id, so the id space
/// (and a bag model's table) is bounded by the distinct n-grams actually seen, and such
/// n-grams are left out of a new text's bag, as a vectoriser leaves out unknown terms.
#[derive(Debug, Clone, Default)]
struct BucketIndex {
    /// Per bucket: its dense id, or `u32::MAX` when unseen.
    dense: Vec<u32>,
    /// Per dense id: its bucket.
    bucket: Vec<u32>,
}

impl BucketIndex {
    fn new(document_frequency: &[u32]) -> Self {
        let mut index = Self {
            dense: vec![u32::MAX; document_frequency.len()],
            bucket: Vec::new(),
        };
        for (b, &df) in document_frequency.iter().enumerate() {
            if df > 0 {
                index.dense[b] = index.bucket.len() as u32;
                index.bucket.push(b as u32);
            }
        }
        index
    }
}

impl Preprocessor {
    /// Fits vocabulary and n-gram statistics on training texts.
    pub fn fit<S: AsRef<str>>(
        texts: &[S],
        normalizer: NormalizerConfig,
        features: FeatureConfig,
    ) -> Result<Self, DataError> {
        if features.max_length == 0 {
            return Err(DataError::Preprocessing {
                reason: "max_length must be at least 1".into(),
            });
        }
        if features.mode == FeatureMode::Bag {
            if !(1..=3).contains(&features.word_ngrams) {
                return Err(DataError::Preprocessing {
                    reason: format!(
                        "word_ngrams must be 1, 2 or 3, got {}",
                        features.word_ngrams
                    ),
                });
            }
            if let Some([min, max]) = features.char_ngrams
                && (min == 0 || min > max || features.char_buckets == 0)
            {
                return Err(DataError::Preprocessing {
                    reason: format!(
                        "char_ngrams [{min}, {max}] needs 1 <= min <= max and char_buckets > 0"
                    ),
                });
            }
        }
        let norm = Normalizer::new(normalizer.clone());
        let normalized: Vec<String> = texts.iter().map(|t| norm.normalize(t.as_ref())).collect();
        let mut token_lists: Vec<Vec<&str>> = Vec::with_capacity(normalized.len());
        for text in &normalized {
            let mut tokens = Vec::new();
            WordTokenizer.tokenize(text, &mut tokens);
            token_lists.push(tokens);
        }
        let n_gram_order = match features.mode {
            FeatureMode::Sequence => 1,
            FeatureMode::Bag => features.word_ngrams,
        };
        let vocabulary = if n_gram_order == 1 {
            Vocabulary::fit(
                token_lists.iter().map(|t| t.iter().copied()),
                &features.vocabulary,
            )
        } else {
            let grams: Vec<Vec<String>> = token_lists
                .iter()
                .map(|t| word_ngrams(t, n_gram_order))
                .collect();
            Vocabulary::fit(
                grams.iter().map(|g| g.iter().map(String::as_str)),
                &features.vocabulary,
            )
        };
        if vocabulary.is_empty() && features.char_ngrams.is_none() {
            return Err(DataError::Preprocessing {
                reason: format!(
                    "no token occurs at least {} times in the training texts",
                    features.vocabulary.min_frequency
                ),
            });
        }
        let mut bucket_document_frequency = Vec::new();
        if features.mode == FeatureMode::Bag
            && let Some([min, max]) = features.char_ngrams
        {
            bucket_document_frequency = vec![0u32; features.char_buckets];
            let mut last_doc = vec![u32::MAX; features.char_buckets];
            for (doc, tokens) in token_lists.iter().enumerate() {
                for token in tokens {
                    char_ngram_hashes(token, min, max, |h| {
                        let b = (h % features.char_buckets as u64) as usize;
                        if last_doc[b] != doc as u32 {
                            last_doc[b] = doc as u32;
                            bucket_document_frequency[b] += 1;
                        }
                    });
                }
            }
        }
        Ok(Self {
            normalizer: norm.config().clone(),
            features,
            vocabulary,
            bucket_document_frequency,
            normalizer_impl: Some(norm),
            bucket_index: std::sync::OnceLock::new(),
        })
    }

    /// The normaliser settings.
    pub fn normalizer_config(&self) -> &NormalizerConfig {
        &self.normalizer
    }

    /// The feature settings.
    pub fn features(&self) -> &FeatureConfig {
        &self.features
    }

    /// The vocabulary.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// Size of the id space the model's embedding table must cover: the vocabulary and the
    /// character n-gram buckets seen in training.
    pub fn feature_space(&self) -> usize {
        self.vocabulary.len() + self.buckets().bucket.len()
    }

    fn buckets(&self) -> &BucketIndex {
        self.bucket_index
            .get_or_init(|| BucketIndex::new(&self.bucket_document_frequency))
    }

    /// Normalises a text with the fitted settings.
    pub fn normalize(&self, text: &str) -> String {
        match &self.normalizer_impl {
            Some(n) => n.normalize(text),
            None => Normalizer::new(self.normalizer.clone()).normalize(text),
        }
    }

    /// Rebuilds derived state after deserialisation (call once after loading).
    pub fn prepared(mut self) -> Self {
        self.normalizer_impl = Some(Normalizer::new(self.normalizer.clone()));
        self
    }

    /// Encodes one raw text.
    pub fn encode(&self, text: &str) -> Encoded {
        let normalized = self.normalize(text);
        let mut tokens = Vec::new();
        WordTokenizer.tokenize(&normalized, &mut tokens);
        match self.features.mode {
            FeatureMode::Sequence => self.encode_sequence(&tokens),
            FeatureMode::Bag => self.encode_bag(&tokens),
        }
    }

    /// Encodes many texts.
    pub fn encode_all<S: AsRef<str>>(&self, texts: &[S]) -> Vec<Encoded> {
        texts.iter().map(|t| self.encode(t.as_ref())).collect()
    }

    fn encode_sequence(&self, tokens: &[&str]) -> Encoded {
        let ids = tokens
            .iter()
            .take(self.features.max_length)
            .map(|t| self.vocabulary.id_or_unk(t))
            .collect();
        Encoded {
            ids,
            weights: Vec::new(),
        }
    }

    fn encode_bag(&self, tokens: &[&str]) -> Encoded {
        let max = self.features.max_length;
        let mut position: HashMap<u32, usize> = HashMap::new();
        let mut ids: Vec<u32> = Vec::new();
        let mut counts: Vec<f32> = Vec::new();
        let mut add = |id: u32, ids: &mut Vec<u32>, counts: &mut Vec<f32>| {
            if let Some(&p) = position.get(&id) {
                counts[p] += 1.0;
            } else if ids.len() < max {
                position.insert(id, ids.len());
                ids.push(id);
                counts.push(1.0);
            }
        };
        let vocab_len = self.vocabulary.len() as u32;
        let buckets = self.bucket_document_frequency.len() as u64;
        let dense = &self.buckets().dense;
        let mut gram = String::new();
        for (i, token) in tokens.iter().enumerate() {
            if let Some(id) = self.vocabulary.id(token) {
                add(id, &mut ids, &mut counts);
            }
            for n in 2..=self.features.word_ngrams {
                if i + n > tokens.len() {
                    break;
                }
                gram.clear();
                join_into(&tokens[i..i + n], &mut gram);
                if let Some(id) = self.vocabulary.id(&gram) {
                    add(id, &mut ids, &mut counts);
                }
            }
            if let Some([min, max_n]) = self.features.char_ngrams
                && buckets > 0
            {
                char_ngram_hashes(token, min, max_n, |h| {
                    let id = dense[(h % buckets) as usize];
                    if id != u32::MAX {
                        add(vocab_len + id, &mut ids, &mut counts);
                    }
                });
            }
        }
        if ids.is_empty() {
            // Nothing known: one <unk>, so every text has at least one feature.
            return Encoded {
                ids: vec![Vocabulary::UNK],
                weights: vec![1.0],
            };
        }
        let weights = if self.features.tfidf {
            let mut w: Vec<f32> = ids
                .iter()
                .zip(&counts)
                .map(|(&id, &tf)| (1.0 + tf.ln()) * self.idf(id))
                .collect();
            let norm = w
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            w.iter_mut().for_each(|x| *x /= norm);
            w
        } else {
            let total: f32 = counts.iter().sum();
            counts.iter().map(|c| c / total).collect()
        };
        Encoded { ids, weights }
    }

    fn idf(&self, id: u32) -> f32 {
        let vocab_len = self.vocabulary.len() as u32;
        if id < vocab_len {
            self.vocabulary.idf(id)
        } else {
            let df = self
                .buckets()
                .bucket
                .get((id - vocab_len) as usize)
                .and_then(|&b| self.bucket_document_frequency.get(b as usize))
                .copied()
                .unwrap_or(0);
            smoothed_idf(self.vocabulary.documents(), df)
        }
    }
}

fn join_into(tokens: &[&str], out: &mut String) {
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(t);
    }
}

fn word_ngrams(tokens: &[&str], order: usize) -> Vec<String> {
    let mut out: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    for n in 2..=order {
        for window in tokens.windows(n) {
            let mut s = String::new();
            join_into(window, &mut s);
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXTS: [&str; 4] = [
        "دادگاه حکم به محکومیت متهم صادر می کند",
        "دادگاه دعوی خواهان را وارد دانسته و حکم صادر می کند",
        "متهم به حبس محکوم شد",
        "خواهان دادخواست مطالبه وجه داد",
    ];

    fn vocab1() -> FeatureConfig {
        FeatureConfig {
            vocabulary: VocabularyConfig {
                min_frequency: 1,
                max_size: 1000,
            },
            ..FeatureConfig::default()
        }
    }

    #[test]
    fn sequence_mode_maps_in_order_truncates_and_uses_unk() {
        let features = FeatureConfig {
            max_length: 3,
            ..vocab1()
        };
        let p = Preprocessor::fit(&TEXTS, NormalizerConfig::default(), features).unwrap();
        let e = p.encode("دادگاه ناشناخته حکم صادر");
        assert_eq!(e.ids.len(), 3);
        assert_eq!(e.ids[1], Vocabulary::UNK);
        assert_eq!(p.vocabulary().token(e.ids[0]), Some("دادگاه"));
        assert!(e.weights.is_empty());
    }

    #[test]
    fn normalisation_is_applied_before_lookup() {
        let p = Preprocessor::fit(&TEXTS, NormalizerConfig::default(), vocab1()).unwrap();
        // Arabic kaf/yeh variants of "می کند" reach the same ids as the Persian forms.
        assert_eq!(p.encode("مي كند").ids, p.encode("می کند").ids);
    }

    #[test]
    fn bag_mode_has_distinct_ids_bigrams_char_ngrams_and_unit_weights() {
        let features = FeatureConfig {
            mode: FeatureMode::Bag,
            max_length: 10_000,
            word_ngrams: 2,
            char_ngrams: Some([3, 5]),
            char_buckets: 1000,
            tfidf: true,
            ..vocab1()
        };
        let p = Preprocessor::fit(&TEXTS, NormalizerConfig::default(), features).unwrap();
        // Only the buckets the training texts fill get ids.
        let seen = p
            .bucket_document_frequency
            .iter()
            .filter(|&&df| df > 0)
            .count();
        assert!(seen > 50 && seen < 1000, "{seen}");
        assert_eq!(p.feature_space(), p.vocabulary().len() + seen);
        for t in TEXTS {
            let e = p.encode(t);
            assert!(e.ids.iter().all(|&id| (id as usize) < p.feature_space()));
        }
        assert!(
            p.vocabulary().id("حکم صادر").is_some(),
            "bigram in vocabulary"
        );
        let e = p.encode("دادگاه حکم صادر دادگاه");
        let mut sorted = e.ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), e.ids.len(), "ids are distinct");
        assert!(e.ids.iter().any(|&id| id as usize >= p.vocabulary().len()));
        let norm: f32 = e.weights.iter().map(|w| w * w).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        // An unseen word still has character n-gram features.
        let unseen = p.encode("محکومیتها");
        assert!(
            unseen
                .ids
                .iter()
                .all(|&id| id as usize >= p.vocabulary().len())
        );
        assert!(!unseen.ids.is_empty());
    }

    #[test]
    fn bag_mean_weights_sum_to_one_and_empty_text_gets_unk() {
        let features = FeatureConfig {
            mode: FeatureMode::Bag,
            ..vocab1()
        };
        let p = Preprocessor::fit(&TEXTS, NormalizerConfig::default(), features).unwrap();
        let e = p.encode("دادگاه دادگاه حکم");
        assert_eq!(e.ids.len(), 2);
        assert!((e.weights[0] - 2.0 / 3.0).abs() < 1e-6);
        let empty = p.encode("  ؟ ");
        assert_eq!(empty.ids, vec![Vocabulary::UNK]);
    }

    #[test]
    fn saved_preprocessor_encodes_identically() {
        let features = FeatureConfig {
            mode: FeatureMode::Bag,
            word_ngrams: 2,
            char_ngrams: Some([2, 4]),
            char_buckets: 97,
            tfidf: true,
            ..vocab1()
        };
        let p = Preprocessor::fit(&TEXTS, NormalizerConfig::default(), features).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: Preprocessor = serde_json::from_str::<Preprocessor>(&json)
            .unwrap()
            .prepared();
        for t in TEXTS {
            assert_eq!(back.encode(t), p.encode(t));
        }
    }

    #[test]
    fn rejects_bad_settings() {
        let bad = FeatureConfig {
            max_length: 0,
            ..vocab1()
        };
        assert!(Preprocessor::fit(&TEXTS, NormalizerConfig::default(), bad).is_err());
        let bad = FeatureConfig {
            mode: FeatureMode::Bag,
            char_ngrams: Some([4, 2]),
            char_buckets: 10,
            ..vocab1()
        };
        assert!(Preprocessor::fit(&TEXTS, NormalizerConfig::default(), bad).is_err());
        let too_rare = FeatureConfig {
            vocabulary: VocabularyConfig {
                min_frequency: 100,
                max_size: 10,
            },
            ..FeatureConfig::default()
        };
        assert!(Preprocessor::fit(&TEXTS, NormalizerConfig::default(), too_rare).is_err());
    }
}
