-- The shop's sales history: one row per line of an order. A product page
-- shows where the product ranks among the best sellers, and working that
-- out means totalling every line of every order: a real query that costs
-- the database milliseconds of work, the cost a cache saves on each hit.
--
-- 60,000 lines, made deterministically (no random()), so every lab sees the
-- same ranks. Popular products sell more: a product id is drawn from a
-- pseudo-random x in [0, 1) as 1 + 1000 x^2, so low ids (the browse load's
-- hot set, 1 to 20) are the best sellers.
--
-- No index: ranking one product needs every product's total anyway.
CREATE TABLE order_lines (
    order_id   bigint  NOT NULL,
    product_id bigint  NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0)
);

INSERT INTO order_lines (order_id, product_id, quantity)
SELECT g / 3 + 1,
       1 + floor(1000 * power(((g * 2654435761) % 4294967296)::float8 / 4294967296, 2))::bigint,
       1 + (g * 31) % 4
FROM generate_series(0, 59999) AS g;
