//! Katib's `grid`: every combination of the parameters' values (`list`, or `min` to
//! `max` by `step`; `step` is required for doubles), the last parameter varying
//! fastest. Exhaustion ends the experiment (`ExperimentSuggestionEndReached`).

use super::space::format_value;
use super::{Algorithm, Batch, Request};
use crate::model::strict::FieldError;
use crate::tuning::spec::{Distribution, Parameter, ParameterType};

/// The most points a grid may have, in all: bounds the index arithmetic.
pub const MAX_GRID_POINTS: u64 = 1_000_000;

/// Checks the space: uniform only, doubles stepped, at most [`MAX_GRID_POINTS`].
pub fn check_space(parameters: &[Parameter]) -> Result<(), FieldError> {
    let mut total: u64 = 1;
    for (i, p) in parameters.iter().enumerate() {
        let at = format!("spec.parameters[{i}].feasibleSpace");
        if p.distribution != Distribution::Uniform {
            return Err(FieldError::invalid(
                format!("{at}.distribution"),
                "grid takes evenly spaced values; only uniform applies",
            ));
        }
        if p.parameter_type == ParameterType::Double && p.step.is_none() {
            return Err(FieldError::invalid(
                format!("{at}.step"),
                "is required for a double parameter with the grid algorithm",
            ));
        }
        total = total
            .checked_mul(points(p))
            .filter(|t| *t <= MAX_GRID_POINTS)
            .ok_or_else(|| {
                FieldError::invalid(
                    format!("spec.parameters[{i}]"),
                    format!("the grid would have more than {MAX_GRID_POINTS} points"),
                )
            })?;
    }
    Ok(())
}

/// How many values a parameter has on a grid (at least 1; saturating for huge spans).
fn points(p: &Parameter) -> u64 {
    match p.parameter_type {
        ParameterType::Discrete | ParameterType::Categorical => p.list.len() as u64,
        ParameterType::Double | ParameterType::Int => {
            let step = p.step.unwrap_or(1.0);
            let n = ((p.max - p.min) / step + 1e-9).floor();
            // `as` saturates a float beyond u64's range.
            (n as u64).saturating_add(1)
        }
    }
}

pub struct Grid;

fn grid_value(p: &Parameter, k: u64) -> String {
    match p.parameter_type {
        ParameterType::Discrete | ParameterType::Categorical => usize::try_from(k)
            .ok()
            .and_then(|i| p.list.get(i))
            .cloned()
            .unwrap_or_default(),
        ParameterType::Double | ParameterType::Int => {
            let step = p.step.unwrap_or(1.0);
            format_value(p, (p.min + step * k as f64).min(p.max))
        }
    }
}

impl Algorithm for Grid {
    fn suggest(&self, request: &Request<'_>) -> Batch {
        let sizes: Vec<u64> = request.parameters.iter().map(points).collect();
        let total = sizes
            .iter()
            .try_fold(1u64, |acc, n| acc.checked_mul(*n))
            .unwrap_or(u64::MAX);
        let end = request.made.saturating_add(request.count).min(total);
        let assignments = (request.made.min(end)..end)
            .map(|mut index| {
                let mut values = vec![String::new(); sizes.len()];
                for (i, size) in sizes.iter().enumerate().rev() {
                    let size = (*size).max(1);
                    values[i] = grid_value(&request.parameters[i], index % size);
                    index /= size;
                }
                request
                    .parameters
                    .iter()
                    .map(|p| p.name.clone())
                    .zip(values)
                    .collect()
            })
            .collect();
        Batch {
            assignments,
            exhausted: end >= total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::algorithms::testing::double as unstepped;

    fn double(name: &str, min: f64, max: f64, step: Option<f64>) -> Parameter {
        Parameter {
            step,
            ..unstepped(name, min, max)
        }
    }

    #[test]
    fn grid_enumerates_every_point_then_is_exhausted() {
        let params = [
            double("a", 0.0, 1.0, Some(0.5)),
            Parameter {
                name: "b".into(),
                parameter_type: ParameterType::Categorical,
                min: 0.0,
                max: 0.0,
                step: None,
                list: vec!["x".into(), "y".into()],
                distribution: Distribution::Uniform,
            },
        ];
        let ask = |made, count| {
            Grid.suggest(&Request {
                parameters: &params,
                settings: &[],
                history: &[],
                made,
                count,
            })
        };
        let first = ask(0, 4);
        assert!(!first.exhausted);
        assert_eq!(
            first.assignments[1],
            vec![("a".into(), "0".into()), ("b".into(), "y".into())]
        );
        let rest = ask(4, 5);
        assert_eq!(rest.assignments.len(), 2);
        assert!(rest.exhausted);
        assert_eq!(rest.assignments[1][0].1, "1");
        assert!(check_space(&[double("c", 0.0, 1.0, None)]).is_err());
    }
}
