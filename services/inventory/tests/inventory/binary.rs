//! The real `inventory` binary: its `migrate` command, health, the gRPC
//! contract with its status codes, and a clean exit on SIGTERM.

use std::time::Duration;

use proto::inventory::v1 as pb;
use proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use testkit::{ServiceProcess, TestDb, free_port};
use tonic::Code;

fn env(db: &TestDb, addr: &str) -> Vec<(String, String)> {
    let mut env = db.server.service_env();
    env.push(("INVENTORY_DB_NAME".into(), db.name.clone()));
    env.push(("INVENTORY_ADDR".into(), addr.to_owned()));
    env.push(("APP_ENV".into(), "development".into()));
    env
}

fn field_of(status: &tonic::Status) -> String {
    platform::grpc::error_detail(status)
        .and_then(|d| d.field_violations.into_iter().next())
        .map(|v| v.field)
        .unwrap_or_default()
}

#[tokio::test]
async fn serves_the_contract_over_grpc_and_stops_cleanly() {
    let db = TestDb::create().await;
    let addr = format!("127.0.0.1:{}", free_port());

    let mut migrate = ServiceProcess::spawn_with_args("inventory", &["migrate"], env(&db, &addr));
    let exit = migrate.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "migrate: {exit}\n{}", migrate.log());
    migrate.restart();
    let exit = migrate.wait_exit(Duration::from_secs(60)).await;
    assert!(
        exit.success(),
        "migrate again is a no-op: {exit}\n{}",
        migrate.log()
    );

    let mut process = ServiceProcess::spawn("inventory", env(&db, &addr));
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    let mut client = InventoryServiceClient::new(channel);

    // The seed's example: a Laptop, stock 100, price 999.99, exactly.
    let laptop = client
        .create_product(pb::CreateProductRequest {
            name: "Laptop".into(),
            category: "Electronics".into(),
            stock: 100,
            price: "999.99".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(laptop.price, "999.99");
    let read = client
        .get_product(pb::GetProductRequest {
            id: laptop.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(
        (
            read.name.as_str(),
            read.category.as_str(),
            read.stock,
            read.price.as_str()
        ),
        ("Laptop", "Electronics", 100, "999.99")
    );
    assert!(read.created_at.is_some() && read.updated_at.is_some());

    // Status codes with messages that say what was wrong.
    let bad_price = client
        .create_product(pb::CreateProductRequest {
            name: "Laptop".into(),
            category: "Electronics".into(),
            stock: 1,
            price: "999.999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_price.code(), Code::InvalidArgument);
    assert_eq!(field_of(&bad_price), "price");
    assert!(
        bad_price.message().contains("decimal places"),
        "{bad_price:?}"
    );

    let missing = client
        .get_product(pb::GetProductRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("not found"));

    let bad_id = client
        .delete_product(pb::DeleteProductRequest { id: "42".into() })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert_eq!(field_of(&bad_id), "id");

    let too_big = client
        .list_products(pb::ListProductsRequest {
            page: 1,
            page_size: 1000,
            category: None,
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert_eq!(field_of(&too_big), "page_size");

    // A PATCH of stock sets it.
    let patched = client
        .update_product(pb::UpdateProductRequest {
            id: laptop.id.clone(),
            stock: Some(7),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!((patched.stock, patched.price.as_str()), (7, "999.99"));

    // ApplyOrder: a normal reply for every outcome, errors only for bad input.
    let order_id = uuid::Uuid::new_v4().to_string();
    let apply = |quantity| pb::ApplyOrderRequest {
        order_id: order_id.clone(),
        items: vec![pb::OrderLine {
            product_id: laptop.id.clone(),
            quantity,
        }],
    };
    let applied = client.apply_order(apply(2)).await.unwrap().into_inner();
    assert_eq!(applied.outcome(), pb::ApplyOutcome::Applied);
    assert!(!applied.replayed);
    let replayed = client.apply_order(apply(2)).await.unwrap().into_inner();
    assert_eq!(replayed.outcome(), pb::ApplyOutcome::Applied);
    assert!(replayed.replayed);

    let short = client
        .apply_order(pb::ApplyOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            items: vec![pb::OrderLine {
                product_id: laptop.id.clone(),
                quantity: 6,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short.outcome(), pb::ApplyOutcome::InsufficientStock);
    assert!(short.reason.contains(&laptop.id), "{}", short.reason);

    let empty = client
        .apply_order(pb::ApplyOrderRequest {
            order_id: uuid::Uuid::new_v4().to_string(),
            items: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(field_of(&empty), "items");

    let released = client
        .release_order(pb::ReleaseOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.outcome(), pb::ReleaseOutcome::Released);
    let batch = client
        .batch_get_products(pb::BatchGetProductsRequest {
            ids: vec![laptop.id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.products[0].stock, 7);

    let exit = process.terminate(Duration::from_secs(15)).await;
    assert!(
        exit.success(),
        "exits 0 on SIGTERM: {exit}\n{}",
        process.log()
    );
    assert!(!process.log().contains("panicked"), "{}", process.log());
}

#[tokio::test]
async fn a_malformed_setting_stops_start_up_naming_the_variable() {
    let db = TestDb::create().await;
    for (name, value) in [
        ("INVENTORY_ADDR", "no-port-here"),
        ("DB_PORT", "five"),
        ("APP_ENV", "staging"),
    ] {
        let mut vars = env(&db, &format!("127.0.0.1:{}", free_port()));
        vars.retain(|(k, _)| k != name);
        vars.push((name.into(), value.into()));
        let mut process = ServiceProcess::spawn("inventory", vars);
        let exit = process.wait_exit(Duration::from_secs(30)).await;
        assert!(!exit.success(), "{name}={value} must stop start-up");
        assert!(
            process.log().contains(name),
            "the message names {name}:\n{}",
            process.log()
        );
    }
}

#[tokio::test]
async fn a_database_outage_is_unavailable_and_passes() {
    let pg = testkit::PrivatePostgres::start();
    let db = TestDb::create_on(pg.server()).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut process = ServiceProcess::spawn("inventory", env(&db, &addr));
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let mut client = InventoryServiceClient::new(channel);
    let product = client
        .create_product(pb::CreateProductRequest {
            name: "Lamp".into(),
            category: "Home".into(),
            stock: 3,
            price: "19.90".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let get = || pb::GetProductRequest {
        id: product.id.clone(),
    };

    pg.stop(true);
    let down = client.get_product(get()).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().contains("database"), "{down:?}");

    pg.start_again();
    let read = testkit::eventually(Duration::from_secs(60), "a read after the restart", || {
        let mut client = client.clone();
        let request = get();
        async move { client.get_product(request).await.ok() }
    })
    .await;
    assert_eq!(read.into_inner().product.unwrap().price, "19.90");
    let exit = process.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit}\n{}", process.log());
}

#[tokio::test]
async fn a_crash_right_after_the_apply_commit_is_replayed_not_reapplied() {
    let db = TestDb::create().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut vars = env(&db, &addr);
    vars.push(("FAULT_POINTS".into(), "inventory.after_apply_commit".into()));
    let mut process = ServiceProcess::spawn("inventory", vars);
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    let connect = || async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .unwrap();
        InventoryServiceClient::new(channel)
    };
    let mut client = connect().await;
    let product = client
        .create_product(pb::CreateProductRequest {
            name: "Chair".into(),
            category: "Home".into(),
            stock: 10,
            price: "49.00".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let apply = pb::ApplyOrderRequest {
        order_id: uuid::Uuid::new_v4().to_string(),
        items: vec![pb::OrderLine {
            product_id: product.id.clone(),
            quantity: 4,
        }],
    };
    let crashed = client.apply_order(apply.clone()).await;
    assert!(crashed.is_err(), "the process aborts before answering");
    let exit = process.wait_exit(Duration::from_secs(15)).await;
    assert!(!exit.success(), "aborted at the fault point: {exit}");
    assert!(process.log().contains("inventory.after_apply_commit"));

    process.restart_with(&[("FAULT_POINTS", None)]);
    process
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    let mut client = connect().await;
    let retried = client.apply_order(apply).await.unwrap().into_inner();
    assert_eq!(retried.outcome(), pb::ApplyOutcome::Applied);
    assert!(retried.replayed, "the commit survived the crash");
    let stock = client
        .get_product(pb::GetProductRequest { id: product.id })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
        .stock;
    assert_eq!(stock, 6, "taken once");
}
