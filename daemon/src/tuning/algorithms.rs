//! Search algorithms, native (Katib runs one suggestion service per experiment; Hearth
//! asks a function). An [`Algorithm`] is a pure function of the search space, its
//! settings, the trials observed so far and how many suggestions were already made,
//! so the controller can rebuild it from the stored trials after a restart.
//!
//! Implemented: `random` (Katib's hyperopt `rand`: uniform, logUniform, normal and
//! logNormal, with `step` quantization; `random_state` seeds it) and `grid` (Katib's
//! grid: every combination of the parameters' values, `step` required for doubles).

use rand::{Rng, SeedableRng};

use super::spec::{Distribution, Parameter, ParameterType};
use crate::model::strict::FieldError;

/// One suggestion: a value (as Katib writes it, a string) per parameter, in the
/// spec's order.
pub type Assignment = Vec<(String, String)>;

/// What an algorithm is asked.
pub struct Request<'a> {
    pub parameters: &'a [Parameter],
    pub settings: &'a [(String, String)],
    /// Suggestions made before this request (the next one's index).
    pub made: u64,
    pub count: u64,
}

/// Its answer: up to `count` assignments, and whether the space has no more.
#[derive(Debug, PartialEq)]
pub struct Batch {
    pub assignments: Vec<Assignment>,
    pub exhausted: bool,
}

pub trait Algorithm: Send + Sync {
    fn suggest(&self, request: &Request<'_>) -> Batch;
}

/// The most points a grid may have, in all: bounds the index arithmetic.
pub const MAX_GRID_POINTS: u64 = 1_000_000;

/// The algorithm of a validated `algorithmName`; `None` for a name [`super::spec`]
/// refuses.
pub fn by_name(name: &str) -> Option<&'static dyn Algorithm> {
    match name {
        "random" => Some(&Random),
        "grid" => Some(&Grid),
        _ => None,
    }
}

/// Checks one `algorithmSettings` entry as the algorithm's Katib service validates it.
pub fn check_setting(algorithm: &str, key: &str, value: &str, path: &str) -> Result<(), FieldError> {
    match (algorithm, key) {
        ("random", "random_state") => value.parse::<u64>().map(|_| ()).map_err(|_| {
            FieldError::invalid(
                format!("{path}.value"),
                format!("random_state must be a non-negative integer, not {value:?}"),
            )
        }),
        _ => Err(FieldError::unsupported(
            format!("{path}.name"),
            format!("{key:?} is not a setting of {algorithm}"),
        )),
    }
}

/// Checks the search space against what the algorithm needs.
pub fn check_space(algorithm: &str, parameters: &[Parameter]) -> Result<(), FieldError> {
    if algorithm != "grid" {
        return Ok(());
    }
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

fn format_value(p: &Parameter, x: f64) -> String {
    match p.parameter_type {
        ParameterType::Int => format!("{}", x.round() as i64),
        _ => format!("{x}"),
    }
}

/// Katib's `random`.
pub struct Random;

fn seed(settings: &[(String, String)]) -> Option<u64> {
    settings
        .iter()
        .find(|(k, _)| k == "random_state")
        .and_then(|(_, v)| v.parse().ok())
}

fn standard_normal(rng: &mut impl Rng) -> f64 {
    // Box–Muller; `1 - u` keeps the logarithm's argument in (0, 1].
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn sample(p: &Parameter, rng: &mut impl Rng) -> String {
    match p.parameter_type {
        ParameterType::Discrete | ParameterType::Categorical => {
            let i = rng.random_range(0..p.list.len().max(1));
            p.list.get(i).cloned().unwrap_or_default()
        }
        ParameterType::Double | ParameterType::Int => {
            let (lo, hi) = (p.min, p.max);
            let x = match p.distribution {
                Distribution::Uniform => lo + (hi - lo) * rng.random::<f64>(),
                Distribution::LogUniform => (lo.ln() + (hi.ln() - lo.ln()) * rng.random::<f64>()).exp(),
                // hyperopt's normal around the middle, three deviations to each bound.
                Distribution::Normal => (lo + hi) / 2.0 + (hi - lo) / 6.0 * standard_normal(rng),
                Distribution::LogNormal => {
                    ((lo.ln() + hi.ln()) / 2.0 + (hi.ln() - lo.ln()) / 6.0 * standard_normal(rng)).exp()
                }
            };
            let mut x = x.clamp(lo, hi);
            if let Some(step) = p.step.or((p.parameter_type == ParameterType::Int).then_some(1.0)) {
                x = (lo + ((x - lo) / step).round() * step).clamp(lo, hi);
            }
            format_value(p, x)
        }
    }
}

impl Algorithm for Random {
    fn suggest(&self, request: &Request<'_>) -> Batch {
        let assignments = (0..request.count)
            .map(|k| {
                let index = request.made.saturating_add(k);
                // One stream per suggestion index: the i-th suggestion of a seeded
                // experiment is the same however the requests were batched.
                let mut rng = match seed(request.settings) {
                    Some(s) => rand::rngs::StdRng::seed_from_u64(
                        s.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index),
                    ),
                    None => rand::rngs::StdRng::from_rng(&mut rand::rng()),
                };
                request
                    .parameters
                    .iter()
                    .map(|p| (p.name.clone(), sample(p, &mut rng)))
                    .collect()
            })
            .collect();
        Batch {
            assignments,
            exhausted: false,
        }
    }
}

/// Katib's `grid`: the combinations in order, the last parameter varying fastest.
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

    fn double(name: &str, min: f64, max: f64, step: Option<f64>) -> Parameter {
        Parameter {
            name: name.into(),
            parameter_type: ParameterType::Double,
            min,
            max,
            step,
            list: vec![],
            distribution: Distribution::Uniform,
        }
    }

    #[test]
    fn seeded_random_is_reproducible_and_in_range() {
        let params = [double("lr", 0.01, 0.05, None), {
            let mut p = double("n", 1.0, 5.0, None);
            p.parameter_type = ParameterType::Int;
            p
        }];
        let settings = [("random_state".to_string(), "10".to_string())];
        let ask = |made, count| {
            Random.suggest(&Request {
                parameters: &params,
                settings: &settings,
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
        assert!(check_space("grid", &[double("c", 0.0, 1.0, None)]).is_err());
    }
}
