//! The gRPC clients of the downstream services, each behind its circuit
//! breaker, and their readiness checks.
//!
//! Each actix worker has its own clients: a channel's connection is driven by
//! a task on the runtime that made it, so clients shared by every worker would
//! hand each call to another thread and back. The breakers are shared: a
//! service that keeps failing is failing for every worker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use platform::config::{CallSettings, Endpoints};
use platform::grpc::TracedChannel;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use proto::order::v1::order_service_client::OrderServiceClient;
use proto::user::v1::user_service_client::UserServiceClient;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::breaker::CircuitBreaker;
use crate::problem::Problem;

/// One downstream service as one worker calls it: its client, health client
/// and (shared) breaker.
pub struct Downstream<C> {
    pub name: &'static str,
    client: C,
    health: HealthClient<TracedChannel>,
    breaker: Arc<CircuitBreaker>,
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

/// One downstream service as every worker shares it: where it is and its
/// breaker.
struct Route {
    name: &'static str,
    endpoint: Endpoint,
    breaker: Arc<CircuitBreaker>,
}

impl Route {
    fn new(
        name: &'static str,
        addr: &platform::config::ServiceAddr,
        calls: CallSettings,
        breaker_failures: u32,
        breaker_cooldown: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Route {
            name,
            endpoint: platform::grpc::endpoint(addr, calls)?,
            breaker: Arc::new(CircuitBreaker::new(breaker_failures, breaker_cooldown)),
        })
    }

    fn connect_lazy<C>(&self, make: impl FnOnce(TracedChannel) -> C) -> Downstream<C> {
        let channel = platform::grpc::lazy_channel(&self.endpoint);
        Downstream {
            name: self.name,
            client: make(channel.clone()),
            health: HealthClient::new(channel),
            breaker: self.breaker.clone(),
        }
    }
}

/// Every service the gateway calls, as the workers share them.
pub struct Downstreams {
    inventory: Route,
    order: Route,
    user: Route,
}

impl Downstreams {
    pub fn new(
        endpoints: &Endpoints,
        calls: CallSettings,
        breaker_failures: u32,
        breaker_cooldown: Duration,
    ) -> anyhow::Result<Self> {
        let route = |name, addr| Route::new(name, addr, calls, breaker_failures, breaker_cooldown);
        Ok(Downstreams {
            inventory: route("inventory", &endpoints.inventory)?,
            order: route("order", &endpoints.order)?,
            user: route("user", &endpoints.user)?,
        })
    }

    /// Clients that connect on first use, driven by the current runtime: call
    /// on the worker's own thread, and the gateway starts (and answers 503)
    /// even when a service is not up yet.
    pub fn connect_lazy(&self) -> Clients {
        Clients {
            inventory: self.inventory.connect_lazy(InventoryServiceClient::new),
            order: self.order.connect_lazy(OrderServiceClient::new),
            user: self.user.connect_lazy(UserServiceClient::new),
        }
    }
}

/// Every service the gateway calls, as one worker calls them.
pub struct Clients {
    pub inventory: Downstream<InventoryServiceClient<TracedChannel>>,
    pub order: Downstream<OrderServiceClient<TracedChannel>>,
    pub user: Downstream<UserServiceClient<TracedChannel>>,
}

impl Clients {
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
    use proto::user::v1::GetUserRequest;

    /// Each worker has its own channels, but a service failing for one worker
    /// is paused for all of them.
    #[tokio::test]
    async fn every_workers_clients_share_one_breaker() {
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = refusing.local_addr().unwrap().port();
        drop(refusing);
        let addr: platform::config::ServiceAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let endpoints = Endpoints {
            gateway: addr.clone(),
            inventory: addr.clone(),
            order: addr.clone(),
            user: addr.clone(),
            producer: addr.clone(),
            consumer: addr,
        };
        let calls = CallSettings {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
        };
        let downstreams = Downstreams::new(&endpoints, calls, 1, Duration::from_secs(60)).unwrap();
        let (first_worker, second_worker) =
            (downstreams.connect_lazy(), downstreams.connect_lazy());
        let get_user = |mut client: UserServiceClient<TracedChannel>| async move {
            client.get_user(GetUserRequest::default()).await
        };

        let refused = first_worker.user.call(get_user).await.unwrap_err();
        assert!(refused.detail.contains("unavailable"), "{}", refused.detail);
        assert_eq!(refused.retry_after, None);
        let paused = second_worker.user.call(get_user).await.unwrap_err();
        assert!(paused.detail.contains("keeps failing"), "{}", paused.detail);
        assert!(paused.retry_after.is_some());
        // Only the failing service is paused.
        let refused = second_worker.order.call(|mut client| async move {
            client
                .get_order(proto::order::v1::GetOrderRequest::default())
                .await
        });
        assert_eq!(refused.await.unwrap_err().retry_after, None);
    }

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
