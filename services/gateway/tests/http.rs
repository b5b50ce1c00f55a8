//! The gateway's HTTP edge in-process, with every downstream service
//! unreachable: what is decided at the edge (auth, validation, problem
//! documents, rate limits, the circuit breaker) needs no service at all.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{test, web};
use gateway::auth::{JwtKeys, JwtSettings, Role};
use gateway::config::TrustedProxies;
use gateway::http::{ApiDocument, app, openapi};
use platform::config::{CallSettings, Endpoints, ServiceAddr};
use serde_json::{Value, json};
use uuid::Uuid;

/// A port nothing listens on: connections are refused at once.
fn closed_port() -> ServiceAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    ServiceAddr {
        host: Some("127.0.0.1".into()),
        port,
    }
}

fn config(login_per_minute: u32) -> gateway::Config {
    gateway::Config {
        listen: closed_port(),
        endpoints: Endpoints {
            gateway: closed_port(),
            inventory: closed_port(),
            order: closed_port(),
            user: closed_port(),
            producer: closed_port(),
            consumer: closed_port(),
        },
        calls: CallSettings {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(1),
        },
        jwt: JwtSettings {
            secret: b"in-process-test-secret-0123456789abcdef".to_vec(),
            issuer: "test".into(),
            ttl: Duration::from_secs(60),
        },
        login_per_minute,
        orders_per_minute: 0,
        trusted_proxies: TrustedProxies::default(),
        register_per_minute: 0,
        login_per_account_per_minute: 0,
        breaker_failures: 2,
        breaker_cooldown: Duration::from_secs(60),
        max_body_bytes: 4096,
        workers: 1,
        // Every read goes to Inventory: these tests are about the edge.
        product_cache_ttl: Duration::ZERO,
        product_cache_capacity: 0,
        nats: platform::config::NatsSettings {
            addr: "nats://127.0.0.1:1".into(),
            stream: "UNUSED".into(),
            subject_prefix: "unused".into(),
            dead_letter_stream: "UNUSED_DLQ".into(),
        },
    }
}

macro_rules! service {
    ($config:expr) => {{
        let config = $config;
        let shared = gateway::state(&config).unwrap();
        let keys = web::Data::new(JwtKeys::new(&config.jwt));
        let document = web::Data::new(ApiDocument::new(&openapi()).unwrap());
        let token = |role| keys.issue(Uuid::new_v4(), role).unwrap();
        let (admin, customer) = (token(Role::Admin), token(Role::Customer));
        let service =
            test::init_service(app(shared, keys.clone(), document, config.max_body_bytes)).await;
        (service, admin, customer)
    }};
}

/// Checks the problem document of an error answer and returns it.
async fn problem<B: actix_web::body::MessageBody>(
    response: actix_web::dev::ServiceResponse<B>,
    status: u16,
) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).unwrap(),
        "application/problem+json"
    );
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(body["errors"].is_array(), "{body}");
    body
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

#[actix_web::test]
async fn decisions_at_the_edge_need_no_service() {
    let (service, admin, customer) = service!(config(0));

    let response = test::call_service(
        &service,
        test::TestRequest::get().uri("/nowhere").to_request(),
    )
    .await;
    problem(response, 404).await;

    // A known path with a method it does not serve.
    let request = test::TestRequest::put()
        .uri(&format!("/products/{}", Uuid::new_v4()))
        .to_request();
    let response = test::call_service(&service, request).await;
    let allow = response
        .headers()
        .get(actix_web::http::header::ALLOW)
        .unwrap();
    assert_eq!(allow.to_str().unwrap(), "DELETE, GET, PATCH");
    problem(response, 405).await;

    let request = test::TestRequest::post()
        .uri("/products")
        .set_json(json!({}))
        .to_request();
    let response = test::call_service(&service, request).await;
    assert!(
        response
            .headers()
            .get(WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    problem(response, 401).await;

    let laptop = json!({"name":"Laptop","category":"Electronics","stock":100,"price":999.99});
    let request = test::TestRequest::post()
        .uri("/products")
        .insert_header(bearer(&customer))
        .set_json(laptop.clone())
        .to_request();
    problem(test::call_service(&service, request).await, 403).await;

    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "array",
            Some("application/json"),
            "[]".into(),
            400,
            "JSON object",
        ),
        (
            "positional array",
            Some("application/json"),
            r#"["Laptop","Electronics",100,999.99]"#.into(),
            400,
            "JSON object",
        ),
        (
            "syntax",
            Some("application/json"),
            "{".into(),
            400,
            "not valid JSON",
        ),
        ("empty", Some("application/json"), "".into(), 400, "empty"),
        (
            "text",
            Some("text/plain"),
            laptop.to_string(),
            415,
            "Content-Type",
        ),
        ("no type", None, laptop.to_string(), 415, "Content-Type"),
        (
            "too big",
            Some("application/json"),
            format!(r#"{{"name":"{}"}}"#, "x".repeat(5000)),
            413,
            "HTTP_MAX_BODY_BYTES",
        ),
        (
            "unknown field",
            Some("application/json"),
            r#"{"name":"A","category":"B","stock":1,"price":1,"id":"x"}"#.into(),
            400,
            "unknown field `id`",
        ),
    ];
    for (what, content_type, body, status, needle) in cases {
        let mut request = test::TestRequest::post()
            .uri("/products")
            .insert_header(bearer(&admin));
        if let Some(content_type) = content_type {
            request = request.insert_header((CONTENT_TYPE, content_type));
        }
        let response = test::call_service(&service, request.set_payload(body).to_request()).await;
        let body = problem(response, status).await;
        assert!(body.to_string().contains(needle), "{what}: {body}");
    }

    let request = test::TestRequest::get()
        .uri("/products/not-a-uuid")
        .to_request();
    let body = problem(test::call_service(&service, request).await, 400).await;
    assert_eq!(body["errors"][0]["field"], "id", "{body}");

    // Another user's profile is refused at the edge (the user service is
    // unreachable, so a call would have been a 503).
    let request = test::TestRequest::get()
        .uri(&format!("/users/{}", Uuid::new_v4()))
        .insert_header(bearer(&customer))
        .to_request();
    problem(test::call_service(&service, request).await, 404).await;

    let request = test::TestRequest::get().uri("/openapi.json").to_request();
    let document: Value = test::call_and_read_body_json(&service, request).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
}

#[actix_web::test]
async fn an_unreachable_service_is_503_then_the_breaker_answers_at_once() {
    let (service, _, _) = service!(config(0));
    for _ in 0..2 {
        let request = test::TestRequest::get().uri("/products").to_request();
        let body = problem(test::call_service(&service, request).await, 503).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("inventory service is unavailable"),
            "{body}"
        );
    }
    // Two consecutive failures opened it (CIRCUIT_BREAKER_FAILURES=2).
    let request = test::TestRequest::get().uri("/products").to_request();
    let response = test::call_service(&service, request).await;
    let retry_after: u64 = response
        .headers()
        .get(RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body = problem(response, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("keeps failing"),
        "{body}"
    );

    // Each service has its own breaker.
    let request = test::TestRequest::post()
        .uri("/users/login")
        .set_json(json!({"username":"a","password":"b"}))
        .to_request();
    let response = test::call_service(&service, request).await;
    assert!(response.headers().get(RETRY_AFTER).is_none());
    let body = problem(response, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("user service"),
        "{body}"
    );

    let request = test::TestRequest::get()
        .uri("/readyz/downstreams")
        .to_request();
    let body = problem(test::call_service(&service, request).await, 503).await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 3, "{body}");
    // The gateway itself is ready: its routes answer (503 for these).
    let request = test::TestRequest::get().uri("/readyz").to_request();
    let response = test::call_service(&service, request).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[actix_web::test]
async fn login_is_rate_limited_per_client() {
    let (service, _, _) = service!(config(2));
    let login = |ip: &str| {
        test::TestRequest::post()
            .uri("/users/login")
            .peer_addr(format!("{ip}:40000").parse().unwrap())
            .set_json(json!({"username":"a","password":"b"}))
            .to_request()
    };
    for _ in 0..2 {
        let response = test::call_service(&service, login("10.1.1.1")).await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let response = test::call_service(&service, login("10.1.1.1")).await;
    assert!(response.headers().get(RETRY_AFTER).is_some());
    problem(response, 429).await;
    // Another client still gets through.
    let response = test::call_service(&service, login("10.2.2.2")).await;
    assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn passwords_are_bounded_as_the_user_service_bounds_them() {
    let (service, _, _) = service!(config(0));
    let register = |password: String| {
        test::TestRequest::post()
            .uri("/users/register")
            .set_json(
                json!({"username": "alice", "email": "alice@example.com", "password": password}),
            )
            .to_request()
    };
    // The User service takes 8 to 128 characters and hashes every one (a
    // SHA-256 before bcrypt): a long passphrase passes the edge, and only
    // then meets the unreachable service (503).
    for password in ["p".repeat(100), "é".repeat(128)] {
        let response = test::call_service(&service, register(password)).await;
        problem(response, 503).await;
    }
    let response = test::call_service(&service, register("p".repeat(129))).await;
    let body = problem(response, 400).await;
    assert_eq!(body["errors"][0]["field"], "password", "{body}");

    // Emails: up to 254 characters, as the User service takes them.
    let label = "b".repeat(60);
    let email = format!("{}@{label}.{label}.{label}.com", "a".repeat(64));
    assert_eq!(email.len(), 251);
    let request = test::TestRequest::post()
        .uri("/users/register")
        .set_json(json!({"username": "alice", "email": email, "password": "long enough pw"}))
        .to_request();
    problem(test::call_service(&service, request).await, 503).await;
}

#[actix_web::test]
async fn an_ipv6_client_is_limited_by_its_network_not_each_address() {
    let (service, _, _) = service!(config(2));
    let login = |ip: &str| {
        test::TestRequest::post()
            .uri("/users/login")
            .peer_addr(format!("[{ip}]:40000").parse().unwrap())
            .set_json(json!({"username":"a","password":"b"}))
            .to_request()
    };
    // One host holds a whole /64: rotating the interface id must not buy a
    // fresh allowance of logins.
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        let response = test::call_service(&service, login(ip)).await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let response = test::call_service(&service, login("2001:db8:1:2:ffff:1:2:3")).await;
    problem(response, 429).await;
    // Another network still gets through.
    let response = test::call_service(&service, login("2001:db8:1:3::1")).await;
    assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn a_bad_query_parameter_is_named() {
    let (service, _, customer) = service!(config(0));
    for (uri, field) in [
        ("/products?page=abc", "page"),
        ("/products?page=1&page_size=-5", "page_size"),
        ("/products?page_size=99999999999", "page_size"),
        ("/orders?user_id=not-a-uuid", "user_id"),
        ("/orders?page=1.5", "page"),
    ] {
        let request = test::TestRequest::get()
            .uri(uri)
            .insert_header(bearer(&customer))
            .to_request();
        let body = problem(test::call_service(&service, request).await, 400).await;
        assert_eq!(body["errors"][0]["field"], field, "{uri}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{uri}: {body}"
        );
    }
}

#[actix_web::test]
async fn invented_methods_do_not_create_metric_series() {
    let (service, _, _) = service!(config(0));
    for method in ["ZZINVENTED1", "ZZINVENTED2"] {
        let request = test::TestRequest::default()
            .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri("/nowhere")
            .to_request();
        problem(test::call_service(&service, request).await, 404).await;
    }
    // Each distinct label value is a series kept forever: a client must not
    // be able to mint them.
    let metrics = platform::metrics::render();
    assert!(!metrics.contains("ZZINVENTED"), "{metrics}");
    assert!(
        metrics.contains(r#"method="OTHER",route="unmatched",status="404""#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn behind_a_proxy_the_client_is_the_address_the_proxy_added() {
    let mut settings = config(2);
    settings.trusted_proxies = TrustedProxies::parse("10.9.9.9").unwrap();
    let (service, _, _) = service!(settings);
    let login = |headers: &[(&'static str, &'static str)]| {
        let mut request = test::TestRequest::post()
            .uri("/users/login")
            .peer_addr("10.9.9.9:40000".parse().unwrap())
            .set_json(json!({"username":"a","password":"b"}));
        for header in headers {
            request = request.insert_header(*header);
        }
        request.to_request()
    };
    // The proxy appends the address it saw (203.0.113.7); what the client
    // wrote before it, and a `Forwarded` header the proxy passes through,
    // are the client's to invent and must not buy fresh allowances.
    for headers in [
        vec![("X-Forwarded-For", "198.51.100.1, 203.0.113.7")],
        vec![("X-Forwarded-For", "198.51.100.2, 203.0.113.7")],
    ] {
        let response = test::call_service(&service, login(&headers)).await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let spoofed = [
        ("Forwarded", "for=198.51.100.3"),
        ("X-Forwarded-For", "203.0.113.7"),
    ];
    problem(test::call_service(&service, login(&spoofed)).await, 429).await;
    // Another client behind the same proxy still gets through.
    let other = [("X-Forwarded-For", "203.0.113.8")];
    let response = test::call_service(&service, login(&other)).await;
    assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A login from `client` through the proxy 10.9.9.9 (or directly, when
/// `client` is `None`), for `username`.
fn login_via(
    client: Option<&str>,
    peer: &str,
    username: &str,
    password: &str,
) -> test::TestRequest {
    let mut request = test::TestRequest::post()
        .uri("/users/login")
        .peer_addr(format!("{peer}:40000").parse().unwrap())
        .set_json(json!({"username": username, "password": password}));
    if let Some(client) = client {
        request = request.insert_header(("X-Forwarded-For", client.to_owned()));
    }
    request
}

#[actix_web::test]
async fn behind_a_trusted_proxy_one_clients_bad_logins_never_limit_another() {
    let mut settings = config(2);
    settings.trusted_proxies = TrustedProxies::parse("10.0.0.0/8, fd00::/8").unwrap();
    let (service, _, _) = service!(settings);
    let proxy = "10.9.9.9";
    // Junk (a login without a password) is refused before any quota is
    // spent: it cannot eat anybody's budget.
    for _ in 0..5 {
        let response = test::call_service(
            &service,
            login_via(Some("198.51.100.1"), proxy, "a", "").to_request(),
        )
        .await;
        problem(response, 400).await;
    }
    // A's bad logins spend A's allowance...
    for _ in 0..2 {
        let response = test::call_service(
            &service,
            login_via(Some("198.51.100.1"), proxy, "a", "x").to_request(),
        )
        .await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let response = test::call_service(
        &service,
        login_via(Some("198.51.100.1"), proxy, "a", "x").to_request(),
    )
    .await;
    problem(response, 429).await;
    // Client-written junk left of the address the proxy added changes
    // nothing: it is still A, still limited, and not the proxy's bucket.
    let response = test::call_service(
        &service,
        login_via(Some("not-an-address, 198.51.100.1"), proxy, "a", "x").to_request(),
    )
    .await;
    problem(response, 429).await;
    // ...and never B's, behind the same proxy (and a second proxy hop).
    let response = test::call_service(
        &service,
        login_via(Some("198.51.100.2, 10.1.1.1"), proxy, "b", "x").to_request(),
    )
    .await;
    assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // A peer that is not a trusted proxy cannot choose its address.
    let direct = "198.51.100.50";
    let response = test::call_service(
        &service,
        login_via(Some("198.51.100.77"), direct, "c", "x").to_request(),
    )
    .await;
    assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = test::call_service(
        &service,
        login_via(Some("198.51.100.78"), direct, "c", "x").to_request(),
    )
    .await;
    assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let response = test::call_service(
        &service,
        login_via(Some("198.51.100.79"), direct, "c", "x").to_request(),
    )
    .await;
    problem(response, 429).await;
}

#[actix_web::test]
async fn logins_are_limited_per_account_and_registrations_per_client() {
    let mut settings = config(100);
    settings.login_per_account_per_minute = 3;
    settings.register_per_minute = 2;
    let (service, _, _) = service!(settings);
    // One account guessed at from many addresses.
    for n in 0..3 {
        let peer = format!("198.51.100.{n}");
        let response =
            test::call_service(&service, login_via(None, &peer, "Victim", "x").to_request()).await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let response = test::call_service(
        &service,
        login_via(None, "198.51.100.9", "victim", "x").to_request(),
    )
    .await;
    problem(response, 429).await;
    // Another account is not affected.
    let response = test::call_service(
        &service,
        login_via(None, "198.51.100.9", "other", "x").to_request(),
    )
    .await;
    assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);

    let register = |body: serde_json::Value| {
        test::TestRequest::post()
            .uri("/users/register")
            .peer_addr("203.0.113.5:40000".parse().unwrap())
            .set_json(body)
            .to_request()
    };
    let good = || json!({"username": "newbie", "email": "newbie@example.com", "password": "long-enough-password"});
    // Malformed registrations do not count...
    for _ in 0..3 {
        let response = test::call_service(&service, register(json!({"username": ""}))).await;
        problem(response, 400).await;
    }
    // ...well-formed ones do.
    for _ in 0..2 {
        let response = test::call_service(&service, register(good())).await;
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let response = test::call_service(&service, register(good())).await;
    problem(response, 429).await;
}

/// The constraints the OpenAPI document states are the ones enforced: the
/// gateway's early checks and the service that owns each rule both read
/// `platform::limits`, and the document states the same values (utoipa
/// takes only literals in its attributes, so this test holds them equal). A
/// client generated from the document sends nothing the API refuses for a
/// limit the document did not state.
#[actix_web::test]
async fn openapi_constraints_are_the_enforced_rules() {
    use platform::limits::*;
    let doc: Value = serde_json::from_str(&openapi().to_json().unwrap()).unwrap();
    let schema =
        |name: &str, field: &str| doc["components"]["schemas"][name]["properties"][field].clone();
    let number = |v: &Value, key: &str| {
        v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {v}"))
    };
    let parameter = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    };

    for product in ["CreateProduct", "UpdateProduct"] {
        let stock = schema(product, "stock");
        assert_eq!(number(&stock, "minimum"), 0.0, "{product}");
        assert_eq!(number(&stock, "maximum"), MAX_STOCK as f64, "{product}");
        let name = schema(product, "name");
        assert_eq!(number(&name, "minLength"), 1.0, "{product}");
        assert_eq!(
            number(&name, "maxLength") as usize,
            MAX_PRODUCT_NAME_CHARS,
            "{product}"
        );
        let category = schema(product, "category");
        assert_eq!(
            number(&category, "maxLength") as usize,
            MAX_CATEGORY_CHARS,
            "{product}"
        );
        let price = schema(product, "price");
        assert_eq!(
            number(&price, "multipleOf"),
            10f64.powi(-(MONEY_SCALE as i32)),
            "{product}"
        );
    }

    let username = schema("RegisterUser", "username");
    assert_eq!(
        number(&username, "minLength") as usize,
        *USERNAME_CHARS.start()
    );
    assert_eq!(
        number(&username, "maxLength") as usize,
        *USERNAME_CHARS.end()
    );
    let email = schema("RegisterUser", "email");
    assert_eq!(number(&email, "maxLength") as usize, MAX_EMAIL_CHARS);
    let password = schema("RegisterUser", "password");
    assert_eq!(
        number(&password, "minLength") as usize,
        *PASSWORD_CHARS.start()
    );
    assert_eq!(
        number(&password, "maxLength") as usize,
        *PASSWORD_CHARS.end()
    );

    let login_name = schema("Login", "username");
    assert_eq!(
        number(&login_name, "maxLength") as usize,
        MAX_LOGIN_NAME_CHARS
    );
    let login_password = schema("Login", "password");
    assert_eq!(
        number(&login_password, "maxLength") as usize,
        MAX_LOGIN_PASSWORD_BYTES
    );

    let items = schema("CreateOrder", "items");
    assert_eq!(number(&items, "minItems"), 1.0);
    assert_eq!(number(&items, "maxItems") as usize, MAX_ORDER_LINES);
    let quantity = doc["components"]["schemas"]["OrderItemInput"]["properties"]["quantity"].clone();
    assert_eq!(number(&quantity, "minimum") as u32, *ITEM_QUANTITY.start());
    assert_eq!(number(&quantity, "maximum") as u32, *ITEM_QUANTITY.end());
    let key = parameter("/orders", "post", "Idempotency-Key");
    assert_eq!(number(&key, "minLength"), 1.0);
    assert_eq!(
        number(&key, "maxLength") as usize,
        MAX_IDEMPOTENCY_KEY_BYTES
    );

    for path in ["/products", "/orders"] {
        let page_size = parameter(path, "get", "page_size");
        assert_eq!(number(&page_size, "minimum"), 1.0, "{path}");
        assert_eq!(
            number(&page_size, "maximum") as u32,
            MAX_PAGE_SIZE,
            "{path}"
        );
    }
}

/// Every route that takes a body documents 413 and 415, which the gateway
/// answers for any of them.
#[actix_web::test]
async fn every_body_taking_route_documents_413_and_415() {
    let doc: Value = serde_json::from_str(&openapi().to_json().unwrap()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation.get("requestBody").is_none() {
                continue;
            }
            checked += 1;
            for status in ["413", "415"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
    assert_eq!(checked, 6);
}
