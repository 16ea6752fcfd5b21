//! Retries that survive a consumer crash, and dead letters (DESIGN.md section 6).
//!
//! A clustering consumer whose listener answers RECONSUME_LATER sends each message back: a
//! copy goes to its group's retry topic `%RETRY%<group>` as a scheduled message (delay level
//! `first_delay_level + reconsume_times`, capped at the table's last level), carrying the
//! original topic, the new reconsume count and the original message id as properties. The
//! group consumes its retry topic like any subscription, so the copy comes back to one of its
//! members after the delay — even if the member that failed is gone — and the original
//! queue's offset moves on. After `max_reconsume_times` failed deliveries the copy goes to
//! `%DLQ%<group>` instead, which nothing consumes automatically (`ringmq dlq list|resend`).
//!
//! The property names are RocketMQ's, so tools that know them read them. Pure: the decision
//! only; the push consumer does the sending (`client/push_consumer/threads.rs`).

/// Prefix of a group's retry topic.
pub const RETRY_TOPIC_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic.
pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";
/// Property: the topic a retried or dead-lettered message was first sent to.
pub const PROPERTY_RETRY_TOPIC: &str = "RETRY_TOPIC";
/// Property: how many times the message was delivered and failed before this copy.
pub const PROPERTY_RECONSUME_TIME: &str = "RECONSUME_TIME";
/// Property: the id of the message as first stored.
pub const PROPERTY_ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";

/// The retry topic of `group`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_TOPIC_PREFIX}{group}")
}

/// The dead-letter topic of `group`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_TOPIC_PREFIX}{group}")
}

/// How a group retries (RocketMQ's defaults: level 3 first, 16 retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendBackPolicy {
    /// Failed deliveries after which a message goes to the dead-letter topic.
    pub max_reconsume_times: u32,
    /// Delay level of the first retry; each later one waits one level longer.
    pub first_delay_level: u32,
    /// The highest delay level the broker knows (18 by default).
    pub max_delay_level: u32,
}

impl Default for SendBackPolicy {
    fn default() -> Self {
        SendBackPolicy { max_reconsume_times: 16, first_delay_level: 3, max_delay_level: 18 }
    }
}

/// Where a failed message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendBack {
    /// To the retry topic, delivered after `delay_level`, carrying `reconsume_times`.
    Retry { delay_level: u32, reconsume_times: u32 },
    /// To the dead-letter topic, carrying `reconsume_times`.
    DeadLetter { reconsume_times: u32 },
}

impl SendBackPolicy {
    /// A message delivered `reconsume_times` times before this failed delivery (0 for a
    /// message from its original topic) failed again.
    pub fn decide(&self, reconsume_times: u32) -> SendBack {
        let next = reconsume_times.saturating_add(1);
        if reconsume_times >= self.max_reconsume_times {
            return SendBack::DeadLetter { reconsume_times: next };
        }
        let level = self
            .first_delay_level
            .saturating_add(reconsume_times)
            .clamp(1, self.max_delay_level.max(1));
        SendBack::Retry { delay_level: level, reconsume_times: next }
    }
}

/// The reconsume count a message carries (0 without the property or with a bad value).
pub fn reconsume_times<'a>(mut properties: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u32 {
    properties
        .find(|(name, _)| *name == PROPERTY_RECONSUME_TIME.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_one_level_longer_each_time_then_go_to_the_dead_letter_topic() {
        let p = SendBackPolicy::default();
        assert_eq!(p.decide(0), SendBack::Retry { delay_level: 3, reconsume_times: 1 });
        assert_eq!(p.decide(1), SendBack::Retry { delay_level: 4, reconsume_times: 2 });
        assert_eq!(p.decide(15), SendBack::Retry { delay_level: 18, reconsume_times: 16 });
        assert_eq!(p.decide(16), SendBack::DeadLetter { reconsume_times: 17 });
        assert_eq!(p.decide(u32::MAX), SendBack::DeadLetter { reconsume_times: u32::MAX });
        // Levels never pass the table's last one.
        let long = SendBackPolicy { max_reconsume_times: 40, ..p };
        assert_eq!(long.decide(30), SendBack::Retry { delay_level: 18, reconsume_times: 31 });
        // No retries at all: the first failure is a dead letter.
        let none = SendBackPolicy { max_reconsume_times: 0, ..p };
        assert_eq!(none.decide(0), SendBack::DeadLetter { reconsume_times: 1 });
    }

    #[test]
    fn every_message_is_retried_exactly_max_times_before_its_dead_letter() {
        for max in 0..20 {
            let p = SendBackPolicy { max_reconsume_times: max, ..SendBackPolicy::default() };
            let (mut times, mut retries) = (0, 0);
            loop {
                match p.decide(times) {
                    SendBack::Retry { reconsume_times, delay_level } => {
                        assert!((1..=18).contains(&delay_level));
                        assert_eq!(reconsume_times, times + 1);
                        times = reconsume_times;
                        retries += 1;
                    }
                    SendBack::DeadLetter { reconsume_times } => {
                        assert_eq!(reconsume_times, max + 1);
                        break;
                    }
                }
            }
            assert_eq!(retries, max);
        }
    }

    #[test]
    fn the_reconsume_count_is_read_from_its_property() {
        let props: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"RECONSUME_TIME", b"7")];
        assert_eq!(reconsume_times(props.into_iter()), 7);
        let bad: Vec<(&[u8], &[u8])> = vec![(b"RECONSUME_TIME", b"x")];
        assert_eq!(reconsume_times(bad.into_iter()), 0);
        assert_eq!(reconsume_times(std::iter::empty()), 0);
        assert_eq!(retry_topic("billing"), "%RETRY%billing");
        assert_eq!(dlq_topic("billing"), "%DLQ%billing");
    }
}
