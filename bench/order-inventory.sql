-- One order's statements on the inventory database, in order, as captured
-- with log_statement = 'all' (bench/order-capture.txt, `scripts/bench.sh
-- capture`): the Order service's price read at POST /orders, then the
-- Consumer's apply transaction for a lone order. One product of 20 (ids made
-- by scripts/bench.sh), 1-3 units, a fresh order id; the services bind the
-- ids as one array.
\set p random(10, 29)
\set qty random(1, 3)
SELECT "products"."id", "products"."name", "products"."category", "products"."stock", "products"."price", "products"."created_at", "products"."updated_at" FROM "products" WHERE "products"."id" = ANY(ARRAY[('00000000-0000-4000-8000-0000000000' || :p)::uuid]);
BEGIN;
SELECT "order_ledger"."order_id", "order_ledger"."outcome", "order_ledger"."reason", "order_ledger"."created_at", "order_ledger"."updated_at", "order_ledger"."released_at" FROM "order_ledger" WHERE "order_ledger"."order_id" = gen_random_uuid() LIMIT 1;
SELECT "products"."id", "products"."name", "products"."category", "products"."stock", "products"."price", "products"."created_at", "products"."updated_at" FROM "products" WHERE "products"."id" = ANY(ARRAY[('00000000-0000-4000-8000-0000000000' || :p)::uuid]) ORDER BY "products"."id" ASC FOR UPDATE;
UPDATE "products" SET "stock" = "stock" - :qty, "updated_at" = CURRENT_TIMESTAMP WHERE "products"."id" = ('00000000-0000-4000-8000-0000000000' || :p)::uuid;
INSERT INTO order_ledger (order_id, outcome, reason) VALUES (gen_random_uuid(), 'APPLIED', '') ON CONFLICT (order_id) DO NOTHING RETURNING order_id
\gset
INSERT INTO "order_ledger_lines" ("order_id", "product_id", "quantity") VALUES (:order_id, ('00000000-0000-4000-8000-0000000000' || :p)::uuid, :qty) RETURNING "order_id", "product_id";
COMMIT;
