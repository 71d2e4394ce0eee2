//! Hyperparameter search for lexmesh, with no broker and no model in it: what a search tries
//! and when it stops a trial. The coordinator that runs trials as train jobs, and the
//! embedded search, drive these types.
//!
//! - [`space`]: search spaces ([`Space`]): per setting a choice list, a uniform or
//!   log-uniform range, or an integer range.
//! - [`sampler`]: which configuration trial `i` tries ([`Sampler`]: seeded random, grid), a
//!   pure function of the trial's index so that a restarted coordinator re-derives it.
//! - [`asha`]: the ASHA scheduler ([`Asha`]) with Ray Tune's rung semantics, its state
//!   serialisable so that a search survives its coordinator.
//! - [`objective`]: validation macro-F1, ties broken by validation loss ([`Score`]).

pub mod asha;
pub mod error;
pub mod objective;
pub mod sampler;
pub mod space;

pub use asha::{Asha, AshaConfig, Decision, Judge};
pub use error::SearchError;
pub use objective::Score;
pub use sampler::Sampler;
pub use space::{Configuration, Domain, Space};
