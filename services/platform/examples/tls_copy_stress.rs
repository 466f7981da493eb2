//! Large `COPY … FROM STDIN` over TLS, from several connections at once,
//! until one of them stops making progress or the time is up.
//!
//! Why it exists: with sqlx 0.8 the loader's COPY could hang for good, with
//! PostgreSQL in `ClientRead` and every loader thread parked. sqlx's TLS
//! socket, after a write and a read had both blocked, waited for the socket
//! to be readable even once it was writable again; the server, waiting for
//! the rest of the COPY, never sent anything (sqlx PR #4251, in 0.9.0). This
//! is the check to run again when sqlx, rustls or tokio change:
//!
//! ```text
//! cargo run --release -p earshot-platform --example tls_copy_stress
//! ```
//!
//! On a 2-core machine, the same program built against
//! sqlx 0.8.6 stalled after 78 s and after 129 s of two 300 s runs; against
//! 0.9.0 it ran 300 s three times without a stall (docs/OPERATIONS.md,
//! "LoaderBacklog"). Exit status: 0 no stall, 1 an
//! error, 2 a stall.
//!
//! Settings (environment): `DATABASE_URL` (TLS is required: `sslmode=require`
//! is added), `TASKS` connections (4), `MB` per COPY (16), `SECS` (300),
//! `STALL_SECS` without progress that count as a stall (30).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} is not a number: {v}"))
        })
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let tasks = setting("TASKS", 4) as usize;
    let size = (setting("MB", 16) as usize) << 20;
    let secs = setting("SECS", 300);
    let stall = Duration::from_secs(setting("STALL_SECS", 30));
    let opts: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(tasks as u32)
        .connect_with(opts.ssl_mode(PgSslMode::Require))
        .await?;

    // Rows of a bigint and 200 bytes of text, `size` bytes of them.
    let mut data = Vec::with_capacity(size + 256);
    let filler = "abcdefghij".repeat(20);
    let mut i = 0u64;
    while data.len() < size {
        data.extend_from_slice(format!("{i}\t{filler}\n").as_bytes());
        i += 1;
    }
    let data = Arc::new(data);
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect());
    for t in 0..tasks {
        let (pool, done, data) = (pool.clone(), done.clone(), data.clone());
        tokio::spawn(async move {
            // An error is not a stall: say so and stop.
            let e = copy_forever(&pool, &data, &done[t]).await;
            eprintln!("connection {t} failed: {e}");
            std::process::exit(1);
        });
    }

    let start = Instant::now();
    let mut seen = vec![(0u64, Instant::now()); tasks];
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (t, (last, since)) in seen.iter_mut().enumerate() {
            let n = done[t].load(Ordering::Relaxed);
            if n != *last {
                (*last, *since) = (n, Instant::now());
            } else if since.elapsed() > stall {
                println!(
                    "STALL: connection {t} made no progress for {} s, after {n} copies, {:.0} s in",
                    stall.as_secs(),
                    start.elapsed().as_secs_f64()
                );
                std::process::exit(2);
            }
        }
    }
    let counts: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    println!("no stall in {secs} s; copies per connection: {counts:?}");
    Ok(())
}

/// COPYs `data` in a transaction of its own, again and again, counting the
/// commits in `done`; returns only on an error.
async fn copy_forever(pool: &sqlx::PgPool, data: &[u8], done: &AtomicU64) -> sqlx::Error {
    let once = async || -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS stress (id bigint, s text) ON COMMIT DELETE ROWS",
        )
        .execute(&mut *tx)
        .await?;
        let mut copy = tx.copy_in_raw("COPY stress FROM STDIN").await?;
        copy.send(data).await?;
        copy.finish().await?;
        tx.commit().await
    };
    loop {
        if let Err(e) = once().await {
            return e;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
}
