//! The first admin from the ADMIN_* settings: created once, never
//! overwritten, safe with replicas starting together.

use std::sync::Arc;

use futures::future::join_all;
use user::application::{AdminBootstrap, BootstrapError, UserError};
use user::domain::{Role, UniqueField};

use crate::helpers::{PASSWORD, admin_settings, app};

#[tokio::test]
async fn the_first_admin_is_created_once_and_never_overwritten() {
    let app = app().await;
    let first = admin_settings("root", "root@example.com", "first-password");
    let created = match app.users.bootstrap_admin(&first).await.unwrap() {
        AdminBootstrap::Created(user) => user,
        other => panic!("expected a new admin, got {other:?}"),
    };
    assert_eq!(created.role, Role::Admin);
    let logged_in = app
        .users
        .authenticate("root", "first-password")
        .await
        .unwrap();
    assert_eq!(logged_in.role, Role::Admin);

    // A restart with other settings for the same username changes nothing.
    let changed = admin_settings("ROOT", "changed@example.com", "second-password");
    match app.users.bootstrap_admin(&changed).await.unwrap() {
        AdminBootstrap::AlreadyPresent(user) => assert_eq!(user, created),
        other => panic!("expected the existing admin, got {other:?}"),
    }
    app.users
        .authenticate("root", "first-password")
        .await
        .unwrap();
    assert!(matches!(
        app.users.authenticate("root", "second-password").await,
        Err(UserError::InvalidCredentials)
    ));
    assert!(matches!(
        app.users
            .authenticate("changed@example.com", "second-password")
            .await,
        Err(UserError::InvalidCredentials)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_create_one_admin() {
    let app = Arc::new(app().await);
    app.warm_pool().await;
    let settings = Arc::new(admin_settings("boss", "boss@example.com", "boss-password"));
    let results = join_all((0..3).map(|_| {
        let users = app.replica();
        let settings = settings.clone();
        tokio::spawn(async move { users.bootstrap_admin(&settings).await })
    }))
    .await;
    let results: Vec<AdminBootstrap> = results
        .into_iter()
        .map(|r| r.unwrap().expect("every replica starts"))
        .collect();
    let created = results
        .iter()
        .filter(|r| matches!(r, AdminBootstrap::Created(_)))
        .count();
    assert_eq!(created, 1, "{results:?}");
    let ids: Vec<_> = results
        .iter()
        .map(|r| match r {
            AdminBootstrap::Created(u) | AdminBootstrap::AlreadyPresent(u) => u.id,
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one and the same admin");
}

#[tokio::test]
async fn an_existing_customer_with_that_name_is_left_alone() {
    let app = app().await;
    let customer = app
        .users
        .register("chief", "chief@example.com", PASSWORD)
        .await
        .unwrap();
    let settings = admin_settings("chief", "other@example.com", "admin-password");
    match app.users.bootstrap_admin(&settings).await.unwrap() {
        AdminBootstrap::AlreadyPresent(user) => {
            assert_eq!(user, customer);
            assert_eq!(user.role, Role::Customer, "never promoted or changed");
        }
        other => panic!("expected the existing user, got {other:?}"),
    }
    app.users.authenticate("chief", PASSWORD).await.unwrap();

    // The admin's email belongs to someone else: a clear start-up error.
    let clash = admin_settings("newboss", "CHIEF@example.com", "admin-password");
    let err = app.users.bootstrap_admin(&clash).await.unwrap_err();
    assert!(matches!(err, BootstrapError::EmailTaken(_)), "{err:?}");
    assert!(err.to_string().contains("ADMIN_EMAIL"));
}

#[tokio::test]
async fn the_admins_names_are_reserved_before_the_admin_exists() {
    let app = app().await;
    let admin = admin_settings("Boss", "boss@example.com", "boss-password-123");
    let users = app.replica().reserving(Some(&admin));
    let err = users
        .register("boss", "someone@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UserError::AlreadyExists(f) if f == &[UniqueField::Username]),
        "{err:?}"
    );
    let err = users
        .register("someone", "BOSS@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UserError::AlreadyExists(f) if f == &[UniqueField::Email]),
        "{err:?}"
    );
    // So the admin is created as configured.
    assert!(matches!(
        users.bootstrap_admin(&admin).await.unwrap(),
        AdminBootstrap::Created(_)
    ));
}
