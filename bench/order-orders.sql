-- One order's statements on the order database, in order, as captured with
-- log_statement = 'all' (bench/order-capture.txt, `scripts/bench.sh
-- capture`): the order, its line and its outbox record in one statement, the
-- relay's claim, the Consumer's verdict, and the relay's mark-sent. A first
-- request makes no look-up of its idempotency key. The services send arrays
-- of one (a lone order); the order id is made in each statement from
-- pgbench's random numbers :hi and :lo, and the insert also returns its
-- outbox record's id (the relay learns it from its claim) so that mark-sent
-- marks this order's record.
-- :user_id is given by scripts/bench.sh (-D); the payload is the captured one.
\set key random(1, 9000000000000000)
\set qty random(1, 3)
\set p random(10, 29)
\set hi random(0, 4294967295)
\set lo random(0, 281474976710655)
WITH new_orders AS ( INSERT INTO orders (id, user_id, status, total, status_reason, idempotency_key, request_fingerprint, created_at, updated_at) SELECT id, user_id, status, total, NULL, NULLIF(key, ''), NULLIF(fp, ''), at, at FROM unnest(ARRAY[(lpad(to_hex(:hi::int8), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(:lo::int8), 12, '0'))::uuid], ARRAY[:user_id::uuid], ARRAY['PENDING'], ARRAY[3.00]::numeric[], ARRAY['pgbench-' || :key], ARRAY['30295c0011d11947df674ffaa14365d4975dda7bc3099a311e9a24b5e9117f15'], ARRAY[now()]) AS t(id, user_id, status, total, key, fp, at) ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id), new_items AS ( INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price) SELECT i.order_id, i.line_no, i.product_id, i.quantity, i.unit_price FROM unnest(ARRAY[(lpad(to_hex(:hi::int8), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(:lo::int8), 12, '0'))::uuid], ARRAY[0]::int2[], ARRAY[('00000000-0000-4000-8000-0000000000' || :p)::uuid], ARRAY[:qty]::int4[], ARRAY[1.50]::numeric[]) AS i(order_id, line_no, product_id, quantity, unit_price) JOIN new_orders n ON n.id = i.order_id), new_outbox AS ( INSERT INTO outbox (order_id, event_type, payload, trace_context, created_at, attempts) SELECT e.order_id, e.event_type, e.payload, e.tc::jsonb, now(), 0 FROM unnest(ARRAY[(lpad(to_hex(:hi::int8), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(:lo::int8), 12, '0'))::uuid], ARRAY['order.created'], ARRAY['\x0a2430316132343332332d643130632d373231342d626239322d646266393462373266623132122430316132343332332d636135302d373065392d613131382d6530366636323738663463361a2e0a2430316132343332332d636364612d373035312d623135662d66623036363861626564353610021a04312e35302204332e30302a0c08def8ccd80610a0f4ffe201'::bytea], ARRAY['{}']) AS e(order_id, event_type, payload, tc) JOIN new_orders n ON n.id = e.order_id RETURNING id) SELECT id AS outbox_id FROM new_outbox
\gset
UPDATE outbox SET claimed_until = now() + 15000 * interval '1 millisecond' WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED) RETURNING *;
UPDATE orders o SET status = v.status, updated_at = now(), status_reason = COALESCE(NULLIF(v.reason, ''), o.status_reason) FROM unnest(ARRAY[(lpad(to_hex(:hi::int8), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(:lo::int8), 12, '0'))::uuid], ARRAY['CONFIRMED'], ARRAY['']) AS v(id, status, reason) WHERE o.id = v.id AND o.status = 'PENDING' RETURNING o.id;
UPDATE outbox SET sent_at = now(), attempts = attempts + 1, last_error = NULL, claimed_until = NULL WHERE id = ANY(ARRAY[:outbox_id::int8]);
