//! ringmq: a thread-per-core io_uring MQTT 3.1.1 / 5.0 broker.
pub mod protocol;
pub mod runtime;
pub mod session;
