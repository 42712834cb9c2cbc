#!/usr/bin/env bash
# Throughput as a ratio to the raw database limit, measured side by side in one run.
#
#   scripts/bench.sh [sqlite|postgres|pipeline|forecast|mysql|micro|all|readme] [ROWS]
#
# Each section prints its figures as `name=value` lines and keeps them, with the command, date,
# commit and machine, in benches/results/SECTION.txt; the tables of benches/README.md are then
# regenerated from those files by scripts/bench_readme.py (`readme` does only that).
#
# sqlite:   SQLite → SQLite, 1,000,000 demo `orders` rows by default. The raw limit is SQLite copying
#           the table itself (ATTACH + INSERT … SELECT in one transaction, via Python's sqlite3).
# postgres: PostgreSQL → PostgreSQL, 2,000,000 rows of benches/sql/orders_postgres.sql by default.
#           The raw limit is `psql COPY … TO STDOUT (FORMAT binary) | psql COPY … FROM STDIN` into an
#           empty table with the same primary key.
# pipeline: PostgreSQL → PostgreSQL through `barge run`: a pipeline with computed columns, and one
#           with an error budget (savepoint per batch), against `barge copy`, all verified.
# forecast: `barge bench` on a 200,000-row sample forecasts the full copy of the table; the full
#           copy then runs, and the error is printed (every engine pair: SQLite → SQLite,
#           PostgreSQL → PostgreSQL without and with TLS, MariaDB → PostgreSQL, PostgreSQL →
#           MariaDB, MariaDB → MariaDB).
# mysql:    MariaDB → PostgreSQL and PostgreSQL → MariaDB, 2,000,000 rows of
#           benches/sql/orders_mysql.sql. The references are text pipes: `mariadb --quick -B -e
#           "SELECT …" | psql -c "COPY orders FROM STDIN"` and `psql -c "COPY … TO STDOUT" | mariadb
#           -e "LOAD DATA LOCAL INFILE '/dev/stdin' …"`, into empty tables with the primary key.
#           Peers, measured when installed: pgloader (`apt-get install pgloader`) and reladiff with
#           its drivers (`pip install 'reladiff[mysql,postgresql]'`); a peer run that fails is
#           reported and not recorded.
# memory:   peak RSS of a verified PostgreSQL → PostgreSQL copy of wide rows, without tuning: a
#           200,000-row table of 10 KB texts, and a table of fifty 50 MB bytea values (goal
#           ≤ 150 MB each, as for narrow rows).
# soak:     the crash test of the suite (a private PostgreSQL target stopped with -m immediate after
#           N committed ranges, then --resume, checked row by row) over 50 kill points.
# cdc:      change capture (`barge sync`) on private servers it starts: PostgreSQL → PostgreSQL apply
#           of a backlog of ROWS changes (200,000 by default; single-row update transactions, then
#           1000-row insert transactions) against PostgreSQL's own logical replication
#           (CREATE PUBLICATION / CREATE SUBSCRIPTION between two clusters, catching up the same
#           backlog); MariaDB → PostgreSQL apply rate of ROWS single-row update transactions; and
#           the bulk phase of a first `sync` against `barge copy` of the same 1,000,000-row table.
# migrate:  the write-freeze windows of `barge migrate` (blue-green) on private servers it starts,
#           PostgreSQL → PostgreSQL and MariaDB → PostgreSQL, each three times: a fresh migration of
#           ROWS rows (100,000 by default) validating while an application user commits single-row
#           inserts at 1,000 rows/s on the source; `switchover` (its `freeze_ms`); the same writer
#           on the target; `rollback` (its `freeze_ms`); `complete`. Medians are recorded.
# distributed: PostgreSQL → PostgreSQL of ROWS rows (2,000,000) by one `barge run --workers 4`
#           against `run --distributed` with 1, 2 and 4 `barge worker` processes of 4, 2 and 1
#           slots (the same total), each a median of three; and the claims per second the state
#           store sustains (benches/queue_claims.rs: 20,000 ranges claimed and completed by 4
#           connections).
# micro:    the criterion micro-benchmarks of benches/hot_paths.rs (`cargo bench -p barge-benches`).
# The end-to-end sections alternate raw / barge --no-verify / barge (verified) for three rounds and
# print medians, ratios and barge's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
case "$what" in
  sqlite|postgres|pipeline|forecast|mysql|memory|soak|cdc|migrate|distributed|micro|all) ;;
  readme) exec python3 scripts/bench_readme.py ;;
  *) echo "usage: scripts/bench.sh [sqlite|postgres|pipeline|forecast|mysql|memory|soak|cdc|migrate|distributed|micro|all|readme] [ROWS]" >&2; exit 2 ;;
esac
cargo build --release --quiet
barge=$PWD/target/release/barge
work=target/bench
mkdir -p "$work"

median() { sort -n | sed -n 2p; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

# Runs barge with the given arguments; prints "seconds peak_kb" (seconds from barge's own JSON).
timed_barge() {
  /usr/bin/time -f "%M" -o "$work/rss" "$barge" "$@" --json 2>/dev/null >"$work/out.json"
  python3 -c "import json; print(round(json.load(open('$work/out.json'))['seconds'], 3), end=' ')"
  cat "$work/rss"
}

rounds() { # $1 name, then three commands as functions: raw, barge_nv, barge_v
  local name=$1
  : >"$work/raw.txt"; : >"$work/nv.txt"; : >"$work/v.txt"; : >"$work/rss.txt"
  for round in 1 2 3; do
    "$2" >>"$work/raw.txt"
    read -r s kb < <("$3"); echo "$s" >>"$work/nv.txt"; echo "$kb" >>"$work/rss.txt"
    read -r s kb < <("$4"); echo "$s" >>"$work/v.txt"; echo "$kb" >>"$work/rss.txt"
    echo "$name round $round: raw $(tail -1 "$work/raw.txt")s, barge --no-verify $(tail -1 "$work/nv.txt")s, barge verified $(tail -1 "$work/v.txt")s" >&2
  done
  local raw nv v
  raw=$(median <"$work/raw.txt"); nv=$(median <"$work/nv.txt"); v=$(median <"$work/v.txt")
  echo "${name}_raw_seconds=$raw"
  echo "${name}_barge_no_verify_seconds=$nv"
  echo "${name}_barge_verified_seconds=$v"
  echo "${name}_ratio=$(ratio "$nv" "$raw")"
  echo "${name}_verified_ratio=$(ratio "$v" "$raw")"
  echo "${name}_peak_rss_mb=$(( $(sort -n "$work/rss.txt" | tail -1) / 1024 ))"
}

# --- SQLite → SQLite ---------------------------------------------------------------------------
sqlite_raw() {
  python3 - "$work/sqlite/source.db" "$work/sqlite/raw.db" <<'PY'
import os, sqlite3, sys, time
src, dst = sys.argv[1], sys.argv[2]
if os.path.exists(dst):
    os.remove(dst)
ddl = sqlite3.connect(src).execute("SELECT sql FROM sqlite_schema WHERE name = 'orders'").fetchone()[0]
conn = sqlite3.connect(dst, isolation_level=None)
conn.execute(ddl)
conn.execute(f"ATTACH '{src}' AS s")
start = time.time()
conn.execute("BEGIN")
conn.execute("INSERT INTO main.orders SELECT * FROM s.orders")
conn.execute("COMMIT")
print(f"{time.time() - start:.3f}")
PY
}
sqlite_barge() { rm -f "$work/sqlite/target.db"; timed_barge copy --from "sqlite://$work/sqlite/source.db" --to "sqlite://$work/sqlite/target.db" --table orders "$@"; }
sqlite_nv() { sqlite_barge --no-verify; }
sqlite_v() { sqlite_barge; }

section_sqlite() {
  echo "sqlite: generating $rows demo rows" >&2
  "$barge" demo --rows "$rows" --dir "$work/sqlite" --json >/dev/null 2>&1
  echo "sqlite_rows=$rows"
  rounds sqlite sqlite_raw sqlite_nv sqlite_v
}

# --- PostgreSQL → PostgreSQL -------------------------------------------------------------------
pg=${BARGE_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
pg_host_args=(-h 127.0.0.1 -p 5432 -U postgres -q)
my_args=(--default-character-set=utf8mb4 --protocol=tcp -h 127.0.0.1 -P 3306 -uroot)
my_url=${BARGE_BENCH_MYSQL:-mysql://root@127.0.0.1:3306}
# Every PostgreSQL measurement starts from a checkpoint, so that flushing the previous run's WAL
# (each copy writes ~2x the table) does not land on whichever command runs next.
# It also vacuums the raw pipe's target (a freshly loaded table draws an autovacuum worker, which
# would otherwise land on the next command) and waits for any autovacuum worker still running.
pg_settle() {
  psql "${pg_host_args[@]}" -d barge_bench_dst -c "VACUUM ANALYZE orders" >/dev/null 2>&1 || true
  while [ "$(psql "${pg_host_args[@]}" -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND query <> ''")" != 0 ]; do
    sleep 0.2
  done
  psql "${pg_host_args[@]}" -d postgres -c "CHECKPOINT" >/dev/null
}
pg_fresh() { # empty databases of these names
  for db in "$@"; do
    psql "${pg_host_args[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  done
}
pg_drop() { for db in "$@"; do psql "${pg_host_args[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null; done; }
pg_orders() { # $1 database, $2 rows: the benchmark table, settled (visibility map, statistics) so
  # that autovacuum does not wake during a round
  psql "${pg_host_args[@]}" -d "$1" -v rows="$2" -f benches/sql/orders_postgres.sql >/dev/null 2>&1
  psql "${pg_host_args[@]}" -d "$1" -c "VACUUM ANALYZE orders" >/dev/null
}
pg_raw() {
  psql "${pg_host_args[@]}" -d barge_bench_dst -c "TRUNCATE orders" >/dev/null
  pg_settle
  local start end
  start=$(date +%s.%N)
  psql "${pg_host_args[@]}" -d barge_bench_src -c "COPY orders TO STDOUT (FORMAT binary)" \
    | psql "${pg_host_args[@]}" -d barge_bench_dst -c "COPY orders FROM STDIN (FORMAT binary)" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}
pg_barge() {
  psql "${pg_host_args[@]}" -d barge_bench_copy -c "DROP TABLE IF EXISTS orders" >/dev/null
  pg_settle
  timed_barge copy --from "$pg/barge_bench_src" --to "$pg/barge_bench_copy" --table orders "$@"
}
pg_nv() { pg_barge --no-verify; }
pg_v() { pg_barge; }

section_postgres() {
  pg_fresh barge_bench_src barge_bench_dst barge_bench_copy
  echo "postgres: generating $rows rows" >&2
  pg_orders barge_bench_src "$rows"
  pg_dump -h 127.0.0.1 -p 5432 -U postgres -s -t orders barge_bench_src | psql "${pg_host_args[@]}" -d barge_bench_dst >/dev/null
  echo "postgres_rows=$rows"
  echo "postgres_table_mb=$(psql "${pg_host_args[@]}" -d barge_bench_src -Atc "SELECT pg_table_size('orders') / 1048576")"
  rounds pg_to_pg pg_raw pg_nv pg_v
  pg_drop barge_bench_src barge_bench_dst barge_bench_copy
}

# --- Pipelines: the cost of transforms and of row isolation -----------------------------------
# PostgreSQL → PostgreSQL, verified each time: `barge copy` against `barge run` of a pipeline with
# four computed columns, and against `barge run` with an error budget (every batch in a savepoint,
# ready to isolate refused rows; none are refused here).
pipe_file() { # $1 name, $2 extra toml
  cat >"$work/$1.toml" <<TOML
source = "$pg/barge_bench_src?sslmode=disable"
target = "$pg/barge_bench_copy?sslmode=disable"
source_timezone = "UTC"
[defaults]
if_exists = "truncate"
$2
TOML
}
pipe_copy() { # the same URLs as the pipelines (no TLS)
  psql "${pg_host_args[@]}" -d barge_bench_copy -c "DROP TABLE IF EXISTS orders" >/dev/null
  pg_settle
  timed_barge copy --from "$pg/barge_bench_src?sslmode=disable" --to "$pg/barge_bench_copy?sslmode=disable" --table orders
}
pipe_run() {
  psql "${pg_host_args[@]}" -d barge_bench_copy -c "DROP TABLE IF EXISTS orders" >/dev/null
  pg_settle
  timed_barge run "$work/$1.toml"
}

section_pipeline() {
  pg_fresh barge_bench_src barge_bench_copy
  echo "pipeline: generating $rows rows" >&2
  pg_orders barge_bench_src "$rows"
  pipe_file transform '[[tables]]
source = "orders"
columns = [
  { name = "email", expr = "lower(email)" },
  { name = "name", expr = "trim(name)" },
  { name = "status", expr = "upper(status)" },
  { name = "updated_at", expr = "coalesce(updated_at, created_at)" },
]'
  pipe_file budget 'error_budget = 1000
[[tables]]
source = "orders"'
  : >"$work/copy.txt"; : >"$work/tx.txt"; : >"$work/budget.txt"; : >"$work/rss.txt"
  for round in 1 2 3; do
    read -r s kb < <(pipe_copy); echo "$s" >>"$work/copy.txt"; echo "$kb" >>"$work/rss.txt"
    read -r s kb < <(pipe_run transform); echo "$s" >>"$work/tx.txt"; echo "$kb" >>"$work/rss.txt"
    read -r s kb < <(pipe_run budget); echo "$s" >>"$work/budget.txt"; echo "$kb" >>"$work/rss.txt"
    echo "pipeline round $round: copy $(tail -1 "$work/copy.txt")s, transforms $(tail -1 "$work/tx.txt")s, error budget $(tail -1 "$work/budget.txt")s" >&2
  done
  c=$(median <"$work/copy.txt"); t=$(median <"$work/tx.txt"); b=$(median <"$work/budget.txt")
  echo "pipeline_rows=$rows"
  echo "pipeline_copy_verified_seconds=$c"
  echo "pipeline_transforms_verified_seconds=$t"
  echo "pipeline_error_budget_verified_seconds=$b"
  echo "pipeline_transforms_ratio_to_copy=$(ratio "$t" "$c")"
  echo "pipeline_error_budget_ratio_to_copy=$(ratio "$b" "$c")"
  echo "pipeline_peak_rss_mb=$(( $(sort -n "$work/rss.txt" | tail -1) / 1024 ))"
  pg_drop barge_bench_src barge_bench_copy
}

# --- Forecast: `barge bench` on a sample against the measured full copy ------------------------
# Every engine pair: `barge bench --sample-rows 200000 --workers 1,2` forecasts the full verified
# copy; then the full copy runs with the worker count the forecast chose.
forecast_pair() { # $1 name, $2 from, $3 to (for bench), $4 to (for the full copy), $5 reset command
  eval "$5"
  "$barge" bench --from "$2" --to "$3" --table orders --sample-rows 200000 --workers 1,2 --json 2>/dev/null >"$work/bench.json"; cp "$work/bench.json" "$work/bench-$1.json"
  local forecast best
  forecast=$(python3 -c "import json; print(round(json.load(open('$work/bench.json'))['forecasts'][0]['forecast_seconds'], 3))")
  best=$(python3 -c "import json; print(json.load(open('$work/bench.json'))['forecasts'][0]['best_workers'])")
  eval "$5"
  local measured
  read -r measured _ < <(timed_barge copy --from "$2" --to "$4" --table orders --workers "$best")
  echo "${1}_forecast_seconds=$forecast"
  echo "${1}_forecast_workers=$best"
  echo "${1}_measured_seconds=$measured"
  echo "${1}_forecast_error=$(python3 -c "print(f'{($forecast - $measured) / $measured * 100:+.1f}%')")"
}

section_forecast() {
  pg_fresh barge_bench_src barge_bench_copy
  echo "forecast: generating $rows rows" >&2
  pg_orders barge_bench_src "$rows"
  echo "forecast_rows=$rows"
  forecast_pair pg_to_pg "$pg/barge_bench_src?sslmode=disable" "$pg/barge_bench_copy?sslmode=disable" "$pg/barge_bench_copy?sslmode=disable" \
    'psql "${pg_host_args[@]}" -d barge_bench_copy -c "DROP TABLE IF EXISTS orders" >/dev/null; pg_settle'
  # The same over TLS (sslmode=prefer, the default, against the local server's certificate).
  forecast_pair pg_to_pg_tls "$pg/barge_bench_src" "$pg/barge_bench_copy" "$pg/barge_bench_copy" \
    'psql "${pg_host_args[@]}" -d barge_bench_copy -c "DROP TABLE IF EXISTS orders" >/dev/null; pg_settle'
  "$barge" demo --rows "$rows" --dir "$work/forecast" --json >/dev/null 2>&1
  forecast_pair sqlite_to_sqlite "sqlite://$work/forecast/source.db" "sqlite://$work/forecast/target.db" \
    "sqlite://$work/forecast/target.db" 'rm -f "$work/forecast/target.db"'
  # The MariaDB pairs, from the same rows generated in MariaDB.
  for db in barge_bench_src barge_bench_copy; do
    mariadb "${my_args[@]}" -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db CHARACTER SET utf8mb4"
  done
  { echo "SET @rows = $rows;"; cat benches/sql/orders_mysql.sql; } | mariadb "${my_args[@]}" barge_bench_src >/dev/null
  local my_reset='mariadb "${my_args[@]}" barge_bench_copy -e "DROP TABLE IF EXISTS orders"'
  forecast_pair my_to_pg "$my_url/barge_bench_src" "$pg/barge_bench_copy?sslmode=disable" "$pg/barge_bench_copy?sslmode=disable" \
    'psql "${pg_host_args[@]}" -d barge_bench_copy -c "DROP TABLE IF EXISTS orders" >/dev/null; pg_settle'
  forecast_pair pg_to_my "$pg/barge_bench_src?sslmode=disable" "$my_url/barge_bench_copy" "$my_url/barge_bench_copy" "$my_reset"
  forecast_pair my_to_my "$my_url/barge_bench_src" "$my_url/barge_bench_copy" "$my_url/barge_bench_copy" "$my_reset"
  for db in barge_bench_src barge_bench_copy; do mariadb "${my_args[@]}" -e "DROP DATABASE IF EXISTS $db"; done
  pg_drop barge_bench_src barge_bench_copy
}

# --- MariaDB ↔ PostgreSQL ---------------------------------------------------------------------
columns="id, customer_id, email, name, amount, status, created_at, updated_at, is_active, note"
my_to_pg_raw() {
  psql "${pg_host_args[@]}" -d barge_bench_dst -c "TRUNCATE orders" >/dev/null
  pg_settle
  local start end
  start=$(date +%s.%N)
  mariadb "${my_args[@]}" --quick -N -B barge_bench_src -e "SELECT $columns FROM orders" \
    | psql "${pg_host_args[@]}" -d barge_bench_dst -c "COPY orders FROM STDIN (NULL 'NULL')" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}
my_to_pg_barge() {
  psql "${pg_host_args[@]}" -d barge_bench_copy -c "DROP TABLE IF EXISTS orders" >/dev/null
  pg_settle
  timed_barge copy --from "$my_url/barge_bench_src" --to "$pg/barge_bench_copy?sslmode=disable" --table orders "$@"
}
my_to_pg_nv() { my_to_pg_barge --no-verify; }
my_to_pg_v() { my_to_pg_barge; }
pg_to_my_raw() {
  mariadb "${my_args[@]}" barge_bench_dst -e "TRUNCATE orders"
  local start end
  start=$(date +%s.%N)
  psql "${pg_host_args[@]}" -d barge_bench_copy -c "COPY (SELECT id, customer_id, email, name, amount, status, created_at, updated_at, is_active::int, note FROM orders) TO STDOUT" \
    | mariadb "${my_args[@]}" --local-infile=1 barge_bench_dst -e "LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE orders CHARACTER SET utf8mb4 ($columns)"
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}
pg_to_my_barge() {
  mariadb "${my_args[@]}" barge_bench_copy -e "DROP TABLE IF EXISTS orders"
  timed_barge copy --from "$pg/barge_bench_copy?sslmode=disable" --to "$my_url/barge_bench_copy" --table orders "$@"
}
pg_to_my_nv() { pg_to_my_barge --no-verify; }
pg_to_my_v() { pg_to_my_barge; }

section_mysql() {
  for db in barge_bench_src barge_bench_dst barge_bench_copy; do
    mariadb "${my_args[@]}" -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db CHARACTER SET utf8mb4"
  done
  pg_fresh barge_bench_dst barge_bench_copy
  echo "mysql: generating $rows rows" >&2
  { echo "SET @rows = $rows;"; cat benches/sql/orders_mysql.sql; } | mariadb "${my_args[@]}" barge_bench_src >/dev/null
  psql "${pg_host_args[@]}" -d barge_bench_dst -f benches/sql/orders_postgres.sql -v rows=0 >/dev/null 2>&1
  # The raw pipe's target: the same table, empty (the generator with @rows = 0 would fail on
  # seq_1_to_0, so only its CREATE TABLE is used).
  sed -n '/^CREATE TABLE/,/;$/p' benches/sql/orders_mysql.sql | mariadb "${my_args[@]}" barge_bench_dst
  echo "mysql_rows=$rows"
  rounds my_to_pg my_to_pg_raw my_to_pg_nv my_to_pg_v
  cp "$work/nv.txt" "$work/nv.txt.my_to_pg"
  # PostgreSQL → MariaDB reads the table barge just copied into PostgreSQL.
  rounds pg_to_my pg_to_my_raw pg_to_my_nv pg_to_my_v
  if command -v pgloader >/dev/null 2>&1; then
    # pgloader (Debian's package) for MariaDB → PostgreSQL, three runs, median.
    : >"$work/pgl.txt"
    for round in 1 2 3; do
      psql "${pg_host_args[@]}" -d postgres -c "DROP DATABASE IF EXISTS barge_bench_pgl" -c "CREATE DATABASE barge_bench_pgl" >/dev/null
      pg_settle
      /usr/bin/time -f "%e %M" -o "$work/pgl.time" pgloader --quiet "mysql://root@127.0.0.1:3306/barge_bench_src" \
        "postgresql://postgres@127.0.0.1:5432/barge_bench_pgl" >"$work/pgl.log" 2>&1
      cat "$work/pgl.time" >>"$work/pgl.txt"
      echo "pgloader round $round: $(cat "$work/pgl.time")" >&2
    done
    pgl=$(cut -d' ' -f1 "$work/pgl.txt" | median)
    echo "pgloader_seconds=$pgl"
    echo "pgloader_peak_rss_mb=$(( $(cut -d' ' -f2 "$work/pgl.txt" | sort -n | tail -1) / 1024 ))"
    echo "my_to_pg_ratio_vs_pgloader=$(ratio "$(median <"$work/nv.txt.my_to_pg")" "$pgl")"
    psql "${pg_host_args[@]}" -d postgres -c "DROP DATABASE IF EXISTS barge_bench_pgl" >/dev/null
  fi
  if command -v reladiff >/dev/null 2>&1; then
    # Cross-engine verification of the same table: barge verify against reladiff, on identical
    # tables and after changing 10 rows on one side. reladiff's MySQL URL needs utf8mb4 set.
    verify_times() { # $1 label
      local s e
      pg_settle
      s=$(date +%s.%N)
      "$barge" verify --from "$my_url/barge_bench_src" --to "$pg/barge_bench_copy?sslmode=disable" --table orders >/dev/null 2>&1 || true
      e=$(date +%s.%N); echo "verify_${1}_barge_seconds=$(python3 -c "print(f'{$e - $s:.3f}')")"
      s=$(date +%s.%N)
      reladiff "mysql://root@127.0.0.1:3306/barge_bench_src?init_command=SET%20NAMES%20utf8mb4" orders \
        "postgresql://postgres@127.0.0.1:5432/barge_bench_copy" orders -k id \
        -c customer_id -c email -c name -c amount -c status -c created_at -c updated_at -c note >"$work/reladiff.out" 2>&1 || true
      e=$(date +%s.%N)
      # reladiff prints differing rows as +/- lines; an ERROR line (a missing driver, a refused
      # connection) means it compared nothing, and its time is not a measurement.
      local reported
      reported=$(grep -c '^[-+]' "$work/reladiff.out" || true)
      if grep -q 'ERROR' "$work/reladiff.out" || [ "$reported" -ne "$2" ]; then
        echo "reladiff failed ($2 differing rows expected, $reported reported), not recorded:" >&2
        tail -5 "$work/reladiff.out" >&2
        return 1
      fi
      echo "verify_${1}_reladiff_seconds=$(python3 -c "print(f'{$e - $s:.3f}')")"
      echo "verify_${1}_reladiff_rows_reported=$reported"
    }
    if verify_times identical 0; then
      psql "${pg_host_args[@]}" -d barge_bench_copy -c "UPDATE orders SET status = 'changed' WHERE id % 200000 = 7" >/dev/null
      # Each changed row is reported twice (- then +).
      verify_times changed_10 20 || true
    fi
  fi
  for db in barge_bench_src barge_bench_dst barge_bench_copy; do
    mariadb "${my_args[@]}" -e "DROP DATABASE IF EXISTS $db"
    psql "${pg_host_args[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null
  done
}

# --- Micro-benchmarks (criterion) --------------------------------------------------------------
section_micro() {
  cargo bench -p barge-benches --quiet >&2
  python3 - <<'PY'
import glob, json, os
for path in sorted(glob.glob("target/criterion/*/*/new/benchmark.json")):
    meta = json.load(open(path))
    estimates = json.load(open(os.path.join(os.path.dirname(path), "estimates.json")))
    ns = estimates["median"]["point_estimate"]
    elements = meta["throughput"]["Elements"]
    name = meta["full_id"].replace("/", "_")
    print(f"micro_{name}_elements={elements}")
    print(f"micro_{name}_ns={ns:.0f}")
    print(f"micro_{name}_per_s={elements / ns * 1e9:.0f}")
PY
}

# --- Memory: wide rows, no tuning ---------------------------------------------------------------
memory_copy() { # $1 name, $2 source database: a verified copy into a fresh database
  pg_fresh barge_bench_memdst
  # Without TLS: this section measures memory (TLS with large values: see benches/README.md).
  read -r s kb < <(timed_barge copy --from "$pg/$2?sslmode=disable" --to "$pg/barge_bench_memdst?sslmode=disable")
  python3 -c "import json; j = json.load(open('$work/out.json')); assert j['ok'], j" >&2
  echo "memory_$1_seconds=$s"
  echo "memory_$1_peak_rss_mb=$(( kb / 1024 ))"
}

section_memory() {
  pg_fresh barge_bench_wide barge_bench_large
  psql "${pg_host_args[@]}" -d barge_bench_wide -qc "CREATE TABLE w (id bigint PRIMARY KEY, payload text NOT NULL);
    INSERT INTO w SELECT i, repeat(md5(i::text), 320) FROM generate_series(1, 200000) i; ANALYZE w" >&2
  psql "${pg_host_args[@]}" -d barge_bench_large -qc "CREATE TABLE b (id bigint PRIMARY KEY, payload bytea NOT NULL);
    INSERT INTO b SELECT i, decode(repeat(md5(i::text), 3276800), 'hex') FROM generate_series(1, 50) i; ANALYZE b" >&2
  echo "memory_wide_rows=200000"
  echo "memory_wide_value_bytes=10240"
  memory_copy wide barge_bench_wide
  echo "memory_large_rows=50"
  echo "memory_large_value_bytes=52428800"
  memory_copy large barge_bench_large
  pg_drop barge_bench_wide barge_bench_large barge_bench_memdst
}

# --- Soak: crashes of the target, then --resume --------------------------------------------------
section_soak() {
  local started=$SECONDS
  BARGE_CRASH_POINTS=25 cargo nextest run -p barge-cli --no-fail-fast --no-capture \
    -E 'test(/a_target_crash_after/)' >"$work/soak.log" 2>&1 || { cat "$work/soak.log" >&2; exit 1; }
  echo "soak_kill_points=50"
  echo "soak_exact=$(grep -c 'exact after resume' "$work/soak.log")"
  echo "soak_seconds=$(( SECONDS - started ))"
}

# --- Change capture: private servers -----------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wal_retrieve_retry_interval: the launcher starts a re-enabled subscription's apply worker within
# 100 ms instead of up to 5 s after its last one ended (which would be timed as the native apply).
cdc_pg_start() { # $1 directory, $2 port
  mkdir -p "$1"; chmod 755 "$1"; chown postgres "$1"
  runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$1/data" -U postgres -A trust --no-sync >/dev/null
  runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$1/data" -l "$1/log" -w -o "-p $2 -k $1 \
    -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 \
    -c shared_buffers=256MB -c wal_retrieve_retry_interval=100ms" start >/dev/null
}
cdc_pg_stop() { runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$1/data" -m fast stop >/dev/null || true; }
cdc_cleanup() {
  [ -n "${migrate_pid:-}" ] && kill "$migrate_pid" 2>/dev/null
  cdc_pg_stop "$cdc/pub"; cdc_pg_stop "$cdc/sub"
  [ -n "${cdc_my_pid:-}" ] && kill "$cdc_my_pid" 2>/dev/null && wait "$cdc_my_pid" 2>/dev/null
  rm -rf "$cdc"
}
pub() { psql -h 127.0.0.1 -p "$pub_port" -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }
sub() { psql -h 127.0.0.1 -p "$sub_port" -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
elapsed() { python3 -c "print(round($(now) - $1, 3))"; }
# Seconds until the native subscriber shows marker round $1 (it applies in commit order, so every
# change before the marker is applied then), from ENABLE.
native_catch_up() {
  local t0; t0=$(now)
  sub -d nat -c "ALTER SUBSCRIPTION s ENABLE"
  until [ "$(sub -d nat -c 'SELECT round FROM m')" = "$1" ]; do sleep 0.05; done
  elapsed "$t0"
  sub -d nat -c "ALTER SUBSCRIPTION s DISABLE"
  # The walsender of the disabled subscription goes away before the next backlog is written.
  until [ "$(pub -d src -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 's'")" = 0 ]; do sleep 0.1; done
}
barge_catch_up() { # $1 from, $2 to, $3 state, then more sync arguments: seconds of `sync --until caught-up`
  local t0; t0=$(now)
  "$barge" sync --from "$1" --to "$2" --state "$3" "${@:4}" --until caught-up >/dev/null 2>"$work/sync.err" \
    || { cat "$work/sync.err" >&2; exit 1; }
  elapsed "$t0"
}
section_cdc() {
  cdc=$(mktemp -d /tmp/barge-cdc.XXXXXX); chmod 755 "$cdc"
  trap cdc_cleanup EXIT
  pub_port=$(free_port); cdc_pg_start "$cdc/pub" "$pub_port"
  sub_port=$(free_port); cdc_pg_start "$cdc/sub" "$sub_port"
  local src="postgres://postgres@127.0.0.1:$pub_port/src" brg="postgres://postgres@127.0.0.1:$sub_port/brg"
  pub -d postgres -c "CREATE DATABASE src"; sub -d postgres -c "CREATE DATABASE nat" -c "CREATE DATABASE brg"
  local ddl="CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL); CREATE TABLE m (id int PRIMARY KEY, round int NOT NULL)"
  pub -d src -c "$ddl" -c "INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1, $rows) g" \
    -c "INSERT INTO m VALUES (1, 0)" -c "CREATE PUBLICATION p FOR TABLE t, m" \
    -c "CREATE PROCEDURE upd(n int) LANGUAGE plpgsql AS \$\$ BEGIN FOR i IN 1..n LOOP
          UPDATE t SET v = v + 1 WHERE id = i; COMMIT; END LOOP; END \$\$" \
    -c "CREATE PROCEDURE ins(n int, base int) LANGUAGE plpgsql AS \$\$ BEGIN FOR j IN 0..n / 1000 - 1 LOOP
          INSERT INTO t SELECT base + j * 1000 + g, 1, 'x' FROM generate_series(1, 1000) g; COMMIT; END LOOP; END \$\$"
  sub -d nat -c "$ddl" -c "CREATE SUBSCRIPTION s CONNECTION 'host=127.0.0.1 port=$pub_port dbname=src user=postgres' PUBLICATION p"
  until [ "$(sub -d nat -c "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")" = 0 ]; do sleep 0.2; done
  "$barge" sync --from "$src" --to "$brg" --state "$cdc/state.db" --until caught-up --table t --table m >/dev/null 2>&1
  sub -d nat -c "ALTER SUBSCRIPTION s DISABLE"
  until [ "$(pub -d src -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 's'")" = 0 ]; do sleep 0.1; done
  echo "cdc_changes=$rows"
  local round=0 kind
  for kind in updates inserts; do
    : >"$work/native.txt"; : >"$work/barge.txt"
    for r in 1 2 3; do
      round=$((round + 1))
      if [ "$kind" = updates ]; then pub -d src -c "CALL upd($rows)"; else pub -d src -c "CALL ins($rows, $((round * 10000000)))"; fi
      pub -d src -c "UPDATE m SET round = $round"
      native_catch_up "$round" >>"$work/native.txt"
      barge_catch_up "$src" "$brg" "$cdc/state.db" --table t --table m >>"$work/barge.txt"
      echo "cdc $kind round $r: native $(tail -1 "$work/native.txt")s, barge $(tail -1 "$work/barge.txt")s" >&2
    done
    local native barge_s
    native=$(median <"$work/native.txt"); barge_s=$(median <"$work/barge.txt")
    echo "cdc_${kind}_native_seconds=$native"
    echo "cdc_${kind}_barge_seconds=$barge_s"
    echo "cdc_${kind}_speedup=$(ratio "$native" "$barge_s")"
  done
  # Lag at a steady 5,000 changes/s: sync streams (--json, a status a second) while one session
  # commits single-row updates at that rate for 30 s (synchronous_commit off, so the rate is the
  # source's to keep); each status's lag_seconds from the 5th second on, and the sync process's
  # RSS each second.
  pub -d src -c "CREATE PROCEDURE steady(rate int, secs int) LANGUAGE plpgsql AS \$\$
      DECLARE t0 timestamptz := clock_timestamp(); n bigint := 0;
      BEGIN WHILE clock_timestamp() < t0 + secs * interval '1 second' LOOP
        WHILE n < (extract(epoch FROM clock_timestamp() - t0) * rate)::bigint LOOP
          UPDATE t SET v = v + 1 WHERE id = 1 + (n % $rows); COMMIT; n := n + 1; END LOOP;
        PERFORM pg_sleep(0.005); END LOOP; END \$\$"
  "$barge" sync --from "$src" --to "$brg" --state "$cdc/state.db" --table t --table m --json >"$work/lag.jsonl" 2>/dev/null &
  local sync_pid=$!
  : >"$work/rss.txt"
  ( while kill -0 "$sync_pid" 2>/dev/null; do
      awk '/VmRSS/ {print $2}' "/proc/$sync_pid/status" >>"$work/rss.txt" 2>/dev/null; sleep 1; done ) &
  local sampler=$! t_lag; t_lag=$(now)
  local before; before=$(pub -d src -c "SELECT sum(v) FROM t")
  pub -d src -c "SET synchronous_commit = off" -c "CALL steady(5000, 30)"
  local wrote_s; wrote_s=$(elapsed "$t_lag")
  local wrote; wrote=$(pub -d src -c "SELECT sum(v) - $before FROM t")
  sleep 3
  kill -TERM "$sync_pid"; wait "$sync_pid" || true; wait "$sampler" 2>/dev/null || true
  python3 - "$work/lag.jsonl" "$work/rss.txt" "$wrote" "$wrote_s" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
lags = [l["lag_seconds"] for l in lines[5:-4] if "lag_seconds" in l]
rss = [int(x) / 1024 for x in open(sys.argv[2]).read().split()]
print(f"cdc_lag_rate={round(int(sys.argv[3]) / float(sys.argv[4]))}")
print(f"cdc_lag_median_seconds={statistics.median(lags):.3f}")
print(f"cdc_lag_max_seconds={max(lags):.3f}")
print(f"cdc_lag_rss_start_mb={statistics.median(rss[3:8]):.1f}")
print(f"cdc_lag_rss_end_mb={statistics.median(rss[-6:-1]):.1f}")
PY
  # Both subscribers hold what the source holds (the native one catches up the steady writes).
  pub -d src -c "UPDATE m SET round = 99"
  native_catch_up 99 >/dev/null
  local want; want=$(pub -d src -c "SELECT count(*), sum(v) FROM t")
  [ "$(sub -d brg -c "SELECT count(*), sum(v) FROM t")" = "$want" ] || { echo "barge's copy differs" >&2; exit 1; }
  # MariaDB → PostgreSQL: single-row update transactions from a binlog.
  local my_port; my_port=$(free_port)
  mkdir -p "$cdc/my/tmp"; chown -R mysql "$cdc/my"
  mariadb-install-db --no-defaults --user=mysql --datadir="$cdc/my/data" --tmpdir="$cdc/my/tmp" \
    --auth-root-authentication-method=normal >/dev/null 2>&1
  /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$cdc/my/data" --tmpdir="$cdc/my/tmp" --port="$my_port" --bind-address=127.0.0.1 \
    --socket="$cdc/my/sock" --log-bin=binlog --binlog-format=ROW --binlog-row-image=FULL --server-id=1 \
    --innodb-flush-log-at-trx-commit=2 --innodb-buffer-pool-size=512M >/dev/null 2>&1 &
  cdc_my_pid=$!
  local my=(--protocol=tcp -h 127.0.0.1 -P "$my_port" -uroot)
  until mariadb "${my[@]}" -e 'SELECT 1' >/dev/null 2>&1; do sleep 0.2; done
  mariadb "${my[@]}" <<SQL
CREATE DATABASE src; USE src; CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, pad varchar(40) NOT NULL);
INSERT INTO t SELECT seq, 0, md5(seq) FROM seq_1_to_$rows;
DELIMITER //
CREATE PROCEDURE upd(n int) BEGIN DECLARE i int DEFAULT 1; WHILE i <= n DO UPDATE t SET v = v + 1 WHERE id = i; SET i = i + 1; END WHILE; END//
DELIMITER ;
SQL
  sub -d postgres -c "CREATE DATABASE myd"
  local mysrc="mysql://root@127.0.0.1:$my_port/src" mydst="postgres://postgres@127.0.0.1:$sub_port/myd"
  "$barge" sync --from "$mysrc" --to "$mydst" --state "$cdc/mystate.db" --until caught-up >/dev/null 2>&1
  : >"$work/barge.txt"
  for r in 1 2 3; do
    mariadb "${my[@]}" src -e "CALL upd($rows)"
    barge_catch_up "$mysrc" "$mydst" "$cdc/mystate.db" >>"$work/barge.txt"
    echo "cdc mariadb round $r: barge $(tail -1 "$work/barge.txt")s" >&2
  done
  local my_s; my_s=$(median <"$work/barge.txt")
  echo "cdc_mariadb_seconds=$my_s"
  echo "cdc_mariadb_changes_per_s=$(python3 -c "print(round($rows / $my_s))")"
  [ "$(sub -d myd -c "SELECT count(*), sum(v) FROM t")" = "$(mariadb "${my[@]}" src -N -B -e 'SELECT count(*), sum(v) FROM t' | tr '\t' '|')" ] \
    || { echo "the MariaDB → PostgreSQL copy differs" >&2; exit 1; }
  # The bulk phase of a first sync against `barge copy` of the same table.
  pub -d src -c "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)" \
    -c "INSERT INTO big SELECT g, g, md5(g::text) FROM generate_series(1, 1000000) g" -c "VACUUM ANALYZE big"
  : >"$work/copy.txt"; : >"$work/bulk.txt"
  for r in 1 2 3; do
    sub -d postgres -c "DROP DATABASE IF EXISTS bulk" -c "CREATE DATABASE bulk"
    local t0; t0=$(now)
    "$barge" copy --from "$src" --to "postgres://postgres@127.0.0.1:$sub_port/bulk" --table big >/dev/null 2>&1
    elapsed "$t0" >>"$work/copy.txt"
    sub -d postgres -c "DROP DATABASE IF EXISTS bulk" -c "CREATE DATABASE bulk"
    rm -f "$cdc/bulk.db"*
    t0=$(now)
    "$barge" sync --from "$src" --to "postgres://postgres@127.0.0.1:$sub_port/bulk" --table big --state "$cdc/bulk.db" \
      --stream "bulk$r" --until caught-up >/dev/null 2>&1
    elapsed "$t0" >>"$work/bulk.txt"
    "$barge" sync --from "$src" --to "postgres://postgres@127.0.0.1:$sub_port/bulk" --table big --state "$cdc/bulk.db" \
      --stream "bulk$r" --drop >/dev/null 2>&1
    echo "cdc bulk round $r: copy $(tail -1 "$work/copy.txt")s, sync $(tail -1 "$work/bulk.txt")s" >&2
  done
  local c b; c=$(median <"$work/copy.txt"); b=$(median <"$work/bulk.txt")
  echo "cdc_bulk_rows=1000000"
  echo "cdc_bulk_copy_seconds=$c"
  echo "cdc_bulk_sync_seconds=$b"
  echo "cdc_bulk_ratio=$(ratio "$b" "$c")"
  cdc_cleanup; trap - EXIT
}

# --- Zero-downtime migration: write-freeze windows ------------------------------------------------
# Waits until `migrate status` allows the switchover of migration $1 (its directory), whose
# `migrate start` is pid $2 (its log is shown if it ends first).
migrate_wait_allowed() { # $3: the wave, for an incremental migration
  until "$barge" migrate status "$1/mig.toml" --state "$1/state.db" --json ${3:+--wave "$3"} 2>/dev/null \
      | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("switchover_allowed") else 1)' 2>/dev/null
  do
    kill -0 "$2" 2>/dev/null || { cat "$1/start.log" >&2; exit 1; }
    sleep 0.2
  done
}
migrate_round() { # $1 pair (pg or my), $2 round: prints "switchover_ms rollback_ms"
  local pair=$1 r=$2 m="$cdc/m$1$2"
  mkdir -p "$m"
  local src dst="postgres://postgres@127.0.0.1:$sub_port/dst$1$r"
  sub -d postgres -c "CREATE DATABASE dst$1$r"
  sub -d "dst$1$r" -c "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO appuser" \
    -c "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO appuser"
  if [ "$pair" = pg ]; then
    src="postgres://postgres@127.0.0.1:$pub_port/src$r"
    pub -d postgres -c "CREATE DATABASE src$r"
    pub -d "src$r" -c "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2))" \
      -c "INSERT INTO orders (customer, amount) SELECT 'c' || g, g FROM generate_series(1, $rows) g" \
      -c "GRANT ALL ON orders, orders_id_seq TO appuser" -c "$steady_pg"
  else
    src="mysql://root@127.0.0.1:$my_port/src$r"
    mariadb "${my[@]}" <<SQL
CREATE DATABASE src$r; USE src$r;
CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, customer varchar(40) NOT NULL, amount decimal(12,2));
INSERT INTO orders (customer, amount) SELECT concat('c', seq), seq FROM seq_1_to_$rows;
GRANT ALL ON src$r.* TO 'app'@'%'; GRANT ALL ON src$r.* TO 'app'@'localhost';
DELIMITER //
$steady_my//
DELIMITER ;
SQL
  fi
  printf 'source = "%s"\ntarget = "%s"\n[migration]\nverify_every = 2\n' "$src" "$dst" >"$m/mig.toml"
  "$barge" migrate start "$m/mig.toml" --state "$m/state.db" >/dev/null 2>"$m/start.log" &
  local start_pid=$!
  migrate_pid=$start_pid
  migrate_wait_allowed "$m" "$start_pid"
  # The application: 1,000 single-row inserts a second, each committed, until a freeze stops it.
  if [ "$pair" = pg ]; then
    psql -h 127.0.0.1 -p "$pub_port" -U appuser -d "src$r" -qAt -c "CALL steady(1000, 120)" >/dev/null 2>&1 &
  else
    mariadb --protocol=tcp -h 127.0.0.1 -P "$my_port" -uapp -D "src$r" -e "CALL steady(1000, 120)" >/dev/null 2>&1 &
  fi
  local writer=$!
  sleep 5
  local sw; sw=$("$barge" migrate switchover "$m/mig.toml" --state "$m/state.db" --json)
  wait "$writer" 2>/dev/null || true
  # What the writer committed in its 5 s (and the switchover), as a check of its rate.
  local wrote
  if [ "$pair" = pg ]; then wrote=$(pub -d "src$r" -c "SELECT count(*) FROM orders WHERE customer = 'app'")
  else wrote=$(mariadb "${my[@]}" -N -e "SELECT count(*) FROM src$r.orders WHERE customer = 'app'"); fi
  echo "$wrote" >>"$work/wrote.txt"
  sub -d "dst$1$r" -c "$steady_pg"
  psql -h 127.0.0.1 -p "$sub_port" -U appuser -d "dst$1$r" -qAt -c "CALL steady(1000, 120)" >/dev/null 2>&1 &
  writer=$!
  sleep 5
  local rb; rb=$("$barge" migrate rollback "$m/mig.toml" --state "$m/state.db" --json)
  wait "$writer" 2>/dev/null || true
  "$barge" migrate complete "$m/mig.toml" --state "$m/state.db" --reopen >/dev/null
  wait "$start_pid" || true
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["switchover"]["freeze_ms"], json.loads(sys.argv[2])["rollback"]["freeze_ms"])' "$sw" "$rb"
}
migrate_big_bang_round() { # $1 round: prints the switchover's downtime_ms (from the freeze before the copy)
  local r=$1 m="$cdc/bb$1"
  mkdir -p "$m"
  pub -d postgres -c "CREATE DATABASE bbsrc$r"; sub -d postgres -c "CREATE DATABASE bbdst$r"
  pub -d "bbsrc$r" -c "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2))" \
    -c "INSERT INTO orders (customer, amount) SELECT 'c' || g, g FROM generate_series(1, $rows) g"
  printf 'source = "%s"\ntarget = "%s"\n[migration]\nstrategy = "big-bang"\nverify_every = 2\n' \
    "postgres://postgres@127.0.0.1:$pub_port/bbsrc$r" "postgres://postgres@127.0.0.1:$sub_port/bbdst$r" >"$m/mig.toml"
  "$barge" migrate start "$m/mig.toml" --state "$m/state.db" >/dev/null 2>"$m/start.log" &
  local start_pid=$!
  migrate_pid=$start_pid
  migrate_wait_allowed "$m" "$start_pid"
  local sw; sw=$("$barge" migrate switchover "$m/mig.toml" --state "$m/state.db" --json)
  "$barge" migrate complete "$m/mig.toml" --state "$m/state.db" --reopen >/dev/null
  wait "$start_pid" || true
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["switchover"]["downtime_ms"])' "$sw"
}
migrate_incremental_round() { # $1 round: prints wave 1's freeze_ms and the forecast and real big-bang downtime
  local r=$1 m="$cdc/inc$1"
  mkdir -p "$m"
  pub -d postgres -c "CREATE DATABASE incsrc$r"; sub -d postgres -c "CREATE DATABASE incdst$r"
  pub -d "incsrc$r" -c "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2))" \
    -c "INSERT INTO orders (customer, amount) SELECT 'c' || g, g FROM generate_series(1, $rows) g" \
    -c "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)" \
    -c "INSERT INTO customers SELECT g, 'n' || g FROM generate_series(1, $rows / 10) g" \
    -c "GRANT ALL ON orders, orders_id_seq, customers TO appuser" -c "$steady_pg"
  printf 'source = "%s"\ntarget = "%s"\n[migration]\nstrategy = "incremental"\nverify_every = 2\n%s\n%s\n' \
    "postgres://postgres@127.0.0.1:$pub_port/incsrc$r" "postgres://postgres@127.0.0.1:$sub_port/incdst$r" \
    '[[migration.waves]]
tables = ["orders"]' '[[migration.waves]]
tables = ["customers"]' >"$m/mig.toml"
  "$barge" migrate start "$m/mig.toml" --state "$m/state.db" >/dev/null 2>"$m/start.log" &
  local start_pid=$!
  migrate_pid=$start_pid
  migrate_wait_allowed "$m" "$start_pid" 1
  # The application writes 1,000 orders a second while wave 1 (the orders) switches.
  psql -h 127.0.0.1 -p "$pub_port" -U appuser -d "incsrc$r" -qAt -c "CALL steady(1000, 120)" >/dev/null 2>&1 &
  local writer=$!
  sleep 5
  local sw; sw=$("$barge" migrate switchover "$m/mig.toml" --state "$m/state.db" --json --wave 1)
  kill "$writer" 2>/dev/null || true; wait "$writer" 2>/dev/null || true
  migrate_wait_allowed "$m" "$start_pid" 2
  "$barge" migrate switchover "$m/mig.toml" --state "$m/state.db" --wave 2 >/dev/null
  "$barge" migrate complete "$m/mig.toml" --state "$m/state.db" --wave 1 --reopen >/dev/null
  "$barge" migrate complete "$m/mig.toml" --state "$m/state.db" --wave 2 --reopen >/dev/null
  wait "$start_pid" || true
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["switchover"]["freeze_ms"])' "$sw"
}
big_bang_forecast() { # the downtime `plan --forecast` states for a big-bang of $rows rows (ms)
  local m="$cdc/bbf"
  mkdir -p "$m"
  pub -d postgres -c "CREATE DATABASE bbfsrc"; sub -d postgres -c "CREATE DATABASE bbfdst"
  pub -d bbfsrc -c "CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount numeric(12,2))" \
    -c "INSERT INTO orders (customer, amount) SELECT 'c' || g, g FROM generate_series(1, $rows) g" -c "ANALYZE orders"
  printf 'source = "%s"\ntarget = "%s"\n[migration]\nstrategy = "big-bang"\n' \
    "postgres://postgres@127.0.0.1:$pub_port/bbfsrc" "postgres://postgres@127.0.0.1:$sub_port/bbfdst" >"$m/mig.toml"
  "$barge" plan "$m/mig.toml" --forecast --json 2>/dev/null \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["forecast"]["downtime_seconds"] * 1000))'
}
section_migrate() {
  cdc=$(mktemp -d /tmp/barge-migrate.XXXXXX); chmod 755 "$cdc"
  trap cdc_cleanup EXIT
  pub_port=$(free_port); cdc_pg_start "$cdc/pub" "$pub_port"
  sub_port=$(free_port); cdc_pg_start "$cdc/sub" "$sub_port"
  pub -d postgres -c "CREATE ROLE appuser LOGIN"; sub -d postgres -c "CREATE ROLE appuser LOGIN"
  steady_pg="CREATE OR REPLACE PROCEDURE steady(rate int, secs int) LANGUAGE plpgsql AS \$\$
      DECLARE t0 timestamptz := clock_timestamp(); n bigint := 0;
      BEGIN WHILE clock_timestamp() < t0 + secs * interval '1 second' LOOP
        WHILE n < (extract(epoch FROM clock_timestamp() - t0) * rate)::bigint LOOP
          INSERT INTO orders (customer, amount) VALUES ('app', 1); COMMIT; n := n + 1; END LOOP;
        PERFORM pg_sleep(0.005); END LOOP; END \$\$"
  steady_my="CREATE PROCEDURE steady(rate int, secs int) SQL SECURITY INVOKER BEGIN
      DECLARE t0 double DEFAULT unix_timestamp(now(6)); DECLARE n bigint DEFAULT 0;
      WHILE unix_timestamp(now(6)) < t0 + secs DO
        WHILE n < (unix_timestamp(now(6)) - t0) * rate DO
          INSERT INTO orders (customer, amount) VALUES ('app', 1); SET n = n + 1; END WHILE;
        DO sleep(0.005); END WHILE; END"
  my_port=$(free_port)
  mkdir -p "$cdc/my/tmp"; chown -R mysql "$cdc/my"
  mariadb-install-db --no-defaults --user=mysql --datadir="$cdc/my/data" --tmpdir="$cdc/my/tmp" \
    --auth-root-authentication-method=normal >/dev/null 2>&1
  /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$cdc/my/data" --tmpdir="$cdc/my/tmp" --port="$my_port" \
    --bind-address=127.0.0.1 --socket="$cdc/my/sock" --log-bin=binlog --binlog-format=ROW --binlog-row-image=FULL \
    --server-id=1 >/dev/null 2>&1 &
  cdc_my_pid=$!
  my=(--protocol=tcp -h 127.0.0.1 -P "$my_port" -uroot)
  until mariadb "${my[@]}" -e 'SELECT 1' >/dev/null 2>&1; do sleep 0.2; done
  mariadb "${my[@]}" -e "CREATE USER 'app'@'%'; CREATE USER 'app'@'localhost'"
  echo "migrate_rows=$rows"
  echo "migrate_writer_rows_per_s=1000"
  local pair r
  : >"$work/wrote.txt"
  for pair in pg my; do
    : >"$work/switch.txt"; : >"$work/rollback.txt"
    for r in 1 2 3; do
      read -r sw rb < <(migrate_round "$pair" "$r")
      echo "$sw" >>"$work/switch.txt"; echo "$rb" >>"$work/rollback.txt"
      echo "migrate $pair round $r: switchover $sw ms, rollback $rb ms" >&2
    done
    local name; name=$([ "$pair" = pg ] && echo postgres_to_postgres || echo mariadb_to_postgres)
    echo "migrate_${name}_switchover_ms=$(median <"$work/switch.txt")"
    echo "migrate_${name}_rollback_ms=$(median <"$work/rollback.txt")"
  done
  echo "migrate_writer_rows_in_5s_min=$(sort -n "$work/wrote.txt" | head -1)"
  : >"$work/bigbang.txt"
  for r in 1 2 3; do
    migrate_big_bang_round "$r" | tee -a "$work/bigbang.txt" | sed "s/^/migrate big-bang round $r: downtime ms /" >&2
  done
  echo "migrate_big_bang_downtime_ms=$(median <"$work/bigbang.txt")"
  echo "migrate_big_bang_forecast_downtime_ms=$(big_bang_forecast)"
  : >"$work/wave.txt"
  for r in 1 2 3; do
    migrate_incremental_round "$r" | tee -a "$work/wave.txt" | sed "s/^/migrate incremental round $r: wave 1 freeze ms /" >&2
  done
  echo "migrate_incremental_wave_switchover_ms=$(median <"$work/wave.txt")"
}

# --- Many machines: a distributed run against one process -----------------------------------------
dist_pipeline() { # the pipeline of the distributed section
  cat >"$work/dist.toml" <<TOML
source = "$pg/barge_bench_src?sslmode=disable"
target = "$pg/barge_bench_dst?sslmode=disable"
[defaults]
partitions = 32
[[tables]]
source = "orders"
TOML
}
dist_single() { # one process, 4 workers: its wall seconds, from start to exit (as dist_run's)
  pg_fresh barge_bench_dst barge_bench_state; pg_settle
  local t0; t0=$(date +%s.%N)
  "$barge" run "$work/dist.toml" --workers 4 --state "$pg/barge_bench_state?sslmode=disable" --json >"$work/dist.json" 2>/dev/null
  local t1; t1=$(date +%s.%N)
  python3 -c "import json; j = json.load(open('$work/dist.json')); assert j['ok'], j" >&2
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
dist_run() { # $1 worker processes, $2 slots each: the coordinator's wall seconds, from start to exit
  pg_fresh barge_bench_dst barge_bench_state; pg_settle
  local state="$pg/barge_bench_state?sslmode=disable" pids=() i
  for i in $(seq 1 "$1"); do
    "$barge" worker --state "$state" --run dist --workers "$2" --name "b$i" >/dev/null 2>&1 &
    pids+=($!)
  done
  local t0; t0=$(date +%s.%N)
  "$barge" run "$work/dist.toml" --workers 4 --state "$state" --distributed --json >"$work/dist.json" 2>/dev/null
  local t1; t1=$(date +%s.%N)
  # The last line is the run's report (the ones before, the queue once a second).
  python3 -c "import json; j = json.loads(open('$work/dist.json').read().splitlines()[-1]); assert j['ok'], j" >&2
  for i in "${pids[@]}"; do wait "$i" || true; done
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
section_distributed() {
  pg_fresh barge_bench_src barge_bench_claims
  echo "distributed: generating $rows rows" >&2
  pg_orders barge_bench_src "$rows"
  dist_pipeline
  echo "distributed_rows=$rows"
  cargo bench -p barge-benches --bench queue_claims --quiet -- "$pg/barge_bench_claims?sslmode=disable" 20000 4 \
    | sed 's/^claims_/distributed_claims_/'
  : >"$work/single.txt"
  for r in 1 2 3; do dist_single >>"$work/single.txt"; echo "distributed round $r: one process $(tail -1 "$work/single.txt")s" >&2; done
  local single; single=$(median <"$work/single.txt")
  echo "distributed_single_seconds=$single"
  local procs slots
  for procs in 1 2 4; do
    slots=$(( 4 / procs ))
    : >"$work/dist.txt"
    for r in 1 2 3; do
      dist_run "$procs" "$slots" >>"$work/dist.txt"
      echo "distributed round $r: $procs worker process(es) x $slots: $(tail -1 "$work/dist.txt")s" >&2
    done
    local d; d=$(median <"$work/dist.txt")
    echo "distributed_${procs}x${slots}_seconds=$d"
    echo "distributed_${procs}x${slots}_ratio=$(ratio "$d" "$single")"
  done
  pg_drop barge_bench_src barge_bench_dst barge_bench_state barge_bench_claims
}

# --- Recording ---------------------------------------------------------------------------------
machine() {
  echo "machine_cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
  echo "machine_cores=$(nproc)"
  echo "machine_memory_gib=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
  echo "machine_os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "machine_rustc=$(rustc --version)"
  echo "machine_postgres=$(psql "${pg_host_args[@]}" -d postgres -Atc 'SHOW server_version' 2>/dev/null || echo unknown)"
  echo "machine_mariadb=$(mariadb "${my_args[@]}" -N -e 'SELECT VERSION()' 2>/dev/null || echo unknown)"
}

# Runs section $1 over $2 rows, printing its figures and keeping them in benches/results/$1.txt
# ($3: the row count was given on the command line).
record() {
  local name=$1 out="$work/$1.result"
  rows=$2
  {
    echo "command=scripts/bench.sh $name${3:+ $rows}"
    echo "date=$(date -u +%Y-%m-%d)"
    echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates benches/hot_paths.rs benches/Cargo.toml benches/sql Cargo.toml Cargo.lock scripts/bench.sh || echo '+uncommitted')"
    machine
    "section_$name"
  } | tee "$out"
  mkdir -p benches/results
  cp "$out" "benches/results/$name.txt"
}

run() { # $1 section, $2 default rows
  if [ "$what" = "$1" ] || [ "$what" = all ]; then record "$1" "${rows_arg:-$2}" "$rows_arg"; fi
}
rows_arg=${2:-}
run sqlite 1000000
run postgres 2000000
run pipeline 2000000
run forecast 2000000
run mysql 2000000
run memory 0
run soak 0
run cdc 200000
run migrate 100000
run distributed 2000000
run micro 0
python3 scripts/bench_readme.py
