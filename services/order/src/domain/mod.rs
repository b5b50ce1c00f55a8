//! The Order domain: orders, their lines and money, the status state machine
//! and the rules of who may move an order. No I/O here.

pub mod order;
pub mod status;

pub use order::{
    Caller, FieldViolation, Order, OrderLine, PricedLine, PricedOrder, PricingError, ProductQuote,
    Role, Shortage,
};
pub use status::{Change, OrderStatus, Outcome, TransitionError};
