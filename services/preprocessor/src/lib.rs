//! Persian text preprocessing for lexmesh: everything between a file of labelled texts and the
//! integer ids a model consumes. Free of any model or broker dependency, so the embedded CLI
//! and the mesh's preprocessor service (`services/mesh/src/preprocessor.rs`) run exactly the
//! same code.
//!
//! - [`dataset`]: reads JSON Lines and CSV/TSV files into [`Example`]s, with errors that name
//!   the file and line.
//! - [`split`]: the stratified, seeded train/validation split used when no validation file is
//!   given.
//! - [`normalize`]: the Persian normaliser (character and digit unification, diacritics,
//!   zero-width non-joiner and affix spacing, punctuation, glued headings).
//! - [`tokenize`]: the [`Tokenizer`] trait, the word tokenizer and hashed character n-grams.
//! - [`vocabulary`]: the fitted vocabulary (min frequency, max size, `<pad>` and `<unk>`,
//!   document frequencies for TF-IDF weighting).
//! - [`prepare`]: records → labels, split, fitted preprocessing and encoded sets, and the
//!   content id of the result: the one way `lexmesh train` and the preprocessor service prepare.
//! - [`pipeline`]: [`Preprocessor`], the fitted whole that is saved with a model, and
//!   [`Encoded`], its output for one text.
//! - [`stored`]: the binary form in which the preprocessor service stores a prepared dataset
//!   for trainers to read.

mod chars;
pub mod dataset;
pub mod error;
pub mod normalize;
pub mod pipeline;
pub mod prepare;
pub mod split;
pub mod stored;
pub mod tokenize;
pub mod vocabulary;

pub use dataset::{Dataset, DatasetFormat, Example, FieldNames, LabelSet};
pub use error::DataError;
pub use normalize::{Normalizer, NormalizerConfig};
pub use pipeline::{Encoded, FeatureConfig, FeatureMode, Preprocessor};
pub use prepare::{EncodedSets, PrepareSettings, Prepared, SplitData, content_id, prepare};
pub use split::{SplitReport, stratified_split};
pub use tokenize::{Tokenizer, WordTokenizer};
pub use vocabulary::{Vocabulary, VocabularyConfig};
