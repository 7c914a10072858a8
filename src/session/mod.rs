//! Sessions and the per-connection protocol state machine (sans-IO: no socket, no clock).
//!
//! # API summary (for the broker core, `broker::Core`)
//!
//! ```text
//! config.rs     ProtocolLimits { connect_timeout, max_keep_alive, server_keep_alive,
//!                 keep_alive_when_zero, v311_keep_alive_out_of_policy, receive_maximum,
//!                 max_packet_size, topic_alias_maximum, max_qos, retain_available,
//!                 wildcard_available, shared_available, sub_ids_available, max_session_expiry,
//!                 v311_persistent_session_expiry, v31_strict_client_id,
//!                 no_matching_subscribers_reason, max_inflight_out, max_queued_messages,
//!                 max_queued_bytes, queue_qos0_offline, max_outbound_topic_aliases,
//!                 max_pending_before_connack }                      (Default = documented values)
//!               V311KeepAlivePolicy { Accept (default: client value kept) | Clamp | Refuse
//!                 (CONNACK reason 0x88 -> 3.1.1 return code 0x03 Server unavailable) }
//! keepalive.rs  negotiate(version, client_ka, &limits) -> KeepAlive::{Use{effective,
//!                 server_keep_alive}, Refuse};  deadline(last_rx, ka) -> Option<Instant>
//!                 (= last_rx + 1500 ms x ka; None if ka == 0);  grace(ka) -> Duration
//! will.rs       WillDecision { PublishNow, Delay(Duration), Discard }
//!               on_connection_end(normal_disconnect, session_expiry, will_delay) -> WillDecision
//!               on_takeover(version, new_clean_start, old_session_expiry, will_delay)
//! state.rs      Message (Clone = one Arc bump, Deref<Target = MessageData>), Message::new(data),
//!                 .is_expired(now), Message::from_will(&Will, &client_id, published_at)
//!               MessageData { topic, payload, qos, retain, properties: PublishProperties
//!                 (no alias, no sub ids), expires_at: Option<Instant>, publisher: Option<ByteString> }
//!               Delivery { qos /*granted*/, retain_as_published, subscription_ids: Vec<u32> }
//!               Subscription { options /*granted qos*/, subscription_id }
//!               Session (Send + Clone): new(client_id, version), with_id(ClientId, version),
//!                 client_id(), shared_client_id() -> &ClientId, version(),
//!                 session_expiry(), subscriptions(), subscription(filter), will(), stats(),
//!                 inflight_len(), queued_len(), queued_bytes(), inbound_qos2_len(),
//!                 deliver_offline(&msg, &delivery, now, &limits) -> bool (queued?)
//!               SessionStats { dropped_queue_full, dropped_qos0, dropped_too_large, dropped_expired }
//! connection.rs Connection::new(Arc<ProtocolLimits>, now)
//!   .handle(Packet, now, &mut Vec<Action>)        one decoded packet (also resets keep-alive)
//!   .on_bytes_received(now)                        any bytes, even a partial packet
//!   .on_decode_error(&DecodeError, now, out)
//!   .connection_lost(now, out)                     EOF / I/O error: Close with the will
//!   .deadline() -> Option<Instant>                 CONNECT timeout, then 1.5 x keep alive
//!   .on_timer(now, out)                            no-op before the deadline
//!   .accept_connect(Option<Session>, assigned_client_id: Option<ByteString>, now, out)
//!   .refuse_connect(ReasonCode, now, out)
//!   .deliver(&Message, &Delivery, now, can_write, out)
//!   .on_writable(now, out)
//!   .take_over(new_clean_start, now, out)          v5 DISCONNECT 0x8E, Close (will per on_takeover)
//!   .shutdown(now, out)                            v5 DISCONNECT 0x8B, Close (will now)
//!   .take_session() -> Option<Session> (after Close; None before);  .session() -> Option<&Session>
//!   .share_client_id(&ClientId)                    name the session with the broker's copy
//!   .no_matching_subscribers(&mut Packet) -> bool  the broker matched no subscription for the
//!                                                  PUBLISH of this queued PUBACK / PUBREC: 0x10
//!   .version() -> Option<ProtocolVersion>;  .client_id() -> Option<&ByteString>
//!   .keep_alive() -> u16 (effective);  .is_connected();  .is_closed()
//! generate_client_id(worker: u32, counter: u64) -> ByteString   "ringmq-{worker}-{counter}"
//! Action::Send(Packet) | Connect(ConnectRequest) | Publish(Message)
//!       | Subscribe { filter, options, subscription_id, existed } | Unsubscribe { filter }
//!       | Close { reason: Option<ReasonCode>, will: Option<PendingWill> }
//! ClientId: one shared allocation per client id (Arc), Deref<Target = ByteString>,
//!   Borrow<str>; the request, the session and the broker's tables hold the same one
//! ConnectRequest { version, client_id: ClientId (may be empty), clean_start, session_expiry (effective),
//!                  keep_alive (effective), will, username, password }
//! PendingWill { message: Message, delay: Duration /* ZERO = publish now */ }
//! ```
//!
//! # Contract with the broker
//!
//! - Process the actions in order; `Send` packets go out in order. `Close` is emitted exactly
//!   once and is always the last action of its batch; afterwards every method is a no-op
//!   (except `deliver`, which then queues into the session, and `take_session`).
//! - After `Action::Connect`, answer with `accept_connect` or `refuse_connect`. Packets the client
//!   pipelines meanwhile are buffered (at most `max_pending_before_connack`) and processed right
//!   after CONNACK. If the connection closed meanwhile, both calls are no-ops (check `is_closed`).
//!   The CONNECT timeout keeps running until the answer.
//! - Client ids: an empty CONNECT id (v5, or 3.1.1 with Clean Session = 1) needs an id from the
//!   broker in `accept_connect(.., Some(id), ..)` (e.g. `generate_client_id(worker, counter)`);
//!   for v5 it is returned in Assigned Client Identifier. Without it: CONNACK 0x85.
//! - Sessions: pass the existing session to `accept_connect` when `clean_start` is false (a
//!   session passed with Clean Start = 1 is dropped); Session Present = whether one was passed.
//!   After `Close`, `take_session()`: keep it if `session_expiry() > 0` (expire it after that
//!   many seconds; 0xFFFFFFFF never), feed it with `Session::deliver_offline`, hand it to the next
//!   connection. Subscriptions live in the session and in the broker's index (kept in sync by
//!   the `Subscribe`/`Unsubscribe` actions); the broker removes them from its index when the
//!   session ends.
//! - Will: `Close.will` is already decided by the will rules (`will.rs`). `delay == 0`: publish
//!   now. Otherwise publish after `delay` unless a connection resumes the session first (then
//!   cancel it). Take-over: call `take_over(new_clean_start, ..)` on the old connection.
//! - `deliver` before CONNACK is ignored. Retained replay on subscribe: pass the retained message
//!   (`retain == true`) with `retain_as_published: true`; the broker applies Retain Handling
//!   (using `existed`) and No Local (using `Message::publisher`).
//! - Enhanced authentication is not supported: a CONNECT with an Authentication Method gets
//!   CONNACK 0x8C, and any AUTH packet is a protocol error (DISCONNECT 0x82).
//! - MQTT 3.1 (`ProtocolVersion::V31`, `MQIsdp` level 3) behaves as 3.1.1 except: the client
//!   id must not be empty (longer than 23 bytes only refused with `v31_strict_client_id`),
//!   Session Present is always 0, and a refused SUBSCRIBE filter closes the connection (3.1
//!   SUBACK has no failure code). Encode its packets with `V31` (CONNACK byte 0).
//! - An unsupported protocol level (decoder error before CONNECT) gets CONNACK 0x84 with
//!   `version() == None`: encode it as 3.1.1 (return code 0x01).

pub mod client_id;
pub mod config;
pub mod connection;
pub mod journal;
pub mod keepalive;
pub mod message;
pub mod state;
pub mod wallclock;
pub mod will;

pub use client_id::ClientId;
pub use config::{ProtocolLimits, V311KeepAlivePolicy};
pub use connection::{generate_client_id, Action, ConnectRequest, Connection, PendingWill};
pub use message::{Message, MessageData};
pub use state::{Delivery, Session, SessionStats, Subscription};
pub use will::WillDecision;

#[cfg(test)]
mod tests;
