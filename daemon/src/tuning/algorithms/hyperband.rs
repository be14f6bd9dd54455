//! Katib's `hyperband` (its hyperband service): brackets `s = s_max ..= 0`, with
//! `s_max = floor(log_eta(r_l))`; bracket `s` starts `n = ceil((s_max + 1) eta^s /
//! (s + 1))` random configurations at resource `r = r_l eta^-s`, and each of its
//! rungs `i = 1 ..= s` reruns the best `ceil(ceil(n eta^-(i-1)) / eta)` of the rung
//! before at resource `int(r eta^i)`, written into the parameter `resource_name`.
//! When the last bracket's last rung is made the suggestions end
//! (`ExperimentSuggestionEndReached`).
//!
//! Katib's service keeps its position in the experiment's `algorithmSettings`
//! (`current_s`, `current_i`, `evaluating_trials`, ...) and draws a bracket's first
//! rung as large as the request (so it requires `parallelTrialCount >= eta^s_max`).
//! Hearth derives the position from the trials instead: a rung waits until every
//! trial of the rung before has finished (a failed one ranks last), and rungs are the
//! sizes above whatever `parallelTrialCount` is. The state settings are refused by
//! name, as are a `resource_name` that is not an `int` or `double` parameter.

use super::space::{Dim, Space};
use super::{
    prior_sample, rng_for, setting, unknown_setting, Algorithm, Assignment, Batch, Outcome, Request,
};
use crate::model::strict::FieldError;
use crate::tuning::spec::{Parameter, ParameterType};

pub const DEFAULT_ETA: f64 = 3.0;

pub struct Hyperband;

/// Katib's `ValidateAlgorithmSettings`: `r_l` (the maximum resource, a number of at
/// least 1 here so there is a bracket), `eta` (at least 2; default 3) and
/// `resource_name`, and `random_state`; both `r_l` and `resource_name` are required ([`check_space`]).
pub fn check_setting(key: &str, value: &str, path: &str) -> Result<(), FieldError> {
    let at = format!("{path}.value");
    match key {
        "r_l" => match value.trim().parse::<f64>() {
            Ok(r) if r.is_finite() && r >= 1.0 => Ok(()),
            _ => Err(FieldError::invalid(
                at,
                format!("r_l must be a number of at least 1, not {value:?}"),
            )),
        },
        "eta" => match value.trim().parse::<f64>() {
            Ok(e) if e.is_finite() && e >= 2.0 => Ok(()),
            _ => Err(FieldError::invalid(
                at,
                format!("eta must be a number of at least 2, not {value:?}"),
            )),
        },
        "resource_name" => Ok(()),
        // Katib's service ignores settings it does not know; Hearth seeds the first
        // rungs' random configurations with it, as `random` does.
        "random_state" => super::non_negative_int(key, value, path).map(|_| ()),
        "s_max" | "b_l" | "r" | "n" | "current_s" | "current_i" | "evaluating_trials" => {
            Err(FieldError::unsupported(
                format!("{path}.name"),
                format!(
                    "{key} is the hyperband service's own state in Katib; Hearth derives it from the trials"
                ),
            ))
        }
        _ => Err(unknown_setting("hyperband", key, path)),
    }
}

/// `r_l` and `resource_name` are required; the resource is an `int` or `double`
/// parameter.
pub fn check_space(settings: &[(String, String)], parameters: &[Parameter]) -> Result<(), FieldError> {
    let path = "spec.algorithm.algorithmSettings";
    if setting(settings, "r_l").is_none() {
        return Err(FieldError::invalid(path, "hyperband requires the setting r_l"));
    }
    let Some(name) = setting(settings, "resource_name") else {
        return Err(FieldError::invalid(
            path,
            "hyperband requires the setting resource_name",
        ));
    };
    match parameters.iter().find(|p| p.name == name) {
        None => Err(FieldError::invalid(
            path,
            format!("resource_name {name:?} is not a parameter of spec.parameters"),
        )),
        Some(p) if !matches!(p.parameter_type, ParameterType::Int | ParameterType::Double) => {
            Err(FieldError::unsupported(
                path,
                format!("resource_name {name:?} must be an int or double parameter"),
            ))
        }
        Some(_) => Ok(()),
    }
}

/// One rung: how many trials, at which resource, and whether it promotes the best
/// of the rung before (else it draws fresh configurations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    pub size: usize,
    pub resource: i64,
    pub promoted: bool,
}

/// Every rung of every bracket, in the order Katib's service makes them.
pub fn schedule(r_l: f64, eta: f64) -> Vec<Rung> {
    let s_max = ((r_l.ln() / eta.ln()) + 1e-9).floor().max(0.0) as i32;
    let mut rungs = Vec::new();
    for s in (0..=s_max).rev() {
        let n = ((s_max + 1) as f64 * eta.powi(s) / (s + 1) as f64).ceil();
        let r = r_l * eta.powi(-s);
        for i in 0..=s {
            let size = if i == 0 {
                n
            } else {
                (((n * eta.powi(-(i - 1))).ceil()) / eta).ceil()
            };
            rungs.push(Rung {
                size: size.max(1.0) as usize,
                resource: (r * eta.powi(i) + 1e-9) as i64,
                promoted: i > 0,
            });
        }
    }
    rungs
}

impl Algorithm for Hyperband {
    fn suggest(&self, request: &Request<'_>) -> Batch {
        let r_l = setting(request.settings, "r_l")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(1.0);
        let eta = setting(request.settings, "eta")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|e| *e >= 2.0)
            .unwrap_or(DEFAULT_ETA);
        let resource_name = setting(request.settings, "resource_name").unwrap_or("");
        let rungs = schedule(r_l, eta);
        let total: u64 = rungs.iter().map(|r| r.size as u64).sum();
        let space = Space::new(request.parameters);
        let dims: Vec<Dim> = space.dims();
        // Outcomes by suggestion index; this batch's own suggestions are pending.
        let mut outcomes: Vec<(Assignment, Outcome)> = request
            .history
            .iter()
            .map(|t| (t.assignment.clone(), t.outcome))
            .collect();
        let mut assignments = Vec::new();
        for k in 0..request.count {
            let index = request.made.saturating_add(k);
            if index >= total {
                break;
            }
            // The rung `index` falls in, and where that rung and the one before start.
            let (mut start, mut previous_start, mut at) = (0u64, 0u64, 0usize);
            while start + rungs[at].size as u64 <= index {
                previous_start = start;
                start += rungs[at].size as u64;
                at += 1;
            }
            let rung = rungs[at];
            let resource = rung.resource.to_string();
            let mut assignment = if rung.promoted {
                let before = rungs[at - 1].size;
                let range = usize::try_from(previous_start).unwrap_or(usize::MAX)
                    ..usize::try_from(previous_start + before as u64).unwrap_or(usize::MAX);
                let Some(previous) = outcomes.get(range) else {
                    break;
                };
                if previous.len() < before || previous.iter().any(|(_, o)| *o == Outcome::Pending) {
                    break;
                }
                let mut ranked: Vec<(f64, usize)> = previous
                    .iter()
                    .enumerate()
                    .map(|(i, (_, o))| match o {
                        Outcome::Completed(v) => (*v, i),
                        _ => (f64::INFINITY, i),
                    })
                    .collect();
                ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let j = usize::try_from(index - start).unwrap_or(usize::MAX) % ranked.len().max(1);
                previous[ranked[j].1].0.clone()
            } else {
                let mut rng = rng_for(request.settings, index);
                space.decode(&prior_sample(&dims, &mut rng))
            };
            for (name, value) in assignment.iter_mut() {
                if name == resource_name {
                    *value = resource.clone();
                }
            }
            outcomes.push((assignment.clone(), Outcome::Pending));
            assignments.push(assignment);
        }
        let exhausted = request.made.saturating_add(assignments.len() as u64) >= total;
        Batch {
            assignments,
            exhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{double, settings};
    use super::super::Trial;
    use super::*;

    #[test]
    fn katibs_brackets_for_r_l_9_and_eta_3() {
        let sizes: Vec<(usize, i64)> = schedule(9.0, 3.0).iter().map(|r| (r.size, r.resource)).collect();
        assert_eq!(sizes, [(9, 1), (3, 3), (1, 9), (5, 3), (2, 9), (3, 9)]);
    }

    #[test]
    fn rungs_promote_the_best_and_wait_for_the_rung_before() {
        let params = [double("lr", 0.0, 1.0), {
            let mut p = double("epochs", 1.0, 9.0);
            p.parameter_type = ParameterType::Int;
            p
        }];
        let s = settings(&[("r_l", "9"), ("resource_name", "epochs"), ("random_state", "4")]);
        let mut history: Vec<Trial> = Vec::new();
        let ask = |history: &[Trial], count| {
            Hyperband.suggest(&Request {
                parameters: &params,
                settings: &s,
                history,
                made: history.len() as u64,
                count,
            })
        };
        let first = ask(&history, 20);
        assert_eq!(first.assignments.len(), 9, "the first rung, then a wait");
        assert!(first.assignments.iter().all(|a| a[1].1 == "1"));
        for (i, a) in first.assignments.into_iter().enumerate() {
            let lr: f64 = a[0].1.parse().unwrap();
            history.push(Trial {
                index: i as u64,
                assignment: a,
                outcome: if i == 8 {
                    Outcome::Pending
                } else {
                    Outcome::Completed((lr - 0.3).abs())
                },
            });
        }
        assert!(ask(&history, 3).assignments.is_empty());
        history[8].outcome = Outcome::Completed(5.0);
        let second = ask(&history, 3);
        assert_eq!(second.assignments.len(), 3);
        let mut best: Vec<(f64, String)> = history
            .iter()
            .map(|t| match t.outcome {
                Outcome::Completed(v) => (v, t.assignment[0].1.clone()),
                _ => unreachable!(),
            })
            .collect();
        best.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(second.assignments[0][0].1, best[0].1);
        assert_eq!(second.assignments[2][0].1, best[2].1);
        assert!(second.assignments.iter().all(|a| a[1].1 == "3"));
        assert!(!second.exhausted);
        assert!(check_space(&settings(&[("r_l", "9"), ("resource_name", "nope")]), &params).is_err());
        assert!(check_setting("current_s", "1", "p").is_err());
    }
}
