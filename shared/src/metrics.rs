//! Per-owner usage metrics over a time window (`GET /v1/metrics`, and the JWT background-removal route's
//! `GET /metrics/`). Pure: the caller reads the jobs, this module only counts.

use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

use crate::job::{Job, JobStatus};

/// Default window of `GET /v1/metrics`, in hours.
pub const DEFAULT_WINDOW_HOURS: u32 = 24;
/// Longest accepted window, in hours (30 days: the job records' default lifetime).
pub const MAX_WINDOW_HOURS: u32 = 720;

/// Processing-time statistics of the jobs that started and finished, in milliseconds
/// (`finished_at - started_at`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessingTime {
    /// How many jobs have both timestamps.
    pub count: usize,
    /// Arithmetic mean in ms, `null` when `count` is 0.
    pub average_ms: Option<f64>,
    /// 95th percentile in ms by the nearest-rank method (the smallest value with at least 95 %
    /// of the values at or below it), `null` when `count` is 0.
    pub p95_ms: Option<i64>,
}

/// One owner's usage in `[from, to]`, by job creation time.
///
/// JSON: `{"window_hours", "from", "to", "jobs_total", "jobs_by_status": {"queued", "processing",
/// "succeeded", "failed", "canceled"}, "jobs_by_operation": {"remove_background", …},
/// "processing_time": {"count", "average_ms", "p95_ms"}, "truncated"}`. Every status is present
/// (0 when none); operations appear once used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageMetrics {
    /// Length of the window, in hours.
    pub window_hours: u32,
    /// Start of the window (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// End of the window: when the metrics were computed (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    /// Jobs created in the window.
    pub jobs_total: usize,
    /// Those jobs by current status.
    pub jobs_by_status: BTreeMap<&'static str, usize>,
    /// Those jobs by operation name.
    pub jobs_by_operation: BTreeMap<&'static str, usize>,
    /// Processing time of those that ran to a terminal state.
    pub processing_time: ProcessingTime,
    /// True when the reader stopped at its bound before the window's start: the counts cover
    /// only the newest jobs.
    pub truncated: bool,
}

/// Counts the jobs created in `[now - window_hours, now]`; jobs outside the window are ignored,
/// so the caller may pass a page that overlaps it.
pub fn aggregate<'a>(
    jobs: impl IntoIterator<Item = &'a Job>,
    window_hours: u32,
    now: OffsetDateTime,
    truncated: bool,
) -> UsageMetrics {
    let from = window_start(window_hours, now);
    let mut by_status: BTreeMap<&'static str, usize> =
        JobStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut by_operation = BTreeMap::new();
    let mut durations = Vec::new();
    let mut total = 0;
    for job in jobs {
        if job.created_at < from || job.created_at > now {
            continue;
        }
        total += 1;
        *by_status.entry(job.status.as_str()).or_default() += 1;
        *by_operation.entry(job.operation.name()).or_default() += 1;
        if let Some(ms) = job.duration_ms() {
            durations.push(ms.max(0));
        }
    }
    UsageMetrics {
        window_hours,
        from,
        to: now,
        jobs_total: total,
        jobs_by_status: by_status,
        jobs_by_operation: by_operation,
        processing_time: processing_time(durations),
        truncated,
    }
}

/// The first instant of a window of `window_hours` ending at `now`.
pub fn window_start(window_hours: u32, now: OffsetDateTime) -> OffsetDateTime {
    now - time::Duration::hours(i64::from(window_hours))
}

fn processing_time(mut ms: Vec<i64>) -> ProcessingTime {
    if ms.is_empty() {
        return ProcessingTime {
            count: 0,
            average_ms: None,
            p95_ms: None,
        };
    }
    ms.sort_unstable();
    let n = ms.len();
    let sum: i64 = ms.iter().sum();
    // Nearest rank: ceil(0.95 n), 1-based.
    let rank = (95 * n).div_ceil(100);
    ProcessingTime {
        count: n,
        average_ms: Some(sum as f64 / n as f64),
        p95_ms: Some(ms[rank.max(1) - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobError, Operation, OwnerId};
    use crate::operation::remove_background::RemoveBackgroundParams;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-21 12:00 UTC);

    fn job(created_min_ago: i64, status: JobStatus, ran_ms: Option<i64>) -> Job {
        let created = NOW - time::Duration::minutes(created_min_ago);
        let mut j = Job::new(
            ulid::Ulid::new(),
            OwnerId::parse("acme").unwrap(),
            Operation::RemoveBackground(RemoveBackgroundParams::with_model("u2net")),
            Default::default(),
            created,
            time::Duration::days(30),
        );
        j.status = status;
        if let Some(ms) = ran_ms {
            let started = created + time::Duration::seconds(1);
            j.started_at = Some(started);
            j.finished_at = Some(started + time::Duration::milliseconds(ms));
        }
        if status == JobStatus::Failed {
            j.error = Some(JobError::new("invalid_image", "bad"));
        }
        j
    }

    #[test]
    fn counts_by_status_and_operation_inside_the_window_only() {
        let jobs = [
            job(10, JobStatus::Succeeded, Some(1000)),
            job(20, JobStatus::Succeeded, Some(3000)),
            job(30, JobStatus::Failed, Some(500)),
            job(40, JobStatus::Queued, None),
            job(50, JobStatus::Processing, None),
            job(60, JobStatus::Canceled, None),
            // Outside a 24 h window.
            job(24 * 60 + 1, JobStatus::Succeeded, Some(99_999)),
        ];
        let m = aggregate(&jobs, 24, NOW, false);
        assert_eq!(m.jobs_total, 6);
        assert_eq!(m.from, datetime!(2026-11-20 12:00 UTC));
        assert_eq!(m.to, NOW);
        assert_eq!(m.jobs_by_status["succeeded"], 2);
        assert_eq!(m.jobs_by_status["failed"], 1);
        assert_eq!(m.jobs_by_status["queued"], 1);
        assert_eq!(m.jobs_by_status["processing"], 1);
        assert_eq!(m.jobs_by_status["canceled"], 1);
        assert_eq!(m.jobs_by_operation["remove_background"], 6);
        assert_eq!(m.jobs_by_operation.len(), 1);
        assert_eq!(m.processing_time.count, 3);
        assert_eq!(m.processing_time.average_ms, Some(1500.0));
        // Nearest rank of 3 values: ceil(2.85) = 3rd.
        assert_eq!(m.processing_time.p95_ms, Some(3000));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["from"], "2026-11-20T12:00:00Z");
        assert_eq!(v["processing_time"]["average_ms"], 1500.0);
        assert_eq!(v["truncated"], false);
    }

    #[test]
    fn p95_is_the_nearest_rank() {
        // 1..=100 ms: the 95th value.
        let jobs: Vec<Job> = (1..=100)
            .map(|ms| job(1, JobStatus::Succeeded, Some(ms)))
            .collect();
        let m = aggregate(&jobs, 1, NOW, false);
        assert_eq!(m.processing_time.count, 100);
        assert_eq!(m.processing_time.p95_ms, Some(95));
        assert_eq!(m.processing_time.average_ms, Some(50.5));
        // 1..=20 ms: ceil(19) = 19th value.
        let m = aggregate(&jobs[..20], 1, NOW, false);
        assert_eq!(m.processing_time.p95_ms, Some(19));
        // One value is its own percentile.
        let m = aggregate(&jobs[..1], 1, NOW, false);
        assert_eq!(m.processing_time.p95_ms, Some(1));
        assert_eq!(m.processing_time.average_ms, Some(1.0));
    }

    #[test]
    fn an_empty_window_has_zero_counts_and_no_times() {
        let m = aggregate(&[], 24, NOW, true);
        assert_eq!(m.jobs_total, 0);
        assert_eq!(m.jobs_by_status.len(), 5);
        assert!(m.jobs_by_status.values().all(|n| *n == 0));
        assert!(m.jobs_by_operation.is_empty());
        assert_eq!(
            m.processing_time,
            ProcessingTime {
                count: 0,
                average_ms: None,
                p95_ms: None
            }
        );
        assert!(m.truncated);
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["processing_time"]["p95_ms"].is_null());
    }
}
