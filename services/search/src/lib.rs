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
//! - [`spec`]: what a search is asked to do ([`ExperimentSpec`]: space, sampler, scheduler,
//!   budgets, goal), checked field by field.
//! - [`experiment`]: the search's decisions as a pure, serialisable state machine
//!   ([`Experiment`]) that a coordinator saves after every step and a replacement continues;
//!   its module doc holds the caller's contract.
//! - [`observation`]: what it is fed ([`Observation`]: trial started, epoch ended, completed,
//!   failed, stopped; search cancelled), each idempotent.
//! - [`action`]: what it asks for ([`Action`]: start or stop a trial, publish an event,
//!   finish), each with a stable id for deduplication.
//! - [`trial`]: the trial table's rows ([`Trial`], [`TrialStatus`]).
//! - [`outcome`]: how a search ends ([`FinishReason`], [`BestTrial`], [`Phase`]).
//! - [`leaderboard`]: trials ranked by best score ([`LeaderboardEntry`]).

pub mod action;
pub mod asha;
pub mod error;
pub mod experiment;
pub mod leaderboard;
pub mod objective;
pub mod observation;
pub mod outcome;
pub mod sampler;
pub mod space;
pub mod spec;
pub mod trial;

pub use action::Action;
pub use asha::{Asha, AshaConfig, Decision, Judge};
pub use error::SearchError;
pub use experiment::{Counts, Experiment};
pub use leaderboard::LeaderboardEntry;
pub use objective::Score;
pub use observation::Observation;
pub use outcome::{BestTrial, FinishReason, Phase};
pub use sampler::Sampler;
pub use space::{Configuration, Domain, Space};
pub use spec::{ExperimentSpec, SamplerKind, Scheduler};
pub use trial::{EpochScore, StopReason, Trial, TrialStatus};
