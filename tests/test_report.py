"""ddmini.report: strict JSON (no NaN or infinity tokens) and the sweep's least-squares fit."""
import json
import math

from ddmini.report import linear_fit, write_json


def _reject(name):
    raise ValueError(f"not strict JSON: {name}")


def _strict_json(path):
    return json.loads(path.read_text(), parse_constant=_reject)


def test_report_json_is_strict(tmp_path):
    write_json({"rate": 0.5, "s_per_wrong": {"1": math.inf, "2": 3.0}, "cafd": [math.nan, 1.0]}, tmp_path / "r.json")
    assert _strict_json(tmp_path / "r.json") == {"rate": 0.5, "s_per_wrong": {"1": None, "2": 3.0}, "cafd": [None, 1.0]}


def test_linear_fit_exact_line():
    f = linear_fit([0, 0.25, 0.5, 1], [0.1, 0.3, 0.5, 0.9])
    assert math.isclose(f["slope"], 0.8) and math.isclose(f["intercept"], 0.1) and math.isclose(f["r2"], 1.0)


def test_linear_fit_of_noisy_points_and_degenerate_input():
    # y = 2x + 1 with residuals +-0.1: slope and intercept by hand, R^2 = 1 - SS_res / SS_tot
    xs, ys = [0.0, 1.0, 2.0, 3.0], [1.1, 2.9, 5.1, 6.9]
    f = linear_fit(xs, ys)
    # sxy = 9.8, sxx = 5: slope 1.96, intercept 4 - 1.96 * 1.5 = 1.06
    assert math.isclose(f["slope"], 1.96) and math.isclose(f["intercept"], 1.06)
    res = sum((y - (1.96 * x + 1.06)) ** 2 for x, y in zip(xs, ys))
    tot = sum((y - 4.0) ** 2 for y in ys)
    assert math.isclose(f["r2"], 1 - res / tot)
    assert all(math.isnan(v) for v in linear_fit([0.5], [1.0]).values())
    assert math.isnan(linear_fit([1.0, 1.0], [2.0, 3.0])["slope"])  # no spread in x: no line


def test_typed_result_timing_and_headline():
    from ddmini.result import Cafd, GeneratedResult, Misclassification, RunResult

    def gen(rate):
        return GeneratedResult(Misclassification(rate, 200, [rate] * 10, [[0] * 10] * 10),
                               {"clean_test_soft": Cafd(1.0, [1.0] * 10)}, 10)

    g1, g3 = gen(0.25), gen(0.0)
    g1.set_timing(10.0)
    g3.set_timing(4.0)
    assert g1.seconds_per_image == 0.05 and g1.seconds_per_misleading_image == 0.2
    assert g3.seconds_per_misleading_image is None  # no image misled: no cost per misleading image
    r = RunResult(0.5, {}, {}, {"test_accuracy": 0.99}, {}, Misclassification(0.01, 10, [], []), {}, {"1": g1, "3": g3},
                  3.0, {}, {}, {}, {})
    assert r.headline() == ("3", g3)
    r.headline_guidance = 2.0  # not sampled: the first scale stands in
    assert r.headline() == ("1", g1)
    d = r.to_dict()
    assert d["generated"]["1"]["misclassification"]["rate"] == 0.25 and d["generated"]["1"]["cafd"]["clean_test_soft"]["mean"] == 1.0
