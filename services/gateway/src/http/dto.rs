//! The JSON shapes of the API (the seed's, plus what the new endpoints need)
//! and their conversions from the services' messages. Every request body
//! rejects unknown fields.

use chrono::{DateTime, Utc};
use proto::inventory::v1 as inventory;
use proto::order::v1 as order;
use proto::user::v1 as user;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use platform::limits::{
    self, ITEM_QUANTITY, MAX_CATEGORY_CHARS, MAX_EMAIL_CHARS, MAX_LOGIN_NAME_CHARS,
    MAX_LOGIN_PASSWORD_BYTES, MAX_ORDER_LINES, MAX_PAGE_SIZE, MAX_PRODUCT_NAME_CHARS, MONEY_SCALE,
    PASSWORD_CHARS, USERNAME_CHARS, max_amount,
};

use super::money::Money;
use crate::auth::Role;
use crate::problem::{FieldError, Problem};

/// Collects field errors and turns them into one 400.
#[derive(Default)]
pub struct Violations(Vec<FieldError>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn into_result(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::invalid_fields(self.0))
        }
    }

    fn text_up_to(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else if value.chars().count() > max {
            self.add(field, format!("must be at most {max} characters"));
        }
    }

    fn price(&mut self, field: &str, price: Money) {
        if price.0 <= Decimal::ZERO {
            self.add(field, "must be greater than 0");
        } else if price.0.normalize().scale() > MONEY_SCALE {
            self.add(field, format!("must have at most {MONEY_SCALE} decimals"));
        } else if price.0 > max_amount() {
            self.add(field, format!("must be at most {}", max_amount()));
        }
    }

    fn stock(&mut self, field: &str, stock: i32) {
        if stock < 0 {
            self.add(field, "must be 0 or more");
        } else if stock > limits::MAX_STOCK {
            self.add(field, format!("must be at most {}", limits::MAX_STOCK));
        }
    }
}

fn timestamp(t: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
}

fn uuid_from_service(field: &str, value: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(value).map_err(|_| {
        Problem::internal(format_args!(
            "{field} {value:?} from a service is not a UUID"
        ))
    })
}

// ---------------------------------------------------------------- products

/// A product, as the seed showed it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Product {
    pub id: Uuid,
    #[schema(example = "Laptop")]
    pub name: String,
    #[schema(example = "Electronics")]
    pub category: String,
    #[schema(example = 100)]
    pub stock: i32,
    /// Exact, with two decimals.
    #[schema(value_type = f64, example = 999.99, multiple_of = 0.01)]
    pub price: Money,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Product {
    pub fn from_proto(p: inventory::Product) -> Result<Self, Problem> {
        Ok(Product {
            id: uuid_from_service("product id", &p.id)?,
            price: Money::from_wire("price", &p.price).map_err(Problem::internal)?,
            name: p.name,
            category: p.category,
            stock: p.stock,
            created_at: timestamp(p.created_at),
            updated_at: timestamp(p.updated_at),
        })
    }
}

/// `POST /products`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(example = "Laptop", min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(example = "Electronics", min_length = 1, max_length = 100)]
    pub category: String,
    #[schema(example = 100, minimum = 0, maximum = 1_000_000_000)]
    pub stock: i32,
    /// A JSON number with at most two decimals, greater than 0.
    #[schema(value_type = f64, example = 999.99, multiple_of = 0.01)]
    pub price: Money,
}

impl CreateProduct {
    pub fn validate(&self) -> Result<(), Problem> {
        let mut v = Violations::default();
        v.text_up_to("name", &self.name, MAX_PRODUCT_NAME_CHARS);
        v.text_up_to("category", &self.category, MAX_CATEGORY_CHARS);
        v.stock("stock", self.stock);
        v.price("price", self.price);
        v.into_result()
    }
}

/// `PATCH /products/{id}`: sets the given fields (stock is set, not added).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    pub category: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: Option<i32>,
    #[schema(value_type = Option<f64>, example = 899.99, multiple_of = 0.01)]
    pub price: Option<Money>,
}

impl UpdateProduct {
    pub fn validate(&self) -> Result<(), Problem> {
        let mut v = Violations::default();
        if self.name.is_none()
            && self.category.is_none()
            && self.stock.is_none()
            && self.price.is_none()
        {
            v.add("body", "set at least one of name, category, stock, price");
        }
        if let Some(name) = &self.name {
            v.text_up_to("name", name, MAX_PRODUCT_NAME_CHARS);
        }
        if let Some(category) = &self.category {
            v.text_up_to("category", category, MAX_CATEGORY_CHARS);
        }
        if let Some(stock) = self.stock {
            v.stock("stock", stock);
        }
        if let Some(price) = self.price {
            v.price("price", price);
        }
        v.into_result()
    }
}

/// `GET /products` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    /// 1-based page (default 1).
    #[param(minimum = 1)]
    #[serde(default, deserialize_with = "page_param")]
    pub page: Option<u32>,
    /// Items per page (default 20, at most 100).
    #[param(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "page_size_param")]
    pub page_size: Option<u32>,
    /// Only products of this exact category.
    pub category: Option<String>,
}

/// The start of the message of a query parameter that does not parse (the
/// problem names the field from it).
pub const BAD_QUERY_PARAMETER: &str = "query parameter `";

/// A query parameter parsed from its text, with a message naming it.
fn query_param<'de, D, T>(
    deserializer: D,
    name: &str,
    expected: &str,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
{
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        serde::de::Error::custom(format!(
            "{BAD_QUERY_PARAMETER}{name}` must be {expected}, not {shown:?}"
        ))
    })
}

fn page_param<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    query_param(d, "page", "a whole number of 1 or more")
}

fn page_size_param<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    query_param(d, "page_size", "a whole number from 1 to 100")
}

fn user_id_param<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
    query_param(d, "user_id", "a UUID")
}

/// Validates paging parameters shared by the list endpoints.
pub fn validate_paging(page: Option<u32>, page_size: Option<u32>) -> Result<(), Problem> {
    let mut v = Violations::default();
    if page == Some(0) {
        v.add("page", "must be 1 or more");
    }
    match page_size {
        Some(0) => v.add("page_size", "must be 1 or more"),
        Some(n) if n > MAX_PAGE_SIZE => {
            v.add("page_size", format!("must be at most {MAX_PAGE_SIZE}"))
        }
        _ => {}
    }
    v.into_result()
}

impl ProductQuery {
    pub fn validate(&self) -> Result<(), Problem> {
        validate_paging(self.page, self.page_size)?;
        let mut v = Violations::default();
        if let Some(category) = &self.category {
            v.text_up_to("category", category, MAX_CATEGORY_CHARS);
        }
        v.into_result()
    }
}

/// A page of products.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub products: Vec<Product>,
    pub page: u32,
    pub page_size: u32,
    /// All matching products.
    pub total: u64,
}

// ------------------------------------------------------------------ orders

/// Where an order stands.
pub use platform::model::OrderStatus;

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItem {
    pub product_id: Uuid,
    #[schema(example = 2)]
    pub quantity: u32,
    /// The product's price when the order was placed.
    #[schema(value_type = f64, example = 999.99, multiple_of = 0.01)]
    pub unit_price: Money,
}

/// An order. `total` is computed by the Order service from current prices.
#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    #[schema(value_type = f64, example = 1999.98, multiple_of = 0.01)]
    pub total: Money,
    pub items: Vec<OrderItem>,
    /// Why the order was rejected, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Order {
    pub fn from_proto(o: order::Order) -> Result<Self, Problem> {
        let items = o
            .items
            .into_iter()
            .map(|i| {
                Ok(OrderItem {
                    product_id: uuid_from_service("product id", &i.product_id)?,
                    quantity: i.quantity,
                    unit_price: Money::from_wire("unit_price", &i.unit_price)
                        .map_err(Problem::internal)?,
                })
            })
            .collect::<Result<Vec<_>, Problem>>()?;
        Ok(Order {
            id: uuid_from_service("order id", &o.id)?,
            user_id: uuid_from_service("user id", &o.user_id)?,
            status: OrderStatus::from_proto(o.status).ok_or_else(|| {
                Problem::internal(format_args!(
                    "order status {} from the order service",
                    o.status
                ))
            })?,
            total: Money::from_wire("total", &o.total).map_err(Problem::internal)?,
            items,
            status_reason: (!o.status_reason.is_empty()).then_some(o.status_reason),
            created_at: timestamp(o.created_at),
            updated_at: timestamp(o.updated_at),
        })
    }
}

/// One line of `POST /orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItemInput {
    pub product_id: Uuid,
    #[schema(example = 2, minimum = 1, maximum = 1000)]
    pub quantity: u32,
}

/// `POST /orders`: what to buy. Prices and the total come from Inventory.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderItemInput>,
}

impl CreateOrder {
    pub fn validate(&self) -> Result<(), Problem> {
        let mut v = Violations::default();
        if self.items.is_empty() {
            v.add("items", "must list at least one item");
        }
        if self.items.len() > MAX_ORDER_LINES {
            v.add(
                "items",
                format!("must list at most {MAX_ORDER_LINES} items"),
            );
        }
        for (i, item) in self.items.iter().enumerate() {
            if item.quantity == 0 {
                v.add(format!("items[{i}].quantity"), "must be at least 1");
            } else if item.quantity > *ITEM_QUANTITY.end() {
                v.add(
                    format!("items[{i}].quantity"),
                    format!("must be at most {}", ITEM_QUANTITY.end()),
                );
            }
            if self.items[..i]
                .iter()
                .any(|earlier| earlier.product_id == item.product_id)
            {
                v.add(
                    format!("items[{i}].product_id"),
                    "is listed twice; put the whole quantity in one item",
                );
            }
        }
        v.into_result()
    }
}

/// Statuses an admin may set with `PATCH /orders/{id}` (fulfilment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", try_from = "String")]
pub enum FulfilmentStatus {
    Shipped,
    Delivered,
}

impl TryFrom<String> for FulfilmentStatus {
    type Error = String;

    fn try_from(status: String) -> Result<Self, String> {
        match status.as_str() {
            "SHIPPED" => Ok(FulfilmentStatus::Shipped),
            "DELIVERED" => Ok(FulfilmentStatus::Delivered),
            other => Err(format!(
                "unknown variant `{other}`: status must be SHIPPED or DELIVERED (cancel with POST /orders/{{id}}/cancel)"
            )),
        }
    }
}

impl FulfilmentStatus {
    pub fn to_proto(self) -> order::OrderStatus {
        match self {
            FulfilmentStatus::Shipped => order::OrderStatus::Shipped,
            FulfilmentStatus::Delivered => order::OrderStatus::Delivered,
        }
    }
}

/// `PATCH /orders/{id}`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrderStatus {
    pub status: FulfilmentStatus,
}

/// `GET /orders` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    #[param(minimum = 1)]
    #[serde(default, deserialize_with = "page_param")]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "page_size_param")]
    pub page_size: Option<u32>,
    /// Admins only: one user's orders. Customers always see their own.
    #[serde(default, deserialize_with = "user_id_param")]
    pub user_id: Option<Uuid>,
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    pub page: u32,
    pub page_size: u32,
    pub total: u64,
}

// ------------------------------------------------------------------- users

/// A user's public profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "alice@example.com")]
    pub email: String,
    pub role: Role,
    pub created_at: Option<DateTime<Utc>>,
}

impl User {
    pub fn from_proto(u: user::User) -> Result<Self, Problem> {
        Ok(User {
            id: uuid_from_service("user id", &u.id)?,
            role: Role::from_proto(u.role).ok_or_else(|| {
                Problem::internal(format_args!("role {} from the user service", u.role))
            })?,
            username: u.username,
            email: u.email,
            created_at: timestamp(u.created_at),
        })
    }
}

/// `POST /users/register`. There is no role: every new user is a customer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    /// Letters, digits, `_`, `.` and `-`; unique without regard to case.
    #[schema(
        example = "alice",
        min_length = 3,
        max_length = 32,
        pattern = r"^[A-Za-z0-9_.\-]+$"
    )]
    pub username: String,
    #[schema(
        example = "alice@example.com",
        min_length = 3,
        max_length = 254,
        pattern = "@"
    )]
    pub email: String,
    #[schema(
        example = "correct horse battery staple",
        min_length = 8,
        max_length = 128
    )]
    pub password: String,
}

impl RegisterUser {
    pub fn validate(&self) -> Result<(), Problem> {
        let mut v = Violations::default();
        let username_chars = self.username.trim().chars().count();
        if username_chars == 0 {
            v.add("username", "must not be empty");
        } else if username_chars < *USERNAME_CHARS.start() {
            let min = USERNAME_CHARS.start();
            v.add("username", format!("must be at least {min} characters"));
        } else if username_chars > *USERNAME_CHARS.end() {
            let max = USERNAME_CHARS.end();
            v.add("username", format!("must be at most {max} characters"));
        }
        v.text_up_to("email", &self.email, MAX_EMAIL_CHARS);
        if !self.email.contains('@') {
            v.add("email", "must be an email address");
        }
        // The User service hashes a SHA-256 of the password, so every
        // character counts despite bcrypt's 72 bytes.
        let password_chars = self.password.chars().count();
        if password_chars < *PASSWORD_CHARS.start() {
            let min = PASSWORD_CHARS.start();
            v.add("password", format!("must be at least {min} characters"));
        } else if password_chars > *PASSWORD_CHARS.end() {
            let max = PASSWORD_CHARS.end();
            v.add("password", format!("must be at most {max} characters"));
        }
        v.into_result()
    }
}

/// `POST /users/login`: by username or email.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// A username or an email.
    #[schema(example = "alice", min_length = 1, max_length = 254)]
    pub username: String,
    #[schema(
        example = "correct horse battery staple",
        min_length = 1,
        max_length = 1024
    )]
    pub password: String,
}

impl Login {
    pub fn validate(&self) -> Result<(), Problem> {
        let mut v = Violations::default();
        v.text_up_to("username", &self.username, MAX_LOGIN_NAME_CHARS);
        if self.password.is_empty() {
            v.add("password", "must not be empty");
        } else if self.password.len() > MAX_LOGIN_PASSWORD_BYTES {
            v.add("password", "is too long");
        }
        v.into_result()
    }
}

/// A signed JWT for the `Authorization: Bearer` header.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 3600)]
    pub expires_in: u64,
    pub user: User,
}
