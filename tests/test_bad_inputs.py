"""Typed, bounded inputs (issue 22, item 8): every bad override, alone or as one value of a
sweep, is one line on stderr starting 'error:', exit 2, no traceback, and nothing written
(neither under records_root nor in the working folder), checked before anything is built."""

import pytest

from confusion_cli import cli

BASE = ["scale=smoke", "model.width=4", "model.depth=1", "optim.epochs=1",
        "progress=false"]

BAD = [
    # unparseable overrides
    "launch_id=é", "launch_id=a\nb", "sweep.name=a\nb", "optim.lr=0.1\n", "model.activation=relu\n",
    "optim", "model", "seed", "=5", "=", "optim.lr=0.1=2", "optim.lr=", "optim.lr=[", "optim.lr=(",
    "optim.lr={", "optim.lr='0.1", "optim.lr=${nosuch}", "optim.lr=${oc.env:CONFUSION_NO_SUCH_VAR}",
    "model.depth=${optim.lr}", "~optim.lr", "launch_id=", "launch_id=..", "launch_id=a/b",
    # booleans accept only booleans
    "model.batch_norm=no", "model.batch_norm=yes", "model.batch_norm=1", "model.batch_norm=0",
    "model.batch_norm=abc", "model.batch_norm=null", "model.batch_norm=[]", "model.skip=no",
    "model.bias=no", "optim.full_batch=off", "optim.full_batch=1", "probe.at_init=no",
    "probe.at_init=0", "probe.augment=yes", "dataset.augment=no", "progress=no", "tf32=off",
    "deterministic=0", "channels_last=1", "compile=yes",
    # numbers: finite, typed, within bounds
    "optim.lr=true", "optim.lr=false", "optim.lr=0", "optim.lr=-1", "optim.lr=nan", "optim.lr=inf",
    "optim.lr=-inf", "optim.lr=1e308", "optim.lr=1e4", "optim.lr=abc", "optim.lr=[]",
    "optim.lr=null", "optim.momentum=-0.1", "optim.momentum=nan", "optim.momentum=inf",
    "optim.momentum=true", "optim.momentum=abc", "optim.momentum=1", "optim.weight_decay=-1",
    "optim.weight_decay=nan", "optim.weight_decay=inf", "optim.weight_decay=true", "optim.gamma=0",
    "optim.gamma=-1", "optim.gamma=nan", "optim.gamma=inf", "optim.gamma=true",
    "optim.batch_size=0", "optim.batch_size=-1", "optim.batch_size=1.5", "optim.batch_size=32.0",
    "optim.batch_size=true", "optim.batch_size=abc", "optim.batch_size=1e30",
    "optim.batch_size=100000000000000000000", "optim.epochs=-1", "optim.epochs=1.5",
    "optim.epochs=true", "optim.epochs=abc", "optim.epochs=nan", "optim.epochs=100000000",
    "optim.milestones=5", "optim.milestones=abc", "optim.milestones=[0]", "optim.milestones=[-1]",
    "optim.milestones=[1.5]", "optim.milestones=[true]", "optim.max_steps=-1",
    "optim.max_steps=1.5", "optim.max_steps=true", "optim.max_steps=abc", "optim.update=xyz",
    "optim.update=1", "seed=-1", "seed=1.5", "seed=true", "seed=abc", "seed=9223372036854775808",
    "seed=nan", "seed=1e3", "threads=0", "threads=-1", "threads=1.5", "threads=true",
    "eval_batch_size=0", "eval_batch_size=1.5", "eval_batch_size=true", "model.width=0",
    "model.width=-1", "model.width=1.5", "model.width=1e30", "model.width=true", "model.width=abc",
    "model.width=100000", "model.width=nan", "model.width=1000000000000", "model.depth=-1",
    "model.depth=1.5", "model.depth=100000", "model.depth=true", "model.depth=abc",
    "model.depth=1e30", "model.activation=xyz", "model.activation=1", "model.init=xyz",
    "model.init_gain=nan", "model.init_gain=-1", "model.init_gain=true", "model=xyz",
    "model.name=xyz", "dataset.train_size=abc", "dataset.train_size=100000",
    "dataset.train_size=-3", "dataset.train_size=1.5", "dataset.train_size=true",
    "dataset.test_size=-3", "dataset.test_size=abc", "dataset.test_size=1.5",
    "dataset.test_size=true", "dataset.test_size=100000", "dataset=xyz", "dataset.name=xyz",
    "memory_budget_gib=xxxx", "memory_budget_gib=nan", "memory_budget_gib=inf",
    "memory_budget_gib=0", "memory_budget_gib=-1", "memory_budget_gib=true",
    "memory_budget_gib=null", "records_root=", "data_dir=", "probe.pairs=0", "probe.pairs=-1",
    "probe.pairs=1.5", "probe.pairs=true", "probe.batch_size=0", "probe.every=0",
    "probe.schedule=xyz", "probe.schedule=steps:0", "probe.schedule=log:-1", "probe.bn_mode=xyz",
    "probe.chunk_size=0", "probe.group=0",
    # unknown keys and group options
    "optim.learning_rate=0.1", "foo=1", "model.foo=1", "+foo=1", "+optim.foo=1", "optim=adam",
    "probe=xyz", "scale=xyz", "extra_probes=[xyz]", "+sweep=xyz", "device=xyz", "logger=xyz",
    # a bad value among good ones in a sweep
    "optim.lr=0.1,-1", "optim.lr=0.1,nan", "optim.lr=0.1,true", "optim.lr=0.1,1e308",
    "model.batch_norm=true,no", "optim.full_batch=false,off", "seed=0,-1", "seed=0,1.5",
    "model.width=8,1e30", "model.depth=1,100000", "dataset.train_size=64,100000",
    "dataset.test_size=8,-3", "memory_budget_gib=8,nan", "memory_budget_gib=8,xxxx",
    "optim.milestones=[1],5", "optim.batch_size=32,0", "model.width=8,abc", "launch_id=a,é",
    "model.activation=relu,xyz", "probe.at_init=true,no",
]


@pytest.mark.parametrize("override", BAD, ids=ascii)
def test_a_bad_override_is_one_line_and_writes_nothing(override, tmp_path, monkeypatch, capsys):
    root, cwd = tmp_path / "records", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    try:
        code = cli.main(["run", f"records_root={root}", *BASE, override])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    assert not root.exists() and not any(cwd.iterdir()), sorted(map(str, tmp_path.rglob("*")))


def test_the_table_is_large():
    assert len(set(BAD)) == len(BAD) >= 100
