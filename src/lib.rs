//! ringmq: a thread-per-core io_uring MQTT 3.1.1 / 5.0 broker.
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod ownership;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod runtime;
pub mod session;
#[doc(hidden)]
pub mod sim;
pub mod storage;
pub mod tls;
pub mod ws;
