//! The real `earshot load` against moto's S3 and SQS: S3 ObjectCreated
//! notifications through a queue (production), and S3 prefix polling
//! (backfills). Each test has its own moto and its own database.

mod support;

use earshot_platform::testing::TestDb;
use earshot_testkit::s3_notify::{
    notify_queue_on_object_created, queue_depth, redrive_to_dead_letter_queue,
};
use earshot_testkit::{Moto, S3DenyProxy};
use support::*;

const BUCKET: &str = "earshot-raw";
const QUEUE: &str = "earshot-loader";

/// `n` events (from `seed`) spread over the hour from `hour` o'clock
/// yesterday.
fn hour_of_events(n: usize, seed: u64, hour: i64) -> Vec<earshot_domain::TrackingEvent> {
    synth_events(
        n,
        seed,
        yesterday() + time::Duration::hours(hour),
        time::Duration::hours(1),
    )
}

async fn create_bucket(moto: &Moto) {
    moto.s3()
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
}

/// The bucket, and the queue its ObjectCreated notifications go to (30 s
/// visibility timeout): the queue's URL.
async fn bucket_notifying_queue(moto: &Moto) -> String {
    create_bucket(moto).await;
    notify_queue_on_object_created(moto, BUCKET, QUEUE, 30)
        .await
        .expect("bucket notifications")
}

async fn put(moto: &Moto, key: &str, bytes: Vec<u8>) -> String {
    let out = moto
        .s3()
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(bytes.into())
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "putting {key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    out.e_tag().expect("an ETag").trim_matches('"').to_owned()
}

/// Reads the notification bodies naming objects (not the s3:TestEvent)
/// without taking them off the queue: received with a visibility timeout of
/// zero, they are visible again at once.
async fn peek_notifications(moto: &Moto, url: &str, want: usize) -> Vec<String> {
    let sqs = moto.sqs();
    eventually("the object notifications", String::new, || {
        let sqs = sqs.clone();
        async move {
            let bodies: Vec<String> = receive(&sqs, url, Some(0))
                .await
                .iter()
                .filter_map(|m| m.body().map(str::to_owned))
                .filter(|b| b.contains("ObjectCreated"))
                .collect();
            (bodies.len() == want).then_some(bodies)
        }
    })
    .await
}

#[tokio::test]
async fn the_same_sqs_message_delivered_twice_changes_nothing() {
    let moto = Moto::start().await.expect("moto");
    let url = bucket_notifying_queue(&moto).await;
    let db = TestDb::new().await;
    let plain = hour_of_events(600, 1, 10);
    let zipped = hour_of_events(400, 2, 11);
    // Keys as Firehose writes them; gzip is known by its bytes, not the key.
    let key_plain = "events/2026/11/26/10/earshot-events-1-2026-11-26-10-00-00-a1";
    let key_zipped = "events/2026/11/26/11/earshot-events-1-2026-11-26-11-00-00-b2";
    let etag_plain = put(&moto, key_plain, ndjson(&plain)).await;
    let etag_zipped = put(&moto, key_zipped, gzip(&ndjson(&zipped))).await;
    let bodies = peek_notifications(&moto, &url, 2).await;
    let source = format!("sqs:{url}");
    let aws = moto.aws_env();

    let first = load_once(&db.url, &source, &aws).await;
    assert_eq!(loaded_skipped_new(&first), (2, 0, 1000));
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (0, 0));
    let before = snapshot(&db.pool).await;
    let ledger: Vec<(String, String, String)> =
        sqlx::query_as("SELECT source, object_key, etag FROM loaded_objects ORDER BY object_key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        ledger,
        vec![
            (format!("s3://{BUCKET}"), key_plain.to_owned(), etag_plain),
            (format!("s3://{BUCKET}"), key_zipped.to_owned(), etag_zipped),
        ]
    );

    // SQS delivers at least once: the same notifications come again.
    for b in &bodies {
        send_message(&moto, &url, b).await;
    }
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (2, 0));
    let second = load_once(&db.url, &source, &aws).await;
    assert_eq!(
        second,
        Summary {
            objects_skipped: 2,
            ..Summary::default()
        }
    );
    assert_same(&snapshot(&db.pool).await, &before);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 1000);
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (0, 0));
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn s3_prefix_source_loads_every_object_once() {
    let moto = Moto::start().await.expect("moto");
    create_bucket(&moto).await;
    let db = TestDb::new().await;
    let day = yesterday();
    let batch = |seed: u64, hour: i64, n: usize| {
        synth_events(
            n,
            seed,
            day + time::Duration::hours(hour),
            time::Duration::minutes(50),
        )
    };
    let a = batch(11, 1, 300);
    let b = batch(12, 2, 200);
    let c = batch(13, 25, 250); // the next day
    let outside = batch(14, 3, 100);
    put(&moto, "events/2026/11/26/01/obj-a", ndjson(&a)).await;
    put(&moto, "events/2026/11/26/02/obj-b", gzip(&ndjson(&b))).await;
    put(&moto, "events/2026/11/27/01/obj-c", ndjson(&c)).await;
    // A "folder" marker and an object outside the prefix: neither is loaded.
    put(&moto, "events/2026/11/27/", Vec::new()).await;
    put(&moto, "replays/2026/11/26/obj-x", ndjson(&outside)).await;
    let source = format!("s3://{BUCKET}/events/");
    let aws = moto.aws_env();

    let first = load_once(&db.url, &source, &aws).await;
    assert_eq!(loaded_skipped_new(&first), (3, 0, 750));
    let after_first = snapshot(&db.pool).await;

    let second = load_once(&db.url, &source, &aws).await;
    assert_eq!(
        second,
        Summary {
            objects_skipped: 3,
            ..Summary::default()
        }
    );
    assert_same(&snapshot(&db.pool).await, &after_first);

    // A new object under another prefix: only it is loaded.
    let d = batch(15, 26, 150);
    put(&moto, "events/2026/11/27/02/obj-d", ndjson(&d)).await;
    let third = load_once(&db.url, &source, &aws).await;
    assert_eq!(loaded_skipped_new(&third), (1, 3, 150));

    assert_eq!(
        loaded_keys(&db.pool).await,
        [
            "events/2026/11/26/01/obj-a",
            "events/2026/11/26/02/obj-b",
            "events/2026/11/27/01/obj-c",
            "events/2026/11/27/02/obj-d"
        ]
    );
    let mut want: Vec<uuid::Uuid> = [&a, &b, &c, &d]
        .iter()
        .flat_map(|v| v.iter().map(|e| e.id))
        .collect();
    want.sort();
    assert_eq!(event_ids(&db.pool).await, want);
    assert_books_balance(&db.pool).await;
}

#[tokio::test]
async fn a_notification_for_a_deleted_object_is_left_for_the_dead_letter_queue_and_the_rest_load() {
    let moto = Moto::start().await.expect("moto");
    let url = bucket_notifying_queue(&moto).await;
    let db = TestDb::new().await;
    let gone = hour_of_events(100, 21, 1);
    let kept = hour_of_events(300, 22, 2);
    // Announced, then deleted (a lifecycle rule, an operator) before the
    // loader got to it: no retry can ever fetch it.
    put(&moto, "events/2026/11/26/01/gone", ndjson(&gone)).await;
    moto.s3()
        .delete_object()
        .bucket(BUCKET)
        .key("events/2026/11/26/01/gone")
        .send()
        .await
        .unwrap();
    put(&moto, "events/2026/11/26/02/kept", ndjson(&kept)).await;
    peek_notifications(&moto, &url, 2).await;

    let s = load_once(&db.url, &format!("sqs:{url}"), &moto.aws_env()).await;
    assert_eq!(loaded_skipped_new(&s), (1, 0, 300));
    assert_eq!(loaded_keys(&db.pool).await, ["events/2026/11/26/02/kept"]);
    // Its message was not deleted: received, in flight until its visibility
    // timeout, then back (and, with a redrive policy, to the dead-letter
    // queue after maxReceiveCount receives).
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (0, 1));
    assert_books_balance(&db.pool).await;
}

/// The least-privilege front door of the loader: a notification naming an
/// object outside the events bucket and prefix (sent by anyone who can send
/// to the queue, or an upload elsewhere in the bucket) is never read, and an
/// object the loader may not read (AccessDenied) is not retried forever.
/// Both are left on the queue, and its redrive policy moves them to the
/// dead-letter queue after `maxReceiveCount` receives; the rest load.
#[tokio::test]
async fn foreign_and_forbidden_objects_go_to_the_dead_letter_queue_and_the_rest_load() {
    const MAX_RECEIVES: u32 = 2;
    let moto = Moto::start().await.expect("moto");
    create_bucket(&moto).await;
    // Messages reappear 2 s after a receive that did not delete them.
    let url = notify_queue_on_object_created(&moto, BUCKET, QUEUE, 2)
        .await
        .expect("bucket notifications");
    let dlq = redrive_to_dead_letter_queue(&moto, &url, "earshot-loader-dlq", MAX_RECEIVES)
        .await
        .expect("dead-letter queue");
    let proxy = S3DenyProxy::start(moto.endpoint(), &["/forbidden"])
        .await
        .expect("proxy");
    let db = TestDb::new().await;
    let kept = hour_of_events(300, 31, 1);

    // Elsewhere in the account: a bucket the edge never writes to, and a
    // forged notification naming its object.
    moto.s3()
        .create_bucket()
        .bucket("elsewhere")
        .send()
        .await
        .unwrap();
    moto.s3()
        .put_object()
        .bucket("elsewhere")
        .key("events/2026/11/26/01/forged")
        .body(ndjson(&hour_of_events(50, 32, 1)).into())
        .send()
        .await
        .unwrap();
    let forged = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"elsewhere"},"object":{"key":"events/2026/11/26/01/forged","size":10}}}]}"#;
    send_message(&moto, &url, forged).await;
    // In the events bucket, outside the events prefix.
    let upload = hour_of_events(60, 33, 1);
    put(&moto, "uploads/2026/11/26/01/upload", ndjson(&upload)).await;
    // Under the prefix, but not readable by the loader's role.
    let denied = hour_of_events(70, 34, 1);
    put(&moto, "events/2026/11/26/01/forbidden", ndjson(&denied)).await;
    put(&moto, "events/2026/11/26/01/kept", ndjson(&kept)).await;
    // Counted without receiving: a receive would count toward the redrive.
    eventually("the notifications", String::new, || async {
        (queue_depth(&moto, &url).await.unwrap() == (5, 0)).then_some(())
    })
    .await;

    let mut env = proxy.aws_env();
    env.push(("EARSHOT_EVENTS_BUCKET".into(), BUCKET.into()));
    let source = format!("sqs:{url}");
    // Every run takes what is visible; a message left undeleted comes back
    // after its visibility timeout, until the redrive policy moves it.
    let mut total = Summary::default();
    for run in 0.. {
        assert!(run < 10, "the queue never emptied");
        let s = load_once(&db.url, &source, &env).await;
        total.objects_loaded += s.objects_loaded;
        total.events_new += s.events_new;
        if queue_depth(&moto, &url).await.unwrap() == (0, 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    }
    assert_eq!((total.objects_loaded, total.events_new), (1, 300));
    // Read once per receive, never retried within one.
    assert_eq!(proxy.denials(), MAX_RECEIVES as usize);
    assert_eq!(queue_depth(&moto, &dlq).await.unwrap(), (3, 0));
    assert_eq!(loaded_keys(&db.pool).await, ["events/2026/11/26/01/kept"]);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 300);
    assert_books_balance(&db.pool).await;
}

/// Two notifications of one object in one poll: the loader prepares the
/// second (ledger check, download, parse) while the first is still in its
/// transaction, so the ledger check cannot see it yet; the claim inside the
/// transaction is what keeps the object to one load.
#[tokio::test]
async fn a_notification_repeated_within_one_poll_loads_its_object_once() {
    let moto = Moto::start().await.expect("moto");
    let url = bucket_notifying_queue(&moto).await;
    let db = TestDb::new().await;
    let events = hour_of_events(500, 3, 9);
    put(
        &moto,
        "events/2026/11/26/09/earshot-events-1-2026-11-26-09-00-00-c3",
        ndjson(&events),
    )
    .await;
    let bodies = peek_notifications(&moto, &url, 1).await;
    send_message(&moto, &url, &bodies[0]).await;
    // Both notifications, and S3's test event.
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (3, 0));

    let s = load_once(&db.url, &format!("sqs:{url}"), &moto.aws_env()).await;
    assert_eq!(loaded_skipped_new(&s), (1, 1, 500));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM events").await, 500);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM loaded_objects").await,
        1
    );
    assert_eq!(queue_depth(&moto, &url).await.unwrap(), (0, 0));
    assert_books_balance(&db.pool).await;
}
