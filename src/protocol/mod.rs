//! Sans-IO MQTT 3.1.1 / 5.0 codec: packets, properties, reason codes, validation.
//!
//! Nothing here touches a socket or a clock.

pub mod decode;
pub mod encode;
pub mod error;
pub mod reason;
pub mod topic;
pub mod types;

pub use decode::{
    connect_version_hint, decode_fixed_header, decode_packet, decode_packet_shared,
    decode_publish_view, FrameHeader, PublishView,
};
pub use encode::{encode_packet, encoded_len};
pub use error::DecodeError;
pub use reason::ReasonCode;
pub use types::*;
