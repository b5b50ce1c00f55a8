//! The few values every service shares as the contracts carry them: who is
//! calling ([`Caller`], [`Role`]) and where an order stands
//! ([`OrderStatus`]). The rules about them (who may see what, which status
//! may follow which) belong to the services that own them.

use std::fmt;

use proto::common::v1 as common;
use proto::order::v1 as order;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a user may do: every registration is a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    /// The name stored and shown (`customer`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// `None` for an unspecified or unknown role.
    pub fn from_proto(role: i32) -> Option<Role> {
        match common::Role::try_from(role).ok()? {
            common::Role::Customer => Some(Role::Customer),
            common::Role::Admin => Some(Role::Admin),
            common::Role::Unspecified => None,
        }
    }

    pub fn to_proto(self) -> common::Role {
        match self {
            Role::Customer => common::Role::Customer,
            Role::Admin => common::Role::Admin,
        }
    }
}

/// On whose behalf a call is made: verified by the gateway, carried on every
/// internal call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller is `user_id` or an admin.
    pub fn is_or_admin(&self, user_id: Uuid) -> bool {
        self.is_admin() || self.user_id == user_id
    }

    pub fn to_proto(self) -> common::Caller {
        common::Caller {
            user_id: self.user_id.to_string(),
            role: self.role.to_proto() as i32,
        }
    }
}

/// Where an order stands (SPEC "REST API").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
    Delivered,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
    ];

    /// The name stored in the database and shown in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Delivered => "DELIVERED",
        }
    }

    pub fn parse(name: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// `None` for an unspecified or unknown status.
    pub fn from_proto(raw: i32) -> Option<OrderStatus> {
        use order::OrderStatus as P;
        Some(match P::try_from(raw).ok()? {
            P::Unspecified => return None,
            P::Pending => OrderStatus::Pending,
            P::Confirmed => OrderStatus::Confirmed,
            P::Rejected => OrderStatus::Rejected,
            P::Cancelled => OrderStatus::Cancelled,
            P::Shipped => OrderStatus::Shipped,
            P::Delivered => OrderStatus::Delivered,
        })
    }

    pub fn to_proto(self) -> order::OrderStatus {
        use order::OrderStatus as P;
        match self {
            OrderStatus::Pending => P::Pending,
            OrderStatus::Confirmed => P::Confirmed,
            OrderStatus::Rejected => P::Rejected,
            OrderStatus::Cancelled => P::Cancelled,
            OrderStatus::Shipped => P::Shipped,
            OrderStatus::Delivered => P::Delivered,
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_wire_values_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                OrderStatus::from_proto(status.to_proto() as i32),
                Some(status)
            );
        }
        assert_eq!(OrderStatus::parse("pending"), None);
        assert_eq!(OrderStatus::from_proto(0), None);
        for role in [Role::Customer, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(Role::from_proto(role.to_proto() as i32), Some(role));
        }
        assert_eq!(Role::from_proto(0), None);
    }
}
