//! sea-orm entities of the Order database.

pub mod order_items;
pub mod orders;
pub mod outbox;
