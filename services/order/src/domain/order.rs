//! Orders, their lines, validation of what a customer asks for, and pricing
//! in exact decimals from the products' current prices.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::status::OrderStatus;

use platform::limits::{
    ITEM_QUANTITY, MAX_IDEMPOTENCY_KEY_BYTES, MAX_ORDER_LINES, MONEY_SCALE, max_amount,
};

/// An amount with exactly two fraction digits, as stored and shown.
pub fn money(amount: Decimal) -> Decimal {
    let mut amount = amount;
    amount.rescale(MONEY_SCALE);
    amount
}

/// One bad field of a request, named as the caller wrote it (`items[3].quantity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub message: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub use platform::model::{Caller, Role};

/// A validated line of a new order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: u32,
}

/// Checks the lines a customer asked for: 1..=100 lines, quantities 1..=1000,
/// product ids that are UUIDs, no product twice. Every bad field is reported.
pub fn validate_lines<'a>(
    raw: impl ExactSizeIterator<Item = (&'a str, u32)>,
) -> Result<Vec<OrderLine>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let count = raw.len();
    if count == 0 {
        violations.push(FieldViolation::new("items", "must have at least one item"));
    } else if count > MAX_ORDER_LINES {
        violations.push(FieldViolation::new(
            "items",
            format!("has {count} items; at most {MAX_ORDER_LINES} are allowed"),
        ));
        return Err(violations);
    }
    let mut lines = Vec::with_capacity(count);
    let mut first_index: HashMap<Uuid, usize> = HashMap::new();
    for (index, (product_id, quantity)) in raw.enumerate() {
        if !ITEM_QUANTITY.contains(&quantity) {
            violations.push(FieldViolation::new(
                format!("items[{index}].quantity"),
                format!(
                    "must be between {} and {}, got {quantity}",
                    ITEM_QUANTITY.start(),
                    ITEM_QUANTITY.end()
                ),
            ));
        }
        match Uuid::parse_str(product_id.trim()) {
            Err(_) => violations.push(FieldViolation::new(
                format!("items[{index}].product_id"),
                format!("{product_id:?} is not a UUID"),
            )),
            Ok(id) => match first_index.get(&id) {
                Some(first) => violations.push(FieldViolation::new(
                    format!("items[{index}].product_id"),
                    format!("product {id} is already in items[{first}]; order it once with the total quantity"),
                )),
                None => {
                    first_index.insert(id, index);
                    lines.push(OrderLine {
                        product_id: id,
                        quantity,
                    });
                }
            },
        }
    }
    if violations.is_empty() {
        Ok(lines)
    } else {
        Err(violations)
    }
}

/// Checks an optional idempotency key; empty means none.
pub fn validate_idempotency_key(raw: &str) -> Result<Option<String>, FieldViolation> {
    let key = raw.trim();
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(FieldViolation::new(
            "idempotency_key",
            format!(
                "is {} bytes long; at most {MAX_IDEMPOTENCY_KEY_BYTES} are allowed",
                key.len()
            ),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            "idempotency_key",
            "must not contain control characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// A digest of what was ordered, independent of the order of the lines: a
/// retry with the same idempotency key must carry the same fingerprint.
pub fn request_fingerprint(lines: &[OrderLine]) -> String {
    use std::fmt::Write as _;
    let canonical: BTreeMap<Uuid, u32> = lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    // The digest's input is stored with every keyed order: it must not change.
    let mut text = String::with_capacity(canonical.len() * 48);
    for (product_id, quantity) in canonical {
        let _ = writeln!(text, "{product_id}:{quantity}");
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// What Inventory says about a product right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductQuote {
    pub product_id: Uuid,
    pub price: Decimal,
    pub stock: i64,
}

/// A line with the unit price it was ordered at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: Uuid,
    pub quantity: u32,
    pub unit_price: Decimal,
}

/// Lines priced from current quotes, and their exact total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedOrder {
    pub lines: Vec<PricedLine>,
    pub total: Decimal,
}

/// A product without enough stock for its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortage {
    /// The line's position in the request.
    pub index: usize,
    pub product_id: Uuid,
    pub requested: u32,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The products Inventory does not know, with their lines' positions.
    #[error("unknown products: {}", join(.0))]
    UnknownProducts(Vec<(usize, Uuid)>),
    #[error("not enough stock: {}", .0.iter().map(|s| format!("product {} has {} left, {} requested", s.product_id, s.available.max(0), s.requested)).collect::<Vec<_>>().join("; "))]
    InsufficientStock(Vec<Shortage>),
    #[error("the order total {0} exceeds the largest amount an order may have, {max}", max = max_amount())]
    TotalTooLarge(Decimal),
}

fn join(ids: &[(usize, Uuid)]) -> String {
    ids.iter()
        .map(|(_, id)| id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prices `lines` from `quotes`: unknown products first, then products that
/// visibly lack stock (the final word on stock is Inventory's, in the order
/// flow), then the exact total.
pub fn price(
    lines: &[OrderLine],
    quotes: &HashMap<Uuid, ProductQuote>,
) -> Result<PricedOrder, PricingError> {
    let unknown: Vec<(usize, Uuid)> = lines
        .iter()
        .map(|l| l.product_id)
        .enumerate()
        .filter(|(_, id)| !quotes.contains_key(id))
        .collect();
    if !unknown.is_empty() {
        return Err(PricingError::UnknownProducts(unknown));
    }
    let shortages: Vec<Shortage> = lines
        .iter()
        .enumerate()
        .filter_map(|(index, l)| {
            let quote = &quotes[&l.product_id];
            (quote.stock < i64::from(l.quantity)).then_some(Shortage {
                index,
                product_id: l.product_id,
                requested: l.quantity,
                available: quote.stock,
            })
        })
        .collect();
    if !shortages.is_empty() {
        return Err(PricingError::InsufficientStock(shortages));
    }
    let priced: Vec<PricedLine> = lines
        .iter()
        .map(|l| PricedLine {
            product_id: l.product_id,
            quantity: l.quantity,
            unit_price: money(quotes[&l.product_id].price),
        })
        .collect();
    let total = priced
        .iter()
        .try_fold(Decimal::ZERO, |sum, l| {
            l.unit_price
                .checked_mul(Decimal::from(l.quantity))
                .and_then(|amount| sum.checked_add(amount))
        })
        .unwrap_or(Decimal::MAX);
    if total > max_amount() {
        return Err(PricingError::TotalTooLarge(total));
    }
    Ok(PricedOrder {
        lines: priced,
        total: money(total),
    })
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub total: Decimal,
    pub status_reason: Option<String>,
    pub lines: Vec<PricedLine>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// A customer sees only their own orders; an admin sees every order.
    pub fn visible_to(&self, caller: &Caller) -> bool {
        caller.is_or_admin(self.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn quotes(list: &[(Uuid, &str, i64)]) -> HashMap<Uuid, ProductQuote> {
        list.iter()
            .map(|(id, price, stock)| {
                (
                    *id,
                    ProductQuote {
                        product_id: *id,
                        price: d(price),
                        stock: *stock,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn totals_are_exact() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let lines = [
            OrderLine {
                product_id: a,
                quantity: 1,
            },
            OrderLine {
                product_id: b,
                quantity: 1,
            },
        ];
        let priced = price(&lines, &quotes(&[(a, "0.10", 5), (b, "0.20", 5)])).unwrap();
        assert_eq!(priced.total.to_string(), "0.30");

        let one = [OrderLine {
            product_id: a,
            quantity: 3,
        }];
        let priced = price(&one, &quotes(&[(a, "999.99", 5)])).unwrap();
        assert_eq!(priced.total.to_string(), "2999.97");
        assert_eq!(priced.lines[0].unit_price.to_string(), "999.99");

        let whole = price(&one, &quotes(&[(a, "5", 5)])).unwrap();
        assert_eq!(whole.total.to_string(), "15.00");
    }

    #[test]
    fn a_total_beyond_the_column_is_refused() {
        let ids: Vec<Uuid> = (0..100).map(|_| Uuid::new_v4()).collect();
        let lines: Vec<OrderLine> = ids
            .iter()
            .map(|id| OrderLine {
                product_id: *id,
                quantity: 1000,
            })
            .collect();
        let q: Vec<(Uuid, &str, i64)> = ids.iter().map(|id| (*id, "9999999999.99", 1000)).collect();
        assert!(matches!(
            price(&lines, &quotes(&q)),
            Err(PricingError::TotalTooLarge(_))
        ));
    }

    #[test]
    fn unknown_then_short() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let lines = [
            OrderLine {
                product_id: a,
                quantity: 2,
            },
            OrderLine {
                product_id: b,
                quantity: 5,
            },
        ];
        assert_eq!(
            price(&lines, &quotes(&[(a, "1", 1), (c, "1", 1)])),
            Err(PricingError::UnknownProducts(vec![(1, b)]))
        );
        let err = price(&lines, &quotes(&[(a, "1", 1), (b, "1", 9)])).unwrap_err();
        assert_eq!(
            err,
            PricingError::InsufficientStock(vec![Shortage {
                index: 0,
                product_id: a,
                requested: 2,
                available: 1
            }])
        );
        assert!(err.to_string().contains(&a.to_string()));
    }

    #[test]
    fn validation_names_every_bad_field() {
        let id = Uuid::new_v4().to_string();
        let raw = [
            (id.as_str(), 1),
            ("nope", 0),
            (id.as_str(), 2),
            (id.as_str(), 1001),
        ];
        let violations = validate_lines(raw.iter().map(|(p, q)| (*p, *q))).unwrap_err();
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "items[1].quantity",
                "items[1].product_id",
                "items[2].product_id",
                "items[3].quantity",
                "items[3].product_id",
            ]
        );
        assert_eq!(
            validate_lines(std::iter::empty()).unwrap_err()[0].field,
            "items"
        );
    }

    #[test]
    fn fingerprint_is_the_digest_stored_orders_carry() {
        let line = OrderLine {
            product_id: Uuid::parse_str("00000000-0000-4000-8000-000000000010").unwrap(),
            quantity: 2,
        };
        // sha256("00000000-0000-4000-8000-000000000010:2\n"): what orders
        // stored by earlier releases hold, so that their retries still match.
        assert_eq!(
            request_fingerprint(&[line]),
            "b045513dfbc6872dfdcd53d047b36805099c130be4575d07adc4302bf845b704"
        );
    }

    #[test]
    fn fingerprint_ignores_line_order_but_not_quantities() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let l = |p, q| OrderLine {
            product_id: p,
            quantity: q,
        };
        assert_eq!(
            request_fingerprint(&[l(a, 1), l(b, 2)]),
            request_fingerprint(&[l(b, 2), l(a, 1)])
        );
        assert_ne!(
            request_fingerprint(&[l(a, 1), l(b, 2)]),
            request_fingerprint(&[l(a, 1), l(b, 3)])
        );
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(validate_idempotency_key("  "), Ok(None));
        assert_eq!(validate_idempotency_key("k-1"), Ok(Some("k-1".into())));
        assert!(validate_idempotency_key(&"x".repeat(256)).is_err());
        assert!(validate_idempotency_key("a\nb").is_err());
    }
}
