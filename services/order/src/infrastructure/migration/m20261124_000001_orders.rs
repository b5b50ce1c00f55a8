//! Orders, their lines and the outbox. Plain SQL: the exact column types
//! (NUMERIC(12,2), bigserial, jsonb), checks and the idempotency index read
//! best as written.

/// The name `seaql_migrations` records.
pub const NAME: &str = "m20261124_000001_orders";

pub const UP: &str = r#"
CREATE TABLE orders (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    status text NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED', 'SHIPPED', 'DELIVERED')),
    total numeric(12, 2) NOT NULL CHECK (total >= 0),
    status_reason text,
    idempotency_key text,
    request_fingerprint text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((idempotency_key IS NULL) = (request_fingerprint IS NULL))
);
-- A key is scoped to its user; NULL keys never collide.
CREATE UNIQUE INDEX orders_user_idempotency_key ON orders (user_id, idempotency_key);
CREATE INDEX orders_user_newest ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_newest ON orders (created_at DESC, id DESC);

CREATE TABLE order_items (
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no smallint NOT NULL,
    product_id uuid NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, product_id)
);

-- Events waiting for the relay; a record exists only with its order.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES orders (id),
    event_type text NOT NULL,
    payload bytea NOT NULL,
    trace_context jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
"#;

pub const DOWN: &str = r#"
DROP TABLE IF EXISTS outbox;
DROP TABLE IF EXISTS order_items;
DROP TABLE IF EXISTS orders;
"#;
