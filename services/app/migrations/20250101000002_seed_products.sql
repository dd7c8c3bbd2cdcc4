-- 1,000 products with stable, deterministic names and prices, so every
-- lab (and every test) sees the same catalogue.

INSERT INTO products (id, name, price_cents)
SELECT g,
       (ARRAY['Red', 'Blue', 'Green', 'Small', 'Large', 'Vintage', 'Smart', 'Quiet'])[1 + g % 8]
       || ' '
       || (ARRAY['Mug', 'Lamp', 'Chair', 'Kettle', 'Backpack', 'Notebook', 'Clock', 'Plant', 'Scarf', 'Speaker'])[1 + (g / 8) % 10]
       || ' #' || g,
       99 + (g * 7919) % 50000
FROM generate_series(1, 1000) AS g;
