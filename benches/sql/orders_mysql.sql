-- The benchmark `orders` table in MariaDB (scripts/bench.sh mysql), the same shape and values as
-- orders_postgres.sql, generated with MariaDB's sequence engine:
--   { echo "SET @rows = N;"; cat orders_mysql.sql; } | mariadb DATABASE
CREATE TABLE orders (
  id bigint PRIMARY KEY,
  customer_id int NOT NULL,
  email varchar(255) NOT NULL,
  name varchar(100),
  amount decimal(12,2) NOT NULL,
  status varchar(20) NOT NULL,
  created_at datetime NOT NULL,
  updated_at datetime,
  is_active boolean NOT NULL,
  note text
) DEFAULT CHARSET = utf8mb4;
SET @sql = CONCAT('INSERT INTO orders SELECT seq,
       (seq * 7919) % 100000,
       CONCAT(''customer'', (seq * 7919) % 100000, ''@example.com''),
       CASE WHEN seq % 10 = 0 THEN NULL ELSE CONCAT(''Name '', seq % 5000, CASE WHEN seq % 7 = 0 THEN '' Zoë Müller'' ELSE '''' END) END,
       ((seq * 37) % 100000) / 100.0,
       ELT(1 + seq % 5, ''pending'', ''paid'', ''shipped'', ''delivered'', ''cancelled''),
       ''2024-01-01'' + INTERVAL (seq % 31536000) SECOND,
       CASE WHEN seq % 3 = 0 THEN NULL ELSE ''2024-06-01'' + INTERVAL (seq % 1000000) SECOND END,
       seq % 4 <> 0,
       CASE WHEN seq % 5 = 0 THEN CONCAT(''note '', seq, '' — ünïcødé ✓'') ELSE NULL END
FROM seq_1_to_', @rows);
PREPARE generate FROM @sql;
EXECUTE generate;
ANALYZE TABLE orders;
