//! The search-quality benchmark (`hearth search-bench`, which `scripts/bench` runs
//! beside Optuna): the native algorithms called in process with the history, no
//! daemon, on the standard test functions: Branin (2-D, optimum 0.397887),
//! Hartmann-6 (optimum -3.32237) and Rosenbrock in 10-D on [-5, 10] (optimum 0). A run
//! asks one suggestion at a time, as a sequential Katib experiment with
//! `parallelTrialCount: 1` does, and reports the best regret (best value found minus
//! the optimum) per seed; the latency mode times one suggestion after `n` finished
//! trials.

use std::time::Instant;

use serde_json::{json, Value};

use super::algorithms::{self, Outcome, Request, Trial};
use super::spec::{Distribution, Parameter, ParameterType};

/// A test function: its box, its known minimum, and the function.
pub struct Function {
    pub name: &'static str,
    pub bounds: Vec<(f64, f64)>,
    pub optimum: f64,
    pub f: fn(&[f64]) -> f64,
}

pub fn branin(x: &[f64]) -> f64 {
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x[1] - b * x[0] * x[0] + c * x[0] - 6.0).powi(2) + 10.0 * (1.0 - t) * x[0].cos() + 10.0
}

pub fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4)
        .map(|i| {
            let inner: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-inner).exp()
        })
        .sum::<f64>()
}

pub fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2)
        .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
        .sum()
}

pub fn functions() -> Vec<Function> {
    vec![
        Function {
            name: "branin",
            bounds: vec![(-5.0, 10.0), (0.0, 15.0)],
            optimum: 0.397_887_357_729_738,
            f: branin,
        },
        Function {
            name: "hartmann6",
            bounds: vec![(0.0, 1.0); 6],
            optimum: -3.322_368_011_415_515,
            f: hartmann6,
        },
        Function {
            name: "rosenbrock10",
            bounds: vec![(-5.0, 10.0); 10],
            optimum: 0.0,
            f: rosenbrock,
        },
    ]
}

fn parameters(function: &Function) -> Vec<Parameter> {
    function
        .bounds
        .iter()
        .enumerate()
        .map(|(i, (min, max))| Parameter {
            name: format!("x{i}"),
            parameter_type: ParameterType::Double,
            min: *min,
            max: *max,
            step: None,
            list: vec![],
            distribution: Distribution::Uniform,
        })
        .collect()
}

fn point(assignment: &[(String, String)]) -> Vec<f64> {
    assignment
        .iter()
        .map(|(_, v)| v.parse().unwrap_or(f64::NAN))
        .collect()
}

/// One run: the best regret after `trials` suggestions.
pub fn run(algorithm: &str, function: &Function, trials: u64, seed: u64) -> Option<f64> {
    let algo = algorithms::by_name(algorithm)?;
    let parameters = parameters(function);
    let settings = vec![("random_state".to_string(), seed.to_string())];
    let mut history: Vec<Trial> = Vec::new();
    let mut best = f64::INFINITY;
    for i in 0..trials {
        let batch = algo.suggest(&Request {
            parameters: &parameters,
            settings: &settings,
            history: &history,
            made: i,
            count: 1,
        });
        let assignment = batch.assignments.into_iter().next()?;
        let y = (function.f)(&point(&assignment));
        best = best.min(y);
        history.push(Trial {
            index: i,
            assignment,
            outcome: Outcome::Completed(y),
        });
    }
    Some(best - function.optimum)
}

/// The time of one suggestion (ms) after `finished` random trials, `repeat` times.
pub fn latency(algorithm: &str, function: &Function, finished: u64, repeat: u64) -> Option<Vec<f64>> {
    let algo = algorithms::by_name(algorithm)?;
    let random = algorithms::by_name("random")?;
    let parameters = parameters(function);
    let settings = vec![("random_state".to_string(), "1".to_string())];
    let batch = random.suggest(&Request {
        parameters: &parameters,
        settings: &settings,
        history: &[],
        made: 0,
        count: finished,
    });
    let history: Vec<Trial> = batch
        .assignments
        .into_iter()
        .zip(0..)
        .map(|(assignment, index)| {
            let y = (function.f)(&point(&assignment));
            Trial {
                index,
                assignment,
                outcome: Outcome::Completed(y),
            }
        })
        .collect();
    Some(
        (0..repeat)
            .map(|_| {
                let started = Instant::now();
                let _ = algo.suggest(&Request {
                    parameters: &parameters,
                    settings: &settings,
                    history: &history,
                    made: finished,
                    count: 1,
                });
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    )
}

/// `hearth search-bench`: best regrets per seed for each function asked (`None`:
/// all), seeds run on every CPU; or, with `latency_after`, suggestion times.
pub fn main(
    algorithm: &str,
    function: Option<&str>,
    trials: u64,
    seeds: u64,
    latency_after: Option<u64>,
) -> Result<Value, String> {
    if algorithms::by_name(algorithm).is_none() {
        return Err(format!(
            "unknown algorithm {algorithm:?}; one of {}",
            algorithms::NAMES.join(", ")
        ));
    }
    let chosen: Vec<Function> = functions()
        .into_iter()
        .filter(|f| function.is_none_or(|name| name == f.name))
        .collect();
    if chosen.is_empty() {
        return Err("unknown function; one of branin, hartmann6, rosenbrock10".into());
    }
    let mut out = serde_json::Map::new();
    for f in &chosen {
        if let Some(n) = latency_after {
            let times = latency(algorithm, f, n, seeds.max(1)).unwrap_or_default();
            out.insert(f.name.into(), json!({"latency_ms": times}));
            continue;
        }
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let regrets: Vec<f64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    scope.spawn(move || {
                        (0..seeds)
                            .filter(|s| s % workers == w)
                            .map(|s| (s, run(algorithm, f, trials, s).unwrap_or(f64::NAN)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(u64, f64)> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect();
            all.sort_by_key(|(s, _)| *s);
            all.into_iter().map(|(_, r)| r).collect()
        });
        out.insert(f.name.into(), json!({"regret": regrets}));
    }
    Ok(json!({"algorithm": algorithm, "trials": trials, "results": out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_functions_have_their_known_optima() {
        assert!((branin(&[std::f64::consts::PI, 2.275]) - 0.397_887).abs() < 1e-5);
        let h = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((hartmann6(&h) + 3.32237).abs() < 1e-4);
        assert_eq!(rosenbrock(&[1.0; 10]), 0.0);
    }
}
