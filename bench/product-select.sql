-- The inventory's product read behind GET /products/{id}, exactly as
-- captured (see BENCHMARKS.md); pgbench -M prepared makes :id a parameter.
\set p random(10, 29)
SELECT "products"."id", "products"."name", "products"."category", "products"."stock", "products"."price", "products"."created_at", "products"."updated_at" FROM "products" WHERE "products"."id" = ('00000000-0000-4000-8000-0000000000' || :p)::uuid LIMIT 1;
