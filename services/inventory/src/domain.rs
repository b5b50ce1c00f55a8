//! Products, prices and the stock rules of an order: values that validate
//! themselves on construction and pure decisions. No I/O here.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use platform::limits::{
    DEFAULT_PAGE_SIZE, MAX_CATEGORY_CHARS, MAX_ORDER_LINES, MAX_PAGE_SIZE, MAX_PRODUCT_NAME_CHARS,
    MONEY_SCALE, max_amount,
};

/// Ids of one BatchGetProducts call: the products of one order.
pub const MAX_BATCH_IDS: usize = MAX_ORDER_LINES;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub description: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A request that breaks the rules, with every bad field named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct Invalid(pub Vec<FieldError>);

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Invalid {
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Self {
        Invalid(vec![FieldError::new(field, description)])
    }
}

/// Collects field errors while a request is checked.
#[derive(Default)]
struct Checker(Vec<FieldError>);

impl Checker {
    fn take<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldError::new(field, description));
                None
            }
        }
    }

    fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Invalid> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(Invalid(self.0))
        }
    }
}

/// A product price: an exact decimal greater than zero with at most two
/// fraction digits that fits NUMERIC(12,2). Shown with two decimals ("999.99").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(Decimal);

impl Price {
    pub fn parse(raw: &str) -> Result<Price, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Err("is required, e.g. \"999.99\"".into());
        }
        if text.starts_with('-') {
            return Err(format!("{text:?} must be greater than 0"));
        }
        let (integer, fraction) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(integer) || fraction.is_some_and(|f| !digits(f)) {
            return Err(format!(
                "{text:?} is not a decimal number such as \"999.99\""
            ));
        }
        if fraction.is_some_and(|f| f.len() > MONEY_SCALE as usize) {
            return Err(format!(
                "{text:?} has more than {MONEY_SCALE} decimal places"
            ));
        }
        // More digits than any price has: refused before parsing.
        let too_large = || format!("{text:?} is more than {}", max_amount());
        if integer.trim_start_matches('0').len() > 20 {
            return Err(too_large());
        }
        let amount = Decimal::from_str(text)
            .map_err(|_| format!("{text:?} is not a decimal number such as \"999.99\""))?;
        if amount > max_amount() {
            return Err(too_large());
        }
        if amount <= Decimal::ZERO {
            return Err(format!("{text:?} must be greater than 0"));
        }
        Ok(Price(amount))
    }

    /// A price read back from the database, which only ever stores valid ones.
    pub fn from_stored(amount: Decimal) -> Price {
        Price(amount)
    }

    pub fn amount(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut amount = self.0;
        amount.rescale(2);
        write!(f, "{amount}")
    }
}

fn bounded_text(raw: &str, max_chars: usize) -> Result<String, String> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(format!(
            "must be at most {max_chars} characters, got {chars}"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(text.to_owned())
}

pub fn parse_name(raw: &str) -> Result<String, String> {
    bounded_text(raw, MAX_PRODUCT_NAME_CHARS)
}

pub fn parse_category(raw: &str) -> Result<String, String> {
    bounded_text(raw, MAX_CATEGORY_CHARS)
}

pub fn parse_stock(stock: i32) -> Result<i32, String> {
    if stock < 0 {
        Err(format!("must be 0 or more, got {stock}"))
    } else if stock > platform::limits::MAX_STOCK {
        Err(format!(
            "must be at most {}, got {stock}",
            platform::limits::MAX_STOCK
        ))
    } else {
        Ok(stock)
    }
}

fn parse_id(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|_| format!("{raw:?} is not a UUID"))
}

/// Parses a product or order id, naming `field` when it is not a UUID.
pub fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, Invalid> {
    parse_id(raw).map_err(|d| Invalid::one(field, d))
}

/// A product as the shop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    pub category: String,
    pub stock: i32,
    pub price: Price,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of products and how many match in all.
pub struct ProductPage {
    pub products: Vec<Product>,
    pub total: u64,
}

/// A valid product to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub name: String,
    pub category: String,
    pub stock: i32,
    pub price: Price,
}

impl NewProduct {
    pub fn parse(name: &str, category: &str, stock: i32, price: &str) -> Result<Self, Invalid> {
        let mut check = Checker::default();
        let name = check.take("name", parse_name(name));
        let category = check.take("category", parse_category(category));
        let stock = check.take("stock", parse_stock(stock));
        let price = check.take("price", Price::parse(price));
        check.finish(|| NewProduct {
            name: name.unwrap(),
            category: category.unwrap(),
            stock: stock.unwrap(),
            price: price.unwrap(),
        })
    }
}

/// The fields an update sets; `None` leaves a field as it is. Stock is a
/// value to set, never an amount to add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub category: Option<String>,
    pub stock: Option<i32>,
    pub price: Option<Price>,
}

impl ProductChanges {
    pub fn parse(
        name: Option<&str>,
        category: Option<&str>,
        stock: Option<i32>,
        price: Option<&str>,
    ) -> Result<Self, Invalid> {
        let mut check = Checker::default();
        let name = name.and_then(|n| check.take("name", parse_name(n)));
        let category = category.and_then(|c| check.take("category", parse_category(c)));
        let stock = stock.and_then(|s| check.take("stock", parse_stock(s)));
        let price = price.and_then(|p| check.take("price", Price::parse(p)));
        check.finish(|| ProductChanges {
            name,
            category,
            stock,
            price,
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == ProductChanges::default()
    }
}

/// Which page of a product list: `page` is 1-based (0 means 1), `size`
/// defaults to 20 and may not exceed 100 (a larger one is refused, not
/// silently clamped, so that a caller never misses rows unknowingly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub size: u32,
}

impl PageRequest {
    pub fn parse(page: u32, size: u32) -> Result<Self, Invalid> {
        let size = match size {
            0 => DEFAULT_PAGE_SIZE,
            s if s > MAX_PAGE_SIZE => {
                return Err(Invalid::one(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}, got {s}"),
                ));
            }
            s => s,
        };
        Ok(PageRequest {
            page: page.max(1),
            size,
        })
    }

    pub fn offset(self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.size)
    }
}

/// A category filter: exact but case-insensitive; empty means none.
pub fn parse_category_filter(raw: Option<&str>) -> Result<Option<String>, Invalid> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) => parse_category(c)
            .map(Some)
            .map_err(|d| Invalid::one("category", d)),
    }
}

/// The ids of a batch read: at most 100, each a UUID; repeats are read once.
pub fn parse_batch_ids(raw: &[String]) -> Result<Vec<Uuid>, Invalid> {
    if raw.len() > MAX_BATCH_IDS {
        return Err(Invalid::one(
            "ids",
            format!("at most {MAX_BATCH_IDS} ids per call, got {}", raw.len()),
        ));
    }
    let mut check = Checker::default();
    let mut ids = Vec::with_capacity(raw.len());
    for (i, id) in raw.iter().enumerate() {
        if let Some(id) = check.take(&format!("ids[{i}]"), parse_id(id))
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    check.finish(|| ids)
}

/// One line of an order: how many units of which product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i32,
}

/// A valid ApplyOrder request; its lines sorted by product id, the order in
/// which product rows are locked, so two orders can never wait on each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRequest {
    pub order_id: Uuid,
    pub lines: Vec<OrderLine>,
}

impl StockRequest {
    /// `items` are (product id, quantity) pairs as they came in.
    pub fn parse(order_id: &str, items: &[(String, u32)]) -> Result<Self, Invalid> {
        let mut check = Checker::default();
        let order_id = check.take("order_id", parse_id(order_id));
        if items.is_empty() {
            check.0.push(FieldError::new("items", "must not be empty"));
        } else if items.len() > MAX_ORDER_LINES {
            check.0.push(FieldError::new(
                "items",
                format!("at most {MAX_ORDER_LINES} lines, got {}", items.len()),
            ));
        }
        let mut lines: Vec<OrderLine> = Vec::with_capacity(items.len());
        let mut seen: HashMap<Uuid, usize> = HashMap::new();
        for (i, (product_id, quantity)) in items.iter().enumerate() {
            let product_id = check.take(&format!("items[{i}].product_id"), parse_id(product_id));
            let quantity = check.take(
                &format!("items[{i}].quantity"),
                match i32::try_from(*quantity) {
                    Ok(0) => Err("must be at least 1".to_owned()),
                    Ok(q) => Ok(q),
                    Err(_) => Err(format!("must be at most {}", i32::MAX)),
                },
            );
            if let Some(id) = product_id {
                if let Some(first) = seen.insert(id, i) {
                    check.0.push(FieldError::new(
                        format!("items[{i}].product_id"),
                        format!(
                            "product {id} is already in items[{first}]; list each product once"
                        ),
                    ));
                    continue;
                }
                if let Some(quantity) = quantity {
                    lines.push(OrderLine {
                        product_id: id,
                        quantity,
                    });
                }
            }
        }
        lines.sort_by_key(|l| l.product_id);
        check.finish(|| StockRequest {
            order_id: order_id.unwrap(),
            lines,
        })
    }

    /// The product ids, ascending.
    pub fn product_ids(&self) -> Vec<Uuid> {
        self.lines.iter().map(|l| l.product_id).collect()
    }
}

/// What ApplyOrder decided for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    InsufficientStock,
    UnknownProduct,
    /// Only ever a replay: the order was applied and its stock went back.
    Released,
}

/// The state of an order in the ledger: the first outcome, or RELEASED once
/// an applied order's stock went back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerState {
    Applied,
    InsufficientStock,
    UnknownProduct,
    Released,
}

impl LedgerState {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerState::Applied => "APPLIED",
            LedgerState::InsufficientStock => "INSUFFICIENT_STOCK",
            LedgerState::UnknownProduct => "UNKNOWN_PRODUCT",
            LedgerState::Released => "RELEASED",
        }
    }

    pub fn parse(raw: &str) -> Option<LedgerState> {
        Some(match raw {
            "APPLIED" => LedgerState::Applied,
            "INSUFFICIENT_STOCK" => LedgerState::InsufficientStock,
            "UNKNOWN_PRODUCT" => LedgerState::UnknownProduct,
            "RELEASED" => LedgerState::Released,
            _ => return None,
        })
    }

    /// The ApplyOrder outcome this state answers to a repeat. A released
    /// order holds no stock any more: answering APPLIED would let a late or
    /// republished event confirm an order whose stock was returned.
    pub fn apply_outcome(self) -> ApplyOutcome {
        match self {
            LedgerState::Applied => ApplyOutcome::Applied,
            LedgerState::Released => ApplyOutcome::Released,
            LedgerState::InsufficientStock => ApplyOutcome::InsufficientStock,
            LedgerState::UnknownProduct => ApplyOutcome::UnknownProduct,
        }
    }
}

impl From<ApplyOutcome> for LedgerState {
    fn from(outcome: ApplyOutcome) -> Self {
        match outcome {
            ApplyOutcome::Applied => LedgerState::Applied,
            ApplyOutcome::InsufficientStock => LedgerState::InsufficientStock,
            ApplyOutcome::UnknownProduct => LedgerState::UnknownProduct,
            ApplyOutcome::Released => LedgerState::Released,
        }
    }
}

/// The answer to ApplyOrder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    pub outcome: ApplyOutcome,
    /// Empty when applied; otherwise names the products.
    pub reason: String,
    /// The outcome was recorded by an earlier call.
    pub replayed: bool,
}

/// Decides an order against the current stock of its (locked) products:
/// every product must exist and have enough; otherwise nothing is taken.
pub fn decide(lines: &[OrderLine], stock: &BTreeMap<Uuid, i32>) -> (ApplyOutcome, String) {
    let unknown: Vec<String> = lines
        .iter()
        .filter(|l| !stock.contains_key(&l.product_id))
        .map(|l| l.product_id.to_string())
        .collect();
    if !unknown.is_empty() {
        return (
            ApplyOutcome::UnknownProduct,
            format!("unknown products: {}", unknown.join(", ")),
        );
    }
    let short: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            let available = stock[&l.product_id];
            (available < l.quantity).then(|| {
                format!(
                    "product {} has {available} in stock, {} requested",
                    l.product_id, l.quantity
                )
            })
        })
        .collect();
    if !short.is_empty() {
        return (
            ApplyOutcome::InsufficientStock,
            format!("insufficient stock: {}", short.join("; ")),
        );
    }
    (ApplyOutcome::Applied, String::new())
}

/// What ReleaseOrder did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The order's stock went back (by this call, or an earlier one).
    Released,
    /// The order never took stock (refused, or unknown here).
    NotApplied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseResult {
    pub outcome: ReleaseOutcome,
    /// An earlier call already released it.
    pub replayed: bool,
    /// The products whose stock this call returned.
    pub released: Vec<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_and_strict() {
        assert_eq!(Price::parse("999.99").unwrap().to_string(), "999.99");
        assert_eq!(Price::parse("10").unwrap().to_string(), "10.00");
        assert_eq!(Price::parse("0.1").unwrap().to_string(), "0.10");
        assert_eq!(
            Price::parse("9999999999.99").unwrap().to_string(),
            "9999999999.99"
        );
        let sum = Price::parse("0.10").unwrap().amount() + Price::parse("0.20").unwrap().amount();
        assert_eq!(sum, Decimal::from_str("0.30").unwrap());
        assert_eq!(Price::from_stored(sum).to_string(), "0.30");
        for bad in [
            "",
            "0",
            "0.00",
            "-1",
            "1.234",
            "abc",
            "1e3",
            "1.",
            ".5",
            "+1",
            "1,5",
            "10000000000",
            "NaN",
        ] {
            assert!(Price::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn new_product_names_every_bad_field() {
        let err = NewProduct::parse(" ", "", -1, "0").unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "category", "stock", "price"]);
        let long = "x".repeat(MAX_PRODUCT_NAME_CHARS + 1);
        assert!(NewProduct::parse(&long, "c", 1, "1").is_err());
        let ok = NewProduct::parse(" Laptop ", "Electronics", 100, "999.99").unwrap();
        assert_eq!(ok.name, "Laptop");
    }

    #[test]
    fn pages() {
        assert_eq!(
            PageRequest::parse(0, 0).unwrap(),
            PageRequest { page: 1, size: 20 }
        );
        assert_eq!(PageRequest::parse(3, 10).unwrap().offset(), 20);
        assert!(PageRequest::parse(1, 101).is_err());
        assert_eq!(PageRequest::parse(1, 100).unwrap().size, 100);
    }

    #[test]
    fn stock_requests_are_validated_and_sorted() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let order = Uuid::new_v4().to_string();
        let req = StockRequest::parse(&order, &[(a.to_string(), 1), (b.to_string(), 2)]).unwrap();
        let mut sorted = vec![a, b];
        sorted.sort();
        assert_eq!(req.product_ids(), sorted);

        let fields = |r: Result<StockRequest, Invalid>| -> Vec<String> {
            r.unwrap_err().0.into_iter().map(|e| e.field).collect()
        };
        assert_eq!(fields(StockRequest::parse(&order, &[])), ["items"]);
        assert_eq!(
            fields(StockRequest::parse(&order, &[(a.to_string(), 0)])),
            ["items[0].quantity"]
        );
        assert_eq!(
            fields(StockRequest::parse(
                &order,
                &[(a.to_string(), 1), (a.to_string(), 1)]
            )),
            ["items[1].product_id"]
        );
        assert_eq!(
            fields(StockRequest::parse("x", &[("y".into(), 1)])),
            ["order_id", "items[0].product_id"]
        );
    }

    #[test]
    fn decisions_name_the_products() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let lines = [
            OrderLine {
                product_id: a,
                quantity: 2,
            },
            OrderLine {
                product_id: b,
                quantity: 1,
            },
        ];
        let stock = BTreeMap::from([(a, 2), (b, 0)]);
        let (outcome, reason) = decide(&lines, &stock);
        assert_eq!(outcome, ApplyOutcome::InsufficientStock);
        assert!(reason.contains(&b.to_string()) && !reason.contains(&a.to_string()));

        let (outcome, reason) = decide(&lines, &BTreeMap::from([(a, 5)]));
        assert_eq!(outcome, ApplyOutcome::UnknownProduct);
        assert!(reason.contains(&b.to_string()));

        let (outcome, _) = decide(&lines, &BTreeMap::from([(a, 2), (b, 1)]));
        assert_eq!(outcome, ApplyOutcome::Applied);
    }
}
