//! Sessions and the per-connection protocol state machine (sans-IO).

pub mod config;
pub mod connection;
pub mod keepalive;
pub mod state;
pub mod will;

pub use config::{ProtocolLimits, V311KeepAlivePolicy};
pub use connection::{generate_client_id, Action, ConnectRequest, Connection, PendingWill};
pub use state::{Delivery, Message, MessageData, Session, SessionStats, Subscription};
pub use will::WillDecision;

#[cfg(test)]
mod tests;
