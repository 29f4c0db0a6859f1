"""Claims decided from records: the intervals against hand computations, verdicts, the points
(epochs, loss levels), slopes, the paired-to-Welch fallback, claim files checked one line at a
time, the records on disk through `confusion claims`, and every shipped claim file."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from confusion_cli import claims, cli, config, records
from confusion_cli.claims import intervals
from confusion_cli.errors import ConfusionError

T975 = {1: 12.706204736174707, 2: 4.302652729911275, 3: 3.182446305284263}  # Student t, 97.5%


# -- records and claims as the tests build them ------------------------------------------------
def run(depth, seed, train_loss, lr=0.1, status="complete", min_cos=None, min_inner=None,
        sweep="toy", dataset="toy", **columns):
    """One run's rows as ``records.load`` gives them, one per epoch 0, 1, ..."""
    epochs = range(len(train_loss))
    rows = pd.DataFrame({"epoch": epochs, "step": [10 * e for e in epochs], "train_loss": train_loss,
                         "min_cos": min_cos if min_cos is not None else [-0.1] * len(train_loss),
                         "min_inner": min_inner if min_inner is not None else [-0.2] * len(train_loss),
                         **columns})
    return rows.assign(run_dir=f"{sweep}/{dataset}/d{depth}_lr{lr}_s{seed}", status=status,
                       **{"sweep.name": sweep, "dataset.name": dataset, "model.depth": depth,
                          "optim.lr": lr, "seed": seed})


def frame(*runs):
    return pd.concat(runs, ignore_index=True)


def contrast(**changes):
    return {"kind": "contrast", "arms": ["deep", "shallow"], "statistic": "train_loss",
            "estimator": "training loss", "expect": "greater", "at": {"epochs": [2]},
            "test": "paired", **changes}


def claim_data(**changes):
    return {"name": "toy_depth", "paper": "Fig 2", "statement": "deeper nets train slower",
            "declared": "2026-12-03, in a test", "sweep": "toy", "where": {"dataset.name": "toy"},
            "lr": "fixed", "arms": {"shallow": {"model.depth": 2, "optim.lr": 0.1},
                                    "deep": {"model.depth": 8, "optim.lr": 0.1}},
            "comparisons": [contrast()], **changes}


def decide(records_frame, **changes):
    return claims.decide(records_frame, [claims.parse_claim(claim_data(**changes), Path("toy.yaml"))])


# deep ends epoch 2 at 1.0, 1.1, 1.2 (seeds 0-2), shallow at 0.5, 0.55, 0.6: differences 0.5, 0.55, 0.6
DEEP_SLOWER = frame(*[run(8, s, [2.3, 1.5, 1.0 + 0.1 * s]) for s in range(3)],
                    *[run(2, s, [2.3, 1.0, 0.5 + 0.05 * s]) for s in range(3)])


# -- intervals against hand computations ------------------------------------------------------
def test_paired_interval_is_the_student_t_interval_of_the_differences():
    # d = 2, 3, 2, 3: mean 2.5, sd sqrt(1/3), se sqrt(1/3)/2, t(0.975, 3)
    interval = intervals.paired(np.array([3.0, 5, 4, 6]), np.array([1.0, 2, 2, 3]))
    half = T975[3] * math.sqrt(1 / 3) / 2
    assert interval.effect == pytest.approx(2.5)
    assert (interval.low, interval.high) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)


def test_welch_interval_matches_the_hand_computation_and_scipy():
    from scipy import stats

    a, b = np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6])
    va, vb = (5 / 3) / 4, 4 / 3  # s^2 / n: s_a^2 = 5/3, s_b^2 = 4
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    assert df == pytest.approx(3.2347, abs=1e-4)
    interval = intervals.welch(a, b)
    half = stats.t.ppf(0.975, df) * se
    assert interval.effect == pytest.approx(-1.5)
    assert (interval.low, interval.high) == pytest.approx((-1.5 - half, -1.5 + half), rel=1e-12)
    reference = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high), rel=1e-9)
    # Hedges' g: d / s_pooled, s_pooled^2 = (3 * 5/3 + 2 * 4) / 5 = 2.6, J = 1 - 3 / 19
    assert intervals.hedges_g(a, b) == pytest.approx((1 - 3 / 19) * -1.5 / math.sqrt(2.6))


def test_ols_slope_interval_matches_the_textbook_formula():
    x = np.array([1.0, 2, 3, 4, 5])
    y = np.array([2.1, 3.9, 6.2, 7.8, 10.1])
    interval, r = intervals.ols_slope(x, y)
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    residual = y - (y.mean() + slope * (x - x.mean()))
    se = math.sqrt(np.sum(residual ** 2) / 3 / np.sum((x - x.mean()) ** 2))
    assert interval.effect == pytest.approx(slope)
    assert (interval.low, interval.high) == pytest.approx((slope - T975[3] * se, slope + T975[3] * se))
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_bootstrap_interval_is_reproducible_and_brackets_the_effect():
    a, b = np.array([1.0, 1.2, 1.1, 1.3, 1.25]), np.array([0.5, 0.6, 0.55, 0.7, 0.52])
    first, second = intervals.bootstrap(a, b), intervals.bootstrap(a, b)
    assert first == second  # a fixed seed
    assert first.low < first.effect < first.high and first.low > 0
    assert first.effect == pytest.approx(a.mean() - b.mean())
    assert first != intervals.welch(a, b)


# -- verdicts ---------------------------------------------------------------------------------
def test_a_claim_that_holds_is_observed_with_the_hand_interval():
    table = decide(DEEP_SLOWER)
    assert len(table) == 1 and list(table.columns) == list(claims.COLUMNS)
    row = table.iloc[0]
    half = T975[2] * 0.05 / math.sqrt(3)  # differences 0.5, 0.55, 0.6: sd 0.05
    assert row["verdict"] == "observed" and row["test"] == "paired"
    assert row["effect"] == pytest.approx(0.55)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.55 - half, 0.55 + half))
    assert row["n"] == "deep 3, shallow 3"
    assert row["comparison"] == "train_loss @ epoch 2: deep - shallow"
    assert row["g"] > 0 and row["note"] == ""


def test_a_claim_contradicted_by_the_records_is_not_observed():
    table = decide(DEEP_SLOWER, comparisons=[contrast(expect="less")])
    assert table.iloc[0]["verdict"] == "not observed"
    assert table.iloc[0]["ci_low"] > 0


def test_an_interval_spanning_zero_or_too_few_runs_is_inconclusive():
    noisy = frame(*[run(8, s, [2.3, 1.5, loss]) for s, loss in enumerate([1.0, 0.4, 0.8])],
                  *[run(2, s, [2.3, 1.0, loss]) for s, loss in enumerate([0.6, 0.7, 0.5])])
    row = decide(noisy).iloc[0]
    assert row["verdict"] == "inconclusive" and "95% CI spans 0" in row["note"]
    assert row["ci_low"] < 0 < row["ci_high"]
    one_deep = DEEP_SLOWER[~DEEP_SLOWER["run_dir"].str.contains("d8_lr0.1_s[12]", regex=True)]
    row = decide(one_deep).iloc[0]
    assert row["verdict"] == "inconclusive" and "n < 2 in an arm (deep 1)" in row["note"]
    assert math.isnan(row["ci_low"]) and row["effect"] == pytest.approx(1.0 - 0.55)


def test_eta_is_read_from_min_inner():
    runs = frame(*[run(8, s, [2.3, 1.5, 1.0], min_inner=[-0.5, -0.4, -0.3 - 0.1 * s]) for s in range(3)],
                 *[run(2, s, [2.3, 1.0, 0.5], min_inner=[-0.5, 0.2, 0.1 - 0.01 * s]) for s in range(3)])
    table = decide(runs, comparisons=[contrast(statistic="eta"), contrast(statistic="ex_eta")])
    # deep eta = 0.3, 0.4, 0.5; shallow eta = max(0, -0.1...) = 0 on every seed
    assert table.iloc[0]["effect"] == pytest.approx(0.4) and table.iloc[0]["verdict"] == "observed"
    assert table.iloc[1]["verdict"] == "inconclusive"
    assert "no ex_eta in the records (no column ex_min_inner)" in table.iloc[1]["note"]


# -- points -----------------------------------------------------------------------------------
def test_loss_levels_take_the_first_probe_event_below_and_count_runs_that_never_get_there():
    shallow = [run(2, s, [0.4, 0.9, 0.45, 0.3], min_cos=[-0.9, -0.1, np.nan, -0.3 - 0.01 * s])
               for s in range(3)]  # epoch 0 is below 0.5 but is no probe event; epoch 2 has no min_cos
    deep = [run(8, s, [2.3, 1.0, 0.48, 0.3], min_cos=[-0.9, -0.5, -0.6 - 0.01 * s, -0.7]) for s in range(2)]
    deep.append(run(8, 2, [2.3, 1.0, 0.9, 0.8], min_cos=[-0.9, -0.5, -0.6, -0.7]))  # never below 0.5
    table = decide(frame(*shallow, *deep), comparisons=[
        contrast(statistic="min_cos", expect="less", at={"loss_levels": [0.5, 0.1]})])
    assert list(table["point"]) == ["loss <= 0.5", "loss <= 0.1"]  # every level, in order
    at_half, at_tenth = table.iloc[0], table.iloc[1]
    assert at_half["effect"] == pytest.approx(np.mean([-0.6, -0.61]) - np.mean([-0.3, -0.31, -0.32]))
    assert at_half["n"] == "deep 2, shallow 3"
    assert "reached: deep 2 of 3, shallow 3 of 3" in at_half["note"]
    assert at_half["test"] == "welch" and "seed 2 missing in deep" in at_half["note"]
    assert at_tenth["n"] == "deep 0, shallow 0" and at_tenth["verdict"] == "inconclusive"
    assert "reached: deep 0 of 3, shallow 0 of 3" in at_tenth["note"]


def test_epoch_points_final_and_steps():
    runs = frame(*[run(8, s, [2.3, 1.5, 1.0 + 0.1 * s], min_cos=[-0.2, -0.3, np.nan]) for s in range(3)],
                 *[run(2, s, [2.3, 1.0, 0.5 + 0.05 * s], min_cos=[-0.2, -0.1, np.nan]) for s in range(3)])
    table = decide(runs, comparisons=[contrast(statistic="min_cos", expect="less",
                                               at={"epochs": ["final", 2], "steps": [10]})])
    final, epoch2, step10 = (table.iloc[i] for i in range(3))
    assert final["effect"] == pytest.approx(-0.2)  # the last row with min_cos: epoch 1
    assert epoch2["n"] == "deep 0, shallow 0" and "with min_cos at epoch 2: deep 0 of 3" in epoch2["note"]
    assert step10["effect"] == pytest.approx(-0.2) and step10["comparison"].startswith("min_cos @ step 10")


# -- runs of an arm ---------------------------------------------------------------------------
def test_seeds_that_do_not_pair_fall_back_to_welch_with_a_note():
    runs = frame(*[run(8, s, [2.3, 1.5, 1.0 + 0.1 * s]) for s in (0, 1, 2)],
                 *[run(2, s, [2.3, 1.0, 0.5 + 0.05 * s]) for s in (0, 1, 3)])
    row = decide(runs).iloc[0]
    expected = intervals.welch(np.array([1.0, 1.1, 1.2]), np.array([0.5, 0.55, 0.65]))
    assert row["test"] == "welch"
    assert "seeds differ (seed 2 missing in shallow; seed 3 missing in deep): welch instead of paired" \
        in row["note"]
    assert (row["effect"], row["ci_low"], row["ci_high"]) == pytest.approx(tuple(expected))


def test_diverged_and_running_runs_are_counted_and_left_out():
    runs = frame(DEEP_SLOWER, run(8, 3, [2.3, 9.0, np.inf], status="diverged"),
                 run(2, 3, [2.3, 1.0], status="running"))
    row = decide(runs).iloc[0]
    assert row["n"] == "deep 3, shallow 3" and row["effect"] == pytest.approx(0.55)
    assert "deep: 1 diverged of 4 runs excluded" in row["note"]
    assert "shallow: 1 run still running, not used" in row["note"]


def test_lr_select_takes_each_arms_lr_by_the_figures_rule():
    runs = frame(*[run(8, s, [2.3, 1.5, 1.0 + 0.1 * s], lr=0.01) for s in range(3)],   # deep's best
                 *[run(8, s, [2.3, 1.5, 1.5], lr=0.1) for s in range(3)],
                 *[run(8, s, [2.3, 1.5, 0.1], lr=0.3, status="diverged" if s == 2 else "complete")
                   for s in range(3)],  # lowest loss, but one seed diverged: never selected
                 *[run(2, s, [2.3, 1.0, 0.5 + 0.05 * s], lr=0.1) for s in range(3)],  # shallow's best
                 *[run(2, s, [2.3, 1.0, 0.9], lr=0.01) for s in range(3)])
    row = decide(runs, lr="select", arms={"shallow": {"model.depth": 2}, "deep": {"model.depth": 8}}).iloc[0]
    assert "lr selected: deep 0.01, shallow 0.1" in row["note"]
    assert row["effect"] == pytest.approx(0.55) and row["verdict"] == "observed"


def test_an_arm_whose_runs_differ_in_another_column_is_not_decided():
    runs = frame(DEEP_SLOWER, *[run(8, s, [2.3, 1.5, 0.2], **{"model.width": 16}) for s in range(3)])
    runs["model.width"] = runs["model.width"].fillna(64)
    row = decide(runs).iloc[0]
    assert row["verdict"] == "inconclusive" and row["n"] == "deep 0, shallow 3"
    assert "deep: its runs differ in model.width; fix them in where or the arm" in row["note"]


def test_bootstrap_test_through_decide():
    table = decide(DEEP_SLOWER, comparisons=[contrast(test="bootstrap")])
    again = decide(DEEP_SLOWER, comparisons=[contrast(test="bootstrap")])
    assert table.iloc[0]["test"] == "bootstrap" and table.iloc[0]["verdict"] == "observed"
    assert table.iloc[0]["ci_low"] == again.iloc[0]["ci_low"]


# -- slopes -----------------------------------------------------------------------------------
def test_slope_recovers_a_known_slope_across_runs():
    runs, expected = [], []
    for i, (lr, seed) in enumerate((lr, s) for lr in (0.01, 0.03, 0.1, 0.3) for s in (0, 1)):
        eta_final = 0.5 + 0.25 * seed + 0.1 * i
        x = lr * eta_final
        loss = 0.2 + 3.0 * x + (0.002 if i % 2 else -0.002)
        runs.append(run(4, seed, [2.3, 1.0, loss + 0.5, loss], lr=lr,
                        min_inner=[-1.0, -9.0, -eta_final, -eta_final]))
        expected.append((x, loss))
    slope = {"kind": "slope", "y": {"statistic": "train_loss", "aggregate": "final"},
             "x": {"product": ["optim.lr", {"statistic": "eta", "aggregate": "mean_last", "last": 2}]},
             "expect": "greater", "estimator": "final loss on lr x eta"}
    table = decide(frame(*runs), lr="all", arms={"all": {}}, comparisons=[slope])
    row = table.iloc[0]
    x, y = np.array(expected).T
    assert row["effect"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-9)
    assert row["effect"] == pytest.approx(3.0, abs=0.05) and row["ci_low"] < 3.0 < row["ci_high"]
    assert row["verdict"] == "observed" and row["n"] == "8 runs" and row["r"] > 0.99
    assert row["comparison"] == ("slope of train_loss (final) on optim.lr × eta (mean of last 2); "
                                 "arms all")
    # log-log: y = 2 x^1.5 exactly, the slope is the exponent
    power = [run(4, s, [2.0, 2 * (0.1 * (s + 1)) ** 1.5], lr=0.1 * (s + 1)) for s in range(4)]
    logged = {**slope, "x": "optim.lr", "log": True, "expect": "less"}
    row = decide(frame(*power), lr="all", arms={"all": {}}, comparisons=[logged]).iloc[0]
    assert row["effect"] == pytest.approx(1.5) and row["verdict"] == "not observed"


# -- claim files ------------------------------------------------------------------------------
BAD_CLAIMS = [
    ({"name": None}, "name: missing"),
    ({"paper": ""}, "paper: must be a non-empty string"),
    ({"name": "fig 2"}, "name: 'fig 2' is not a plain name"),
    ({"statment": "x"}, "statment: unknown key (did you mean 'statement'?)"),
    ({"lr": "best"}, "lr: 'best' is not one of select, fixed, all"),
    ({"lr": "select"}, "arms.shallow.optim.lr: lr: select chooses optim.lr"),
    ({"arms": {"shallow": {"model.depth": 2}, "deep": {"model.depth": 8, "optim.lr": 0.1}}},
     "arms.shallow: lr: fixed needs optim.lr in every arm"),
    ({"arms": {"deep": {"optim.lr": 0.1, "seed": 1}}}, "arms.deep.seed: arms are paired by seed"),
    ({"where": {"model.depth": [2, 4]}}, "where.model.depth: [2, 4] is not a plain value"),
    ({"comparisons": []}, "comparisons: must be a non-empty list"),
    ({"comparisons": [contrast(arms=["deep", "medium"])]}, "comparisons[0].arms: 'medium' is no arm"),
    ({"comparisons": [contrast(expect="bigger")]}, "comparisons[0].expect: 'bigger' is not one of"),
    ({"comparisons": [contrast(test="ttest")]}, "comparisons[0].test: 'ttest' is not one of"),
    ({"comparisons": [contrast(at={"epochs": [1, "last"]})]},
     "comparisons[0].at.epochs[1]: 'last' is not a whole number >= 0"),
    ({"comparisons": [contrast(at={"loss_levels": [-1.0]})]},
     "comparisons[0].at.loss_levels[0]: -1.0 is not a number > 0"),
    ({"comparisons": [contrast(at={"epoch": [1]})]}, "comparisons[0].at.epoch: unknown key"),
    ({"comparisons": [contrast(probe_se="small")]}, "comparisons[0].probe_se: 'small' is not a number"),
    ({"lr": "all", "arms": {"a": {}, "b": {}}, "comparisons": [contrast(arms=["a", "b"])]},
     "comparisons[0].kind: a contrast needs one LR per arm"),
    ({"comparisons": [{"kind": "slope", "y": {"statistic": "train_loss", "aggregate": "mean_last"},
                       "x": "optim.lr", "expect": "greater", "estimator": "e"}]},
     "comparisons[0].y.last: missing (aggregate: mean_last needs it)"),
    ({"comparisons": [{"kind": "ratio"}]}, "comparisons[0].kind: 'ratio' is not one of contrast, slope"),
]


@pytest.mark.parametrize("changes, message", BAD_CLAIMS)
def test_a_bad_claim_file_is_one_line_naming_the_file_and_key(tmp_path, changes, message):
    path = tmp_path / "bad.yaml"
    data = {k: v for k, v in claim_data(**changes).items() if not (k == "name" and v is None)}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfusionError) as caught:
        claims.load_claims([path])
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and message in text


def test_claim_files_that_cannot_be_read_or_clash(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfusionError, match=r"broken.yaml: not valid YAML \(.* at line 2\)"):
        claims.load_claims(broken)
    folder = tmp_path / "claims"
    folder.mkdir()
    for stem in ("a", "b"):
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(claim_data()))
    with pytest.raises(ConfusionError, match=r"b.yaml: name: 'toy_depth' is also the name of the claim in"):
        claims.load_claims(folder)
    with pytest.raises(ConfusionError, match="no such claims file or folder"):
        claims.load_claims(tmp_path / "missing.yaml")
    (folder / "b.yaml").unlink()
    assert [c.name for c in claims.load_claims([folder, folder / "a.yaml"])] == ["toy_depth"]


def test_a_config_column_missing_from_the_records_names_the_file_and_key():
    with pytest.raises(ConfusionError, match=r"toy.yaml: arms.deep.model.dept: no column model.dept in "
                                             r"the records of sweep toy \(did you mean model.depth\?\)"):
        decide(DEEP_SLOWER, arms={"shallow": {"model.depth": 2, "optim.lr": 0.1},
                                  "deep": {"model.dept": 8, "optim.lr": 0.1}})


def test_a_metrics_column_as_a_slope_term_must_say_how_it_is_aggregated():
    slope = {"kind": "slope", "y": "train_loss", "x": "optim.lr", "expect": "less", "estimator": "e"}
    with pytest.raises(ConfusionError, match=r"toy.yaml: comparisons\[0\].y: train_loss is a metrics column"):
        decide(DEEP_SLOWER, lr="all", arms={"all": {}}, comparisons=[slope])


def test_a_claim_without_records_gets_no_row_and_a_warning():
    with pytest.warns(claims.ClaimWarning, match=r"^no records for sweep elsewhere \(claim toy_depth\)$"):
        table = decide(DEEP_SLOWER, sweep="elsewhere")
    assert table.empty and list(table.columns) == list(claims.COLUMNS)


def test_claims_without_records_share_one_warning_grouped_by_sweep():
    toys = [claims.parse_claim(claim_data(name=name, sweep=sweep), Path(f"{name}.yaml"))
            for name, sweep in (("a", "nowhere"), ("b", "elsewhere"), ("c", "nowhere"))]
    with pytest.warns(claims.ClaimWarning) as caught:
        table = claims.decide(pd.DataFrame({"sweep.name": ["toy"]}), toys)
    assert table.empty and len(caught) == 1
    assert str(caught[0].message) == "no records for sweep nowhere (claims a, c); sweep elsewhere (claim b)"


# -- on disk, through the command line -------------------------------------------------------
def write_run(path, depth, seed, losses, status="complete"):
    """One run directory as the runner writes it: config.yaml, run.json, metrics.csv."""
    path.mkdir(parents=True)
    cfg = {"seed": seed, "model": {"name": "mlp", "depth": depth}, "optim": {"lr": 0.1},
           "dataset": {"name": "toy"}, "sweep": {"name": "toy"}}
    (path / records.CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    records.write_json(path / records.RUN_JSON, {"status": status, "config_hash": records.config_hash(cfg),
                                                 "seed": seed})
    epochs = range(len(losses))
    records.write_csv(path / records.METRICS, pd.DataFrame({
        "epoch": epochs, "step": [10 * e for e in epochs], "train_loss": losses,
        "min_cos": [-0.1 * depth] * len(losses), "min_inner": [-0.2] * len(losses)}))


def test_confusion_claims_decides_records_on_disk_and_writes_md_and_csv(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in range(3):
        write_run(runs / f"deep_{seed}", 8, seed, [2.3, 1.5, 1.0 + 0.1 * seed])
        write_run(runs / f"shallow_{seed}", 2, seed, [2.3, 1.0, 0.5 + 0.05 * seed])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "toy.yaml").write_text(yaml.safe_dump(claim_data(comparisons=[
        contrast(), contrast(statistic="min_cos", expect="less", at={"epochs": ["final"]})])))
    (mine / "other.yaml").write_text(yaml.safe_dump(claim_data(name="other", sweep="nowhere")))
    assert cli.main(["claims", str(runs), "--claims", str(mine)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("| claim | paper | comparison | estimator | effect | 95% CI |")
    assert "| observed |" in out and out.count("\n") == 4  # header, rule, two rows
    assert err.splitlines()[0] == "no records for sweep nowhere (claim other)"
    table = pd.read_csv(runs / "claims" / "claims.csv")
    assert list(table["verdict"]) == ["observed", "observed"]
    assert table["effect"].tolist() == pytest.approx([0.55, -0.6])
    report = (runs / "claims" / "claims.md").read_text()
    assert "train_loss @ epoch 2: deep - shallow" in report and "Declared: 2026-12-03, in a test" in report
    assert "No records for sweep nowhere" in report
    assert sorted(p.name for p in (runs / "claims").iterdir()) == ["claims.csv", "claims.md"]


def test_confusion_claims_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(claim_data(lr="sometimes")))
    assert cli.main(["claims", str(tmp_path), "--claims", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {bad}: lr: 'sometimes'")
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(claim_data()))
    assert cli.main(["claims", str(tmp_path / "nothing"), "--claims", str(good)]) == 2
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's --help, as for `confusion plot --help`
        cli.main(["claims", "--help"])
    assert "--claims PATH" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0 and "confusion claims" in capsys.readouterr().out


# -- every shipped claim file ------------------------------------------------------------------
def sweep_grid(sweep: str) -> tuple[set[str], dict[str, list]]:
    """(the config columns of ``sweep``, the values each swept column takes at some scale)."""
    columns: set[str] = set()
    grid: dict[str, list] = {}
    for scale in config.options("scale"):
        cfg = config.compose([f"+sweep={sweep}", f"scale={scale}"])
        try:
            task = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                          resolve=True)
            params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
        except OmegaConfBaseException:  # a scale the sweep has no grid for (test_configs' business)
            continue
        columns |= set(records.flatten(task))
        for column, values in params.items():
            grid.setdefault(column, []).extend(yaml.safe_load(v) for v in str(values).split(","))
    return columns, grid


def in_grid(value, options) -> bool:
    numbers = isinstance(value, (int, float))
    return any(v == value or (numbers and isinstance(v, (int, float)) and math.isclose(v, value))
               for v in options)


def test_the_grid_check_of_shipped_claims_can_fail():
    columns, grid = sweep_grid("depth_mnist")
    assert "dataset.name" in columns and "model.depth" in grid
    assert in_grid(16, grid["model.depth"]) and not in_grid(32, grid["model.depth"])
    assert in_grid(0.03, grid["optim.lr"]) and not in_grid(0.5, grid["optim.lr"])


@pytest.mark.parametrize("path", claims.claim_files(), ids=lambda p: p.stem)
def test_every_shipped_claim_reads_and_names_runs_its_sweep_can_have(path):
    """Each shipped claim reads; its sweep exists; each column it fixes is a config column, and
    one the sweep sweeps (depth, LR, ...) is fixed to a value of the sweep's grid at some scale
    (other columns may come from overrides, as `make demo`'s dataset=digits)."""
    (claim,) = claims.load_claims([path])
    assert claim.sweep in config.options("sweep"), f"{path}: no sweep {claim.sweep}"
    columns, grid = sweep_grid(claim.sweep)
    for arm in claim.arms:
        for column, value in claim.equalities(arm).items():
            assert column in columns, f"{path}: {column} is no config column of sweep {claim.sweep}"
            assert column not in grid or in_grid(value, grid[column]), \
                f"{path}: arm {arm}: {column}={value} is in no grid of sweep {claim.sweep}"
