//! The Producer's outside world: JetStream, where the events go, and its
//! gRPC face.

pub mod grpc;
pub mod jetstream;

pub use jetstream::{JetStreamPublisher, ensure_streams};
