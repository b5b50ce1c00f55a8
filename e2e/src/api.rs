//! The one HTTP client of the end-to-end tests: the gateway's REST API as a
//! browser or a shop's client would call it.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::eventually;
use crate::stack::{ADMIN_PASSWORD, ADMIN_USERNAME, Stack};

/// What a request sends as its body.
pub enum Body {
    None,
    Json(Value),
    /// Raw text with an optional content type.
    Raw(Option<&'static str>, String),
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.text))
    }

    pub fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{what}: unexpected status, body: {}",
            self.text
        );
        self
    }

    /// Checks the RFC 9457 body and returns it.
    pub fn problem(&self, what: &str) -> Value {
        assert_eq!(
            self.header(CONTENT_TYPE),
            Some("application/problem+json"),
            "{what}: content type of {:?} {}",
            self.status,
            self.text
        );
        let body = self.json();
        assert_eq!(body["status"], self.status.as_u16(), "{what}: {body}");
        for member in ["type", "title", "detail"] {
            assert!(
                body[member].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: problem needs a {member}: {body}"
            );
        }
        assert!(body["errors"].is_array(), "{what}: errors array: {body}");
        body
    }
}

pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(stack: &Stack) -> Api {
        Api {
            base: stack.gateway_url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// The same client against another gateway (a replica) at `base`.
    pub fn at(&self, base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: self.http.clone(),
        }
    }

    /// One request with an optional JSON body; the status and the body as
    /// JSON (`Null` when it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self.call_with_headers(method, path, token, &[], body).await;
        (status, value)
    }

    /// Like [`Self::call`] with extra request headers; the response's
    /// headers too.
    pub async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let body = body.map_or(Body::None, Body::Json);
        let answer = self.send(method, path, token, headers, body).await;
        let value = serde_json::from_str(&answer.text).unwrap_or(Value::Null);
        (answer.status, answer.headers, value)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(content_type, text) => {
                let request = match content_type {
                    Some(ct) => request.header(CONTENT_TYPE, ct),
                    None => request,
                };
                request.body(text)
            }
        };
        let response = request.send().await.expect("request sent");
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(Method::GET, path, token, &[], Body::None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.send(Method::POST, path, token, &[], Body::Json(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.send(Method::PATCH, path, token, &[], Body::Json(body))
            .await
    }

    pub async fn login(&self, username: &str, password: &str) -> (String, Uuid) {
        let answer = self
            .post(
                "/users/login",
                None,
                json!({"username": username, "password": password}),
            )
            .await
            .expect(200, "login");
        let body = answer.json();
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].as_u64().unwrap() > 0);
        let id = Uuid::parse_str(body["user"]["id"].as_str().unwrap()).unwrap();
        (body["token"].as_str().unwrap().to_owned(), id)
    }

    /// Registers a customer and logs in.
    pub async fn customer(&self, name: &str) -> (String, Uuid) {
        let username = format!("{name}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let password = "correct horse battery";
        let answer = self
            .post(
                "/users/register",
                None,
                json!({"username": username, "email": format!("{username}@example.com"), "password": password}),
            )
            .await
            .expect(201, "register");
        let user = answer.json();
        assert_eq!(user["role"], "customer");
        assert_eq!(user["username"], username.as_str());
        self.login(&username, password).await
    }

    pub async fn admin(&self) -> String {
        self.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.0
    }

    pub async fn create_product(&self, admin: &str, body: Value) -> Value {
        self.post("/products", Some(admin), body)
            .await
            .expect(201, "create product")
            .json()
    }

    pub async fn order(&self, token: &str, product: &str, quantity: u32) -> Value {
        self.post(
            "/orders",
            Some(token),
            json!({"items": [{"product_id": product, "quantity": quantity}]}),
        )
        .await
        .expect(201, "create order")
        .json()
    }

    /// Polls an order until it reaches `status`.
    pub async fn wait_order_status(&self, token: &str, id: &str, status: &str) -> Value {
        eventually(
            Duration::from_secs(60),
            &format!("order {id} to become {status}"),
            || async {
                let order = self.get(&format!("/orders/{id}"), Some(token)).await.json();
                (order["status"] == status).then_some(order)
            },
        )
        .await
    }

    pub async fn stock_of(&self, product: &str) -> i64 {
        self.get(&format!("/products/{product}"), None)
            .await
            .expect(200, "get product")
            .json()["stock"]
            .as_i64()
            .unwrap()
    }
}
