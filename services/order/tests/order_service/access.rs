//! Who sees and moves which order; listing and pagination.

use tonic::Code;

use crate::helpers::*;
use proto::order::v1 as pb;

async fn list(
    h: &Harness,
    caller: &proto::common::v1::Caller,
    page: u32,
    page_size: u32,
    user_id: Option<String>,
) -> Result<pb::ListOrdersResponse, tonic::Status> {
    h.client
        .clone()
        .list_orders(pb::ListOrdersRequest {
            caller: Some(caller.clone()),
            page,
            page_size,
            user_id,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_customer_sees_only_their_own_orders() {
    let h = Harness::start().await;
    let alice = customer();
    let bob = customer();
    let boss = admin();
    let alices = h.pending_order(&alice).await;
    let bobs = h.pending_order(&bob).await;

    assert_eq!(h.get(&alice, &alices.id).await.unwrap().id, alices.id);
    let hidden = h.get(&alice, &bobs.id).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    let missing = h
        .get(&alice, &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        hidden.message().replace(&bobs.id, "ID"),
        missing.message().replace(&missing_id(&missing), "ID"),
        "another user's order is indistinguishable from a missing one"
    );
    assert_eq!(h.get(&boss, &bobs.id).await.unwrap().user_id, bob.user_id);

    let mine = list(&h, &alice, 0, 0, None).await.unwrap();
    assert_eq!(mine.total, 1);
    assert_eq!(mine.orders[0].id, alices.id);
    let refused = list(&h, &alice, 1, 10, Some(bob.user_id.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let own_filter = list(&h, &alice, 1, 10, Some(alice.user_id.clone()))
        .await
        .unwrap();
    assert_eq!(own_filter.total, 1);

    let everything = list(&h, &boss, 1, 10, None).await.unwrap();
    assert_eq!(everything.total, 2);
    let bobs_only = list(&h, &boss, 1, 10, Some(bob.user_id.clone()))
        .await
        .unwrap();
    assert_eq!(bobs_only.total, 1);
    assert_eq!(bobs_only.orders[0].id, bobs.id);

    // Cancel: another customer's order is not found; nothing moved.
    h.outcome(&bobs.id, pb::OrderOutcome::Confirmed, "")
        .await
        .unwrap();
    let err = h.cancel(&alice, &bobs.id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        h.get(&bob, &bobs.id).await.unwrap().status,
        pb::OrderStatus::Confirmed as i32
    );
    // The owner, or an admin, may cancel.
    let cancelled = h.cancel(&boss, &bobs.id).await.unwrap();
    assert_eq!(cancelled.status, pb::OrderStatus::Cancelled as i32);
}

fn missing_id(status: &tonic::Status) -> String {
    status
        .message()
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn only_an_admin_updates_the_status() {
    let h = Harness::start().await;
    let alice = customer();
    let order = h.pending_order(&alice).await;
    h.outcome(&order.id, pb::OrderOutcome::Confirmed, "")
        .await
        .unwrap();
    let err = h
        .set_status(&alice, &order.id, pb::OrderStatus::Shipped)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(reason(&err), "PERMISSION_DENIED");
    let shipped = h
        .set_status(&admin(), &order.id, pb::OrderStatus::Shipped)
        .await
        .unwrap();
    assert_eq!(shipped.status, pb::OrderStatus::Shipped as i32);

    let err = h
        .set_status(&admin(), &order.id, pb::OrderStatus::Unspecified)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["status"]);
    let err = h
        .set_status(&admin(), "not-an-id", pb::OrderStatus::Delivered)
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["order_id"]);
    let err = h
        .set_status(
            &admin(),
            &uuid::Uuid::new_v4().to_string(),
            pb::OrderStatus::Delivered,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn lists_are_paginated_newest_first() {
    let h = Harness::start_with(Options {
        relay: false,
        ..Default::default()
    })
    .await;
    let me = customer();
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(h.pending_order(&me).await.id);
    }
    h.pending_order(&customer()).await;
    ids.reverse();

    let first = list(&h, &me, 0, 0, None).await.unwrap();
    assert_eq!((first.page, first.page_size, first.total), (1, 20, 25));
    let second = list(&h, &me, 2, 0, None).await.unwrap();
    assert_eq!(second.orders.len(), 5);
    let seen: Vec<String> = first
        .orders
        .iter()
        .chain(second.orders.iter())
        .map(|o| o.id.clone())
        .collect();
    assert_eq!(seen, ids, "newest first, no order twice, none skipped");
    assert!(first.orders.iter().all(|o| o.items.len() == 1));

    let small = list(&h, &me, 3, 10, None).await.unwrap();
    assert_eq!(small.orders.len(), 5);
    let beyond = list(&h, &me, 9, 10, None).await.unwrap();
    assert!(beyond.orders.is_empty());
    assert_eq!(beyond.total, 25);

    let max = list(&h, &me, 1, 100, None).await.unwrap();
    assert_eq!(max.orders.len(), 25);
    let err = list(&h, &me, 1, 101, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), vec!["page_size"]);
    let err = list(&h, &admin(), 1, 10, Some("nobody".into()))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["user_id"]);
}
