//! Product CRUD: validation, exact money, values not deltas, no lost
//! updates, pages and the category filter, batch reads.

use std::collections::HashSet;
use std::str::FromStr;

use inventory::application::InventoryError;
use rust_decimal::Decimal;

use crate::helpers::{app, invalid_fields};

#[tokio::test]
async fn the_seed_laptop_round_trips_exactly() {
    let app = app().await;
    let created = app
        .inventory
        .create_product("Laptop", "Electronics", 100, "999.99")
        .await
        .unwrap();
    assert_eq!(created.price.to_string(), "999.99");
    let read = app
        .inventory
        .get_product(&created.id.to_string())
        .await
        .unwrap();
    assert_eq!(read.name, "Laptop");
    assert_eq!(read.category, "Electronics");
    assert_eq!(read.stock, 100);
    assert_eq!(read.price.to_string(), "999.99");
    assert_eq!(read.price.amount(), Decimal::from_str("999.99").unwrap());
    assert_eq!(read, created);
}

#[tokio::test]
async fn money_is_exact() {
    let app = app().await;
    let a = app.product("Ten cents", 1, "0.10").await;
    let b = app.product("Twenty cents", 1, "0.20").await;
    let found = app
        .inventory
        .batch_get_products(&[a.id.to_string(), b.id.to_string()])
        .await
        .unwrap();
    let total: Decimal = found.products.iter().map(|p| p.price.amount()).sum();
    assert_eq!(total, Decimal::from_str("0.30").unwrap());
    assert_eq!(total.to_string(), "0.30");

    let max = app.product("Dear", 1, "9999999999.99").await;
    let read = app
        .inventory
        .get_product(&max.id.to_string())
        .await
        .unwrap();
    assert_eq!(read.price.to_string(), "9999999999.99");
    let whole = app.product("Whole", 1, "5").await;
    assert_eq!(whole.price.to_string(), "5.00");
}

#[tokio::test]
async fn invalid_products_are_refused_naming_the_field() {
    let app = app().await;
    let cases: [(&str, &str, i32, &str, &[&str]); 9] = [
        ("", "Electronics", 1, "1.00", &["name"]),
        ("   ", "Electronics", 1, "1.00", &["name"]),
        ("Laptop", "", 1, "1.00", &["category"]),
        ("Laptop", "Electronics", -1, "1.00", &["stock"]),
        ("Laptop", "Electronics", 1, "0", &["price"]),
        ("Laptop", "Electronics", 1, "-5.00", &["price"]),
        ("Laptop", "Electronics", 1, "1.234", &["price"]),
        ("Laptop", "Electronics", 1, "12345678901.00", &["price"]),
        ("", "", -1, "abc", &["name", "category", "stock", "price"]),
    ];
    for (name, category, stock, price, fields) in cases {
        let err = app
            .inventory
            .create_product(name, category, stock, price)
            .await
            .unwrap_err();
        assert_eq!(
            invalid_fields(err),
            fields,
            "{name:?} {category:?} {stock} {price:?}"
        );
    }
    let long_name = "n".repeat(201);
    let err = app
        .inventory
        .create_product(&long_name, "c", 1, "1")
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(err), ["name"]);
    let (_, page) = app.inventory.list_products(1, 100, None).await.unwrap();
    assert_eq!(page.total, 0, "nothing invalid was stored");
}

#[tokio::test]
async fn unknown_and_malformed_ids() {
    let app = app().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for result in [
        app.inventory.get_product(&unknown).await.map(|_| ()),
        app.inventory.delete_product(&unknown).await,
        app.inventory
            .update_product(&unknown, Some("x"), None, None, None)
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(result, Err(InventoryError::ProductNotFound(_))));
    }
    let err = app.inventory.get_product("not-a-uuid").await.unwrap_err();
    assert_eq!(invalid_fields(err), ["id"]);
}

#[tokio::test]
async fn update_sets_values_and_leaves_absent_fields() {
    let app = app().await;
    let p = app.product("Laptop", 100, "999.99").await;
    let id = p.id.to_string();

    // Stock is a value: 5 means 5, not 100 + 5 (the seed's bug).
    let updated = app
        .inventory
        .update_product(&id, None, None, Some(5), None)
        .await
        .unwrap();
    assert_eq!(updated.stock, 5);
    assert_eq!(updated.name, "Laptop");
    assert_eq!(updated.price.to_string(), "999.99");
    assert!(updated.updated_at >= p.updated_at);

    let updated = app
        .inventory
        .update_product(
            &id,
            Some("Notebook"),
            Some("Computers"),
            None,
            Some("899.50"),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            updated.name.as_str(),
            updated.category.as_str(),
            updated.stock
        ),
        ("Notebook", "Computers", 5)
    );
    assert_eq!(updated.price.to_string(), "899.50");

    // No fields: nothing changes.
    let same = app
        .inventory
        .update_product(&id, None, None, None, None)
        .await
        .unwrap();
    assert_eq!(same, updated);

    let err = app
        .inventory
        .update_product(&id, Some(""), None, Some(-3), Some("1.001"))
        .await
        .unwrap_err();
    assert_eq!(invalid_fields(err), ["name", "stock", "price"]);
    assert_eq!(app.stock(&p).await, 5);

    app.inventory.delete_product(&id).await.unwrap();
    assert!(matches!(
        app.inventory.get_product(&id).await,
        Err(InventoryError::ProductNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_different_fields_all_persist() {
    let app = app().await;
    app.warm_pool().await;
    for round in 0..15 {
        let p = app.product("Original", 1, "1.00").await;
        let id = p.id.to_string();
        let name = format!("Name {round}");
        let category = format!("Category {round}");
        let stock = 1000 + round;
        let price = format!("{round}.25");
        let inv = &app.inventory;
        let (a, b, c, d) = tokio::join!(
            inv.update_product(&id, Some(&name), None, None, None),
            inv.update_product(&id, None, Some(&category), None, None),
            inv.update_product(&id, None, None, Some(stock), None),
            inv.update_product(&id, None, None, None, Some(&price)),
        );
        for r in [a, b, c, d] {
            r.unwrap();
        }
        let read = inv.get_product(&id).await.unwrap();
        assert_eq!(read.name, name, "round {round}");
        assert_eq!(read.category, category, "round {round}");
        assert_eq!(read.stock, stock, "round {round}");
        assert_eq!(
            read.price.to_string(),
            format!("{round}.25"),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn lists_pages_in_a_stable_order_with_a_category_filter() {
    let app = app().await;
    let mut ids = Vec::new();
    for (i, category) in ["Books", "books", "Toys", "BOOKS", "Toys"]
        .iter()
        .enumerate()
    {
        let p = app
            .inventory
            .create_product(&format!("P{i}"), category, 1, "1.00")
            .await
            .unwrap();
        ids.push(p.id);
    }

    let mut seen = Vec::new();
    for page in 1..=3 {
        let (request, found) = app.inventory.list_products(page, 2, None).await.unwrap();
        assert_eq!((request.page, request.size), (page, 2));
        assert_eq!(found.total, 5);
        seen.extend(found.products.into_iter().map(|p| p.id));
    }
    assert_eq!(seen, ids, "every product once, in creation order");
    let (_, past_end) = app.inventory.list_products(4, 2, None).await.unwrap();
    assert!(past_end.products.is_empty());

    let (request, first) = app.inventory.list_products(0, 0, None).await.unwrap();
    assert_eq!(
        (request.page, request.size),
        (1, 20),
        "0 means page 1, size 20"
    );
    assert_eq!(first.products.len(), 5);

    let err = app
        .inventory
        .list_products(1, 101, None)
        .await
        .err()
        .unwrap();
    assert_eq!(invalid_fields(err), ["page_size"]);

    let (_, books) = app
        .inventory
        .list_products(1, 10, Some("bOoKs"))
        .await
        .unwrap();
    assert_eq!(books.total, 3);
    assert!(
        books
            .products
            .iter()
            .all(|p| p.category.eq_ignore_ascii_case("books"))
    );
    let (_, none) = app
        .inventory
        .list_products(1, 10, Some("Book"))
        .await
        .unwrap();
    assert_eq!(none.total, 0, "the filter is exact, not a prefix");
    let (_, all) = app.inventory.list_products(1, 10, Some("")).await.unwrap();
    assert_eq!(all.total, 5, "an empty filter is no filter");
}

#[tokio::test]
async fn batch_get_answers_found_and_missing() {
    let app = app().await;
    let a = app.product("A", 1, "1.00").await;
    let b = app.product("B", 2, "2.00").await;
    let missing = uuid::Uuid::new_v4();
    let found = app
        .inventory
        .batch_get_products(&[
            b.id.to_string(),
            missing.to_string(),
            a.id.to_string(),
            b.id.to_string(),
        ])
        .await
        .unwrap();
    let ids: Vec<_> = found.products.iter().map(|p| p.id).collect();
    assert_eq!(ids, [b.id, a.id], "in the order asked, each once");
    assert_eq!(found.missing_ids, [missing]);

    let empty = app.inventory.batch_get_products(&[]).await.unwrap();
    assert!(empty.products.is_empty() && empty.missing_ids.is_empty());

    let err = app
        .inventory
        .batch_get_products(&[a.id.to_string(), "nope".into()])
        .await
        .err()
        .unwrap();
    assert_eq!(invalid_fields(err), ["ids[1]"]);

    let too_many: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let err = app
        .inventory
        .batch_get_products(&too_many)
        .await
        .err()
        .unwrap();
    assert_eq!(invalid_fields(err), ["ids"]);
    let at_limit: HashSet<String> = too_many.into_iter().take(100).collect();
    let at_limit: Vec<String> = at_limit.into_iter().collect();
    let found = app.inventory.batch_get_products(&at_limit).await.unwrap();
    assert_eq!(found.missing_ids.len(), 100);
}
