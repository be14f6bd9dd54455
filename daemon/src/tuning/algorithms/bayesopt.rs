//! Katib's `bayesianoptimization` (its skopt service: `skopt.Optimizer` with
//! `base_estimator="GP"`), natively: a Gaussian process over the unit cube of
//! [`super::space`] with skopt's kernel, `ConstantKernel * Matern(nu=2.5)` with one
//! length scale per parameter plus a white-noise term, fitted to the normalized
//! objective by maximizing the log marginal likelihood (a bounded pattern search over
//! the log hyperparameters from skopt's starting point; skopt uses L-BFGS with
//! restarts), Cholesky factorization from `nalgebra`.
//!
//! Settings and defaults as Katib validates them: `n_initial_points` (10) random
//! suggestions first, then `acq_func`: `gp_hedge` (default), `EI`, `PI` or `LCB`
//! (skopt's `xi = 0.01`, `kappa = 1.96`); `acq_optimizer`: `sampling` scores 10,000
//! random points (skopt's `n_points`), `lbfgs` and `auto` then refine the five best
//! by a bounded local pattern search (skopt's five L-BFGS restarts; gradient-free
//! here). `gp_hedge` picks among the three proposals with probabilities
//! `softmax(-mu(x))` of the current model (skopt accumulates those gains over the
//! run; Hearth keeps no state between requests). `random_state` seeds it.
//! `base_estimator` other than `GP` (skopt's forests and boosted trees) and the
//! per-second acquisitions `EIps`/`PIps` are refused by name. Pending trials are
//! avoided by the constant liar: they join the fit at the worst value seen. The
//! fit uses at most the [`MAX_FIT_POINTS`] best finished trials, which bounds the
//! cost of a long experiment.

use nalgebra::{DMatrix, DVector};
use rand::Rng;

use super::space::{from_cube, normal_cdf, to_cube, Dim, Space};
use super::{
    non_negative_int, prior_sample, rng_for, setting, unknown_setting, Algorithm, Batch, Outcome, Request,
};
use crate::model::strict::FieldError;

pub const DEFAULT_INITIAL_POINTS: usize = 10;
/// The most finished trials the Gaussian process is fitted to (the best ones).
pub const MAX_FIT_POINTS: usize = 300;
const XI: f64 = 0.01;
const KAPPA: f64 = 1.96;
const SAMPLING_POINTS: usize = 10_000;

pub struct BayesOpt;

/// Katib's `_validate_bayesianoptimization_setting`.
pub fn check_setting(key: &str, value: &str, path: &str) -> Result<(), FieldError> {
    let at = format!("{path}.value");
    match key {
        "base_estimator" => match value {
            "GP" => Ok(()),
            "RF" | "ET" | "GBRT" => Err(FieldError::unsupported(
                at,
                format!("base_estimator {value} is not supported by Hearth; only GP is run"),
            )),
            _ => Err(FieldError::invalid(
                at,
                format!("base_estimator {value:?} is not one of GP, RF, ET, GBRT"),
            )),
        },
        "n_initial_points" | "random_state" => non_negative_int(key, value, path).map(|_| ()),
        "acq_func" => match value {
            "gp_hedge" | "EI" | "PI" | "LCB" => Ok(()),
            "EIps" | "PIps" => Err(FieldError::unsupported(
                at,
                format!("acq_func {value} (per second) is not supported by Hearth: trials report no evaluation time to it"),
            )),
            _ => Err(FieldError::invalid(
                at,
                format!("acq_func {value:?} is not one of gp_hedge, LCB, EI, PI"),
            )),
        },
        "acq_optimizer" => match value {
            "auto" | "sampling" | "lbfgs" => Ok(()),
            _ => Err(FieldError::invalid(
                at,
                format!("acq_optimizer {value:?} is not one of auto, sampling, lbfgs"),
            )),
        },
        _ => Err(unknown_setting("bayesianoptimization", key, path)),
    }
}

/// A fitted Gaussian process on normalized targets.
struct Gp {
    x: Vec<Vec<f64>>,
    inv_ls: Vec<f64>,
    amplitude: f64,
    /// The Cholesky factor of the Gram matrix.
    l: DMatrix<f64>,
    alpha: DVector<f64>,
    y_mean: f64,
    y_std: f64,
}

fn matern52(a: &[f64], b: &[f64], inv_ls: &[f64]) -> f64 {
    let r2: f64 = a
        .iter()
        .zip(b)
        .zip(inv_ls)
        .map(|((p, q), il)| ((p - q) * il).powi(2))
        .sum();
    let r = (5.0 * r2).sqrt();
    (1.0 + r + r * r / 3.0) * (-r).exp()
}

/// Log hyperparameters: amplitude, one length scale per dimension, noise.
struct Theta {
    log_amp: f64,
    log_ls: Vec<f64>,
    log_noise: f64,
}

impl Theta {
    /// Coordinate `k`: the amplitude, then the length scales, then the noise.
    fn get(&self, k: usize) -> f64 {
        match k {
            0 => self.log_amp,
            k if k <= self.log_ls.len() => self.log_ls[k - 1],
            _ => self.log_noise,
        }
    }

    fn set(&mut self, k: usize, v: f64) {
        match k {
            0 => self.log_amp = v,
            k if k <= self.log_ls.len() => self.log_ls[k - 1] = v,
            _ => self.log_noise = v,
        }
    }
}

const BOUNDS_AMP: (f64, f64) = (-4.605_170_185_988_091, 6.907_755_278_982_137); // ln 0.01, ln 1000
const BOUNDS_LS: (f64, f64) = (-4.605_170_185_988_091, 4.605_170_185_988_091); // ln 0.01, ln 100
const BOUNDS_NOISE: (f64, f64) = (-11.512_925_464_970_229, 0.0); // ln 1e-5, ln 1

fn gram(x: &[Vec<f64>], theta: &Theta) -> DMatrix<f64> {
    let inv_ls: Vec<f64> = theta.log_ls.iter().map(|l| (-l).exp()).collect();
    let amp = theta.log_amp.exp();
    let noise = theta.log_noise.exp();
    let n = x.len();
    DMatrix::from_fn(n, n, |i, j| {
        amp * matern52(&x[i], &x[j], &inv_ls) + if i == j { noise + 1e-10 } else { 0.0 }
    })
}

/// The log marginal likelihood (without the constant), or `None` when the Gram
/// matrix is not positive definite.
fn log_likelihood(x: &[Vec<f64>], y: &DVector<f64>, theta: &Theta) -> Option<f64> {
    let chol = gram(x, theta).cholesky()?;
    let alpha = chol.solve(y);
    let log_det: f64 = chol
        .l_dirty()
        .diagonal()
        .iter()
        .take(y.len())
        .map(|v| v.ln())
        .sum();
    Some(-0.5 * y.dot(&alpha) - log_det)
}

impl Gp {
    fn fit(x: Vec<Vec<f64>>, y: &[f64]) -> Option<Gp> {
        let n = y.len() as f64;
        let y_mean = y.iter().sum::<f64>() / n;
        let var = y.iter().map(|v| (v - y_mean).powi(2)).sum::<f64>() / n;
        let y_std = if var > 0.0 { var.sqrt() } else { 1.0 };
        let yn = DVector::from_iterator(y.len(), y.iter().map(|v| (v - y_mean) / y_std));
        let d = x.first().map_or(0, Vec::len);
        let mut theta = Theta {
            log_amp: 0.0,
            log_ls: vec![0.0; d],
            log_noise: (1e-2f64).ln(),
        };
        let mut best = log_likelihood(&x, &yn, &theta).unwrap_or(f64::NEG_INFINITY);
        // A bounded pattern search over the log hyperparameters: try each coordinate
        // one step either way, keep improvements, halve the step when none helps.
        let mut step = 1.0;
        let mut evaluations = 0;
        while step > 0.05 && evaluations < 40 * (d + 2) {
            let mut improved = false;
            for k in 0..d + 2 {
                for dir in [1.0, -1.0] {
                    let bounds = match k {
                        0 => BOUNDS_AMP,
                        k if k == d + 1 => BOUNDS_NOISE,
                        _ => BOUNDS_LS,
                    };
                    let old = theta.get(k);
                    let new = (old + dir * step).clamp(bounds.0, bounds.1);
                    if new == old {
                        continue;
                    }
                    theta.set(k, new);
                    evaluations += 1;
                    match log_likelihood(&x, &yn, &theta) {
                        Some(l) if l > best + 1e-9 => {
                            best = l;
                            improved = true;
                            break;
                        }
                        _ => theta.set(k, old),
                    }
                }
            }
            if !improved {
                step /= 2.0;
            }
        }
        let chol = gram(&x, &theta).cholesky()?;
        let alpha = chol.solve(&yn);
        let l = chol.unpack();
        Some(Gp {
            inv_ls: theta.log_ls.iter().map(|l| (-l).exp()).collect(),
            amplitude: theta.log_amp.exp(),
            x,
            l,
            alpha,
            y_mean,
            y_std,
        })
    }

    /// Mean and standard deviation (normalized units) at `p`.
    fn predict(&self, p: &[f64]) -> (f64, f64) {
        let k = DVector::from_iterator(
            self.x.len(),
            self.x
                .iter()
                .map(|xi| self.amplitude * matern52(xi, p, &self.inv_ls)),
        );
        let mean = k.dot(&self.alpha);
        let v = self.l.solve_lower_triangular(&k).unwrap_or_else(|| k.clone());
        let var = (self.amplitude - v.norm_squared()).max(1e-12);
        (mean, var.sqrt())
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Acquisition {
    Ei,
    Pi,
    Lcb,
}

/// The acquisition's value to minimize (skopt's `gaussian_ei`/`_pi` negated, `_lcb`).
fn acquisition(a: Acquisition, mean: f64, std: f64, y_opt: f64) -> f64 {
    match a {
        Acquisition::Lcb => mean - KAPPA * std,
        Acquisition::Ei | Acquisition::Pi => {
            let improvement = y_opt - mean - XI;
            let z = improvement / std;
            if a == Acquisition::Pi {
                -normal_cdf(z)
            } else {
                let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
                -(improvement * normal_cdf(z) + std * pdf)
            }
        }
    }
}

/// The point of the cube minimizing the acquisition.
fn propose(gp: &Gp, dims: &[Dim], a: Acquisition, y_opt: f64, refine: bool, rng: &mut impl Rng) -> Vec<f64> {
    let score = |p: &[f64]| {
        let (m, s) = gp.predict(p);
        acquisition(a, m, s, y_opt)
    };
    let n = dims.len();
    let mut scored: Vec<(f64, Vec<f64>)> = (0..SAMPLING_POINTS)
        .map(|_| {
            let p: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
            (score(&p), p)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    scored.truncate(5);
    if refine {
        for (value, p) in scored.iter_mut() {
            let mut step = 0.05;
            while step > 1e-3 {
                let mut improved = false;
                for k in 0..n {
                    if matches!(dims[k], Dim::Choice(_)) {
                        continue;
                    }
                    for dir in [1.0, -1.0] {
                        let old = p[k];
                        p[k] = (old + dir * step).clamp(0.0, 1.0);
                        let v = score(p);
                        if v < *value {
                            *value = v;
                            improved = true;
                        } else {
                            p[k] = old;
                        }
                    }
                }
                if !improved {
                    step /= 2.0;
                }
            }
        }
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    scored
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .unwrap_or_else(|| vec![0.5; n])
}

impl Algorithm for BayesOpt {
    fn suggest(&self, request: &Request<'_>) -> Batch {
        let space = Space::new(request.parameters);
        let dims = space.dims();
        let initial = setting(request.settings, "n_initial_points")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_INITIAL_POINTS);
        let acq = setting(request.settings, "acq_func").unwrap_or("gp_hedge");
        let refine = setting(request.settings, "acq_optimizer") != Some("sampling");
        let mut finished: Vec<(Vec<f64>, f64)> = Vec::new();
        let mut pending: Vec<Vec<f64>> = Vec::new();
        for t in request.history {
            let Some(x) = space.encode(&t.assignment) else {
                continue;
            };
            match t.outcome {
                Outcome::Completed(v) => finished.push((to_cube(&dims, &x), v)),
                Outcome::Pending => pending.push(to_cube(&dims, &x)),
                Outcome::Failed => {}
            }
        }
        finished.sort_by(|a, b| a.1.total_cmp(&b.1));
        finished.truncate(MAX_FIT_POINTS);
        let mut assignments = Vec::new();
        for k in 0..request.count {
            let mut rng = rng_for(request.settings, request.made.saturating_add(k));
            let told = request.history.len() as u64 + k;
            let x = if told < initial as u64 || finished.len() < 2 {
                prior_sample(&dims, &mut rng)
            } else {
                let worst = finished.iter().map(|f| f.1).fold(f64::NEG_INFINITY, f64::max);
                let (mut xs, mut ys): (Vec<Vec<f64>>, Vec<f64>) = finished.iter().cloned().unzip();
                for p in &pending {
                    xs.push(p.clone());
                    ys.push(worst);
                }
                match Gp::fit(xs, &ys) {
                    None => prior_sample(&dims, &mut rng),
                    Some(gp) => {
                        let y_opt = (finished[0].1 - gp.y_mean) / gp.y_std;
                        let cube = match acq {
                            "EI" => propose(&gp, &dims, Acquisition::Ei, y_opt, refine, &mut rng),
                            "PI" => propose(&gp, &dims, Acquisition::Pi, y_opt, refine, &mut rng),
                            "LCB" => propose(&gp, &dims, Acquisition::Lcb, y_opt, refine, &mut rng),
                            _ => {
                                let proposals: Vec<Vec<f64>> =
                                    [Acquisition::Ei, Acquisition::Lcb, Acquisition::Pi]
                                        .into_iter()
                                        .map(|a| propose(&gp, &dims, a, y_opt, refine, &mut rng))
                                        .collect();
                                let gains: Vec<f64> = proposals.iter().map(|p| -gp.predict(p).0).collect();
                                let max = gains.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                                let weights: Vec<f64> = gains.iter().map(|g| (g - max).exp()).collect();
                                let total: f64 = weights.iter().sum();
                                let mut r = rng.random::<f64>() * total;
                                let mut chosen = proposals.len() - 1;
                                for (i, w) in weights.iter().enumerate() {
                                    if r < *w {
                                        chosen = i;
                                        break;
                                    }
                                    r -= w;
                                }
                                proposals[chosen].clone()
                            }
                        };
                        from_cube(&dims, &cube)
                    }
                }
            };
            pending.push(to_cube(&dims, &x));
            assignments.push(space.decode(&x));
        }
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
    use crate::tuning::spec::Parameter;

    fn branin(x: &[f64]) -> f64 {
        let (a, b, c) = (
            1.0,
            5.1 / (4.0 * std::f64::consts::PI.powi(2)),
            5.0 / std::f64::consts::PI,
        );
        let (r, s, t) = (6.0, 10.0, 1.0 / (8.0 * std::f64::consts::PI));
        a * (x[1] - b * x[0] * x[0] + c * x[0] - r).powi(2) + s * (1.0 - t) * x[0].cos() + s
    }

    #[test]
    fn bayesian_optimization_beats_random_on_branin() {
        let params: Vec<Parameter> = vec![double("x", -5.0, 10.0), double("y", 0.0, 15.0)];
        let (mut wins, mut ours, mut theirs) = (0, 0.0, 0.0);
        for seed in 0..3 {
            let s = settings(&[
                ("random_state", &seed.to_string()),
                ("acq_func", "EI"),
                ("acq_optimizer", "sampling"),
            ]);
            let b = best_of(&BayesOpt, &params, &s, 20, branin) - 0.397_887;
            let r = best_of(&Random, &params, &s, 20, branin) - 0.397_887;
            wins += usize::from(b < r);
            ours += b;
            theirs += r;
        }
        assert!(wins >= 2 && ours < theirs, "{wins} {ours} {theirs}");
        assert!(check_setting("base_estimator", "RF", "p").is_err());
        assert!(check_setting("acq_func", "EIps", "p").is_err());
    }
}
