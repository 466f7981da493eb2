//! S3 ObjectCreated notifications from SQS (production). A message is
//! deleted only after every object it names is committed; a message that
//! is not a notification, or names an object outside the events bucket and
//! prefix, is left for the queue's redrive policy to move to the dead-letter
//! queue.

use serde::Deserialize;

use super::{Delivery, EventsLocation, Object};

/// SQS returns at most 10 messages per ReceiveMessage.
pub const MAX_MESSAGES: i32 = 10;
/// Long polling: SQS's maximum wait, so an idle loader costs few requests.
pub const LONG_POLL_SECONDS: i32 = 20;

pub struct SqsSource {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    queue_url: String,
    admits: Option<EventsLocation>,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<NotificationRecord>,
    #[serde(rename = "Event", default)]
    event: Option<String>,
}

#[derive(Deserialize)]
struct NotificationRecord {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
}

/// Keys in notifications are URL-encoded, with `+` for spaces (moto even
/// encodes `/`).
pub fn decode_key(k: &str) -> String {
    let spaced = k.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The objects a message body names: `Ok(vec![])` for the `s3:TestEvent`
/// S3 sends when notifications are configured, `Err` for anything that is
/// not a notification, and for a notification naming any object `admits`
/// (when set) does not.
pub fn objects_of(body: &str, admits: Option<&EventsLocation>) -> Result<Vec<Object>, String> {
    let n: Notification =
        serde_json::from_str(body).map_err(|e| format!("not an S3 notification: {e}"))?;
    if n.event.as_deref() == Some("s3:TestEvent") {
        return Ok(vec![]);
    }
    if n.records.is_empty() {
        return Err("S3 notification without Records".into());
    }
    let mut objects = Vec::new();
    for r in n.records {
        if !r.event_name.starts_with("ObjectCreated") {
            continue;
        }
        let key = decode_key(&r.s3.object.key);
        let bucket = r.s3.bucket.name;
        if let Some(a) = admits {
            if !a.admits(&bucket, &key) {
                return Err(format!(
                    "names s3://{bucket}/{key}, outside the events location s3://{}/{} \
                     (EARSHOT_EVENTS_BUCKET, EARSHOT_EVENTS_PREFIX)",
                    a.bucket, a.prefix
                ));
            }
        }
        objects.push(Object {
            source: format!("s3://{bucket}"),
            key,
            etag: r.s3.object.etag.map(|e| super::s3::bare_etag(&e)),
        });
    }
    Ok(objects)
}

impl SqsSource {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
        queue_url: String,
        admits: Option<EventsLocation>,
    ) -> Self {
        Self {
            sqs,
            s3,
            queue_url,
            admits,
        }
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// The next usable deliveries; empty only when the queue had nothing.
    /// Unusable messages are skipped (they stay hidden for their visibility
    /// timeout, then return until the redrive policy moves them), and the
    /// queue is asked again, so `--once` never stops at a bad message while
    /// good ones wait behind it.
    pub async fn poll(&mut self, short: bool) -> anyhow::Result<Vec<Delivery>> {
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(MAX_MESSAGES)
                .wait_time_seconds(if short { 1 } else { LONG_POLL_SECONDS })
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "receiving from {}: {}",
                        self.queue_url,
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    )
                })?;
            if out.messages().is_empty() {
                return Ok(Vec::new());
            }
            let mut deliveries = Vec::new();
            for m in out.messages() {
                let Some(receipt) = m.receipt_handle() else {
                    continue;
                };
                match objects_of(m.body().unwrap_or_default(), self.admits.as_ref()) {
                    Ok(objects) => deliveries.push(Delivery {
                        objects,
                        receipt: Some(receipt.to_owned()),
                    }),
                    Err(why) => {
                        tracing::error!(message_id = m.message_id().unwrap_or_default(), reason = %why, "unusable SQS message left for the dead-letter queue");
                        metrics::counter!("earshot_loader_bad_messages_total").increment(1);
                    }
                }
            }
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
        }
    }

    pub async fn ack(&self, d: &Delivery) -> anyhow::Result<()> {
        if let Some(receipt) = &d.receipt {
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "deleting an SQS message: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    )
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_name_decoded_keys_and_test_events_name_nothing() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"raw"},
            "object":{"key":"events%2F2026%2F11%2F27%2Fa+b.gz","size":10,"eTag":"\"abc\""}}}]}"#;
        assert_eq!(
            objects_of(body, None).unwrap(),
            vec![Object {
                source: "s3://raw".into(),
                key: "events/2026/11/27/a b.gz".into(),
                etag: Some("abc".into())
            }]
        );
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-27T00:00:00Z","Bucket":"raw"}"#;
        assert_eq!(objects_of(test, None).unwrap(), vec![]);
        assert!(objects_of("hello", None)
            .unwrap_err()
            .starts_with("not an S3 notification"));
    }

    #[test]
    fn notifications_outside_the_events_bucket_and_prefix_are_refused() {
        let events = EventsLocation {
            bucket: "raw".into(),
            prefix: "events/".into(),
        };
        let notification = |bucket: &str, key: &str| {
            format!(
                r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}","eTag":"e"}}}}}}]}}"#
            )
        };
        assert_eq!(
            objects_of(&notification("raw", "events%2F2026%2Fa.gz"), Some(&events))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            objects_of(&notification("other", "events/a.gz"), Some(&events)).unwrap_err(),
            "names s3://other/events/a.gz, outside the events location s3://raw/events/ \
             (EARSHOT_EVENTS_BUCKET, EARSHOT_EVENTS_PREFIX)"
        );
        // Firehose's error prefix and anything else in the bucket are not events.
        for key in ["errors/a.gz", "event/a.gz", "uploads/events/a.gz"] {
            assert!(
                objects_of(&notification("raw", key), Some(&events)).is_err(),
                "{key}"
            );
        }
        assert_eq!(
            objects_of(&notification("other", "x"), None).unwrap().len(),
            1
        );
    }
}
