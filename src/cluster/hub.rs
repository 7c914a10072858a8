//! The way between the workers and the cluster control thread.

use std::sync::atomic::AtomicBool;

use crossbeam_queue::SegQueue;

use crate::broker::Mail;

/// What the workers and the control thread share.
pub struct Hub {
    /// Mail for the control thread: [`ToCluster`] requests, and the take-over machinery's
    /// answers to the control thread as a claimant (`Mail::Handoff`, `Mail::Forward`, ...).
    pub inbox: SegQueue<Mail>,
    pub notify: tokio::sync::Notify,
    /// The node is fenced (its lease is lost): CONNECTs are refused until it rejoins.
    pub fenced: AtomicBool,
    /// A linked peer has more than `peer_queue_bytes` of this node's messages waiting for its
    /// acknowledgement: workers pause the publishers whose QoS 1/2 messages go to other
    /// nodes (as for a full worker mailbox) until it is at most half full again.
    pub congested: AtomicBool,
}

impl Hub {
    pub fn new() -> Hub {
        Hub {
            inbox: SegQueue::new(),
            notify: tokio::sync::Notify::new(),
            fenced: AtomicBool::new(false),
            congested: AtomicBool::new(false),
        }
    }

    pub fn post(&self, mail: Mail) {
        self.inbox.push(mail);
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}
