//! `cluster::node` in a build without the `cluster` feature: a clear refusal to start as a
//! cluster node.

use std::sync::Arc;

pub fn spawn(
    _shared: Arc<crate::broker::Shared>,
) -> std::io::Result<(std::thread::JoinHandle<()>, std::net::SocketAddr)> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this ringmq was built without clustering: cargo build --release --features cluster \
         (needs protoc: apt-get install protobuf-compiler)",
    ))
}
