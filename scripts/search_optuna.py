#!/usr/bin/env python3
"""Optuna's samplers on the search benchmark's functions, the baseline `scripts/bench`
sets beside `hearth search-bench`: the same boxes and optima as
daemon/src/tuning/benchmark.rs, one trial at a time, the best regret per seed as JSON.

    python scripts/search_optuna.py --sampler tpe --trials 50 --seeds 20

--sampler is tpe (independent), multivariate-tpe or random, as Katib builds them.
"""
import argparse
import json
import math

import optuna


def branin(x):
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x[1] - b * x[0] ** 2 + c * x[0] - 6) ** 2 + 10 * (1 - t) * math.cos(x[0]) + 10


ALPHA = [1.0, 1.2, 3.0, 3.2]
A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886], [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
     [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650], [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]]


def hartmann6(x):
    return -sum(ALPHA[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j]) ** 2 for j in range(6))) for i in range(4))


def rosenbrock(x):
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


FUNCTIONS = {
    "branin": ([(-5.0, 10.0), (0.0, 15.0)], 0.397887357729738, branin),
    "hartmann6": ([(0.0, 1.0)] * 6, -3.322368011415515, hartmann6),
    "rosenbrock10": ([(-5.0, 10.0)] * 10, 0.0, rosenbrock),
}


def sampler(name, seed):
    # Katib's optuna service (pkg/suggestion/v1beta1/optuna/service.py): `tpe` is
    # TPESampler(constant_liar=True, seed=random_state), `multivariate-tpe` the same with
    # multivariate=True; n_startup_trials (10) and n_ei_candidates (24) at their
    # defaults. Optuna 5.0's own default for a single objective is multivariate, so
    # `tpe` sets multivariate=False to stay the independent (per-parameter) sampler.
    if name in ("tpe", "multivariate-tpe"):
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=name == "multivariate-tpe")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise SystemExit(f"unknown sampler {name}")


def run(name, function, trials, seed):
    bounds, optimum, f = FUNCTIONS[function]
    study = optuna.create_study(sampler=sampler(name, seed), direction="minimize")
    study.optimize(lambda t: f([t.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(bounds)]),
                   n_trials=trials)
    return study.best_value - optimum


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sampler", required=True)
    parser.add_argument("--function")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    functions = [args.function] if args.function else list(FUNCTIONS)
    results = {fn: {"regret": [run(args.sampler, fn, args.trials, s) for s in range(args.first_seed, args.first_seed + args.seeds)]} for fn in functions}
    print(json.dumps({"sampler": args.sampler, "optuna": optuna.__version__, "trials": args.trials,
                      "results": results}))


if __name__ == "__main__":
    main()
