"""ddmini.report: strict JSON (no NaN or infinity tokens) and the sweep's least-squares fit."""

import json
import math

import pytest
import torch
from PIL import Image

from ddmini import report
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
        return GeneratedResult(
            Misclassification(rate, 200, [rate] * 10, [[0] * 10] * 10), {"clean_test_soft": Cafd(1.0, [1.0] * 10)}, 10
        )

    g1, g3 = gen(0.25), gen(0.0)
    g1.set_timing(10.0)
    g3.set_timing(4.0)
    assert g1.seconds_per_image == 0.05 and g1.seconds_per_misleading_image == 0.2
    assert g3.seconds_per_misleading_image is None  # no image misled: no cost per misleading image
    r = RunResult(
        0.5,
        {},
        {},
        {"test_accuracy": 0.99},
        {},
        Misclassification(0.01, 10, [], []),
        {},
        {"1": g1, "3": g3},
        3.0,
        {},
        {},
        {},
        {},
    )
    assert r.headline() == ("3", g3)
    r.headline_guidance = 2.0  # not sampled: the first scale stands in
    assert r.headline() == ("1", g1)
    d = r.to_dict()
    assert (
        d["generated"]["1"]["misclassification"]["rate"] == 0.25
        and d["generated"]["1"]["cafd"]["clean_test_soft"]["mean"] == 1.0
    )


def test_compare_puts_runs_side_by_side(smoke_run, tmp_path, capsys):
    import copy

    from conftest import run_cli

    a = smoke_run["report"].to_dict()
    b = copy.deepcopy(a)
    b["config"]["attack"].update(attack="fgsm", eps=0.25)
    b["attack"].update(success_rate=0.877, l2_mean=5.37, linf_mean=0.25)
    b["generated"] = {"2": copy.deepcopy(a["generated"]["1"])}  # another guidance scale only
    b["generated"]["2"]["misclassification"].update(rate=0.25, n=400)
    write_json(a, tmp_path / "p1" / "report.json")
    write_json(b, tmp_path / "p1-fgsm" / "report.json")
    code, out, err = run_cli(
        ["compare", tmp_path / "p1", tmp_path / "p1-fgsm" / "report.json", "--out", tmp_path / "cmp.md"], capsys
    )
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("| p1")]
    assert [ln.split(" | ")[0] for ln in lines] == ["| p1", "| p1-fgsm"]
    fgsm = lines[1].split(" | ")
    assert fgsm[3] == "fgsm eps=0.25" and fgsm[4] == "87.70%" and fgsm[5] == "5.37"
    head = out.splitlines()[0].split(" | ")
    g1, g2 = head.index("misclassified, guidance 1"), head.index("misclassified, guidance 2")
    assert fgsm[g1] == "-" and fgsm[g2] == "25.0 ± 2.2 %"  # sqrt(0.25 * 0.75 / 400) = 2.17 %
    m = a["generated"]["1"]["misclassification"]
    assert lines[0].split(" | ")[g1].startswith(f"{100 * m['rate']:.1f} ± ")
    assert (tmp_path / "cmp.md").read_text().startswith("| run | dataset | p | attack |")
    r = head.index("per-class r (success, misclassified)")
    want = report.per_class_r(a["attack"]["per_class_success"], m["per_class"])
    assert lines[0].split(" | ")[r] == ("-" if want is None else f"{want:.2f} (w = 1)")
    (tmp_path / "junk.json").write_text(json.dumps({"poison": 1}))
    code, _, err = run_cli(["compare", tmp_path / "junk.json"], capsys)
    assert code == 1 and "junk.json: not a report.json of `ddmini run`" in err and len(err.strip().splitlines()) == 1


def test_per_class_r_is_pearson_over_the_classes():
    import numpy as np

    success = [0.64, 1.0, 0.79, 0.84, 0.87, 0.98, 0.88, 0.98, 0.75, 0.98]
    mis = [0.54, 1.0, 0.69, 0.71, 0.75, 0.87, 0.65, 0.9, 0.5, 0.77]
    assert report.per_class_r(success, mis) == pytest.approx(np.corrcoef(success, mis)[0, 1])
    assert report.per_class_r(success, [1 - v for v in mis]) == pytest.approx(-report.per_class_r(success, mis))
    assert report.per_class_r(success, [0.5] * 10) is None  # constant: r undefined, not 0 or nan
    assert report.per_class_r(success, mis[:9]) is None  # the classes do not pair up
    assert report.per_class_r(success, mis[:9] + [float("nan")]) is None  # a class without images: no nan figure


def test_column_names_wrap_without_losing_characters(tmp_path):
    assert report.column_lines("T-shirt/top", 10) == ["T-shirt/", "top"]
    assert report.column_lines("Ankle boot", 10) == ["Ankle boot"]
    assert report.column_lines("abcdefghijklmnopqrstuvwxyz", 10) == ["abcdefghij", "klmnopqrst", "uvwxyz"]
    assert report.column_lines("", 10) == [""]
    names = ["T-shirt/top", "Trouser"]
    report.annotated_grid(torch.zeros(2, 1, 28, 28), tmp_path / "g.png", 2, None, "t", col_names=names)
    one_line = tmp_path / "h.png"
    report.annotated_grid(torch.zeros(2, 1, 28, 28), one_line, 2, None, "t", col_names=["a", "b"])
    # the two-line header is one text line (12 px) taller than the one-line one; the images are the same
    assert Image.open(tmp_path / "g.png").height == Image.open(one_line).height + 12
