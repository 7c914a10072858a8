//! ringmq-load: io_uring MQTT load generator (library part, used by the binary and tests).

pub mod opts;
pub mod run;
pub mod sink;
pub mod stamp;
pub mod stats;
pub mod wire;
pub mod worker;
