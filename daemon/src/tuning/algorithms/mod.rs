//! Search algorithms, native (Katib runs one suggestion service per experiment; Hearth
//! asks a function). An [`Algorithm`] is a pure function of the search space, its
//! settings, the experiment's trials so far ([`Trial`]: each suggestion's assignment
//! and, once it finished, its objective) and how many suggestions were already made,
//! so the controller rebuilds it from the stored trials after a restart and a
//! `random_state` gives the same suggestions for the same history.
//!
//! The algorithms and the Katib service each follows (names and settings as Katib
//! validates them; defaults as that service's library has them):
//! - `random`, `grid` ([`random`], [`grid`]): Katib's optuna service.
//! - `tpe`, `multivariate-tpe` ([`tpe`]): Katib's optuna service (`TPESampler`,
//!   `constant_liar=True`, independent for `tpe`, `multivariate=True` for the other).
//! - `sobol` ([`sobol`]): Katib's goptuna service (an unscrambled Sobol sequence).
//! - `cmaes` ([`cmaes`]): Katib's optuna/goptuna `CmaEsSampler`.
//! - `bayesianoptimization` ([`bayesopt`]): Katib's skopt service (`gp_minimize`).
//! - `hyperband` ([`hyperband`]): Katib's hyperband service.

pub mod bayesopt;
pub mod cmaes;
pub mod grid;
pub mod hyperband;
pub mod random;
pub mod sobol;
pub mod space;
pub mod tpe;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::spec::Parameter;
use crate::model::strict::FieldError;

/// One suggestion: a value (as Katib writes it, a string) per parameter, in the
/// spec's order.
pub type Assignment = Vec<(String, String)>;

/// What became of a suggestion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Finished with this objective value, minimized: a `maximize` objective's value
    /// is negated, so every algorithm minimizes.
    Completed(f64),
    /// Not yet finished (no Trial yet, or its Trial is still running): Optuna's
    /// constant liar and the other model-based algorithms avoid it.
    Pending,
    /// Finished without an objective value (failed, killed, metrics unavailable).
    Failed,
}

/// One suggestion made for the experiment, as its Trial stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Its place among the experiment's suggestions (0 for the first).
    pub index: u64,
    pub assignment: Assignment,
    pub outcome: Outcome,
}

/// What an algorithm is asked.
pub struct Request<'a> {
    pub parameters: &'a [Parameter],
    pub settings: &'a [(String, String)],
    /// Every suggestion made so far, in the order made.
    pub history: &'a [Trial],
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

/// Every `algorithmName` Hearth runs.
pub const NAMES: &[&str] = &[
    "random",
    "grid",
    "tpe",
    "multivariate-tpe",
    "sobol",
    "cmaes",
    "bayesianoptimization",
    "hyperband",
];

/// The algorithm of a validated `algorithmName`; `None` for a name [`super::spec`]
/// refuses.
pub fn by_name(name: &str) -> Option<&'static dyn Algorithm> {
    match name {
        "random" => Some(&random::Random),
        "grid" => Some(&grid::Grid),
        "tpe" => Some(&tpe::Tpe { multivariate: false }),
        "multivariate-tpe" => Some(&tpe::Tpe { multivariate: true }),
        "sobol" => Some(&sobol::Sobol),
        "cmaes" => Some(&cmaes::CmaEs),
        "bayesianoptimization" => Some(&bayesopt::BayesOpt),
        "hyperband" => Some(&hyperband::Hyperband),
        _ => None,
    }
}

/// Checks one `algorithmSettings` entry (`path` is `spec.algorithm.algorithmSettings[i]`)
/// as the algorithm's Katib service validates it.
pub fn check_setting(algorithm: &str, key: &str, value: &str, path: &str) -> Result<(), FieldError> {
    match algorithm {
        "random" | "grid" => match key {
            "random_state" => non_negative_int(key, value, path).map(|_| ()),
            _ => Err(unknown_setting(algorithm, key, path)),
        },
        "tpe" | "multivariate-tpe" => tpe::check_setting(algorithm, key, value, path),
        "sobol" => sobol::check_setting(key, path),
        "cmaes" => cmaes::check_setting(key, value, path),
        "bayesianoptimization" => bayesopt::check_setting(key, value, path),
        "hyperband" => hyperband::check_setting(key, value, path),
        _ => Err(unknown_setting(algorithm, key, path)),
    }
}

/// Checks the search space (and the settings that name parameters) against what the
/// algorithm needs.
pub fn check_space(
    algorithm: &str,
    settings: &[(String, String)],
    parameters: &[Parameter],
) -> Result<(), FieldError> {
    match algorithm {
        "grid" => grid::check_space(parameters),
        "cmaes" => cmaes::check_space(parameters),
        "sobol" => sobol::check_space(parameters),
        "hyperband" => hyperband::check_space(settings, parameters),
        _ => Ok(()),
    }
}

pub(crate) fn unknown_setting(algorithm: &str, key: &str, path: &str) -> FieldError {
    FieldError::unsupported(
        format!("{path}.name"),
        format!("{key:?} is not a setting of {algorithm}"),
    )
}

/// An integer setting that must be zero or more (Katib: "should be greater or equal
/// than zero").
pub(crate) fn non_negative_int(key: &str, value: &str, path: &str) -> Result<u64, FieldError> {
    value.trim().parse::<u64>().map_err(|_| {
        FieldError::invalid(
            format!("{path}.value"),
            format!("{key} must be a non-negative integer, not {value:?}"),
        )
    })
}

/// A setting's value, when given.
pub(crate) fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim())
}

/// `random_state`, when given.
pub(crate) fn seed(settings: &[(String, String)]) -> Option<u64> {
    setting(settings, "random_state").and_then(|v| v.parse().ok())
}

/// The random stream of the suggestion at `index`: one per index, so a seeded
/// experiment's i-th suggestion depends only on `random_state`, `index` and the
/// history it saw, however the requests were batched. Unseeded: from the OS.
pub(crate) fn rng_for(settings: &[(String, String)], index: u64) -> StdRng {
    match seed(settings) {
        Some(s) => StdRng::seed_from_u64(s.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index)),
        None => StdRng::from_rng(&mut rand::rng()),
    }
}

/// A standard normal draw (Box–Muller; `1 - u` keeps the logarithm's argument in
/// (0, 1]).
pub(crate) fn standard_normal(rng: &mut impl rand::Rng) -> f64 {
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Draws a point uniformly in [`space::Space`] coordinates: the parameters' own
/// distributions, choices uniform.
pub(crate) fn prior_sample(dims: &[space::Dim], rng: &mut impl rand::Rng) -> Vec<f64> {
    dims.iter()
        .map(|d| match d {
            space::Dim::Numeric => rng.random::<f64>(),
            space::Dim::Choice(n) => rng.random_range(0..(*n).max(1)) as f64,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Known functions and a small driver for the algorithms' unit tests and the
    //! search-quality benchmark.
    use super::*;
    use crate::tuning::spec::{Distribution, ParameterType};

    pub fn double(name: &str, min: f64, max: f64) -> Parameter {
        Parameter {
            name: name.into(),
            parameter_type: ParameterType::Double,
            min,
            max,
            step: None,
            list: vec![],
            distribution: Distribution::Uniform,
        }
    }

    pub fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs `algorithm` for `trials` on `f`, one suggestion at a time; the best value.
    pub fn best_of(
        algorithm: &dyn Algorithm,
        parameters: &[Parameter],
        settings: &[(String, String)],
        trials: u64,
        f: impl Fn(&[f64]) -> f64,
    ) -> f64 {
        let mut history = Vec::new();
        let mut best = f64::INFINITY;
        for i in 0..trials {
            let batch = algorithm.suggest(&Request {
                parameters,
                settings,
                history: &history,
                made: i,
                count: 1,
            });
            let a = batch.assignments.into_iter().next().unwrap();
            let x: Vec<f64> = a.iter().map(|(_, v)| v.parse().unwrap()).collect();
            let y = f(&x);
            best = best.min(y);
            history.push(Trial {
                index: i,
                assignment: a,
                outcome: Outcome::Completed(y),
            });
        }
        best
    }
}
