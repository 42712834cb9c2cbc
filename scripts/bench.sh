#!/usr/bin/env bash
# Throughput as a ratio to the raw database limit, measured side by side in one run.
#
#   scripts/bench.sh [ROWS]        (default 1,000,000 rows in the demo `orders` table)
#
# SQLite → SQLite: the raw limit is SQLite copying the table itself (ATTACH + INSERT … SELECT in
# one transaction, through Python's sqlite3 module). Runs alternate raw / barge --no-verify /
# barge (verified), three rounds; medians are printed with barge's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
dir=target/bench-sqlite
mkdir -p "$dir"
cargo build --release --quiet
barge=target/release/barge

echo "generating $rows rows (demo dataset) in $dir/source.db" >&2
"$barge" demo --rows "$rows" --dir "$dir" --json >/dev/null 2>&1

raw() {
  python3 - "$dir/source.db" "$dir/raw.db" <<'PY'
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

barge_copy() { # $1: extra flag; prints "seconds peak_kb"
  rm -f "$dir/target.db"
  /usr/bin/time -f "%M" -o "$dir/rss" "$barge" copy --from "sqlite://$dir/source.db" --to "sqlite://$dir/target.db" \
    --table orders --json $1 2>/dev/null >"$dir/out.json"
  python3 -c "import json; print(round(json.load(open('$dir/out.json'))['seconds'], 3), end=' ')"
  cat "$dir/rss"
}

median() { sort -n | sed -n 2p; }
: >"$dir/raw.txt"; : >"$dir/nv.txt"; : >"$dir/v.txt"; : >"$dir/rss.txt"
for round in 1 2 3; do
  raw >>"$dir/raw.txt"
  read -r s kb < <(barge_copy --no-verify); echo "$s" >>"$dir/nv.txt"; echo "$kb" >>"$dir/rss.txt"
  read -r s kb < <(barge_copy ""); echo "$s" >>"$dir/v.txt"; echo "$kb" >>"$dir/rss.txt"
  echo "round $round: raw $(tail -1 "$dir/raw.txt")s, barge --no-verify $(tail -1 "$dir/nv.txt")s, barge verified $(tail -1 "$dir/v.txt")s" >&2
done
raw_s=$(median <"$dir/raw.txt"); nv_s=$(median <"$dir/nv.txt"); v_s=$(median <"$dir/v.txt")
peak_kb=$(sort -n "$dir/rss.txt" | tail -1)
echo "rows=$rows"
echo "sqlite_raw_seconds=$raw_s"
echo "barge_no_verify_seconds=$nv_s"
echo "barge_verified_seconds=$v_s"
python3 -c "print(f'sqlite_to_sqlite_ratio={$nv_s/$raw_s:.2f}'); print(f'sqlite_to_sqlite_verified_ratio={$v_s/$raw_s:.2f}')"
echo "barge_peak_rss_mb=$((peak_kb / 1024))"
