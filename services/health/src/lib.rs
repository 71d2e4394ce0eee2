//! Worker health for lexmesh, without a broker in sight.
//!
//! - [`monitor`]: turns heartbeats and ping answers into a state per instance (healthy,
//!   stalled, unresponsive, over budget, stopped, replaced) and reports each change.
//! - [`policy`]: when to replace an instance again (exponential backoff, a most-restarts
//!   window), shared by the health service and `lexmesh up`.
//! - [`replace`]: how to replace one: kill the local process (its supervisor starts it again)
//!   or delete its Kubernetes pod (its Deployment recreates it).
//!
//! The health service in the `lexmesh-mesh` crate (`services/mesh/src/health.rs`) wires these to NATS.

pub mod monitor;
pub mod policy;
pub mod replace;
