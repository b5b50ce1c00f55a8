//! Registration, authentication and profile access.

use std::sync::Arc;

use futures::future::join_all;
use sea_orm::{ConnectionTrait, Statement};
use secrecy::SecretString;
use tonic::Code;
use user::application::{InsertError, NewUser, PasswordHashing, UserError, UserRepository};
use user::config::MIN_BCRYPT_COST;
use user::domain::{Caller, Email, Role, UniqueField, Username};
use user::infrastructure::grpc::to_status;
use user::infrastructure::password::PasswordHasher;
use user::infrastructure::store::UserStore;
use uuid::Uuid;

use crate::helpers::{PASSWORD, Users, app, invalid_fields};

#[tokio::test]
async fn registers_a_customer_who_logs_in_by_username_or_email() {
    let app = app().await;
    let alice = app
        .users
        .register("Alice", "Alice@Example.com", PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        alice.role,
        Role::Customer,
        "registration never makes an admin"
    );
    assert_eq!(
        (alice.username.as_str(), alice.email.as_str()),
        ("Alice", "Alice@Example.com")
    );

    for login in ["Alice", "alice", "alice@example.com", "ALICE@EXAMPLE.COM"] {
        let user = app.users.authenticate(login, PASSWORD).await.unwrap();
        assert_eq!(user, alice, "login {login:?}");
    }

    // The stored hash is bcrypt at cost 12, not the password; it is in no
    // type that leaves the service.
    let row = app
        .conn
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT password_hash FROM users",
        ))
        .await
        .unwrap()
        .unwrap();
    let hash: String = row.try_get("", "password_hash").unwrap();
    assert!(hash.starts_with("$2b$12$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
    let wire = user::infrastructure::grpc::to_proto(alice.clone());
    assert!(!format!("{wire:?}").contains("$2b$"));
    assert!(!format!("{alice:?}").contains("$2b$"));
}

#[tokio::test]
async fn invalid_registrations_name_every_bad_field() {
    let app = app().await;
    let long_password = "p".repeat(129);
    let long_email = format!("{}@example.com", "e".repeat(250));
    let cases: [(&str, &str, &str, &[&str]); 9] = [
        ("ab", "a@example.com", PASSWORD, &["username"]),
        (&"u".repeat(33), "a@example.com", PASSWORD, &["username"]),
        ("bad name", "a@example.com", PASSWORD, &["username"]),
        ("bob", "not-an-email", PASSWORD, &["email"]),
        ("bob", "bob@localhost", PASSWORD, &["email"]),
        ("bob", &long_email, PASSWORD, &["email"]),
        ("bob", "bob@example.com", "short", &["password"]),
        ("bob", "bob@example.com", &long_password, &["password"]),
        ("", "", "", &["username", "email", "password"]),
    ];
    for (username, email, password, fields) in cases {
        let err = app
            .users
            .register(username, email, password)
            .await
            .unwrap_err();
        assert_eq!(invalid_fields(err), fields, "{username:?} {email:?}");
    }
    // 8 and 128 characters are fine.
    app.users
        .register("eight", "eight@example.com", "12345678")
        .await
        .unwrap();
    let longest = "p".repeat(128);
    app.users
        .register("longest", "longest@example.com", &longest)
        .await
        .unwrap();
    app.users.authenticate("longest", &longest).await.unwrap();
    // Every character counts, past bcrypt's 72 bytes too.
    let mut almost = longest.clone();
    almost.replace_range(127.., "q");
    assert!(matches!(
        app.users.authenticate("longest", &almost).await,
        Err(UserError::InvalidCredentials)
    ));
}

#[tokio::test]
async fn duplicates_are_already_exists_naming_the_field_in_any_case() {
    let app = app().await;
    app.users
        .register("bob", "bob@example.com", PASSWORD)
        .await
        .unwrap();
    let cases = [
        ("BOB", "other@example.com", vec![UniqueField::Username]),
        ("bobby", "Bob@Example.COM", vec![UniqueField::Email]),
        (
            "Bob",
            "BOB@example.com",
            vec![UniqueField::Username, UniqueField::Email],
        ),
    ];
    for (username, email, fields) in cases {
        let err = app
            .users
            .register(username, email, PASSWORD)
            .await
            .unwrap_err();
        match &err {
            UserError::AlreadyExists(taken) => assert_eq!(taken, &fields, "{username} {email}"),
            other => panic!("expected ALREADY_EXISTS, got {other:?}"),
        }
        let status = to_status(err);
        assert_eq!(status.code(), Code::AlreadyExists);
        let detail = platform::grpc::error_detail(&status).unwrap();
        let named: Vec<String> = detail
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        let expected: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        assert_eq!(named, expected);
        assert!(status.message().contains("already taken"), "{status:?}");
    }
}

#[tokio::test]
async fn the_unique_indexes_catch_what_a_check_would_miss() {
    // The store alone, as when two registrations pass the check together.
    let app = app().await;
    let store = UserStore::new(app.conn.clone());
    let new = |username: &str, email: &str| {
        (
            Username::parse(username).unwrap(),
            Email::parse(email).unwrap(),
        )
    };
    let insert = |(username, email): (Username, Email)| {
        let store = store.clone();
        async move {
            store
                .insert(NewUser {
                    username: &username,
                    email: &email,
                    password_hash: SecretString::from("not a real hash".to_owned()),
                    role: Role::Customer,
                })
                .await
        }
    };
    insert(new("carol", "carol@example.com")).await.unwrap();
    assert!(matches!(
        insert(new("CAROL", "c2@example.com")).await,
        Err(InsertError::Duplicate(UniqueField::Username))
    ));
    assert!(matches!(
        insert(new("carol2", "CAROL@example.com")).await,
        Err(InsertError::Duplicate(UniqueField::Email))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_name_create_one_user() {
    let app = Arc::new(app().await);
    app.warm_pool().await;
    let results = join_all((0..4).map(|i| {
        let users = app.replica();
        tokio::spawn(async move {
            let username = if i % 2 == 0 { "racer" } else { "RACER" };
            users
                .register(username, &format!("racer{i}@example.com"), PASSWORD)
                .await
        })
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for err in results.into_iter().filter_map(Result::err) {
        assert!(
            matches!(&err, UserError::AlreadyExists(f) if f == &[UniqueField::Username]),
            "{err:?}"
        );
        assert_eq!(to_status(err).code(), Code::AlreadyExists);
    }

    let results = join_all((0..4).map(|i| {
        let users = app.replica();
        tokio::spawn(async move {
            users
                .register(&format!("mail{i}"), "Same@Example.com", PASSWORD)
                .await
        })
    }))
    .await;
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .into_iter()
            .filter_map(Result::err)
            .all(|e| matches!(&e, UserError::AlreadyExists(f) if f == &[UniqueField::Email]))
    );
}

#[tokio::test]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let app = app().await;
    app.users
        .register("dave", "dave@example.com", PASSWORD)
        .await
        .unwrap();
    let mut failures = Vec::new();
    for (login, password) in [
        ("nobody", PASSWORD),
        ("nobody@example.com", PASSWORD),
        ("dave", "wrong password"),
        ("dave@example.com", "wrong password"),
        // PostgreSQL cannot hold a NUL: no user has one, and asking must
        // not be a database error (a 500 at the edge).
        ("da\0ve", PASSWORD),
        ("dave\0@example.com", PASSWORD),
    ] {
        // Each costs exactly one bcrypt verification, known user or not, so
        // the time taken does not tell whether the account exists.
        let before = app.hasher.verifications();
        failures.push(app.users.authenticate(login, password).await);
        assert_eq!(app.hasher.verifications(), before + 1, "{login}");
    }
    let statuses: Vec<tonic::Status> = failures
        .into_iter()
        .map(|r| to_status(r.unwrap_err()))
        .collect();
    for status in &statuses {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), statuses[0].message());
        assert_eq!(status.details(), statuses[0].details());
    }
    // The unknown-user path verifies against a dummy hash, and never passes.
    assert!(!app.hasher.verify(PASSWORD, None).await);

    let err = app.users.authenticate("", "").await.unwrap_err();
    assert_eq!(invalid_fields(err), ["username", "password"]);
}

#[tokio::test]
async fn a_customer_reads_only_their_own_profile_an_admin_any() {
    let app = app().await;
    let erin = app
        .users
        .register("erin", "erin@example.com", PASSWORD)
        .await
        .unwrap();
    let frank = app
        .users
        .register("frank", "frank@example.com", PASSWORD)
        .await
        .unwrap();
    let as_erin = Caller {
        user_id: erin.id,
        role: Role::Customer,
    };
    assert_eq!(app.users.get_user(as_erin, erin.id).await.unwrap(), erin);

    // Another user's profile looks exactly like a missing one.
    let other = to_status(app.users.get_user(as_erin, frank.id).await.unwrap_err());
    let missing_id = Uuid::new_v4();
    let missing = to_status(app.users.get_user(as_erin, missing_id).await.unwrap_err());
    assert_eq!(other.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        other.message().replace(&frank.id.to_string(), "ID"),
        missing.message().replace(&missing_id.to_string(), "ID")
    );

    let admin = Caller {
        user_id: Uuid::new_v4(),
        role: Role::Admin,
    };
    assert_eq!(app.users.get_user(admin, frank.id).await.unwrap(), frank);
    assert!(matches!(
        app.users.get_user(admin, missing_id).await,
        Err(UserError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_flood_is_refused_quickly_while_a_login_still_succeeds() {
    let app = app().await;
    app.users
        .register("regular", "regular@example.com", PASSWORD)
        .await
        .unwrap();
    // Two registrations may hash at once; the rest are refused at once.
    let hasher = PasswordHasher::new(MIN_BCRYPT_COST, 2).await.unwrap();
    let users = Arc::new(Users::new(
        UserStore::new(app.conn.clone()),
        hasher,
        user::metrics::Metrics::default(),
    ));
    let flood = join_all((0..200).map(|i| {
        let users = users.clone();
        tokio::spawn(async move {
            users
                .register(
                    &format!("flood{i}"),
                    &format!("flood{i}@example.com"),
                    PASSWORD,
                )
                .await
        })
    }));
    let login = {
        let users = users.clone();
        tokio::spawn(async move { users.authenticate("regular", PASSWORD).await })
    };
    let (results, login) = tokio::join!(flood, login);
    let user = login.unwrap().expect("the login succeeds during the flood");
    assert_eq!(user.username.as_str(), "regular");
    let mut created = 0;
    let mut busy = 0;
    for result in results {
        match result.unwrap() {
            Ok(_) => created += 1,
            Err(err @ UserError::Busy) => {
                assert_eq!(to_status(err).code(), Code::ResourceExhausted);
                busy += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created + busy, 200);
    assert!(
        created >= 2 && busy > 150,
        "{created} created, {busy} refused"
    );
}

#[tokio::test]
async fn a_taken_name_costs_the_same_hash_as_a_registration() {
    let app = app().await;
    app.users
        .register("taken", "taken@example.com", PASSWORD)
        .await
        .unwrap();
    // A refusal that skipped the bcrypt run would answer in milliseconds
    // against a registration's ~250 ms, telling which names exist.
    let before = app.hasher.hashes();
    let taken = app
        .users
        .register("taken", "taken2@example.com", PASSWORD)
        .await;
    assert!(
        matches!(taken, Err(UserError::AlreadyExists(_))),
        "{taken:?}"
    );
    assert_eq!(app.hasher.hashes(), before + 1);
}
