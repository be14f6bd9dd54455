//! Knative KPA semantics: observed concurrency (or request rate) is averaged over a
//! stable window and a short panic window; desired = ceil(average / target). When
//! the panic window demands at least `panic_threshold` x the ready capacity the
//! autoscaler panics: it scales on the panic window and never scales down until the
//! stable window has passed without panic. At zero demand over the whole stable
//! window and past the grace period, `minReplicas: 0` revisions go to zero.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::isvc::{ScaleMetric, Scaling};

#[derive(Debug, Clone)]
pub struct KpaConfig {
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// 2.0 = 200 %.
    pub panic_threshold: f64,
    pub scale_to_zero_grace: Duration,
}

#[derive(Debug, Default)]
pub struct Kpa {
    /// (when, concurrency in flight and queued, requests admitted so far)
    samples: VecDeque<(Instant, f64, u64)>,
    panic_until: Option<Instant>,
    /// The highest recommendation during the current panic.
    panic_peak: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub desired: u32,
    pub panicking: bool,
    pub stable_value: f64,
    pub panic_value: f64,
}

impl Kpa {
    pub fn record(&mut self, now: Instant, concurrency: f64, requests_total: u64, keep: Duration) {
        self.samples.push_back((now, concurrency, requests_total));
        while let Some((t, _, _)) = self.samples.front() {
            if now.duration_since(*t) > keep {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn average(&self, now: Instant, window: Duration, metric: ScaleMetric) -> f64 {
        let inside: Vec<&(Instant, f64, u64)> = self
            .samples
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) <= window)
            .collect();
        let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
            return 0.0;
        };
        match metric {
            ScaleMetric::Concurrency => inside.iter().map(|(_, c, _)| c).sum::<f64>() / inside.len() as f64,
            ScaleMetric::Rps => {
                let span = last.0.duration_since(first.0).as_secs_f64();
                if span <= 0.0 {
                    0.0
                } else {
                    last.2.saturating_sub(first.2) as f64 / span
                }
            }
        }
    }

    /// Whether anything arrived or was in flight during the window.
    fn any_demand(&self, now: Instant, window: Duration) -> bool {
        let inside: Vec<&(Instant, f64, u64)> = self
            .samples
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) <= window)
            .collect();
        inside.iter().any(|(_, c, _)| *c > 0.0)
            || matches!((inside.first(), inside.last()), (Some(a), Some(b)) if b.2 > a.2)
    }

    /// `ready` replicas now; `idle_since` the last request (None: never).
    pub fn decide(
        &mut self,
        now: Instant,
        scaling: &Scaling,
        ready: u32,
        config: &KpaConfig,
        last_request: Option<Instant>,
        started: Instant,
    ) -> Decision {
        let stable = self.average(now, config.stable_window, scaling.metric);
        let panic = self.average(now, config.panic_window, scaling.metric);
        let target = scaling.target.max(0.01);
        let stable_want = (stable / target).ceil() as u32;
        let panic_want = (panic / target).ceil() as u32;
        // Knative compares panic-window demand with what the ready pods can take.
        let capacity = ready.max(1) as f64 * target;
        if panic / capacity >= config.panic_threshold && panic_want > ready {
            self.panic_until = Some(now.checked_add(config.stable_window).unwrap_or(now));
        }
        let panicking = self.panic_until.is_some_and(|until| now < until);
        let mut desired = if panicking {
            self.panic_peak = self.panic_peak.max(panic_want).max(ready);
            self.panic_peak
        } else {
            self.panic_until = None;
            self.panic_peak = 0;
            stable_want
        };
        if desired == 0 {
            let idle_for = now.duration_since(last_request.unwrap_or(started));
            let demand = self.any_demand(now, config.stable_window);
            // Hold one replica until the grace period has passed with no request.
            if demand || idle_for < config.scale_to_zero_grace {
                desired = 1;
            }
        }
        Decision {
            desired: desired.clamp(
                scaling.min_replicas,
                scaling.max_replicas.max(scaling.min_replicas),
            ),
            panicking,
            stable_value: stable,
            panic_value: panic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(min: u32, max: u32) -> Scaling {
        Scaling {
            min_replicas: min,
            max_replicas: max,
            metric: ScaleMetric::Concurrency,
            target: 1.0,
            container_concurrency: 0,
        }
    }

    fn config() -> KpaConfig {
        KpaConfig {
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_to_zero_grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn scales_on_concurrency_panics_and_goes_to_zero() {
        let start = Instant::now();
        let mut kpa = Kpa::default();
        let c = config();
        let s = scaling(0, 10);
        // Steady 2 concurrent for 60 s: 2 replicas.
        for i in 0..60 {
            kpa.record(
                start + Duration::from_secs(i),
                2.0,
                i * 10,
                Duration::from_secs(60),
            );
        }
        let now = start + Duration::from_secs(59);
        let d = kpa.decide(now, &s, 2, &c, Some(now), start);
        assert_eq!((d.desired, d.panicking), (2, false));
        // A burst to 8 for 3 s: panic window says 8 >= 2 x 2 -> panic, scale up at once.
        for i in 60..63 {
            kpa.record(
                start + Duration::from_secs(i),
                8.0,
                i * 10,
                Duration::from_secs(60),
            );
        }
        let now = start + Duration::from_secs(62);
        let d = kpa.decide(now, &s, 2, &c, Some(now), start);
        assert!(d.panicking);
        assert!(d.desired >= 5, "{d:?}");
        // Load gone: still panicking, never below the peak.
        for i in 63..70 {
            kpa.record(start + Duration::from_secs(i), 0.0, 630, Duration::from_secs(60));
        }
        let d2 = kpa.decide(
            start + Duration::from_secs(69),
            &s,
            d.desired,
            &c,
            Some(now),
            start,
        );
        assert_eq!(d2.desired, d.desired);
        // 2 minutes idle: zero after the grace period.
        for i in 70..200 {
            kpa.record(start + Duration::from_secs(i), 0.0, 630, Duration::from_secs(60));
        }
        let late = start + Duration::from_secs(199);
        assert_eq!(kpa.decide(late, &s, 1, &c, Some(now), start).desired, 0);
        assert_eq!(
            kpa.decide(late, &scaling(1, 3), 1, &c, Some(now), start).desired,
            1,
            "minReplicas holds"
        );
    }
}
