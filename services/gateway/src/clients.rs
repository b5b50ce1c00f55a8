//! The gRPC clients of the downstream services, each behind its circuit
//! breaker, and their readiness checks.

use std::future::Future;
use std::time::Duration;

use platform::config::{CallSettings, Endpoints};
use platform::grpc::TracedChannel;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::order::v1::order_service_client::OrderServiceClient;
use proto::user::v1::user_service_client::UserServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::breaker::CircuitBreaker;
use crate::problem::Problem;

/// One downstream service: its client, health client and breaker.
pub struct Downstream<C> {
    pub name: &'static str,
    client: C,
    health: HealthClient<TracedChannel>,
    breaker: CircuitBreaker,
}

/// Whether a status says the service could not be reached in time (what the
/// breaker counts); any other answer, including an UNAVAILABLE that the
/// service itself wrote (with details) about one of its own dependencies,
/// shows it is alive.
fn is_unreachable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => true,
        Code::Unavailable => platform::grpc::error_detail(status).is_none(),
        _ => false,
    }
}

impl<C: Clone> Downstream<C> {
    fn new(
        name: &'static str,
        channel: TracedChannel,
        make: impl FnOnce(TracedChannel) -> C,
        breaker: CircuitBreaker,
    ) -> Self {
        Downstream {
            name,
            client: make(channel.clone()),
            health: HealthClient::new(channel),
            breaker,
        }
    }

    /// Makes one call through the breaker; a failure becomes its problem.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Problem>
    where
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if let Err(wait) = self.breaker.allow() {
            crate::http::observe::breaker_rejected(self.name);
            return Err(Problem::circuit_open(self.name, wait));
        }
        match call(self.client.clone()).await {
            Ok(response) => {
                self.breaker.record_success();
                Ok(response.into_inner())
            }
            Err(status) => {
                let status = platform::grpc::normalize_client_status(status);
                if is_unreachable(&status) {
                    self.breaker.record_failure();
                    tracing::warn!(service = self.name, code = ?status.code(), message = status.message(), "downstream unreachable");
                } else {
                    self.breaker.record_success();
                }
                Err(Problem::from_status(self.name, &status))
            }
        }
    }

    /// Asks the service's standard gRPC health service (not through the
    /// breaker: readiness must see the truth).
    pub async fn check_ready(&self, timeout: Duration) -> Result<(), String> {
        let mut health = self.health.clone();
        let request = HealthCheckRequest {
            service: String::new(),
        };
        match tokio::time::timeout(timeout, health.check(request)).await {
            Err(_) => Err("no answer in time".to_owned()),
            Ok(Err(status)) => Err(format!("{:?}", status.code())),
            Ok(Ok(response)) => {
                let status = response.into_inner().status;
                if status == ServingStatus::Serving as i32 {
                    Ok(())
                } else {
                    Err(format!(
                        "{:?}",
                        ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown)
                    ))
                }
            }
        }
    }
}

/// Every service the gateway calls.
pub struct Clients {
    pub inventory: Downstream<InventoryServiceClient<TracedChannel>>,
    pub order: Downstream<OrderServiceClient<TracedChannel>>,
    pub user: Downstream<UserServiceClient<TracedChannel>>,
}

impl Clients {
    /// Lazily connected channels: the gateway starts (and answers 503) even
    /// when a service is not up yet.
    pub fn new(
        endpoints: &Endpoints,
        calls: CallSettings,
        breaker_failures: u32,
        breaker_cooldown: Duration,
    ) -> anyhow::Result<Self> {
        let breaker = || CircuitBreaker::new(breaker_failures, breaker_cooldown);
        Ok(Clients {
            inventory: Downstream::new(
                "inventory",
                platform::grpc::channel(&endpoints.inventory, calls)?,
                InventoryServiceClient::new,
                breaker(),
            ),
            order: Downstream::new(
                "order",
                platform::grpc::channel(&endpoints.order, calls)?,
                OrderServiceClient::new,
                breaker(),
            ),
            user: Downstream::new(
                "user",
                platform::grpc::channel(&endpoints.user, calls)?,
                UserServiceClient::new,
                breaker(),
            ),
        })
    }

    /// The readiness of each downstream service, by name.
    pub async fn readiness(&self, timeout: Duration) -> Vec<(&'static str, Result<(), String>)> {
        let (inventory, order, user) = tokio::join!(
            self.inventory.check_ready(timeout),
            self.order.check_ready(timeout),
            self.user.check_ready(timeout),
        );
        vec![
            (self.inventory.name, inventory),
            (self.order.name, order),
            (self.user.name, user),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::grpc::status_with_detail;

    #[test]
    fn only_silence_and_refusal_count_as_unreachable() {
        assert!(is_unreachable(&tonic::Status::unavailable(
            "tcp connect error"
        )));
        assert!(is_unreachable(&tonic::Status::deadline_exceeded("slow")));
        // tonic's own client timeout.
        assert!(is_unreachable(&tonic::Status::cancelled("Timeout expired")));
        // The service answered: it is up, whatever it said.
        assert!(!is_unreachable(&tonic::Status::not_found("no order")));
        assert!(!is_unreachable(&tonic::Status::internal("bug")));
        // UNAVAILABLE written by the service about its own dependency.
        let dependency_down = status_with_detail(
            Code::Unavailable,
            "inventory unavailable",
            "INVENTORY_UNAVAILABLE",
            vec![],
        );
        assert!(!is_unreachable(&dependency_down));
    }
}
