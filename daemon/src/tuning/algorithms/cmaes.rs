//! Katib's `cmaes` (its optuna service's `CmaEsSampler`, goptuna's before it):
//! CMA-ES with active covariance updates, as the `cmaes` library Optuna uses
//! runs it, in the unit cube of [`super::space`] (a `discrete`/`categorical`
//! parameter by its cell): the mean starts at the centre, `sigma` (default 1/6, a
//! sixth of the cube's side as Optuna's `sigma0`) is the initial step, the population
//! `4 + floor(3 ln n)`. `restart_strategy` `ipop` restarts a converged search from a
//! random mean with the population doubled; `bipop` alternates such large runs with
//! small ones (Hansen 2009); `none` (default) never restarts.
//!
//! Hearth keeps no sampler state: the search is replayed from the trials on every
//! request. The k-th trial of the replay belongs to the generation whose population
//! it falls in, in the order made; a generation updates the distribution once every
//! trial of it has finished (a failed one ranks last); suggestions asked while the
//! current generation still runs are drawn from the latest distribution and count
//! in the next generation. Sampling redraws a point outside the cube up to 100
//! times, then clips it (the library's repair).

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::space::{from_cube, to_cube, Dim, Space};
use super::{
    non_negative_int, rng_for, seed, setting, standard_normal, unknown_setting, Algorithm, Batch, Outcome,
    Request,
};
use crate::model::strict::FieldError;
use crate::tuning::spec::{Parameter, ParameterType};

/// Optuna's `sigma0` default in the unit cube: `min(range) / 6`.
pub const DEFAULT_SIGMA: f64 = 1.0 / 6.0;

pub struct CmaEs;

/// Katib's `_validate_cmaes_setting`: `restart_strategy` (goptuna's `ipop`, `bipop`,
/// `none`), `sigma` (a positive number) and `random_state`.
pub fn check_setting(key: &str, value: &str, path: &str) -> Result<(), FieldError> {
    match key {
        "restart_strategy" => match value {
            "ipop" | "bipop" | "none" | "None" => Ok(()),
            other => Err(FieldError::invalid(
                format!("{path}.value"),
                format!("restart_strategy {other:?} is not supported; use ipop, bipop or none"),
            )),
        },
        "sigma" => match value.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(()),
            _ => Err(FieldError::invalid(
                format!("{path}.value"),
                format!("sigma must be a positive number, not {value:?}"),
            )),
        },
        "random_state" => non_negative_int(key, value, path).map(|_| ()),
        _ => Err(unknown_setting("cmaes", key, path)),
    }
}

/// Katib: "cmaes only supports two or more dimensional continuous search space".
pub fn check_space(parameters: &[Parameter]) -> Result<(), FieldError> {
    let continuous = parameters
        .iter()
        .filter(|p| matches!(p.parameter_type, ParameterType::Double | ParameterType::Int))
        .count();
    if continuous < 2 {
        return Err(FieldError::invalid(
            "spec.parameters",
            "cmaes needs two or more double or int parameters",
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Restart {
    None,
    Ipop,
    Bipop,
}

/// One CMA-ES run's state.
struct Cma {
    n: usize,
    popsize: usize,
    mu: usize,
    weights: Vec<f64>,
    mu_eff: f64,
    c_sigma: f64,
    d_sigma: f64,
    cc: f64,
    c1: f64,
    cmu: f64,
    chi_n: f64,
    mean: DVector<f64>,
    sigma: f64,
    c: DMatrix<f64>,
    p_sigma: DVector<f64>,
    pc: DVector<f64>,
    generation: u32,
    /// Best and worst value of recent generations (the `tolfun` criterion).
    history: Vec<(f64, f64)>,
}

impl Cma {
    fn new(mean: Vec<f64>, sigma: f64, popsize: usize) -> Cma {
        let n = mean.len();
        let nf = n as f64;
        let popsize = popsize.max(2);
        let mu = popsize / 2;
        let raw: Vec<f64> = (0..popsize)
            .map(|i| ((popsize as f64 + 1.0) / 2.0).ln() - ((i + 1) as f64).ln())
            .collect();
        let pos_sum: f64 = raw[..mu].iter().sum();
        let pos_sq: f64 = raw[..mu].iter().map(|w| w * w).sum();
        let mu_eff = pos_sum * pos_sum / pos_sq;
        let neg_sum: f64 = raw[mu..].iter().sum::<f64>();
        let neg_sq: f64 = raw[mu..].iter().map(|w| w * w).sum();
        let mu_eff_minus = if neg_sq > 0.0 {
            neg_sum * neg_sum / neg_sq
        } else {
            0.0
        };
        let alpha_cov = 2.0;
        let c1 = alpha_cov / ((nf + 1.3).powi(2) + mu_eff);
        let cmu = (1.0 - c1 - 1e-8)
            .min(alpha_cov * (mu_eff - 2.0 + 1.0 / mu_eff) / ((nf + 2.0).powi(2) + alpha_cov * mu_eff / 2.0));
        let min_alpha = (1.0 + c1 / cmu)
            .min(1.0 + 2.0 * mu_eff_minus / (mu_eff + 2.0))
            .min((1.0 - c1 - cmu) / (nf * cmu));
        let neg_abs: f64 = raw[mu..].iter().map(|w| w.abs()).sum();
        let weights = raw
            .iter()
            .map(|&w| {
                if w >= 0.0 {
                    w / pos_sum
                } else if neg_abs > 0.0 {
                    min_alpha * w / neg_abs
                } else {
                    0.0
                }
            })
            .collect();
        let c_sigma = (mu_eff + 2.0) / (nf + mu_eff + 5.0);
        let d_sigma = 1.0 + 2.0 * (((mu_eff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + c_sigma;
        let cc = (4.0 + mu_eff / nf) / (nf + 4.0 + 2.0 * mu_eff / nf);
        Cma {
            n,
            popsize,
            mu,
            weights,
            mu_eff,
            c_sigma,
            d_sigma,
            cc,
            c1,
            cmu,
            chi_n: nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf)),
            mean: DVector::from_vec(mean),
            sigma,
            c: DMatrix::identity(n, n),
            p_sigma: DVector::zeros(n),
            pc: DVector::zeros(n),
            generation: 0,
            history: Vec::new(),
        }
    }

    /// `B` and `D` of `C = B D^2 B^T`.
    fn eigen(&self) -> (DMatrix<f64>, DVector<f64>) {
        let sym = (&self.c + self.c.transpose()) * 0.5;
        let e = SymmetricEigen::new(sym);
        let d = e.eigenvalues.map(|v| v.max(1e-30).sqrt());
        (e.eigenvectors, d)
    }

    fn ask(&self, rng: &mut impl Rng) -> Vec<f64> {
        let (b, d) = self.eigen();
        let mut x = self.mean.clone();
        for _ in 0..100 {
            let z = DVector::from_fn(self.n, |_, _| standard_normal(rng));
            let y = &b * z.component_mul(&d);
            x = &self.mean + y * self.sigma;
            if x.iter().all(|v| (0.0..=1.0).contains(v)) {
                break;
            }
        }
        x.iter().map(|v| v.clamp(0.0, 1.0)).collect()
    }

    /// One generation's update from `solutions` (point, value), any order.
    fn tell(&mut self, mut solutions: Vec<(Vec<f64>, f64)>) {
        solutions.sort_by(|a, b| a.1.total_cmp(&b.1));
        self.generation += 1;
        if let (Some(first), Some(last)) = (solutions.first(), solutions.last()) {
            self.history.push((first.1, last.1));
        }
        let (b, d) = self.eigen();
        let ys: Vec<DVector<f64>> = solutions
            .iter()
            .map(|(x, _)| (DVector::from_column_slice(x) - &self.mean) / self.sigma)
            .collect();
        let mut y_w = DVector::zeros(self.n);
        for (y, w) in ys.iter().zip(&self.weights).take(self.mu) {
            y_w += y * *w;
        }
        self.mean += &y_w * self.sigma;
        let inv_sqrt = &b * DMatrix::from_diagonal(&d.map(|v| 1.0 / v)) * b.transpose();
        self.p_sigma = &self.p_sigma * (1.0 - self.c_sigma)
            + &inv_sqrt * &y_w * (self.c_sigma * (2.0 - self.c_sigma) * self.mu_eff).sqrt();
        let norm = self.p_sigma.norm();
        self.sigma *= ((self.c_sigma / self.d_sigma) * (norm / self.chi_n - 1.0)).exp();
        self.sigma = self.sigma.min(1e32);
        let left = norm / (1.0 - (1.0 - self.c_sigma).powi(2 * self.generation as i32)).sqrt();
        let h_sigma = if left < (1.4 + 2.0 / (self.n as f64 + 1.0)) * self.chi_n {
            1.0
        } else {
            0.0
        };
        self.pc =
            &self.pc * (1.0 - self.cc) + &y_w * (h_sigma * (self.cc * (2.0 - self.cc) * self.mu_eff).sqrt());
        let mut rank_mu = DMatrix::zeros(self.n, self.n);
        for (y, w) in ys.iter().zip(&self.weights) {
            let w = if *w >= 0.0 {
                *w
            } else {
                let s = (&inv_sqrt * y).norm_squared();
                w * self.n as f64 / s.max(1e-30)
            };
            rank_mu += y * y.transpose() * w;
        }
        let delta_h = (1.0 - h_sigma) * self.cc * (2.0 - self.cc);
        let w_sum: f64 = self.weights.iter().sum();
        self.c = &self.c * (1.0 + self.c1 * delta_h - self.c1 - self.cmu * w_sum)
            + &self.pc * self.pc.transpose() * self.c1
            + rank_mu * self.cmu;
    }

    /// The library's stopping criteria (`tolfun`, `tolx`, `tolxup`, the covariance's
    /// condition number), which a restart strategy acts on.
    fn converged(&self) -> bool {
        let (_, d) = self.eigen();
        let span = 10 + (30 * self.n).div_ceil(self.popsize);
        if self.history.len() > span {
            let recent = &self.history[self.history.len() - span..];
            let hi = recent.iter().map(|h| h.1).fold(f64::NEG_INFINITY, f64::max);
            let lo = recent.iter().map(|h| h.0).fold(f64::INFINITY, f64::min);
            if hi - lo < 1e-12 {
                return true;
            }
        }
        let tolx = 1e-12;
        if self.c.diagonal().iter().all(|v| self.sigma * v < tolx)
            && self.pc.iter().all(|v| self.sigma * v < tolx)
        {
            return true;
        }
        let max_d = d.max();
        let min_d = d.min();
        self.sigma * max_d > 1e4 || (max_d / min_d).powi(2) > 1e14
    }
}

fn restart_strategy(settings: &[(String, String)]) -> Restart {
    match setting(settings, "restart_strategy") {
        Some("ipop") => Restart::Ipop,
        Some("bipop") => Restart::Bipop,
        _ => Restart::None,
    }
}

/// The distribution after replaying `history`, and where its generation starts.
fn replay(dims: &[Dim], request: &Request<'_>, space: &Space<'_>) -> Cma {
    let n = dims.len();
    let sigma0 = setting(request.settings, "sigma")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(DEFAULT_SIGMA);
    let strategy = restart_strategy(request.settings);
    let popsize0 = 4 + (3.0 * (n.max(1) as f64).ln()).floor() as usize;
    // Restarts draw from their own stream, so the replay is the same every time.
    let mut restart_rng = StdRng::seed_from_u64(seed(request.settings).unwrap_or(0) ^ 0x5EED_C3A5);
    let mut cma = Cma::new(vec![0.5; n], sigma0, popsize0);
    let (mut large_budget, mut small_budget, mut large_runs) = (0usize, 0usize, 0u32);
    let mut in_large = true;
    let trials: Vec<(Option<Vec<f64>>, Outcome)> = request
        .history
        .iter()
        .map(|t| (space.encode(&t.assignment).map(|x| to_cube(dims, &x)), t.outcome))
        .collect();
    let mut at = 0;
    while at + cma.popsize <= trials.len() {
        let generation = &trials[at..at + cma.popsize];
        if generation.iter().any(|(_, o)| *o == Outcome::Pending) {
            break;
        }
        let worst = generation
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Completed(v) => Some(*v),
                _ => None,
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let solutions: Vec<(Vec<f64>, f64)> = generation
            .iter()
            .filter_map(|(x, o)| {
                let v = match o {
                    Outcome::Completed(v) => *v,
                    _ => worst,
                };
                Some((x.clone()?, v))
            })
            .collect();
        at += cma.popsize;
        if in_large {
            large_budget += cma.popsize;
        } else {
            small_budget += cma.popsize;
        }
        if worst.is_finite() && solutions.len() == cma.popsize {
            cma.tell(solutions);
        }
        if strategy != Restart::None && cma.converged() {
            let mean: Vec<f64> = (0..n).map(|_| restart_rng.random::<f64>()).collect();
            cma = match strategy {
                Restart::Bipop if small_budget < large_budget => {
                    in_large = false;
                    let u: f64 = restart_rng.random();
                    let large = popsize0 as f64 * 2f64.powi(large_runs as i32);
                    let popsize =
                        (popsize0 as f64 * (0.5 * large / popsize0 as f64).powf(u * u)).floor() as usize;
                    Cma::new(mean, sigma0 * 10f64.powf(-2.0 * u), popsize.max(popsize0))
                }
                _ => {
                    in_large = true;
                    large_runs += 1;
                    Cma::new(mean, sigma0, popsize0 << large_runs.min(16))
                }
            };
        }
    }
    cma
}

impl Algorithm for CmaEs {
    fn suggest(&self, request: &Request<'_>) -> Batch {
        let space = Space::new(request.parameters);
        let dims = space.dims();
        let cma = replay(&dims, request, &space);
        let assignments = (0..request.count)
            .map(|k| {
                let mut rng = rng_for(request.settings, request.made.saturating_add(k));
                space.decode(&from_cube(&dims, &cma.ask(&mut rng)))
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
    use super::super::random::Random;
    use super::super::testing::{best_of, double, settings};
    use super::*;

    fn rosenbrock(x: &[f64]) -> f64 {
        x.windows(2)
            .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
            .sum()
    }

    #[test]
    fn cmaes_beats_random_and_replays_the_same() {
        let params: Vec<Parameter> = (0..4).map(|i| double(&format!("x{i}"), -2.0, 2.0)).collect();
        let (mut wins, mut ours, mut theirs) = (0, 0.0, 0.0);
        for seed in 0..5 {
            let s = settings(&[("random_state", &seed.to_string()), ("restart_strategy", "ipop")]);
            let c = best_of(&CmaEs, &params, &s, 150, rosenbrock);
            let r = best_of(&Random, &params, &s, 150, rosenbrock);
            wins += usize::from(c < r);
            ours += c;
            theirs += r;
        }
        assert!(wins >= 4 && ours * 2.0 < theirs, "{wins} {ours} {theirs}");
        let s = settings(&[("random_state", "1"), ("restart_strategy", "bipop")]);
        assert_eq!(
            best_of(&CmaEs, &params, &s, 40, rosenbrock),
            best_of(&CmaEs, &params, &s, 40, rosenbrock)
        );
        assert!(check_space(&params[..1]).is_err());
        assert!(check_setting("restart_strategy", "lipop", "p").is_err());
    }
}
