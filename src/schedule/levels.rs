//! Delay levels and delivery times (pure: no clock reads, `now_ms` is passed in).
//!
//! A scheduled message asks for either a **delay level** (RocketMQ's 1-based levels, default
//! `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`) or an **absolute delivery
//! time** in Unix milliseconds. [`Schedule::deliver_at_ms`] turns either into the time the
//! broker delivers it:
//! - a level outside `1..=levels`, or whose delay is past the horizon, is refused;
//! - an absolute time in the past (or now) delivers at once (`now_ms`);
//! - an absolute time more than the horizon (default 40 days) ahead is refused, so a typo in a
//!   timestamp cannot park a message for centuries, and the timer wheel's range stays bounded.
//!
//! The level table is configurable; [`DelayLevels::parse`] also reads RocketMQ's
//! `messageDelayLevel` string form (`"1s 5s 10s ... 2h"`; units `ms`, `s`, `m`, `h`, `d`).

use std::fmt;

/// RocketMQ's default `messageDelayLevel`.
pub const ROCKETMQ_DELAY_LEVELS: &str =
    "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// Default horizon: absolute delivery times at most this far ahead are accepted.
pub const DEFAULT_HORIZON_MS: u64 = 40 * 24 * 3_600_000;

/// Most delay levels a table may hold (the level travels as one byte on the wire).
pub const MAX_DELAY_LEVELS: usize = 255;

/// Why a delay level table or a delivery request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("delay level table is empty")]
    NoLevels,
    #[error("delay level table holds {0} levels, at most {MAX_DELAY_LEVELS}")]
    TooManyLevels(usize),
    #[error("delay level {index} ({text:?}) is not a duration like 5s, 10m, 2h: {reason}")]
    BadLevel { index: usize, text: String, reason: String },
    #[error("delay level {level} does not exist: this broker has levels 1..={max}")]
    UnknownLevel { level: u32, max: usize },
    #[error(
        "delivery time {deliver_at_ms} ms is {ahead_ms} ms ahead, beyond the horizon of \
         {horizon_ms} ms (schedule.horizon_ms)"
    )]
    BeyondHorizon { deliver_at_ms: i64, ahead_ms: u64, horizon_ms: u64 },
}

/// The delay of each level, level 1 first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayLevels {
    delays_ms: Vec<u64>,
}

impl Default for DelayLevels {
    fn default() -> Self {
        DelayLevels::parse(ROCKETMQ_DELAY_LEVELS).expect("the default table parses")
    }
}

impl DelayLevels {
    /// A table from delays in milliseconds, level 1 first.
    pub fn new(delays_ms: Vec<u64>) -> Result<Self, ScheduleError> {
        if delays_ms.is_empty() {
            return Err(ScheduleError::NoLevels);
        }
        if delays_ms.len() > MAX_DELAY_LEVELS {
            return Err(ScheduleError::TooManyLevels(delays_ms.len()));
        }
        Ok(DelayLevels { delays_ms })
    }

    /// Parses RocketMQ's `messageDelayLevel` form: durations separated by spaces.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let delays = text
            .split_whitespace()
            .enumerate()
            .map(|(i, word)| {
                parse_duration_ms(word).map_err(|reason| ScheduleError::BadLevel {
                    index: i + 1,
                    text: word.to_owned(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        DelayLevels::new(delays)
    }

    pub fn len(&self) -> usize {
        self.delays_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.delays_ms.is_empty()
    }

    /// The delay of `level` (1-based).
    pub fn delay_ms(&self, level: u32) -> Result<u64, ScheduleError> {
        let unknown = ScheduleError::UnknownLevel { level, max: self.delays_ms.len() };
        let index = (level as usize).checked_sub(1).ok_or_else(|| unknown.clone())?;
        self.delays_ms.get(index).copied().ok_or(unknown)
    }
}

impl fmt::Display for DelayLevels {
    /// The `messageDelayLevel` form [`DelayLevels::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.delays_ms.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match *d {
                d if d % 86_400_000 == 0 && d > 0 => write!(f, "{}d", d / 86_400_000)?,
                d if d % 3_600_000 == 0 && d > 0 => write!(f, "{}h", d / 3_600_000)?,
                d if d % 60_000 == 0 && d > 0 => write!(f, "{}m", d / 60_000)?,
                d if d % 1000 == 0 && d > 0 => write!(f, "{}s", d / 1000)?,
                d => write!(f, "{d}ms")?,
            }
        }
        Ok(())
    }
}

/// One duration of the `messageDelayLevel` form: digits then a unit (`ms s m h d`).
fn parse_duration_ms(word: &str) -> Result<u64, String> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = word.split_at(digits);
    let n: u64 = number.parse().map_err(|_| "it does not start with a number".to_owned())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(scale).ok_or_else(|| "it overflows".to_owned())
}

/// When a message asks to be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryRequest {
    /// A delay level, 1-based.
    Level(u32),
    /// An absolute time, Unix milliseconds.
    AtMs(i64),
}

/// The levels and the horizon: turns a request into a delivery time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub levels: DelayLevels,
    pub horizon_ms: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule { levels: DelayLevels::default(), horizon_ms: DEFAULT_HORIZON_MS }
    }
}

impl Schedule {
    /// The Unix time in milliseconds at which a message sent at `now_ms` asking for
    /// `request` is delivered: never before `now_ms`, never past `now_ms + horizon_ms`.
    pub fn deliver_at_ms(
        &self,
        request: DeliveryRequest,
        now_ms: i64,
    ) -> Result<i64, ScheduleError> {
        match request {
            DeliveryRequest::Level(level) => {
                let delay = self.levels.delay_ms(level)?;
                let at = now_ms.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
                if delay > self.horizon_ms {
                    return Err(ScheduleError::BeyondHorizon {
                        deliver_at_ms: at,
                        ahead_ms: delay,
                        horizon_ms: self.horizon_ms,
                    });
                }
                Ok(at)
            }
            DeliveryRequest::AtMs(at) if at <= now_ms => Ok(now_ms),
            DeliveryRequest::AtMs(at) => {
                let ahead_ms = at.abs_diff(now_ms);
                if ahead_ms > self.horizon_ms {
                    return Err(ScheduleError::BeyondHorizon {
                        deliver_at_ms: at,
                        ahead_ms,
                        horizon_ms: self.horizon_ms,
                    });
                }
                Ok(at)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_levels_are_rocketmqs() {
        let l = DelayLevels::default();
        assert_eq!(l.len(), 18);
        assert_eq!(l.delay_ms(1), Ok(1000));
        assert_eq!(l.delay_ms(3), Ok(10_000));
        assert_eq!(l.delay_ms(5), Ok(60_000));
        assert_eq!(l.delay_ms(16), Ok(1_800_000));
        assert_eq!(l.delay_ms(18), Ok(7_200_000));
        assert_eq!(l.delay_ms(0), Err(ScheduleError::UnknownLevel { level: 0, max: 18 }));
        assert_eq!(l.delay_ms(19), Err(ScheduleError::UnknownLevel { level: 19, max: 18 }));
        assert_eq!(l.to_string(), ROCKETMQ_DELAY_LEVELS);
    }

    #[test]
    fn custom_tables_parse_and_print_back() {
        let l = DelayLevels::parse("  100ms 2s\t3m 1h 1d ").unwrap();
        assert_eq!(l.delay_ms(1), Ok(100));
        assert_eq!(l.delay_ms(5), Ok(86_400_000));
        assert_eq!(DelayLevels::parse(&l.to_string()), Ok(l));
    }

    #[test]
    fn bad_tables_are_refused_with_the_word_at_fault() {
        assert_eq!(DelayLevels::parse(" "), Err(ScheduleError::NoLevels));
        for bad in ["1s x", "1s 5", "1s 5y", "1s s", "1s 99999999999999999999d"] {
            assert!(
                matches!(DelayLevels::parse(bad), Err(ScheduleError::BadLevel { index: 2, .. })),
                "{bad}"
            );
        }
        let many = vec!["1s"; MAX_DELAY_LEVELS + 1].join(" ");
        assert_eq!(DelayLevels::parse(&many), Err(ScheduleError::TooManyLevels(256)));
    }

    #[test]
    fn delivery_times_follow_levels_past_and_horizon() {
        let s = Schedule { levels: DelayLevels::default(), horizon_ms: 10_000 };
        let now = 1_000_000;
        assert_eq!(s.deliver_at_ms(DeliveryRequest::Level(2), now), Ok(now + 5000));
        assert!(s.deliver_at_ms(DeliveryRequest::Level(0), now).is_err());
        assert_eq!(s.deliver_at_ms(DeliveryRequest::AtMs(now - 5), now), Ok(now));
        assert_eq!(s.deliver_at_ms(DeliveryRequest::AtMs(i64::MIN), now), Ok(now));
        assert_eq!(s.deliver_at_ms(DeliveryRequest::AtMs(now + 10_000), now), Ok(now + 10_000));
        assert_eq!(
            s.deliver_at_ms(DeliveryRequest::AtMs(now + 10_001), now),
            Err(ScheduleError::BeyondHorizon {
                deliver_at_ms: now + 10_001,
                ahead_ms: 10_001,
                horizon_ms: 10_000
            })
        );
        assert!(s.deliver_at_ms(DeliveryRequest::AtMs(i64::MAX), now).is_err());
        // A level longer than the horizon (a short retention) is refused like a far time.
        let short = Schedule { levels: DelayLevels::default(), horizon_ms: 1_800_000 };
        assert_eq!(short.deliver_at_ms(DeliveryRequest::Level(16), now), Ok(now + 1_800_000));
        assert!(matches!(
            short.deliver_at_ms(DeliveryRequest::Level(17), now),
            Err(ScheduleError::BeyondHorizon { ahead_ms: 3_600_000, .. })
        ));
    }
}
