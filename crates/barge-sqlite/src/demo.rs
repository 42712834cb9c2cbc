//! The demo source database: related tables with realistic columns, generated deterministically.
//!
//! | table | rows (of `--rows N`) | key | exercises |
//! |---|---|---|---|
//! | `customers` | N / 20 | sparse INTEGER (`id = 7i + 3`) | sampled quantile partitioning, unicode names, decimals, NULL blobs |
//! | `products` | 5,000 | TEXT (`sku`) | text-key partitioning, booleans, reals |
//! | `orders` | N | dense INTEGER | arithmetic partitioning, dates, timestamps, NULLs, blobs, emoji |
//! | `audit_log` | N / 50 | none | rowid ranges, multiset verification |

use std::path::Path;

use rusqlite::{Connection, params};

use crate::sqlite_err;
use barge_core::Result;

const PRODUCTS: u64 = 5_000;
const FIRST_NAMES: &[&str] =
    &["Zoë", "José", "Åsa", "Łukasz", "Søren", "Ngọc Anh", "Мария", "山田 太郎", "محمد", "Ólafur", "Chloé", "Jürgen"];
const LAST_NAMES: &[&str] = &["Müller", "García", "Nguyễn", "Ødegaard", "O'Brien", "Kowalski", "Smith", "Dvořák"];
const COUNTRIES: &[&str] = &["DE", "ES", "VN", "NO", "IE", "PL", "US", "CZ", "JP", "EG"];
const STATUSES: &[&str] = &["pending", "paid", "shipped", "delivered", "cancelled", "refunded"];
const NOTES: &[&str] = &["leave at the door 🚪", "gift wrap 🎁", "express 🚚", "call before delivery ☎️", "fragile"];
/// 2024-01-01 00:00:00 UTC.
const EPOCH_2024: i64 = 1_704_067_200;

/// Row counts of the generated tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoTables {
    pub tables: Vec<(String, u64)>,
}

/// A tiny deterministic generator (splitmix64): the same `rows` always gives the same database.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn timestamp(seconds_since_2024: i64, micros: i64) -> String {
    let mut out = String::with_capacity(26);
    barge_core::text::format_datetime((EPOCH_2024 + seconds_since_2024) * 1_000_000 + micros, false, &mut out);
    out
}

/// Creates `path` (replacing any file there) with the demo tables; `orders` gets `rows` rows.
pub fn create_demo_source(path: &Path, rows: u64) -> Result<DemoTables> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| barge_core::Error::engine(format!("removing {}", path.display()), e))?;
    }
    let mut conn = Connection::open(path).map_err(sqlite_err("creating the demo database"))?;
    // A scratch file that is regenerated on every run: no journal, no fsync.
    conn.execute_batch(
        "PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         CREATE TABLE customers (
           id INTEGER PRIMARY KEY,
           code TEXT NOT NULL UNIQUE,
           name TEXT NOT NULL,
           email VARCHAR(255),
           country CHAR(2) NOT NULL,
           balance DECIMAL(12,2) NOT NULL,
           created_at DATETIME NOT NULL,
           avatar BLOB
         );
         CREATE TABLE products (
           sku TEXT PRIMARY KEY,
           title TEXT NOT NULL,
           price DECIMAL(10,2) NOT NULL,
           weight_kg REAL,
           active BOOLEAN NOT NULL
         );
         CREATE TABLE orders (
           id INTEGER PRIMARY KEY,
           customer_id INTEGER NOT NULL REFERENCES customers(id),
           sku TEXT NOT NULL REFERENCES products(sku),
           quantity INTEGER NOT NULL,
           amount DECIMAL(12,2) NOT NULL,
           amount_cents INTEGER NOT NULL,
           status VARCHAR(20) NOT NULL,
           ordered_on DATE NOT NULL,
           created_at DATETIME NOT NULL,
           shipped_at DATETIME,
           note TEXT,
           receipt BLOB
         );
         CREATE TABLE audit_log (
           at DATETIME NOT NULL,
           actor TEXT,
           message TEXT NOT NULL
         );",
    )
    .map_err(sqlite_err("creating the demo tables"))?;

    let customers = (rows / 20).max(1);
    let audit = (rows / 50).max(1);
    let mut rng = Rng(rows ^ 0xBA26E);
    let tx = conn.transaction().map_err(sqlite_err("starting the demo load"))?;
    {
        let mut insert = tx
            .prepare("INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .map_err(sqlite_err("preparing customers"))?;
        for i in 0..customers {
            let name = format!("{} {}", rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES));
            let email = (!rng.chance(10)).then(|| format!("customer{i}@example.com"));
            let balance = format!("{}.{:02}", rng.below(100_000), rng.below(100));
            let avatar = rng.chance(20).then(|| (0..16).map(|_| rng.below(256) as u8).collect::<Vec<u8>>());
            insert
                .execute(params![
                    (i * 7 + 3) as i64,
                    format!("C{i:08}"),
                    name,
                    email,
                    rng.pick(COUNTRIES),
                    balance,
                    timestamp(rng.below(300 * 86_400) as i64, 0),
                    avatar
                ])
                .map_err(sqlite_err("inserting customers"))?;
        }
        let mut insert =
            tx.prepare("INSERT INTO products VALUES (?1, ?2, ?3, ?4, ?5)").map_err(sqlite_err("preparing products"))?;
        for i in 0..PRODUCTS {
            // Scatter the SKUs so the text key is not in insertion order.
            let sku = format!("SKU-{:05}", (i * 7919) % 100_000);
            let weight = (!rng.chance(5)).then(|| rng.below(50_000) as f64 / 1000.0);
            insert
                .execute(params![
                    sku,
                    format!("Product №{i} – {}", rng.pick(NOTES)),
                    format!("{}.{:02}", 1 + rng.below(999), rng.below(100)),
                    weight,
                    rng.chance(80)
                ])
                .map_err(sqlite_err("inserting products"))?;
        }
        let mut insert = tx
            .prepare("INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")
            .map_err(sqlite_err("preparing orders"))?;
        for id in 1..=rows {
            let quantity = 1 + rng.below(5);
            let cents = (quantity * (100 + rng.below(99_900))) as i64;
            let created = rng.below(330 * 86_400) as i64;
            let micros = rng.below(1_000_000) as i64;
            let shipped = rng.chance(70).then(|| timestamp(created + rng.below(7 * 86_400) as i64, 0));
            let note = rng.chance(15).then(|| rng.pick(NOTES));
            let receipt = rng.chance(5).then(|| (0..32).map(|_| rng.below(256) as u8).collect::<Vec<u8>>());
            let mut ordered_on = String::with_capacity(10);
            barge_core::text::format_date(i32::try_from((EPOCH_2024 + created) / 86_400).unwrap_or(0), &mut ordered_on);
            insert
                .execute(params![
                    id as i64,
                    (rng.below(customers) * 7 + 3) as i64,
                    format!("SKU-{:05}", (rng.below(PRODUCTS) * 7919) % 100_000),
                    quantity as i64,
                    format!("{}.{:02}", cents / 100, cents % 100),
                    cents,
                    rng.pick(STATUSES),
                    ordered_on,
                    timestamp(created, micros),
                    shipped,
                    note,
                    receipt
                ])
                .map_err(sqlite_err("inserting orders"))?;
        }
        let mut insert =
            tx.prepare("INSERT INTO audit_log VALUES (?1, ?2, ?3)").map_err(sqlite_err("preparing audit_log"))?;
        for i in 0..audit {
            let actor = (!rng.chance(30)).then(|| format!("user{}", rng.below(50)));
            // Repeated messages give the keyless table duplicate rows, which verification must count.
            insert
                .execute(params![timestamp((i as i64) * 60, 0), actor, format!("{} order", rng.pick(STATUSES))])
                .map_err(sqlite_err("inserting audit_log"))?;
        }
    }
    tx.commit().map_err(sqlite_err("committing the demo load"))?;
    Ok(DemoTables {
        tables: vec![
            ("audit_log".into(), audit),
            ("customers".into(), customers),
            ("orders".into(), rows),
            ("products".into(), PRODUCTS),
        ],
    })
}
