//! Limits shared by the service that enforces a rule and the gateway that
//! checks it early and documents it in OpenAPI (a test compares the document
//! with these values).

/// The most units of one product in stock. Far below `i32::MAX`, so that
/// returning the stock of cancelled orders on top of it cannot overflow the
/// column (the release saturates at [`STOCK_CEILING`] all the same).
pub const MAX_STOCK: i32 = 1_000_000_000;

/// What stock may reach when released orders return units on top of
/// [`MAX_STOCK`] set by an admin: the column's own limit.
pub const STOCK_CEILING: i32 = i32::MAX;
