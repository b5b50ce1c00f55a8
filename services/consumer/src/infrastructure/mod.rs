//! The Consumer's outside world: gRPC clients of Inventory and Order (their
//! calls coalesced into batches), the durable JetStream pull consumer that
//! feeds the [`crate::application::Processor`], and the dead-letter stream.

mod calls;
mod dead_letter;
pub mod inventory;
pub mod jetstream;
pub mod order;

pub use inventory::GrpcInventory;
pub use jetstream::{BindError, EventConsumer, bind};
pub use order::GrpcOrders;
