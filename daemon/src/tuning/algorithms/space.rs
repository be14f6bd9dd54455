//! The search space as the model-based algorithms see it. Every `double`/`int`
//! parameter becomes a coordinate `u` in [0, 1], the value's quantile under its
//! `distribution` (uniform, logUniform, and normal/logNormal truncated to
//! [`min`, `max`] with the mean in the middle and three deviations to each bound, as
//! hyperopt centres them): sampling `u` uniformly draws from the distribution, and
//! `uniform`/`logUniform` map affinely (in `ln` for the latter), as Optuna's
//! `FloatDistribution(log=...)` does. `step` (and 1 for `int`) quantizes on the way
//! back. A `discrete`/`categorical` parameter is an index into its `list`.

use super::Assignment;
use crate::tuning::spec::{Distribution, Parameter, ParameterType};

/// Half-widths of the truncated normal, in deviations (hyperopt's `(max - min) / 6`).
const NORMAL_SPAN: f64 = 3.0;

/// One dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dim {
    /// A coordinate in [0, 1].
    Numeric,
    /// An index below this many choices.
    Choice(usize),
}

/// The parameters of one experiment, in the spec's order.
pub struct Space<'a> {
    pub parameters: &'a [Parameter],
}

impl<'a> Space<'a> {
    pub fn new(parameters: &'a [Parameter]) -> Space<'a> {
        Space { parameters }
    }

    pub fn dims(&self) -> Vec<Dim> {
        self.parameters.iter().map(dim).collect()
    }

    /// The coordinates of an assignment (numeric: `u`; choice: the index as `f64`);
    /// `None` when a value is missing or outside the space (a trial of an older spec).
    pub fn encode(&self, assignment: &Assignment) -> Option<Vec<f64>> {
        self.parameters
            .iter()
            .map(|p| {
                let value = assignment
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|(_, v)| v.as_str())?;
                match dim(p) {
                    Dim::Choice(_) => p.list.iter().position(|x| x == value).map(|i| i as f64),
                    Dim::Numeric => value
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .map(|x| to_unit(p, x)),
                }
            })
            .collect()
    }

    /// The assignment at coordinates `x` (numeric coordinates are clamped to [0, 1],
    /// indices rounded and clamped).
    pub fn decode(&self, x: &[f64]) -> Assignment {
        self.parameters
            .iter()
            .zip(x)
            .map(|(p, &v)| {
                let value = match dim(p) {
                    Dim::Choice(n) => {
                        let i = (v.round().max(0.0) as usize).min(n.saturating_sub(1));
                        p.list.get(i).cloned().unwrap_or_default()
                    }
                    Dim::Numeric => format_value(p, from_unit(p, v)),
                };
                (p.name.clone(), value)
            })
            .collect()
    }
}

impl Space<'_> {
    /// Coordinates `x` moved to the middle of the cell each stepped (`int` or `step`)
    /// value's coordinate falls in, the coordinate of the value it is written as;
    /// other coordinates unchanged.
    pub fn snap(&self, x: &mut [f64]) {
        for (d, v) in x.iter_mut().enumerate() {
            *v = self.snap_one(d, *v);
        }
    }

    /// [`Space::snap`] of coordinate `d` alone.
    pub fn snap_one(&self, d: usize, v: f64) -> f64 {
        match self.parameters.get(d) {
            Some(p) if dim(p) == Dim::Numeric && step_of(p).is_some_and(|s| s > 0.0) => {
                to_unit(p, quantize(p, from_unit(p, v)))
            }
            _ => v,
        }
    }
}

fn dim(p: &Parameter) -> Dim {
    match p.parameter_type {
        ParameterType::Discrete | ParameterType::Categorical => Dim::Choice(p.list.len().max(1)),
        ParameterType::Double | ParameterType::Int => Dim::Numeric,
    }
}

/// A choice index as a coordinate in [0, 1] (the middle of its cell), for algorithms
/// that see every dimension as continuous (Sobol, CMA-ES, the Gaussian process).
pub fn choice_to_unit(index: f64, n: usize) -> f64 {
    (index + 0.5) / n.max(1) as f64
}

/// The inverse of [`choice_to_unit`]: the cell `u` falls in.
pub fn unit_to_choice(u: f64, n: usize) -> f64 {
    ((u.clamp(0.0, 1.0) * n as f64).floor()).min(n.saturating_sub(1) as f64)
}

/// Every coordinate in [0, 1]: choice indices as their cells' middles.
pub fn to_cube(dims: &[Dim], x: &[f64]) -> Vec<f64> {
    dims.iter()
        .zip(x)
        .map(|(d, &v)| match d {
            Dim::Numeric => v,
            Dim::Choice(n) => choice_to_unit(v, *n),
        })
        .collect()
}

/// The inverse of [`to_cube`].
pub fn from_cube(dims: &[Dim], u: &[f64]) -> Vec<f64> {
    dims.iter()
        .zip(u)
        .map(|(d, &v)| match d {
            Dim::Numeric => v.clamp(0.0, 1.0),
            Dim::Choice(n) => unit_to_choice(v, *n),
        })
        .collect()
}

fn is_log(p: &Parameter) -> bool {
    matches!(p.distribution, Distribution::LogUniform | Distribution::LogNormal)
}

/// The bounds in the space the distribution is defined on (`ln` for the log ones),
/// widened by half a step each way for an `int` or stepped parameter, as Optuna's
/// `_SearchSpaceTransform(transform_step=True)` does, so that the values at the ends
/// are drawn as often as those inside (for a log one the widening is on the values,
/// `ln(min - step/2)`, and left out where that would not be positive).
fn bounds(p: &Parameter) -> (f64, f64) {
    let half = step_of(p).filter(|s| *s > 0.0).map_or(0.0, |s| s / 2.0);
    if is_log(p) {
        let half = if p.min - half > 0.0 { half } else { 0.0 };
        (
            (p.min - half).max(f64::MIN_POSITIVE).ln(),
            (p.max + half).max(f64::MIN_POSITIVE).ln(),
        )
    } else {
        (p.min - half, p.max + half)
    }
}

/// The value's quantile under the parameter's distribution.
pub fn to_unit(p: &Parameter, x: f64) -> f64 {
    let (lo, hi) = bounds(p);
    if hi <= lo {
        return 0.5;
    }
    let t = if is_log(p) {
        x.max(f64::MIN_POSITIVE).ln()
    } else {
        x
    };
    let t = t.clamp(lo, hi);
    match p.distribution {
        Distribution::Uniform | Distribution::LogUniform => (t - lo) / (hi - lo),
        Distribution::Normal | Distribution::LogNormal => {
            let z = (t - (lo + hi) / 2.0) / ((hi - lo) / (2.0 * NORMAL_SPAN));
            let (a, b) = (normal_cdf(-NORMAL_SPAN), normal_cdf(NORMAL_SPAN));
            ((normal_cdf(z) - a) / (b - a)).clamp(0.0, 1.0)
        }
    }
}

/// The value at quantile `u`, before quantization.
pub fn from_unit(p: &Parameter, u: f64) -> f64 {
    let (lo, hi) = bounds(p);
    let u = u.clamp(0.0, 1.0);
    let t = if hi <= lo {
        lo
    } else {
        match p.distribution {
            Distribution::Uniform | Distribution::LogUniform => lo + u * (hi - lo),
            Distribution::Normal | Distribution::LogNormal => {
                let (a, b) = (normal_cdf(-NORMAL_SPAN), normal_cdf(NORMAL_SPAN));
                let z = normal_ppf(a + u * (b - a)).clamp(-NORMAL_SPAN, NORMAL_SPAN);
                (lo + hi) / 2.0 + z * (hi - lo) / (2.0 * NORMAL_SPAN)
            }
        }
    };
    let x = if is_log(p) { t.exp() } else { t };
    x.clamp(p.min, p.max)
}

/// The step a value is quantized to: `step`, or 1 for an `int`.
fn step_of(p: &Parameter) -> Option<f64> {
    p.step.or((p.parameter_type == ParameterType::Int).then_some(1.0))
}

/// Rounds to `min + k * step`, never past `max`.
pub fn quantize(p: &Parameter, x: f64) -> f64 {
    match step_of(p) {
        Some(step) if step > 0.0 => {
            let last = ((p.max - p.min) / step + 1e-9).floor();
            let k = ((x - p.min) / step).round().clamp(0.0, last.max(0.0));
            p.min + k * step
        }
        _ => x,
    }
}

/// Decimal places written in a number's shortest form (`0.05` → 2).
fn decimals(x: f64) -> usize {
    let text = format!("{x}");
    if text.contains('e') {
        return 17;
    }
    text.split_once('.').map_or(0, |(_, frac)| frac.len())
}

/// The value as Katib writes it: an integer for `int`; for a stepped `double`, no more
/// decimals than `min` and `step` have (so `0.1 + 2 * 0.1` is written `0.3`).
pub fn format_value(p: &Parameter, x: f64) -> String {
    let x = quantize(p, x);
    match p.parameter_type {
        ParameterType::Int => format!("{}", x.round() as i64),
        _ => match p.step {
            Some(step) => {
                let places = decimals(step).max(decimals(p.min)).min(17);
                let text = format!("{x:.places$}");
                let text = if text.contains('.') {
                    text.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    text
                };
                if text == "-0" {
                    "0".into()
                } else {
                    text
                }
            }
            None => format!("{x}"),
        },
    }
}

/// The standard normal CDF, through `erfc` (W. J. Cody's rational approximations as
/// Numerical Recipes gives them, relative error under 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal quantile (Acklam's rational approximation with one Halley
/// step; relative error about 1e-15). `p` outside (0, 1) gives ±infinity.
pub fn normal_ppf(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.024_25;
    let x = if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // One Halley step against the CDF above.
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(distribution: Distribution, min: f64, max: f64, step: Option<f64>, int: bool) -> Parameter {
        Parameter {
            name: "p".into(),
            parameter_type: if int {
                ParameterType::Int
            } else {
                ParameterType::Double
            },
            min,
            max,
            step,
            list: vec![],
            distribution,
        }
    }

    #[test]
    fn quantiles_round_trip_under_every_distribution() {
        for d in [
            Distribution::Uniform,
            Distribution::LogUniform,
            Distribution::Normal,
            Distribution::LogNormal,
        ] {
            let p = param(d, 0.01, 10.0, None, false);
            for u in [0.0, 0.1, 0.5, 0.77, 1.0] {
                let x = from_unit(&p, u);
                assert!((0.01..=10.0).contains(&x), "{d:?} {u} {x}");
                assert!((to_unit(&p, x) - u).abs() < 1e-6, "{d:?} {u}");
            }
        }
        // The normal's middle quantile is the middle of the range.
        assert!((from_unit(&param(Distribution::Normal, 0.0, 6.0, None, false), 0.5) - 3.0).abs() < 1e-5);
        assert!((normal_ppf(0.975) - 1.959_963_985).abs() < 1e-6);
    }

    #[test]
    fn the_ends_of_an_int_range_are_drawn_as_often_as_the_middle() {
        for d in [Distribution::Uniform, Distribution::LogUniform] {
            let p = param(d, 1.0, 3.0, None, true);
            let mut counts = [0usize; 3];
            let n = 3000;
            for i in 0..n {
                let u = (i as f64 + 0.5) / n as f64;
                let v: usize = format_value(&p, from_unit(&p, u)).parse().unwrap();
                counts[v - 1] += 1;
            }
            if d == Distribution::Uniform {
                assert!(counts.iter().all(|c| c.abs_diff(n / 3) <= 1), "{counts:?}");
            } else {
                // ln(0.5)..ln(3.5): 1 takes ln(1.5/0.5) of ln(7), 3 takes ln(3.5/2.5).
                assert!(
                    counts[0] > counts[1] && counts[1] > counts[2] && counts[2] > 400,
                    "{counts:?}"
                );
            }
            // A value's coordinate is its cell's middle.
            assert!((to_unit(&p, 2.0) - 0.5).abs() < 1e-9 || d == Distribution::LogUniform);
        }
    }

    #[test]
    fn steps_quantize_and_format_cleanly() {
        let p = param(Distribution::Uniform, 0.1, 1.0, Some(0.1), false);
        assert_eq!(format_value(&p, 0.33), "0.3");
        assert_eq!(format_value(&p, 5.0), "1");
        let q = param(Distribution::Uniform, 1.0, 10.0, Some(4.0), true);
        assert_eq!(format_value(&q, 10.0), "9");
        assert_eq!(
            format_value(&param(Distribution::Uniform, 1.0, 5.0, None, true), 2.6),
            "3"
        );
    }
}
