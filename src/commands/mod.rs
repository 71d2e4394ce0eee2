//! One module per command.

pub mod cancel;
pub mod classify;
pub mod evaluate;
pub mod jobs;
pub mod models;
pub mod predict;
pub mod schemas;
pub mod serve;
pub mod status;
pub mod submit;
pub mod top;
pub mod train;
pub mod up;
pub mod watch;

use crate::cli::DeviceArg;
use lexmesh_trainer::DeviceChoice;

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
}
