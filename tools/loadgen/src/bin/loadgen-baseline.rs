//! `loadgen-baseline`: the cheapest possible actix-web server answering
//! `GET /products/{id}` with a product shaped exactly like the gateway's.
//! `make bench` loads it the same way as the gateway: the ratio between the
//! two is what the gateway's own work (auth, gRPC, PostgreSQL) costs.
//!
//! Usage: `loadgen-baseline [ADDR]` (default 127.0.0.1:18090).

use actix_web::{App, HttpResponse, HttpServer, get, web};
use serde::Serialize;

/// The gateway's product JSON (see services/gateway/src/http/dto.rs).
#[derive(Serialize)]
struct Product {
    id: String,
    name: &'static str,
    category: &'static str,
    stock: i32,
    price: f64,
    created_at: &'static str,
    updated_at: &'static str,
}

#[get("/products/{id}")]
async fn product(id: web::Path<String>) -> HttpResponse {
    // Serialized per request, as the gateway does.
    HttpResponse::Ok().json(Product {
        id: id.into_inner(),
        name: "Laptop",
        category: "Electronics",
        stock: 100,
        price: 999.99,
        created_at: "2026-01-01T00:00:00Z",
        updated_at: "2026-01-01T00:00:00Z",
    })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    eprintln!("loadgen-baseline: listening on {addr}");
    // As the gateway's server: Nagle's algorithm off.
    HttpServer::new(|| App::new().service(product))
        .tcp_nodelay(true)
        .bind(&addr)?
        .run()
        .await
}
