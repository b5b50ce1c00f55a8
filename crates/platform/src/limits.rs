//! Every limit of the API, stated once: the service that owns a rule enforces
//! it, the gateway checks it early and states it in its OpenAPI document
//! (`gateway`'s test `openapi_constraints_are_the_enforced_rules` compares
//! the document with these values).

use std::ops::RangeInclusive;

use rust_decimal::Decimal;

/// The most units of one product in stock. Far below `i32::MAX`, so that
/// returning the stock of cancelled orders on top of it cannot overflow the
/// column (the release saturates at [`STOCK_CEILING`] all the same).
pub const MAX_STOCK: i32 = 1_000_000_000;

/// What stock may reach when released orders return units on top of
/// [`MAX_STOCK`] set by an admin: the column's own limit.
pub const STOCK_CEILING: i32 = i32::MAX;

/// A product's name, in characters (Inventory's column).
pub const MAX_PRODUCT_NAME_CHARS: usize = 200;
/// A product's category, in characters (Inventory's column).
pub const MAX_CATEGORY_CHARS: usize = 100;

/// Decimal places of a price or a total (NUMERIC(12,2)).
pub const MONEY_SCALE: u32 = 2;
/// The largest price or total: what NUMERIC(12,2) holds.
pub fn max_amount() -> Decimal {
    Decimal::new(999_999_999_999, MONEY_SCALE)
}

/// Lines (distinct products) of one order.
pub const MAX_ORDER_LINES: usize = 100;
/// Units of one product in one order line.
pub const ITEM_QUANTITY: RangeInclusive<u32> = 1..=1000;
/// An order's `Idempotency-Key`, in bytes of printable ASCII.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// A username, in characters.
pub const USERNAME_CHARS: RangeInclusive<usize> = 3..=32;
/// A password at registration, in characters.
pub const PASSWORD_CHARS: RangeInclusive<usize> = 8..=128;
/// An email, in characters (RFC 5321's bound).
pub const MAX_EMAIL_CHARS: usize = 254;
/// What a login may send as its password, in bytes: no registered password
/// is longer, and bcrypt should not be fed an unbounded input.
pub const MAX_LOGIN_PASSWORD_BYTES: usize = 1024;
/// What a login may send as its username or email, in characters: the
/// longer of the two.
pub const MAX_LOGIN_NAME_CHARS: usize = MAX_EMAIL_CHARS;

/// A page of a list, when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// The largest page of a list.
pub const MAX_PAGE_SIZE: u32 = 100;
