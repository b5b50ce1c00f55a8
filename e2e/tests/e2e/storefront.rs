//! The storefront (the shop's web page, `services/gateway/storefront/`):
//! its REST calls agree with the OpenAPI document, and a real browser
//! (Debian's Chromium driven by `e2e/browser/storefront.mjs`) shops, checks
//! out and administers it against the real stack. `make browser-deps`
//! installs what the browser run needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::api::Api;
use e2e::{Stack, StackOptions};
use serde_json::{Value, json};

use e2e::JWT_ISSUER as ISSUER;
use e2e::{ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET as STACK_JWT_SECRET};
/// The browser run's limit; it takes about a minute on two shared cores.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn storefront_dir() -> PathBuf {
    repo_root().join("services/gateway/storefront")
}

fn env_value<'a>(stack: &'a Stack, service: &str, key: &str) -> Option<&'a str> {
    stack
        .env_of(service)
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The `CALLS` table of `api.js`: strict JSON between its markers.
fn declared_calls() -> serde_json::Map<String, Value> {
    let source = std::fs::read_to_string(storefront_dir().join("api.js")).unwrap();
    let start = source
        .find("export const CALLS = ")
        .expect("api.js declares CALLS")
        + "export const CALLS = ".len();
    let end = source
        .find(";\n// end of CALLS")
        .expect("CALLS ends at its marker");
    serde_json::from_str::<Value>(&source[start..end])
        .unwrap_or_else(|e| panic!("CALLS in api.js is not strict JSON: {e}"))
        .as_object()
        .expect("CALLS is an object")
        .clone()
}

/// The names of the parameters `operation` documents `in` a place.
fn documented_parameters(operation: &Value, place: &str) -> BTreeSet<String> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["in"] == place)
        .filter_map(|p| p["name"].as_str().map(str::to_ascii_lowercase))
        .collect()
}

/// Whatever in `calls` the document does not describe: the method on the
/// path, and each query parameter and header the page may send.
fn undocumented_calls(calls: &serde_json::Map<String, Value>, document: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, call) in calls {
        let method = call["method"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let path = call["path"].as_str().unwrap_or_default();
        let Some(operation) = document["paths"][path].get(&method) else {
            missing.push(format!("{name}: {} {path}", method.to_uppercase()));
            continue;
        };
        for (list, place) in [("query", "query"), ("headers", "header")] {
            let documented = documented_parameters(operation, place);
            for sent in call[list].as_array().into_iter().flatten() {
                let sent = sent.as_str().unwrap_or_default();
                if !documented.contains(&sent.to_ascii_lowercase()) {
                    missing.push(format!("{name}: {place} parameter {sent} of {path}"));
                }
            }
        }
    }
    missing
}

/// Every text file of the storefront, by its path under the folder.
fn storefront_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut folders = vec![storefront_dir()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                let name = path.strip_prefix(storefront_dir()).unwrap();
                files.push((name.display().to_string(), text));
            }
        }
    }
    files
}

#[tokio::test]
async fn every_call_of_the_page_is_in_the_openapi_document_and_only_api_js_calls() {
    let stack = Stack::start(StackOptions::only(&["gateway"])).await;
    let api = Api::new(&stack);
    let document = api
        .get("/openapi.json", None)
        .await
        .expect(200, "the OpenAPI document")
        .json();

    let calls = declared_calls();
    assert!(calls.len() >= 12, "the page's calls: {calls:?}");
    let missing = undocumented_calls(&calls, &document);
    assert!(
        missing.is_empty(),
        "api.js declares calls /openapi.json does not describe: {missing:?}"
    );
    // The check itself can fail: a call the document lacks is reported.
    let mut invented = calls.clone();
    invented.insert(
        "invented".into(),
        json!({"method": "PUT", "path": "/products/{id}"}),
    );
    invented.insert(
        "badQuery".into(),
        json!({"method": "GET", "path": "/products", "query": ["sort"]}),
    );
    assert_eq!(undocumented_calls(&invented, &document).len(), 2);

    // No other file reaches the network: api.js is the one place to look.
    let network = [
        "fetch(",
        "XMLHttpRequest",
        "EventSource",
        "WebSocket",
        "sendBeacon",
    ];
    for (name, text) in storefront_sources() {
        for word in network {
            let uses = text.matches(word).count();
            let allowed = usize::from(name == "api.js" && word == "fetch(");
            assert_eq!(uses, allowed, "{name} uses {word} {uses} times");
        }
    }

    // The page is served by the real binary, with its policy.
    let page = api.get("/", None).await.expect(200, "the storefront");
    assert!(
        page.header("content-security-policy")
            .is_some_and(|policy| policy.starts_with("default-src 'self'"))
    );
    assert!(page.text.contains("/assets/"));
}

/// A correctly signed token of `user_id` that expired an hour ago.
fn expired_token(user_id: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user_id, "role": "customer", "iss": ISSUER, "iat": now - 7200, "exp": now - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(STACK_JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_customer_and_an_admin_use_the_storefront_in_chromium() {
    let browser_dir = repo_root().join("e2e/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists()
            && browser_dir.join("node_modules/playwright-core").exists(),
        "the browser test needs Debian's chromium and e2e/browser/node_modules: run `make browser-deps`"
    );
    let stack = Stack::start(StackOptions::default()).await;
    assert_eq!(
        env_value(&stack, "user", "ADMIN_USERNAME"),
        Some(ADMIN_USERNAME)
    );
    assert_eq!(
        env_value(&stack, "user", "ADMIN_PASSWORD"),
        Some(ADMIN_PASSWORD)
    );
    assert_eq!(
        env_value(&stack, "gateway", "JWT_SECRET"),
        Some(STACK_JWT_SECRET)
    );

    let screenshots = repo_root().join("target/screenshots");
    let results = std::env::temp_dir().join(format!("storefront-{}.json", uuid::Uuid::new_v4()));
    let run = tokio::process::Command::new("node")
        .arg(browser_dir.join("storefront.mjs"))
        .current_dir(&browser_dir)
        .env("GATEWAY_URL", stack.gateway_url())
        .env("ADMIN_USERNAME", ADMIN_USERNAME)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env(
            "EXPIRED_TOKEN",
            expired_token(&uuid::Uuid::new_v4().to_string()),
        )
        .env("SCREENSHOT_DIR", &screenshots)
        .env("RESULTS_FILE", &results)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("the browser run took over {BROWSER_TIMEOUT:?}"))
        .expect("node runs (Node.js 20 or newer)");
    let log = format!(
        "--- stdout\n{}\n--- stderr\n{}\n--- gateway log (tail)\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        tail(&stack.processes["gateway"].log(), 40),
    );
    assert!(output.status.success(), "the browser run failed:\n{log}");
    println!("{}", String::from_utf8_lossy(&output.stdout));

    for name in [
        "catalogue",
        "product",
        "cart",
        "order-confirmed",
        "admin",
        "phone-cart",
    ] {
        let shot = screenshots.join(format!("{name}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "screenshot {} ({size} bytes)", shot.display());
    }

    // What the page did, seen through the API: the double click and the
    // retry made one order each time, no more.
    let written = std::fs::read_to_string(&results).expect("the browser run writes its results");
    std::fs::remove_file(&results).ok();
    let results: Value = serde_json::from_str(&written).unwrap();
    let orders = Api::new(&stack)
        .get("/orders", results["customer_token"].as_str())
        .await
        .expect(200, "the customer's orders")
        .json();
    assert_eq!(
        orders["total"], results["customer_orders"],
        "the customer's orders: {orders}"
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
