//! Dead letters (SPEC 2): a rejected record to the dead-letter topic with
//! its original key and bytes and the error and provenance headers, cut to
//! the topic's own size limit when it would not fit.

#[allow(unused_imports)]
use super::*;

/// The broker's default `message.max.bytes`: what a topic takes when its
/// own limit could not be read.
pub(super) const BROKER_DEFAULT_MESSAGE_MAX_BYTES: usize = 1_048_588;

/// Bytes a dead letter's key and value may take: the smaller of the
/// producer's `message.max.bytes` and the dead-letter topic's
/// `max.message.bytes` (`topic_max`; the broker default when it could not
/// be read), less room for headers and record overhead. A topic created by
/// hand keeps the broker's 1 MiB, and a near-limit input record plus our
/// headers would not fit it: the producer would fail on every restart.
pub(super) fn dlq_limit(cfg: &Config, topic_max: Option<usize>) -> usize {
    let max = cfg
        .kafka
        .producer
        .get("message.max.bytes")
        .or_else(|| cfg.kafka.client.get("message.max.bytes"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
    max.min(topic_max.unwrap_or(BROKER_DEFAULT_MESSAGE_MAX_BYTES))
        .saturating_sub(8 * 1024)
}

/// A dead letter's key and value, cut to fit `limit` bytes together.
pub(super) struct FittedLetter<'a> {
    pub(super) key: &'a [u8],
    pub(super) value: &'a [u8],
    pub(super) truncated: bool,
}

/// Keeps key and value whole when they fit; else the key up to a quarter
/// of the room, and as much of the value as is left.
pub(super) fn fit_dead_letter<'a>(
    key: &'a [u8],
    value: &'a [u8],
    limit: usize,
) -> FittedLetter<'a> {
    if key.len() + value.len() <= limit {
        return FittedLetter {
            key,
            value,
            truncated: false,
        };
    }
    let key = &key[..key.len().min(limit / 4)];
    let value = &value[..value.len().min(limit - key.len())];
    FittedLetter {
        key,
        value,
        truncated: true,
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(super) fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Worker {
    pub(super) fn dead_letter(
        &self,
        msg: &impl Message,
        rejection: &Rejection,
    ) -> Result<(), ServiceError> {
        // A record of a repartition topic names the record it was routed
        // from (SPEC 8): the dead letter keeps that provenance.
        let routed = |key: &str| -> Option<String> {
            if !self.router.is_repartition_topic(msg.topic()) {
                return None;
            }
            msg.headers()?
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        let source_topic = routed("source.topic").unwrap_or_else(|| msg.topic().to_string());
        let partition = routed("source.partition").unwrap_or_else(|| msg.partition().to_string());
        let offset = routed("source.offset").unwrap_or_else(|| msg.offset().to_string());
        let error = cut_str(&rejection.message, 1024);
        // A record near the broker's size limit plus our headers would not
        // fit the producer's: the dead letter then keeps what fits, says so
        // in `error.truncated` (the original sizes), and is counted.
        let fit = fit_dead_letter(
            msg.key().unwrap_or_default(),
            msg.payload().unwrap_or_default(),
            self.dlq_limit,
        );
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "error.reason",
                value: Some(rejection.reason.as_str()),
            })
            .insert(Header {
                key: "error.message",
                value: Some(error),
            })
            .insert(Header {
                key: "source.topic",
                value: Some(source_topic.as_str()),
            })
            .insert(Header {
                key: "source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "source.offset",
                value: Some(offset.as_str()),
            });
        let truncated = fit.truncated.then(|| {
            format!(
                "key {} of {} bytes, value {} of {} bytes",
                fit.key.len(),
                msg.key().map_or(0, <[u8]>::len),
                fit.value.len(),
                msg.payload().map_or(0, <[u8]>::len)
            )
        });
        if let Some(t) = &truncated {
            headers = headers.insert(Header {
                key: "error.truncated",
                value: Some(t.as_str()),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&self.cfg.kafka.dlq_topic).headers(headers);
        if msg.key().is_some() {
            rec = rec.key(fit.key);
        }
        if msg.payload().is_some() {
            rec = rec.payload(fit.value);
        }
        self.send(rec)?;
        if let Some(t) = &truncated {
            self.metrics.dlq_truncated.inc();
            warn!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                kept = t.as_str(),
                "Dead letter cut to fit the message size limit."
            );
        }
        self.metrics
            .records_rejected
            .with_label_values(&[rejection.reason.as_str()])
            .inc();
        self.metrics.dlq_records.inc();
        warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            reason = rejection.reason.as_str(),
            error = rejection.message.as_str(),
            "Touchpoint rejected to the dead-letter topic."
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_cut_to_fit() {
        let key = vec![b'k'; 10];
        let value = vec![b'v'; 1000];
        let f = fit_dead_letter(&key, &value, 2000);
        assert!(!f.truncated && f.key.len() == 10 && f.value.len() == 1000);
        let f = fit_dead_letter(&key, &value, 500);
        assert!(f.truncated && f.key.len() == 10 && f.value.len() == 490);
        let big_key = vec![b'k'; 1000];
        let f = fit_dead_letter(&big_key, &value, 500);
        assert!(f.truncated && f.key.len() == 125 && f.value.len() == 375);
        assert_eq!(cut_str("héllo", 2), "h");
        assert_eq!(cut_str("héllo", 3), "hé");
        let cfg = Config::from_parts(
            "t",
            "[kafka.producer]\n\"message.max.bytes\" = \"2000000\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(dlq_limit(&cfg, Some(8 << 20)), 2_000_000 - 8192);
        let cfg = Config::from_parts("t", "", &[]).unwrap();
        assert_eq!(dlq_limit(&cfg, Some(8_396_800)), 8 * 1024 * 1024 - 8192);
        // A topic created by hand keeps the broker's 1 MiB; unknown: the same.
        assert_eq!(dlq_limit(&cfg, Some(1_048_588)), 1_048_588 - 8192);
        assert_eq!(dlq_limit(&cfg, None), 1_048_588 - 8192);
        assert_eq!(
            MAX_MESSAGE_BYTES_STR.parse::<usize>().ok(),
            Some(DEFAULT_MESSAGE_MAX_BYTES + 8192)
        );
    }
}
