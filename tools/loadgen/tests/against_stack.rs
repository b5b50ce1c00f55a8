//! The `loadgen` binary for ~3 s against a real stack (all six services,
//! PostgreSQL, NATS): its JSON summary shows confirmed orders, no 5xx, and
//! the stock of its products conserved.

use std::process::Command;

use e2e::{ADMIN_PASSWORD, ADMIN_USERNAME, Stack, StackOptions};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_short_shop_mix_confirms_orders_without_server_errors() {
    // The mix registers customers while eight virtual users run. On a loaded
    // machine a bcrypt hash outlasts their spacing, and the user service's
    // designed shedding of concurrent hashes (503, tested in its own tests)
    // would count here as a server error: give it room.
    let stack = Stack::start(StackOptions {
        service_env: vec![("user", "USER_MAX_CONCURRENT_HASHES".into(), "16".into())],
        ..StackOptions::default()
    })
    .await;
    let out = tempfile::tempdir().unwrap();
    let json_path = out.path().join("summary.json");
    let base_url = stack.gateway_url();
    let json_arg = json_path.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--base-url", &base_url, "--scenario", "mix", "--rate", "40"])
            .args(["--vus", "8", "--duration", "3s", "--warmup", "500ms"])
            .args(["--users", "2", "--products", "4", "--stock", "100000"])
            .args(["--cancel-ratio", "0.3", "--drain-timeout", "30s"])
            .args([
                "--admin-username",
                ADMIN_USERNAME,
                "--admin-password",
                ADMIN_PASSWORD,
            ])
            .arg("--json")
            .arg(&json_arg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}\n{stderr}"
    );

    let summary: Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let operations = summary["operations"].as_object().unwrap();
    for op in ["browse", "get-product", "create-order", "get-order"] {
        assert!(
            operations[op]["count"].as_u64().unwrap() > 0,
            "no {op} measured: {summary:#}"
        );
    }
    for (name, op) in operations {
        for status in op["errors"].as_object().unwrap().keys() {
            assert!(
                !status.starts_with('5') && status.parse::<u16>().is_ok(),
                "{name}: server error or no answer ({status}): {summary:#}"
            );
        }
    }
    let orders = &summary["orders"];
    assert!(orders["confirmed"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(
        orders["confirmed_per_s"].as_f64().unwrap() > 0.0,
        "{summary:#}"
    );
    assert_eq!(orders["unfinished"], 0, "{summary:#}");
    assert_eq!(summary["stock"]["conserved"], true, "{summary:#}");
    assert!(stdout.contains("stock conserved: yes"), "{stdout}");
}
