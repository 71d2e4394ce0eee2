//! One module per command.

pub mod evaluate;
pub mod predict;
pub mod schemas;
pub mod train;

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
