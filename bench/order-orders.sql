-- One order's statements on the order database, in order, as captured with
-- log_statement = 'all' (bench/order-capture.txt): the idempotency look-up,
-- the create transaction (order, item, outbox record), the relay's claim and
-- mark-sent, and the Consumer's CONFIRMED transaction. :user_id is given by
-- scripts/bench.sh (-D); the payload is the captured one.
\set key random(1, 9000000000000000)
\set qty random(1, 3)
SELECT "orders"."id", "orders"."user_id", "orders"."status", "orders"."total", "orders"."status_reason", "orders"."idempotency_key", "orders"."request_fingerprint", "orders"."created_at", "orders"."updated_at" FROM "orders" WHERE "orders"."user_id" = :user_id AND "orders"."idempotency_key" = ('pgbench-' || :key) LIMIT 1;
BEGIN;
INSERT INTO "orders" ("id", "user_id", "status", "total", "status_reason", "idempotency_key", "request_fingerprint", "created_at", "updated_at") VALUES (gen_random_uuid(), :user_id, 'PENDING', 3.00, NULL, ('pgbench-' || :key), '531a6e0463809ea17cbfd3f98f0e892864d67fdd1628d29e2f538f1672f6eb3f', now(), now()) RETURNING "id" AS order_id
\gset
INSERT INTO "order_items" ("order_id", "line_no", "product_id", "quantity", "unit_price") VALUES (:order_id, 0, '00000000-0000-4000-8000-000000000010', :qty, 1.50);
INSERT INTO "outbox" ("order_id", "event_type", "payload", "trace_context", "created_at", "sent_at", "attempts", "last_error", "failed_at", "claimed_until") VALUES (:order_id, 'order.created', '\x0a2430316132333563342d366463662d373432622d616633332d636563616661663161633364122430316132333563342d353531632d373730392d383535622d3134633166613666353561631a2e0a2430316132333563342d363739362d373236372d623939642d35336665313134656435393110021a04312e35302204332e30302a0c08fb9fbfd80610f8b5e9a301'::bytea, '{}', now(), NULL, 0, NULL, NULL, NULL) RETURNING "id" AS outbox_id
\gset
COMMIT;
UPDATE outbox SET claimed_until = now() + 15000 * interval '1 millisecond' WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *;
UPDATE "outbox" SET "sent_at" = now(), "attempts" = "attempts" + 1, "last_error" = NULL, "claimed_until" = NULL WHERE "outbox"."id" IN (:outbox_id);
BEGIN;
SELECT "orders"."id", "orders"."user_id", "orders"."status", "orders"."total", "orders"."status_reason", "orders"."idempotency_key", "orders"."request_fingerprint", "orders"."created_at", "orders"."updated_at" FROM "orders" WHERE "orders"."id" = :order_id LIMIT 1;
SELECT "order_items"."order_id", "order_items"."line_no", "order_items"."product_id", "order_items"."quantity", "order_items"."unit_price" FROM "order_items" WHERE "order_items"."order_id" IN (:order_id) ORDER BY "order_items"."order_id" ASC, "order_items"."line_no" ASC;
UPDATE "orders" SET "status" = 'CONFIRMED', "updated_at" = now() WHERE "orders"."id" = :order_id AND "orders"."status" = 'PENDING';
SELECT "orders"."id", "orders"."user_id", "orders"."status", "orders"."total", "orders"."status_reason", "orders"."idempotency_key", "orders"."request_fingerprint", "orders"."created_at", "orders"."updated_at" FROM "orders" WHERE "orders"."id" = :order_id LIMIT 1;
SELECT "order_items"."order_id", "order_items"."line_no", "order_items"."product_id", "order_items"."quantity", "order_items"."unit_price" FROM "order_items" WHERE "order_items"."order_id" IN (:order_id) ORDER BY "order_items"."order_id" ASC, "order_items"."line_no" ASC;
COMMIT;
