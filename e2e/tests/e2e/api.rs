//! The REST API end to end: the real gateway in front of the real services,
//! PostgreSQL and NATS. The user story, every authorization rule, a table of
//! bad requests, downstream failures, rate limits and the OpenAPI document.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::JWT_ISSUER as ISSUER;
use e2e::api::{Api, Body};
use e2e::{ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET as STACK_JWT_SECRET};
use e2e::{Stack, StackOptions, eventually};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

fn jwt(secret: &str, sub: &str, role: &str, issuer: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "role": role, "iss": issuer, "iat": now - 10, "exp": now + exp_offset}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn laptop() -> Value {
    // The seed's example product.
    json!({"name":"Laptop","category":"Electronics","stock":100,"price":999.99})
}

#[tokio::test]
async fn user_story_register_login_shop_order_confirm_cancel() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = Api::new(&stack);
    let admin = api.admin().await;
    let (alice, alice_id) = api.customer("alice").await;

    let me = api
        .get("/users/me", Some(&alice))
        .await
        .expect(200, "me")
        .json();
    assert_eq!(me["id"], alice_id.to_string());
    assert_eq!(me["role"], "customer");
    let own = api
        .get(&format!("/users/{alice_id}"), Some(&alice))
        .await
        .expect(200, "own profile")
        .json();
    assert_eq!(own["id"], alice_id.to_string());

    // The admin creates the seed's Laptop; the price comes back exactly.
    let created = api
        .post("/products", Some(&admin), laptop())
        .await
        .expect(201, "laptop");
    assert!(
        created.text.contains(r#""price":999.99"#),
        "price is the JSON number 999.99: {}",
        created.text
    );
    let product = created.json();
    let laptop_id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/products/{laptop_id}").as_str())
    );
    assert_eq!(product["name"], "Laptop");
    assert_eq!(product["category"], "Electronics");
    assert_eq!(product["stock"], 100);
    let book = api
        .create_product(
            &admin,
            json!({"name":"Rust in Action","category":"Books","stock":5,"price":39.90}),
        )
        .await;
    assert!(
        serde_json::to_string(&book)
            .unwrap()
            .contains(r#""price":39.9"#)
    );

    // The customer browses one category.
    let page = api
        .get(
            "/products?category=Electronics&page=1&page_size=50",
            Some(&alice),
        )
        .await
        .expect(200, "list electronics")
        .json();
    let names: Vec<&str> = page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Laptop"), "{page}");
    assert!(!names.contains(&"Rust in Action"), "{page}");
    assert!(
        page["products"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["category"] == "Electronics")
    );
    assert_eq!(page["page"], 1);

    // Orders two laptops, with an Idempotency-Key; a retry returns the same order.
    let order_body = json!({"items": [{"product_id": laptop_id, "quantity": 2}]});
    let key = [("Idempotency-Key", "checkout-alice-1")];
    let first = api
        .send(
            Method::POST,
            "/orders",
            Some(&alice),
            &key,
            Body::Json(order_body.clone()),
        )
        .await
        .expect(201, "create order");
    assert!(first.text.contains(r#""total":1999.98"#), "{}", first.text);
    let order = first.json();
    let order_id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(order["user_id"], alice_id.to_string());
    assert_eq!(order["items"][0]["product_id"], laptop_id.as_str());
    assert_eq!(order["items"][0]["quantity"], 2);
    assert!(
        first.text.contains(r#""unit_price":999.99"#),
        "{}",
        first.text
    );

    let replay = api
        .send(
            Method::POST,
            "/orders",
            Some(&alice),
            &key,
            Body::Json(order_body),
        )
        .await
        .expect(200, "replayed order");
    assert_eq!(
        replay.json()["id"],
        order_id.as_str(),
        "a retry creates no second order"
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));

    let reused = api
        .send(
            Method::POST,
            "/orders",
            Some(&alice),
            &key,
            Body::Json(json!({"items": [{"product_id": laptop_id, "quantity": 3}]})),
        )
        .await
        .expect(422, "key reused with another body");
    reused.problem("key reused");

    // The order flow confirms it and takes the stock once.
    let confirmed = api.wait_order_status(&alice, &order_id, "CONFIRMED").await;
    assert_eq!(confirmed["total"].as_f64(), Some(1999.98));
    assert_eq!(api.stock_of(&laptop_id).await, 98);

    let mine = api
        .get("/orders", Some(&alice))
        .await
        .expect(200, "list orders")
        .json();
    assert_eq!(mine["total"], 1, "one order despite the retry: {mine}");
    assert_eq!(mine["orders"][0]["id"], order_id.as_str());

    // Cancelling returns the stock.
    let cancelled = api
        .post(
            &format!("/orders/{order_id}/cancel"),
            Some(&alice),
            json!(null),
        )
        .await;
    // No body at all is fine too; `null` JSON is ignored by an endpoint without one.
    let cancelled = cancelled.expect(200, "cancel").json();
    assert_eq!(cancelled["status"], "CANCELLED");
    eventually(Duration::from_secs(60), "stock restored to 100", || async {
        (api.stock_of(&laptop_id).await == 100).then_some(())
    })
    .await;
    // Cancelling a cancelled order again changes nothing.
    let again = api
        .send(
            Method::POST,
            &format!("/orders/{order_id}/cancel"),
            Some(&alice),
            &[],
            Body::None,
        )
        .await
        .expect(200, "cancel again");
    assert_eq!(again.json()["status"], "CANCELLED");

    // An admin's PATCH sets the stock (not a delta), then deletes a product.
    let patched = api
        .patch(
            &format!("/products/{laptop_id}"),
            Some(&admin),
            json!({"stock": 7, "price": 899.5}),
        )
        .await
        .expect(200, "patch product");
    assert!(
        patched.text.contains(r#""price":899.50"#),
        "{}",
        patched.text
    );
    assert_eq!(patched.json()["stock"], 7);
    let book_id = book["id"].as_str().unwrap();
    api.send(
        Method::DELETE,
        &format!("/products/{book_id}"),
        Some(&admin),
        &[],
        Body::None,
    )
    .await
    .expect(204, "delete product");
    api.get(&format!("/products/{book_id}"), None)
        .await
        .expect(404, "deleted product")
        .problem("deleted product");
}

#[tokio::test]
async fn authorization_rules() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = Api::new(&stack);
    let admin = api.admin().await;
    let (alice, alice_id) = api.customer("alice").await;
    let (bob, bob_id) = api.customer("bob").await;
    let product = api.create_product(&admin, laptop()).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    let bobs_order = api.order(&bob, &product_id, 1).await;
    let bobs_order_id = bobs_order["id"].as_str().unwrap().to_owned();
    api.wait_order_status(&bob, &bobs_order_id, "CONFIRMED")
        .await;

    // 401 with a Bearer challenge: no token, a malformed header, garbage,
    // a forged token (another secret, claiming admin) and an expired one.
    let forged = jwt(
        "not-the-secret-not-the-secret-xxxx",
        &alice_id.to_string(),
        "admin",
        ISSUER,
        3600,
    );
    let expired = jwt(
        STACK_JWT_SECRET,
        &alice_id.to_string(),
        "customer",
        ISSUER,
        -600,
    );
    let wrong_issuer = jwt(
        STACK_JWT_SECRET,
        &alice_id.to_string(),
        "admin",
        "someone-else",
        3600,
    );
    let genuine = jwt(
        STACK_JWT_SECRET,
        &alice_id.to_string(),
        "customer",
        ISSUER,
        3600,
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not bearer", Some("Basic YWRtaW46YWRtaW4=".to_owned())),
        ("garbage", Some("Bearer not.a.jwt".to_owned())),
        ("forged", Some(format!("Bearer {forged}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("wrong issuer", Some(format!("Bearer {wrong_issuer}"))),
    ];
    for (what, authorization) in &cases {
        for (method, path) in [
            (Method::GET, "/orders".to_owned()),
            (Method::GET, "/users/me".to_owned()),
            (Method::GET, format!("/orders/{bobs_order_id}")),
            (Method::POST, "/products".to_owned()),
        ] {
            let headers: Vec<(&str, &str)> = authorization
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            let body = if method == Method::POST {
                Body::Json(laptop())
            } else {
                Body::None
            };
            let answer = api.send(method.clone(), &path, None, &headers, body).await;
            let label = format!("{what}: {method} {path}");
            let answer = answer.expect(401, &label);
            answer.problem(&label);
            assert!(
                answer
                    .header(WWW_AUTHENTICATE)
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{label}: WWW-Authenticate: {:?}",
                answer.headers
            );
        }
    }
    // The control: a token signed with the real secret is accepted.
    api.get("/users/me", Some(&genuine))
        .await
        .expect(200, "genuine token");

    // Product writes and fulfilment need the admin role.
    for (method, path, body) in [
        (Method::POST, "/products".to_owned(), Body::Json(laptop())),
        (
            Method::PATCH,
            format!("/products/{product_id}"),
            Body::Json(json!({"stock": 1})),
        ),
        (
            Method::DELETE,
            format!("/products/{product_id}"),
            Body::None,
        ),
        (
            Method::PATCH,
            format!("/orders/{bobs_order_id}"),
            Body::Json(json!({"status": "SHIPPED"})),
        ),
    ] {
        let label = format!("customer {method} {path}");
        api.send(method, &path, Some(&alice), &[], body)
            .await
            .expect(403, &label)
            .problem(&label);
    }
    assert_eq!(
        api.stock_of(&product_id).await,
        99,
        "the refused writes changed nothing"
    );

    // Another user's order and profile are 404, never 403: ids cannot be probed.
    api.get(&format!("/orders/{bobs_order_id}"), Some(&alice))
        .await
        .expect(404, "alice reads bob's order")
        .problem("alice reads bob's order");
    api.send(
        Method::POST,
        &format!("/orders/{bobs_order_id}/cancel"),
        Some(&alice),
        &[],
        Body::None,
    )
    .await
    .expect(404, "alice cancels bob's order")
    .problem("alice cancels bob's order");
    api.get(&format!("/users/{bob_id}"), Some(&alice))
        .await
        .expect(404, "alice reads bob's profile")
        .problem("alice reads bob's profile");
    let alices = api
        .get("/orders", Some(&alice))
        .await
        .expect(200, "alice's orders")
        .json();
    assert_eq!(
        alices["total"], 0,
        "alice sees none of bob's orders: {alices}"
    );
    api.get(&format!("/orders?user_id={bob_id}"), Some(&alice))
        .await
        .expect(403, "a customer lists another user's orders")
        .problem("list another's");
    let still = api
        .get(&format!("/orders/{bobs_order_id}"), Some(&bob))
        .await
        .expect(200, "bob")
        .json();
    assert_eq!(still["status"], "CONFIRMED", "alice's cancel did nothing");

    // Registration cannot choose a role.
    let sneaky = api
        .post(
            "/users/register",
            None,
            json!({"username":"mallory","email":"mallory@example.com","password":"password123","role":"admin"}),
        )
        .await
        .expect(400, "register with a role");
    let problem = sneaky.problem("register with a role");
    assert_eq!(problem["errors"][0]["field"], "role", "{problem}");

    // The admin sees everything and moves fulfilment along the state machine.
    api.get(&format!("/users/{bob_id}"), Some(&admin))
        .await
        .expect(200, "admin reads bob");
    let for_bob = api
        .get(&format!("/orders?user_id={bob_id}"), Some(&admin))
        .await
        .expect(200, "admin lists bob's")
        .json();
    assert_eq!(for_bob["total"], 1);
    let shipped = api
        .patch(
            &format!("/orders/{bobs_order_id}"),
            Some(&admin),
            json!({"status": "SHIPPED"}),
        )
        .await
        .expect(200, "ship")
        .json();
    assert_eq!(shipped["status"], "SHIPPED");
    api.send(
        Method::POST,
        &format!("/orders/{bobs_order_id}/cancel"),
        Some(&bob),
        &[],
        Body::None,
    )
    .await
    .expect(409, "cancel a shipped order")
    .problem("cancel shipped");
    let delivered = api
        .patch(
            &format!("/orders/{bobs_order_id}"),
            Some(&admin),
            json!({"status": "DELIVERED"}),
        )
        .await
        .expect(200, "deliver")
        .json();
    assert_eq!(delivered["status"], "DELIVERED");
    api.patch(
        &format!("/orders/{bobs_order_id}"),
        Some(&admin),
        json!({"status": "SHIPPED"}),
    )
    .await
    .expect(409, "back to shipped")
    .problem("back to shipped");

    // An Idempotency-Key is scoped to its user: the same key from another
    // user with another body is a new order, not a 422 nor bob's order.
    let shared_key = [("Idempotency-Key", "same-key-for-everyone")];
    let bobs_keyed = api
        .send(
            Method::POST,
            "/orders",
            Some(&bob),
            &shared_key,
            Body::Json(json!({"items": [{"product_id": product_id, "quantity": 1}]})),
        )
        .await
        .expect(201, "bob's keyed order")
        .json();
    let alices_keyed = api
        .send(
            Method::POST,
            "/orders",
            Some(&alice),
            &shared_key,
            Body::Json(json!({"items": [{"product_id": product_id, "quantity": 2}]})),
        )
        .await
        .expect(201, "alice's order with bob's key")
        .json();
    assert_ne!(alices_keyed["id"], bobs_keyed["id"]);
    assert_eq!(alices_keyed["user_id"], alice_id.to_string());
    for (token, order) in [(&bob, &bobs_keyed), (&alice, &alices_keyed)] {
        let id = order["id"].as_str().unwrap();
        api.wait_order_status(token, id, "CONFIRMED").await;
        api.send(
            Method::POST,
            &format!("/orders/{id}/cancel"),
            Some(token),
            &[],
            Body::None,
        )
        .await
        .expect(200, "cancel keyed order");
    }
}

#[tokio::test]
async fn bad_requests_get_a_4xx_problem_that_says_what_was_wrong() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = Api::new(&stack);
    let admin = api.admin().await;
    let (alice, _) = api.customer("alice").await;
    let product = api.create_product(&admin, laptop()).await;
    let pid = product["id"].as_str().unwrap().to_owned();
    let order = api.order(&alice, &pid, 1).await;
    let oid = order["id"].as_str().unwrap().to_owned();
    let unknown = Uuid::new_v4();
    let taken_username = {
        let me = api.get("/users/me", Some(&alice)).await.json();
        me["username"].as_str().unwrap().to_owned()
    };

    enum Who {
        Anyone,
        Admin,
        Alice,
    }
    use Who::*;
    let item = |q: Value| json!({"items": [{"product_id": pid, "quantity": q}]});
    let many_items: Vec<Value> = (0..101)
        .map(|_| json!({"product_id": Uuid::new_v4(), "quantity": 1}))
        .collect();
    let huge_name = "x".repeat(70 * 1024);
    let long_key = "k".repeat(300);

    /// (what, method, path, who, extra headers, body, status, a text the
    /// detail or a field must contain)
    type Case<'a> = (
        &'a str,
        Method,
        String,
        Who,
        Vec<(&'a str, &'a str)>,
        Body,
        u16,
        &'a str,
    );
    let table: Vec<Case> = vec![
        (
            "malformed JSON",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Raw(Some("application/json"), r#"{"name": "#.into()),
            400,
            "not valid JSON",
        ),
        (
            "JSON array for an object",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!([])),
            400,
            "invalid type",
        ),
        (
            "missing price",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":1})),
            400,
            "price",
        ),
        (
            "unknown field",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":1,"price":1.5,"color":"red"})),
            400,
            "color",
        ),
        (
            "price as a string",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":1,"price":"1.50"})),
            400,
            "decimal number",
        ),
        (
            "negative price",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":1,"price":-1})),
            400,
            "price",
        ),
        (
            "zero price",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":1,"price":0})),
            400,
            "price",
        ),
        (
            "three decimals",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Raw(
                Some("application/json"),
                r#"{"name":"A","category":"B","stock":1,"price":1.999}"#.into(),
            ),
            400,
            "at most 2 decimals",
        ),
        (
            "negative stock",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":-5,"price":1})),
            400,
            "stock",
        ),
        (
            "stock as text",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":"ten","price":1})),
            400,
            "invalid type",
        ),
        (
            "stock beyond i32",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Raw(
                Some("application/json"),
                r#"{"name":"A","category":"B","stock":99999999999,"price":1}"#.into(),
            ),
            400,
            "invalid value",
        ),
        (
            "empty name",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":" ","category":"B","stock":1,"price":1})),
            400,
            "name",
        ),
        (
            "name too long",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"n".repeat(201),"category":"B","stock":1,"price":1})),
            400,
            "at most 200",
        ),
        (
            "text/plain body",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Raw(Some("text/plain"), laptop().to_string()),
            415,
            "Content-Type",
        ),
        (
            "no content type",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Raw(None, laptop().to_string()),
            415,
            "Content-Type",
        ),
        (
            "oversized body",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name": huge_name, "category":"B","stock":1,"price":1})),
            413,
            "bytes",
        ),
        (
            "product id not a UUID",
            Method::GET,
            "/products/not-a-uuid".into(),
            Anyone,
            vec![],
            Body::None,
            400,
            "id",
        ),
        (
            "page not a number",
            Method::GET,
            "/products?page=abc".into(),
            Anyone,
            vec![],
            Body::None,
            400,
            "query",
        ),
        (
            "page size too big",
            Method::GET,
            "/products?page_size=1000".into(),
            Anyone,
            vec![],
            Body::None,
            400,
            "page_size",
        ),
        (
            "page zero",
            Method::GET,
            "/products?page=0".into(),
            Anyone,
            vec![],
            Body::None,
            400,
            "page",
        ),
        (
            "unknown query parameter",
            Method::GET,
            "/products?colour=red".into(),
            Anyone,
            vec![],
            Body::None,
            400,
            "colour",
        ),
        (
            "empty patch",
            Method::PATCH,
            format!("/products/{pid}"),
            Admin,
            vec![],
            Body::Json(json!({})),
            400,
            "at least one",
        ),
        (
            "patch negative stock",
            Method::PATCH,
            format!("/products/{pid}"),
            Admin,
            vec![],
            Body::Json(json!({"stock": -1})),
            400,
            "stock",
        ),
        (
            "patch with a delta field",
            Method::PATCH,
            format!("/products/{pid}"),
            Admin,
            vec![],
            Body::Json(json!({"delta": 5})),
            400,
            "delta",
        ),
        (
            "patch unknown product",
            Method::PATCH,
            format!("/products/{unknown}"),
            Admin,
            vec![],
            Body::Json(json!({"stock": 5})),
            404,
            "",
        ),
        (
            "get unknown product",
            Method::GET,
            format!("/products/{unknown}"),
            Anyone,
            vec![],
            Body::None,
            404,
            "",
        ),
        (
            "order without items",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(json!({"items": []})),
            400,
            "items",
        ),
        (
            "order without the items field",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(json!({})),
            400,
            "items",
        ),
        (
            "zero quantity",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(item(json!(0))),
            400,
            "quantity",
        ),
        (
            "negative quantity",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(item(json!(-1))),
            400,
            "invalid value",
        ),
        (
            "fractional quantity",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(item(json!(1.5))),
            400,
            "invalid type",
        ),
        (
            "product id not a UUID in a body",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(json!({"items": [{"product_id": "abc", "quantity": 1}]})),
            400,
            "UUID",
        ),
        (
            "too many items",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(json!({"items": many_items})),
            400,
            "at most 100",
        ),
        (
            "the same product twice",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(
                json!({"items": [{"product_id": pid, "quantity": 1}, {"product_id": pid, "quantity": 2}]}),
            ),
            400,
            "twice",
        ),
        (
            "a client-chosen total",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(json!({"items": [{"product_id": pid, "quantity": 1}], "total": 0.01})),
            400,
            "total",
        ),
        (
            "unknown product",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(json!({"items": [{"product_id": unknown, "quantity": 1}]})),
            404,
            "",
        ),
        (
            "more than the stock",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![],
            Body::Json(item(json!(500))),
            409,
            "",
        ),
        (
            "idempotency key too long",
            Method::POST,
            "/orders".into(),
            Alice,
            vec![("Idempotency-Key", long_key.as_str())],
            Body::Json(item(json!(1))),
            400,
            "Idempotency-Key",
        ),
        (
            "order id not a UUID",
            Method::GET,
            "/orders/123".into(),
            Alice,
            vec![],
            Body::None,
            400,
            "id",
        ),
        (
            "cancel an unknown order",
            Method::POST,
            format!("/orders/{unknown}/cancel"),
            Alice,
            vec![],
            Body::None,
            404,
            "",
        ),
        (
            "status outside fulfilment",
            Method::PATCH,
            format!("/orders/{oid}"),
            Admin,
            vec![],
            Body::Json(json!({"status": "CANCELLED"})),
            400,
            "unknown variant",
        ),
        (
            "status not a string",
            Method::PATCH,
            format!("/orders/{oid}"),
            Admin,
            vec![],
            Body::Json(json!({"status": 5})),
            400,
            "invalid type",
        ),
        (
            "register with a short password",
            Method::POST,
            "/users/register".into(),
            Anyone,
            vec![],
            Body::Json(json!({"username":"shorty","email":"shorty@example.com","password":"123"})),
            400,
            "password",
        ),
        (
            "register without an email",
            Method::POST,
            "/users/register".into(),
            Anyone,
            vec![],
            Body::Json(json!({"username":"noemail","password":"long enough pw"})),
            400,
            "email",
        ),
        (
            "register a taken username",
            Method::POST,
            "/users/register".into(),
            Anyone,
            vec![],
            Body::Json(
                json!({"username": taken_username,"email":"other@example.com","password":"long enough pw"}),
            ),
            409,
            "",
        ),
        (
            "login with a wrong password",
            Method::POST,
            "/users/login".into(),
            Anyone,
            vec![],
            Body::Json(json!({"username": ADMIN_USERNAME, "password":"wrong password"})),
            401,
            "",
        ),
        (
            "login with an unknown user",
            Method::POST,
            "/users/login".into(),
            Anyone,
            vec![],
            Body::Json(json!({"username": "nobody-here", "password":"whatever pw"})),
            401,
            "",
        ),
        (
            "login with a NUL in the username",
            Method::POST,
            "/users/login".into(),
            Anyone,
            vec![],
            Body::Json(json!({"username": "nobody\u{0}here", "password":"whatever pw"})),
            401,
            "invalid username or password",
        ),
        (
            "price as a long non-ASCII string",
            Method::POST,
            "/products".into(),
            Admin,
            vec![],
            Body::Json(json!({"name":"A","category":"B","stock":1,"price":"é".repeat(40)})),
            400,
            "decimal number",
        ),
        (
            "login with an unknown field",
            Method::POST,
            "/users/login".into(),
            Anyone,
            vec![],
            Body::Json(json!({"username":"a","password":"b","remember":true})),
            400,
            "remember",
        ),
        (
            "user id not a UUID",
            Method::GET,
            "/users/abc".into(),
            Alice,
            vec![],
            Body::None,
            400,
            "id",
        ),
        (
            "a method the path does not serve",
            Method::PUT,
            format!("/products/{pid}"),
            Admin,
            vec![],
            Body::Json(laptop()),
            405,
            "use DELETE, GET, PATCH",
        ),
        (
            "no such route",
            Method::GET,
            "/nowhere".into(),
            Anyone,
            vec![],
            Body::None,
            404,
            "no route",
        ),
    ];
    assert!(table.len() >= 30);

    let mut seen = BTreeSet::new();
    for (what, method, path, who, headers, body, status, needle) in table {
        assert!(seen.insert(what), "duplicate case {what}");
        let token = match who {
            Anyone => None,
            Admin => Some(admin.as_str()),
            Alice => Some(alice.as_str()),
        };
        let answer = api.send(method.clone(), &path, token, &headers, body).await;
        let label = format!("{what} ({method} {path})");
        assert!(
            !answer.status.is_server_error(),
            "{label}: {} {}",
            answer.status,
            answer.text
        );
        let answer = answer.expect(status, &label);
        let problem = answer.problem(&label);
        if !needle.is_empty() {
            let text = problem.to_string();
            assert!(
                text.contains(needle),
                "{label}: expected {needle:?} in {problem}"
            );
        }
    }
    // Nothing above changed the product or created an order.
    assert_eq!(api.stock_of(&pid).await, 99);
    let orders = api.get("/orders", Some(&alice)).await.json();
    assert_eq!(orders["total"], 1, "{orders}");
}

#[tokio::test]
async fn a_frozen_service_gives_503_after_its_deadline_and_a_stopped_one_at_once() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let api = Api::new(&stack);
    let ready = api.get("/readyz", None).await.expect(200, "ready");
    assert_eq!(ready.json()["status"], "ready");

    // Frozen (SIGSTOP): the call waits for its deadline, then a clear 503.
    stack.process("inventory").freeze();
    let answer = api
        .get("/products", None)
        .await
        .expect(503, "frozen inventory");
    let problem = answer.problem("frozen inventory");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("inventory service did not answer in time"),
        "{problem}"
    );
    let ready = api
        .get("/readyz/downstreams", None)
        .await
        .expect(503, "downstreams while frozen");
    let problem = ready.problem("downstreams while frozen");
    assert_eq!(problem["errors"][0]["field"], "inventory", "{problem}");
    stack.process("inventory").thaw();
    eventually(
        Duration::from_secs(30),
        "inventory answering again",
        || async { (api.get("/products", None).await.status == StatusCode::OK).then_some(()) },
    )
    .await;

    // Stopped: refused connections answer 503 at once.
    stack.kill("inventory");
    let answer = api
        .get("/products", None)
        .await
        .expect(503, "stopped inventory");
    let problem = answer.problem("stopped inventory");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("inventory service is unavailable"),
        "{problem}"
    );
    // The other services still answer, and the gateway stays ready: its
    // readiness is its own, so an outage behind it does not take it (and
    // every route with it) out of its Service.
    api.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let ready = api
        .get("/readyz", None)
        .await
        .expect(200, "readyz, inventory down");
    let states = ready.json();
    assert_eq!(states["status"], "ready", "{states}");
    assert!(
        states["services"]["inventory"]
            .as_str()
            .unwrap()
            .starts_with("not ready"),
        "{states}"
    );

    // A service that keeps failing trips its breaker: 503 without calling,
    // with a Retry-After.
    let tripped = eventually(
        Duration::from_secs(30),
        "the circuit breaker to open",
        || async {
            let answer = api.get("/products", None).await;
            assert_eq!(
                answer.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                answer.text
            );
            answer.header(RETRY_AFTER).is_some().then_some(answer)
        },
    )
    .await;
    let problem = tripped.problem("breaker open");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("keeps failing"),
        "{problem}"
    );
    let metrics = e2e::flow::http_get(stack.metrics_addr("gateway"), "/metrics")
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"ecommerce_gateway_circuit_breaker_rejections_total{service="inventory"}"#),
        "{metrics}"
    );

    // Back up: the breaker lets a trial through after its cool-down and closes.
    stack.restart("inventory", Duration::from_secs(60)).await;
    eventually(
        Duration::from_secs(30),
        "inventory reachable after restart",
        || async { (api.get("/products", None).await.status == StatusCode::OK).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn rate_limits_on_login_and_order_creation_answer_429_with_retry_after() {
    let stack = Stack::start(
        StackOptions::only(&["user", "gateway"])
            .with_service_env("gateway", "RATE_LIMIT_LOGIN_PER_MINUTE", "3")
            .with_service_env("gateway", "RATE_LIMIT_ORDERS_PER_MINUTE", "2"),
    )
    .await;
    let api = Api::new(&stack);
    let attempt = json!({"username": ADMIN_USERNAME, "password": "wrong password"});
    for i in 0..3 {
        api.post("/users/login", None, attempt.clone())
            .await
            .expect(401, &format!("login attempt {i}"));
    }
    let limited = api
        .post("/users/login", None, attempt.clone())
        .await
        .expect(429, "4th login");
    limited.problem("4th login");
    let retry_after: u64 = limited
        .header(RETRY_AFTER)
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    // Even the right password waits: the limit is per client, not per outcome.
    api.post(
        "/users/login",
        None,
        json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}),
    )
    .await
    .expect(429, "5th login");

    // Order creation has its own budget, spent only by authenticated,
    // well-formed requests: junk is refused without eating it.
    let token = jwt(
        STACK_JWT_SECRET,
        &Uuid::new_v4().to_string(),
        "customer",
        ISSUER,
        600,
    );
    let body = json!({"items": [{"product_id": Uuid::new_v4(), "quantity": 1}]});
    for i in 0..3 {
        api.post("/orders", None, body.clone())
            .await
            .expect(401, &format!("order {i} without a token"));
        api.post("/orders", Some(&token), json!({"items": []}))
            .await
            .expect(400, &format!("order {i} without items"));
    }
    for i in 0..2 {
        let answer = api.post("/orders", Some(&token), body.clone()).await;
        assert_ne!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "order {i}: {}",
            answer.text
        );
    }
    let limited = api
        .post("/orders", Some(&token), body)
        .await
        .expect(429, "3rd order");
    limited.problem("3rd order");
    assert!(limited.header(RETRY_AFTER).is_some());
    // Other routes are not limited.
    api.get("/healthz", None).await.expect(200, "healthz");
}

/// Every route the gateway serves, as OpenAPI writes them.
const ROUTES: [(&str, &str); 18] = [
    ("post", "/products"),
    ("get", "/products"),
    ("get", "/products/{id}"),
    ("patch", "/products/{id}"),
    ("delete", "/products/{id}"),
    ("post", "/orders"),
    ("get", "/orders"),
    ("get", "/orders/{id}"),
    ("patch", "/orders/{id}"),
    ("post", "/orders/{id}/cancel"),
    ("post", "/users/register"),
    ("post", "/users/login"),
    ("get", "/users/me"),
    ("get", "/users/{id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/readyz/downstreams"),
    ("get", "/openapi.json"),
];

/// The storefront's routes (`services/gateway/src/http/storefront.rs`): the
/// shop's page and its assets, served beside the API but not API operations,
/// so deliberately not in the document.
const STOREFRONT_ROUTES: [(&str, &str); 2] = [("get", "/"), ("get", "/assets/{version}/{name}")];

/// Follows `#/components/...` references and checks each resolves.
fn check_refs(doc: &Value, node: &Value, broken: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer = reference.strip_prefix('#').unwrap_or("not-local");
                if doc.pointer(pointer).is_none() {
                    broken.push(reference.clone());
                }
            }
            map.values().for_each(|v| check_refs(doc, v, broken));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v, broken)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_is_valid_openapi_3_and_lists_every_route() {
    let mut stack = Stack::start(StackOptions::only(&["gateway"])).await;
    let api = Api::new(&stack);
    let answer = api
        .get("/openapi.json", None)
        .await
        .expect(200, "openapi.json");
    assert!(
        answer
            .header(CONTENT_TYPE)
            .unwrap()
            .starts_with("application/json")
    );
    let doc = answer.json();

    // The required structure of an OpenAPI 3 document.
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        doc["info"]["version"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let paths = doc["paths"].as_object().expect("paths");
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut documented = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        for (method, operation) in item.as_object().unwrap() {
            if !methods.contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.clone(), path.clone()));
            let responses = operation["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path} has responses");
            for (code, response) in responses {
                assert!(
                    code == "default" || code.parse::<u16>().is_ok(),
                    "{method} {path} {code}"
                );
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {code} description"
                );
            }
            if let Some(id) = operation["operationId"].as_str() {
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "duplicate operationId {id}"
                );
            }
            // Path templates and path parameters agree.
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: {name}"
                    );
                    assert_eq!(parameter["required"], true, "{method} {path}: {name}");
                }
            }
        }
    }
    let mut broken = Vec::new();
    check_refs(&doc, &doc, &mut broken);
    assert!(broken.is_empty(), "unresolved $refs: {broken:?}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{}",
        doc["components"]
    );
    for schema in [
        "Product",
        "CreateProduct",
        "Order",
        "CreateOrder",
        "Problem",
        "LoginResponse",
        "User",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
    // Unknown fields are refused, and the document says so.
    assert_eq!(
        doc["components"]["schemas"]["CreateProduct"]["additionalProperties"],
        false
    );

    // Every route the gateway serves is documented, and nothing else.
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected);
    // And every documented route is served (not the "no route" 404).
    let id = Uuid::new_v4();
    for (method, path) in &documented {
        let concrete = path.replace("{id}", &id.to_string());
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let answer = api
            .send(method.clone(), &concrete, None, &[], Body::None)
            .await;
        assert!(
            !answer.text.contains("no route"),
            "{method} {concrete} is documented but not served: {}",
            answer.text
        );
    }
    // The storefront is served beside the API, outside its document.
    for (method, path) in STOREFRONT_ROUTES {
        assert!(!paths.contains_key(path), "{path} is not an API route");
        let concrete = path
            .replace("{version}", "any-release")
            .replace("{name}", "app.js");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        api.send(method, &concrete, None, &[], Body::None)
            .await
            .expect(200, "storefront route");
    }

    // A caller's trace continues in the gateway (and its logs).
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = api
        .send(
            Method::GET,
            "/healthz",
            None,
            &[("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))],
            Body::None,
        )
        .await
        .expect(200, "traced healthz");
    assert_eq!(traced.header("x-trace-id"), Some(trace_id));
    let log = stack.processes["gateway"].log();
    assert!(
        log.lines()
            .any(|l| l.contains(trace_id) && l.contains("/healthz")),
        "the request is logged with its trace id:\n{log}"
    );

    // Operations endpoints of a gateway whose services are all missing.
    api.get("/healthz", None).await.expect(200, "healthz");
    api.get("/readyz", None).await.expect(200, "readyz");
    let problem = api
        .get("/readyz/downstreams", None)
        .await
        .expect(503, "downstreams")
        .problem("downstreams");
    let not_ready: BTreeSet<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(not_ready, BTreeSet::from(["inventory", "order", "user"]));
    let metrics = e2e::flow::http_get(stack.metrics_addr("gateway"), "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ecommerce_gateway_http_requests_total{method="GET",route="/openapi.json",status="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("ecommerce_gateway_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    // SIGTERM: in-flight requests drain and the process exits 0.
    let exit = stack
        .process("gateway")
        .terminate(Duration::from_secs(15))
        .await;
    assert!(exit.success(), "gateway exit on SIGTERM: {exit}");
}

#[tokio::test]
async fn with_the_user_service_stopped_the_catalogue_still_answers() {
    let mut stack = Stack::start(StackOptions::only(&["user", "inventory", "gateway"])).await;
    let api = Api::new(&stack);
    stack.kill("user");
    // The gateway stays ready (a probe on /readyz keeps it in its Service)...
    let ready = api
        .get("/readyz", None)
        .await
        .expect(200, "readyz, user down");
    let states = ready.json();
    assert!(
        states["services"]["user"]
            .as_str()
            .unwrap()
            .starts_with("not ready"),
        "{states}"
    );
    // ...so the catalogue answers, and only the routes that need the User
    // service say 503.
    api.get("/products", None)
        .await
        .expect(200, "catalogue, user down");
    api.post(
        "/users/login",
        None,
        json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}),
    )
    .await
    .expect(503, "login, user down");
    api.get("/readyz/downstreams", None)
        .await
        .expect(503, "downstreams, user down");
}

/// Polls `path` on every gateway until each answers a body `done` accepts;
/// fails when that takes longer than `within`.
async fn visible_on_every_gateway(
    gateways: &[&Api],
    path: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) {
    let started = std::time::Instant::now();
    loop {
        let mut bodies = Vec::new();
        for gateway in gateways {
            bodies.push(gateway.get(path, None).await.expect(200, what).json());
        }
        if bodies.iter().all(&done) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{what}: not on every gateway within {within:?}: {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_product_change_reaches_the_cache_of_every_gateway_within_a_second() {
    // A TTL far past the bound: only Inventory's announcements can make the
    // changes visible in time.
    let stack = Stack::start(StackOptions::default().with_service_env(
        "gateway",
        "PRODUCT_CACHE_TTL_MS",
        "600000",
    ))
    .await;
    let first = Api::new(&stack);
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let mut env = stack.env_of("gateway").to_vec();
    env.retain(|(k, _)| k != "API_GATEWAY_ADDR");
    env.push(("API_GATEWAY_ADDR".into(), addr.clone()));
    let mut replica = testkit::ServiceProcess::spawn("gateway", env);
    replica
        .wait_http_ok(&addr, "/healthz", Duration::from_secs(30))
        .await;
    let second = first.at(&format!("http://{addr}"));
    let gateways = [&first, &second];

    let admin = first.admin().await;
    let product = first
        .create_product(
            &admin,
            json!({"name": "Desk lamp", "category": "home", "stock": 10, "price": 25.00}),
        )
        .await;
    let id = product["id"].as_str().unwrap().to_owned();
    let path = format!("/products/{id}");
    // Both gateways read it, and hold it from now on.
    visible_on_every_gateway(&gateways, &path, Duration::from_secs(1), "cached", |p| {
        p["stock"] == 10
    })
    .await;

    // An admin's write through one gateway.
    first
        .patch(
            &path,
            Some(&admin),
            json!({"stock": 25, "name": "Desk lamp XL"}),
        )
        .await
        .expect(200, "patch");
    visible_on_every_gateway(&gateways, &path, Duration::from_secs(1), "patched", |p| {
        p["stock"] == 25 && p["name"] == "Desk lamp XL"
    })
    .await;

    // Stock taken by an order: its confirmation comes after Inventory's
    // commit, so from then on both must show it within the bound.
    let (customer, _) = first.customer("cache").await;
    let order = first.order(&customer, &id, 3).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    first
        .wait_order_status(&customer, &order_id, "CONFIRMED")
        .await;
    visible_on_every_gateway(&gateways, &path, Duration::from_secs(1), "ordered", |p| {
        p["stock"] == 22
    })
    .await;

    // Stock returned by a cancel: Inventory is asked directly when it is
    // back (the gateways would only show what they hold).
    first
        .post(
            &format!("/orders/{order_id}/cancel"),
            Some(&customer),
            json!({}),
        )
        .await
        .expect(200, "cancel");
    let inventory = proto::inventory::v1::inventory_service_client::InventoryServiceClient::new(
        stack.channel("inventory").await,
    );
    eventually(Duration::from_secs(30), "the stock to go back", || {
        let mut inventory = inventory.clone();
        let id = id.clone();
        async move {
            let product = inventory
                .get_product(proto::inventory::v1::GetProductRequest { id })
                .await
                .ok()?
                .into_inner()
                .product?;
            (product.stock == 25).then_some(())
        }
    })
    .await;
    visible_on_every_gateway(&gateways, &path, Duration::from_secs(1), "cancelled", |p| {
        p["stock"] == 25
    })
    .await;

    // A deleted product is gone from both.
    first
        .send(Method::DELETE, &path, Some(&admin), &[], Body::None)
        .await
        .expect(204, "delete");
    let started = std::time::Instant::now();
    for gateway in gateways {
        loop {
            let answer = gateway.get(&path, None).await;
            if answer.status == StatusCode::NOT_FOUND {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "still served after delete"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
