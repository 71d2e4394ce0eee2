//! One module per command.

pub mod cancel;
pub mod classify;
pub mod evaluate;
pub mod jobs;
pub mod models;
pub mod optimize;
pub mod predict;
pub mod schemas;
pub mod serve;
pub mod status;
pub mod submit;
pub mod top;
pub mod train;
pub mod trials;
pub mod up;
pub mod up_users;
pub mod watch;
