//! The Inventory schema. Migrations run at start-up and by `inventory
//! migrate`, under an advisory lock (see `platform::db::migrate`).

use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(platform::db::SqlMigration {
            name: "m20261124_000001_create_products_and_order_ledger",
            up: UP,
            down: DOWN,
        })]
    }
}

const UP: &str = r#"
CREATE TABLE products (
    id          uuid PRIMARY KEY,
    name        varchar(200) NOT NULL CHECK (btrim(name) <> ''),
    category    varchar(100) NOT NULL CHECK (btrim(category) <> ''),
    stock       integer NOT NULL CHECK (stock >= 0),
    price       numeric(12, 2) NOT NULL CHECK (price > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- The category filter is exact but case-insensitive.
CREATE INDEX products_category_lower_idx ON products (lower(category));
-- Lists are ordered by creation, then id: stable across pages.
CREATE INDEX products_created_at_id_idx ON products (created_at, id);

CREATE TABLE order_ledger (
    order_id    uuid PRIMARY KEY,
    outcome     text NOT NULL
                CHECK (outcome IN ('APPLIED', 'INSUFFICIENT_STOCK', 'UNKNOWN_PRODUCT', 'RELEASED')),
    reason      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
);

-- No foreign key to products: a product may be deleted after an order took
-- some of it; the ledger still tells what the order took.
CREATE TABLE order_ledger_lines (
    order_id    uuid NOT NULL REFERENCES order_ledger (order_id) ON DELETE CASCADE,
    product_id  uuid NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);
"#;

const DOWN: &str = "DROP TABLE order_ledger_lines; DROP TABLE order_ledger; DROP TABLE products;";
