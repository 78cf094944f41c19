//! Time partitioning: which folder a row's designated timestamp lands in.
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// How a table's rows are split into folders by their designated timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PartitionBy {
    None,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// Folder name of the single partition of an unpartitioned table.
const NONE_PARTITION: &str = "default";

impl PartitionBy {
    /// Parses `HOUR|DAY|WEEK|MONTH|YEAR|NONE` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "NONE" => Self::None,
            "HOUR" => Self::Hour,
            "DAY" => Self::Day,
            "WEEK" => Self::Week,
            "MONTH" => Self::Month,
            "YEAR" => Self::Year,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Hour => "HOUR",
            Self::Day => "DAY",
            Self::Week => "WEEK",
            Self::Month => "MONTH",
            Self::Year => "YEAR",
        }
    }

    /// The partition folder name for a timestamp in microseconds (UTC).
    pub fn key(self, micros: i64) -> String {
        let t = to_datetime(micros);
        match self {
            Self::None => NONE_PARTITION.to_string(),
            Self::Hour => t.format("%Y-%m-%dT%H").to_string(),
            Self::Day => t.format("%Y-%m-%d").to_string(),
            Self::Week => {
                let w = t.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Self::Month => t.format("%Y-%m").to_string(),
            Self::Year => t.format("%Y").to_string(),
        }
    }

    /// The half-open time range `[start, end)` in microseconds a partition
    /// folder covers, or `None` if `key` is not a valid name for this scheme.
    pub fn range(self, key: &str) -> Option<(i64, i64)> {
        let start: NaiveDateTime = match self {
            Self::None => return (key == NONE_PARTITION).then_some((i64::MIN, i64::MAX)),
            Self::Hour => NaiveDateTime::parse_from_str(&format!("{key}:00:00"), "%Y-%m-%dT%H:%M:%S").ok()?,
            Self::Day => NaiveDate::parse_from_str(key, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0)?,
            Self::Week => {
                let (y, w) = key.split_once("-W")?;
                NaiveDate::from_isoywd_opt(y.parse().ok()?, w.parse().ok()?, chrono::Weekday::Mon)?
                    .and_hms_opt(0, 0, 0)?
            }
            Self::Month => NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)?,
            Self::Year => NaiveDate::from_ymd_opt(key.parse().ok()?, 1, 1)?.and_hms_opt(0, 0, 0)?,
        };
        // Round-trip check rejects sloppy spellings such as `2024-1-5`.
        let start_us = start.and_utc().timestamp_micros();
        if self.key(start_us) != key {
            return None;
        }
        let end = match self {
            Self::None => unreachable!("handled above"),
            Self::Hour => start + Duration::hours(1),
            Self::Day => start + Duration::days(1),
            Self::Week => start + Duration::weeks(1),
            Self::Month => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?
            }
            Self::Year => NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)?.and_hms_opt(0, 0, 0)?,
        };
        debug_assert_eq!(start.minute(), 0);
        Some((start_us, end.and_utc().timestamp_micros()))
    }
}

fn to_datetime(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> i64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn keys_and_ranges_round_trip() {
        let t = us("2024-01-15 13:45:00");
        for (p, key) in [
            (PartitionBy::Hour, "2024-01-15T13"),
            (PartitionBy::Day, "2024-01-15"),
            (PartitionBy::Week, "2024-W03"),
            (PartitionBy::Month, "2024-01"),
            (PartitionBy::Year, "2024"),
            (PartitionBy::None, "default"),
        ] {
            assert_eq!(p.key(t), key, "{p:?}");
            let (start, end) = p.range(key).unwrap();
            assert!(start <= t && t < end, "{p:?}");
        }
        assert_eq!(
            PartitionBy::Day.range("2024-01-15"),
            Some((us("2024-01-15 00:00:00"), us("2024-01-16 00:00:00")))
        );
        assert_eq!(
            PartitionBy::Month.range("2024-12").unwrap().1,
            us("2025-01-01 00:00:00")
        );
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(PartitionBy::Day.range("2024-1-5"), None);
        assert_eq!(PartitionBy::Day.range("../x"), None);
        assert_eq!(PartitionBy::Hour.range("2024-01-15"), None);
        assert_eq!(PartitionBy::parse("fortnight"), None);
        assert_eq!(PartitionBy::parse("day"), Some(PartitionBy::Day));
    }
}
