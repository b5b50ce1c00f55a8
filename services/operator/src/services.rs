//! The six services of the platform: their ports and which settings each reads
//! (from the services' READMEs).

/// One of the platform's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Gateway,
    Inventory,
    Order,
    User,
    Producer,
    Consumer,
}

/// A secret a service reads, and which reference of the spec supplies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSetting {
    DbPassword,
    JwtSecret,
    AdminPassword,
    /// The token every internal gRPC call carries; every service reads it.
    InternalAuthToken,
}

impl SecretSetting {
    pub fn env_name(self) -> &'static str {
        match self {
            SecretSetting::DbPassword => "DB_PASSWORD",
            SecretSetting::JwtSecret => "JWT_SECRET",
            SecretSetting::AdminPassword => "ADMIN_PASSWORD",
            SecretSetting::InternalAuthToken => "INTERNAL_AUTH_TOKEN",
        }
    }
}

const DB: [&str; 4] = ["DB_HOST", "DB_PORT", "DB_USER", "DB_NAME"];
/// The order events' stream (producer, consumer).
const NATS: [&str; 3] = ["NATS_ADDR", "NATS_STREAM", "NATS_SUBJECT_PREFIX"];
/// Product change announcements (plain NATS, `<prefix>_products.changed`):
/// Inventory sends them, the gateways' product caches hear them.
const NATS_ANNOUNCEMENTS: [&str; 2] = ["NATS_ADDR", "NATS_SUBJECT_PREFIX"];
const COMMON: [&str; 2] = ["APP_ENV", "LOG_FORMAT"];

impl Service {
    /// In the order they are applied and reported.
    pub const ALL: [Service; 6] = [
        Service::Gateway,
        Service::Inventory,
        Service::Order,
        Service::User,
        Service::Producer,
        Service::Consumer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Inventory => "inventory",
            Service::Order => "order",
            Service::User => "user",
            Service::Producer => "producer",
            Service::Consumer => "consumer",
        }
    }

    /// The port it listens on: gRPC (or HTTP for the gateway), with
    /// `/healthz` and `/readyz` on the same port.
    pub fn port(self) -> i32 {
        match self {
            Service::Gateway => 8080,
            Service::Inventory => 50051,
            Service::Order => 50052,
            Service::User => 50053,
            Service::Producer => 50054,
            Service::Consumer => 50055,
        }
    }

    /// The port of `/metrics` (`METRICS_PORT`), apart from the API so that
    /// a NetworkPolicy can admit the scraper to it alone.
    pub fn metrics_port(self) -> i32 {
        match self {
            Service::Gateway => 9080,
            Service::Inventory => 9051,
            Service::Order => 9052,
            Service::User => 9053,
            Service::Producer => 9054,
            Service::Consumer => 9055,
        }
    }

    /// Name of the container and Service port.
    pub fn port_name(self) -> &'static str {
        match self {
            Service::Gateway => "http",
            _ => "grpc",
        }
    }

    /// The variable holding this service's `host:port`: it listens on the
    /// port, the others dial the host.
    pub fn addr_env(self) -> &'static str {
        match self {
            Service::Gateway => "API_GATEWAY_ADDR",
            Service::Inventory => "INVENTORY_ADDR",
            Service::Order => "ORDER_ADDR",
            Service::User => "USER_ADDR",
            Service::Producer => "PRODUCER_ADDR",
            Service::Consumer => "CONSUMER_ADDR",
        }
    }

    /// Services it calls.
    pub fn dials(self) -> &'static [Service] {
        match self {
            Service::Gateway => &[Service::Inventory, Service::Order, Service::User],
            Service::Order => &[Service::Inventory, Service::Producer],
            Service::Consumer => &[Service::Inventory, Service::Order],
            Service::Inventory | Service::User | Service::Producer => &[],
        }
    }

    /// Keys of the shared ConfigMap it reads, in the order they are set.
    pub fn config_keys(self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = COMMON.to_vec();
        keys.push(self.addr_env());
        keys.extend(self.dials().iter().map(|s| s.addr_env()));
        match self {
            Service::Inventory => {
                keys.extend(DB);
                keys.extend(NATS_ANNOUNCEMENTS);
            }
            Service::Order | Service::User => keys.extend(DB),
            Service::Producer => keys.extend(NATS),
            Service::Consumer => {
                keys.extend(NATS);
                keys.push("NATS_CONSUMER_NAME");
            }
            Service::Gateway => keys.extend(NATS_ANNOUNCEMENTS),
        }
        keys
    }

    /// Secrets it reads (each from a Secret key named in the spec).
    pub fn secrets(self) -> &'static [SecretSetting] {
        use SecretSetting::*;
        match self {
            Service::Gateway => &[JwtSecret, InternalAuthToken],
            Service::Inventory | Service::Order => &[DbPassword, InternalAuthToken],
            Service::User => &[DbPassword, AdminPassword, InternalAuthToken],
            Service::Producer | Service::Consumer => &[InternalAuthToken],
        }
    }

    /// Whether it talks to PostgreSQL.
    pub fn uses_database(self) -> bool {
        matches!(self, Service::Inventory | Service::Order | Service::User)
    }

    /// Whether it talks to NATS: the order events (producer, consumer) or
    /// the product change announcements (inventory, gateway; best effort,
    /// both work without NATS).
    pub fn uses_nats(self) -> bool {
        matches!(
            self,
            Service::Gateway | Service::Inventory | Service::Producer | Service::Consumer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_reads_its_own_address_and_those_it_dials() {
        assert_eq!(
            Service::Gateway.config_keys(),
            [
                "APP_ENV",
                "LOG_FORMAT",
                "API_GATEWAY_ADDR",
                "INVENTORY_ADDR",
                "ORDER_ADDR",
                "USER_ADDR",
                "NATS_ADDR",
                "NATS_SUBJECT_PREFIX"
            ]
        );
        assert!(Service::Order.config_keys().contains(&"PRODUCER_ADDR"));
        assert!(Service::Consumer.config_keys().contains(&"NATS_STREAM"));
        assert!(!Service::Gateway.config_keys().contains(&"DB_HOST"));
    }

    #[test]
    fn nats_is_for_the_events_and_the_product_change_announcements() {
        for service in Service::ALL {
            let keys = service.config_keys();
            assert_eq!(
                keys.contains(&"NATS_ADDR") && keys.contains(&"NATS_SUBJECT_PREFIX"),
                service.uses_nats(),
                "{}",
                service.name()
            );
            // Only the stream's producer and consumer read the stream.
            assert_eq!(
                keys.contains(&"NATS_STREAM"),
                matches!(service, Service::Producer | Service::Consumer),
                "{}",
                service.name()
            );
        }
        assert!(Service::Inventory.uses_nats() && Service::Gateway.uses_nats());
        assert!(!Service::Order.uses_nats() && !Service::User.uses_nats());
    }
}
