//! The real `earshot load` dying or losing its database mid-object: what
//! it had not committed is invisible, and after a restart the numbers are
//! exactly a clean run's.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use earshot_platform::testing::TestDb;
use earshot_testkit::s3_notify::{notify_queue_on_object_created, queue_depth};
use earshot_testkit::{ChildProcess, Moto, TcpProxy};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use support::*;

/// Is a loader's object transaction open in `db` right now, with its rows
/// on their way in (the COPY into `events`, the counting keys, the hourly
/// rollups)? Those are the long statements of a load, well before its commit.
async fn load_in_progress(admin: &PgPool, db: &str) -> bool {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = $1 AND application_name = 'earshot' AND state = 'active'
           AND (query LIKE 'COPY events %' OR query LIKE 'INSERT INTO counting_keys%'
                OR query LIKE 'COPY rollup_hourly%')",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap();
    n > 0
}

/// Waits until a load is in progress in `db`; fails if the loader exits first.
async fn wait_for_load_in_progress(admin: &PgPool, db: &str, loader: &mut ChildProcess) {
    while_running(
        loader,
        "the loader's transaction to be in progress",
        || async { load_in_progress(admin, db).await.then_some(()) },
    )
    .await;
}

/// Events in `big.ndjson` when a test strikes at a moment: enough that its
/// load is still in progress when the test sees it in progress.
const BIG_EVENTS: usize = 200_000;

/// The loader's environment for a `big.ndjson` of `events` events: once
/// tried, it loads again in ten parts (the default's hundred would only
/// make the test slower).
fn in_ten_parts(events: usize) -> [(String, String); 1] {
    [("EARSHOT_LOAD_PART_EVENTS".into(), (events / 10).to_string())]
}

/// A fresh directory holding one object, `big.ndjson`, of `events` events
/// from yesterday (`seed` picks them), and its `dir:` source. The
/// directory is removed when the returned guard drops.
fn big_object_source(name: &str, seed: u64, events: usize) -> (TempDir, String) {
    let dir = temp_dir(name);
    let events = synth_events(events, seed, yesterday(), time::Duration::hours(20));
    std::fs::write(dir.join("big.ndjson"), ndjson(&events)).unwrap();
    let source = format!("dir:{}", dir.display());
    (dir, source)
}

#[tokio::test]
async fn loader_killed_with_sigkill_mid_object_then_restarted_counts_like_a_clean_run() {
    let db = TestDb::new().await;
    let clean = TestDb::new().await;
    let (_dir, source) = big_object_source("sigkill", 7, BIG_EVENTS);

    // Long-running mode: it would go on polling; only SIGKILL stops it.
    let mut loader = ChildProcess::spawn(&loader_spec(&db.url, &["--source", &source], &[]))
        .expect("start earshot load");
    wait_for_load_in_progress(&db.pool, &db.name, &mut loader).await;
    let status = loader.kill().await.unwrap();
    assert!(!status.success());
    assert!(
        !loader
            .stderr_lines()
            .iter()
            .any(|l| l.contains("\"object loaded\"")),
        "the object was committed before the kill\n{}",
        loader.output_text()
    );

    // Nothing of the object is visible: its transaction never committed.
    assert_nothing_committed(&db.pool).await;
    assert_a_restart_counts_like_a_clean_run(&db, &clean, &source, BIG_EVENTS).await;
}

/// Nothing of a load is in `db`: no ledger row, event, hourly row or key.
async fn assert_nothing_committed(db: &PgPool) {
    for table in ["loaded_objects", "events", "rollup_hourly", "counting_keys"] {
        let n = count(db, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "{table}");
    }
}

/// `earshot load --once` of `source` (a [`big_object_source`] of `events`
/// events) into `db` loads its one object (in parts: it was tried before),
/// and leaves `db` as a whole load of it leaves `clean`.
async fn assert_a_restart_counts_like_a_clean_run(
    db: &TestDb,
    clean: &TestDb,
    source: &str,
    events: usize,
) {
    let restarted = load_once(&db.url, source, &in_ten_parts(events)).await;
    assert_eq!(
        (restarted.objects_loaded, restarted.events_new),
        (1, events as u64)
    );
    let reference = load_once(&clean.url, source, &[]).await;
    assert_eq!(restarted, reference);
    assert_same_as_a_whole_load(&db.pool, &clean.pool).await;
}

/// `db`, where an object was loaded in parts, holds what `clean`, where it
/// was loaded whole, holds: every row counted, the ledger's row and its
/// counts; no part or try of it is left.
async fn assert_same_as_a_whole_load(db: &PgPool, clean: &PgPool) {
    assert_same(
        &snapshot(db).await.versions_as_campaigns(),
        &snapshot(clean).await.versions_as_campaigns(),
    );
    assert_books_balance(db).await;
    for table in ["loaded_object_parts", "load_attempts"] {
        let n = count(db, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, 0, "{table}");
    }
}

/// How many parts of `big.ndjson` are committed, and under which ids.
async fn parts_in(db: &PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT object_id) FROM loaded_object_parts
         WHERE object_key = 'big.ndjson'",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_loader_killed_again_and_again_commits_parts_each_life_and_ends_like_a_clean_run() {
    // Half the size of the other tests' object: four lives parse it.
    const EVENTS: usize = BIG_EVENTS / 2;
    let db = TestDb::new().await;
    let clean = TestDb::new().await;
    let (_dir, source) = big_object_source("crash-loop", 11, EVENTS);
    let spec = loader_spec(&db.url, &["--source", &source], &in_ten_parts(EVENTS));

    // Life 1: killed in its whole load of the object.
    let mut loader = ChildProcess::spawn(&spec).expect("start earshot load");
    wait_for_load_in_progress(&db.pool, &db.name, &mut loader).await;
    loader.kill().await.unwrap();
    assert_nothing_committed(&db.pool).await;

    // Lives 2 and 3: the object was tried, so each goes on in parts from
    // where the last stopped, and is killed once it committed two more.
    let mut had = 0;
    for life in 2..=3 {
        let mut loader = ChildProcess::spawn(&spec).expect("start earshot load");
        let (parts, ids) = while_running(&mut loader, "two more parts", || async {
            let (parts, ids) = parts_in(&db.pool).await;
            (parts >= had + 2).then_some((parts, ids))
        })
        .await;
        loader.kill().await.unwrap();
        assert_eq!(ids, 1, "life {life}: every part under one object id");
        let attempts = count(&db.pool, "SELECT attempts::bigint FROM load_attempts").await;
        assert_eq!(attempts, life, "life {life}: each life's try is counted");
        assert_eq!(
            count(&db.pool, "SELECT count(*) FROM loaded_objects").await,
            0,
            "life {life}: the object is not loaded until its last part is"
        );
        had = parts_in(&db.pool).await.0;
        assert!(had >= parts, "life {life}: a committed part stays");
    }
    let events_in: i64 = count(&db.pool, "SELECT count(*) FROM events").await;
    assert!(events_in > 0 && (events_in as usize) < EVENTS);

    // The last life finishes the object: only the parts not in yet.
    let last = load_once(&db.url, &source, &in_ten_parts(EVENTS)).await;
    assert_eq!(
        (last.objects_loaded, last.events_new),
        (1, (EVENTS as i64 - events_in) as u64)
    );
    load_once(&clean.url, &source, &[]).await;
    assert_same_as_a_whole_load(&db.pool, &clean.pool).await;
}

/// `db_url` with its server replaced by a [`TcpProxy`] to that server, in
/// plain text so the proxy can see which statement the loader sends.
async fn through_proxy(db_url: &str) -> (TcpProxy, String) {
    use sqlx::ConnectOptions as _;
    let opts: PgConnectOptions = db_url.parse().expect("a PostgreSQL URL");
    assert!(
        !opts.get_host().starts_with('/'),
        "this test needs PostgreSQL over TCP; DATABASE_URL names a socket"
    );
    let server = tokio::net::lookup_host((opts.get_host(), opts.get_port()))
        .await
        .expect("resolve the database host")
        .next()
        .expect("an address");
    let proxy = TcpProxy::start(server).await.expect("proxy");
    let url = opts
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
        .to_url_lossy()
        .to_string();
    (proxy, url)
}

/// The loader's connections to `db`, seen from the server.
async fn loader_backends(admin: &PgPool, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'earshot'",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_loader_whose_database_goes_silent_mid_object_exits_as_stalled_then_a_restart_counts_like_a_clean_run(
) {
    // The proxy goes silent the moment the loader starts the object's COPY
    // into `events`: mid-object by construction, however fast or slow the
    // machine gets there. A small object keeps the steps before it (the
    // parse, watched by the same limit) far below the limit even in a debug
    // build on two busy cores.
    const STALL_SECONDS: &str = "20";
    const EVENTS: usize = 20_000;
    let db = TestDb::new().await;
    let clean = TestDb::new().await;
    let (_dir, source) = big_object_source("stall", 11, EVENTS);
    let (proxy, proxied_url) = through_proxy(&db.url).await;
    proxy.silence_when_client_sends(b"COPY events ");

    // Long-running mode: without the watchdog it would wait for ever.
    let spec = loader_spec(&proxied_url, &["--source", &source], &[])
        .env("EARSHOT_LOADER_STALL_SECONDS", STALL_SECONDS);
    let mut loader = ChildProcess::spawn(&spec).expect("start earshot load");
    let status = tokio::time::timeout(std::time::Duration::from_secs(90), loader.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the loader did not give up on its silent database\n{}",
                loader.output_text()
            )
        })
        .unwrap();
    assert!(!status.success(), "{}", loader.output_text());
    assert!(proxy.stats().swallowed > 0, "the silence cut nothing");
    let stderr = loader.stderr_lines();
    let stalled = stderr
        .iter()
        .find(|l| l.contains("\"the loader stalled; exiting\""))
        .unwrap_or_else(|| panic!("no stall logged\n{}", loader.output_text()));
    assert!(
        [
            "inserting an object's events",
            "counting and committing an object"
        ]
        .iter()
        .any(|step| stalled.contains(step)),
        "{stalled}"
    );
    assert!(stalled.contains("big.ndjson"), "{stalled}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("longer than EARSHOT_LOADER_STALL_SECONDS (20s)")),
        "the exit error names the setting\n{}",
        loader.output_text()
    );

    // Its sockets closed with it: PostgreSQL ends its sessions and rolls
    // the object's transaction back, so nothing of it is visible.
    eventually("the loader's sessions to end", String::new, || async {
        (loader_backends(&db.pool, &db.name).await == 0).then_some(())
    })
    .await;
    assert_nothing_committed(&db.pool).await;
    assert_a_restart_counts_like_a_clean_run(&db, &clean, &source, EVENTS).await;
}

/// Takes the s3:TestEvent off the queue, so the queue then holds only the
/// notifications of objects.
async fn drain_test_event(moto: &Moto, url: &str) {
    let sqs = moto.sqs();
    eventually("the s3:TestEvent", String::new, || {
        let sqs = sqs.clone();
        async move {
            let messages = receive(&sqs, url, None).await;
            let m = messages.first()?;
            assert!(m.body().unwrap_or_default().contains("s3:TestEvent"));
            sqs.delete_message()
                .queue_url(url)
                .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                .send()
                .await
                .expect("delete");
            Some(())
        }
    })
    .await;
}

#[tokio::test]
async fn an_sqs_message_stays_on_the_queue_until_its_object_is_committed() {
    const EVENTS: usize = 100_000;
    let moto = Moto::start().await.expect("moto");
    moto.s3()
        .create_bucket()
        .bucket("earshot-raw")
        .send()
        .await
        .unwrap();
    // Short visibility timeout: the message of a killed loader comes back soon.
    let url = notify_queue_on_object_created(&moto, "earshot-raw", "earshot-loader", 3)
        .await
        .expect("notifications");
    drain_test_event(&moto, &url).await;
    let db = TestDb::new().await;
    let events = synth_events(EVENTS, 8, yesterday(), time::Duration::hours(3));
    moto.s3()
        .put_object()
        .bucket("earshot-raw")
        .key("events/2026/11/26/00/big")
        .body(gzip(&ndjson(&events)).into())
        .send()
        .await
        .unwrap();
    drop(events);
    let source = format!("sqs:{url}");
    let aws = moto.aws_env();

    let mut loader = ChildProcess::spawn(&loader_spec(&db.url, &["--source", &source], &aws))
        .expect("start earshot load");
    wait_for_load_in_progress(&db.pool, &db.name, &mut loader).await;
    // The loader has the message in hand and has not deleted it.
    let (visible, in_flight) = queue_depth(&moto, &url).await.unwrap();
    assert_eq!(
        visible + in_flight,
        1,
        "the object's notification is still queued"
    );
    loader.kill().await.unwrap();
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM loaded_objects").await,
        0
    );

    // SQS hands the message out again once its visibility timeout passes.
    eventually(
        "the notification to be visible again",
        String::new,
        || async { (queue_depth(&moto, &url).await.unwrap() == (1, 0)).then_some(()) },
    )
    .await;
    let s = load_once(&db.url, &source, &aws).await;
    assert_eq!((s.objects_loaded, s.events_new), (1, EVENTS as u64));
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (0, 0));
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM events").await,
        EVENTS as i64
    );
    assert_books_balance(&db.pool).await;
}

/// Terminates every `earshot` connection to `db` while a load is in
/// progress there, then waits for the next object to be committed before
/// striking again (so the loader's backoff never grows past its first
/// step), up to `max_rounds` times or until `stop`. Returns the rounds.
async fn kill_connections_during_loads(
    admin: PgPool,
    db: String,
    max_rounds: u32,
    stop: Arc<AtomicBool>,
) -> u32 {
    let mut rounds = 0;
    let mut rng = fastrand::Rng::with_seed(42);
    let pause = |ms| tokio::time::sleep(std::time::Duration::from_millis(ms));
    while rounds < max_rounds && !stop.load(Ordering::SeqCst) {
        if !load_in_progress(&admin, &db).await {
            pause(5).await;
            continue;
        }
        // Let the load get a little further: a different point each time.
        pause(rng.u64(0..60)).await;
        let committed = count(&admin, "SELECT count(*) FROM loaded_objects").await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'earshot') t",
        )
        .bind(&db)
        .fetch_one(&admin)
        .await
        .unwrap();
        if killed > 0 {
            rounds += 1;
        }
        while !stop.load(Ordering::SeqCst)
            && count(&admin, "SELECT count(*) FROM loaded_objects").await <= committed
        {
            pause(10).await;
        }
    }
    rounds
}

#[tokio::test]
async fn loader_rides_through_postgresql_connections_dying_during_a_load() {
    const OBJECTS: usize = 24;
    const PER_OBJECT: usize = 4_000;
    const OVERLAP: usize = 100;
    let db = TestDb::new().await;
    let clean = TestDb::new().await;
    let dir = temp_dir("pgkill");
    let events = synth_events(
        OBJECTS * PER_OBJECT,
        9,
        yesterday(),
        time::Duration::hours(30),
    );
    for i in 0..OBJECTS {
        // Each object also repeats the first events of the next one, as a
        // Firehose retry after a timeout would.
        let end = ((i + 1) * PER_OBJECT + OVERLAP).min(events.len());
        std::fs::write(
            dir.join(format!("o{i:03}.ndjson")),
            ndjson(&events[i * PER_OBJECT..end]),
        )
        .unwrap();
    }
    let source = format!("dir:{}", dir.display());

    let mut loader = ChildProcess::spawn(&loader_spec(&db.url, &["--source", &source], &[]))
        .expect("start earshot load");
    let stop = Arc::new(AtomicBool::new(false));
    let killer = tokio::spawn(kill_connections_during_loads(
        db.pool.clone(),
        db.name.clone(),
        12,
        stop.clone(),
    ));
    while_running(&mut loader, "every object to be in the ledger", || async {
        let n = count(&db.pool, "SELECT count(*) FROM loaded_objects").await;
        (n == OBJECTS as i64).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let rounds = killer.await.unwrap();
    assert!(
        rounds > 0,
        "the test must actually kill connections during loads"
    );
    let status = loader.terminate().await.unwrap();
    assert!(status.success(), "{status}\n{}", loader.output_text());
    let s = summary_of(&loader);
    // A commit whose answer was lost is retried and found in the ledger
    // (skipped), so only the sum is exact; the database says the rest.
    assert_eq!(s.objects_loaded + s.objects_skipped, OBJECTS as u64);

    let reference = load_once(&clean.url, &source, &[]).await;
    assert_eq!(reference.events_new, events.len() as u64);
    assert_eq!(reference.duplicates, (OBJECTS as u64 - 1) * OVERLAP as u64);
    assert_same_as_a_whole_load(&db.pool, &clean.pool).await;
}
