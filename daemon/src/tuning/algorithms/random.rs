//! Katib's `random` (its optuna service's `RandomSampler`): each parameter drawn from
//! its `distribution` (uniform, logUniform, normal, logNormal; see [`super::space`]),
//! `step` quantized; `random_state` seeds it.

use super::space::Space;
use super::{prior_sample, rng_for, Algorithm, Batch, Request};

pub struct Random;

impl Algorithm for Random {
    fn suggest(&self, request: &Request<'_>) -> Batch {
        let space = Space::new(request.parameters);
        let dims = space.dims();
        let assignments = (0..request.count)
            .map(|k| {
                let mut rng = rng_for(request.settings, request.made.saturating_add(k));
                space.decode(&prior_sample(&dims, &mut rng))
            })
            .collect();
        Batch {
            assignments,
            exhausted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{double, settings};
    use super::*;
    use crate::tuning::spec::ParameterType;

    #[test]
    fn seeded_random_is_reproducible_and_in_range() {
        let params = [double("lr", 0.01, 0.05), {
            let mut p = double("n", 1.0, 5.0);
            p.parameter_type = ParameterType::Int;
            p
        }];
        let settings = settings(&[("random_state", "10")]);
        let ask = |made, count| {
            Random.suggest(&Request {
                parameters: &params,
                settings: &settings,
                history: &[],
                made,
                count,
            })
        };
        let all = ask(0, 4);
        assert_eq!(all.assignments[2..], ask(2, 2).assignments[..]);
        assert_ne!(all.assignments[0], all.assignments[1]);
        for a in &all.assignments {
            let lr: f64 = a[0].1.parse().unwrap();
            assert!((0.01..=0.05).contains(&lr));
            let n: i64 = a[1].1.parse().unwrap();
            assert!((1..=5).contains(&n));
        }
    }
}
