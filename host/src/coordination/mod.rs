//! Sharing the work between agents: the seam and the embedded single-node
//! coordinator (`vigil-coordination`), and with feature `redis` the Redis
//! backend (`vigil-redis`) under its old paths.

pub use vigil_coordination::*;
#[cfg(feature = "redis")]
pub use vigil_redis::coordinator as redis;
#[cfg(feature = "redis")]
pub use vigil_redis::shared;
