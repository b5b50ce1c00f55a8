//! The real `user` binary: `migrate`, two replicas bootstrapping the admin
//! at once, the gRPC contract with its status codes, no hash in any answer or
//! log, and a clean exit on SIGTERM.

use std::time::Duration;

use proto::common::v1::{Caller, Role};
use proto::user::v1 as pb;
use proto::user::v1::user_service_client::UserServiceClient;
use testkit::{ServiceProcess, TestDb, free_port};
use tonic::Code;
use tonic::transport::Channel;

const ADMIN_PASSWORD: &str = "admin-password-123";

fn env(db: &TestDb, addr: &str) -> Vec<(String, String)> {
    let mut env = db.server.service_env();
    env.push(("USER_DB_NAME".into(), db.name.clone()));
    env.push(("USER_ADDR".into(), addr.to_owned()));
    env.push(("APP_ENV".into(), "development".into()));
    env
}

fn with_admin(mut env: Vec<(String, String)>, password: &str) -> Vec<(String, String)> {
    env.push(("ADMIN_USERNAME".into(), "admin".into()));
    env.push(("ADMIN_EMAIL".into(), "admin@example.com".into()));
    env.push(("ADMIN_PASSWORD".into(), password.into()));
    env
}

async fn client(addr: &str) -> UserServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    UserServiceClient::new(channel)
}

async fn login(
    client: &mut UserServiceClient<Channel>,
    username: &str,
    password: &str,
) -> Result<pb::User, tonic::Status> {
    client
        .authenticate(pb::AuthenticateRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner().user.unwrap())
}

#[tokio::test]
async fn serves_the_contract_over_grpc_and_stops_cleanly() {
    let db = TestDb::create().await;
    let addr_a = format!("127.0.0.1:{}", free_port());
    let addr_b = format!("127.0.0.1:{}", free_port());

    let mut migrate = ServiceProcess::spawn_with_args("user", &["migrate"], env(&db, &addr_a));
    let exit = migrate.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "migrate: {exit}\n{}", migrate.log());
    migrate.restart();
    let exit = migrate.wait_exit(Duration::from_secs(60)).await;
    assert!(
        exit.success(),
        "migrate again is a no-op: {exit}\n{}",
        migrate.log()
    );

    // Two replicas start at once with the same admin settings.
    let mut a = ServiceProcess::spawn("user", with_admin(env(&db, &addr_a), ADMIN_PASSWORD));
    let mut b = ServiceProcess::spawn("user", with_admin(env(&db, &addr_b), ADMIN_PASSWORD));
    a.wait_grpc_healthy(&addr_a, Duration::from_secs(60)).await;
    b.wait_grpc_healthy(&addr_b, Duration::from_secs(60)).await;
    let mut client_a = client(&addr_a).await;
    let mut client_b = client(&addr_b).await;

    let admin = login(&mut client_a, "admin", ADMIN_PASSWORD).await.unwrap();
    assert_eq!(admin.role(), Role::Admin);
    let same = login(&mut client_b, "ADMIN@example.com", ADMIN_PASSWORD)
        .await
        .unwrap();
    assert_eq!(same.id, admin.id, "one admin for both replicas");

    // Registration makes customers; duplicates are ALREADY_EXISTS.
    let register = |username: &str, email: &str| pb::RegisterRequest {
        username: username.into(),
        email: email.into(),
        password: "customer-password".into(),
    };
    let alice = client_a
        .register(register("alice", "alice@example.com"))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(alice.role(), Role::Customer);
    let duplicate = client_b
        .register(register("ALICE", "new@example.com"))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let detail = platform::grpc::error_detail(&duplicate).unwrap();
    assert_eq!(detail.field_violations[0].field, "username");
    let bad = client_a
        .register(register("al", "alice2@example.com"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("username"), "{bad:?}");

    // One answer for an unknown user and a wrong password.
    let unknown = login(&mut client_a, "nobody", "customer-password")
        .await
        .unwrap_err();
    let wrong = login(&mut client_a, "alice", "wrong-password")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.message(), wrong.message());
    assert_eq!(unknown.details(), wrong.details());

    // Profiles: own yes, another's NOT_FOUND, an admin any.
    let get = |caller_id: &str, role: Role, user_id: &str| pb::GetUserRequest {
        caller: Some(Caller {
            user_id: caller_id.into(),
            role: role as i32,
        }),
        user_id: user_id.into(),
    };
    let own = client_a
        .get_user(get(&alice.id, Role::Customer, &alice.id))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(own, alice);
    let other = client_a
        .get_user(get(&alice.id, Role::Customer, &admin.id))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    let by_admin = client_a
        .get_user(get(&admin.id, Role::Admin, &alice.id))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(by_admin.username, "alice");
    let no_caller = client_a
        .get_user(pb::GetUserRequest {
            caller: None,
            user_id: alice.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_caller.code(), Code::InvalidArgument);
    let bad_id = client_a
        .get_user(get(&alice.id, Role::Customer, "me"))
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);

    for process in [&mut a, &mut b] {
        let exit = process.terminate(Duration::from_secs(15)).await;
        assert!(
            exit.success(),
            "exits 0 on SIGTERM: {exit}\n{}",
            process.log()
        );
    }

    // A restart with another ADMIN_PASSWORD does not overwrite the admin.
    let mut c = ServiceProcess::spawn(
        "user",
        with_admin(env(&db, &addr_a), "another-password-456"),
    );
    c.wait_grpc_healthy(&addr_a, Duration::from_secs(60)).await;
    let mut client_c = client(&addr_a).await;
    login(&mut client_c, "admin", ADMIN_PASSWORD).await.unwrap();
    assert_eq!(
        login(&mut client_c, "admin", "another-password-456")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let exit = c.terminate(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit}");

    for process in [&a, &b, &c] {
        let log = process.log();
        assert!(!log.contains("$2b$"), "no hash in the logs:\n{log}");
        assert!(!log.contains(ADMIN_PASSWORD), "no password in the logs");
        assert!(
            !log.contains("customer-password"),
            "no password in the logs"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[tokio::test]
async fn bad_settings_stop_start_up_naming_the_variable() {
    let db = TestDb::create().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let admin = with_admin(Vec::new(), ADMIN_PASSWORD);
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        // All three ADMIN_* or none.
        ("ADMIN_EMAIL", vec![admin[0].clone(), admin[2].clone()]),
        ("ADMIN_PASSWORD", vec![admin[0].clone(), admin[1].clone()]),
        ("ADMIN_USERNAME", vec![admin[1].clone(), admin[2].clone()]),
        (
            "ADMIN_PASSWORD",
            with_admin(Vec::new(), "short"), // too short to be a password
        ),
        ("BCRYPT_COST", vec![("BCRYPT_COST".into(), "10".into())]),
        ("BCRYPT_COST", vec![("BCRYPT_COST".into(), "twelve".into())]),
        ("USER_ADDR", vec![("USER_ADDR".into(), "nowhere".into())]),
    ];
    for (name, extra) in cases {
        let mut vars = env(&db, &addr);
        vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        vars.extend(extra.clone());
        let mut process = ServiceProcess::spawn("user", vars);
        let exit = process.wait_exit(Duration::from_secs(30)).await;
        assert!(!exit.success(), "{extra:?} must stop start-up");
        let log = process.log();
        assert!(log.contains(name), "the message names {name}:\n{log}");
        assert!(!log.contains(ADMIN_PASSWORD), "{log}");
    }
}

#[tokio::test]
async fn a_customer_holding_the_admin_email_leaves_no_admin_but_no_crash_loop() {
    let db = TestDb::create().await;
    let addr = format!("127.0.0.1:{}", free_port());
    // Before any ADMIN_* setting, a customer registers the email.
    let mut first = ServiceProcess::spawn("user", env(&db, &addr));
    first
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    client(&addr)
        .await
        .register(pb::RegisterRequest {
            username: "early".into(),
            email: "admin@example.com".into(),
            password: "early-bird-password".into(),
        })
        .await
        .unwrap();
    first.terminate(Duration::from_secs(15)).await;

    // Then the admin is configured with that email: the service serves on
    // (it used to exit and crash-loop) and says what to change.
    let mut second = ServiceProcess::spawn("user", with_admin(env(&db, &addr), ADMIN_PASSWORD));
    second
        .wait_grpc_healthy(&addr, Duration::from_secs(60))
        .await;
    let log = second.log();
    assert!(log.contains("no admin"), "{log}");
    assert!(log.contains("choose another ADMIN_EMAIL"), "{log}");
    let mut client = client(&addr).await;
    assert_eq!(
        login(&mut client, "admin", ADMIN_PASSWORD)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert!(second.is_running());
}
