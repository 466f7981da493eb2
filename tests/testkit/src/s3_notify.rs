//! S3 → SQS ObjectCreated notifications on moto, as the SAM stack wires them
//! for the loader, and a look at a queue's depth.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::Moto;

/// Creates `queue` (messages reappear `visibility_timeout_s` seconds after
/// a receive that did not delete them) and makes every object created in
/// `bucket` (which must exist) send a notification to it. Returns the queue
/// URL.
///
/// S3 (and moto) first sends an `s3:TestEvent` message to the queue; it is
/// left there, as in production, for the loader to skip.
pub async fn notify_queue_on_object_created(
    moto: &Moto,
    bucket: &str,
    queue: &str,
    visibility_timeout_s: u32,
) -> anyhow::Result<String> {
    let (url, arn) = create_queue(
        moto,
        queue,
        &[(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout_s.to_string(),
        )],
    )
    .await?;
    let config = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .id("earshot-loader")
                .queue_arn(arn)
                .events(Event::S3ObjectCreated)
                .build()
                .context("building the queue configuration")?,
        )
        .build();
    moto.s3()
        .put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(config)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))
        .with_context(|| format!("configuring notifications of bucket {bucket}"))?;
    Ok(url)
}

/// Creates `name` with `attributes`: its URL and ARN.
async fn create_queue(
    moto: &Moto,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> anyhow::Result<(String, String)> {
    let mut create = moto.sqs().create_queue().queue_name(name);
    for (k, v) in attributes {
        create = create.attributes(k.clone(), v);
    }
    let url = create
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))
        .with_context(|| format!("creating queue {name}"))?
        .queue_url()
        .context("CreateQueue answered without a URL")?
        .to_owned();
    let arn = queue_attributes(moto, &url, &[QueueAttributeName::QueueArn])
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .with_context(|| format!("queue {name} has no QueueArn"))?;
    Ok((url, arn))
}

/// The named attributes of the queue at `url`.
pub async fn queue_attributes(
    moto: &Moto,
    url: &str,
    names: &[QueueAttributeName],
) -> anyhow::Result<HashMap<QueueAttributeName, String>> {
    let out = moto
        .sqs()
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))
        .with_context(|| format!("getting attributes of {url}"))?;
    Ok(out.attributes().cloned().unwrap_or_default())
}

/// Messages on the queue: (visible, in flight — received but neither
/// deleted nor timed out yet).
pub async fn queue_depth(moto: &Moto, url: &str) -> anyhow::Result<(u64, u64)> {
    let attrs = queue_attributes(
        moto,
        url,
        &[
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ],
    )
    .await?;
    let get = |n: &QueueAttributeName| -> anyhow::Result<u64> {
        attrs
            .get(n)
            .with_context(|| format!("{n:?} missing"))?
            .parse()
            .with_context(|| format!("{n:?} is not a number"))
    };
    Ok((
        get(&QueueAttributeName::ApproximateNumberOfMessages)?,
        get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
    ))
}

/// Gives the queue at `url` a dead-letter queue named `dead_letter` (created
/// here), to which a message moves once it was received `max_receive_count`
/// times without being deleted, as the SAM stack's redrive policy does.
/// Returns the dead-letter queue's URL.
pub async fn redrive_to_dead_letter_queue(
    moto: &Moto,
    url: &str,
    dead_letter: &str,
    max_receive_count: u32,
) -> anyhow::Result<String> {
    let (dlq, arn) = create_queue(moto, dead_letter, &[]).await?;
    let policy = serde_json::json!({
        "deadLetterTargetArn": arn,
        "maxReceiveCount": max_receive_count.to_string(),
    });
    moto.sqs()
        .set_queue_attributes()
        .queue_url(url)
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))
        .with_context(|| format!("setting the redrive policy of {url}"))?;
    Ok(dlq)
}
