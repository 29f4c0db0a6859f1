"""`confusion noise`: the confusion estimators' own noise at fixed weights (CPU, tiny, offline)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fakes import run_cli
from omegaconf import OmegaConf
from torch import nn

from confusion_cli import cli, config, data, noise
from confusion_cli.train import Trainer


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def known_pool(n: int = 103, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, n), rng.normal(0, 1, n)


# -- chunking and the summary -------------------------------------------------------------------
def test_chunks_are_disjoint_consecutive_replicates_and_the_rest_is_left_out():
    cos = np.arange(23, dtype=float) / 100
    stats = noise.chunk_replicates(cos, -cos, 5)
    assert len(stats["min_cos"]) == 4  # 23 // 5, pairs 20..22 left out
    np.testing.assert_allclose(stats["min_cos"], [0.0, 0.05, 0.10, 0.15])  # each chunk its own pairs
    np.testing.assert_allclose(stats["mean_cos"], [0.02, 0.07, 0.12, 0.17])
    np.testing.assert_allclose(stats["eta"], [0.04, 0.09, 0.14, 0.19])  # max(0, -min inner)
    with pytest.raises(ValueError, match="no chunk"):
        noise.chunk_replicates(cos, cos, 24)


def test_the_se_of_a_stubbed_pool_is_numpys_std_of_the_chunk_statistics(monkeypatch):
    cos, inner = known_pool()
    monkeypatch.setattr(noise, "pair_pool", lambda *args, **kwargs: (cos, inner))
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    table = noise.measure_noise(small_model(), F.cross_entropy, x, y, pair_counts=[5, 10, 25],
                                pool_pairs=103, batch_size=8, batches_list=[], examples_list=[],
                                repeats=3, generator=torch.Generator().manual_seed(0))
    assert set(table["estimator"]) == {"one_pair", "minibatch_pairs"}
    for count in (5, 10, 25):
        n = 103 // count
        chunks, inner_chunks = cos[:n * count].reshape(n, count), inner[:n * count].reshape(n, count)
        expected = {"min_cos": chunks.min(1), "q05_cos": np.quantile(chunks, 0.05, axis=1),
                    "mean_cos": chunks.mean(1), "eta": np.maximum(-inner_chunks.min(1), 0)}
        for statistic, values in expected.items():
            row = table[(table["estimator"] == "minibatch_pairs") & (table["size"] == count)
                        & (table["statistic"] == statistic)].iloc[0]
            assert row["replicates"] == n
            assert row["mean"] == pytest.approx(values.mean())
            assert row["se"] == pytest.approx(np.std(values, ddof=1))
            assert row["se_err"] == pytest.approx(row["se"] / math.sqrt(2 * (n - 1)))
    single = table[(table["estimator"] == "one_pair") & (table["statistic"] == "cos")].iloc[0]
    assert single["replicates"] == 103 and single["se"] == pytest.approx(np.std(cos, ddof=1))


def test_identical_gradients_give_cosine_one_and_no_noise():
    """Every training example the same: every mini-batch and per-example gradient is the same."""
    x, y = torch.randn(1, 4).repeat(64, 1), torch.zeros(64, dtype=torch.long)
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    table = noise.measure_noise(model, F.cross_entropy, x, y, pair_counts=[2, 4], pool_pairs=8,
                                batch_size=4, batches_list=[3], examples_list=[5], repeats=3,
                                generator=torch.Generator().manual_seed(0))
    assert set(table["estimator"]) == {"one_pair", "minibatch_pairs", "all_pairs", "per_example"}
    cosines = table[table["statistic"].isin(["min_cos", "q05_cos", "mean_cos"])]
    np.testing.assert_allclose(cosines["mean"], 1.0, atol=1e-5)
    np.testing.assert_allclose(cosines["se"], 0.0, atol=1e-5)
    assert (table.loc[table["statistic"] == "eta", "mean"] == 0).all()
    counts = table.drop_duplicates(["estimator", "size"]).set_index(["estimator", "size"])
    assert counts["replicates"].to_dict() == {("one_pair", 1): 8, ("minibatch_pairs", 2): 4,
                                              ("minibatch_pairs", 4): 2, ("all_pairs", 3): 3,
                                              ("per_example", 5): 3}
    assert counts["pairs"].to_dict()[("per_example", 5)] == 10
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_same_generator_seed_gives_the_same_table_and_another_seed_another():
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))

    def table(seed):
        return noise.measure_noise(small_model(), F.cross_entropy, x, y, pair_counts=[3, 6],
                                   pool_pairs=12, batch_size=8, batches_list=[3], examples_list=[6],
                                   repeats=2, generator=torch.Generator().manual_seed(seed))

    pd.testing.assert_frame_equal(table(0), table(0))
    assert not np.allclose(table(0)["mean"], table(1)["mean"])


# -- the fit -----------------------------------------------------------------------------------------
def test_the_log_log_fit_recovers_the_exponent_and_the_pairs_needed():
    sizes = np.array([10, 25, 50, 100, 200, 400])
    a, b = noise.fit_power_law(sizes, 0.3 * sizes ** -0.37)
    assert (a, b) == (pytest.approx(0.3), pytest.approx(-0.37))
    noisy = 0.3 * sizes ** -0.5 * np.exp(np.random.default_rng(0).normal(0, 0.02, sizes.size))
    assert noise.fit_power_law(sizes, noisy)[1] == pytest.approx(-0.5, abs=0.03)
    assert noise.pairs_needed(0.3, -0.5, 0.03) == 100  # 0.3 / sqrt(100) = 0.03
    assert math.isnan(noise.pairs_needed(0.3, 0.1, 0.03))
    assert all(map(math.isnan, noise.fit_power_law([10, 20], [0.0, 0.0])))


def test_an_se_that_does_not_fall_with_p_is_said_so_and_needs_no_pair_count():
    rng = np.random.default_rng(0)
    rows = []
    for size, spread in ((10, 0.05), (20, 0.06), (40, 0.07)):  # se grows with P
        for statistic in noise.STATISTICS:
            rows += [{"estimator": "minibatch_pairs", "size": size, "pairs": size, "replicate": i,
                      "statistic": statistic, "value": v} for i, v in enumerate(rng.normal(0, spread, 400))]
    table = noise.summarise(pd.DataFrame(rows), target_se=0.02)
    row = table[(table["statistic"] == "min_cos") & (table["size"] == 40)].iloc[0]
    assert row["fit_b"] > 0 and math.isnan(row["pairs_for_target"])
    assert "not a less noisy estimate of the same quantity" in row["note"]
    assert list(table.columns) == list(noise.COLUMNS)
    assert table.loc[table["statistic"] == "eta", "target_se"].isna().all()  # eta is no cosine


# -- the run and the command line --------------------------------------------------------------------
TINY = ["dataset=digits", "model.depth=1", "model.width=8", "launch_id=t"]


def test_the_weights_measured_are_those_confusion_run_trains(monkeypatch):
    cfg = config.run_config([*TINY, "optim.epochs=2"])
    seen = {}

    def capture(model, *args, generator, **kwargs):
        seen["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
        seen["generator"] = generator.get_state()
        return pd.DataFrame()

    monkeypatch.setattr(noise, "measure_replicates", capture)
    settings = noise.settings_of(cfg, repeats=2, pair_counts="2", pool_pairs=4, batches="2",
                                 examples="2", target_se=0.02)
    _, last = noise.train_then_measure(cfg, settings)
    assert last["epoch"] == 2
    device = torch.device("cpu")
    run = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, device), device)
    for _ in run.run():  # with its probes, as `confusion run` trains
        pass
    for key, value in run.model.state_dict().items():
        torch.testing.assert_close(seen["weights"][key], value, rtol=0, atol=0)
    fresh = Trainer.from_config(cfg, data.load(cfg.dataset, cfg.data_dir, device), device)
    assert torch.equal(seen["generator"], fresh.probe_generator.get_state())  # seeded from seed


@pytest.mark.slow
def test_cli_writes_the_report_with_the_expected_columns(tmp_path):
    done = run_cli(["noise", "dataset=digits", "model.depth=1", "model.width=8", "optim.epochs=0",
                    "--repeats", "3", "--pool-pairs", "40", "--pair-counts", "5,10",
                    "--batches", "4", "--examples", "8,16"], tmp_path)
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "outputs" / "noise").iterdir()
    assert {p.name for p in folder.iterdir()} == {"noise.csv", "noise.md", "replicates.csv", "config.yaml"}
    table = pd.read_csv(folder / "noise.csv")
    assert list(table.columns) == list(noise.COLUMNS)
    sizes = table.drop_duplicates(["estimator", "size"])[["estimator", "size", "replicates"]]
    assert sizes.values.tolist() == [["one_pair", 1, 40], ["minibatch_pairs", 5, 8],
                                     ["minibatch_pairs", 10, 4], ["all_pairs", 4, 3],
                                     ["per_example", 8, 3], ["per_example", 16, 3]]
    assert set(table["statistic"]) == {"min_cos", "q05_cos", "mean_cos", "eta", "cos", "inner"}
    assert (table.loc[~table["statistic"].isin(["inner", "eta"]), "mean"].abs() <= 1).all()
    assert (table["se"] >= 0).all() and table["se"].gt(0).any()
    text = (folder / "noise.md").read_text()
    assert "| estimator | size | pairs | statistic | mean | se |" in text and "fit_b" in text
    assert "| estimator | size |" in done.stdout and "noise: minibatch pool" in done.stderr
    measured = OmegaConf.load(folder / "config.yaml")
    assert measured.noise.repeats == 3 and list(measured.noise.examples_list) == [8, 16]
    assert measured.model.width == 8 and measured.optim.epochs == 0


@pytest.mark.parametrize("args, message", [
    (["optim.learning_rate=0.1"], "unknown config key 'optim.learning_rate'"),
    (["optim.lr=0.1,0.2"], "measures one config"),
    (["--repeats", "1"], "--repeats must be an integer >= 2"),
    (["--pool-pairs", "100"], "--pool-pairs=100 gives fewer than two chunks of 400"),
    (["--examples", "5000"], "--examples=5000 is larger than the training set"),
    (["--batches", "a,b"], "--batches must be comma-separated integers"),
    (["--target-se", "0"], "--target-se must be a positive number"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_a_bad_line_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONFUSION_OUTPUTS", str(tmp_path / "outputs"))
    assert cli.main(["noise", *TINY, *args]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "outputs" / "noise").exists()


def test_the_fit_weights_each_se_by_its_replicates():
    sizes = np.array([10, 100, 400])
    ses = np.array([0.1, 0.1 * 10 ** -0.5, 0.01])  # the last point, from 3 replicates, off the law
    unweighted = noise.fit_power_law(sizes, ses)[1]
    weighted = noise.fit_power_law(sizes, ses, [1000, 1000, 3])[1]
    assert weighted == pytest.approx(-0.5, abs=0.02) and unweighted < -0.6
