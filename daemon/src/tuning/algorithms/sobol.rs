//! Katib's `sobol` (its goptuna service's Sobol sampler): the points of an
//! unscrambled Sobol sequence (Joe and Kuo's D6 direction numbers, from the `sobol`
//! crate), one per suggestion in order, mapped through each parameter's
//! distribution ([`super::space`]); a `discrete`/`categorical` parameter takes the
//! cell its coordinate falls in. The all-zero first point is skipped, so the first
//! suggestion is the space's centre. Deterministic: no settings.

use std::sync::OnceLock;

use sobol::params::JoeKuoD6;

use super::space::{from_cube, Space};
use super::{unknown_setting, Algorithm, Batch, Request};
use crate::model::strict::FieldError;
use crate::tuning::spec::Parameter;

/// The most parameters the bundled direction numbers cover.
pub const MAX_DIMS: usize = 1000;

pub struct Sobol;

/// Katib's goptuna `sobol` takes no settings; Hearth names any given.
pub fn check_setting(key: &str, path: &str) -> Result<(), FieldError> {
    Err(unknown_setting("sobol", key, path))
}

pub fn check_space(parameters: &[Parameter]) -> Result<(), FieldError> {
    if parameters.len() > MAX_DIMS {
        return Err(FieldError::invalid(
            "spec.parameters",
            format!("sobol covers at most {MAX_DIMS} parameters"),
        ));
    }
    Ok(())
}

fn params() -> &'static JoeKuoD6 {
    static PARAMS: OnceLock<JoeKuoD6> = OnceLock::new();
    PARAMS.get_or_init(JoeKuoD6::standard)
}

/// Points `first..first + count` of the `dims`-dimensional sequence.
pub fn points(dims: usize, first: u64, count: u64) -> Vec<Vec<f64>> {
    if dims == 0 || dims > MAX_DIMS {
        return (0..count).map(|_| vec![0.5; dims]).collect();
    }
    let skip = usize::try_from(first).unwrap_or(usize::MAX);
    let take = usize::try_from(count).unwrap_or(0);
    sobol::Sobol::<f64>::new(dims, params())
        .skip(skip)
        .take(take)
        .collect()
}

impl Algorithm for Sobol {
    fn suggest(&self, request: &Request<'_>) -> Batch {
        let space = Space::new(request.parameters);
        let dims = space.dims();
        let assignments = points(dims.len(), request.made.saturating_add(1), request.count)
            .into_iter()
            .map(|u| space.decode(&from_cube(&dims, &u)))
            .collect();
        Batch {
            assignments,
            exhausted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::double;
    use super::*;
    use crate::tuning::spec::ParameterType;

    #[test]
    fn sobol_starts_at_the_centre_and_fills_the_space_evenly() {
        let params = [double("a", 0.0, 1.0), double("b", -4.0, 4.0), {
            let mut p = double("c", 0.0, 0.0);
            p.parameter_type = ParameterType::Categorical;
            p.list = vec!["x".into(), "y".into()];
            p
        }];
        let ask = |made, count| {
            Sobol.suggest(&Request {
                parameters: &params,
                settings: &[],
                history: &[],
                made,
                count,
            })
        };
        let first = ask(0, 64);
        assert_eq!(first.assignments[0][0].1, "0.5");
        assert_eq!(first.assignments[0][1].1, "0");
        assert_eq!(first.assignments[5..9], ask(5, 4).assignments[..]);
        // 64 points of a Sobol sequence: each eighth of [0, 1] holds exactly 8
        // (give or take the skipped zero point).
        let mut cells = [0; 8];
        for a in &first.assignments {
            let v: f64 = a[0].1.parse().unwrap();
            cells[((v * 8.0) as usize).min(7)] += 1;
        }
        assert!(cells.iter().all(|c| (7..=9).contains(c)), "{cells:?}");
        let ys = first.assignments.iter().filter(|a| a[2].1 == "y").count();
        assert!((31..=33).contains(&ys));
    }
}
