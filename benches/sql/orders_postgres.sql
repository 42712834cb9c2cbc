-- The benchmark `orders` table (scripts/bench.sh), generated deterministically in SQL: psql -v rows=N -f this.sql
CREATE TABLE orders (
  id bigint PRIMARY KEY,
  customer_id int NOT NULL,
  email varchar(255) NOT NULL,
  name varchar(100),
  amount numeric(12,2) NOT NULL,
  status varchar(20) NOT NULL,
  created_at timestamp NOT NULL,
  updated_at timestamp,
  is_active boolean NOT NULL,
  note text
);
INSERT INTO orders
SELECT g,
       (g * 7919) % 100000,
       'customer' || ((g * 7919) % 100000) || '@example.com',
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'Name ' || (g % 5000) || CASE WHEN g % 7 = 0 THEN ' Zoë Müller' ELSE '' END END,
       ((g * 37) % 100000) / 100.0,
       (ARRAY['pending','paid','shipped','delivered','cancelled'])[1 + g % 5],
       '2024-01-01'::timestamp + (g % 31536000) * interval '1 second',
       CASE WHEN g % 3 = 0 THEN NULL ELSE '2024-06-01'::timestamp + (g % 1000000) * interval '1 second' END,
       g % 4 <> 0,
       CASE WHEN g % 5 = 0 THEN 'note ' || g || ' — ünïcødé ✓' ELSE NULL END
FROM generate_series(1::bigint, :rows) g;

