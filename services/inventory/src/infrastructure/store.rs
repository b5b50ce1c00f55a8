//! Products and the order ledger in PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    Statement, TransactionTrait,
};
use uuid::Uuid;

use super::entities::{order_ledger, order_ledger_line, product};
use crate::application::ProductRepository;
use crate::domain::{
    self, ApplyOutcome, ApplyResult, LedgerState, NewProduct, PageRequest, Price, Product,
    ProductChanges, ProductPage, ReleaseOutcome, ReleaseResult, StockRequest,
};

fn to_product(model: product::Model) -> Product {
    Product {
        id: model.id,
        name: model.name,
        category: model.category,
        stock: model.stock,
        price: Price::from_stored(model.price),
        created_at: model.created_at,
        updated_at: model.updated_at,
    }
}

fn ledger_state(entry: &order_ledger::Model) -> Result<LedgerState, DbErr> {
    LedgerState::parse(&entry.outcome).ok_or_else(|| {
        DbErr::Type(format!(
            "order_ledger.outcome of {} is {:?}",
            entry.order_id, entry.outcome
        ))
    })
}

fn replay(entry: &order_ledger::Model) -> Result<ApplyResult, DbErr> {
    Ok(ApplyResult {
        outcome: ledger_state(entry)?.apply_outcome(),
        reason: entry.reason.clone(),
        replayed: true,
    })
}

#[derive(Clone)]
pub struct ProductStore {
    db: DatabaseConnection,
}

impl ProductStore {
    pub fn new(db: DatabaseConnection) -> Self {
        ProductStore { db }
    }
}

impl ProductRepository for ProductStore {
    async fn insert(&self, new: NewProduct) -> Result<Product, DbErr> {
        let now = Utc::now();
        let model = product::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(new.name),
            category: Set(new.category),
            stock: Set(new.stock),
            price: Set(new.price.amount()),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&self.db)
        .await?;
        Ok(to_product(model))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Product>, DbErr> {
        Ok(product::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(to_product))
    }

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Product>, DbErr> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let models = product::Entity::find()
            .filter(platform::db::any_of(
                product::Column::Id,
                ids.iter().copied(),
            ))
            .all(&self.db)
            .await?;
        Ok(models.into_iter().map(to_product).collect())
    }

    async fn list(&self, page: PageRequest, category: Option<&str>) -> Result<ProductPage, DbErr> {
        let mut query = product::Entity::find();
        if let Some(category) = category {
            query = query.filter(
                Expr::expr(Func::lower(Expr::col(product::Column::Category)))
                    .eq(Func::lower(Expr::val(category))),
            );
        }
        let total = query.clone().count(&self.db).await?;
        let models = query
            .order_by_asc(product::Column::CreatedAt)
            .order_by_asc(product::Column::Id)
            .offset(page.offset())
            .limit(u64::from(page.size))
            .all(&self.db)
            .await?;
        Ok(ProductPage {
            products: models.into_iter().map(to_product).collect(),
            total,
        })
    }

    /// Sets the given columns in one UPDATE statement: no read-modify-write,
    /// so concurrent updates of different fields all persist.
    async fn update(&self, id: Uuid, changes: ProductChanges) -> Result<Option<Product>, DbErr> {
        if changes.is_empty() {
            return self.get(id).await;
        }
        let mut update = product::Entity::update_many().filter(product::Column::Id.eq(id));
        if let Some(name) = changes.name {
            update = update.col_expr(product::Column::Name, Expr::val(name));
        }
        if let Some(category) = changes.category {
            update = update.col_expr(product::Column::Category, Expr::val(category));
        }
        if let Some(stock) = changes.stock {
            update = update.col_expr(product::Column::Stock, Expr::val(stock));
        }
        if let Some(price) = changes.price {
            update = update.col_expr(product::Column::Price, Expr::val(price.amount()));
        }
        let models = update
            .col_expr(product::Column::UpdatedAt, Expr::current_timestamp())
            .exec_with_returning(&self.db)
            .await?;
        Ok(models.into_iter().next().map(to_product))
    }

    /// Whether a product was there to delete.
    async fn delete(&self, id: Uuid) -> Result<bool, DbErr> {
        let result = product::Entity::delete_by_id(id).exec(&self.db).await?;
        Ok(result.rows_affected > 0)
    }

    /// Applies an order all or nothing in one transaction, once per order id.
    ///
    /// The product rows are locked in ascending id order (`FOR UPDATE`), so
    /// concurrent orders over the same products queue instead of deadlocking.
    /// The ledger row is written last with `ON CONFLICT DO NOTHING`: when a
    /// concurrent call for the same order committed first, this one rolls back
    /// everything it did and answers the recorded outcome.
    async fn apply_order(&self, request: &StockRequest) -> Result<ApplyResult, DbErr> {
        let txn = self.db.begin().await?;
        if let Some(entry) = order_ledger::Entity::find_by_id(request.order_id)
            .one(&txn)
            .await?
        {
            txn.rollback().await?;
            return replay(&entry);
        }

        let locked = product::Entity::find()
            .filter(platform::db::any_of(
                product::Column::Id,
                request.product_ids(),
            ))
            .order_by_asc(product::Column::Id)
            .lock_exclusive()
            .all(&txn)
            .await?;
        let stock: BTreeMap<Uuid, i32> = locked.iter().map(|p| (p.id, p.stock)).collect();
        let (outcome, reason) = domain::decide(&request.lines, &stock);

        if outcome == ApplyOutcome::Applied {
            for line in &request.lines {
                product::Entity::update_many()
                    .col_expr(
                        product::Column::Stock,
                        Expr::col(product::Column::Stock).sub(line.quantity),
                    )
                    .col_expr(product::Column::UpdatedAt, Expr::current_timestamp())
                    .filter(product::Column::Id.eq(line.product_id))
                    .exec(&txn)
                    .await?;
            }
        }

        let recorded = txn
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO order_ledger (order_id, outcome, reason) VALUES ($1, $2, $3) \
                 ON CONFLICT (order_id) DO NOTHING",
                [
                    request.order_id.into(),
                    LedgerState::from(outcome).as_str().into(),
                    reason.clone().into(),
                ],
            ))
            .await?
            .rows_affected();
        if recorded == 0 {
            txn.rollback().await?;
            let entry = order_ledger::Entity::find_by_id(request.order_id)
                .one(&self.db)
                .await?
                .ok_or_else(|| {
                    DbErr::RecordNotFound(format!(
                        "order_ledger row of {} vanished after a conflict",
                        request.order_id
                    ))
                })?;
            return replay(&entry);
        }

        if outcome == ApplyOutcome::Applied {
            order_ledger_line::Entity::insert_many(request.lines.iter().map(|line| {
                order_ledger_line::ActiveModel {
                    order_id: Set(request.order_id),
                    product_id: Set(line.product_id),
                    quantity: Set(line.quantity),
                }
            }))
            .exec(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(ApplyResult {
            outcome,
            reason,
            replayed: false,
        })
    }

    /// Applies several orders in one transaction (one commit for all), each
    /// all or nothing and once per order id, with the same rules as
    /// [`ProductStore::apply_order`]: every product row any of them needs is
    /// locked once, in ascending id order, and the orders are decided one
    /// after the other against the stock the earlier ones left. Results come
    /// in the requests' order; an order id given twice is decided once and
    /// its second answer is a replay. When a concurrent call recorded one of
    /// these orders meanwhile (the ledger insert skipped it), everything is
    /// rolled back and each order is applied alone instead, which answers
    /// that one from the ledger.
    async fn apply_orders(&self, requests: &[StockRequest]) -> Result<Vec<ApplyResult>, DbErr> {
        if requests.len() == 1 {
            return Ok(vec![self.apply_order(&requests[0]).await?]);
        }
        // Read before the transaction: an order recorded meanwhile makes the
        // ledger insert below skip it, and that is handled there.
        let order_ids: Vec<Uuid> = requests.iter().map(|r| r.order_id).collect();
        let recorded: HashMap<Uuid, order_ledger::Model> = platform::db::planned_each_time(
            &self.db,
            sea_orm::sqlx::query("SELECT * FROM order_ledger WHERE order_id = ANY($1)")
                .bind(order_ids),
        )
        .await?
        .iter()
        .map(|row| order_ledger::Model::from_query_result(row, ""))
        .map(|entry| entry.map(|entry| (entry.order_id, entry)))
        .collect::<Result<_, DbErr>>()?;
        let txn = self.db.begin().await?;

        // The first request of each order id not yet in the ledger.
        let mut seen = HashSet::new();
        let fresh: Vec<&StockRequest> = requests
            .iter()
            .filter(|r| !recorded.contains_key(&r.order_id) && seen.insert(r.order_id))
            .collect();
        let product_ids: BTreeSet<Uuid> = fresh
            .iter()
            .flat_map(|r| r.lines.iter().map(|l| l.product_id))
            .collect();
        let mut stock: BTreeMap<Uuid, i32> = if product_ids.is_empty() {
            BTreeMap::new()
        } else {
            product::Entity::find()
                .filter(platform::db::any_of(
                    product::Column::Id,
                    product_ids.iter().copied(),
                ))
                .order_by_asc(product::Column::Id)
                .lock_exclusive()
                .all(&txn)
                .await?
                .into_iter()
                .map(|p| (p.id, p.stock))
                .collect()
        };

        let mut decided: HashMap<Uuid, (ApplyOutcome, String)> = HashMap::new();
        let mut taken: BTreeMap<Uuid, i32> = BTreeMap::new();
        for request in &fresh {
            let (outcome, reason) = domain::decide(&request.lines, &stock);
            if outcome == ApplyOutcome::Applied {
                for line in &request.lines {
                    *stock
                        .get_mut(&line.product_id)
                        .expect("decided on locked rows") -= line.quantity;
                    *taken.entry(line.product_id).or_default() += line.quantity;
                }
            }
            decided.insert(request.order_id, (outcome, reason));
        }

        if !taken.is_empty() {
            let (ids, quantities): (Vec<Uuid>, Vec<i32>) = taken.into_iter().unzip();
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE products p SET stock = p.stock - t.quantity, updated_at = CURRENT_TIMESTAMP \
                 FROM unnest($1::uuid[], $2::int4[]) AS t(id, quantity) WHERE p.id = t.id",
                [ids.into(), quantities.into()],
            ))
            .await?;
        }
        if !fresh.is_empty() {
            // Ledger rows in order id order: two batches over the same orders
            // take their key locks in the same order and cannot deadlock.
            let mut fresh = fresh.clone();
            fresh.sort_by_key(|r| r.order_id);
            let ids: Vec<Uuid> = fresh.iter().map(|r| r.order_id).collect();
            let outcomes: Vec<String> = fresh
                .iter()
                .map(|r| {
                    LedgerState::from(decided[&r.order_id].0)
                        .as_str()
                        .to_owned()
                })
                .collect();
            let reasons: Vec<String> = fresh
                .iter()
                .map(|r| decided[&r.order_id].1.clone())
                .collect();
            let inserted = txn
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO order_ledger (order_id, outcome, reason) \
                     SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) \
                     ON CONFLICT (order_id) DO NOTHING",
                    [ids.into(), outcomes.into(), reasons.into()],
                ))
                .await?
                .rows_affected();
            if inserted != fresh.len() as u64 {
                // Lost a race for at least one order: let each go alone.
                txn.rollback().await?;
                let mut results = Vec::with_capacity(requests.len());
                for request in requests {
                    results.push(self.apply_order(request).await?);
                }
                return Ok(results);
            }
            let lines: Vec<(Uuid, Uuid, i32)> = fresh
                .iter()
                .filter(|r| decided[&r.order_id].0 == ApplyOutcome::Applied)
                .flat_map(|r| {
                    r.lines
                        .iter()
                        .map(|l| (r.order_id, l.product_id, l.quantity))
                })
                .collect();
            if !lines.is_empty() {
                let (orders, rest): (Vec<Uuid>, Vec<(Uuid, i32)>) =
                    lines.into_iter().map(|(o, p, q)| (o, (p, q))).unzip();
                let (products, quantities): (Vec<Uuid>, Vec<i32>) = rest.into_iter().unzip();
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO order_ledger_lines (order_id, product_id, quantity) \
                     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[])",
                    [orders.into(), products.into(), quantities.into()],
                ))
                .await?;
            }
        }
        txn.commit().await?;

        let mut answered = HashSet::new();
        requests
            .iter()
            .map(|request| match recorded.get(&request.order_id) {
                Some(entry) => replay(entry),
                None if answered.insert(request.order_id) => {
                    let (outcome, reason) = decided[&request.order_id].clone();
                    Ok(ApplyResult {
                        outcome,
                        reason,
                        replayed: false,
                    })
                }
                // The same order twice in one batch: the second is a repeat.
                None => {
                    let (outcome, reason) = decided[&request.order_id].clone();
                    Ok(ApplyResult {
                        outcome,
                        reason,
                        replayed: true,
                    })
                }
            })
            .collect()
    }

    /// Returns an applied order's stock, once. An order id the ledger does not
    /// know is answered NOT_APPLIED and not recorded: orders are cancelled only
    /// once confirmed, so a release always follows its apply.
    async fn release_order(&self, order_id: Uuid) -> Result<ReleaseResult, DbErr> {
        let txn = self.db.begin().await?;
        let entry = order_ledger::Entity::find_by_id(order_id)
            .lock_exclusive()
            .one(&txn)
            .await?;
        let Some(entry) = entry else {
            txn.rollback().await?;
            return Ok(ReleaseResult {
                outcome: ReleaseOutcome::NotApplied,
                replayed: false,
                released: Vec::new(),
            });
        };
        match ledger_state(&entry)? {
            LedgerState::Released => {
                txn.rollback().await?;
                return Ok(ReleaseResult {
                    outcome: ReleaseOutcome::Released,
                    replayed: true,
                    released: Vec::new(),
                });
            }
            LedgerState::InsufficientStock | LedgerState::UnknownProduct => {
                txn.rollback().await?;
                return Ok(ReleaseResult {
                    outcome: ReleaseOutcome::NotApplied,
                    replayed: false,
                    released: Vec::new(),
                });
            }
            LedgerState::Applied => {}
        }

        let lines = order_ledger_line::Entity::find()
            .filter(order_ledger_line::Column::OrderId.eq(order_id))
            .order_by_asc(order_ledger_line::Column::ProductId)
            .all(&txn)
            .await?;
        // Ascending product order again: the row locks come in the same
        // order as ApplyOrder's.
        for line in &lines {
            let updated = product::Entity::update_many()
                // Saturates rather than overflows: stock an admin set near
                // the ceiling must not make the release fail forever.
                .col_expr(
                    product::Column::Stock,
                    Expr::cust_with_values(
                        "LEAST(stock::bigint + $1, $2)::integer",
                        [
                            i64::from(line.quantity),
                            i64::from(platform::limits::STOCK_CEILING),
                        ],
                    ),
                )
                .col_expr(product::Column::UpdatedAt, Expr::current_timestamp())
                .filter(product::Column::Id.eq(line.product_id))
                .exec(&txn)
                .await?;
            if updated.rows_affected == 0 {
                tracing::warn!(%order_id, product_id = %line.product_id,
                    quantity = line.quantity, "product deleted since the order applied; its stock is not returned");
            }
        }
        let mut released: order_ledger::ActiveModel = entry.into();
        let now = Utc::now();
        released.outcome = Set(LedgerState::Released.as_str().to_owned());
        released.released_at = Set(Some(now));
        released.updated_at = Set(now);
        released.update(&txn).await?;
        txn.commit().await?;
        Ok(ReleaseResult {
            outcome: ReleaseOutcome::Released,
            replayed: false,
            released: lines.iter().map(|l| l.product_id).collect(),
        })
    }
}
